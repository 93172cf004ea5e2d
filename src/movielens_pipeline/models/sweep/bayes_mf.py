"""Bayesian MF by Gibbs sampling (BPMF with Rendle's hyper-priors), its chains started from ALS's fit, with
implicit feedback from each side's bags (bags.py) and a bias per user session (sessions.py). Each sweep samples
every user's bias and factors, then every movie's, batched over many rows at once (`ridge.ridge_rows`), then every
session's bias; the model is the mean of the samples kept, which the chains' state holds and averages (sampler.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from ...data import DataShape, TrainingData, csr_index
from ...params import EmbeddingDim, ModelSettings, ParamsError
from ..base import register
from ..sums import fixed_order_mean, fixed_order_sum
from .als import interactions
from .bags import (
    Bags,
    Eigenbasis,
    bag_eigenbasis,
    bag_sums,
    bag_vectors_by_conjugate_gradients,
    bag_vectors_conditional,
    make_bags,
    with_attributes,
)
from .ridge import ridge_rows
from .sampler import SampledMF, noise_precision, normal_gamma_prior
from .sessions import MAX_SCALES, MIN_SCALE_MINUTES, MINUTES_PER_DAY

# Up to this many members (the other side's users or movies), a side's bag vectors are drawn exactly through the
# eigendecomposition of the dense members x members Gram matrix, once per fit: n^3 work and n^2 float64 memory,
# 4 s of one core at ML-100K's 1,682 movies, a minute at 4,000, hours at ML-25M's 59,047 movies (and 28 GB).
# Beyond, each sweep solves for a draw by conjugate gradients (`bag_vectors_by_conjugate_gradients`).
MAX_EXACT_MEMBERS = 5_000

# The chain starts from START_SWEEPS sweeps of ALS (as BPMF starts from PMF's fit, Salakhutdinov & Mnih 2008).
# From small factors the hyper-priors shrink every factor towards 0, and the chain took 60-80 sweeps to leave
# there on ML-100K; on 25 M synthetic ratings, rank 8, it had not after 20 (test RMSE 1.137x the noise floor,
# against 1.07x from ALS's fit). ALS settles in about 4 sweeps.
START_SWEEPS = 4


class BayesMFSettings(ModelSettings):
    """`bayes_mf`: Bayesian MF by Gibbs sampling; hyper-priors set the model's penalties, so the rank, the
    number of sweeps and the penalty of the ALS fit the chain starts from are chosen."""

    embedding_dim: EmbeddingDim
    sweeps: int = Field(
        ge=1,
        le=100_000,
        description="sweeps (epochs) per chain, the ALS start's 4 first: exactly this many, no early stopping; the "
        "model is the last sweep's (every sample after burn_in), not a best val epoch's; more than burn_in and 4, "
        "so that each chain keeps a sample",
    )
    burn_in: int = Field(ge=0, le=100_000, description="sweeps before the samples are averaged into the model")
    start_regularization: float = Field(
        gt=0, le=1000, description="ALS-WR penalty of the alternating least squares sweeps the chain starts from"
    )
    implicit: bool = Field(
        description="implicit feedback (flipped SVD++): each user's prior mean adds a vector per movie it rated, "
        "over the root of their number; each movie's, one per user who rated it; false: without"
    )
    genres: bool = Field(
        description="each movie's prior mean adds a vector per genre it has, as Rendle's Bayesian FM takes side "
        "information; a movie's attributes (its genres, its release_year_span group) weigh one over the root of "
        "their number each; false: without"
    )
    release_year_span: int = Field(
        ge=0,
        le=100,
        description="years per release-year group: each movie's prior mean adds a vector for the movies released in "
        "its span of years (from 1 January of a multiple of the span; the year its title ends with), as it does per "
        "genre; 0: none",
    )
    chains: int = Field(
        ge=1,
        le=100,
        description="independent chains, one after another, each of `sweeps` sweeps from its own random start; "
        "the model predicts with the mean of the chains' predictions",
    )
    session_minutes: list[Annotated[int, Field(ge=MIN_SCALE_MINUTES, le=366 * MINUTES_PER_DAY)]] = Field(
        max_length=MAX_SCALES,
        description="time scales of the session biases, in minutes: at each, a user's ratings in one window of that "
        "many minutes share a bias of their own, drawn as every bias is (the rating's time is an input: a rating "
        "without one gets none, nor does one in a window where training had no rating of its user); []: none",
    )

    @model_validator(mode="after")
    def _keeps_samples(self) -> BayesMFSettings:
        # A chain keeps the samples of its Gibbs sweeps from burn_in on; its first START_SWEEPS are ALS's. Fewer
        # sweeps than both would train a model that is the training mean, silently.
        first_kept = max(self.burn_in, START_SWEEPS)
        if self.sweeps <= first_kept:
            raise ParamsError(
                f"train.bayes_mf.sweeps: got {self.sweeps}; expected more than {first_kept} (burn_in is "
                f"{self.burn_in} and each chain starts with {START_SWEEPS} sweeps of ALS): no sample would be kept"
            )
        return self

    @field_validator("session_minutes")
    @classmethod
    def _distinct_scales(cls, minutes: list[int]) -> list[int]:
        if len(set(minutes)) < len(minutes):
            raise ParamsError(f"train.bayes_mf.session_minutes: got {minutes}; expected each time scale once")
        return minutes


@register
class BayesMF(SampledMF):
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
    predicts. With `genres` and `release_year_span`, a movie's bag holds its attributes too, its genres and its
    release years' group, so its prior mean adds a vector for each: a movie's few ratings are read against what
    movies of its genres and its years are like.

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

    def __init__(self, shape, settings):
        super().__init__(shape, settings)
        # Each side's bags and the eigenbasis of their Gram matrix: made by the first Gibbs sweep, on the
        # model's device, from the ratings grouped by owner.
        self.bags: dict[str, Bags] = {}
        # With `genres` or `release_year_span`, each movie's attributes (`movie_attributes`), set by `remember`.
        self.movie_attributes: Tensor | None = None
        self.bag_bases: dict[str, Eigenbasis] = {}
        # With sessions, each training rating's session in each side's order of the ratings (`sides`).
        self.sessions_by_side: dict[str, Tensor] = {}

    @classmethod
    def checkpoint_settings(cls, saved: dict) -> dict:
        # A checkpoint from before the bags, the movies' attributes, the chains or the sessions had one chain and none.
        return {"implicit": False, "genres": False, "release_year_span": 0, "chains": 1, "session_minutes": []} | saved

    @classmethod
    def planned_sweeps(cls, settings: BayesMFSettings) -> int:
        return settings.chains * settings.sweeps

    @classmethod
    def working_bytes(cls, shape: DataShape, settings: BayesMFSettings) -> int:
        # Averaging the chains (`average_chains`) weighs every chain's factors of one side, then lays them side by
        # side: two chains x rows x embedding_dim float64 temporaries for the larger side. Not at once with a
        # sweep's ridge solves (`SweptMF.working_bytes`): the larger of the two.
        averaging = 2 * 8 * settings.chains * max(shape.n_users, shape.n_movies) * settings.embedding_dim
        # The sessions' tables, sized by the training ratings (at most one session each), so not in the model as
        # built: per rating and scale three indices (its session, in rating, user and movie order), and per session a
        # key, its count, two float32 biases, a float64 sum and a float64 mean per chain; a sweep's float64 targets.
        per_scale = 3 * 8 + 2 * 8 + 2 * 4 + 8 * (1 + settings.chains)
        sessions = shape.n_train_ratings * (len(settings.session_minutes) * per_scale + 2 * 8)
        return max(averaging, super().working_bytes(shape, settings)) + (sessions if settings.session_minutes else 0)

    def remember(self, data: TrainingData) -> None:
        attributes = movie_attributes(data, self.settings.genres, self.settings.release_year_span)
        self.movie_attributes = None if attributes is None else attributes.to(self.device)
        # The movies' bag vectors were sized for their genres (`sampler_buffers`); the few year groups join here.
        members = (self.shape.n_users if self.settings.implicit else 0) + (
            0 if attributes is None else attributes.shape[1]
        )
        if members != len(self.movie_bag_vectors):
            self.movie_bag_vectors = torch.zeros(members, self.movie_bag_vectors.shape[1], device=self.device)
            self.movie_bag_prior_mean = torch.zeros(
                self.movie_bag_vectors.shape[1] if members else 0, device=self.device
            )
        super().remember(data)

    def remember_sessions(self, data: TrainingData) -> None:
        super().remember_sessions(data)
        for side, owners, n_owners in (
            ("user", data.users, self.shape.n_users),
            ("movie", data.movies, self.shape.n_movies),
        ):
            _, order = csr_index(owners, n_owners)  # the order `SweptMF.remember` grouped that side's ratings in
            self.sessions_by_side[side] = self.session_of_rating[:, order]

    def sweeps(self) -> Iterator[Tensor]:
        for chain in range(self.settings.chains):
            if chain > 0:  # the first chain starts from the sample drawn when the model was built
                self.start_chain(chain)
            for sweep in range(self.settings.sweeps):
                yield self.chain_sweep(sweep)

    def chain_sweep(self, sweep: int) -> Tensor:
        """The chain's sweep number `sweep` (from 0): ALS's for the first START_SWEEPS, then a Gibbs sweep, whose
        sample is kept from `burn_in` on; returns the training MSE of the chain's current sample."""
        sample = self.sample
        if sweep < START_SWEEPS:
            self.alternate_ridge(sample.global_bias, sample.user, sample.movie, self.settings.start_regularization)
            return fixed_order_mean(self.update_residual().square())
        # The chain's start (ALS) always sweeps first, so the last sweep left the current sample's residuals.
        noise = noise_precision(self.residual)
        self.sample_global_bias(noise, self.residual)
        conditional_means = {}
        for side, other, padded, others, ratings in self.sides():
            mine, theirs = sample.side(side), sample.side(other)
            rows = torch.cat([mine.bias.unsqueeze(1), mine.factors], 1)
            # With bags, each row's prior is centred on the side's mean plus its bag's sum: the hyper-prior sees
            # the rows' deviations from their bags.
            offsets = bag_sums(self.side_bags(side), mine.bag_vectors) if len(mine.bag_vectors) else None
            beyond_bags = rows if offsets is None else rows - offsets
            prior_mean, prior_precision = normal_gamma_prior(mine.prior_mean, beyond_bags)
            targets = ratings - sample.global_bias - theirs.bias[others]
            if self.sessions_by_side:
                targets = targets - self.session_terms(self.sessions_by_side[side])
            # The conditional's precision is noise x D'D + diag(prior precision): over noise, a ridge penalty.
            means, drawn = ridge_rows(
                padded,
                theirs.factors,
                targets,
                prior_precision / noise,
                prior_mean if offsets is None else prior_mean + offsets,
                draw_std=noise.rsqrt(),
            )
            mine.bias.copy_(drawn[:, 0])
            mine.factors.copy_(drawn[:, 1:])
            if offsets is not None:
                self.draw_bag_vectors(side, drawn - prior_mean, prior_precision)
            conditional_means[side] = means
        session_means = self.sample_session_biases(noise) if self.sessions_by_side else sample.session_bias
        if sweep >= self.settings.burn_in:
            self.keep_sample(conditional_means["user"], conditional_means["movie"], session_means)
        return fixed_order_mean(self.update_residual().square())

    def current_prediction(self, sessions: bool = True) -> Tensor:
        """The current sample's prediction of every training rating, unclipped; without its session's bias if not
        `sessions`."""
        sample, users, movies = self.sample, self.train_users, self.train_movies
        bias = sample.global_bias + sample.user.bias[users] + sample.movie.bias[movies]
        if sessions and self.sessions_by_side:
            bias = bias + self.session_terms(self.session_of_rating)
        return bias + interactions(sample.user.factors, sample.movie.factors, users, movies)

    def session_terms(self, sessions: Sequence[Tensor]) -> Tensor:
        """Per rating, the sum of its sessions' current biases (`sessions`: one index tensor per scale, or the
        scales x ratings tensor), scale after scale."""
        biases = self.sample.session_bias
        total = biases[sessions[0]]
        for scale_sessions in sessions[1:]:
            total = total + biases[scale_sessions]
        return total

    def sample_session_biases(self, noise: Tensor) -> Tensor:
        """Every session's bias from its conditional given the rest of the current sample, one scale after another,
        each scale's under a new prior (Normal-Gamma, as every row's); returns their conditional means (kept, as
        the rows' are)."""
        sample, of_rating = self.sample, self.session_of_rating
        biases, means = sample.session_bias, torch.empty_like(sample.session_bias)
        beside = (self.train_ratings - self.current_prediction(sessions=False)).double()
        for scale, sessions in enumerate(of_rating):
            first, last = int(self.session_starts[scale]), int(self.session_starts[scale + 1])
            # The other scales' terms, as they stand after the scales drawn before this one. Not stacked: a copy of
            # their indices per scale and sweep, 400 MB at 25 M ratings.
            others = [other for index, other in enumerate(of_rating) if index != scale]
            targets = beside - self.session_terms(others).double() if others else beside
            mine, count = sessions - first, last - first
            # index_add_ on the CPU adds in the ratings' order: the same sums on any machine.
            sums = torch.zeros(count, dtype=torch.float64, device=self.device).index_add_(0, mine, targets)
            counts = self.session_counts[first:last]
            prior_mean, prior_precision = normal_gamma_prior(
                sample.session_prior_mean[scale : scale + 1], biases[first:last].unsqueeze(1)
            )
            precision = noise * counts + prior_precision
            means[first:last] = (noise * sums + prior_precision * prior_mean) / precision
            biases[first:last] = means[first:last] + torch.randn(count, device=self.device) / precision.sqrt()
        return means

    def update_residual(self) -> Tensor:
        """The current sample's residual per training rating, kept for the next sweep (which starts from it)."""
        self.residual = self.train_ratings - self.current_prediction()
        return self.residual

    def sample_global_bias(self, noise: Tensor, residual: Tensor) -> None:
        """w0 from its conditional under a flat prior, given the residuals of the current sample."""
        global_bias = self.sample.global_bias
        precision = noise * len(residual)
        mean = noise * fixed_order_sum(residual + global_bias) / precision
        global_bias.copy_(mean + torch.randn((), device=mean.device) / precision.sqrt())

    def side_bags(self, side: str) -> Bags:
        """A side's bags (users': the movies each rated; movies': the users who rated each, then its attributes), made
        the first time they are asked for."""
        if side not in self.bags:
            by_user, by_movie = (self.user_starts, self.user_others), (self.movie_starts, self.movie_others)
            owners, members = (by_user, by_movie) if side == "user" else (by_movie, by_user)
            dtype = self.sample.side(side).bag_vectors.dtype
            bags = make_bags(*owners, *members, dtype) if self.settings.implicit else None
            if side == "movie" and self.movie_attributes is not None:
                first_attribute = self.shape.n_users if self.settings.implicit else 0
                bags = with_attributes(bags, self.movie_attributes.to(dtype), first_attribute)
            self.bags[side] = bags
        return self.bags[side]

    def draw_bag_vectors(self, side: str, deviations: Tensor, row_precision: Tensor) -> None:
        """A side's bag vectors from their conditional given its rows' `deviations` from the side's prior mean
        and the rows' prior precision, after a new prior of their own: exactly while the members are few enough
        (MAX_EXACT_MEMBERS), by conjugate gradients beyond."""
        mine, bags = self.sample.side(side), self.side_bags(side)
        vectors = mine.bag_vectors
        vector_mean, vector_precision = normal_gamma_prior(mine.bag_prior_mean, vectors)
        conditional = (deviations, row_precision, vector_mean, vector_precision)
        if len(vectors) > MAX_EXACT_MEMBERS:
            vectors.copy_(bag_vectors_by_conjugate_gradients(bags, *conditional, start=vectors))
            return
        if side not in self.bag_bases:  # once per fit: the bags do not change
            self.bag_bases[side] = bag_eigenbasis(bags, vectors.dtype)
        vectors.copy_(bag_vectors_conditional(self.bag_bases[side], bags, *conditional))


def movie_attributes(data: TrainingData, genres: bool, year_span: int) -> Tensor | None:
    """Each movie's attributes, multi-hot (movies x attributes): its genres (with `genres`), then its release-year
    group (movies released within the same `year_span` years, the groups that have a movie); None without either."""
    columns = [data.movie_genres] if genres else []
    if year_span and data.movie_years is not None:
        known = data.movie_years > 0
        groups = torch.where(known, data.movie_years // year_span, -1)
        columns.append((groups.unsqueeze(1) == torch.unique(groups[known])).to(data.movie_genres.dtype))
    return torch.cat(columns, 1) if columns else None
