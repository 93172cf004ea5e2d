"""How many processes train on this machine, with how many threads each, and where refit runs.

Refit trains a second model on train + val for the first fit's best number of epochs. It normally
runs after the first fit, in the same process. Where that number is known before the first fit ends
(a model that plans its sweeps: a sampler's chains) and both fit on one CPU process, it pays to
start refit at once in a second process beside the first fit, each on half the CPUs: a sweep's
batched small solves gain little from a second thread (`bayes_mf`'s: 123 ms on one, 105 ms on two),
so two fits side by side finish sooner than one after the other (the ensemble's `bayes_mf` member:
135 s -> 89 s on 2 cores). A one-pass fit (`item_knn`'s: large matrix products, which do use every
thread) is over before the second process has imported torch. This is the one place that decides it. The
second process dies with the stage, even a stage killed by SIGKILL (`die_with`, on Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator

import torch

from ..errors import stop_point
from ..params import TrainParams

STOP_POINT_SECONDS = 0.5  # how often the wait for a refit beside looks for a signal
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def refits_beside(params: TrainParams, planned_epochs: int | None, device: torch.device) -> bool:
    """Whether refit trains in a process beside the first fit, which trains on `device` (see the module's note)."""
    one_cpu_process = params.world_size == 1 and device.type == "cpu"
    return params.refit and planned_epochs is not None and planned_epochs > 1 and one_cpu_process


def processes(params: TrainParams, beside: bool) -> tuple[int, str]:
    """How many processes train on this machine at once, and why that many (for messages)."""
    if beside:
        return 2, "refit trains beside the first fit"
    return params.devices, f"{params.name}.devices"


def threads_per_process(params: TrainParams, beside: bool) -> int:
    """`train.threads`; 0: this machine's CPUs, shared among the processes that train on it."""
    return params.threads or max(1, len(os.sched_getaffinity(0)) // processes(params, beside)[0])


@contextlib.contextmanager
def refitting(
    refit: Callable[..., bytes], args: tuple, planned_epochs: int | None, beside: bool
) -> Iterator[Callable[[int], bytes]]:
    """Within: a function of refit's number of epochs that returns refit's checkpoint, `refit(*args, epochs)`.
    Beside (`refits_beside`), refit starts at once, for `planned_epochs`, in a spawned process that the block's end
    stops, on an error too; otherwise it runs when the function is called. `refit` and `args` must pickle."""
    if not beside:
        yield lambda epochs: refit(*args, epochs)
        return
    # Spawned, not forked: this process already runs torch's thread pools.
    with multiprocessing.get_context("spawn").Pool(1, initializer=die_with, initargs=(os.getpid(),)) as pool:
        # The pool pickles its arguments while the first fit runs: they must be objects nothing changes meanwhile.
        pending = pool.apply_async(refit, (*args, planned_epochs))

        def result(epochs: int) -> bytes:
            if epochs != planned_epochs:
                raise RuntimeError(f"refit beside the first fit ran {planned_epochs} epochs, not {epochs}")
            while True:  # a signal stops the wait (errors.stop_point)
                try:
                    return pending.get(timeout=STOP_POINT_SECONDS)
                except multiprocessing.TimeoutError:
                    stop_point()

        yield result


def die_with(stage_pid: int) -> None:
    """A refit process's first step: have Linux SIGKILL it when the stage that started it dies, even by a SIGKILL
    the stage cannot handle (it would otherwise finish its refit for nobody). Elsewhere, nothing."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != stage_pid:  # the stage died before the request was made
        os.kill(os.getpid(), signal.SIGKILL)
