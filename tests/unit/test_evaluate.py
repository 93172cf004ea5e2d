"""evaluate.py's plot data: the rating shares, error by true rating, RMSE and NDCG by user activity, on small
hand-made tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from harness import project_params

from movielens_pipeline.evaluate import (
    activity_buckets,
    error_by_rating,
    ranking,
    rating_histogram,
    rmse_by_user_activity,
)
from movielens_pipeline.params import ParamsError

BUCKETS = {"light_user_min_ratings": 2, "medium_user_min_ratings": 3, "heavy_user_min_ratings": 5}


def test_error_by_rating_groups_by_each_true_rating_in_order():
    rows = error_by_rating(np.array([3.0, 4.0, 2.0, 5.0]), np.array([4.0, 4.0, 1.0, 1.0]))
    assert [row["rating"] for row in rows] == [1.0, 4.0]
    ones, fours = rows
    assert ones["ratings"] == 2 and ones["mean_error"] == pytest.approx(2.5)
    assert ones["rmse"] == pytest.approx(np.sqrt((1 + 16) / 2))
    assert fours == {"rating": 4.0, "rmse": pytest.approx(np.sqrt(0.5)), "mean_error": -0.5, "ratings": 2}


def test_activity_buckets_run_from_cold_to_heavy_without_gaps():
    buckets = activity_buckets(project_params("evaluate", **BUCKETS))
    assert [label for label, _, _ in buckets] == ["cold (0-1)", "light (2-2)", "medium (3-4)", "heavy (5+)"]
    for (_, _, upper), (_, lower, _) in zip(buckets, buckets[1:], strict=False):
        assert upper == lower
    assert buckets[0][1] == 0 and buckets[-1][2] == float("inf")


def test_rmse_by_user_activity_counts_training_ratings_per_user():
    # Training ratings per user: 0 -> 1 (cold), 1 -> 2 (light), 2 -> 5 (heavy); user 3 has none (cold).
    train = pl.DataFrame({"userIdMapped": [0, 1, 1, 2, 2, 2, 2, 2], "rating": [3.0] * 8})
    test = pl.DataFrame({"userIdMapped": [2, 0, 3, 1], "rating": [4.0, 1.0, 5.0, 2.0]})
    predicted = np.array([4.5, 2.0, 3.0, 2.0])
    rows = rmse_by_user_activity(predicted, test, train, project_params("evaluate", **BUCKETS))
    by_label = {row["user_activity"]: row for row in rows}
    assert list(by_label) == ["cold (0-1)", "light (2-2)", "medium (3-4)", "heavy (5+)"]
    assert by_label["cold (0-1)"] == {"user_activity": "cold (0-1)", "rmse": np.sqrt(2.5), "users": 2, "ratings": 2}
    assert by_label["light (2-2)"]["rmse"] == 0.0
    assert by_label["heavy (5+)"]["rmse"] == pytest.approx(0.5)
    assert by_label["medium (3-4)"] == {"user_activity": "medium (3-4)", "rmse": None, "users": 0, "ratings": 0}


def test_rating_histogram_has_one_actual_series_that_does_not_depend_on_the_predictions():
    # The plot draws `actual` once for all revisions, so it must be the same rows whatever the model predicts.
    actual = np.array([1.0, 3.0, 3.0, 4.0])
    flat, spread = rating_histogram(np.full(4, 3.5), actual), rating_histogram(np.array([0.7, 2.9, 3.2, 5.4]), actual)
    for rows in (flat, spread):
        assert [row["series"] for row in rows] == ["actual"] * 10 + ["predicted"] * 10
        assert [row["rating"] for row in rows[:10]] == [row["rating"] for row in rows[10:]]
    assert flat[:10] == spread[:10]
    assert {row["rating"]: row["share"] for row in flat[10:] if row["share"]} == {3.5: 1.0}


class FixedTopK:
    """A TrainedModel's top_movies for ranking(): each user's top k given, for the model and for popularity."""

    def __init__(self, n_movies: int, model_top: list[list[int]], popularity_top: list[list[int]]):
        self.n_movies, self.lists = n_movies, {"ranker": model_top, "model": model_top, "popularity": popularity_top}
        self.model = self.ranker = object()  # the rating model ranks

    def top_movies(self, user_indices, n, by="ranker"):
        top = torch.tensor([self.lists[by][user] for user in user_indices.tolist()])
        return torch.ones(top.shape, dtype=torch.float64), top


def test_ndcg_by_user_activity_has_the_model_and_the_popularity_baseline_per_bucket():
    # Training ratings per user: 0 -> 1 (cold), 1 -> 5 (heavy), 2 -> 2 (light); each likes one test movie.
    train = pl.DataFrame({"userIdMapped": [0, 1, 1, 1, 1, 1, 2, 2], "movieIdMapped": [5, 4, 5, 6, 7, 8, 4, 5]})
    train = train.with_columns(rating=pl.lit(3.0))
    test = pl.DataFrame({"userIdMapped": [0, 1, 2], "movieIdMapped": [0, 1, 2], "rating": [5.0, 4.0, 4.0]})
    # The model finds user 0's movie first and user 1's second; popularity finds user 2's first only.
    trained = FixedTopK(10, model_top=[[0, 3], [3, 1], [3, 0]], popularity_top=[[3, 1], [3, 0], [2, 3]])
    params = project_params("evaluate", **BUCKETS, ranking_k=2, ranking_relevant_rating=4.0, ranking_max_users=None)
    metrics, rows = ranking(trained, test, train, params)
    assert [(row["user_activity"], row["series"]) for row in rows] == [
        (label, series) for label, _, _ in activity_buckets(params) for series in ("model", "popularity")
    ]
    ndcg = {(row["user_activity"], row["series"]): row["ndcg"] for row in rows}
    assert ndcg[("cold (0-1)", "model")] == 1.0 and ndcg[("cold (0-1)", "popularity")] == 0.0
    assert ndcg[("heavy (5+)", "model")] == pytest.approx(1 / np.log2(3)) and ndcg[("heavy (5+)", "popularity")] == 0
    assert ndcg[("light (2-2)", "model")] == 0.0 and ndcg[("light (2-2)", "popularity")] == 1.0
    assert ndcg[("medium (3-4)", "model")] is None and ndcg[("medium (3-4)", "popularity")] is None
    assert [row["users"] for row in rows] == [1, 1, 1, 1, 0, 0, 1, 1]
    # The buckets' popularity rows average to the overall popularity metric.
    assert metrics["popularity/ndcg@2"] == pytest.approx(np.mean([0.0, 1.0, 0.0]))


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"light_user_min_ratings": 0}, "light_user_min_ratings"),
        ({"light_user_min_ratings": 50, "medium_user_min_ratings": 50}, "medium_user_min_ratings"),
        ({"medium_user_min_ratings": 200, "heavy_user_min_ratings": 150}, "heavy_user_min_ratings"),
    ],
)
def test_activity_boundaries_must_rise(values, key):
    with pytest.raises(ParamsError, match=rf"evaluate\.{key}: got"):
        project_params("evaluate", **values)
