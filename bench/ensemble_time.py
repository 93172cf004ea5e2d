"""Wall-clock time of the ensemble pipeline with every one of its stages run: `dvc repro --force --single-item
ensemble/dvc.yaml`, DVC's own start included.

    .venv/bin/python bench/ensemble_time.py [--runs 2]

Run it in the project, after `dvc repro dvc.yaml` (the ensemble reads the main pipeline's split). Forced, the
ensemble's stages run, not the stages upstream of them, and not from the run cache. With the committed code and
params every run rewrites the same outputs byte for byte, so the lock file does not change. Prints each run's wall
clock, the load average before it, and each stage's time from its outputs' modification times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

LOCK_FILE = Path("ensemble/dvc.lock")


def stage_outputs() -> dict[str, list[Path]]:
    """Each ensemble stage's outputs, from the lock file."""
    stages = yaml.safe_load(LOCK_FILE.read_text())["stages"]
    return {name: [Path(out["path"]) for out in stage.get("outs", [])] for name, stage in stages.items()}


def last_written(paths: list[Path]) -> float:
    """The latest modification time among these files and the files under these folders (0 if there are none)."""
    files = [file for path in paths for file in ([path] if path.is_file() else path.rglob("*")) if file.is_file()]
    return max((file.stat().st_mtime for file in files), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="timed runs, one after another")
    args = parser.parse_args()
    dvc = Path(sys.executable).with_name("dvc")
    for run in range(1, args.runs + 1):
        load = os.getloadavg()[0]
        started = time.time()
        subprocess.run(
            [str(dvc), "repro", "--force", "--single-item", str(LOCK_FILE.with_name("dvc.yaml"))],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wall = time.time() - started
        print(f"run {run}: {wall:.1f} s wall, {wall / 60:.2f} min (load average {load:.2f} before)")
        # The stages in the order they finished: each took from the end of the one before to its last output.
        ends = {name: last_written(outputs) for name, outputs in stage_outputs().items()}
        previous = started
        for name, ended in sorted(ends.items(), key=lambda item: item[1]):
            if ended >= started:
                print(f"  {name:24s} {ended - previous:6.1f} s")
                previous = ended


if __name__ == "__main__":
    main()
