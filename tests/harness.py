"""The project under test: copied into a temporary git repo and driven by the real `dvc`, `git` and Python."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import psutil
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Built at set-up by `make venv` (scripts/offline_plots_template.py); git ignores it.
PLOTS_TEMPLATE = Path("build/plots-template.html")
# What the pipeline wrote into the project: not copied, the tests run it. Nor is the second pipeline,
# ensemble/: plain `dvc status`, `dvc pull` and `dvc exp show` would take it in (never run, never pushed);
# tests/e2e/test_ensemble_pipeline.py adds it (`with_ensemble_pipeline`).
PIPELINE_OUTPUTS = ("dvclive/", "eval/", "ensemble/")
LOCK_FILES = ("dvc.lock",)
GIT_IDENTITY = {"user.name": "Pipeline Test", "user.email": "pipeline-test@example.invalid"}


def tool_env(repo: Path, **extra: str) -> dict[str, str]:
    """The environment of a dvc call: this venv first on PATH, the copy's src/ importable, as a checkout has it."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(repo / "src"), **extra)


def dvc(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real `dvc` in `repo`; a failure (when `check`) fails the test with its output."""
    result = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=repo, env=env or tool_env(repo), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        pytest.fail(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


QUEUE_TIMEOUT_SECONDS = 600  # a queued sweep of the small end-to-end project


def start_queue(repo: Path, jobs: int) -> None:
    """`dvc queue start -j jobs` in `repo`, its output in a file rather than a pipe.

    The workers it starts inherit its output; one that lingers after the queue empties (seen
    here now and then) would hold a pipe open, and `subprocess.run` would wait on it for ever.
    """
    log = repo / ".dvc" / "tmp" / "queue-start.log"
    with log.open("w") as output:
        command = [str(BIN / "dvc"), "queue", "start", "-j", str(jobs)]
        started = subprocess.run(command, cwd=repo, env=tool_env(repo), stdout=output, stderr=subprocess.STDOUT)
    if started.returncode != 0:
        pytest.fail(f"dvc queue start failed ({started.returncode}):\n{log.read_text()}")


def wait_for_the_queue(repo) -> str:
    """`dvc queue status` once none is Queued or Running and no worker is active. A status call can fail while a
    worker rewrites its state file (DVC reads it half-written: "Expecting value"): that call is retried, until
    the deadline. It can also leave out a task a worker is taking up (two of three listed, both Success, with a
    worker still active), hence the workers too."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_SECONDS
    while True:
        result = dvc(repo, "queue", "status", check=False)
        status = result.stdout
        busy = "Queued" in status or "Running" in status or "Worker status: 0 active" not in status
        if result.returncode == 0 and not busy:
            return status
        assert time.monotonic() < deadline, (
            f"queue still busy after {QUEUE_TIMEOUT_SECONDS} s:\n{status}{result.stderr}"
        )
        time.sleep(2)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def copy_project(repo: Path, params: dict[str, dict]) -> Path:
    """The project's tracked files (less its pipeline outputs) in a new git repo at `repo`, `params` merged in."""
    for name in git(PROJECT, "ls-files").splitlines():
        if (PROJECT / name).is_file() and not name.startswith(PIPELINE_OUTPUTS) and name not in LOCK_FILES:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, repo / name)
    if (PROJECT / PLOTS_TEMPLATE).is_file():
        (repo / PLOTS_TEMPLATE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / PLOTS_TEMPLATE, repo / PLOTS_TEMPLATE)
    set_params(repo, params)
    git(repo, "init", "-q", "-b", "main")
    for key, value in GIT_IDENTITY.items():
        git(repo, "config", key, value)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project under test")
    return repo


def set_params(repo: Path, changes: dict) -> None:
    """`changes` merged into a copy's params.yaml and conf/config.yaml, as a user edits conf/ and runs `make params`:
    `dvc exp run -S` composes params.yaml from conf/ (the default profile sets nothing), so both must hold them."""
    for path in (repo / "params.yaml", repo / "conf" / "config.yaml"):
        path.write_text(yaml.safe_dump(merged(yaml.safe_load(path.read_text()), changes), sort_keys=False))


def with_ensemble_pipeline(repo: Path) -> None:
    """Add the project's ensemble pipeline (ensemble/dvc.yaml, never run) to a copy `copy_project` made."""
    (repo / "ensemble").mkdir(exist_ok=True)
    shutil.copy2(PROJECT / "ensemble" / "dvc.yaml", repo / "ensemble" / "dvc.yaml")


def exp_runs(repo: Path, experiments_only: bool = False) -> list[dict]:
    """Rows of `dvc exp show --json`, flattened: each baseline commit (unless `experiments_only`) and experiment."""
    rows = []
    for baseline in json.loads(dvc(repo, "exp", "show", "--json").stdout):
        rows += [] if experiments_only else [baseline]
        rows += [exp for group in baseline.get("experiments") or [] for exp in group["revs"]]
    return rows


def require(module: str) -> None:
    """Skip a test whose optional package is missing here; in CI (where `make venv` installs it) fail instead."""
    try:
        __import__(module)
    except ImportError:
        message = f"{module} is not installed: `make venv` installs it from requirements.lock"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def bench_module(name: str, module_name: str | None = None) -> ModuleType:
    """bench/<name>.py loaded as a module, bench/ on sys.path while it loads (its scripts import each other, as
    when one runs)."""
    bench = str(PROJECT / "bench")
    spec = importlib.util.spec_from_file_location(module_name or name, PROJECT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, bench)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(bench)
    return module


def python(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run this venv's Python in `repo` as a user's checkout would (its src/ first)."""
    return subprocess.run([sys.executable, *args], cwd=repo, env=env or tool_env(repo), capture_output=True, text=True)


def merged(values: dict, changes: dict) -> dict:
    """`values` with `changes` applied, key by key, into nested mappings too (`{"train": {"biased_mf": {...}}}`)."""
    result = dict(values)
    for key, change in changes.items():
        both_mappings = isinstance(change, dict) and isinstance(values.get(key), dict)
        result[key] = merged(values[key], change) if both_mappings else change
    return result


def project_params(section: str, **changes: object):
    """`section` as the project's params.yaml sets it (every key is required there), with `changes` merged in.

    The train and rank sections come with every model's settings typed (`models.load_train_params`' view)."""
    from movielens_pipeline.params import parse_section

    model_settings = None
    if section in ("train", "rank"):
        from movielens_pipeline.models import model_settings as settings_of_models

        model_settings = settings_of_models()
    document = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))
    return parse_section(section, merged(document[section], changes), model_settings)


def section_of(model: str) -> str:
    """The params.yaml section that trains `model`: `rank` for a ranking model, else `train`."""
    from movielens_pipeline.models import REGISTRY, SECTION_OF_TASK

    return SECTION_OF_TASK[REGISTRY[model].task]


def model_params(model: str, **changes: object):
    """The section that trains `model` (`train` or `rank`) as params.yaml sets it, `model` chosen, `changes` merged."""
    return project_params(section_of(model), model=model, **changes)


def ranking_params(model: str):
    """What train() validates `model` with beyond its params: the evaluate section for a ranker, else None."""
    return project_params("evaluate") if section_of(model) == "rank" else None


def stage_command(repo: Path, name: str) -> list[str]:
    """Stage `name`'s command as dvc.yaml gives it, run by this venv's Python."""
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][name]
    words = shlex.split(stage["cmd"])
    return [sys.executable, *words[1:]]


def stage_outputs(repo: Path, name: str) -> list[str]:
    """The `outs` of stage `name` in dvc.yaml."""
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][name]
    return [out if isinstance(out, str) else next(iter(out)) for out in stage["outs"]]


def is_running(process: psutil.Process) -> bool:
    """Not ended: a zombie has (an orphan's is reaped by PID 1, which in a container may never do it)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
