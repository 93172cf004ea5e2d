"""Write outputs atomically: to a temporary path beside the target, then rename.

A stage that is interrupted, or that cannot write (a full disk, a file-size limit), leaves
either the old output or none, never a half-written one; the temporary paths start with a
dot and are cleared by the next run. A full disk ends the stage with one line naming the
file and what it was writing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from .errors import PipelineError

# What the user is told for each errno that means "this output cannot be written here".
DISK_FULL = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large for the limit in force (ulimit -f, or the file system's)",
    errno.EDQUOT: "disk quota exceeded",
}
# polars and pyarrow report the OS error inside their own message: "... (os error 28)".
OS_ERROR_NUMBER = re.compile(r"os error (\d+)")


class OutputError(PipelineError):
    """An output that could not be written: the disk is full or a file-size limit was hit."""

    final = False  # True once it names the target's path and says that nothing was changed


# torch.save reports no errno, only that its writer failed.
TORCH_WRITE_FAILED = "file write failed"
SQLITE_FULL = ("database or disk is full", "disk I/O error")


def disk_full_reason(error: BaseException) -> str | None:
    """Why `error` means the output cannot be written (full disk, size limit), or None if it means something else."""
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return DISK_FULL[error.errno]
    found = OS_ERROR_NUMBER.search(str(error))
    if found:
        return DISK_FULL.get(int(found.group(1)))
    if isinstance(error, RuntimeError) and TORCH_WRITE_FAILED in str(error):
        return "the file could not be written (a full disk or a file-size limit)"
    # dvclive opens DVC's state database (SQLite), which reports a full disk in its own words.
    if isinstance(error, sqlite3.OperationalError) and any(words in str(error) for words in SQLITE_FULL):
        return f"DVC's state database could not be written ({error}: a full disk or a file-size limit)"
    return None


@contextlib.contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Turn a full disk or a size limit met while writing `what` to `path` into one OutputError."""
    try:
        yield
    except Exception as error:
        reason = disk_full_reason(error)
        if reason is None:
            raise
        raise OutputError(f"{path}: cannot write {what}: {reason}") from None


def write_parquet(table: pl.DataFrame, path: Path, what: str) -> None:
    """Write `table` to `path` as Parquet; a full disk is an OutputError naming `path` and `what`."""
    with writing(path, what):
        table.write_parquet(path)


def write_json(value: object, path: Path, what: str, indent: int = 2) -> None:
    """Write `value` as indented JSON with a final newline; a full disk is an OutputError."""
    with writing(path, what):
        Path(path).write_text(json.dumps(value, indent=indent) + "\n", encoding="utf-8")


def _as_target(error: BaseException, staging: Path, target: Path) -> OutputError | None:
    """The OutputError to show for `error` raised while writing into `staging`: named by the target's path.

    None: not this context's to rewrite (another error, or one about another output), raise it as it is.
    """
    if isinstance(error, OutputError):
        if error.final or str(staging) not in str(error):
            return None
        message = str(error).replace(str(staging), str(target))
    elif (reason := disk_full_reason(error)) is not None:
        message = f"{target}: cannot write the stage's output: {reason}"
    else:
        return None
    return output_error(message)


@contextlib.contextmanager
def _named_by_target(staging: Path, target: Path) -> Iterator[None]:
    """A full disk met while writing into `staging` is raised as the OutputError `_as_target` makes."""
    try:
        yield
    except Exception as error:
        shown = _as_target(error, staging, target)
        if shown is None:
            raise
        raise shown from None


def output_error(message: str) -> OutputError:
    """The final OutputError for `message`: it says that nothing was changed and what to do."""
    error = OutputError(f"{message}; nothing was changed: free space (or raise the limit) and rerun")
    error.final = True
    return error


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def clear_stale(target: Path) -> None:
    """Remove temporary paths left beside `target` by an interrupted earlier run."""
    for stale in target.parent.glob(_staging_prefix(target) + "*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_dir(target: Path) -> Iterator[Path]:
    """A temporary folder beside `target` for work towards it, removed after; if a killed run leaves it,
    the next atomic write of `target` clears it."""
    with tempfile.TemporaryDirectory(prefix=_staging_prefix(target), dir=Path(target).parent) as folder:
        yield Path(folder)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(target)
    descriptor, staging_name = tempfile.mkstemp(prefix=_staging_prefix(target), dir=target.parent)
    os.close(descriptor)
    staging = Path(staging_name)
    # mkstemp makes the file private; outputs get the usual permissions.
    staging.chmod(0o666 & ~_umask())
    try:
        with _named_by_target(staging, target):
            yield staging
            os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces the folder `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(target)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    staging.chmod(0o777 & ~_umask())
    try:
        with _named_by_target(staging, target):
            yield staging
            if target.exists():
                # A folder cannot be replaced in one rename: move the old one aside first.
                retired = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
                os.replace(target, retired / target.name)
            os.replace(staging, target)
    finally:
        clear_stale(target)
