"""A synthetic twin of MovieLens from a known generative model, so a model's error has a known floor.

Users and movies have power-law popularity; which movies a user rates follows popularity and, with
`synthetic_exposure`, the user's taste (the exposure model: a user tends to watch what they will like, so
there is something for a ranker to find). A rating is the global mean + user bias + movie bias + a low-rank
user x movie interaction + Gaussian noise, rounded to the half-star scale and clipped to 0.5-5. The noiseless
score (clipped to the scale) is kept beside each rating as `true_score`, so preprocess can report the noise
floor: the RMSE of the truth.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from .atomic import atomic_dir, write_json, write_parquet
from .datasets import SYNTHETIC
from .errors import PipelineError
from .params import DataParams
from .releases import PARQUET, Manifest
from .schema import RATING_MAX, RATING_MIN

GLOBAL_MEAN = 3.5  # about ML-25M's mean rating (3.53)
USER_BIAS_SD = 0.4
MOVIE_BIAS_SD = 0.5
INTERACTION_SD = 0.6  # standard deviation of the low-rank term, whatever the rank
# Popularity weight of the k-th most active user / most rated movie: (k + offset) ** -exponent.
USER_ACTIVITY_EXPONENT = 0.7
MOVIE_POPULARITY_EXPONENT = 0.9
POPULARITY_OFFSET = 10.0  # flattens the very top, as in MovieLens (no movie is rated by every user)
MAX_USER_SHARE = 0.5  # no user rates more than this share of the catalogue
# Time stamps: each user is active over an exponentially distributed span inside this window.
FIRST_TIMESTAMP = 789_652_009  # 1995-01-09, ML-25M's first rating
LAST_TIMESTAMP = 1_574_327_703  # 2019-11-21, its last
MEAN_ACTIVE_SECONDS = 365 * 24 * 3600
# ML-25M's genres, less its "(no genres listed)"; each movie gets 1 to 3, led by its factors.
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
MAX_GENRES_PER_MOVIE = 3
EXTRA_GENRE_PROBABILITY = 0.35
CHUNK_ROWS = 1 << 21  # scores are computed this many ratings at a time, to bound memory
# The exposure model draws this many candidates by popularity per rated movie and keeps one, with probability
# proportional to exp(exposure x affinity) (sampling-importance-resampling: popularity x exp(exposure x affinity)
# as the candidates grow; 8 keeps 25 M ratings' draws to seconds).
EXPOSURE_CANDIDATES = 8
MAX_DRAW_ROUNDS = 100
RATINGS_FILE = "ratings.parquet"
MOVIES_FILE = "movies.parquet"
MODEL_FILE = "model.json"


class SyntheticError(PipelineError):
    """Synthetic params that the generator cannot satisfy."""


class PowerLaw:
    """Popularity of n items: the item of rank k (0 = most popular) has weight (k + offset) ** -exponent.

    Ranks are drawn by inverting the continuous law's CDF, one vectorised power per draw
    (a search in a table of n weights per draw is several times slower at 25 M draws),
    and mapped to item indices through a seeded permutation, so popularity does not follow the id.
    """

    def __init__(self, n: int, exponent: float, rng: np.random.Generator) -> None:
        self.n, self.exponent = n, exponent
        self.item_of_rank = rng.permutation(n).astype(np.int32)
        self._low = POPULARITY_OFFSET ** (1 - exponent)
        self._high = (n + POPULARITY_OFFSET) ** (1 - exponent)

    def weights(self) -> np.ndarray:
        """Each item's probability, by item index (the law's mass between its rank and the next)."""
        edges = (np.arange(self.n + 1) + POPULARITY_OFFSET) ** (1 - self.exponent)
        by_rank = np.diff(edges) / (self._high - self._low)
        weights = np.empty(self.n)
        weights[self.item_of_rank] = by_rank
        return weights

    def draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        uniform = rng.random(size)
        ranks = (self._low + uniform * (self._high - self._low)) ** (1 / (1 - self.exponent)) - POPULARITY_OFFSET
        return self.item_of_rank[np.minimum(ranks.astype(np.int64), self.n - 1)]


def activity_counts(n_ratings: int, weights: np.ndarray, cap: int) -> np.ndarray:
    """Ratings per user: proportional to `weights`, at least 1 and at most `cap`, summing to `n_ratings`."""
    low, high = 0.0, float(n_ratings) / weights.min()
    # Bisect the scale s at which sum(clip(s * w, 1, cap)) reaches n_ratings.
    for _ in range(200):
        scale = (low + high) / 2
        if np.clip(scale * weights, 1, cap).sum() < n_ratings:
            low = scale
        else:
            high = scale
    exact = np.clip(high * weights, 1, cap)
    counts = np.floor(exact).astype(np.int64)
    # Hand out what flooring lost to the largest remainders, among users below the cap.
    remainder = np.where(counts < cap, exact - counts, -1.0)
    short = n_ratings - int(counts.sum())
    if short > 0:
        counts[np.argsort(-remainder, kind="stable")[:short]] += 1
    return counts


class Exposure:
    """Which movie each draw for a user picks: by popularity alone (`exposure` 0), or among EXPOSURE_CANDIDATES drawn
    by popularity, one with probability proportional to exp(exposure x the user's affinity for it: the interaction
    of their hidden factors)."""

    def __init__(self, movie_law: PowerLaw, exposure: float, user_factors, movie_factors):
        self.movie_law, self.exposure = movie_law, exposure
        self.user_factors, self.movie_factors = user_factors, movie_factors

    def draw(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One movie index per entry of `users`."""
        if self.exposure == 0:
            return self.movie_law.draw(users.size, rng)  # the same draws as before the exposure model
        picked = np.empty(users.size, dtype=np.int32)
        rows = max(1, CHUNK_ROWS // EXPOSURE_CANDIDATES)
        for start in range(0, users.size, rows):
            chunk = users[start : start + rows]
            candidates = self.movie_law.draw(chunk.size * EXPOSURE_CANDIDATES, rng).reshape(-1, EXPOSURE_CANDIDATES)
            # Taste, not quality: the interaction alone (a movie everyone rates high is popular already).
            affinity = np.einsum("ik,ijk->ij", self.user_factors[chunk], self.movie_factors[candidates])
            # Gumbel-max: the argmax of log-weight + Gumbel noise is a draw proportional to the weights.
            uniform = rng.random(candidates.shape, dtype=np.float32).clip(np.finfo(np.float32).tiny, None)
            keys = self.exposure * affinity - np.log(-np.log(uniform))
            picked[start : start + rows] = np.take_along_axis(candidates, keys.argmax(axis=1)[:, None], 1)[:, 0]
        return picked


def draw_pairs(
    params: DataParams, rng: np.random.Generator, truth: tuple[np.ndarray, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, movie) index pairs, sorted by user then movie, drawn with power-law popularity.

    Each user gets a power-law share of the ratings; their movies are drawn by popularity (and, with
    `synthetic_exposure`, by their affinity for each under `truth`: `draw_truth`'s parameters), and the draws
    that repeat a pair are drawn again (twice as many, the surplus dropped) until none is missing.
    """
    n_users, n_movies, n_ratings = params.synthetic_users, params.synthetic_movies, params.synthetic_ratings
    user_weights = PowerLaw(n_users, USER_ACTIVITY_EXPONENT, rng).weights()
    movie_law = PowerLaw(n_movies, MOVIE_POPULARITY_EXPONENT, rng)
    _, _, user_factors, movie_factors = truth if truth is not None else (None,) * 4
    exposure = Exposure(movie_law, params.synthetic_exposure, user_factors, movie_factors)
    wanted = activity_counts(n_ratings, user_weights, max(1, math.ceil(MAX_USER_SHARE * n_movies)))
    # A pair is coded as user * n_movies + movie, so sorting the codes sorts by user, then movie.
    first_users = np.repeat(np.arange(n_users, dtype=np.int64), wanted)
    codes = _distinct(first_users * n_movies + exposure.draw(first_users, rng))
    extras = np.empty(0, dtype=np.int64)
    for round_number in range(MAX_DRAW_ROUNDS + 1):
        have = np.bincount(codes // n_movies, minlength=n_users) + np.bincount(extras // n_movies, minlength=n_users)
        missing = wanted - have
        if not missing.any():
            break
        if round_number == MAX_DRAW_ROUNDS:
            raise SyntheticError(
                f"could not draw {n_ratings} distinct (user, movie) pairs from {n_users} users x {n_movies} "
                f"movies in {MAX_DRAW_ROUNDS} rounds: raise data.synthetic_users or data.synthetic_movies, "
                "or lower data.synthetic_ratings"
            )
        users = np.repeat(np.arange(n_users, dtype=np.int64), 2 * missing)
        drawn = users * n_movies + exposure.draw(users, rng)
        first = np.sort(_first_occurrences(drawn))  # positions, in draw order (grouped by user)
        fresh = drawn[first]
        fresh = fresh[~(_contains(codes, fresh) | _contains(extras, fresh))]
        # Keep each user's first `missing` fresh pairs: rank within the user's group of draws.
        user_of = fresh // n_movies
        rank = np.arange(fresh.size) - np.searchsorted(user_of, user_of, side="left")
        extras = np.sort(np.concatenate([extras, fresh[rank < missing[user_of]]]))
    if extras.size:
        codes = np.sort(np.concatenate([codes, extras]))
    return (codes // n_movies).astype(np.int32), (codes % n_movies).astype(np.int32)


def _distinct(codes: np.ndarray) -> np.ndarray:
    """Sorted distinct values (numpy's hash-based np.unique is several times slower on 25 M int64)."""
    codes = np.sort(codes)
    keep = np.empty(codes.size, dtype=bool)
    keep[:1] = True
    np.not_equal(codes[1:], codes[:-1], out=keep[1:])
    return codes[keep]


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct value."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    keep = np.empty(values.size, dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return order[keep]


def _contains(sorted_codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    if sorted_codes.size == 0:
        return np.zeros(values.size, dtype=bool)
    at = np.searchsorted(sorted_codes, values).clip(0, sorted_codes.size - 1)
    return sorted_codes[at] == values


def factor_sd(rank: int) -> float:
    """The sd of each factor entry: entries of sd s give a dot product of sd s**2 * sqrt(rank), INTERACTION_SD."""
    return math.sqrt(INTERACTION_SD / math.sqrt(rank))


def draw_truth(params: DataParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The generator's hidden parameters, the first draws from `rng`: user and movie biases, then factors."""
    n_users, n_movies, rank = params.synthetic_users, params.synthetic_movies, params.synthetic_rank
    user_bias = rng.normal(0, USER_BIAS_SD, n_users).astype(np.float32)
    movie_bias = rng.normal(0, MOVIE_BIAS_SD, n_movies).astype(np.float32)
    user_factors = rng.normal(0, factor_sd(rank), (n_users, rank)).astype(np.float32)
    movie_factors = rng.normal(0, factor_sd(rank), (n_movies, rank)).astype(np.float32)
    return user_bias, movie_bias, user_factors, movie_factors


def generate(params: DataParams) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Ratings (userId, movieId, rating, timestamp, true_score), movies (movieId, title, genres), a summary."""
    rng = np.random.default_rng(params.synthetic_seed)
    truth = draw_truth(params, rng)
    user_bias, movie_bias, user_factors, movie_factors = truth
    users, movies = draw_pairs(params, rng, truth)

    n_ratings = users.size
    true_score = np.empty(n_ratings, dtype=np.float32)
    rating = np.empty(n_ratings, dtype=np.float32)
    for start in range(0, n_ratings, CHUNK_ROWS):
        chunk = slice(start, min(start + CHUNK_ROWS, n_ratings))
        u, m = users[chunk], movies[chunk]
        score = GLOBAL_MEAN + user_bias[u] + movie_bias[m] + np.einsum("ij,ij->i", user_factors[u], movie_factors[m])
        noisy = score + rng.standard_normal(score.size, dtype=np.float32) * np.float32(params.synthetic_noise)
        true_score[chunk] = np.clip(score, RATING_MIN, RATING_MAX)
        rating[chunk] = np.clip(np.round(noisy * 2) / 2, RATING_MIN, RATING_MAX)

    ratings = pl.DataFrame(
        {
            "userId": users.astype(np.int64) + 1,
            "movieId": movies.astype(np.int64) + 1,
            "rating": rating,
            "timestamp": _timestamps(users, params.synthetic_users, rng),
            "true_score": true_score,
        }
    )
    noise_floor = float(np.sqrt(np.mean((rating.astype(np.float64) - true_score) ** 2)))
    summary = {
        "model": "clip(round_half(global_mean + user_bias + movie_bias + user_factors . movie_factors + noise))",
        "global_mean": GLOBAL_MEAN,
        "user_bias_sd": USER_BIAS_SD,
        "movie_bias_sd": MOVIE_BIAS_SD,
        "interaction_sd": INTERACTION_SD,
        "rank": params.synthetic_rank,
        "noise_sd": params.synthetic_noise,
        "exposure": params.synthetic_exposure,
        "seed": params.synthetic_seed,
        "ratings": n_ratings,
        "users": params.synthetic_users,
        "movies": params.synthetic_movies,
        "noise_floor_rmse_all_generated": round(noise_floor, 6),
    }
    return ratings, _movies(movie_factors, rng), summary


def _timestamps(users: np.ndarray, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """Each user rates within an exponentially long span that starts uniformly in the window."""
    window = LAST_TIMESTAMP - FIRST_TIMESTAMP
    span = np.minimum(rng.exponential(MEAN_ACTIVE_SECONDS, n_users), window)
    start = FIRST_TIMESTAMP + rng.random(n_users) * (window - span)
    offsets = rng.random(users.size, dtype=np.float32) * span[users].astype(np.float32)
    return (start[users] + offsets).astype(np.int64)


def _movies(movie_factors: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    """Titles "Synthetic movie <id>" and 1-3 genres each, those whose direction best matches the movie's factors."""
    n_movies, rank = movie_factors.shape
    genre_directions = rng.normal(0, 1, (rank, len(GENRES))).astype(np.float32)
    ranked = np.argsort(-(movie_factors @ genre_directions), axis=1, kind="stable")[:, :MAX_GENRES_PER_MOVIE]
    n_genres = 1 + rng.binomial(MAX_GENRES_PER_MOVIE - 1, EXTRA_GENRE_PROBABILITY, n_movies)
    names = np.array(GENRES, dtype=object)
    genres = [sorted(names[row[:count]]) for row, count in zip(ranked, n_genres, strict=True)]
    ids = np.arange(1, n_movies + 1, dtype=np.int64)
    return pl.DataFrame(
        {"movieId": ids, "title": [f"Synthetic movie {i}" for i in ids], "genres": genres},
        schema={"movieId": pl.Int64, "title": pl.String, "genres": pl.List(pl.String)},
    )


def write_synthetic(params: DataParams, out_dir: Path) -> dict:
    """Generate the synthetic data set; write ratings.parquet, movies.parquet, model.json and the manifest."""
    ratings, movies, summary = generate(params)
    manifest = Manifest(SYNTHETIC, RATINGS_FILE, PARQUET, MOVIES_FILE, PARQUET)
    with atomic_dir(Path(out_dir)) as staging:
        write_parquet(ratings, staging / RATINGS_FILE, "the synthetic ratings")
        write_parquet(movies, staging / MOVIES_FILE, "the synthetic movies")
        write_json(summary, staging / MODEL_FILE, "the generator's constants")
        manifest.write(staging)
    print(
        f"synthetic: {summary['ratings']} ratings, {summary['users']} users, {summary['movies']} movies, "
        f"rank {summary['rank']}, noise {summary['noise_sd']}; noise floor RMSE "
        f"{summary['noise_floor_rmse_all_generated']:.4f}"
    )
    return summary
