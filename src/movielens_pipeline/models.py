"""Rating models: one Lightning contract, each model only its parameters and a score.

`RatingModel` owns everything shared: the sigmoid that bounds predictions to the rating
scale (the seed's parametrisation), the cold-start rule, the MSE loss, per-epoch logging
and the optimisers, with the L2 penalty on the per-user and per-movie rows each batch
uses (in `RowAdam`). A model adds its parameters and `score`, which returns, per rating,
a bias logit and an interaction logit. A rating comes with its day (days since 1970); only
`timesvd` looks at it, and without one (serving) it predicts as of the user's last training day.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import ClassVar, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import TrainingData
from .optim import RowAdam
from .params import MODEL_NAMES, TrainParams
from .schema import RATING_MAX, RATING_MIN


class RatingModel(pl.LightningModule):
    """Shared training contract; subclasses create parameters and define `score`."""

    # The training batches the model wants from the data module: any ratings, or ratings grouped by movie.
    batches: ClassVar[Literal["ratings", "movies"]] = "ratings"

    def __init__(
        self,
        n_users: int,
        n_movies: int,
        n_genres: int,
        n_train_ratings: int,
        train_mean: float,
        embedding_dim: int,
        hidden_dim: int,
        dropout: float,
        learning_rate: float,
        weight_decay: float,
        sparse_tables: bool = True,
        time_bins: int | None = None,  # None in checkpoints written before `train.time_bins` existed
    ):
        super().__init__()
        self.save_hyperparameters()
        # Sparse tables (the CPU's way) have their own optimiser, RowAdam, which also applies the
        # L2 penalty, beside Adam for the dense parameters; Lightning steps two optimisers only
        # under manual optimisation. Dense tables (an accelerator's way) share one fused Adam,
        # and the same penalty is added to the loss from the rows each batch looked up.
        self.automatic_optimization = False
        # Dense tables: the (indices, weights or None) of each lookup this step, for l2_penalty.
        self.lookups: dict[nn.Module, list[tuple[Tensor, Tensor | None]]] = {}
        # Users and movies with training ratings: the others get the bias-only prediction.
        self.register_buffer("user_seen", torch.zeros(n_users, dtype=torch.bool))
        self.register_buffer("movie_seen", torch.zeros(n_movies, dtype=torch.bool))

    def remember(self, data: TrainingData) -> None:
        """Record, before training, what the model needs from the training data (in buffers)."""
        self.user_seen[data.users] = True
        self.movie_seen[data.movies] = True

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per rating: the bias logit and the interaction logit."""
        raise NotImplementedError

    def ranking_score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> Tensor:
        """Per rating, the logit before the rating-scale sigmoid: bias + interaction, the interaction only where
        training saw both the user and the movie. It orders movies as the predictions do."""
        bias, interaction = self.score(users, movies, days)
        known = self.user_seen[users] & self.movie_seen[movies]
        return bias + torch.where(known, interaction, torch.zeros_like(interaction))

    def forward(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> Tensor:
        return rating_of_logit(self.ranking_score(users, movies, days))

    def loss(self, users: Tensor, movies: Tensor, ratings: Tensor, days: Tensor) -> Tensor:
        """What training minimises and validation reports: the squared error of the predicted ratings."""
        return F.mse_loss(self(users, movies, days), ratings)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        users, movies, ratings, days = batch
        self.lookups.clear()
        loss = self.loss(users, movies, ratings, days)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for optimizer in optimizers:
            optimizer.zero_grad()
        # Sparse tables: RowAdam applies the L2 penalty. Dense tables: it is part of the loss.
        self.manual_backward(loss if self.hparams.sparse_tables else loss + self.l2_penalty())
        for optimizer in optimizers:
            optimizer.step()
        # Logged as a tensor, summed on the device: no host sync per step.
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(ratings), sync_dist=True)
        return loss

    def l2_penalty(self) -> Tensor:
        """weight_decay x the mean squared norm of the rows each table looked up (RowAdam's penalty as a loss).

        A lookup may carry a weight (1 or 0, see `SVDpp.implicit`): the mean is then over the weighted lookups.
        """
        penalty = torch.zeros((), device=self.device)
        for table, calls in self.lookups.items():
            indices = torch.cat([looked_up for looked_up, _ in calls])
            weights = torch.cat([torch.ones_like(looked_up) if w is None else w for looked_up, w in calls]).float()
            # Each row's squared norm once, then one number per lookup: `SVDpp`'s bag looks up every
            # training rating's movie each step, far more lookups than the table has rows.
            squared_norms = table.weight.square().sum(dim=1).index_select(0, indices)
            penalty = penalty + (squared_norms * weights).sum() / weights.sum()
        return self.hparams.weight_decay * penalty

    def record_lookup(self, table: nn.Module, indices: Tensor, weights: Tensor | None = None) -> None:
        """Note the rows a training step looks up in a dense table, for `l2_penalty`."""
        if self.training and not self.hparams.sparse_tables:
            self.lookups.setdefault(table, []).append((indices.reshape(-1), weights))

    def _record_lookup(self, table: nn.Module, inputs: tuple, output: Tensor) -> None:
        """Forward hook of dense tables (but `SVDpp`'s bag, which records its own): the indices each step looks up."""
        self.record_lookup(table, inputs[0])

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> None:
        users, movies, ratings, days = batch
        # Under DDP each process validates its shard; the mean over processes decides early stopping.
        loss = self.loss(users, movies, ratings, days)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(ratings), sync_dist=True)

    def predict_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        users, movies, _, days = batch
        return self(users, movies, days)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        if not hp.sparse_tables:
            # One Adam for everything; fused (one kernel for all parameters) where the device has it.
            return [torch.optim.Adam(self.parameters(), lr=hp.learning_rate, fused=True)]
        tables = [module.weight for module in self.modules() if isinstance(module, nn.Embedding | nn.EmbeddingBag)]
        dense = [parameter for parameter in self.parameters() if all(parameter is not table for table in tables)]
        optimizers = [RowAdam(tables, lr=hp.learning_rate, weight_decay=hp.weight_decay)] if tables else []
        return optimizers + ([torch.optim.Adam(dense, lr=hp.learning_rate)] if dense else [])

    def table(self, rows: int, columns: int, std: float = 0.0, bag: bool = False) -> nn.Embedding | nn.EmbeddingBag:
        """Per-user or per-movie parameters, N(0, std) at start. Sparse gradients (on the CPU, an epoch
        then costs what its batches touch, not the whole table per step) unless `sparse_tables` is off."""
        sparse = self.hparams.sparse_tables
        if bag:
            table = nn.EmbeddingBag(rows, columns, mode="sum", sparse=sparse)
        else:
            table = nn.Embedding(rows, columns, sparse=sparse)
        if std > 0:
            nn.init.normal_(table.weight, std=std)
        else:
            nn.init.zeros_(table.weight)
        if not sparse and not bag:  # sparse tables get their penalty from RowAdam: no hook on the CPU's hot path
            table.register_forward_hook(self._record_lookup)
        return table

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["model_name"] = model_name(self)


class GlobalMean(RatingModel):
    """The seed's GlobalMeanModel: one logit, the same prediction for every rating."""

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        # Starts at logit 0 (a prediction of 2.75) and learns the mean, as in the seed.
        self.logit = nn.Parameter(torch.zeros(1))

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.logit.expand(users.shape), torch.zeros(users.shape, device=users.device)


class Biases(RatingModel):
    """Global mean + user bias + movie bias (Surprise's BaselineOnly, in logit space)."""

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        hp = self.hparams
        self.global_logit = nn.Parameter(torch.tensor([_logit_of_rating(hp.train_mean)]))
        self.user_bias = self.table(hp.n_users, 1)
        self.movie_bias = self.table(hp.n_movies, 1)

    def bias(self, users: Tensor, movies: Tensor) -> Tensor:
        """Global + user + movie bias logit per rating."""
        return self.global_logit + self.user_bias(users)[:, 0] + self.movie_bias(movies)[:, 0]

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bias = self.bias(users, movies)
        return bias, torch.zeros_like(bias)


class BiasedMF(Biases):
    """Biases + the dot product of user and movie embeddings."""

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        hp = self.hparams
        self.user_factors = self.table(hp.n_users, hp.embedding_dim, self.factor_std)
        self.movie_factors = self.table(hp.n_movies, hp.embedding_dim, self.factor_std)

    @property
    def factor_std(self) -> float:
        """Starting spread of each factor: every embedding starts with a norm near 0.1, whatever its dimension."""
        return 0.1 / math.sqrt(self.hparams.embedding_dim)

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        user, movie = self.user_factors(users), self.movie_factors(movies)
        return self.bias(users, movies), (user * movie).sum(dim=1)


class SVDpp(BiasedMF):
    """Biased MF whose user vector adds |N(u)|^-1/2 times the sum of implicit factors of the movies u rated."""

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        hp = self.hparams
        self.implicit_factors = self.table(hp.n_movies, hp.embedding_dim, self.factor_std, bag=True)
        # Each user's training movies as CSR: rated_movies[rated_start[u]:rated_start[u + 1]].
        self.register_buffer("rated_start", torch.zeros(hp.n_users + 1, dtype=torch.int64))
        self.register_buffer("rated_movies", torch.zeros(hp.n_train_ratings, dtype=torch.int64))

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        order = torch.argsort(data.users, stable=True)
        counts = torch.bincount(data.users, minlength=self.hparams.n_users)
        self.rated_start[1:] = torch.cumsum(counts, dim=0)
        self.rated_movies[:] = data.movies[order]

    def implicit(self, users: Tensor) -> Tensor:
        """|N(u)|^-1/2 * sum of y_j over the movies j each user rated, computed once per distinct user.

        Training on dense tables (an accelerator), every user's vector is computed instead, in one
        pass over all training ratings: more arithmetic, but fixed shapes, so no step waits on
        the host to learn how many distinct users a batch holds, as `torch.unique` makes it do.
        """
        if self.training and not self.hparams.sparse_tables:
            return self.every_users_implicit(users)
        distinct, position = torch.unique(users, return_inverse=True)
        rows, offsets = csr_rows(self.rated_start, distinct)
        lengths = self.rated_start[distinct + 1] - self.rated_start[distinct]
        movies = self.rated_movies[rows]
        weights = lengths.clamp(min=1).float().rsqrt().repeat_interleave(lengths)
        return self.implicit_factors(movies, offsets, per_sample_weights=weights)[position]

    def every_users_implicit(self, users: Tensor) -> Tensor:
        """`implicit(users)` from every user's vector; the L2 penalty counts the lookups of the batch's users only."""
        n_train = self.hparams.n_train_ratings
        lengths = self.rated_start.diff()
        owners = torch.repeat_interleave(torch.arange(len(lengths), device=users.device), lengths, output_size=n_train)
        weights = lengths.clamp(min=1).float().rsqrt()[owners]
        every_user = self.implicit_factors(self.rated_movies, self.rated_start[:-1], per_sample_weights=weights)
        # RowAdam penalises the rows the batch's (distinct) users looked up: mark those lookups.
        in_batch = torch.zeros(len(lengths), device=users.device).index_fill_(0, users, 1.0)
        self.record_lookup(self.implicit_factors, self.rated_movies, in_batch[owners])
        return every_user[users]

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        user, movie = self.user_factors(users) + self.implicit(users), self.movie_factors(movies)
        return self.bias(users, movies), (user * movie).sum(dim=1)


class GenreMLP(BiasedMF):
    """Biased MF whose movie vector adds a genre embedding, plus an MLP over user, movie and genres."""

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        hp = self.hparams
        self.register_buffer("movie_genres", torch.zeros(hp.n_movies, hp.n_genres))
        self.genre_factors = nn.Linear(hp.n_genres, hp.embedding_dim, bias=False)
        nn.init.zeros_(self.genre_factors.weight)
        # Without dropout the MLP memorises ML-100K in a few epochs (val RMSE 0.928 vs 0.917).
        self.mlp = nn.Sequential(
            nn.Dropout(hp.dropout),
            nn.Linear(2 * hp.embedding_dim + hp.n_genres, hp.hidden_dim),
            nn.ReLU(),
            nn.Dropout(hp.dropout),
            nn.Linear(hp.hidden_dim, 1),
        )

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        # Each movie's genres weigh 1 in all, so a movie with many genres is not louder.
        self.movie_genres[:] = data.movie_genres / data.movie_genres.sum(dim=1, keepdim=True).clamp(min=1)

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        genres = self.movie_genres[movies]
        user, movie = self.user_factors(users), self.movie_factors(movies) + self.genre_factors(genres)
        interaction = (user * movie).sum(dim=1) + self.mlp(torch.cat([user, movie, genres], dim=1))[:, 0]
        return self.bias(users, movies), interaction


class TimeSVD(BiasedMF):
    """Biased MF whose biases move with time (Koren's timeSVD, KDD 2009): a movie bias per time bin,
    and a user bias that drifts linearly in dev_u(t) = sign(t - t_u) |t - t_u|^0.4, t_u the user's mean rating day.

    The `train.time_bins` bins split the training ratings' days evenly. A rating without a day (serving)
    is predicted as of its user's last training day.
    """

    DRIFT_EXPONENT = 0.4  # Koren's beta: the drift grows slower than the days apart

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        hp = self.hparams
        self.movie_bin_bias = self.table(hp.n_movies * hp.time_bins, 1)
        self.user_drift = self.table(hp.n_users, 1)
        self.register_buffer("day_range", torch.zeros(2))  # first and last training day
        self.register_buffer("user_mean_day", torch.zeros(hp.n_users))
        self.register_buffer("user_last_day", torch.zeros(hp.n_users))

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        days = data.days.double()  # sums of millions of days lose whole days in float32
        self.day_range[:] = torch.stack([days.min(), days.max()])
        counts = torch.bincount(data.users, minlength=self.hparams.n_users).clamp(min=1)
        self.user_mean_day[:] = (
            torch.zeros(self.hparams.n_users, dtype=torch.float64).index_add_(0, data.users, days) / counts
        )
        self.user_last_day[:] = torch.zeros(self.hparams.n_users).scatter_reduce_(
            0, data.users, data.days, "amax", include_self=False
        )

    def time_bias(self, users: Tensor, movies: Tensor, days: Tensor | None) -> Tensor:
        """Per rating: the movie's bias in the rating's time bin + the user's drift by then."""
        if days is None:
            days = self.user_last_day[users]
        bins = self.hparams.time_bins
        first, last = self.day_range
        bin_of_day = ((days - first) * (bins / (last - first).clamp(min=1))).long().clamp(0, bins - 1)
        apart = days - self.user_mean_day[users]
        deviation = apart.sign() * apart.abs().pow(self.DRIFT_EXPONENT)
        return self.movie_bin_bias(movies * bins + bin_of_day)[:, 0] + self.user_drift(users)[:, 0] * deviation

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bias, interaction = super().score(users, movies)
        return bias + self.time_bias(users, movies, days), interaction


class AutoRec(RatingModel):
    """Item-based AutoRec (Sedhain et al., WWW 2015): each movie's training ratings by every user (centred on
    the training mean, 0 where missing) pass through one sigmoid layer of `hidden_dim` units, and are
    decoded into a logit for every user: a user bias + the user's decoder row . the movie's code.

    Trained on batches of movies, so a step encodes few movies. In training, each rating is predicted
    from its movie's other ratings: left in, the rating itself would be the easiest thing to
    reconstruct, and a test rating is never in the input.
    """

    batches = "movies"

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        hp = self.hparams
        std = 0.1 / math.sqrt(hp.hidden_dim)
        self.global_logit = nn.Parameter(torch.tensor([_logit_of_rating(hp.train_mean)]))
        self.user_bias = self.table(hp.n_users, 1)
        self.encoder = self.table(hp.n_users, hp.hidden_dim, std, bag=True)  # a column of weights per user's rating
        self.code_bias = nn.Parameter(torch.zeros(hp.hidden_dim))
        self.decoder = self.table(hp.n_users, hp.hidden_dim, std)
        # Each movie's training ratings as CSR: raters[rated_start[m]:rated_start[m + 1]] and their centred ratings.
        self.register_buffer("rated_start", torch.zeros(hp.n_movies + 1, dtype=torch.int64))
        self.register_buffer("raters", torch.zeros(hp.n_train_ratings, dtype=torch.int64))
        self.register_buffer("rater_ratings", torch.zeros(hp.n_train_ratings))
        self.kept_codes: Tensor | None = None  # every movie's code, out of training (see `codes`)

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        order = torch.argsort(data.movies, stable=True)
        self.rated_start[1:] = torch.cumsum(torch.bincount(data.movies, minlength=self.hparams.n_movies), dim=0)
        self.raters[:] = data.users[order]
        self.rater_ratings[:] = data.ratings[order] - self.hparams.train_mean

    def encoded(self, movies: Tensor) -> Tensor:
        """The code's input (before the sigmoid) of each rating's movie, computed once per distinct movie."""
        distinct, position = torch.unique(movies, return_inverse=True)
        rows, offsets = csr_rows(self.rated_start, distinct)
        self.record_lookup(self.encoder, self.raters[rows])
        encoded = self.encoder(self.raters[rows], offsets, per_sample_weights=self.rater_ratings[rows])
        return encoded[position] + self.code_bias

    def codes(self, movies: Tensor) -> Tensor:
        """Each rating's movie code. Out of training, every movie's code is computed once and kept, so
        scoring many pairs (evaluation, `recommend`) does not encode the same movies chunk after chunk."""
        if self.training:
            return torch.sigmoid(self.encoded(movies))
        if self.kept_codes is None:
            every_movie = torch.arange(self.hparams.n_movies, device=movies.device)
            self.kept_codes = torch.cat([torch.sigmoid(self.encoded(chunk)) for chunk in every_movie.split(4096)])
        return self.kept_codes[movies]

    def train(self, mode: bool = True) -> AutoRec:
        self.kept_codes = None  # the weights are about to change, or just did
        return super().train(mode)

    def bias(self, users: Tensor) -> Tensor:
        """Global + user bias logit per rating."""
        return self.global_logit + self.user_bias(users)[:, 0]

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bias(users), (self.decoder(users) * self.codes(movies)).sum(dim=1)

    def loss(self, users: Tensor, movies: Tensor, ratings: Tensor, days: Tensor) -> Tensor:
        """The squared error; in training, of each rating predicted with itself left out of its movie's input."""
        if not self.training:
            return super().loss(users, movies, ratings, days)
        own = self.encoder(
            users, torch.arange(len(users), device=users.device), per_sample_weights=ratings - self.hparams.train_mean
        )
        self.record_lookup(self.encoder, users)
        code = torch.sigmoid(self.encoded(movies) - own)
        logit = self.bias(users) + (self.decoder(users) * code).sum(dim=1)
        return F.mse_loss(rating_of_logit(logit), ratings)


class BPR(RatingModel):
    """Ranking by implicit feedback: a movie bias + user . movie factors, trained with the BPR loss.

    Every training rating is a positive; each is paired with a movie drawn at random (a negative:
    usually one the user never rated) and the loss, -log sigmoid(score(pos) - score(neg)), asks
    the rated one to rank higher. Scores order movies for a user; the predicted "ratings" (the
    scores through the rating-scale sigmoid) are not calibrated, so its RMSE means nothing.
    """

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        hp = self.hparams
        self.movie_bias = self.table(hp.n_movies, 1)
        self.user_factors = self.table(hp.n_users, hp.embedding_dim, 0.1 / math.sqrt(hp.embedding_dim))
        self.movie_factors = self.table(hp.n_movies, hp.embedding_dim, 0.1 / math.sqrt(hp.embedding_dim))

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.movie_bias(movies)[:, 0], (self.user_factors(users) * self.movie_factors(movies)).sum(dim=1)

    def on_validation_epoch_start(self) -> None:
        # The same negatives at every validation: the val loss then moves only with the model.
        self.validation_negatives = torch.Generator(device=self.device).manual_seed(0)

    def loss(self, users: Tensor, movies: Tensor, ratings: Tensor, days: Tensor) -> Tensor:
        """The BPR loss of each rated movie against one random movie (in training from Lightning's seeded RNG)."""
        generator = None if self.training else self.validation_negatives
        negatives = torch.randint(0, self.hparams.n_movies, movies.shape, device=movies.device, generator=generator)
        both = self.ranking_score(users.repeat(2), torch.cat([movies, negatives]))
        positive, negative = both.split(len(movies))
        return -F.logsigmoid(positive - negative).mean()


# params.MODEL_NAMES is the one list of names (params.py does not import torch); this gives each its class.
MODELS: dict[str, type[RatingModel]] = dict(
    zip(MODEL_NAMES, (GlobalMean, Biases, BiasedMF, SVDpp, GenreMLP, BPR, TimeSVD, AutoRec), strict=True)
)


def model_name(model: RatingModel) -> str:
    """The `train.model` name of a model's class."""
    return next(name for name, cls in MODELS.items() if type(model) is cls)


def quiet_lightning() -> None:
    """Keep Lightning's start-up notes (hardware found, product tips) out of `dvc repro` output.

    They drown the per-epoch lines; warnings and errors still show.
    """
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.13


def csr_rows(starts: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """The rows of each key's segment in a CSR index (`starts[k]:starts[k + 1]`), concatenated, and where
    each key's rows begin among them: the indices and offsets of an `EmbeddingBag` over those segments."""
    lengths = starts[keys + 1] - starts[keys]
    offsets = torch.cumsum(lengths, dim=0) - lengths
    within = torch.arange(int(lengths.sum()), device=keys.device) - offsets.repeat_interleave(lengths)
    return starts[keys].repeat_interleave(lengths) + within, offsets


def rating_of_logit(logit: Tensor) -> Tensor:
    """The rating-scale sigmoid: a logit to a rating between RATING_MIN and RATING_MAX (the seed's parametrisation)."""
    return RATING_MIN + (RATING_MAX - RATING_MIN) * torch.sigmoid(logit)


def _logit_of_rating(rating: float) -> float:
    share = (rating - RATING_MIN) / (RATING_MAX - RATING_MIN)
    return math.log(share / (1 - share))


def build_model(
    params: TrainParams,
    data: TrainingData,
    n_users: int,
    n_movies: int,
    train_mean: float,
    sparse_tables: bool = True,
) -> RatingModel:
    """Instantiate the model `params.model` names, sized for the index space, and let it see `data`.

    `sparse_tables`: sparse gradients and RowAdam (the CPU's fastest), or dense ones and one fused Adam.
    `auto` params are resolved for the number of training ratings in `data`.
    """
    params = params.resolved(len(data.users))
    model = MODELS[params.model](
        n_users=n_users,
        n_movies=n_movies,
        n_genres=data.movie_genres.shape[1],
        n_train_ratings=len(data.users),
        train_mean=train_mean,
        embedding_dim=params.embedding_dim,
        hidden_dim=params.hidden_dim,
        dropout=params.dropout,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        sparse_tables=sparse_tables,
        time_bins=params.time_bins,
    )
    model.remember(data)
    return model


def load_model(checkpoint_path) -> RatingModel:
    """Rebuild a trained model from a checkpoint without unpickling arbitrary objects."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    model = MODELS[checkpoint["model_name"]](**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
