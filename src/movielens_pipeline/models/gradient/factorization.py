"""Matrix factorisation fitted by gradient steps: biased MF, SVD++ (implicit feedback) and timeSVD (time)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from ...data import TrainingData, csr_index, csr_rows
from ...params import EmbeddingDim, GradientSettings, WeightDecay
from ..base import factor_std, register
from .baselines import Biases
from .common import table


class BiasedMFSettings(GradientSettings):
    """`biased_mf`: biases + the dot product of user and movie embeddings."""

    embedding_dim: EmbeddingDim
    weight_decay: WeightDecay


@register
class BiasedMF(Biases):
    """Biases + the dot product of user and movie embeddings."""

    name = "biased_mf"
    Settings = BiasedMFSettings

    def __init__(self, shape, settings):
        super().__init__(shape, settings)
        dim = settings.embedding_dim
        self.user_factors = table(shape.n_users, dim, factor_std(dim))
        self.movie_factors = table(shape.n_movies, dim, factor_std(dim))

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        user, movie = self.user_factors(users), self.movie_factors(movies)
        return self.bias(users, movies), (user * movie).sum(dim=1)


class SVDppSettings(BiasedMFSettings):
    """`svdpp`: biased MF whose user vector adds the implicit factors of the movies the user rated."""

    implicit_weight_decay: WeightDecay = Field(
        description="L2 penalty on the implicit factors each batch looks up through the users' rated movies"
    )


@register
class SVDpp(BiasedMF):
    """Biased MF whose user vector adds |N(u)|^-1/2 times the sum of implicit factors of the movies u rated."""

    name = "svdpp"
    Settings = SVDppSettings

    def __init__(self, shape, settings):
        super().__init__(shape, settings)
        dim = settings.embedding_dim
        self.implicit_factors = table(shape.n_movies, dim, factor_std(dim), bag=True)
        # Each user's training movies as CSR: rated_movies[rated_start[u]:rated_start[u + 1]].
        self.register_buffer("rated_start", torch.zeros(shape.n_users + 1, dtype=torch.int64))
        self.register_buffer("rated_movies", torch.zeros(shape.n_train_ratings, dtype=torch.int64))

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        starts, order = csr_index(data.users, self.shape.n_users)
        self.rated_start[:] = starts
        self.rated_movies[:] = data.movies[order]

    @classmethod
    def checkpoint_settings(cls, saved: dict) -> dict:
        # Before implicit_weight_decay, the implicit factors had the model's weight_decay.
        return {"implicit_weight_decay": saved["weight_decay"]} | saved

    def table_weight_decays(self) -> dict[nn.Module, float]:
        return super().table_weight_decays() | {self.implicit_factors: self.settings.implicit_weight_decay}

    def implicit(self, users: Tensor) -> Tensor:
        """|N(u)|^-1/2 * sum of y_j over the movies j each user rated, computed once per distinct user."""
        distinct, position = torch.unique(users, return_inverse=True)
        rows, offsets = csr_rows(self.rated_start, distinct)
        lengths = self.rated_start[distinct + 1] - self.rated_start[distinct]
        weights = lengths.clamp(min=1).float().rsqrt().repeat_interleave(lengths)
        return self.implicit_factors(self.rated_movies[rows], offsets, per_sample_weights=weights)[position]

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        user, movie = self.user_factors(users) + self.implicit(users), self.movie_factors(movies)
        return self.bias(users, movies), (user * movie).sum(dim=1)


class TimeSVDSettings(BiasedMFSettings):
    """`timesvd`: biased MF whose biases move with time."""

    time_bins: int = Field(ge=1, le=10_000, description="time bins of the movie biases, over the training days")


@register
class TimeSVD(BiasedMF):
    """Biased MF whose biases move with time (Koren's timeSVD, KDD 2009): a movie bias per time bin,
    and a user bias that drifts linearly in dev_u(t) = sign(t - t_u) |t - t_u|^0.4, t_u the user's mean rating day.

    The `time_bins` bins split the training ratings' days evenly. A rating without a day (serving)
    is predicted as of its user's last training day.
    """

    name = "timesvd"
    Settings = TimeSVDSettings
    DRIFT_EXPONENT = 0.4  # Koren's beta: the drift grows slower than the days apart

    def __init__(self, shape, settings):
        super().__init__(shape, settings)
        self.movie_bin_bias = table(shape.n_movies * settings.time_bins, 1)
        self.user_drift = table(shape.n_users, 1)
        self.register_buffer("day_range", torch.zeros(2))  # first and last training day
        self.register_buffer("user_mean_day", torch.zeros(shape.n_users))
        self.register_buffer("user_last_day", torch.zeros(shape.n_users))

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        n_users = self.shape.n_users
        float32_days = data.days.float()  # the model's clock: days in float32, as its buffers and parameters
        days = float32_days.double()  # sums of millions of days lose whole days in float32
        self.day_range[:] = torch.stack([days.min(), days.max()])
        counts = torch.bincount(data.users, minlength=n_users).clamp(min=1)
        self.user_mean_day[:] = torch.zeros(n_users, dtype=torch.float64).index_add_(0, data.users, days) / counts
        self.user_last_day[:] = torch.zeros(n_users).scatter_reduce_(
            0, data.users, float32_days, "amax", include_self=False
        )

    def time_bias(self, users: Tensor, movies: Tensor, days: Tensor | None) -> Tensor:
        """Per rating: the movie's bias in the rating's time bin + the user's drift by then."""
        days = self.user_last_day[users] if days is None else days.float()
        bins = self.settings.time_bins
        first, last = self.day_range
        bin_of_day = ((days - first) * (bins / (last - first).clamp(min=1))).long().clamp(0, bins - 1)
        apart = days - self.user_mean_day[users]
        deviation = apart.sign() * apart.abs().pow(self.DRIFT_EXPONENT)
        return self.movie_bin_bias(movies * bins + bin_of_day)[:, 0] + self.user_drift(users)[:, 0] * deviation

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bias, interaction = super().score(users, movies)
        return bias + self.time_bias(users, movies, days), interaction
