"""End to end through DVC on the synthetic data set: `dvc repro preprocess` in a temp git repo, no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIZE = {"synthetic_ratings": 5000, "synthetic_users": 200, "synthetic_movies": 150}


def run(repo: Path, *command: str) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(repo / "src"))
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("synthetic-project")
    for name in run(PROJECT, "git", "ls-files").splitlines():
        if (PROJECT / name).is_file() and not name.startswith(("dvclive/", "eval/")) and name != "dvc.lock":
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(dataset="synthetic", **SIZE)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "project")
    run(repo, str(BIN / "dvc"), "repro", "preprocess")
    return repo


def test_repro_generates_and_prepares_the_synthetic_data_set(repo):
    assert sorted(p.name for p in (repo / "data/raw/synthetic").iterdir()) == [
        "model.json",
        "movies.parquet",
        "ratings.parquet",
    ]
    description = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert description["dataset"] == "synthetic"
    assert description["ratings"] == SIZE["synthetic_ratings"]
    model = json.loads((repo / "data/raw/synthetic/model.json").read_text())
    # No filter drops anything by default: the floor over kept ratings is the floor over all.
    assert description["noise_floor_rmse"] == pytest.approx(model["noise_floor_rmse_all_generated"], abs=1e-6)
    assert 0.4 < description["noise_floor_rmse"] < 0.6
    movies = pl.read_parquet(repo / "data/prepared/movies.parquet")
    assert movies["title"].str.starts_with("Synthetic movie ").all()


def test_a_second_repro_runs_nothing_and_a_new_seed_regenerates(repo):
    before = (repo / "data/raw/synthetic/ratings.parquet").read_bytes()
    run(repo, str(BIN / "dvc"), "repro", "preprocess")  # up to date
    assert (repo / "data/raw/synthetic/ratings.parquet").read_bytes() == before
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["synthetic_seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run(repo, str(BIN / "dvc"), "repro", "preprocess")
    assert "Running stage 'download'" in output and "Running stage 'preprocess'" in output
    assert (repo / "data/raw/synthetic/ratings.parquet").read_bytes() != before
