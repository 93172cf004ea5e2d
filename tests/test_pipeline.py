"""End to end: the real `dvc repro`, `dvc exp run`, metrics and plots, in a temp git repo.

The project is copied into a fresh git repository and fed a generated data set in the
ML-100K layout (never real MovieLens files), served over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import low_rank_rows, tab_bytes

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # The stages import the package from the copy's src/, as a user's checkout would.
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(repo / "src"))
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def archive_url(tmp_path_factory, serve_directory) -> tuple[str, str]:
    """A generated ml-100k.zip served on 127.0.0.1; returns its URL and MD5."""
    folder = tmp_path_factory.mktemp("mirror")
    with zipfile.ZipFile(folder / "ml-100k.zip", "w") as archive:
        archive.writestr("ml-100k/u.data", tab_bytes(low_rank_rows()))
    md5 = hashlib.md5((folder / "ml-100k.zip").read_bytes()).hexdigest()
    return f"{serve_directory(folder)}/ml-100k.zip", md5


@pytest.fixture(scope="module")
def repo(tmp_path_factory, archive_url) -> Path:
    """The project's tracked files in a new git repo, params pointed at the local archive."""
    repo = tmp_path_factory.mktemp("project")
    for name in git(PROJECT, "ls-files").splitlines():
        if (PROJECT / name).is_file() and not name.startswith(("dvclive/", "eval/")) and name != "dvc.lock":
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(url=archive_url[0], md5=archive_url[1])
    params["train"].update(max_epochs=15, batch_size=256, learning_rate=0.01)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Pipeline Test")
    git(repo, "config", "user.email", "pipeline-test@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project under test")
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline run")
    return repo


def test_repro_writes_every_output_and_beats_the_mean(repo):
    outputs = ("data/raw/ml-100k/u.data", "data/prepared/ratings.parquet", "data/split/stats.json", "models/model.ckpt")
    for output in outputs:
        assert (repo / output).is_file(), output
    metrics = json.loads((repo / "eval/metrics.json").read_text())
    assert metrics["test"]["rows"] == json.loads((repo / "data/split/stats.json").read_text())["test"]["rows"]
    assert metrics["test"]["rmse"] < 0.9 * metrics["baseline"]["rmse"], metrics
    assert (repo / "dvclive/train/plots/metrics/val/loss.tsv").read_text().count("\n") >= 2


def test_second_repro_runs_nothing(repo):
    result = dvc(repo, "repro")
    assert "Running stage" not in result.stdout
    assert "Data and pipelines are up to date" in result.stdout
    assert git(repo, "status", "--porcelain") == ""


def test_forced_repro_gives_byte_identical_data(repo):
    before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    dvc(repo, "repro", "--force", "split")
    after = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in ("download", "preprocess", "split"):
        assert after[stage]["outs"] == before[stage]["outs"], stage


def test_metrics_show_lists_test_metrics(repo):
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]["eval/metrics.json"]["data"]
    assert {"mse", "rmse", "mae"} <= set(metrics["test"]) and "rmse" in metrics["baseline"]


def test_exp_run_global_mean_matches_the_baseline_side_by_side(repo):
    dvc(repo, "exp", "run", "-S", "train.model=global_mean", "--name", "global-mean")
    runs = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    by_model = {}
    for baseline in runs:
        for run in [baseline, *(exp for group in baseline.get("experiments") or [] for exp in group["revs"])]:
            model = run["data"]["params"]["params.yaml"]["data"]["train"]["model"]
            by_model[model] = run["data"]["metrics"]["eval/metrics.json"]["data"]
    assert set(by_model) == {"biased_mf", "global_mean"}
    global_mean = by_model["global_mean"]
    assert abs(global_mean["test"]["rmse"] - global_mean["baseline"]["rmse"]) < 0.005
    assert by_model["biased_mf"]["test"]["rmse"] < global_mean["test"]["rmse"]


def test_plots_show_writes_a_page_with_every_plot(repo):
    dvc(repo, "plots", "show")
    page = (repo / "dvc_plots/index.html").read_text()
    for title in ("Loss per epoch (MSE)", "Test ratings, actual vs predicted"):
        assert title in page
