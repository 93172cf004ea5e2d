"""A rerun that reproduces the same outputs leaves git's tree clean: what DVC records in dvc.lock, and the git-tracked
metrics, hold nothing that differs from run to run (the training timings go to an untracked, dvc-ignored file)."""

from __future__ import annotations

import json

from harness import dvc, exp_runs, git

TIMINGS = "dvclive/train/timings.json"


def test_a_forced_rerun_of_train_then_repro_leaves_git_status_empty(project_repo):
    repo = project_repo
    lock = (repo / "dvc.lock").read_bytes()
    checkpoint = (repo / "models/model.ckpt").read_bytes()
    assert git(repo, "status", "--porcelain") == ""

    forced = dvc(repo, "repro", "-f", "-s", "train")  # train alone, run again though nothing changed
    assert "Running stage 'train'" in forced.stdout
    rerun = dvc(repo, "repro")
    assert "Running stage" not in rerun.stdout  # evaluate's input, the checkpoint, came out the same

    assert (repo / "models/model.ckpt").read_bytes() == checkpoint
    assert (repo / "dvc.lock").read_bytes() == lock
    assert git(repo, "status", "--porcelain") == ""

    # The timings are there for whoever asks, but no tracked metric holds them.
    timings = json.loads((repo / TIMINGS).read_text())
    assert {"train_seconds", "ratings_per_second", "seconds_to_1pct_of_best_val"} == set(timings)
    asked = dvc(repo, "metrics", "show", TIMINGS, "--json").stdout
    assert "train_seconds" in asked
    for run in exp_runs(repo):
        shown = json.dumps(run["data"]["metrics"])
        assert "train_seconds" not in shown and "ratings_per_second" not in shown
