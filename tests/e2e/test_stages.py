"""The stage entry points themselves: which library they run, and how they report a user's mistake."""

from __future__ import annotations

import os
import re
import subprocess

from harness import copy_project, stage_command


def run_stage(repo, name: str) -> subprocess.CompletedProcess:
    """Run stage `name` with the arguments dvc.yaml gives it."""
    # No PYTHONPATH: what a queued experiment's copy of the repository sees.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(stage_command(repo, name), cwd=repo, env=env, capture_output=True, text=True)


def test_a_stage_imports_the_library_of_its_own_checkout(tmp_path):
    repo = copy_project(tmp_path / "project", {})
    errors = repo / "src/movielens_pipeline/errors.py"
    errors.write_text(errors.read_text() + "\nprint('library of', __file__)\n")
    result = run_stage(repo, "check_params")
    assert result.returncode == 0, result.stderr
    assert f"library of {errors}" in result.stdout


def test_a_bad_param_ends_the_stage_with_one_line_and_no_traceback(tmp_path):
    repo = copy_project(tmp_path / "project", {"train": {"biased_mf": {"embedding_dim": -3}}})
    result = run_stage(repo, "train")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: train.biased_mf.embedding_dim: got -3; expected an integer from 1 to 4096"


def test_a_key_deleted_from_params_yaml_ends_the_first_stage_with_one_line(tmp_path):
    repo = copy_project(tmp_path / "project", {})
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(re.sub(r"(?m)^  patience: .*\n", "", text))
    for name in ("check_params", "download", "train"):
        result = run_stage(repo, name)
        assert result.returncode == 1, name
        assert result.stderr.strip() == (
            "error: train.patience: missing; every key must be set in params.yaml (see docs/params.md)"
        )
    assert not (repo / "data").exists()  # stopped before any work


def test_a_models_setting_deleted_ends_train_with_one_line_before_any_work(tmp_path):
    repo = copy_project(tmp_path / "project", {})
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(re.sub(r"(?m)^    time_bins: .*\n", "", text))
    # The train stage types every model's settings (check_params, which does not import torch, checks the
    # shared keys), first thing, before it reads any data.
    result = run_stage(repo, "train")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: train.timesvd.time_bins: missing; every key must be set in params.yaml (see docs/params.md)"
    )
    assert run_stage(repo, "check_params").returncode == 0
    assert not (repo / "data").exists()
