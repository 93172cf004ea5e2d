"""Run a stage script, but hold it where it checks that params.yaml did not change under it, for the test of two
`dvc exp run` at once in one workspace.

    python tests/hold_at_params_check.py HELD_FILE RELEASE_FILE stages/train.py [its arguments...]

When the stage is about to check (`params.unchanged_params`, just before it writes its outputs), this
writes HELD_FILE and waits until RELEASE_FILE exists, then lets the check run: the test starts a second
`dvc exp run` in between, however fast or slow the machine is.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

held_file, release_file, script, *arguments = sys.argv[1:]
sys.argv = [script, *arguments]
sys.path[0] = str(Path(script).resolve().parent)  # as `python script` would have it
import _checkout  # noqa: E402, F401  (the checkout's library, as the stage itself imports it)

from movielens_pipeline import params  # noqa: E402

watch = params.unchanged_params


def held_unchanged_params(*args, **kwargs):
    check = watch(*args, **kwargs)

    def held_check() -> None:
        Path(held_file).write_text("held\n")
        while not Path(release_file).exists():
            time.sleep(0.05)
        check()

    return held_check


params.unchanged_params = held_unchanged_params
runpy.run_path(script, run_name="__main__")
