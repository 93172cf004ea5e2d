"""End to end through DVC on the synthetic data set in a temp git repo: no network, a known noise floor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from harness import copy_project, dvc

SIZE = {"synthetic_ratings": 5000, "synthetic_users": 200, "synthetic_movies": 150}
# One worker runs this module under `make test` (pytest-xdist): its tests share the one repo the fixture builds.
pytestmark = pytest.mark.xdist_group("test_pipeline_synthetic")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    params = {
        "data": {"dataset": "synthetic", **SIZE},
        "train": {"model": "biased_mf", "max_epochs": 10, "biased_mf": {"batch_size": 256}},
    }
    repo = copy_project(tmp_path_factory.mktemp("synthetic") / "project", params)
    dvc(repo, "repro")
    return repo


def test_repro_generates_and_prepares_the_synthetic_data_set(repo):
    assert sorted(p.name for p in (repo / "data/raw").iterdir()) == [
        "manifest.json",
        "model.json",
        "movies.parquet",
        "ratings.parquet",
    ]
    description = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert description["dataset"] == "synthetic"
    assert description["ratings"] == SIZE["synthetic_ratings"]
    model = json.loads((repo / "data/raw/model.json").read_text())
    # No filter drops anything by default: the floor over kept ratings is the floor over all.
    assert description["noise_floor_rmse"] == pytest.approx(model["noise_floor_rmse_all_generated"], abs=1e-6)
    assert 0.4 < description["noise_floor_rmse"] < 0.6
    movies = pl.read_parquet(repo / "data/prepared/movies.parquet")
    assert movies["title"].str.starts_with("Synthetic movie ").all()


def test_evaluation_shows_the_noise_floor_beside_the_test_rmse(repo):
    metrics = json.loads((repo / "eval/metrics.json").read_text())
    floor = json.loads((repo / "data/prepared/dataset.json").read_text())["noise_floor_rmse"]
    assert metrics["noise_floor"]["rmse"] == pytest.approx(floor)
    # No model beats the noise in the ratings themselves; a trained one beats the mean.
    assert floor < metrics["test"]["rmse"] < metrics["baseline"]["rmse"]
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    assert "noise_floor" in next(iter(shown.values()))["data"]["eval/metrics.json"]["data"]


def test_a_second_repro_runs_nothing_and_a_new_seed_regenerates(repo, tmp_path):
    # A copy to change: the module's other tests read the first seed's outputs, in whatever order they run.
    repo = Path(shutil.copytree(repo, tmp_path / "project", symlinks=True))
    before = (repo / "data/raw/ratings.parquet").read_bytes()
    assert "Running stage" not in dvc(repo, "repro", "preprocess").stdout
    assert (repo / "data/raw/ratings.parquet").read_bytes() == before
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["synthetic_seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = dvc(repo, "repro", "preprocess")
    assert "Running stage 'download'" in output.stdout and "Running stage 'preprocess'" in output.stdout
    assert (repo / "data/raw/ratings.parquet").read_bytes() != before
