"""End to end: the real `dvc repro`, `dvc exp run`, metrics and plots, in a temp git repo.

The project is copied into a fresh git repository and fed a generated data set in the
ML-100K layout (never real MovieLens files), served over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json

import pytest
import yaml
from harness import dvc, exp_runs, git

# Each test reads the session's baseline run (`baseline_repo`) or changes a copy of its own (`project_repo`):
# none depends on another having run, in any order.


def test_repro_writes_every_output_and_beats_the_mean(baseline_repo):
    repo = baseline_repo
    outputs = ("data/raw/u.data", "data/prepared/ratings.parquet", "data/split/stats.json", "models/model.ckpt")
    for output in outputs:
        assert (repo / output).is_file(), output
    metrics = json.loads((repo / "eval/metrics.json").read_text())
    assert metrics["test"]["rows"] == json.loads((repo / "data/split/stats.json").read_text())["test"]["rows"]
    assert metrics["test"]["rmse"] < 0.9 * metrics["baseline"]["rmse"], metrics
    assert (repo / "dvclive/train/plots/metrics/val/loss.tsv").read_text().count("\n") >= 2


def test_second_repro_runs_nothing(project_repo):
    repo = project_repo
    result = dvc(repo, "repro")
    assert "Running stage" not in result.stdout
    assert "Data and pipelines are up to date" in result.stdout
    assert git(repo, "status", "--porcelain") == ""


def test_forced_repro_gives_byte_identical_data_and_the_same_metrics(project_repo):
    repo = project_repo
    before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    metrics_before = json.loads((repo / "eval/metrics.json").read_text())
    dvc(repo, "repro", "--force")
    after = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    # The md5 of every data output, as dvc.lock records it, is unchanged.
    for stage in ("download", "preprocess", "split"):
        assert after[stage]["outs"] == before[stage]["outs"], stage
    metrics_after = json.loads((repo / "eval/metrics.json").read_text())
    for group in ("test", "baseline"):
        assert metrics_after[group] == pytest.approx(metrics_before[group], abs=1e-6), group


def test_metrics_show_lists_test_metrics(baseline_repo):
    repo = baseline_repo
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    metrics = files["eval/metrics.json"]["data"]
    assert {"rmse", "mae"} <= set(metrics["test"]) and "rmse" in metrics["baseline"]
    assert set(files) == {"eval/metrics.json", "dvclive/train/val.json", "dvclive/rank/val.json"}
    assert set(files["dvclive/train/val.json"]["data"]["val"]) == {"rmse"}


def test_exp_run_global_mean_matches_the_baseline_side_by_side(project_repo):
    repo = project_repo
    dvc(repo, "exp", "run", "-S", "train.model=global_mean", "--name", "global-mean")
    by_model = {}
    for run in exp_runs(repo):
        model = run["data"]["params"]["params.yaml"]["data"]["train"]["model"]
        by_model[model] = run["data"]["metrics"]["eval/metrics.json"]["data"]
    assert set(by_model) == {"biased_mf", "global_mean"}
    global_mean = by_model["global_mean"]
    assert abs(global_mean["test"]["rmse"] - global_mean["baseline"]["rmse"]) < 0.005
    assert by_model["biased_mf"]["test"]["rmse"] < global_mean["test"]["rmse"]
