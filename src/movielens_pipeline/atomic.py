"""Write outputs atomically: to a temporary path beside the target, then rename.

A stage that is interrupted leaves either the old output or none, never a half-written
one; the temporary paths start with a dot and are cleared by the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
        yield staging
        if target.exists():
            # A folder cannot be replaced in one rename: move the old one aside first.
            retired = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
            os.replace(target, retired / target.name)
        os.replace(staging, target)
    finally:
        clear_stale(target)
