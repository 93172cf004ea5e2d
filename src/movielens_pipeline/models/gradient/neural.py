"""Neural models: biased MF with genres and an MLP, and an item-based autoencoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ...data import TrainingData, csr_index, csr_rows
from ...params import GradientSettings, WeightDecay
from ..base import factor_std, logit_of_rating, rating_of_logit, register
from .common import GradientModel, table
from .factorization import BiasedMF, BiasedMFSettings


class GenreMLPSettings(BiasedMFSettings):
    """`genre_mlp`: biased MF + a genre embedding + an MLP over user, movie and genres."""

    hidden_dim: int = Field(ge=1, le=65_536, description="width of the MLP's hidden layer")
    dropout: float = Field(ge=0, lt=1, description="dropout before and after the hidden layer")


@register
class GenreMLP(BiasedMF):
    """Biased MF whose movie vector adds a genre embedding, plus an MLP over user, movie and genres."""

    name = "genre_mlp"
    Settings = GenreMLPSettings

    def __init__(self, shape, settings):
        super().__init__(shape, settings)
        dim = settings.embedding_dim
        self.register_buffer("movie_genres", torch.zeros(shape.n_movies, shape.n_genres))
        self.genre_factors = nn.Linear(shape.n_genres, dim, bias=False)
        nn.init.zeros_(self.genre_factors.weight)
        # Without dropout the MLP memorises ML-100K in a few epochs (val RMSE 0.928 vs 0.917).
        self.mlp = nn.Sequential(
            nn.Dropout(settings.dropout),
            nn.Linear(2 * dim + shape.n_genres, settings.hidden_dim),
            nn.ReLU(),
            nn.Dropout(settings.dropout),
            nn.Linear(settings.hidden_dim, 1),
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


class AutoRecSettings(GradientSettings):
    """`autorec`: item-based AutoRec, trained on movie batches."""

    hidden_dim: int = Field(ge=1, le=65_536, description="size of each movie's code")
    weight_decay: WeightDecay


@register
class AutoRec(GradientModel):
    """Item-based AutoRec (Sedhain et al., WWW 2015): each movie's training ratings by every user (centred on
    the training mean, 0 where missing) pass through one sigmoid layer of `hidden_dim` units, and are
    decoded into a logit for every user: a user bias + the user's decoder row . the movie's code.

    Trained on batches of movies, so a step encodes few movies. In training, each rating is predicted
    from its movie's other ratings: left in, the rating itself would be the easiest thing to
    reconstruct, and a test rating is never in the input.
    """

    name = "autorec"
    Settings = AutoRecSettings
    batches = "movies"

    def __init__(self, shape, settings):
        super().__init__(shape, settings)
        std = factor_std(settings.hidden_dim)
        self.global_logit = nn.Parameter(torch.tensor([logit_of_rating(shape.train_mean)]))
        self.user_bias = table(shape.n_users, 1)
        self.encoder = table(shape.n_users, settings.hidden_dim, std, bag=True)  # a column of weights per user
        self.code_bias = nn.Parameter(torch.zeros(settings.hidden_dim))
        self.decoder = table(shape.n_users, settings.hidden_dim, std)
        # Each movie's training ratings as CSR: raters[rated_start[m]:rated_start[m + 1]] and their centred ratings.
        self.register_buffer("rated_start", torch.zeros(shape.n_movies + 1, dtype=torch.int64))
        self.register_buffer("raters", torch.zeros(shape.n_train_ratings, dtype=torch.int64))
        self.register_buffer("rater_ratings", torch.zeros(shape.n_train_ratings))
        self.kept_codes: Tensor | None = None  # every movie's code, out of training (see `codes`)

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        starts, order = csr_index(data.movies, self.shape.n_movies)
        self.rated_start[:] = starts
        self.raters[:] = data.users[order]
        self.rater_ratings[:] = data.ratings[order] - self.shape.train_mean

    def encoded(self, movies: Tensor) -> Tensor:
        """The code's input (before the sigmoid) of each rating's movie, computed once per distinct movie."""
        distinct, position = torch.unique(movies, return_inverse=True)
        rows, offsets = csr_rows(self.rated_start, distinct)
        encoded = self.encoder(self.raters[rows], offsets, per_sample_weights=self.rater_ratings[rows])
        return encoded[position] + self.code_bias

    def codes(self, movies: Tensor) -> Tensor:
        """Each rating's movie code. Out of training, every movie's code is computed once and kept, so
        scoring many pairs (evaluation, `recommend`) does not encode the same movies chunk after chunk."""
        if self.training:
            return torch.sigmoid(self.encoded(movies))
        if self.kept_codes is None:
            every_movie = torch.arange(self.shape.n_movies, device=movies.device)
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
            users, torch.arange(len(users), device=users.device), per_sample_weights=ratings - self.shape.train_mean
        )
        code = torch.sigmoid(self.encoded(movies) - own)
        logit = self.bias(users) + (self.decoder(users) * code).sum(dim=1)
        return F.mse_loss(rating_of_logit(logit), ratings)
