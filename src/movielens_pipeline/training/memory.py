"""The memory check before training: refuse a model whose tables would not fit, naming the setting to lower."""

from __future__ import annotations

import os

from ..data import DataShape
from ..models import REGISTRY, RatingModel
from ..params import ParamsError, TrainParams

# The share of the memory available at start that the estimate may fill: the rest is for what it leaves out (the
# ratings and batches, the libraries, a fit's smaller temporaries) and for what else runs on the machine.
MEMORY_MARGIN = 0.1
MEMINFO = "/proc/meminfo"


def check_memory(
    params: TrainParams,
    settings,
    shape: DataShape,
    processes: tuple[int, str] = (1, ""),
    memory_bytes: int | None = None,
) -> None:
    """Refuse a model whose tables would not fit in the memory it may use (`memory_bytes`; by default
    `usable_memory()`: what is available now, less MEMORY_MARGIN), before any is built: one line naming the
    setting that sizes them most, the estimate and the memory.

    The estimate is `RatingModel.training_bytes` (weights and buffers, optimiser state, the best epoch's
    copy, the fit's own largest temporaries) for each of the processes that train on this machine: `processes`
    is their number and why there are that many (`train.devices`, or refit training beside the first fit)."""
    memory_bytes = usable_memory() if memory_bytes is None else memory_bytes
    model_class = REGISTRY[params.model]
    count, why = processes
    needed = count * model_class.training_bytes(shape, settings)
    if memory_bytes is None or needed <= memory_bytes:
        return
    in_processes = f" in each of {count} processes ({why})" if count > 1 else ""
    figure = (
        f"training `{params.model}` on {shape.n_users:,} users and {shape.n_movies:,} movies would hold about "
        f"{needed / 2**30:,.1f} GiB (weights, optimiser state, the best epoch's copy, the fit's temporaries"
        f"{in_processes}), more than the {memory_bytes / 2**30:,.1f} GiB it may use here"
    )
    key = largest_size_setting(model_class, settings, shape)
    if key is None:  # no setting sizes the tables: the data does
        raise ParamsError(f"{params.name}.model: got {params.model!r}; {figure}: train it on fewer users and movies")
    raise ParamsError(f"{params.name}.{params.model}.{key}: got {getattr(settings, key)}; {figure}: lower it")


def largest_size_setting(model_class: type[RatingModel], settings, shape: DataShape) -> str | None:
    """The integer setting of `model_class` whose value sizes its tables most (the one whose lowering to 1 frees
    the most bytes), None when no setting changes their size."""
    full = model_class.training_bytes(shape, settings)
    freed = {
        key: full - model_class.training_bytes(shape, settings.model_copy(update={key: 1}))
        for key, value in settings.model_dump().items()
        if type(value) is int and value > 1
    }
    key = max(freed, key=freed.__getitem__, default=None)
    return key if key is not None and freed[key] > 0 else None


def usable_memory() -> int | None:
    """The memory a training may count on: what the system says is available now (free, plus what it can reclaim
    at once), less MEMORY_MARGIN of it; physical memory less the margin where it does not say."""
    available = available_memory() or physical_memory()
    return None if available is None else int(available * (1 - MEMORY_MARGIN))


def available_memory() -> int | None:
    """Linux's MemAvailable (/proc/meminfo) in bytes: memory a new process can take without swapping; None
    elsewhere. Not physical memory: on a shared machine the rest is someone else's, and the kernel's OOM killer may
    pick their process."""
    try:
        with open(MEMINFO, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def physical_memory() -> int | None:
    """This machine's physical memory in bytes; None where the system does not say."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or not this name
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None
