"""The ensemble pipeline (ensemble/dvc.yaml) run by the real `dvc`: members trained once each and rerun only
when their own settings change, a blend swept with `dvc exp run -S`, served by `movielens predict --ensemble`."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import yaml
from harness import dvc, exp_runs, git, python, set_params, with_ensemble_pipeline

from movielens_pipeline.models import load_model
from movielens_pipeline.trained import ENSEMBLE_CHECKPOINT, load_trained

# One worker runs both tests: they share the module's trained ensemble.
pytestmark = pytest.mark.xdist_group("ensemble")

PIPELINE = "ensemble/dvc.yaml"
# Small and quick on the generated data: the sampler's rank and sweeps.
ENSEMBLE_PARAMS = {"train": {"bayes_mf": {"embedding_dim": 4, "sweeps": 12, "burn_in": 6}}}
# Three of the matrix's models, of the kinds that differ (a sampler, gradient steps, alternating least squares):
# the whole matrix trains for minutes, and that is ML-100K's bench (tests/unit/test_ensemble.py has svdpp).
MEMBERS = ["bayes_mf", "biased_mf", "als"]
PAIRS = pl.DataFrame({"userId": [1, 2, 3, 4], "movieId": [1, 2, 3, 4]})


def with_members(repo, members: list[str]) -> None:
    """The ensemble pipeline training, and blending, `members` only."""
    pipeline = yaml.safe_load((repo / PIPELINE).read_text())
    pipeline["stages"]["member"]["matrix"]["model"] = members
    (repo / PIPELINE).write_text(yaml.safe_dump(pipeline, sort_keys=False))
    set_params(repo, {"ensemble": {"members": members}})


def ran(output: str) -> set[str]:
    """The stages a `dvc repro` or `dvc exp run` ran (not those it skipped)."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def ensemble_repo(baseline_repo, tmp_path_factory):
    """The baseline project after `dvc repro ensemble/dvc.yaml`, committed."""
    repo = shutil.copytree(baseline_repo, tmp_path_factory.mktemp("ensemble") / "project", symlinks=True)
    with_ensemble_pipeline(repo)
    set_params(repo, ENSEMBLE_PARAMS)
    with_members(repo, MEMBERS)
    first = dvc(repo, "repro", PIPELINE)
    members = {f"{PIPELINE}:member@{model}" for model in MEMBERS}
    # The main pipeline's stages were up to date; every member, the blend and its evaluation ran.
    assert ran(first.stdout) == members | {f"{PIPELINE}:blend", f"{PIPELINE}:evaluate"}, first.stdout
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "ensemble run")
    return repo


def test_the_blend_weighs_every_listed_member_and_is_evaluated_and_served_like_one_model(ensemble_repo):
    repo = ensemble_repo
    listed = MEMBERS
    summary = json.loads((repo / "ensemble" / "blend.json").read_text())
    assert list(summary["weights"]) == listed and set(summary["members_val_rmse"]) == set(listed)
    metrics = json.loads((repo / "ensemble" / "eval" / "metrics.json").read_text())["ensemble"]  # names of its own
    assert metrics["test"]["rmse"] < metrics["baseline"]["rmse"]
    assert "ndcg@10" in metrics["ranker"]  # the blend ranks in its own pipeline

    blend = load_model(repo / ENSEMBLE_CHECKPOINT)
    assert list(blend.members) == listed
    # The CLI, at the workspace and at the committed revision, answers what the checkpoint predicts.
    expected = load_trained(repo, ensemble=True).predict(PAIRS)
    assert load_trained(repo, rev="HEAD", ensemble=True).predict(PAIRS).equals(expected)
    result = python(repo, "-m", "movielens_pipeline.cli", "predict", "1:1", "2:2", "--ensemble", "--rev", "HEAD")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "userId,movieId,predicted_rating"
    assert [float(line.split(",")[2]) for line in lines[1:]] == pytest.approx(
        expected["predicted_rating"].to_list()[:2], abs=1e-6
    )
    # The single model is still what `movielens predict` serves without --ensemble.
    assert not load_trained(repo).predict(PAIRS).equals(expected)


def test_a_members_own_setting_reruns_that_member_only_and_a_blend_setting_no_member(ensemble_repo, tmp_path):
    repo = shutil.copytree(ensemble_repo, tmp_path / "project", symlinks=True)
    # train.model is the main pipeline's, not a member's setting; als's own section is, svdpp's not a member's.
    set_params(
        repo, {"train": {"model": "global_mean", "als": {"regularization": 0.2}, "svdpp": {"weight_decay": 0.2}}}
    )
    rerun = dvc(repo, "repro", PIPELINE)
    assert ran(rerun.stdout) == {f"{PIPELINE}:member@als", f"{PIPELINE}:blend", f"{PIPELINE}:evaluate"}, rerun.stdout
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "als changed")

    # A blend setting (`dvc exp run -S`, as a sweep's runs would set it): the members are cached, none reruns.
    tried = dvc(
        repo, "exp", "run", PIPELINE, "-S", "ensemble.weight_penalty=1.0", "-S", "ensemble.members=[bayes_mf,biased_mf]"
    )
    assert ran(tried.stdout) == {f"{PIPELINE}:blend", f"{PIPELINE}:evaluate"}, tried.stdout
    (run,) = exp_runs(repo, experiments_only=True)
    assert run["data"]["params"]["params.yaml"]["data"]["ensemble"]["weight_penalty"] == 1.0
    metrics = run["data"]["metrics"]
    assert "rmse" in metrics["ensemble/eval/metrics.json"]["data"]["ensemble"]["test"]  # names of its own
    assert list(metrics["ensemble/blend.json"]["data"]["weights"]) == ["bayes_mf", "biased_mf"]


def test_the_timing_bench_reruns_every_ensemble_stage_and_changes_no_output(ensemble_repo, tmp_path):
    # bench/ensemble_time.py, whose figure docs/ensemble.md publishes: it forces the ensemble's stages (not the main
    # pipeline's), times the run and each stage, and, the runs being deterministic, rewrites the same outputs.
    repo = shutil.copytree(ensemble_repo, tmp_path / "project", symlinks=True)
    result = python(repo, "bench/ensemble_time.py")
    assert result.returncode == 0, result.stderr
    first, *stages = result.stdout.strip().splitlines()
    wall = float(first.split()[2])
    assert first.startswith("run 1: ") and wall > 0, result.stdout
    timed = {line.split()[0]: float(line.split()[1]) for line in stages}
    members = [f"member@{model}" for model in MEMBERS]
    assert set(timed) == {*members, "blend", "evaluate"}, result.stdout
    assert list(timed)[-2:] == ["blend", "evaluate"] and all(seconds > 0 for seconds in timed.values())
    assert sum(timed.values()) <= wall
    assert git(repo, "status", "--porcelain") == "", "a forced rerun changed an output"
