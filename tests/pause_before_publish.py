"""Run a stage script, but hold it at the moment it would publish its first output, for the interruption tests.

    python tests/pause_before_publish.py READY_FILE stages/preprocess.py [its arguments...]

Every output goes through one rename from its staging path (movielens_pipeline.atomic). Here the first
such rename writes READY_FILE and then waits to be killed instead: the test interrupts the stage
with its staging output complete and nothing yet published, however fast or slow the machine is.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

ready_file, script, *arguments = sys.argv[1:]
publish = os.replace


def held_replace(source, target, *args, **kwargs):
    if ".partial-" in Path(source).name:
        # Whole or not at all: the test reads it the moment it exists (and may kill this process then).
        Path(f"{ready_file}.partial").write_text(f"{source} -> {target}\n")
        publish(f"{ready_file}.partial", ready_file)
        while True:
            time.sleep(60)
    return publish(source, target, *args, **kwargs)


os.replace = held_replace
sys.argv = [script, *arguments]
sys.path[0] = str(Path(script).resolve().parent)  # as `python script` would have it
runpy.run_path(script, run_name="__main__")
