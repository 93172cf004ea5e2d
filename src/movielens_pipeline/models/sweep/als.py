"""Biased MF fitted by alternating least squares: each sweep solves every user's bias and factors given the
movies, then every movie's given the users, exactly, batched over many rows at once (`ridge.ridge_rows`).

`SweptMF` is what ALS and the Bayesian sampler (bayes_mf.py) share: the biases and factors as buffers that each
sweep sets, and the training ratings grouped by user and by movie, which every sweep reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from pydantic import Field
from torch import Tensor

from ...data import DataShape, TrainingData, csr_index
from ...params import EmbeddingDim, ModelSettings
from ..base import factor_std, register
from .common import SweepModel
from .ridge import GRAM_FLOATS, PaddedRatings, pad_by_owner, ridge_rows


class SweptMF(SweepModel):
    """Biased MF whose parameters are buffers that each sweep sets (no gradients):
    r = global bias + b_u + b_m + p_u . q_m. The factors (`factor_width` of them, the embedding_dim unless
    given) start at N(0, start_std), or at 0.
    Keeps the training ratings grouped by user and by movie, and their padded layouts, which every sweep reads."""

    def __init__(self, shape: DataShape, settings: ModelSettings, start_std: float, factor_width: int | None = None):
        super().__init__(shape, settings)
        dim = factor_width or settings.embedding_dim
        self.register_buffer("global_bias", torch.tensor(shape.train_mean))
        self.register_buffer("user_bias", torch.zeros(shape.n_users))
        self.register_buffer("movie_bias", torch.zeros(shape.n_movies))
        for name, rows in (("user_factors", shape.n_users), ("movie_factors", shape.n_movies)):
            start = torch.randn(rows, dim) * start_std if start_std > 0 else torch.zeros(rows, dim)
            self.register_buffer(name, start)
        # Each side's ratings grouped by owner (CSR): where each user's (movie's) ratings start, and per rating
        # the other side's index and the rating, in that order. Not in the checkpoint.
        for name in ("user_starts", "user_others", "user_ratings", "movie_starts", "movie_others", "movie_ratings"):
            self.register_buffer(name, torch.zeros(0), persistent=False)
        self.padded: dict[str, PaddedRatings] = {}  # each side's, made by its first sweep, on the model's device

    @classmethod
    def working_bytes(cls, shape: DataShape, settings: ModelSettings) -> int:
        # A batched ridge solve's chunk: its padded design rows, Gram matrices and Cholesky factors are at most
        # GRAM_FLOATS values (ridge.pad_by_owner), float64 for the sampler; twice that for what the solve derives.
        return 2 * 8 * GRAM_FLOATS

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        # Copied in owner order once: every sweep then reads them in sequence, not scattered.
        starts, order = csr_index(data.users, self.shape.n_users)
        self.user_starts, self.user_others, self.user_ratings = starts, data.movies[order], data.ratings[order]
        starts, order = csr_index(data.movies, self.shape.n_movies)
        self.movie_starts, self.movie_others, self.movie_ratings = starts, data.users[order], data.ratings[order]

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bias = self.global_bias + self.user_bias[users] + self.movie_bias[movies]
        return bias, interactions(self.user_factors, self.movie_factors, users, movies)

    def alternate_ridge(self, global_bias: Tensor, users: Rows, movies: Rows, regularization: float) -> None:
        """One ALS sweep over the rows `users` and `movies` (set in place): every user's bias and factors given the
        movies, then every movie's given the users, with the ALS-WR penalty `regularization` x the row's ratings."""
        rows = {"user": users, "movie": movies}
        for side, other, padded, others, ratings in self.sides():
            penalty = regularization * padded.counts.to(ratings.dtype).unsqueeze(1)
            targets = ratings - global_bias - rows[other].bias[others]
            solved = ridge_rows(padded, rows[other].factors, targets, penalty)
            rows[side].bias.copy_(solved[:, 0])
            rows[side].factors.copy_(solved[:, 1:])

    def sides(self) -> Iterator[tuple[str, str, PaddedRatings, Tensor, Tensor]]:
        """Users, then movies: each side's name, the other's, its ratings padded for `ridge_rows`, and per rating
        in that layout's order the other side's index and the rating."""
        by_side = {
            "user": (self.user_starts, self.user_others, self.user_ratings, self.shape.n_movies),
            "movie": (self.movie_starts, self.movie_others, self.movie_ratings, self.shape.n_users),
        }
        for side, other in (("user", "movie"), ("movie", "user")):
            starts, others, ratings, n_others = by_side[side]
            if side not in self.padded:
                self.padded[side] = pad_by_owner(starts, others, n_others, self.settings.embedding_dim + 1)
            yield side, other, self.padded[side], others, ratings


class Rows(NamedTuple):
    """One side's (users' or movies') rows as a sweep sets them: a bias and factors per row."""

    bias: Tensor
    factors: Tensor


def interactions(user_factors: Tensor, movie_factors: Tensor, users: Tensor, movies: Tensor) -> Tensor:
    """p_u . q_m per rating. index_select, not user_factors[users]: the same gather, faster on the CPU."""
    return (user_factors.index_select(0, users) * movie_factors.index_select(0, movies)).sum(dim=1)


class ALSSettings(ModelSettings):
    """`als`: biased MF fitted by alternating least squares (ridge regressions), early stopping on val RMSE."""

    embedding_dim: EmbeddingDim
    regularization: float = Field(
        gt=0, le=1000, description="ridge penalty on each user's (movie's) bias and factors, times its ratings"
    )


@register
class ALS(SweptMF):
    """Biased MF, r = mean + b_u + b_m + p_u . q_m, fitted by alternating ridge regressions: each sweep solves
    every user's [b_u, p_u] given the movies, then every movie's [b_m, q_m] given the users, exactly
    (a Cholesky solve per row, batched), with the penalty `regularization` x the row's number of
    ratings (ALS-WR, Zhou et al. 2008), so one value suits light and heavy users."""

    name = "als"
    Settings = ALSSettings

    def __init__(self, shape, settings):
        super().__init__(shape, settings, start_std=factor_std(settings.embedding_dim))

    def sweeps(self) -> Iterator[Tensor]:
        users, movies = Rows(self.user_bias, self.user_factors), Rows(self.movie_bias, self.movie_factors)
        while True:  # until validation stops it
            # The global bias stays the training mean: the biases absorb the rest.
            self.alternate_ridge(self.global_bias, users, movies, self.settings.regularization)
            yield self.training_mse()
