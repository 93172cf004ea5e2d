"""atomic.py: outputs appear whole or not at all, never half-written, and leave no litter."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import stat
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from movielens_pipeline.atomic import (
    OutputError,
    atomic_dir,
    atomic_path,
    disk_full_reason,
    write_json,
    write_parquet,
    writing,
)


class Interrupted(Exception):
    pass


def leftovers(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.partial-*"))


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one afterwards."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def test_atomic_path_writes_a_new_target(tmp_path):
    target = tmp_path / "nested" / "out.json"
    with atomic_path(target) as staging:
        assert staging.parent == target.parent
        assert staging.name.startswith(".out.json.partial-")
        assert not target.exists()
        staging.write_text("new", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "new"
    assert leftovers(target) == []


def test_atomic_path_replaces_an_existing_target(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old", encoding="utf-8")
    with atomic_path(target) as staging:
        staging.write_text("new", encoding="utf-8")
        assert target.read_text(encoding="utf-8") == "old"  # untouched until the block ends
    assert target.read_text(encoding="utf-8") == "new"
    assert leftovers(target) == []


def test_atomic_path_failure_keeps_the_old_target(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(Interrupted):
        with atomic_path(target) as staging:
            staging.write_text("half", encoding="utf-8")
            raise Interrupted
    assert target.read_text(encoding="utf-8") == "old"
    assert leftovers(target) == []


def test_atomic_path_failure_without_old_target_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(Interrupted):
        with atomic_path(target) as staging:
            staging.write_text("half", encoding="utf-8")
            raise Interrupted
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_writes_a_new_folder(tmp_path):
    target = tmp_path / "nested" / "prepared"
    with atomic_dir(target) as staging:
        assert staging.is_dir() and list(staging.iterdir()) == []
        assert staging.parent == target.parent
        assert staging.name.startswith(".prepared.partial-")
        (staging / "a.txt").write_text("a", encoding="utf-8")
    assert sorted(path.name for path in target.iterdir()) == ["a.txt"]
    assert leftovers(target) == []


def test_atomic_dir_replaces_an_existing_folder_entirely(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")
    (target / "sub").mkdir()
    (target / "sub" / "deep.txt").write_text("old", encoding="utf-8")
    with atomic_dir(target) as staging:
        (staging / "new.txt").write_text("new", encoding="utf-8")
        assert (target / "old.txt").exists()  # untouched until the block ends
    assert sorted(path.name for path in target.iterdir()) == ["new.txt"]
    # The old folder, moved aside to make room, is gone too.
    assert leftovers(target) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["prepared"]


def test_atomic_dir_failure_keeps_the_old_folder(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(Interrupted):
        with atomic_dir(target) as staging:
            (staging / "half.txt").write_text("half", encoding="utf-8")
            raise Interrupted
    assert sorted(path.name for path in target.iterdir()) == ["old.txt"]
    assert (target / "old.txt").read_text(encoding="utf-8") == "old"
    assert leftovers(target) == []


def test_atomic_dir_failure_without_old_folder_leaves_nothing(tmp_path):
    target = tmp_path / "prepared"
    with pytest.raises(Interrupted):
        with atomic_dir(target) as staging:
            (staging / "half.txt").write_text("half", encoding="utf-8")
            raise Interrupted
    assert list(tmp_path.iterdir()) == []


def _plant_stale(target: Path) -> list[Path]:
    """What an interrupted earlier run leaves: a staging file and a staging folder with content."""
    stale_file = target.parent / f".{target.name}.partial-abc123"
    stale_file.write_text("stale", encoding="utf-8")
    stale_dir = target.parent / f".{target.name}.partial-def456"
    (stale_dir / "inner").mkdir(parents=True)
    (stale_dir / "inner" / "x.txt").write_text("stale", encoding="utf-8")
    return [stale_file, stale_dir]


@pytest.mark.parametrize("atomic", [atomic_path, atomic_dir])
def test_stale_leftovers_are_removed_by_the_next_run(tmp_path, atomic):
    target = tmp_path / "out"
    stale = _plant_stale(target)
    unrelated = tmp_path / ".other.partial-abc123"
    unrelated.write_text("keep", encoding="utf-8")
    with atomic(target) as staging:
        for path in stale:
            assert not path.exists()
        if atomic is atomic_path:
            staging.write_text("new", encoding="utf-8")
    assert leftovers(target) == []
    assert unrelated.read_text(encoding="utf-8") == "keep"


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_path_file_gets_the_umask_permissions(tmp_path, umask, mask):
    umask(mask)
    target = tmp_path / "out.json"
    with atomic_path(target) as staging:
        staging.write_text("x", encoding="utf-8")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_dir_folder_gets_the_umask_permissions(tmp_path, umask, mask):
    umask(mask)
    target = tmp_path / "prepared"
    with atomic_dir(target) as staging:
        (staging / "a.txt").write_text("a", encoding="utf-8")
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((target / "a.txt").stat().st_mode) == 0o666 & ~mask


# --- a full disk or a file-size limit ----------------------------------------------------------


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Lower this process's soft file-size limit (as `ulimit -f` does) for the block; Python ignores SIGXFSZ."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
        (OSError(errno.EFBIG, "File too large"), "file too large for the limit in force"),
        (pl.exceptions.ComputeError("parquet: underlying IO error: File too large (os error 27)"), "file too large"),
        (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), "could not be written"),
        (OSError(errno.EACCES, "Permission denied"), None),
        (ValueError("os error 2 somewhere"), None),
    ],
)
def test_disk_full_reason_tells_a_full_disk_from_other_errors(error, reason):
    found = disk_full_reason(error)
    assert found is None if reason is None else reason in found


def test_a_parquet_file_over_the_size_limit_is_an_output_error_naming_it(tmp_path):
    table = pl.DataFrame({"rating": list(range(100_000))})
    with file_size_limit(4096), pytest.raises(OutputError) as raised:
        write_parquet(table, tmp_path / "ratings.parquet", "the prepared ratings")
    assert str(raised.value) == (
        f"{tmp_path}/ratings.parquet: cannot write the prepared ratings: "
        "file too large for the limit in force (ulimit -f, or the file system's)"
    )


def test_a_json_file_over_the_size_limit_is_an_output_error(tmp_path):
    with file_size_limit(64), pytest.raises(OutputError, match=r"stats\.json: cannot write the statistics: file too"):
        write_json({"rows": list(range(1000))}, tmp_path / "stats.json", "the statistics")


def test_other_errors_pass_through_writing_untouched(tmp_path):
    with pytest.raises(PermissionError), writing(tmp_path / "x", "x"):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_atomic_dir_names_the_target_not_the_staging_folder_and_keeps_the_old_output(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "ratings.parquet").write_bytes(b"old")
    with pytest.raises(OutputError) as raised, atomic_dir(target) as staging:
        with file_size_limit(4096):
            write_parquet(pl.DataFrame({"a": list(range(100_000))}), staging / "ratings.parquet", "the ratings")
    assert str(raised.value).startswith(f"{target}/ratings.parquet: cannot write the ratings: file too large")
    assert str(raised.value).endswith("; nothing was changed: free space (or raise the limit) and rerun")
    assert (target / "ratings.parquet").read_bytes() == b"old"
    assert leftovers(target) == []


def test_atomic_path_turns_an_unwrapped_disk_full_error_into_one_naming_the_target(tmp_path):
    target = tmp_path / "model.ckpt"
    with pytest.raises(OutputError) as raised, atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(raised.value).startswith(f"{target}: cannot write the stage's output: no space left on the device")
    assert not target.exists() and leftovers(target) == []
