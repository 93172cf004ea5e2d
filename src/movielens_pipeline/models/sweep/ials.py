"""Implicit ALS (Hu, Koren, Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008), with the
frequency-scaled regularisation of Rendle et al., "Revisiting the Performance of iALS on Item Recommendation
Benchmarks" (RecSys 2022). A model to rank with: its scores are not ratings (as `bpr`'s), so its RMSE means nothing.

Every movie a user rated is a 1 to predict, weighted by its confidence 1 + `confidence` x rating; every movie, rated
or not, a 0 weighted by `unobserved_weight`. A sweep solves every user's factors given the movies', then every
movie's given the users': per row x, (unobserved_weight Y'Y + sum_rated c y y' + penalty I) x = sum_rated c y, with
penalty = `regularization` x (rated + unobserved_weight x rows of the other side)^`regularization_exponent`. Solved
by `cg_steps` conjugate-gradient steps from the last sweep's x, all rows at once: the product with the matrix is
one pass over the ratings, so no k x k matrix is formed per row, and memory is bounded by RATING_FLOATS.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field
from torch import Tensor

from ...data import DataShape, TrainingData, csr_index
from ...params import EmbeddingDim, ModelSettings
from ..base import factor_std, register
from ..sums import fixed_order_sum
from .als import interactions
from .common import SweepModel
from .ridge import conjugate_gradients

# Gathered factor values per chunk of rows (ratings x embedding_dim, float32): 64 MiB, whatever the data's size.
RATING_FLOATS = 1 << 24


class IALSSettings(ModelSettings):
    """`ials`: implicit ALS; the rank, the sweeps, the weights of rated and unrated movies and the penalty."""

    embedding_dim: EmbeddingDim
    sweeps: int = Field(ge=1, le=10_000, description="sweeps over users, then movies: exactly this many")
    confidence: float = Field(
        ge=0, le=1000, description="a rated movie's weight is 1 + this x its rating; 0: every rated movie weighs 1"
    )
    unobserved_weight: float = Field(
        ge=0, le=1000, description="the weight of predicting 0 for every movie, rated or not (Rendle's alpha_0)"
    )
    regularization: float = Field(
        gt=0, le=1000, description="L2 penalty on each row's factors, times its frequency (see the exponent)"
    )
    regularization_exponent: float = Field(
        ge=0,
        le=2,
        description="a row's penalty is regularization x (its ratings + unobserved_weight x the other side's rows) "
        "to this power; 0: the same for every row, 1: Rendle et al.'s frequency scaling",
    )
    cg_steps: int = Field(ge=1, le=1000, description="conjugate-gradient steps per row solve, from the last sweep's")


@register
class IALS(SweepModel):
    """Scores movie m for user u by x_u . y_m (no biases), fitted by `sweeps` alternating sweeps of conjugate
    gradients. Keeps each side's training ratings grouped by owner beside the model, not in its checkpoint."""

    name = "ials"
    task = "ranking"
    Settings = IALSSettings

    def __init__(self, shape: DataShape, settings: IALSSettings):
        super().__init__(shape, settings)
        std = factor_std(settings.embedding_dim)
        self.register_buffer("user_factors", torch.randn(shape.n_users, settings.embedding_dim) * std)
        self.register_buffer("movie_factors", torch.randn(shape.n_movies, settings.embedding_dim) * std)
        # Each side's ratings grouped by owner (CSR): where each owner's start, the other side's index and the
        # confidence of each. Not in the checkpoint.
        for name in (
            "user_starts",
            "user_others",
            "user_confidence",
            "movie_starts",
            "movie_others",
            "movie_confidence",
        ):
            self.register_buffer(name, torch.zeros(0), persistent=False)

    @classmethod
    def planned_sweeps(cls, settings: IALSSettings) -> int:
        return settings.sweeps

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        confidence = 1 + self.settings.confidence * data.ratings
        starts, order = csr_index(data.users, self.shape.n_users)
        self.user_starts, self.user_others, self.user_confidence = starts, data.movies[order], confidence[order]
        starts, order = csr_index(data.movies, self.shape.n_movies)
        self.movie_starts, self.movie_others, self.movie_confidence = starts, data.users[order], confidence[order]

    def sweeps(self) -> Iterator[Tensor]:
        while True:  # as many as planned: the loop stops taking them
            self.solve(self.user_factors, self.movie_factors, self.user_starts, self.user_others, self.user_confidence)
            self.solve(
                self.movie_factors, self.user_factors, self.movie_starts, self.movie_others, self.movie_confidence
            )
            yield self.weighted_loss()

    def solve(self, rows: Tensor, others: Tensor, starts: Tensor, rated: Tensor, confidence: Tensor) -> None:
        """Every row of `rows` (in place) by `cg_steps` conjugate-gradient steps on its normal equations given the
        other side's factors `others`; row o's rated others are `rated[starts[o]:starts[o + 1]]`."""
        settings = self.settings
        gram = settings.unobserved_weight * (others.T @ others)
        counts = starts.diff()
        frequency = counts.to(rows.dtype) + settings.unobserved_weight * len(others)
        penalty = settings.regularization * frequency.pow(settings.regularization_exponent)
        step = max(1, RATING_FLOATS // rows.shape[1])
        first = 0
        while first < len(rows):  # chunks of rows holding at most `step` ratings (at least one row)
            last = int(torch.searchsorted(starts, starts[first] + step, right=True)) - 1
            last = min(max(last, first + 1), len(rows))
            chunk = slice(int(starts[first]), int(starts[last]))
            owner = torch.repeat_interleave(torch.arange(last - first, device=rows.device), counts[first:last])
            rows[first:last] = solve_rows(
                rows[first:last], others[rated[chunk]], owner, confidence[chunk], gram, penalty[first:last], settings
            )
            first = last

    def weighted_loss(self) -> Tensor:
        """The fit's error per training rating, penalties aside: the weighted errors of the rated movies' 1s and of
        every movie's 0 (the second from the factors' Gram matrices, not from every pair)."""
        settings, users, movies = self.settings, self.user_factors, self.movie_factors
        predicted = interactions(users, movies, self.train_users, self.train_movies)
        confidence = 1 + settings.confidence * self.train_ratings
        rated = fixed_order_sum(confidence * (1 - predicted).square())
        every_pair = settings.unobserved_weight * ((users.T @ users) * (movies.T @ movies)).sum()
        return ((rated + every_pair) / max(len(predicted), 1)).float()

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        interaction = interactions(self.user_factors, self.movie_factors, users, movies)
        return torch.zeros_like(interaction), interaction


def solve_rows(
    start: Tensor,
    rated_factors: Tensor,
    owner: Tensor,
    confidence: Tensor,
    gram: Tensor,
    penalty: Tensor,
    settings: IALSSettings,
) -> Tensor:
    """Rows x with (gram + sum_rated c y y' + penalty I) x = sum_rated c y, each row's rated factors `rated_factors`
    (one per rating, its row `owner`, its confidence `confidence`), by `cg_steps` CG steps from `start`."""

    def times(vectors: Tensor) -> Tensor:
        # The matrix times each row's vector, one pass over the rated factors: no k x k matrix per row.
        along = (rated_factors * vectors.index_select(0, owner)).sum(1) * confidence
        product = vectors @ gram + penalty.unsqueeze(1) * vectors
        return product.index_add_(0, owner, rated_factors * along.unsqueeze(1))

    right = torch.zeros_like(start).index_add_(0, owner, rated_factors * confidence.unsqueeze(1))
    return conjugate_gradients(times, right, start, 1, settings.cg_steps)
