"""Models fitted by closed-form sweeps, not gradient steps: biased MF by alternating least squares, and
Bayesian MF by Gibbs sampling. Each epoch is one sweep over users, then movies; the output is linear.

Both keep the training ratings beside the model (not in the checkpoint) and solve every user's (movie's)
bias and factors together, batched over many users or movies at once, in chunks that bound memory, on
whatever device the model is on (`ridge_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..data import DataShape, TrainingData, csr_index
from ..params import EmbeddingDim, ModelSettings
from .base import SweepModel, factor_std, register
from .ridge import GRAM_FLOATS, PaddedRatings, pad_by_owner, ridge_rows

# Implicit feedback (`bayes_mf`'s `implicit`). Each bag weighs its members 1 / |bag|^BAG_NORM_EXPONENT: 1 makes
# it their mean, 0.5 is Koren's SVD++ (a heavy user's bag sums to more). Chosen on val RMSE (docs/models.md).
BAG_NORM_EXPONENT = 0.5
# The bag vectors' first values: libFM's init_stdev, as the factors'.
BAG_INIT_STD = 0.1
# Up to this many members (the other side's users or movies), a side's bag vectors are drawn exactly through the
# eigendecomposition of the dense members x members Gram matrix, once per fit: n^3 work and n^2 float64 memory,
# 4 s of one core at ML-100K's 1,682 movies, a minute at 4,000, hours at ML-25M's 59,047 movies (and 28 GB).
# Beyond, each sweep solves for a draw by conjugate gradients (`bag_vectors_by_conjugate_gradients`).
MAX_EXACT_MEMBERS = 5_000
# Eigenvalues of BB' below this share of the largest are rounding's, taken as B'B's zeros (`bag_eigenbasis`).
RANGE_TOLERANCE = 1e-10
# Conjugate gradients stop when every coordinate's residual is this small against its right-hand side (float64
# solves; far below the draw's own spread), or after CG_MAX_ITERATIONS (each costs two passes over the ratings).
CG_TOLERANCE = 1e-6
CG_MAX_ITERATIONS = 200


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

    def sweep(self, epoch: int) -> Tensor:
        # The global bias stays the training mean: the biases absorb the rest.
        self.alternate_ridge("", self.global_bias, self.settings.regularization)
        return self.training_mse()


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
    def fixed_epochs(cls, settings: BayesMFSettings) -> int:
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

    def sweep(self, epoch: int) -> Tensor:
        chain, epoch = divmod(epoch, self.settings.sweeps)  # the epoch within its chain, from here on
        if chain != self.chain:
            self.start_chain(chain)
        if epoch < self.START_SWEEPS:
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
        if epoch >= self.settings.burn_in:
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


class Bags(NamedTuple):
    """One side's implicit feedback, the sparse matrix B (owners x members): each owner's (user's) bag holds the
    members of the other side (movies) it has training ratings with, each weighted 1 / |bag|^BAG_NORM_EXPONENT.
    Held by rows (owner o's members and weights are `owner_starts[o]:owner_starts[o + 1]` of `members` and
    `member_weights`) and by columns (member j's owners, and j's weight in each owner's bag), as the ratings
    grouped by either side are."""

    owner_starts: Tensor
    members: Tensor
    member_weights: Tensor  # in the model's dtype
    member_starts: Tensor
    owners: Tensor
    owner_weights: Tensor


class Eigenbasis(NamedTuple):
    """A symmetric positive semi-definite matrix as V diag(values) V', V's columns orthonormal."""

    vectors: Tensor
    values: Tensor


def make_bags(owner_starts: Tensor, members: Tensor, member_starts: Tensor, owners: Tensor, dtype: torch.dtype) -> Bags:
    """The bags of the ratings grouped by owner (owner o's members are `owner_starts[o]:owner_starts[o + 1]` of
    `members`), given the same ratings grouped by member too (member j's owners: `member_starts`, `owners`)."""
    counts = owner_starts.diff()
    weight_in_bag = counts.double().clamp(min=1).pow(-BAG_NORM_EXPONENT).to(dtype)  # each owner's members' weight
    member_weights = torch.repeat_interleave(weight_in_bag, counts)
    return Bags(owner_starts, members, member_weights, member_starts, owners, weight_in_bag.index_select(0, owners))


def bag_sums(bags: Bags, vectors: Tensor) -> Tensor:
    """B @ vectors: each owner's weighted sum of its members' vectors (owners x columns)."""
    weights = bags.member_weights.to(vectors.dtype)
    return F.embedding_bag(bags.members, vectors, bags.owner_starts[:-1], mode="sum", per_sample_weights=weights)


def member_sums(bags: Bags, rows: Tensor, squared: bool = False) -> Tensor:
    """B' @ rows: per member, the sum of its weight x the row of each owner whose bag holds it (members x columns);
    `squared`: of its weight squared (B'B's diagonal, with rows of ones)."""
    weights = bags.owner_weights.to(rows.dtype)
    weights = weights.square() if squared else weights
    return F.embedding_bag(bags.owners, rows, bags.member_starts[:-1], mode="sum", per_sample_weights=weights)


def gram_of_rows(starts: Tensor, columns: Tensor, weights: Tensor, n_columns: int) -> Tensor:
    """M'M (n_columns x n_columns, float64) for the sparse M whose row i holds `weights` at `columns` in
    `starts[i]:starts[i + 1]`, from a chunk of its rows at a time made dense."""
    n_rows, device = len(starts) - 1, columns.device
    row_of = torch.repeat_interleave(torch.arange(n_rows, device=device), starts.diff())
    gram = torch.zeros(n_columns, n_columns, dtype=torch.float64, device=device)
    step = max(1, GRAM_FLOATS // n_columns)
    for first in range(0, n_rows, step):
        last = min(first + step, n_rows)
        entries = slice(int(starts[first]), int(starts[last]))
        dense = torch.zeros(last - first, n_columns, dtype=torch.float64, device=device)
        # Accumulated, not assigned: an owner with two ratings of one member holds it twice, as in `bag_sums`.
        dense.index_put_((row_of[entries] - first, columns[entries]), weights[entries].double(), accumulate=True)
        gram.addmm_(dense.T, dense)
    return gram


def bag_gram(bags: Bags) -> Tensor:
    """B'B (members x members, float64)."""
    return gram_of_rows(bags.owner_starts, bags.members, bags.member_weights, len(bags.member_starts) - 1)


def bag_eigenbasis(bags: Bags, dtype: torch.dtype) -> Eigenbasis:
    """B'B's eigenbasis, computed in float64, kept in `dtype` (the model's). With fewer owners than members, from
    BB' (owners x owners), whose eigendecomposition U S U' costs less (the cube of its size): B'B's eigenvectors
    with nonzero eigenvalues are then B'U S^-1/2, for the same eigenvalues, and the basis spans B'B's range only."""
    n_owners, n_members = len(bags.owner_starts) - 1, len(bags.member_starts) - 1
    if n_members <= n_owners:
        values, vectors = torch.linalg.eigh(bag_gram(bags))
        # Rounding leaves the zero eigenvalues of a singular Gram matrix slightly negative, or slightly positive.
        return Eigenbasis(vectors.to(dtype), values.clamp(min=0).to(dtype))
    values, owner_vectors = torch.linalg.eigh(
        gram_of_rows(bags.member_starts, bags.owners, bags.owner_weights, n_owners)
    )
    kept = values > RANGE_TOLERANCE * values.max()
    vectors = member_sums(bags, owner_vectors[:, kept]) / values[kept].sqrt()
    return Eigenbasis(vectors.to(dtype), values[kept].to(dtype))


def bag_vectors_conditional(
    basis: Eigenbasis,
    bags: Bags,
    deviations: Tensor,
    row_precision: Tensor,
    vector_mean: Tensor,
    vector_precision: Tensor,
    draw: bool = True,
) -> Tensor:
    """Bag vectors Y (members x coordinates) drawn from their conditional given the owners' rows: per coordinate
    d, deviations[:, d] ~ N(B y_d, I / row_precision[d]) and y_d ~ N(vector_mean[d], I / vector_precision[d]),
    so y_d's precision is row_precision[d] B'B + vector_precision[d] I; `draw` False: the conditional's mean.
    `basis` is B'B's eigenbasis, in which that precision is diagonal for every d at once: an exact draw, all
    coordinates in two or three matrix products, in the dtype of `deviations`."""
    right = member_sums(bags, deviations) * row_precision + vector_mean * vector_precision
    vectors = basis.vectors
    precision = basis.values.unsqueeze(1) * row_precision + vector_precision  # per eigenvector and coordinate
    if vectors.shape[0] == vectors.shape[1]:  # a complete basis
        rotated = (vectors.T @ right) / precision
        if draw:
            rotated += torch.randn_like(rotated) / precision.sqrt()
        return vectors @ rotated
    # The basis spans B'B's range; off it, the precision is vector_precision alone. So the draw is that of the
    # prior's precision, `outside`, corrected within the range: outside + V (range's draw - V' outside).
    noise = torch.randn_like(right) if draw else torch.zeros_like(right)
    spread = vector_precision.rsqrt()
    outside = right / vector_precision + noise * spread
    rotated_right, rotated_noise = (vectors.T @ torch.cat([right, noise], 1)).split(right.shape[1], dim=1)
    correction = rotated_right * (1 / precision - 1 / vector_precision) + rotated_noise * (precision.rsqrt() - spread)
    return outside + vectors @ correction


def bag_vectors_by_conjugate_gradients(
    bags: Bags,
    deviations: Tensor,
    row_precision: Tensor,
    vector_mean: Tensor,
    vector_precision: Tensor,
    start: Tensor,
    draw: bool = True,
) -> Tensor:
    """The draw of `bag_vectors_conditional` without a dense matrix, for any number of members: the solution y of
    P y = right + e, P being each coordinate's precision and e ~ N(0, P) (B' z1 scaled by the rows' precision's
    root, plus z2 by the vectors'), is a draw of N(P^-1 right, P^-1) (perturb-and-solve, Papandreou & Yuille
    2010). Solved by Jacobi-preconditioned conjugate gradients, all coordinates at once, in float64, from `start`
    (the last draw); exact up to CG_TOLERANCE."""
    row_precision, vector_mean, vector_precision = (
        value.to(torch.float64) for value in (row_precision, vector_mean, vector_precision)
    )
    right = member_sums(bags, deviations.to(torch.float64)) * row_precision + vector_mean * vector_precision
    if draw:
        owners_noise = torch.randn(len(deviations), right.shape[1], dtype=torch.float64, device=right.device)
        right += member_sums(bags, owners_noise) * row_precision.sqrt()
        right += torch.randn_like(right) * vector_precision.sqrt()

    def precision_times(vectors: Tensor) -> Tensor:
        # B'B v in the model's dtype (the passes over the ratings, 4x faster than in float64 on the CPU), the
        # iterates in float64.
        gram_times = member_sums(bags, bag_sums(bags, vectors.to(deviations.dtype))).to(torch.float64)
        return gram_times * row_precision + vectors * vector_precision

    ones = torch.ones(len(deviations), 1, dtype=torch.float64, device=right.device)
    diagonal = member_sums(bags, ones, squared=True) * row_precision + vector_precision
    solved = conjugate_gradients(precision_times, right, start.to(torch.float64), 1 / diagonal)
    return solved.to(deviations.dtype)


def conjugate_gradients(
    apply: Callable[[Tensor], Tensor], right: Tensor, start: Tensor, inverse_diagonal: Tensor
) -> Tensor:
    """x with apply(x) = right, column by column (apply acts on each column alone, symmetric positive definite), by
    preconditioned conjugate gradients from `start`, all columns at once."""
    solution = start.clone()
    residual = right - apply(solution)
    direction = residual * inverse_diagonal
    product = (residual * direction).sum(0)
    target = CG_TOLERANCE * right.norm(dim=0)
    for _ in range(CG_MAX_ITERATIONS):
        if bool((residual.norm(dim=0) <= target).all()):
            break
        applied = apply(direction)
        curvature = (direction * applied).sum(0)
        # A column already solved has a zero direction: it stays as it is (no 0 / 0).
        step = torch.where(curvature > 0, product / curvature, 0.0)
        solution += step * direction
        residual -= step * applied
        preconditioned = residual * inverse_diagonal
        new_product = (residual * preconditioned).sum(0)
        direction = preconditioned + torch.where(product > 0, new_product / product, 0.0) * direction
        product = new_product
    return solution
