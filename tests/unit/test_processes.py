"""Where refit runs (training/processes.py): a refit beside the first fit, in its own process, does not outlive
the stage that started it, even one killed by SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest
from harness import is_running

# A stage that starts a refit beside its first fit (time.sleep for 120 "epochs": a refit that runs a while),
# prints the refit process's pid, and waits.
STAGE = """
import multiprocessing, time
from movielens_pipeline.training.processes import refitting

if __name__ == "__main__":
    with refitting(time.sleep, (), planned_epochs=120, beside=True):
        time.sleep(0.5)
        print(*(child.pid for child in multiprocessing.active_children()), flush=True)
        time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_refit_beside_dies_with_a_stage_killed_by_sigkill(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(STAGE, encoding="utf-8")
    stage = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        [refit_pid] = [int(pid) for pid in stage.stdout.readline().split()]
        refit = psutil.Process(refit_pid)
        stage.send_signal(signal.SIGKILL)
        stage.wait(timeout=30)
        deadline = time.monotonic() + 10
        while is_running(refit):
            assert time.monotonic() < deadline, "the refit outlived its stage"
            time.sleep(0.05)
    finally:
        stage.kill()
