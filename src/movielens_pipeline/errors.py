"""The errors a user can fix, and how a stage reports them."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator


class PipelineError(Exception):
    """Bad params, bad input data or a failed download: the message says what and where."""


class Stopped(BaseException):
    """A SIGTERM or SIGINT: raised where the stage is (not caught as an error), so that what it was writing is
    cleaned up as on any failure, and it ends with the status a shell gives a process the signal killed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Stopping:
    """What the stage's signal handler knows: whether stops wait for a stop point, and the signal received."""

    deferred = False
    signum: int | None = None


def stop(signum: int, frame: object) -> None:
    """The stages' handler of SIGTERM and SIGINT: end the processes the stage started (`end_children`), then raise
    Stopped, at once or, within `deferred_stops`, at the next `stop_point`. A second signal while stopping is
    ignored: it would break into the cleanup. Training reinstalls it over Lightning's SIGTERM handler (which
    lets training end its epoch and exit 0, and under DDP broadcasts from within the handler: a deadlock when
    the signal lands in another broadcast)."""
    if Stopping.signum is not None:
        return
    Stopping.signum = signum
    end_children()
    if not Stopping.deferred:
        raise Stopped(signum)


@contextlib.contextmanager
def deferred_stops() -> Iterator[None]:
    """Within: a SIGTERM or SIGINT stops the stage at the next `stop_point` (training calls one after each batch
    and epoch), not at whichever bytecode it lands on. Training runs library code (logging, Lightning, torch,
    multiprocessing) that takes locks; an exception raised between a lock's acquire and its release would leave
    it held, and the cleanup that then needs it would wait for ever."""
    Stopping.deferred = True
    try:
        yield
    finally:
        Stopping.deferred = False
    stop_point()


def stop_point() -> None:
    """Raise Stopped if a SIGTERM or SIGINT came while stops were deferred."""
    if Stopping.signum is not None:
        raise Stopped(Stopping.signum)


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's `main`; a PipelineError ends it with status 1 and its message, no traceback. SIGTERM and SIGINT
    (a CI cancel, `timeout`, a scheduler's pre-emption, Ctrl-C) end it with 143 and 130, as shells report a process
    the signal killed, after its outputs' staging is removed: at once, or in training after the batch or sweep
    (`deferred_stops`); whatever error the stop causes on its way (a DDP collective whose other rank is gone) is
    reported as the stop. No process it started outlives it."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    try:
        main()
    except (Stopped, Exception) as error:
        signum = error.signum if isinstance(error, Stopped) else Stopping.signum
        if signum is None and isinstance(error, PipelineError):
            sys.exit(f"error: {error}")
        if signum is None:
            raise
        end_children()
        print(f"error: stopped by {signal.Signals(signum).name}; no output was written", file=sys.stderr)
        sys.exit(128 + signum)


def end_children() -> None:
    """SIGKILL every process this one started (a DDP rank, a refit beside the first fit, a download's pip): none
    writes the stage's outputs, and a DDP rank left alone would wait for rank 0 until gloo's timeout."""
    import psutil  # a dependency of dvc's; only here, where it is needed

    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
