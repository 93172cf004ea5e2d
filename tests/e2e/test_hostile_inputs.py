"""Inputs a hostile or careless user could give, run through the real `dvc repro` and stage commands.

Each must end with one line naming the input and what was expected, and change nothing it should not.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from harness import BIN, copy_project, dvc, exp_runs, python, stage_command, stage_outputs, tool_env


@pytest.mark.parametrize("dataset", ["x;touch pwned", "x$(touch pwned)", "x`touch pwned`"])
def test_a_dataset_name_never_reaches_a_shell(tmp_path, dataset):
    repo = copy_project(tmp_path / "project", {"data": {"dataset": dataset}})
    result = dvc(repo, "repro", "download", check=False)
    assert result.returncode != 0
    assert "data.dataset: got" in result.stderr + result.stdout
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize("dataset", ["../../../victim", "../../docs"])
def test_a_dataset_name_never_deletes_a_folder(tmp_path, dataset):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    repo = copy_project(tmp_path / "project", {"data": {"dataset": dataset}})
    docs = sorted(path.name for path in (repo / "docs").iterdir())
    result = dvc(repo, "repro", "download", check=False)
    assert result.returncode != 0
    assert "data.dataset: got" in result.stderr + result.stdout
    assert (victim / "keep.txt").read_text() == "mine"
    assert sorted(path.name for path in (repo / "docs").iterdir()) == docs


# --- Files a stage reads, damaged: the real stage commands, on a repository after `dvc repro` ---


def run_stage(repo: Path, name: str) -> subprocess.CompletedProcess:
    """Stage `name`'s command as dvc.yaml gives it, as DVC would run it (no PYTHONPATH: the stage finds its src/)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(stage_command(repo, name), cwd=repo, env=env, capture_output=True, text=True)


def outputs(repo: Path, name: str) -> dict[str, bytes]:
    found = {}
    for out in stage_outputs(repo, name):
        path = repo / out
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            if file.is_file():
                found[str(file.relative_to(repo))] = file.read_bytes()
    return found


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def rewrite_parquet(path: Path, change) -> None:
    change(pl.read_parquet(path)).write_parquet(path)


# One kind of damage per kind of file in the default run; the rest (also covered by tests/unit/test_inputs.py)
# with `pytest -m slow`: each case starts a stage process, seconds of imports.
@pytest.mark.parametrize(
    ("stage", "damage", "expected"),
    [
        (
            "train",
            lambda r: truncate(r / "data/split/train.parquet"),
            "data/split/train.parquet: not a readable Parquet",
        ),
        pytest.param(
            *(
                "train",
                lambda r: (r / "data/split/val.parquet").write_bytes(b"garbage"),
                "data/split/val.parquet: not a read",
            ),
            marks=pytest.mark.slow,
        ),
        (
            "train",
            lambda r: rewrite_parquet(r / "data/split/train.parquet", lambda t: t.rename({"rating": "stars"})),
            "data/split/train.parquet: no column 'rating'",
        ),
        pytest.param(
            *(
                "train",
                lambda r: rewrite_parquet(
                    r / "data/split/train.parquet", lambda t: t.with_columns(pl.col("rating").cast(str))
                ),
                "data/split/train.parquet: column 'rating' holds String; expected numbers",
            ),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            *(
                "train",
                lambda r: rewrite_parquet(
                    r / "data/split/train.parquet", lambda t: t.with_columns(pl.col("userIdMapped") + 100_000)
                ),
                "data/split/train.parquet: row 1: userIdMapped is 100000",
            ),
            marks=pytest.mark.slow,
        ),
        (
            "evaluate",
            lambda r: truncate(r / "models/model.ckpt"),
            "models/model.ckpt: not a checkpoint the train stage",
        ),
        pytest.param(
            *(
                "evaluate",
                lambda r: rename_model(r / "models/model.ckpt"),
                "models/model.ckpt: model 'mystery' is unknown",
            ),
            marks=pytest.mark.slow,
        ),
        (
            "evaluate",
            lambda r: (r / "data/prepared/dataset.json").write_text(""),
            "data/prepared/dataset.json: not rea",
        ),
        pytest.param(
            *(
                "evaluate",
                lambda r: (r / "data/prepared/dataset.json").write_text("{}"),
                "dataset.json: no key 'noise_floor",
            ),
            marks=pytest.mark.slow,
        ),
        (
            "evaluate",
            lambda r: rewrite_parquet(
                r / "data/split/test.parquet", lambda t: t.with_columns(rating=pl.lit(float("nan"), pl.Float32))
            ),
            "data/split/test.parquet: row 1: rating is nan",
        ),
        pytest.param(
            *(
                "evaluate",
                lambda r: rewrite_parquet(
                    r / "data/split/test.parquet", lambda t: t.with_columns(pl.col("rating") * 100)
                ),
                "data/split/test.parquet: row 1: rating is",
            ),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            *(
                "evaluate",
                lambda r: rewrite_parquet(r / "data/split/test.parquet", lambda t: t.head(0)),
                "test.parquet: no rat",
            ),
            marks=pytest.mark.slow,
        ),
        (
            "split",
            lambda r: rewrite_parquet(r / "data/prepared/ratings.parquet", lambda t: t.rename({"rating": "score"})),
            "data/prepared/ratings.parquet: no column 'rating'",
        ),
    ],
)
def test_a_damaged_input_ends_the_stage_with_one_line_and_changes_nothing(project_repo, stage, damage, expected):
    repo = project_repo
    before = outputs(repo, stage)
    damage(repo)
    line = one_line_error(run_stage(repo, stage))
    assert line.startswith(f"error: {expected}") or expected in line, line
    assert outputs(repo, stage) == before


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def rename_model(path: Path) -> None:
    checkpoint = torch.load(path, weights_only=True)
    torch.save(checkpoint | {"model_name": "mystery"}, path)


# --- The `movielens` command ---


def movielens(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return python(repo, "-m", "movielens_pipeline.cli", *args)


def test_the_cli_reports_an_unwritable_out_in_one_line(project_repo, tmp_path):
    repo = project_repo
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "file").write_text("a file")
    for out, expected in (
        (tmp_path / "folder.csv", "is a folder; expected the path of a file"),
        (tmp_path / "file" / "under.csv", "is not an existing folder"),
        (tmp_path / "missing" / "out.csv", "is not an existing folder"),
    ):
        line = one_line_error(movielens(repo, "predict", "1:1", "--out", str(out)))
        assert line.startswith(f"error: {out}: ") and expected in line, line
    assert (tmp_path / "file").read_text() == "a file"


def test_the_cli_refuses_a_damaged_checkpoint_and_ids_that_are_not_whole(project_repo, tmp_path):
    repo = project_repo
    pairs = tmp_path / "pairs.parquet"
    pl.DataFrame({"userId": [1.9, 2.0], "movieId": [50.7, 3.0]}).write_parquet(pairs)
    line = one_line_error(movielens(repo, "predict", "--pairs", str(pairs)))
    assert line == f"error: {pairs}: row 1: userId is 1.9; expected a whole-number id", line
    blank = tmp_path / "blank.csv"
    blank.write_text("userId,movieId\n1,1\n,2\n")
    line = one_line_error(movielens(repo, "predict", "--pairs", str(blank), "--cold-start"))
    assert line == f"error: {blank}: row 2: userId is empty; expected a whole-number id", line
    truncate(repo / "models/model.ckpt")
    line = one_line_error(movielens(repo, "recommend", "1"))
    assert line.startswith("error: models/model.ckpt: not a checkpoint the train stage wrote"), line


# --- Two `dvc exp run` at once in one workspace ---


def test_a_second_exp_run_in_one_workspace_is_refused_and_the_first_one_ends_as_if_alone(project_repo, tmp_path):
    # The first run's train stage is held where it checks params.yaml, just before it writes its outputs
    # (tests/hold_at_params_check.py); the second `dvc exp run` starts then, as from a user's second terminal.
    repo = project_repo
    held, release = tmp_path / "held", tmp_path / "release"
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    hold = f"python tests/hold_at_params_check.py {held} {release} "
    pipeline["stages"]["train"]["cmd"] = pipeline["stages"]["train"]["cmd"].replace("python ", hold, 1)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    command = [str(BIN / "dvc"), "exp", "run", "--name"]
    first = subprocess.Popen(
        [*command, "first", "-S", "train.seed=1"],
        cwd=repo,
        env=tool_env(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not held.exists():
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first run never reached its params check"
            time.sleep(0.05)
        params_of_the_first = (repo / "params.yaml").read_bytes()
        second = {
            how: subprocess.run(
                [*command, f"second-{how}", *flags, "-S", "train.seed=2"],
                cwd=repo,
                env=tool_env(repo),
                capture_output=True,
                text=True,
            )
            for how, flags in (("workspace", []), ("queued", ["--queue"]))
        }
        assert (repo / "params.yaml").read_bytes() == params_of_the_first
        release.write_text("go\n")
        first_output = first.communicate(timeout=300)[0]
    finally:
        release.write_text("go\n")
        first.kill()
    # Each second run, in the workspace or queued (both rewrite params.yaml to stash it), is refused in one line
    # that names the running one, before DVC writes params.yaml.
    for refused in second.values():
        assert refused.returncode == 255 and "Traceback" not in refused.stderr, refused.stderr  # DVC's own error
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("ERROR: `dvc exp run --name first -S train.seed=1` (pid "), line
        assert "writing dvclive/train, models/model.ckpt) is running in this workspace" in line, line
    # The first ends as if alone: recorded, with its own params.
    assert first.returncode == 0, first_output
    assert [run["name"] for run in exp_runs(repo, experiments_only=True)] == ["first"]
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["seed"] == 1
    assert dvc(repo, "queue", "status").stdout.count("Queued") == 0
