"""Item-based k nearest neighbours on baseline residuals (Koren's kNNBaseline, Surprise's KNNBaseline with the
pearson_baseline similarity): a model of what the factorisations miss, which each movie's closest movies say.

One closed-form fit: the baseline's biases, then every pair of movies' shrunk correlation of their residuals, of
which each movie keeps its `candidates` most similar. A prediction is the baseline plus the similarity-weighted
mean residual of the `neighbours` most similar movies the user rated in training. The model keeps those training
residuals in its checkpoint: they are what it predicts from.

The similarities cost a pass over the ratings per block of movies, ratings x movies multiply-adds in all: a
second at ML-100K, about a minute at ML-1M's 1 M ratings and 3,706 movies, hours at ML-25M's size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field
from torch import Tensor

from ...data import DataShape
from ...params import ModelSettings
from ..base import register
from ..sums import fixed_order_mean
from .common import SweepModel

# The baseline's alternating sweeps (user biases given the movies', then the movies'): Surprise's default,
# settled to 1e-5 on ML-100K.
BASELINE_SWEEPS = 10
# Candidate lookups that `score` makes at once (pairs x `candidates`): each fills several temporaries of that size,
# which at a million pairs were 1.6 GB each, and slower to fill (page faults) than the lookups themselves:
# 600 users x every movie took 10.3 s in one call, 3.0 s in calls of 16,384 pairs (200 candidates, 2 threads).
CANDIDATE_LOOKUPS = 1 << 22
# Movies per block of the similarity computation: each block holds a users x block and a movies x block dense
# matrix (float32), 4 x 16 M floats at most.
SIMILARITY_BLOCK_FLOATS = 2**24


class ItemKNNSettings(ModelSettings):
    """`item_knn`: the neighbourhood's size, the similarities' shrinkage, and the baseline's penalties."""

    neighbours: int = Field(ge=1, le=1000, description="rated movies, the most similar, that each prediction uses")
    candidates: int = Field(
        ge=1, le=10_000, description="most similar movies each movie keeps, among which the neighbours are found"
    )
    shrinkage: float = Field(
        ge=0, le=10_000, description="a similarity is shrunk by (n - 1) / (n - 1 + shrinkage), n the common raters"
    )
    user_bias_penalty: float = Field(ge=0, le=1000, description="ridge penalty on each user's baseline bias")
    movie_bias_penalty: float = Field(ge=0, le=1000, description="ridge penalty on each movie's baseline bias")


@register
class ItemKNN(SweepModel):
    """r = mu + b_u + b_m + sum_j s_mj (r_uj - b_uj) / sum_j s_mj over the `neighbours` movies j the user rated
    that are most similar to m (positive similarities only; none: the baseline). s_mj is the Pearson correlation
    of the two movies' baseline residuals over their common raters, shrunk towards 0 when they are few."""

    name = "item_knn"
    Settings = ItemKNNSettings

    def __init__(self, shape: DataShape, settings: ItemKNNSettings):
        super().__init__(shape, settings)
        candidates = min(settings.candidates, max(shape.n_movies - 1, 1))
        self.register_buffer("global_bias", torch.tensor(shape.train_mean))
        self.register_buffer("user_bias", torch.zeros(shape.n_users))
        self.register_buffer("movie_bias", torch.zeros(shape.n_movies))
        self.register_buffer("neighbour_movies", torch.zeros(shape.n_movies, candidates, dtype=torch.int64))
        self.register_buffer("neighbour_similarities", torch.zeros(shape.n_movies, candidates))
        # The training ratings as sorted keys (user x n_movies + movie) and their residuals: what predicts.
        self.register_buffer("rated_keys", torch.zeros(shape.n_train_ratings, dtype=torch.int64))
        self.register_buffer("rated_residuals", torch.zeros(shape.n_train_ratings))

    @classmethod
    def planned_sweeps(cls, settings: ItemKNNSettings) -> int:
        return 1  # the fit is closed-form: nothing to gain from a second pass

    def sweeps(self) -> Iterator[Tensor]:
        yield self.fit()

    def fit(self) -> Tensor:
        """The baseline, then the neighbours, from the training ratings; returns the training MSE."""
        users, movies, ratings = self.train_users, self.train_movies, self.train_ratings
        self.fit_baseline(users, movies, ratings)
        residuals = ratings - self.global_bias - self.user_bias[users] - self.movie_bias[movies]
        keys = users * self.shape.n_movies + movies
        order = torch.argsort(keys)
        self.rated_keys.copy_(keys[order])
        self.rated_residuals.copy_(residuals[order])
        self.fit_neighbours(users, movies, residuals)
        return self.training_mse()

    def fit_baseline(self, users: Tensor, movies: Tensor, ratings: Tensor) -> None:
        """The biases by alternating ridge means: each movie's given the users', then each user's given the movies'."""
        settings = self.settings
        user_counts = torch.bincount(users, minlength=self.shape.n_users).to(ratings.dtype)
        movie_counts = torch.bincount(movies, minlength=self.shape.n_movies).to(ratings.dtype)
        self.global_bias.copy_(fixed_order_mean(ratings))
        for _ in range(BASELINE_SWEEPS):
            deviations = ratings - self.global_bias - self.user_bias[users]
            totals = torch.zeros_like(self.movie_bias).index_add_(0, movies, deviations)
            self.movie_bias.copy_(totals / (movie_counts + settings.movie_bias_penalty))
            deviations = ratings - self.global_bias - self.movie_bias[movies]
            totals = torch.zeros_like(self.user_bias).index_add_(0, users, deviations)
            self.user_bias.copy_(totals / (user_counts + settings.user_bias_penalty))

    def fit_neighbours(self, users: Tensor, movies: Tensor, residuals: Tensor) -> None:
        """Each movie's `candidates` most similar movies and their similarities, a block of movies at a time."""
        n_users, n_movies = self.shape.n_users, self.shape.n_movies
        by_movie = torch.stack([movies, users])
        ones = torch.ones_like(residuals)

        def movies_by_users(values: Tensor) -> Tensor:
            # The indices come from the data module's checked ratings (one per user and movie): no checks again.
            return torch.sparse_coo_tensor(by_movie, values, (n_movies, n_users), check_invariants=False).coalesce()

        # Over the common raters of movies m and j: sum r_m r_j, sum r_m^2, sum r_j^2, and their number.
        residual_matrix, squares_matrix, rated_matrix = (
            movies_by_users(values) for values in (residuals, residuals.square(), ones)
        )
        block = max(1, SIMILARITY_BLOCK_FLOATS // max(n_users, n_movies))
        shrinkage = self.settings.shrinkage
        for first in range(0, n_movies, block):
            columns = torch.arange(first, min(first + block, n_movies), device=residuals.device)
            # The block's movies' ratings, dense (users x block): their residuals, squares and which are rated.
            in_block = (movies >= first) & (movies < first + len(columns))
            block_users, block_movies = users[in_block], movies[in_block] - first
            dense = {
                name: torch.zeros(n_users, len(columns), dtype=residuals.dtype, device=residuals.device)
                for name in ("residual", "rated")
            }
            dense["residual"][block_users, block_movies] = residuals[in_block]
            dense["rated"][block_users, block_movies] = 1.0
            products = (residual_matrix @ dense["residual"]).T  # block x movies
            # The sum over common raters of the block movie's r^2 (unrated cells are 0, and stay 0 squared).
            own_squares = (rated_matrix @ dense["residual"].square()).T
            other_squares = (squares_matrix @ dense["rated"]).T  # ... and of the other movie's
            common = (rated_matrix @ dense["rated"]).T
            norms = (own_squares * other_squares).sqrt()
            similarity = torch.where(norms > 0, products / norms.clamp_min(1e-12), torch.zeros_like(products))
            similarity = similarity * (common - 1).clamp_min(0) / (common - 1 + shrinkage).clamp_min(1e-12)
            similarity[torch.arange(len(columns)), columns] = -torch.inf  # a movie is not its own neighbour
            top, which = similarity.topk(self.neighbour_movies.shape[1], dim=1, sorted=True)  # `score` needs the order
            self.neighbour_movies[columns] = which
            self.neighbour_similarities[columns] = top.clamp_min(0)  # only positive similarities predict

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bias = self.global_bias + self.user_bias[users] + self.movie_bias[movies]
        pairs = max(1, CANDIDATE_LOOKUPS // self.neighbour_movies.shape[1])  # per call of `interaction`
        if len(users) <= pairs:
            return bias, self.interaction(users, movies)
        chunks = zip(users.split(pairs), movies.split(pairs), strict=True)
        return bias, torch.cat([self.interaction(*chunk) for chunk in chunks])

    def interaction(self, users: Tensor, movies: Tensor) -> Tensor:
        """The similarity-weighted mean residual of each pair's `neighbours` most similar movies the user rated."""
        candidates, similarities = self.neighbour_movies[movies], self.neighbour_similarities[movies]
        rated, residuals = self.rated_candidates(users, candidates)
        # The candidates are in descending similarity (`fit_neighbours`): the `neighbours` most similar rated ones
        # are the first that many rated, found by a running count rather than a top-k over every candidate.
        # (int16: counts up to `candidates`, at most 10,000; half the time of the default int64.)
        used = rated & (rated.to(torch.int16).cumsum(dim=1, dtype=torch.int16) <= self.settings.neighbours)
        top = torch.where(used, similarities, torch.zeros_like(similarities))
        weight = top.sum(dim=1)
        interaction = (top * residuals).sum(dim=1) / weight.clamp_min(1e-12)
        return torch.where(weight > 0, interaction, torch.zeros_like(interaction))

    def rated_candidates(self, users: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """Per pair's user and candidate movie: whether the user rated it in training, and its residual (0 if not).
        Many movies for few users (ranking every movie): looked up in a users x movies table of the pairs' distinct
        users, built from their runs of the sorted keys, when it is no larger than the candidates; otherwise by a
        binary search of the keys per candidate (a random sample of pairs). Both give the same values."""
        n_movies = self.shape.n_movies
        distinct, table_row = torch.unique(users, return_inverse=True)
        if len(distinct) * n_movies > candidates.numel():
            keys = users.unsqueeze(1) * n_movies + candidates
            positions = torch.searchsorted(self.rated_keys, keys).clamp_max(len(self.rated_keys) - 1)
            rated, residuals = self.rated_keys[positions] == keys, self.rated_residuals[positions]
            return rated, torch.where(rated, residuals, torch.zeros_like(residuals))
        starts = torch.searchsorted(self.rated_keys, distinct * n_movies)
        counts = torch.searchsorted(self.rated_keys, (distinct + 1) * n_movies) - starts
        owners = torch.repeat_interleave(torch.arange(len(distinct), device=users.device), counts)
        first_of_owner = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
        positions = torch.arange(len(owners), device=users.device) + first_of_owner
        cells = owners * n_movies + self.rated_keys[positions] - distinct[owners] * n_movies
        residual_table = torch.zeros(len(distinct) * n_movies, dtype=self.rated_residuals.dtype, device=users.device)
        rated_table = torch.zeros(len(distinct) * n_movies, dtype=torch.bool, device=users.device)
        residual_table[cells] = self.rated_residuals[positions]
        rated_table[cells] = True
        lookups = table_row.unsqueeze(1) * n_movies + candidates
        return rated_table[lookups], residual_table[lookups]
