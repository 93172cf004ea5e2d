"""The data section's download and synthetic keys: typed, validated, named in every message."""

from __future__ import annotations

import pytest
from harness import project_params

from movielens_pipeline.datasets import DATASETS, SYNTHETIC
from movielens_pipeline.params import MAX_SYNTHETIC_RATINGS, ParamsError
from movielens_pipeline.releases import RELEASES


def test_the_datasets_are_the_releases_and_synthetic():
    assert DATASETS == (*RELEASES, SYNTHETIC)


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_is_accepted(dataset):
    assert project_params("data", dataset=dataset).dataset == dataset


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("retries", -1, "an integer >= 0"),
        ("backoff_seconds", -0.5, "a number >= 0"),
        ("synthetic_users", 0, "an integer >= 1"),
        ("synthetic_movies", 0, "an integer >= 1"),
        ("synthetic_ratings", 0, f"an integer from 1 to {MAX_SYNTHETIC_RATINGS}"),
        ("synthetic_ratings", MAX_SYNTHETIC_RATINGS + 1, f"an integer from 1 to {MAX_SYNTHETIC_RATINGS}"),
        ("synthetic_rank", 0, "an integer from 1 to 256"),
        ("synthetic_rank", 257, "an integer from 1 to 256"),
        ("synthetic_noise", -0.1, "a number >= 0"),
        ("synthetic_seed", -1, "an integer from 0 to 4294967295"),
    ],
)
def test_out_of_range_values_name_the_key_value_and_range(key, value, expected):
    with pytest.raises(ParamsError) as raised:
        project_params("data", **{key: value})
    assert str(raised.value) == f"data.{key}: got {value!r}; expected {expected}"


@pytest.mark.parametrize(("key", "value"), [("synthetic_ratings", 1.5e6), ("synthetic_noise", "0.5"), ("retries", 2.0)])
def test_wrong_types_are_rejected(key, value):
    with pytest.raises(ParamsError, match=rf"^data\.{key}: got {value!r} \("):
        project_params("data", **{key: value})


def test_zero_noise_and_zero_retries_are_allowed():
    parsed = project_params("data", **{"synthetic_noise": 0, "retries": 0, "backoff_seconds": 0})
    assert (parsed.synthetic_noise, parsed.retries, parsed.backoff_seconds) == (0.0, 0, 0.0)


def test_synthetic_ratings_above_half_the_grid_are_rejected_with_what_to_change():
    with pytest.raises(ParamsError) as raised:
        project_params("data", **{"synthetic_users": 10, "synthetic_movies": 20, "synthetic_ratings": 101})
    assert str(raised.value) == (
        "data.synthetic_ratings: got 101; expected at most 50% of synthetic_users x synthetic_movies (200): "
        "raise those or lower synthetic_ratings"
    )
    assert project_params("data", **{"synthetic_users": 10, "synthetic_movies": 20, "synthetic_ratings": 100})


def test_fewer_synthetic_ratings_than_users_is_rejected():
    with pytest.raises(ParamsError, match=r"synthetic_ratings: got 9; expected at least synthetic_users \(10\)"):
        project_params("data", **{"synthetic_users": 10, "synthetic_movies": 20, "synthetic_ratings": 9})


def test_url_with_synthetic_is_rejected():
    with pytest.raises(ParamsError, match=r"data\.url is set but data\.dataset is synthetic"):
        project_params("data", **{"dataset": "synthetic", "url": "ml-25m.zip"})


def test_committed_synthetic_shape_is_valid_and_ml_100k_sized():
    defaults = project_params("data")
    assert (defaults.synthetic_ratings, defaults.synthetic_users, defaults.synthetic_movies) == (100_000, 1000, 1700)
