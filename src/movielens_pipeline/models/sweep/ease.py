"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): a movie-to-movie weight matrix,
fitted in closed form, that scores each movie by the movies a user rated. A model to rank with, not to predict
ratings: its scores are not on the rating scale (as `bpr`'s), so its RMSE means nothing.

X is the users x movies matrix of training ratings: 0 where a user did not rate a movie, and where they did,
1 + `rating_weight` x (the rating - the training mean) (with `rating_weight` 0, Steck's 1: implicit feedback; above
0, a movie rated above the mean says more about the user's taste, one below it less, or against it). B minimises
|X - XB|^2 + penalty |B|^2 with a zero diagonal (a movie may not explain itself): with P = (X'X + penalty I)^-1,
B = I - P diag(P)^-1, one inverse of a movies x movies matrix. A user's score for movie m is sum_j X_uj B_jm.

The inverse costs movies^3 work and movies^2 memory, held twice (the Gram matrix and its inverse, float64): a second
at ML-100K's 1,682 movies, minutes and 28 GB at ML-25M's 59,047. `max_movies` bounds both: the model is fitted on the
most-rated movies only (as the published ML-20M protocol keeps the movies rated by at least 5 users), and the
others get no score beyond the bias, as a movie training never saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ...data import DataShape, TrainingData, csr_index, csr_rows
from ...params import ModelSettings
from ..base import register
from ..sums import fixed_order_sum
from .common import SweepModel
from .ridge import gram_of_rows

# Scores computed at once when scoring pairs: users x the fitted movies (float32), 64 MiB.
SCORE_FLOATS = 1 << 24


class EASESettings(ModelSettings):
    """`ease`: the L2 penalty of the movie-to-movie weights, how much a rating's value counts, how many movies the
    weights cover."""

    penalty: float = Field(gt=0, le=1e6, description="L2 penalty on the movie-to-movie weights (Steck's lambda)")
    rating_weight: float = Field(
        ge=0,
        le=10,
        description="a rated movie's entry is 1 + this x (its rating - the training mean); 0: every rated movie "
        "is 1 (implicit feedback, as Steck's)",
    )
    max_movies: int = Field(
        ge=1,
        le=100_000,
        description="the most-rated training movies the weights cover (the inverse costs their number cubed, "
        "their square in memory); the others score the bias alone",
    )


@register
class EASE(SweepModel):
    """Scores movie m for user u by sum_j X_uj B_jm over the movies j the user rated in training (one closed-form
    fit: `planned_sweeps` 1). Keeps each user's training movies and their entries X_uj (CSR) in its checkpoint:
    they are what it scores from."""

    name = "ease"
    task = "ranking"
    Settings = EASESettings

    def __init__(self, shape: DataShape, settings: EASESettings):
        super().__init__(shape, settings)
        covered = min(settings.max_movies, shape.n_movies)
        self.register_buffer("item_weights", torch.zeros(covered, covered))  # B, over the covered movies
        # Each movie's column in B, -1 for a movie the weights do not cover.
        self.register_buffer("movie_column", torch.full((shape.n_movies,), -1, dtype=torch.int64))
        # Each user's training movies as CSR: rated_movies[rated_start[u]:rated_start[u + 1]], and their X_uj.
        self.register_buffer("rated_start", torch.zeros(shape.n_users + 1, dtype=torch.int64))
        self.register_buffer("rated_movies", torch.zeros(shape.n_train_ratings, dtype=torch.int64))
        self.register_buffer("rated_values", torch.zeros(shape.n_train_ratings))

    @classmethod
    def planned_sweeps(cls, settings: EASESettings) -> int:
        return 1  # closed-form: nothing to gain from a second pass

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        starts, order = csr_index(data.users, self.shape.n_users)
        self.rated_start[:] = starts
        self.rated_movies[:] = data.movies[order]
        self.rated_values[:] = 1 + self.settings.rating_weight * (data.ratings[order] - self.shape.train_mean)

    def sweeps(self) -> Iterator[Tensor]:
        yield self.fit()

    @classmethod
    def working_bytes(cls, shape: DataShape, settings: EASESettings) -> int:
        # The fit holds the Gram matrix, its Cholesky factor and the inverse at once, float64.
        return 3 * 8 * min(settings.max_movies, shape.n_movies) ** 2

    def fit(self) -> Tensor:
        """B from the training ratings; returns the fit's reconstruction error |X - XB|^2 per training rating."""
        covered = len(self.item_weights)
        counts = torch.bincount(self.train_movies, minlength=self.shape.n_movies)
        # The most-rated movies, ties to the lower index (a stable sort), in index order.
        kept = torch.sort(torch.argsort(counts, descending=True, stable=True)[:covered]).values
        self.movie_column.fill_(-1)
        self.movie_column[kept] = torch.arange(covered, device=self.device)
        starts, columns, values = self.covered_ratings(torch.arange(self.shape.n_users, device=self.device))
        gram = gram_of_rows(starts, columns, values, covered)  # G = X'X
        # In place where it can be: at 20,000 movies each of these matrices is 3.2 GB.
        gram.diagonal().add_(self.settings.penalty)
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(gram))  # P
        gram.diagonal().sub_(self.settings.penalty)
        weights = inverse.div_(-inverse.diagonal().clone())  # -P diag(P)^-1: column j divided by -P_jj
        weights.diagonal().zero_()  # I - P diag(P)^-1, exactly 0 on the diagonal
        self.item_weights.copy_(weights)
        # With G + penalty I = P^-1: |X - XB|^2 = |X|^2 - <B, G> - penalty |B|^2 (B's diagonal is 0), so the
        # objective costs no product of two movies x movies matrices.
        squares = values.double().square().sum()  # |X|^2
        error = squares - inner(weights, gram) - self.settings.penalty * inner(weights, weights)
        return (error / max(len(columns), 1)).float()

    def covered_ratings(self, users: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The `users`' training movies that the weights cover, as CSR: where each user's start, their columns in
        B and their entries X_uj."""
        rows, _ = csr_rows(self.rated_start, users)
        columns = self.movie_column[self.rated_movies[rows]]
        covered = columns >= 0
        user_of = torch.repeat_interleave(torch.arange(len(users), device=users.device), self.rated_start.diff()[users])
        counts = torch.bincount(user_of[covered], minlength=len(users))
        starts = torch.zeros(len(users) + 1, dtype=torch.int64, device=users.device)
        starts[1:] = counts.cumsum(0)
        return starts, columns[covered], self.rated_values[rows][covered]

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        interaction = torch.zeros(len(users), device=self.device)
        distinct, position = torch.unique(users, return_inverse=True)
        columns = self.movie_column[movies]
        step = max(1, SCORE_FLOATS // max(len(self.item_weights), 1))
        for first in range(0, len(distinct), step):
            chunk = distinct[first : first + step]
            starts, rated, values = self.covered_ratings(chunk)
            # Each user's scores of every covered movie: the sum of B's rows of the movies they rated, times X_uj.
            scores = F.embedding_bag(rated, self.item_weights, starts[:-1], mode="sum", per_sample_weights=values)
            in_chunk = (position >= first) & (position < first + len(chunk)) & (columns >= 0)
            interaction[in_chunk] = scores[position[in_chunk] - first, columns[in_chunk]]
        return torch.zeros_like(interaction), interaction


def inner(first: Tensor, second: Tensor) -> Tensor:
    """sum(first * second) of two matrices, SCORE_FLOATS products at a time (no temporary their size)."""
    rows = max(1, SCORE_FLOATS // max(first.shape[1], 1))
    return sum(fixed_order_sum(a * b) for a, b in zip(first.split(rows), second.split(rows), strict=True))
