"""atomic.py: outputs appear whole or not at all, never half-written, and leave no litter."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from movielens_pipeline.atomic import atomic_dir, atomic_path


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
