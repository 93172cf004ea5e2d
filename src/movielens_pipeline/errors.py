"""The errors a user can fix, and how a stage reports them."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable


class PipelineError(Exception):
    """Bad params, bad input data or a failed download: the message says what and where."""


class Stopped(BaseException):
    """A SIGTERM or SIGINT: raised where the stage is (not caught as an error), so that what it was writing is
    cleaned up as on any failure, and it ends with the status a shell gives a process the signal killed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def stop(signum: int, frame: object) -> None:
    """The stages' handler of SIGTERM and SIGINT: raise Stopped. Lightning calls it after its own SIGTERM handler,
    which alone would let training end its epoch and exit 0."""
    raise Stopped(signum)


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's `main`; a PipelineError ends it with status 1 and its message, no traceback. SIGTERM and SIGINT
    (a CI cancel, `timeout`, a scheduler's pre-emption, Ctrl-C) end it at once with 143 and 130, as shells report
    a process the signal killed, after its outputs' staging is removed; any child process it started (a refit
    beside the first fit) is stopped with it."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    try:
        main()
    except PipelineError as error:
        sys.exit(f"error: {error}")
    except Stopped as stopped:
        name = signal.Signals(stopped.signum).name
        print(f"error: stopped by {name}; no output was written", file=sys.stderr)
        sys.exit(128 + stopped.signum)
