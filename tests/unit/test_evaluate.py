"""evaluate.py's plot data: error by true rating and RMSE by user activity, on small hand-made tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from harness import project_params

from movielens_pipeline.evaluate import activity_buckets, error_by_rating, rmse_by_user_activity
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
