"""Bayesian MF by Gibbs sampling (BPMF with Rendle's hyper-priors), its chains started from ALS's fit, and with
implicit feedback from each side's bags (bags.py). Each sweep samples every user's bias and factors, then every
movie's, batched over many rows at once (`ridge.ridge_rows`); the model is the mean of the samples kept.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field
from torch import Tensor

from ...data import TrainingData
from ...params import EmbeddingDim, ModelSettings
from ..base import register
from .als import SweptMF, interactions
from .bags import (
    Bags,
    Eigenbasis,
    bag_eigenbasis,
    bag_sums,
    bag_vectors_by_conjugate_gradients,
    bag_vectors_conditional,
    make_bags,
)
from .ridge import ridge_rows

# The bag vectors' first values: libFM's init_stdev, as the factors'.
BAG_INIT_STD = 0.1
# Up to this many members (the other side's users or movies), a side's bag vectors are drawn exactly through the
# eigendecomposition of the dense members x members Gram matrix, once per fit: n^3 work and n^2 float64 memory,
# 4 s of one core at ML-100K's 1,682 movies, a minute at 4,000, hours at ML-25M's 59,047 movies (and 28 GB).
# Beyond, each sweep solves for a draw by conjugate gradients (`bag_vectors_by_conjugate_gradients`).
MAX_EXACT_MEMBERS = 5_000


class BayesMFSettings(ModelSettings):
    """`bayes_mf`: Bayesian MF by Gibbs sampling; hyper-priors set the model's penalties, so the rank, the
    number of sweeps and the penalty of the ALS fit the chain starts from are chosen."""

    embedding_dim: EmbeddingDim
    sweeps: int = Field(
        ge=1,
        le=100_000,
        description="sweeps (epochs) per chain, the ALS start's 4 first: exactly this many, no early stopping; the "
        "model is the last sweep's (every sample after burn_in), not a best val epoch's",
    )
    burn_in: int = Field(ge=0, le=100_000, description="sweeps before the samples are averaged into the model")
    start_regularization: float = Field(
        gt=0, le=1000, description="ALS-WR penalty of the alternating least squares sweeps the chain starts from"
    )
    implicit: bool = Field(
        description="implicit feedback (flipped SVD++): each user's prior mean adds a vector per movie it rated, "
        "over the root of their number; each movie's, one per user who rated it; false: without"
    )
    chains: int = Field(
        ge=1,
        le=100,
        description="independent chains, one after another, each of `sweeps` sweeps from its own random start; "
        "the model predicts with the mean of the chains' predictions",
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

    With `implicit` (flipped SVD++: Rendle et al. 2019's Bayesian FM with each side's bag of the other), a
    user's prior mean adds (B Y)_u, the weighted sum of vectors Y of the movies the user rated in training
    (its bag, `Bags`), and a movie's adds (C Z)_m over the users who rated it. Y's and Z's rows have priors
    of their own, as every row; each sweep draws Y after the users' rows, Z after the movies'
    (`draw_bag_vectors`). The ratings' likelihood is unchanged: the rows' posterior means are still all that
    predicts.

    The model predicts with the average of the parameters over the sweeps after `burn_in`, each user's
    (movie's) conditional mean rather than its draw (the posterior mean of each parameter); what that
    costs against averaging the samples' predictions is measured in docs/models.md.

    With `chains` above 1 the sampler runs that many chains one after another, each from its own random
    start, and predicts with the mean of their predictions, each weighted by the samples it kept: each
    chain settles near its own mode (factors are only defined up to a rotation, so their means cannot be
    averaged across chains), and averaging the modes' predictions cuts the error one chain leaves. A chain
    just started, with few samples, weighs little. That mean is itself one biased MF: the chains' biases
    averaged, their factors side by side (rank chains x embedding_dim), each times the root of its weight.
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
        # The parameters are the posterior means: what predicts and what the checkpoint keeps. The chains'
        # factors sit side by side.
        dim, chains = settings.embedding_dim, settings.chains
        super().__init__(shape, settings, start_std=0.0, factor_width=chains * dim)
        self.register_buffer("samples", torch.tensor(0))  # kept so far, all chains
        # The chain's current sample, and the sums of the kept ones: not in the checkpoint.
        for name, value in self.first_sample(torch.get_default_device()).items():
            self.register_buffer(f"current_{name}", value, persistent=False)
            self.register_buffer(f"sum_{name}", torch.zeros_like(value, dtype=torch.float64), persistent=False)
            # Each chain's mean of its kept samples so far.
            chain_means = torch.zeros(chains, *value.shape, dtype=torch.float64)
            self.register_buffer(f"chain_{name}", chain_means, persistent=False)
        self.chain = 0  # the chain running
        # The current sample's residual per training rating: each sweep leaves it for the next (`update_residual`).
        self.register_buffer("residual", torch.zeros(0), persistent=False)
        self.register_buffer("chain_samples", torch.zeros(chains, dtype=torch.float64), persistent=False)
        # Each side's prior mean per coordinate (the bias, then each factor dimension): the chain's state. With
        # `implicit`, so are each side's bag vectors (one per member of the other side; sized here, so that the
        # memory estimate counts them, and drawn by `remember`) and their prior mean: empty without, so that the
        # model is then the one before bags, byte for byte.
        for side, n_members in (("user", shape.n_movies), ("movie", shape.n_users)):
            self.register_buffer(f"prior_mean_{side}", torch.zeros(1 + dim), persistent=False)
            vectors = torch.zeros(n_members if settings.implicit else 0, 1 + dim)
            self.register_buffer(f"current_{side}_bag_vectors", vectors, persistent=False)
            self.register_buffer(f"prior_mean_{side}_bag", torch.zeros(0), persistent=False)
        # Each side's bags and the eigenbasis of their Gram matrix: made by the first Gibbs sweep, on the
        # model's device, from the ratings grouped by owner.
        self.bags: dict[str, Bags] = {}
        self.bag_bases: dict[str, Eigenbasis] = {}

    @classmethod
    def checkpoint_settings(cls, saved: dict) -> dict:
        return {"implicit": False, "chains": 1} | saved  # a checkpoint from before the bags, or the chains, had one

    @classmethod
    def planned_sweeps(cls, settings: BayesMFSettings) -> int:
        return settings.chains * settings.sweeps

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        self.start_bags()

    def start_bags(self) -> None:
        """With `implicit`, each side's bag vectors at their random start, and their prior mean at 0."""
        if not self.settings.implicit:
            return
        coordinates = 1 + self.settings.embedding_dim
        for side, n_members in (("user", self.shape.n_movies), ("movie", self.shape.n_users)):
            vectors = torch.randn(n_members, coordinates, device=self.device) * BAG_INIT_STD
            setattr(self, f"current_{side}_bag_vectors", vectors)
            setattr(self, f"prior_mean_{side}_bag", torch.zeros(coordinates, device=self.device))

    def first_sample(self, device: torch.device) -> dict[str, Tensor]:
        """A chain's first sample: the global bias at the training mean, the biases at 0, the factors drawn."""
        dim, shape = self.settings.embedding_dim, self.shape
        return {
            "global_bias": torch.tensor(shape.train_mean, device=device),
            "user_bias": torch.zeros(shape.n_users, device=device),
            "movie_bias": torch.zeros(shape.n_movies, device=device),
            "user_factors": torch.randn(shape.n_users, dim, device=device) * self.INIT_STD,
            "movie_factors": torch.randn(shape.n_movies, dim, device=device) * self.INIT_STD,
        }

    def start_chain(self, chain: int) -> None:
        """Start chain number `chain` afresh: the first sample and the bags' vectors drawn again, as the first
        chain's were, the priors and the sums of kept samples at 0. The chains before it keep their means."""
        self.chain = chain
        for name, value in self.first_sample(self.device).items():
            setattr(self, f"current_{name}", value)
            getattr(self, f"sum_{name}").zero_()
        for side in ("user", "movie"):
            getattr(self, f"prior_mean_{side}").zero_()
        self.start_bags()

    def current_prediction(self) -> Tensor:
        """The current sample's prediction of every training rating, unclipped."""
        users, movies = self.train_users, self.train_movies
        bias = self.current_global_bias + self.current_user_bias[users] + self.current_movie_bias[movies]
        return bias + interactions(self.current_user_factors, self.current_movie_factors, users, movies)

    def sweeps(self) -> Iterator[Tensor]:
        for chain in range(self.settings.chains):
            if chain > 0:  # the first chain starts from the sample drawn when the model was built
                self.start_chain(chain)
            for sweep in range(self.settings.sweeps):
                yield self.chain_sweep(sweep)

    def chain_sweep(self, sweep: int) -> Tensor:
        """The chain's sweep number `sweep` (from 0): ALS's for the first START_SWEEPS, then a Gibbs sweep, whose
        sample is kept from `burn_in` on; returns the training MSE of the chain's current sample."""
        if sweep < self.START_SWEEPS:
            self.alternate_ridge("current_", self.current_global_bias, self.settings.start_regularization)
            return self.update_residual().square().mean()
        # The chain's start (ALS) always sweeps first, so the last sweep left the current sample's residuals.
        residual = self.residual
        noise = self.gamma(
            torch.tensor((self.PRIOR_SHAPE + len(residual)) / 2), (self.PRIOR_RATE + residual.square().sum()) / 2
        )
        self.sample_global_bias(noise, residual)
        conditional_means = {}
        for side, other, padded, others, ratings in self.sides():
            bias, factors = getattr(self, f"current_{side}_bias"), getattr(self, f"current_{side}_factors")
            rows = torch.cat([bias.unsqueeze(1), factors], 1)
            # With bags, each row's prior is centred on the side's mean plus its bag's sum: the hyper-prior sees
            # the rows' deviations from their bags.
            offsets = bag_sums(self.side_bags(side), self.bag_vectors(side)) if self.settings.implicit else None
            prior_mean, prior_precision = self.sample_prior(side, rows if offsets is None else rows - offsets)
            targets = ratings - self.current_global_bias - getattr(self, f"current_{other}_bias")[others]
            # The conditional's precision is noise x D'D + diag(prior precision): over noise, a ridge penalty.
            means, drawn = ridge_rows(
                padded,
                getattr(self, f"current_{other}_factors"),
                targets,
                prior_precision / noise,
                prior_mean if offsets is None else prior_mean + offsets,
                draw_std=noise.rsqrt(),
            )
            bias.copy_(drawn[:, 0])
            factors.copy_(drawn[:, 1:])
            if offsets is not None:
                self.draw_bag_vectors(side, drawn - prior_mean, prior_precision)
            conditional_means[side] = means
        if sweep >= self.settings.burn_in:
            self.keep_sample(conditional_means)
        return self.update_residual().square().mean()

    def update_residual(self) -> Tensor:
        """The current sample's residual per training rating, kept for the next sweep (which starts from it)."""
        self.residual = self.train_ratings - self.current_prediction()
        return self.residual

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

    def side_bags(self, side: str) -> Bags:
        """A side's bags (users': the movies each rated), made the first time they are asked for."""
        if side not in self.bags:
            other = "movie" if side == "user" else "user"
            self.bags[side] = make_bags(
                getattr(self, f"{side}_starts"),
                getattr(self, f"{side}_others"),
                getattr(self, f"{other}_starts"),
                getattr(self, f"{other}_others"),
                self.bag_vectors(side).dtype,
            )
        return self.bags[side]

    def bag_vectors(self, side: str) -> Tensor:
        """The current vectors of the members of a side's bags (users' bags: one per movie)."""
        return getattr(self, f"current_{side}_bag_vectors")

    def draw_bag_vectors(self, side: str, deviations: Tensor, row_precision: Tensor) -> None:
        """A side's bag vectors from their conditional given its rows' `deviations` from the side's prior mean
        and the rows' prior precision, after a new prior of their own: exactly while the members are few enough
        (MAX_EXACT_MEMBERS), by conjugate gradients beyond."""
        vectors, bags = self.bag_vectors(side), self.side_bags(side)
        vector_mean, vector_precision = self.sample_prior(f"{side}_bag", vectors)
        conditional = (deviations, row_precision, vector_mean, vector_precision)
        if len(vectors) > MAX_EXACT_MEMBERS:
            vectors.copy_(bag_vectors_by_conjugate_gradients(bags, *conditional, start=vectors))
            return
        if side not in self.bag_bases:  # once per fit: the bags do not change
            self.bag_bases[side] = bag_eigenbasis(bags, vectors.dtype)
        vectors.copy_(bag_vectors_conditional(self.bag_bases[side], bags, *conditional))

    def gamma(self, shape: Tensor, rate: Tensor) -> Tensor:
        """Draws from Gamma(shape, rate), from the seeded generator of the model's device."""
        return torch.distributions.Gamma(shape.to(rate.device, rate.dtype), rate).sample()

    def keep_sample(self, conditional_means: dict[str, Tensor]) -> None:
        """Add the sweep's rows to the kept ones; the model's parameters become their mean. Each user's (movie's)
        row adds its conditional mean, not its draw: the same expectation, less noise (Rao-Blackwellisation),
        so the average settles in fewer sweeps."""
        self.samples += 1
        self.chain_samples[self.chain] += 1
        kept = {"global_bias": self.current_global_bias}
        for side, means in conditional_means.items():
            kept |= {f"{side}_bias": means[:, 0], f"{side}_factors": means[:, 1:]}
        for name, value in kept.items():
            total = getattr(self, f"sum_{name}").add_(value)
            getattr(self, f"chain_{name}")[self.chain].copy_(total / self.chain_samples[self.chain])
        self.average_chains()

    def average_chains(self) -> None:
        """The model's parameters: the chains' mean prediction, each chain weighted by its share w_c of the
        samples kept. Biases add, so theirs is the weighted mean of the chains' biases; sum_c w_c p_cu . q_cm
        is the product of their factors side by side, each times sqrt(w_c)."""
        chains, dim = self.chain + 1, self.settings.embedding_dim
        weights = self.chain_samples[:chains] / self.chain_samples[:chains].sum()
        for name in ("global_bias", "user_bias", "movie_bias"):
            means = getattr(self, f"chain_{name}")[:chains]
            getattr(self, name).copy_(torch.tensordot(weights, means, dims=1))
        for side in ("user", "movie"):
            means = getattr(self, f"chain_{side}_factors")[:chains] * weights.sqrt().view(-1, 1, 1)
            side_by_side = means.permute(1, 0, 2).reshape(means.shape[1], chains * dim)
            getattr(self, f"{side}_factors")[:, : chains * dim].copy_(side_by_side)


