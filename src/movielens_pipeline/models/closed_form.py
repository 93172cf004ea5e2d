"""Models fitted by closed-form sweeps, not gradient steps: biased MF by alternating least squares, and
Bayesian MF by Gibbs sampling. Each epoch is one sweep over users, then movies; the output is linear.

Both keep the training ratings beside the model (not in the checkpoint) and solve every user's (movie's)
bias and factors together, batched over many users or movies at once, in chunks that bound memory, on
whatever device the model is on (`ridge_rows`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field
from torch import Tensor

from ..data import DataShape, TrainingData, csr_index
from ..params import EmbeddingDim, ModelSettings
from .base import SweepModel, factor_std, register
from .ridge import PaddedRatings, pad_by_owner, ridge_rows


class SweptMF(SweepModel):
    """Biased MF whose parameters are buffers that each sweep sets (no gradients):
    r = global bias + b_u + b_m + p_u . q_m. The factors start at N(0, start_std), or at 0.
    Keeps the training ratings grouped by user and by movie, and their padded layouts, which every sweep reads."""

    def __init__(self, shape: DataShape, settings: ModelSettings, start_std: float):
        super().__init__(shape, settings)
        dim = settings.embedding_dim
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

    def sweep(self) -> Tensor:
        # The global bias stays the training mean: the biases absorb the rest.
        self.alternate_ridge("", self.global_bias, self.settings.regularization)
        return self.training_mse()


class BayesMFSettings(ModelSettings):
    """`bayes_mf`: Bayesian MF by Gibbs sampling; hyper-priors set the model's penalties, so the rank, the
    number of sweeps and the penalty of the ALS fit the chain starts from are chosen."""

    embedding_dim: EmbeddingDim
    sweeps: int = Field(
        ge=1, le=100_000, description="sweeps (epochs), the ALS start's 4 first: exactly this many, no early stopping"
    )
    burn_in: int = Field(ge=0, le=100_000, description="sweeps before the samples are averaged into the model")
    start_regularization: float = Field(
        gt=0, le=1000, description="ALS-WR penalty of the alternating least squares sweeps the chain starts from"
    )


@register
class BayesMF(SweptMF):
    """Bayesian MF, r = w0 + b_u + b_m + v_u . w_m + noise, fitted by Gibbs sampling: the model of Rendle's
    Bayesian factorisation machine over user and movie ids (libFM's MCMC), every bias and every factor
    dimension with a Normal prior whose mean and precision have a Normal-Gamma hyper-prior, the noise
    precision a Gamma prior. The chain starts from ALS's fit (START_SWEEPS sweeps). Each sweep then samples
    the noise, the global bias, the priors, then every user's bias and factors jointly (as BPMF,
    Salakhutdinov & Mnih 2008, samples a user's vector) from their multivariate Normal conditional given
    the movies, all users at once (`ridge_rows`), then the movies likewise: one batched solve per bucket
    of users, where libFM's sampler passes over every rating once per factor dimension.

    The model predicts with the average of the parameters over the sweeps after `burn_in`, each user's
    (movie's) conditional mean rather than its draw (the posterior mean of each parameter); what that
    costs against averaging the samples' predictions is measured in docs/models.md.
    """

    name = "bayes_mf"
    Settings = BayesMFSettings
    # Hyper-priors, as libFM's defaults: Gamma(1, 1) on precisions, N(0, 1 / precision) on means.
    PRIOR_SHAPE, PRIOR_RATE, PRIOR_MEAN_WEIGHT = 1.0, 1.0, 1.0
    # The chain's first factors: libFM's init_stdev; then START_SWEEPS sweeps of ALS (as BPMF starts from
    # PMF's fit, Salakhutdinov & Mnih 2008). From small factors the hyper-priors shrink every factor towards 0,
    # and the chain took 60-80 sweeps to leave there on ML-100K; on 25 M synthetic ratings, rank 8, it had not
    # after 20 (test RMSE 1.137x the noise floor, against 1.07x from ALS's fit). ALS settles in about 4 sweeps.
    INIT_STD = 0.1
    START_SWEEPS = 4

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
        # Each side's prior mean per coordinate (the bias, then each factor dimension): the chain's state.
        for side in ("user", "movie"):
            self.register_buffer(f"prior_mean_{side}", torch.zeros(1 + dim), persistent=False)

    @classmethod
    def fixed_epochs(cls, settings: BayesMFSettings) -> int:
        return settings.sweeps

    def current_prediction(self) -> Tensor:
        """The current sample's prediction of every training rating, unclipped."""
        users, movies = self.train_users, self.train_movies
        bias = self.current_global_bias + self.current_user_bias[users] + self.current_movie_bias[movies]
        return bias + interactions(self.current_user_factors, self.current_movie_factors, users, movies)

    def sweep(self) -> Tensor:
        if self.current_epoch < self.START_SWEEPS:
            self.alternate_ridge("current_", self.current_global_bias, self.settings.start_regularization)
            return (self.train_ratings - self.current_prediction()).square().mean()
        residual = self.train_ratings - self.current_prediction()
        noise = self.gamma(
            torch.tensor((self.PRIOR_SHAPE + len(residual)) / 2), (self.PRIOR_RATE + residual.square().sum()) / 2
        )
        self.sample_global_bias(noise, residual)
        conditional_means = {}
        for side, other, padded, others, ratings in self.sides():
            bias, factors = getattr(self, f"current_{side}_bias"), getattr(self, f"current_{side}_factors")
            prior_mean, prior_precision = self.sample_prior(side, torch.cat([bias.unsqueeze(1), factors], 1))
            targets = ratings - self.current_global_bias - getattr(self, f"current_{other}_bias")[others]
            # The conditional's precision is noise x D'D + diag(prior precision): over noise, a ridge penalty.
            means, drawn = ridge_rows(
                padded,
                getattr(self, f"current_{other}_factors"),
                targets,
                prior_precision / noise,
                prior_mean,
                draw_std=noise.rsqrt(),
            )
            bias.copy_(drawn[:, 0])
            factors.copy_(drawn[:, 1:])
            conditional_means[side] = means
        if self.current_epoch >= self.settings.burn_in:
            self.keep_sample(conditional_means)
        return (self.train_ratings - self.current_prediction()).square().mean()

    def sample_global_bias(self, noise: Tensor, residual: Tensor) -> None:
        """w0 from its conditional under a flat prior, given the residuals of the current sample."""
        precision = noise * len(residual)
        mean = noise * (residual + self.current_global_bias).sum() / precision
        self.current_global_bias = mean + torch.randn((), device=mean.device) / precision.sqrt()

    def sample_prior(self, side: str, values: Tensor) -> tuple[Tensor, Tensor]:
        """A new prior mean and precision per coordinate of a side's rows `values` (owners x coordinates), from
        their Normal-Gamma posterior (libFM's order: the precision given the last mean, then the mean)."""
        means = getattr(self, f"prior_mean_{side}")
        count, weight = len(values), self.PRIOR_MEAN_WEIGHT
        spread = weight * means.square() + (values - means).square().sum(0)
        precision = self.gamma(torch.tensor((self.PRIOR_SHAPE + count + 1) / 2), (self.PRIOR_RATE + spread) / 2)
        mean = values.sum(0) / (count + weight)
        means.copy_(mean + torch.randn(len(means), device=values.device) / ((count + weight) * precision).sqrt())
        return means, precision

    def gamma(self, shape: Tensor, rate: Tensor) -> Tensor:
        """Draws from Gamma(shape, rate), from the seeded generator of the model's device."""
        return torch.distributions.Gamma(shape.to(rate.device, rate.dtype), rate).sample()

    def keep_sample(self, conditional_means: dict[str, Tensor]) -> None:
        """Add the sweep's rows to the kept ones; the model's parameters become their mean. Each user's (movie's)
        row adds its conditional mean, not its draw: the same expectation, less noise (Rao-Blackwellisation),
        so the average settles in fewer sweeps."""
        self.samples += 1
        kept = {"global_bias": self.current_global_bias}
        for side, means in conditional_means.items():
            kept |= {f"{side}_bias": means[:, 0], f"{side}_factors": means[:, 1:]}
        for name, value in kept.items():
            total = getattr(self, f"sum_{name}").add_(value)
            getattr(self, name).copy_(total / self.samples)
