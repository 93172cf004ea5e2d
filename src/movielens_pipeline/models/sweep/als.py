"""Biased MF fitted by alternating least squares: each sweep solves every user's bias and factors given the
movies, then every movie's given the users, exactly, batched over many rows at once (`ridge.ridge_rows`).

`SweptMF` is what ALS and the Bayesian sampler (bayes_mf.py) share: the biases and factors as buffers that each
sweep sets, and the training ratings grouped by user and by movie, which every sweep reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field
from torch import Tensor

from ...data import DataShape, TrainingData, csr_index
from ...params import EmbeddingDim, ModelSettings
from ..base import factor_std, register
from .common import SweepModel
from .ridge import PaddedRatings, pad_by_owner, ridge_rows


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
        for side in ("user", "movie"):
            for name in ("starts", "others", "ratings"):
                self.register_buffer(f"{side}_{name}", torch.zeros(0), persistent=False)
        self.padded: dict[str, PaddedRatings] = {}  # each side's, made by its first sweep, on the model's device

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        for side, owners, others, n_owners in (
            ("user", data.users, data.movies, self.shape.n_users),
            ("movie", data.movies, data.users, self.shape.n_movies),
        ):
            starts, order = csr_index(owners, n_owners)
            setattr(self, f"{side}_starts", starts)
            # Copied in owner order once: every sweep then reads them in sequence, not scattered.
            setattr(self, f"{side}_others", others[order])
            setattr(self, f"{side}_ratings", data.ratings[order])

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bias = self.global_bias + self.user_bias[users] + self.movie_bias[movies]
        return bias, interactions(self.user_factors, self.movie_factors, users, movies)

    def alternate_ridge(self, prefix: str, global_bias: Tensor, regularization: float) -> None:
        """One ALS sweep over the biases and factors named `{prefix}user_bias` etc.: every user's given the movies,
        then every movie's given the users, with the ALS-WR penalty `regularization` x the row's ratings."""
        for side, other, padded, others, ratings in self.sides():
            other_bias = getattr(self, f"{prefix}{other}_bias")
            other_factors = getattr(self, f"{prefix}{other}_factors")
            penalty = regularization * padded.counts.to(ratings.dtype).unsqueeze(1)
            solved = ridge_rows(padded, other_factors, ratings - global_bias - other_bias[others], penalty)
            getattr(self, f"{prefix}{side}_bias").copy_(solved[:, 0])
            getattr(self, f"{prefix}{side}_factors").copy_(solved[:, 1:])

    def sides(self) -> Iterator[tuple[str, str, PaddedRatings, Tensor, Tensor]]:
        """Users, then movies: each side's name, the other's, its ratings padded for `ridge_rows`, and per rating
        in that layout's order the other side's index and the rating."""
        for side, other in (("user", "movie"), ("movie", "user")):
            others = getattr(self, f"{side}_others")
            if side not in self.padded:
                n_others = len(getattr(self, f"{other}_factors"))
                dim = self.settings.embedding_dim + 1
                self.padded[side] = pad_by_owner(getattr(self, f"{side}_starts"), others, n_others, dim)
            yield side, other, self.padded[side], others, getattr(self, f"{side}_ratings")


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
        while True:  # until validation stops it
            # The global bias stays the training mean: the biases absorb the rest.
            self.alternate_ridge("", self.global_bias, self.settings.regularization)
            yield self.training_mse()
