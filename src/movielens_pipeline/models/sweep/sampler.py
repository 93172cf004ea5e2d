"""The Gibbs sampler's state (bayes_mf.py): the running chain's current sample, each side's priors and bags, the
sessions' biases, and the kept samples' sums and per-chain means, read and written through typed views (`Sample`,
`Tables`); their start, keeping and averaging; and the sampler's draws of its precisions and prior means
(Normal-Gamma).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ...data import DataShape, TrainingData
from ...params import ModelSettings
from ..sums import fixed_order_sum
from .als import SweptMF
from .bags import BAG_INIT_STD
from .sessions import find_sessions, make_sessions

# Hyper-priors, as libFM's defaults: Gamma(1, 1) on precisions, N(0, 1 / precision) on means.
PRIOR_SHAPE, PRIOR_RATE, PRIOR_MEAN_WEIGHT = 1.0, 1.0, 1.0
# The chain's first factors: libFM's init_stdev (ALS's start sweeps, `bayes_mf.START_SWEEPS`, then move them).
FACTOR_INIT_STD = 0.1


class SideSample(NamedTuple):
    """One side's (users' or movies') part of the running chain's sample: views of the model's buffers."""

    bias: Tensor  # per row (user or movie)
    factors: Tensor
    prior_mean: Tensor  # the rows' prior mean per coordinate: the bias, then each factor dimension
    bag_vectors: Tensor  # one per member of the side's bags (the other side's rows, a movie's attributes); or empty
    bag_prior_mean: Tensor  # their prior mean per coordinate; empty without bags


class Sample(NamedTuple):
    """The running chain's current sample: the global bias, each side's, and the sessions' biases (empty without
    `session_minutes`) with their prior mean. Written in place, never replaced."""

    global_bias: Tensor
    user: SideSample
    movie: SideSample
    session_bias: Tensor
    session_prior_mean: Tensor

    def side(self, name: str) -> SideSample:
        """The side that `SweptMF.sides` calls `name`."""
        return self.user if name == "user" else self.movie


class Tables(NamedTuple):
    """One tensor per parameter of the model, in float64: sums of kept samples, or each chain's means (chains first)."""

    global_bias: Tensor
    user_bias: Tensor
    movie_bias: Tensor
    user_factors: Tensor
    movie_factors: Tensor
    session_bias: Tensor


class SampledMF(SweptMF):
    """Biased MF whose parameters are the mean of Gibbs chains' kept samples (`BayesMF` draws them): holds the
    running chain's state, starts each chain, and averages the samples kept into the model's parameters.

    With `session_minutes`, a rating's prediction adds the bias of its session at each of those time scales
    (sessions.py): its user's window of that many minutes, where training had ratings of that user then; a
    rating without a time (serving) gets none, nor does one in a window training never saw."""

    def __init__(self, shape: DataShape, settings: ModelSettings):
        # The parameters are the posterior means: what predicts and what the checkpoint keeps. The chains'
        # factors sit side by side.
        dim, chains = settings.embedding_dim, settings.chains
        super().__init__(shape, settings, start_std=0.0, factor_width=chains * dim)
        self.register_buffer("samples", torch.tensor(0))  # kept so far, all chains
        # The training sessions' keys and biases: as many as the training ratings make (`remember`), none until then;
        # a checkpoint's resize them as it loads (`_sessions_as_saved`).
        self.register_buffer("session_keys", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("session_bias", torch.zeros(0))
        self._register_load_state_dict_pre_hook(self._sessions_as_saved)
        self.chain = 0  # the chain running
        # The sampler's state: not in the checkpoint, yet buffers, so that it follows the model's device and the
        # memory estimate (`training_bytes`) counts it. Read and written through `sample`, `kept_sums` and
        # `chain_means`, never by a name built at run time.
        for name, value in sampler_buffers(shape, settings).items():
            self.register_buffer(name, value, persistent=False)
        self.start_sample()

    @property
    def sample(self) -> Sample:
        """The running chain's current sample."""
        return Sample(
            self.current_global_bias,
            SideSample(
                self.current_user_bias,
                self.current_user_factors,
                self.user_prior_mean,
                self.user_bag_vectors,
                self.user_bag_prior_mean,
            ),
            SideSample(
                self.current_movie_bias,
                self.current_movie_factors,
                self.movie_prior_mean,
                self.movie_bag_vectors,
                self.movie_bag_prior_mean,
            ),
            self.current_session_bias,
            self.session_prior_mean,
        )

    @property
    def kept_sums(self) -> Tables:
        """The sums of the running chain's kept samples."""
        return Tables(
            self.sum_global_bias,
            self.sum_user_bias,
            self.sum_movie_bias,
            self.sum_user_factors,
            self.sum_movie_factors,
            self.sum_session_bias,
        )

    @property
    def chain_means(self) -> Tables:
        """Each chain's mean of its kept samples so far (indexed by chain)."""
        return Tables(
            self.chain_mean_global_bias,
            self.chain_mean_user_bias,
            self.chain_mean_movie_bias,
            self.chain_mean_user_factors,
            self.chain_mean_movie_factors,
            self.chain_mean_session_bias,
        )

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        self.start_bags()
        if self.settings.session_minutes:
            self.remember_sessions(data)

    def remember_sessions(self, data: TrainingData) -> None:
        """The training ratings' sessions, and each session's tables sized by their number."""
        sessions = make_sessions(data.users, data.days, self.settings.session_minutes)
        count, chains = len(sessions.keys), self.settings.chains
        self.session_keys, self.session_starts, self.session_of_rating = sessions
        # Each session's number of training ratings: fixed for the fit, so counted once (a scale's block each).
        self.session_counts = torch.bincount(self.session_of_rating.flatten(), minlength=count)

        self.session_bias = torch.zeros(count, device=self.device)
        self.current_session_bias = torch.zeros(count, device=self.device)
        self.sum_session_bias = torch.zeros(count, dtype=torch.float64, device=self.device)
        self.chain_mean_session_bias = torch.zeros(chains, count, dtype=torch.float64, device=self.device)

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bias, interaction = super().score(users, movies, days)
        if days is None or not self.settings.session_minutes:
            return bias, interaction
        sessions, found = find_sessions(self.session_keys, users, days, self.settings.session_minutes)
        for session, known in zip(sessions, found, strict=True):  # one scale after another: the same bits anywhere
            bias = bias + torch.where(known, self.session_bias[session], torch.zeros_like(bias))
        return bias, interaction

    def _sessions_as_saved(self, state_dict: dict, prefix: str, *args) -> None:
        # The session tables are sized by the training ratings, which a loading model has not seen: take the
        # saved sizes. A checkpoint from before sessions has none.
        for name, empty in (("session_keys", torch.zeros(0, dtype=torch.int64)), ("session_bias", torch.zeros(0))):
            saved = state_dict.setdefault(prefix + name, empty)
            setattr(self, name, torch.zeros_like(saved, device=self.device))

    def start_chain(self, chain: int) -> None:
        """Start chain number `chain` afresh: the first sample and the bags' vectors drawn again, as the first
        chain's were, the priors and the sums of kept samples at 0. The chains before it keep their means."""
        self.chain = chain
        self.start_sample()
        for total in self.kept_sums:
            total.zero_()
        self.start_bags()

    def start_sample(self) -> None:
        """A chain's first sample: the global bias at the training mean, the biases and prior means at 0, the
        factors drawn (the users', then the movies')."""
        sample = self.sample
        sample.global_bias.fill_(self.shape.train_mean)
        sample.session_bias.zero_()
        sample.session_prior_mean.zero_()
        for side in (sample.user, sample.movie):
            side.bias.zero_()
            side.factors.copy_(torch.randn(side.factors.shape, device=self.device) * FACTOR_INIT_STD)
            side.prior_mean.zero_()

    def start_bags(self) -> None:
        """Each side's bag vectors at their random start, and their prior mean at 0 (a side without bags has none)."""
        for side in (self.sample.user, self.sample.movie):
            if not len(side.bag_vectors):
                continue
            side.bag_vectors.copy_(torch.randn(side.bag_vectors.shape, device=self.device) * BAG_INIT_STD)
            side.bag_prior_mean.zero_()

    def keep_sample(self, user_means: Tensor, movie_means: Tensor, session_means: Tensor) -> None:
        """Add the sweep's rows to the kept ones; the model's parameters become their mean. Each user's (movie's)
        row adds its conditional mean (`user_means`: bias, then factors), not its draw: the same expectation,
        less noise (Rao-Blackwellisation), so the average settles in fewer sweeps; each session's bias likewise."""
        self.samples += 1
        self.chain_samples[self.chain] += 1
        biases, factors = (user_means[:, 0], movie_means[:, 0]), (user_means[:, 1:], movie_means[:, 1:])
        kept = Tables(self.sample.global_bias, *biases, *factors, session_means)
        for total, chain_means, value in zip(self.kept_sums, self.chain_means, kept, strict=True):
            chain_means[self.chain].copy_(total.add_(value) / self.chain_samples[self.chain])
        self.average_chains()

    def average_chains(self) -> None:
        """The model's parameters: the chains' mean prediction, each chain weighted by its share w_c of the
        samples kept. Biases add, so theirs is the weighted mean of the chains' biases; sum_c w_c p_cu . q_cm
        is the product of their factors side by side, each times sqrt(w_c)."""
        chains, dim, means = self.chain + 1, self.settings.embedding_dim, self.chain_means
        weights = self.chain_samples[:chains] / self.chain_samples[:chains].sum()
        for bias, chain_biases in (
            (self.global_bias, means.global_bias),
            (self.user_bias, means.user_bias),
            (self.movie_bias, means.movie_bias),
            (self.session_bias, means.session_bias),
        ):
            bias.copy_(torch.tensordot(weights, chain_biases[:chains], dims=1))
        for factors, chain_factors in (
            (self.user_factors, means.user_factors),
            (self.movie_factors, means.movie_factors),
        ):
            weighted = chain_factors[:chains] * weights.sqrt().view(-1, 1, 1)
            side_by_side = weighted.permute(1, 0, 2).reshape(weighted.shape[1], chains * dim)
            factors[:, : chains * dim].copy_(side_by_side)


def sampler_buffers(shape: DataShape, settings: ModelSettings) -> dict[str, Tensor]:
    """The sampler's buffers by name, sized and at 0 (the global bias at the training mean): `start_sample` and
    `start_bags` draw the factors and the bag vectors."""
    dim, chains, implicit, sessions = (
        settings.embedding_dim,
        settings.chains,
        settings.implicit,
        settings.session_minutes,
    )
    n_users, n_movies, float64 = shape.n_users, shape.n_movies, torch.float64
    # The members of each side's bags: the users' hold movies; the movies', users, then genres (and the few
    # release-year groups, which `BayesMF.remember` adds once it has seen the movies).
    user_members = n_movies if implicit else 0
    movie_members = (n_users if implicit else 0) + (shape.n_genres if settings.genres else 0)
    return {
        # The running chain's current sample, and each side's prior mean per coordinate.
        "current_global_bias": torch.tensor(shape.train_mean),
        "current_user_bias": torch.zeros(n_users),
        "current_movie_bias": torch.zeros(n_movies),
        "current_user_factors": torch.zeros(n_users, dim),
        "current_movie_factors": torch.zeros(n_movies, dim),
        "user_prior_mean": torch.zeros(1 + dim),
        "movie_prior_mean": torch.zeros(1 + dim),
        # With `implicit` or `genres`, each side's bag vectors (one per member) and their prior mean, sized here so
        # that the memory estimate counts them; empty without, so that the model is then the one before bags, byte
        # for byte.
        "user_bag_vectors": torch.zeros(user_members, 1 + dim),
        "movie_bag_vectors": torch.zeros(movie_members, 1 + dim),
        "user_bag_prior_mean": torch.zeros(1 + dim if user_members else 0),
        "movie_bag_prior_mean": torch.zeros(1 + dim if movie_members else 0),
        # With `session_minutes`, each session's bias, each scale's prior mean and block of sessions, and each
        # training rating's session at each scale: sized by the training ratings' sessions (`remember_sessions`).
        "current_session_bias": torch.zeros(0),
        "session_prior_mean": torch.zeros(len(sessions)),
        "session_starts": torch.zeros(0, dtype=torch.int64),
        "session_of_rating": torch.zeros(0, dtype=torch.int64),
        "session_counts": torch.zeros(0, dtype=torch.int64),
        # The running chain's sums of its kept samples, each chain's means, and how many each kept (its weight).
        "sum_global_bias": torch.zeros((), dtype=float64),
        "sum_user_bias": torch.zeros(n_users, dtype=float64),
        "sum_movie_bias": torch.zeros(n_movies, dtype=float64),
        "sum_user_factors": torch.zeros(n_users, dim, dtype=float64),
        "sum_movie_factors": torch.zeros(n_movies, dim, dtype=float64),
        "sum_session_bias": torch.zeros(0, dtype=float64),
        "chain_mean_global_bias": torch.zeros(chains, dtype=float64),
        "chain_mean_user_bias": torch.zeros(chains, n_users, dtype=float64),
        "chain_mean_movie_bias": torch.zeros(chains, n_movies, dtype=float64),
        "chain_mean_user_factors": torch.zeros(chains, n_users, dim, dtype=float64),
        "chain_mean_movie_factors": torch.zeros(chains, n_movies, dim, dtype=float64),
        "chain_mean_session_bias": torch.zeros(chains, 0, dtype=float64),
        "chain_samples": torch.zeros(chains, dtype=float64),
        # The current sample's residual per training rating: each sweep leaves it for the next.
        "residual": torch.zeros(0),
    }


def gamma(shape: Tensor, rate: Tensor) -> Tensor:
    """Draws from Gamma(shape, rate), from the seeded generator of `rate`'s device."""
    return torch.distributions.Gamma(shape.to(rate.device, rate.dtype), rate).sample()


def noise_precision(residual: Tensor) -> Tensor:
    """The ratings' noise precision drawn from its Gamma posterior, given the current sample's `residual`."""
    return gamma(torch.tensor((PRIOR_SHAPE + len(residual)) / 2), (PRIOR_RATE + fixed_order_sum(residual.square())) / 2)


def normal_gamma_prior(means: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """A new prior mean (written into `means`) and precision per coordinate of the rows `values` (rows x coordinates),
    from their Normal-Gamma posterior (libFM's order: the precision given the last mean, then the mean)."""
    count, weight = len(values), PRIOR_MEAN_WEIGHT
    spread = weight * means.square() + (values - means).square().sum(0)
    precision = gamma(torch.tensor((PRIOR_SHAPE + count + 1) / 2), (PRIOR_RATE + spread) / 2)
    mean = values.sum(0) / (count + weight)
    means.copy_(mean + torch.randn(len(means), device=values.device) / ((count + weight) * precision).sqrt())
    return means, precision
