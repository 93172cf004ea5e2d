"""A second `dvc exp run` while a stage runs in the workspace is refused before params.yaml is rewritten
(movielens_pipeline.workspace_guard, run by conf/hydra_plugins/workspace_guard.py when DVC composes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from harness import PROJECT

from movielens_pipeline.errors import PipelineError
from movielens_pipeline.workspace_guard import RWLOCK, WorkspaceBusyError, refuse_while_a_stage_runs, running_stages


@pytest.fixture
def stage_process():
    """A live process standing for a running stage's `dvc exp run`."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def write_rwlock(root, pid: int, command: str = "/some/venv/bin/dvc exp run -n first -S train.seed=1") -> None:
    """DVC's rwlock as it stands while the train stage runs: a read lock on its deps, a write lock on its outs."""
    info = {"pid": pid, "cmd": command}
    lock = {
        "read": {str(root / "params.yaml"): [info], str(root / "data/split/train.parquet"): [info]},
        "write": {str(root / "models/model.ckpt"): info, str(root / "dvclive/train"): info},
    }
    (root / RWLOCK).parent.mkdir(parents=True, exist_ok=True)
    (root / RWLOCK).write_text(json.dumps(lock), encoding="utf-8")


def test_a_running_stage_is_named_with_its_command_and_what_it_writes(tmp_path, stage_process):
    write_rwlock(tmp_path, stage_process)
    assert running_stages(tmp_path) == {
        stage_process: ("dvc exp run -n first -S train.seed=1", ["models/model.ckpt", "dvclive/train"])
    }
    with pytest.raises(WorkspaceBusyError) as refused:
        refuse_while_a_stage_runs(tmp_path)
    assert str(refused.value).startswith(
        f"`dvc exp run -n first -S train.seed=1` (pid {stage_process}, writing dvclive/train, models/model.ckpt) "
        "is running in this workspace"
    )
    assert "\n" not in str(refused.value) and "dvc queue start" in str(refused.value)


def test_no_stage_running_this_process_or_a_dead_one_lets_the_run_go(tmp_path):
    refuse_while_a_stage_runs(tmp_path)  # no rwlock: no stage ever ran here
    (tmp_path / RWLOCK).parent.mkdir(parents=True)
    (tmp_path / RWLOCK).write_text("{}", encoding="utf-8")  # every lock released
    refuse_while_a_stage_runs(tmp_path)
    write_rwlock(tmp_path, os.getpid())  # this very run's own stage
    refuse_while_a_stage_runs(tmp_path)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_rwlock(tmp_path, int(finished.stdout))  # a run killed before it released its locks
    refuse_while_a_stage_runs(tmp_path)


def test_a_damaged_rwlock_is_named(tmp_path):
    (tmp_path / RWLOCK).parent.mkdir(parents=True)
    (tmp_path / RWLOCK).write_text('{"read": {', encoding="utf-8")
    with pytest.raises(PipelineError, match=r"/\.dvc/tmp/rwlock: not JSON \(DVC's stage lock"):
        refuse_while_a_stage_runs(tmp_path)


def test_composing_params_while_a_stage_runs_is_refused_and_writes_nothing(tmp_path, stage_process):
    # As `make params` composes (and `dvc exp run` through .dvc/config's hydra.plugins_path): Hydra loads
    # conf/hydra_plugins, whose guard reads the rwlock of the workspace the conf/ folder is in.
    shutil.copytree(PROJECT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("__pycache__"))
    compose = [sys.executable, "-m", "movielens_pipeline.profiles", "train.seed=3"]
    write_rwlock(tmp_path, stage_process)
    refused = subprocess.run(compose, cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode == 1 and not (tmp_path / "params.yaml").exists(), refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("error: `dvc exp run -n first -S train.seed=1` (pid "), line
    (tmp_path / RWLOCK).write_text("{}", encoding="utf-8")
    composed = subprocess.run(compose, cwd=tmp_path, capture_output=True, text=True)
    assert composed.returncode == 0, composed.stderr
    assert "seed: 3" in (tmp_path / "params.yaml").read_text(encoding="utf-8")
