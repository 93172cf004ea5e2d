"""The train stage's time on a loaded machine: `train.threads` 1 and 2, with and without a busy core.

    .venv/bin/python bench/loaded_threads.py [--models bayes_mf biased_mf] [--threads 1 2] [--busy 0 1]

Runs `stages/train.py` on the workspace's split (run `make pipeline` first) in a scratch copy of the
project, once per (model, threads, busy processes), while `--busy` processes spin on the CPU, as another
user's job would. Prints one row per run: wall seconds and the checkpoint's digest, so the table also shows
that the thread count does not change the bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COPIED = ["stages", "src", "conf", "params.yaml", "data/split", "data/prepared"]


def spin() -> None:
    """Keep one core busy until terminated."""
    while True:
        pass


def copy_project(scratch: Path) -> None:
    """The files the train stage reads, in `scratch`."""
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, scratch / name)
        else:
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, scratch / name)


def train_command() -> list[str]:
    """The train stage's command as dvc.yaml gives it, run by this Python."""
    words = shlex.split(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["cmd"])
    return [sys.executable, *words[1:]]


def timed_train(scratch: Path, model: str, threads: int) -> tuple[float, str]:
    """Wall seconds of one train stage run and the checkpoint's md5."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"] |= {"model": model, "threads": threads}
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    command = train_command()
    checkpoint = scratch / command[command.index("--checkpoint") + 1]
    started = time.perf_counter()
    subprocess.run(command, cwd=scratch, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    return seconds, hashlib.md5(checkpoint.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bayes_mf", "biased_mf"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--busy", nargs="+", type=int, default=[0, 1], help="processes spinning meanwhile")
    args = parser.parse_args()
    print("| model | train.threads | busy cores | train stage (s) | checkpoint md5 |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        copy_project(Path(scratch))
        for model in args.models:
            for busy in args.busy:
                for threads in args.threads:
                    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
                    for spinner in spinners:
                        spinner.start()
                    try:
                        seconds, digest = timed_train(Path(scratch), model, threads)
                    finally:
                        for spinner in spinners:
                            spinner.terminate()
                    print(f"| {model} | {threads} | {busy} | {seconds:.1f} | {digest[:12]} |", flush=True)


if __name__ == "__main__":
    main()
