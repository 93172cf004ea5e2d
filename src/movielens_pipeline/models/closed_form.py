"""Models fitted by closed-form sweeps, not gradient steps: biased MF by alternating least squares, and
Bayesian MF by Gibbs sampling. Each epoch is one sweep over users, then movies; the output is linear.

Both keep the training ratings beside the model (not in the checkpoint) and batch their
linear algebra over many users or movies at once, in chunks that bound memory, on whatever
device the model is on.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ..data import DataShape, TrainingData, csr_index
from ..params import EmbeddingDim, ModelSettings
from .base import SweepModel, factor_std, register

# Padded design values per batched solve (64 MiB of float32): what bounds memory at any size.
GRAM_FLOATS = 1 << 24


class SweptMF(SweepModel):
    """Biased MF whose parameters are buffers that each sweep sets (no gradients):
    r = global bias + b_u + b_m + p_u . q_m. The factors start at N(0, start_std), or at 0."""

    def __init__(self, shape: DataShape, settings: ModelSettings, start_std: float):
        super().__init__(shape, settings)
        dim = settings.embedding_dim
        self.register_buffer("global_bias", torch.tensor(shape.train_mean))
        self.register_buffer("user_bias", torch.zeros(shape.n_users))
        self.register_buffer("movie_bias", torch.zeros(shape.n_movies))
        for name, rows in (("user_factors", shape.n_users), ("movie_factors", shape.n_movies)):
            start = torch.randn(rows, dim) * start_std if start_std > 0 else torch.zeros(rows, dim)
            self.register_buffer(name, start)

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bias = self.global_bias + self.user_bias[users] + self.movie_bias[movies]
        return bias, (self.user_factors[users] * self.movie_factors[movies]).sum(dim=1)


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
        # CSR indexes of the training ratings by user and by movie (starts, order), moved with the model.
        for name in ("user_starts", "user_order", "movie_starts", "movie_order"):
            self.register_buffer(name, torch.zeros(0), persistent=False)

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        self.user_starts, self.user_order = csr_index(data.users, self.shape.n_users)
        self.movie_starts, self.movie_order = csr_index(data.movies, self.shape.n_movies)

    def sweep(self) -> Tensor:
        users, movies, ratings = self.train_users, self.train_movies, self.train_ratings
        # The global bias stays the training mean: the biases absorb the rest.
        residual = ratings - self.global_bias
        penalty = self.settings.regularization
        solved = ridge_rows(
            (self.user_starts, self.user_order), movies, self.movie_factors, residual - self.movie_bias[movies], penalty
        )
        self.user_bias, self.user_factors = solved[:, 0].contiguous(), solved[:, 1:].contiguous()
        solved = ridge_rows(
            (self.movie_starts, self.movie_order), users, self.user_factors, residual - self.user_bias[users], penalty
        )
        self.movie_bias, self.movie_factors = solved[:, 0].contiguous(), solved[:, 1:].contiguous()
        return self.training_mse()


def ridge_rows(
    by_owner: tuple[Tensor, Tensor], others: Tensor, factors: Tensor, targets: Tensor, penalty: float
) -> Tensor:
    """For every owner o (a user, or a movie): the [bias, factors] minimising the squared error of its ratings'
    `targets` against [1, factors[others]] (the other side's factors) + penalty x (its ratings) x the
    squared norm; zeros for an owner without ratings.

    `by_owner` (starts, order) is the CSR index of the ratings by owner. Owners go in buckets of similar
    counts (1, 2, 3-4, 5-8, ...), each owner's rows padded to its bucket's largest count, so that every
    Gram matrix is one batched matrix product and every solve one batched Cholesky; a chunk of a bucket
    holds at most GRAM_FLOATS padded values.
    """
    starts, order = by_owner
    counts = starts.diff()
    dim = factors.shape[1] + 1
    solutions = torch.zeros(len(counts), dim, device=factors.device, dtype=factors.dtype)
    bucket_of = torch.log2(counts.clamp(min=1).double()).ceil().long()
    bucket_of[counts == 0] = -1
    for bucket in torch.unique(bucket_of).tolist():
        if bucket < 0:
            continue
        owners = torch.nonzero(bucket_of == bucket).squeeze(1)
        width = int(counts[owners].max())
        for chunk in owners.split(max(1, GRAM_FLOATS // (width * dim))):
            position = torch.arange(width, device=factors.device)
            filled = position < counts[chunk].unsqueeze(1)
            rows = order[torch.where(filled, starts[chunk].unsqueeze(1) + position, starts[chunk].unsqueeze(1))]
            design = torch.cat([torch.ones_like(rows, dtype=factors.dtype).unsqueeze(2), factors[others[rows]]], 2)
            design = design * filled.unsqueeze(2)
            gram = design.transpose(1, 2) @ design
            right = design.transpose(1, 2) @ (targets[rows] * filled).unsqueeze(2)
            gram += (penalty * counts[chunk].to(factors.dtype)).view(-1, 1, 1) * torch.eye(dim, device=factors.device)
            solutions[chunk] = torch.cholesky_solve(right, torch.linalg.cholesky(gram)).squeeze(2)
    return solutions


class BayesMFSettings(ModelSettings):
    """`bayes_mf`: Bayesian MF by Gibbs sampling; hyper-priors set every penalty, so only the rank and the
    number of sweeps are chosen."""

    embedding_dim: EmbeddingDim
    sweeps: int = Field(ge=1, le=100_000, description="Gibbs sweeps (epochs): exactly this many, no early stopping")
    burn_in: int = Field(ge=0, le=100_000, description="sweeps before the samples are averaged into the model")


@register
class BayesMF(SweptMF):
    """Bayesian MF, r = w0 + b_u + b_m + v_u . w_m + noise, fitted by Gibbs sampling as Rendle's Bayesian
    factorisation machine over user and movie ids (libFM's MCMC; Salakhutdinov & Mnih 2008 with
    per-dimension priors): every bias and every factor dimension has a Normal prior whose mean and
    precision have a Normal-Gamma hyper-prior, and the noise precision a Gamma prior. Each sweep samples
    the noise, the global bias, then for users and for movies the biases and, dimension by dimension,
    the factors, each in closed form from its conditional, every user (movie) at once.

    The model predicts with the average of the parameters over the samples after `burn_in` (the
    posterior mean of each parameter); what that costs against averaging the samples' predictions
    is measured in docs/models.md.
    """

    name = "bayes_mf"
    Settings = BayesMFSettings
    # Hyper-priors, as libFM's defaults: Gamma(1, 1) on precisions, N(0, 1 / precision) on means.
    PRIOR_SHAPE, PRIOR_RATE, PRIOR_MEAN_WEIGHT = 1.0, 1.0, 1.0
    # The chain's first factors: libFM's init_stdev (on ML-100K, test RMSE 0.8940 against 0.8959 from 0.025
    # and 0.8974 from 0.3, 200 sweeps).
    INIT_STD = 0.1

    def __init__(self, shape, settings):
        # The parameters are the posterior means: what predicts and what the checkpoint keeps.
        super().__init__(shape, settings, start_std=0.0)
        dim = settings.embedding_dim
        self.register_buffer("samples", torch.tensor(0))  # kept so far
        # The chain's current sample, and the sums of the kept ones: not in the checkpoint.
        sample = {
            "global_bias": torch.tensor(shape.train_mean),
            "user_bias": torch.zeros(shape.n_users),
            "movie_bias": torch.zeros(shape.n_movies),
            "user_factors": torch.randn(shape.n_users, dim) * self.INIT_STD,
            "movie_factors": torch.randn(shape.n_movies, dim) * self.INIT_STD,
        }
        for name, value in sample.items():
            self.register_buffer(f"current_{name}", value, persistent=False)
            self.register_buffer(f"sum_{name}", torch.zeros_like(value, dtype=torch.float64), persistent=False)
        self.register_buffer("residual", torch.zeros(0), persistent=False)  # of each training rating, each sweep
        # Each group's prior mean (one per factor dimension), carried from sweep to sweep as the chain's state.
        for group, size in (("user_bias", 1), ("movie_bias", 1), ("user_factors", dim), ("movie_factors", dim)):
            self.register_buffer(f"prior_mean_{group}", torch.zeros(size), persistent=False)

    @classmethod
    def fixed_epochs(cls, settings: BayesMFSettings) -> int:
        return settings.sweeps

    def current_prediction(self) -> Tensor:
        """The current sample's prediction of every training rating, unclipped."""
        users, movies = self.train_users, self.train_movies
        bias = self.current_global_bias + self.current_user_bias[users] + self.current_movie_bias[movies]
        return bias + (self.current_user_factors[users] * self.current_movie_factors[movies]).sum(dim=1)

    def sweep(self) -> Tensor:
        users, movies = self.train_users, self.train_movies
        # Recomputed each sweep, so the updates' float32 rounding does not build up.
        self.residual = self.train_ratings - self.current_prediction()
        noise = self.gamma((self.PRIOR_SHAPE + len(users)) / 2, (self.PRIOR_RATE + self.residual.square().sum()) / 2)
        self.sample_global_bias(noise)
        ones = torch.ones_like(self.residual)
        self.sample_rows("user_bias", self.current_user_bias, users, ones, noise)
        self.sample_rows("movie_bias", self.current_movie_bias, movies, ones, noise)
        for dim in range(self.settings.embedding_dim):
            user_column, movie_column = self.current_user_factors[:, dim], self.current_movie_factors[:, dim]
            self.sample_rows("user_factors", user_column, users, movie_column[movies], noise, dim)
            self.sample_rows("movie_factors", movie_column, movies, user_column[users], noise, dim)
        if self.current_epoch >= self.settings.burn_in:
            self.keep_sample()
        return self.residual.square().mean()

    def sample_global_bias(self, noise: Tensor) -> None:
        """w0 from its conditional under a flat prior; the residuals follow."""
        precision = noise * len(self.residual)
        mean = noise * (self.residual + self.current_global_bias).sum() / precision
        new = mean + torch.randn((), device=mean.device) / precision.sqrt()
        self.residual -= new - self.current_global_bias
        self.current_global_bias = new

    def sample_rows(self, group: str, values: Tensor, owners: Tensor, slopes: Tensor, noise: Tensor, dim: int = 0):
        """Draw, in place, one parameter per owner (a bias, or one factor dimension `dim` of `group`), each from
        its conditional given everything else: first the group's prior mean and precision from their
        hyper-prior, then every owner's value at once. `slopes`: the derivative of each rating's prediction in
        its owner's value. The residuals follow."""
        prior_mean, prior_precision = self.sample_prior(group, values, dim)
        n_owners = len(values)
        squares = torch.zeros_like(values).index_add_(0, owners, slopes.square())
        products = torch.zeros_like(values).index_add_(0, owners, slopes * (self.residual + values[owners] * slopes))
        precision = prior_precision + noise * squares
        mean = (noise * products + prior_precision * prior_mean) / precision
        new = mean + torch.randn(n_owners, device=values.device) / precision.sqrt()
        self.residual -= (new - values)[owners] * slopes
        values.copy_(new)

    def sample_prior(self, group: str, values: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        """A new prior mean and precision for a group of values, from their Normal-Gamma posterior (libFM's order:
        the precision given the last mean, then the mean)."""
        means = getattr(self, f"prior_mean_{group}")
        count, weight = len(values), self.PRIOR_MEAN_WEIGHT
        spread = weight * means[dim].square() + (values - means[dim]).square().sum()
        precision = self.gamma((self.PRIOR_SHAPE + count + 1) / 2, (self.PRIOR_RATE + spread) / 2)
        mean = values.sum() / (count + weight)
        means[dim] = mean + torch.randn((), device=values.device) / ((count + weight) * precision).sqrt()
        return means[dim], precision

    def gamma(self, shape: float, rate: Tensor) -> Tensor:
        """A draw from Gamma(shape, rate), from the seeded generator of the model's device."""
        return torch.distributions.Gamma(torch.tensor(shape, device=rate.device), rate).sample()

    def keep_sample(self) -> None:
        """Add the current sample to the kept ones; the model's parameters become their mean."""
        self.samples += 1
        for name in ("global_bias", "user_bias", "movie_bias", "user_factors", "movie_factors"):
            total = getattr(self, f"sum_{name}").add_(getattr(self, f"current_{name}"))
            getattr(self, name).copy_(total / self.samples)
