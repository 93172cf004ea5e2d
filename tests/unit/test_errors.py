"""errors.run_stage: a user's error in one line with status 1; SIGTERM and SIGINT end a stage at once with 143 and
130, what it was writing cleaned up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

STAGE = """
import sys, time
from pathlib import Path
from movielens_pipeline.atomic import atomic_dir
from movielens_pipeline.errors import PipelineError, run_stage

def main():
    if sys.argv[2] == "error":
        raise PipelineError("params.yaml: train.model: got 'mf'")
    with atomic_dir(Path(sys.argv[1]) / "out") as staging:
        (staging / "half.txt").write_text("half")
        (Path(sys.argv[1]) / "started").write_text("")
        while True:  # a stage's long work, in Python or a loop of torch calls
            time.sleep(0.01)

run_stage(main)
"""


def test_a_pipeline_error_is_one_line_and_status_1(tmp_path):
    run = subprocess.run([sys.executable, "-c", STAGE, str(tmp_path), "error"], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr == "error: params.yaml: train.model: got 'mf'\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_stage_at_once_with_the_shells_status_and_nothing_written(tmp_path, sig):
    process = subprocess.Popen(
        [sys.executable, "-c", STAGE, str(tmp_path), "work"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() else ""
        time.sleep(0.01)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + sig
    assert stderr == f"error: stopped by {sig.name}; no output was written\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["started"]  # the staging is gone, no output


DEFERRED_STAGE = """
import os, signal, sys
from pathlib import Path
from movielens_pipeline.errors import deferred_stops, run_stage, stop_point

def main():
    with deferred_stops():
        os.kill(os.getpid(), signal.SIGTERM)  # lands mid-batch: noted, not raised
        Path(sys.argv[1], "after the signal").write_text("")
        os.kill(os.getpid(), signal.SIGINT)  # a second signal while stopping: ignored
        Path(sys.argv[1], "after the second").write_text("")
        stop_point()  # the batch's end
        Path(sys.argv[1], "after the stop point").write_text("")

run_stage(main)
"""


def test_within_deferred_stops_a_signal_stops_the_stage_at_the_next_stop_point_and_a_second_is_ignored(tmp_path):
    run = subprocess.run([sys.executable, "-c", DEFERRED_STAGE, str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 128 + signal.SIGTERM, run.stderr
    assert run.stderr == "error: stopped by SIGTERM; no output was written\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["after the second", "after the signal"]
