"""One `dvc exp run` at a time in a workspace: the second is refused before it touches params.yaml.

Every `dvc exp run` (in the workspace, `--temp` or `--queue`) stashes the workspace, composes params.yaml from
conf/ and restores the workspace: under a run in progress, that rewrites the params its stages read. DVC locks
each running stage's deps and outs in `.dvc/tmp/rwlock`, but checks that lock only when the second run's own
stages start, after the rewrite. conf/hydra_plugins/workspace_guard.py calls `refuse_while_a_stage_runs` when
DVC composes, before it writes params.yaml. Runs side by side: queue them first, then `dvc queue start`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .errors import PipelineError

RWLOCK = Path(".dvc/tmp/rwlock")  # DVC's record of the paths each running stage reads and writes
READ_ATTEMPTS = 20  # DVC rewrites the file in place: a read can catch it half-written


class WorkspaceBusyError(PipelineError):
    """A DVC stage is running in this workspace."""


def running_stages(root: Path) -> dict[int, tuple[str, list[str]]]:
    """Each live process (not this one) that holds DVC's stage lock in the workspace at `root`: its command and
    the outputs it is writing."""
    lock = read_rwlock(Path(root) / RWLOCK)
    holders: dict[int, tuple[str, list[str]]] = {}
    for mode in ("read", "write"):
        for path, infos in lock.get(mode, {}).items():
            for info in infos if isinstance(infos, list) else [infos]:
                pid = int(info["pid"])
                if pid == os.getpid() or not is_running(pid):  # a killed run's entry: DVC clears it later
                    continue
                program, _, arguments = info["cmd"].partition(" ")  # DVC's sys.argv: the program's whole path
                command, writing = holders.setdefault(pid, (f"{Path(program).name} {arguments}", []))
                if mode == "write":
                    writing.append(os.path.relpath(path, root))
    return holders


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def read_rwlock(path: Path) -> dict:
    """DVC's rwlock file as a mapping; {} when no stage ever ran here."""
    for _ in range(READ_ATTEMPTS):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError:
            time.sleep(0.05)
    raise PipelineError(f"{path}: not JSON (DVC's stage lock; delete it if no DVC command is running)")


def refuse_while_a_stage_runs(root: Path) -> None:
    """Raise WorkspaceBusyError, naming the running command, when a DVC stage runs in the workspace at `root`."""
    holders = running_stages(root)
    if holders:
        pid, (command, writing) = min(holders.items())
        stage = f", writing {', '.join(sorted(writing))}" if writing else ""
        raise WorkspaceBusyError(
            f"`{command}` (pid {pid}{stage}) is running in this workspace; a second `dvc exp run` would rewrite "
            "its params.yaml. Wait until it ends (to run experiments side by side, queue them all with "
            "`dvc exp run --queue`, then `dvc queue start`)"
        )
