"""synthetic.py: the generated twin has the promised shape, is deterministic, and its noise floor is right."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from harness import project_params

from movielens_pipeline import synthetic
from movielens_pipeline.preprocess import preprocess
from movielens_pipeline.schema import RATING_MAX, RATING_MIN
from movielens_pipeline.synthetic import (
    GENRES,
    GLOBAL_MEAN,
    SyntheticError,
    activity_counts,
    draw_truth,
    generate,
    write_synthetic,
)

SMALL = {"synthetic_ratings": 20_000, "synthetic_users": 400, "synthetic_movies": 300}
BENCH = Path(__file__).resolve().parents[2] / "bench" / "synthetic_generation.py"


def params(**changes):
    return project_params("data", **{"dataset": "synthetic", **SMALL, **changes})


@pytest.fixture(scope="module")
def small() -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    return generate(params())


def test_ratings_have_the_raw_schema_the_exact_count_and_distinct_pairs(small):
    ratings, _, summary = small
    assert dict(ratings.schema) == {
        "userId": pl.Int64,
        "movieId": pl.Int64,
        "rating": pl.Float32,
        "timestamp": pl.Int64,
        "true_score": pl.Float32,
    }
    assert ratings.height == summary["ratings"] == SMALL["synthetic_ratings"]
    assert not ratings.select(pl.struct("userId", "movieId").is_duplicated().any()).item()
    assert ratings["userId"].n_unique() == SMALL["synthetic_users"]  # every user rates something
    assert ratings["userId"].min() >= 1 and ratings["userId"].max() <= SMALL["synthetic_users"]
    assert ratings["movieId"].min() >= 1 and ratings["movieId"].max() <= SMALL["synthetic_movies"]


def test_ratings_are_half_stars_and_true_scores_lie_on_the_scale(small):
    ratings, _, _ = small
    assert set(ratings["rating"].unique().to_list()) <= {x / 2 for x in range(1, 11)}
    assert ratings["rating"].n_unique() == 10
    assert 0.5 <= ratings["true_score"].min() and ratings["true_score"].max() <= 5.0
    assert 3.0 < ratings["rating"].mean() < 4.0


def test_timestamps_lie_in_the_ml_25m_window(small):
    ratings, _, _ = small
    assert ratings["timestamp"].min() >= synthetic.FIRST_TIMESTAMP
    assert ratings["timestamp"].max() <= synthetic.LAST_TIMESTAMP


def test_activity_and_popularity_are_heavy_tailed(small):
    ratings, _, _ = small
    for column in ("userId", "movieId"):
        counts = ratings.group_by(column).len()["len"].sort(descending=True)
        top_tenth = counts.head(counts.len() // 10).sum() / counts.sum()
        assert top_tenth > 0.25, column  # a uniform draw would give about 0.10
        assert counts.max() > 3 * counts.median(), column
    per_user = ratings.group_by("userId").len()["len"]
    assert per_user.max() <= math.ceil(synthetic.MAX_USER_SHARE * SMALL["synthetic_movies"])


def test_movies_have_synthetic_titles_and_one_to_three_known_genres(small):
    _, movies, _ = small
    assert movies.height == SMALL["synthetic_movies"]
    assert movies["title"].to_list()[:3] == ["Synthetic movie 1", "Synthetic movie 2", "Synthetic movie 3"]
    lengths = movies["genres"].list.len()
    assert lengths.min() == 1 and lengths.max() == synthetic.MAX_GENRES_PER_MOVIE
    assert set(movies["genres"].explode().to_list()) <= set(GENRES)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_synthetic(params(synthetic_seed=seed), tmp_path / name)
    files = ["manifest.json", "model.json", "movies.parquet", "ratings.parquet"]
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "ratings.parquet").read_bytes() != (tmp_path / "c" / "ratings.parquet").read_bytes()


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_noise_floor_is_the_noise_plus_the_rounding(noise):
    ratings, _, summary = generate(params(synthetic_noise=noise))
    # Rounding to half stars adds a uniform error of width 0.5 (sd 0.5 / sqrt(12)); clipping
    # at the ends of the scale takes a little away (more so as the noise grows).
    expected = math.sqrt(noise**2 + 0.25 / 12)
    assert summary["noise_floor_rmse_all_generated"] == pytest.approx(expected, rel=0.06)
    if noise == 0:
        assert (ratings["rating"] - ratings["true_score"]).abs().max() <= 0.25 + 1e-6


def test_noise_floor_grows_with_the_noise():
    floors = [generate(params(synthetic_noise=noise))[2]["noise_floor_rmse_all_generated"] for noise in (0.2, 0.5, 1.0)]
    assert floors == sorted(floors) and floors[-1] > floors[0] + 0.5


def test_activity_counts_sum_exactly_and_respect_floor_and_cap():
    weights = np.array([0.5, 0.3, 0.1, 0.05, 0.05])
    counts = activity_counts(40, weights, cap=12)
    assert counts.sum() == 40
    assert counts.min() >= 1 and counts.max() <= 12
    assert list(counts) == sorted(counts, reverse=True)


def test_too_few_rounds_to_draw_distinct_pairs_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(synthetic, "MAX_DRAW_ROUNDS", 0)
    with pytest.raises(SyntheticError, match=r"could not draw 2000 distinct \(user, movie\) pairs from 40 users x 100"):
        generate(params(synthetic_users=40, synthetic_movies=100, synthetic_ratings=2000))


def test_preprocess_records_the_noise_floor_over_the_kept_ratings(tmp_path):
    raw = tmp_path / "raw" / "synthetic"
    write_synthetic(params(), raw)
    generated = pl.read_parquet(raw / "ratings.parquet")
    for name, filters in (
        ("all", project_params("preprocess")),
        ("top", project_params("preprocess", top_n_movies=20)),
    ):
        out = tmp_path / name
        out.mkdir()
        preprocess(raw, filters, out)
        description = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
        prepared = pl.read_parquet(out / "ratings.parquet")
        kept = generated.join(prepared.select("userId", "movieId"), on=["userId", "movieId"])
        rmse = math.sqrt(((kept["rating"].cast(pl.Float64) - kept["true_score"].cast(pl.Float64)) ** 2).mean())
        assert description["dataset"] == "synthetic"
        assert description["noise_floor_rmse"] == pytest.approx(rmse, abs=1e-6)
        assert description["noise_floor_over"] == "ratings kept by the preprocess filters"
        assert description["ratings"] == prepared.height
        assert "true_score" not in prepared.columns
    assert json.loads((tmp_path / "top" / "dataset.json").read_text())["ratings"] < generated.height
    movies = pl.read_parquet(tmp_path / "top" / "movies.parquet")
    assert movies.height == 20 and movies["title"].str.starts_with("Synthetic movie ").all()


@pytest.mark.slow
def test_bench_generates_25_million_ratings_within_60_seconds_and_4_gib():
    result = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert report["ratings"] == 25_000_000
    assert report["generate_and_write_seconds"] < 60, report
    assert report["peak_rss_gib"] < 4, report


def test_draw_truth_gives_the_hidden_parameters_behind_the_true_scores(small):
    # bench/synthetic_oracle.py rebuilds the truth this way: it must be the generator's own.
    ratings, _, _ = small
    data_params = params()
    user_bias, movie_bias, user_factors, movie_factors = draw_truth(
        data_params, np.random.default_rng(data_params.synthetic_seed)
    )
    users, movies = ratings["userId"].to_numpy() - 1, ratings["movieId"].to_numpy() - 1
    score = GLOBAL_MEAN + user_bias[users] + movie_bias[movies]
    score += np.einsum("ij,ij->i", user_factors[users], movie_factors[movies])
    assert np.allclose(np.clip(score, RATING_MIN, RATING_MAX), ratings["true_score"].to_numpy(), atol=1e-5)


def affinity_of_rated(ratings: pl.DataFrame, exposure_params) -> float:
    """The mean affinity (the interaction term of the generator's hidden truth) of the pairs that were rated."""
    _, _, user_factors, movie_factors = draw_truth(exposure_params, np.random.default_rng(0))
    users, movies = ratings["userId"].to_numpy() - 1, ratings["movieId"].to_numpy() - 1
    return float(np.mean(np.einsum("ij,ij->i", user_factors[users], movie_factors[movies])))


def test_with_exposure_users_rate_the_movies_they_have_an_affinity_for_and_the_rest_holds():
    plain, with_taste = params(), params(synthetic_exposure=2.0)
    popular, _, _ = generate(plain)
    tasteful, _, summary = generate(with_taste)
    assert tasteful.height == popular.height == SMALL["synthetic_ratings"]  # the same count, still distinct pairs
    assert tasteful.select("userId", "movieId").is_unique().all()
    # Each user rates as many movies as without exposure: only which ones changes, towards what they like.
    assert popular["userId"].value_counts().sort("userId").equals(tasteful["userId"].value_counts().sort("userId"))
    assert affinity_of_rated(tasteful, with_taste) > affinity_of_rated(popular, plain) + 0.3
    assert summary["exposure"] == 2.0
    assert generate(with_taste)[0].equals(tasteful)  # deterministic
    # The noise on each rating is unchanged: the floor stays where it was.
    floor = generate(plain)[2]["noise_floor_rmse_all_generated"]
    assert summary["noise_floor_rmse_all_generated"] == pytest.approx(floor, rel=0.1)
