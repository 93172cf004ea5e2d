"""Rating models: one Lightning contract, each model only its parameters and a score.

`RatingModel` owns everything shared: the sigmoid that bounds predictions to the rating
scale (the seed's parametrisation), the MSE loss, the L2 penalty on the parameters a
batch touches, per-epoch logging and the optimiser. A model adds `score` (an unbounded
logit per rating) and, if it has per-user or per-movie parameters, `penalty`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .params import TrainParams

RATING_MIN, RATING_MAX = 0.5, 5.0


class RatingModel(pl.LightningModule):
    """Shared training contract; subclasses define `score` and optionally `penalty`."""

    name: ClassVar[str]

    def __init__(
        self,
        n_users: int,
        n_movies: int,
        train_mean: float,
        embedding_dim: int,
        learning_rate: float,
        weight_decay: float,
    ):
        super().__init__()
        self.save_hyperparameters()

    def score(self, users: Tensor, movies: Tensor) -> Tensor:
        """Unbounded logit of each (user, movie) rating."""
        raise NotImplementedError

    def penalty(self, users: Tensor, movies: Tensor) -> Tensor:
        """Mean over the batch of the squared parameters each rating uses (for L2)."""
        return torch.zeros((), device=users.device)

    def forward(self, users: Tensor, movies: Tensor) -> Tensor:
        return RATING_MIN + (RATING_MAX - RATING_MIN) * torch.sigmoid(self.score(users, movies))

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        users, movies, ratings = batch
        mse = F.mse_loss(self(users, movies), ratings)
        # The logged loss is the plain MSE, comparable with val_loss and the test metrics.
        self.log("train_loss", mse, on_step=False, on_epoch=True, batch_size=len(ratings))
        return mse + self.hparams.weight_decay * self.penalty(users, movies)

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        users, movies, ratings = batch
        mse = F.mse_loss(self(users, movies), ratings)
        self.log("val_loss", mse, on_step=False, on_epoch=True, batch_size=len(ratings))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["model_name"] = self.name


class GlobalMean(RatingModel):
    """The seed's GlobalMeanModel: one logit, the same prediction for every rating."""

    name = "global_mean"

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        # Starts at logit 0 (a prediction of 2.75) and learns the mean, as in the seed.
        self.logit = nn.Parameter(torch.zeros(1))

    def score(self, users: Tensor, movies: Tensor) -> Tensor:
        return self.logit.expand(users.shape)


class BiasedMF(RatingModel):
    """Global mean + user bias + movie bias + dot product of user and movie embeddings."""

    name = "biased_mf"

    def __init__(self, **hyperparameters):
        super().__init__(**hyperparameters)
        hp = self.hparams
        self.global_logit = nn.Parameter(torch.tensor([_logit_of_rating(hp.train_mean)]))
        self.user_bias = nn.Embedding(hp.n_users, 1)
        self.movie_bias = nn.Embedding(hp.n_movies, 1)
        self.user_factors = nn.Embedding(hp.n_users, hp.embedding_dim)
        self.movie_factors = nn.Embedding(hp.n_movies, hp.embedding_dim)
        for biases in (self.user_bias, self.movie_bias):
            nn.init.zeros_(biases.weight)
        for factors in (self.user_factors, self.movie_factors):
            nn.init.normal_(factors.weight, std=0.1 / math.sqrt(hp.embedding_dim))

    def score(self, users: Tensor, movies: Tensor) -> Tensor:
        interaction = (self.user_factors(users) * self.movie_factors(movies)).sum(dim=1)
        return self.global_logit + self.user_bias(users)[:, 0] + self.movie_bias(movies)[:, 0] + interaction

    def penalty(self, users: Tensor, movies: Tensor) -> Tensor:
        squares = (
            self.user_bias(users)[:, 0] ** 2
            + self.movie_bias(movies)[:, 0] ** 2
            + self.user_factors(users).pow(2).sum(dim=1)
            + self.movie_factors(movies).pow(2).sum(dim=1)
        )
        return squares.mean()


MODELS: dict[str, type[RatingModel]] = {model.name: model for model in (GlobalMean, BiasedMF)}


def _logit_of_rating(rating: float) -> float:
    share = (rating - RATING_MIN) / (RATING_MAX - RATING_MIN)
    return math.log(share / (1 - share))


def build_model(params: TrainParams, n_users: int, n_movies: int, train_mean: float) -> RatingModel:
    """Instantiate the model `params.model` names, sized for the index space."""
    return MODELS[params.model](
        n_users=n_users,
        n_movies=n_movies,
        train_mean=train_mean,
        embedding_dim=params.embedding_dim,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
    )


def load_model(checkpoint_path) -> RatingModel:
    """Rebuild a trained model from a checkpoint without unpickling arbitrary objects."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    model = MODELS[checkpoint["model_name"]](**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
