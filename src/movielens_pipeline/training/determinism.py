"""The same params give the same model, byte for byte, on the CPU: seeds and deterministic kernels for both paths.

The gradient path asks Lightning for the same (`seed_everything`, `Trainer(deterministic=True)`); the sweep path,
which runs without Lightning, uses these.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (every device's), as Lightning's `seed_everything` does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Within: torch's deterministic kernels, as Lightning's `deterministic=True` sets them for good; restored after.
    On a GPU, cuBLAS needs a fixed workspace for that (its documented setting, unless the user chose one)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@contextlib.contextmanager
def unfilled_memory() -> Iterator[None]:
    """Within: new tensors are not filled with NaN, which deterministic mode does by default.

    The fill is a debugging aid (it makes reads of memory never written show up); it is not what
    makes results reproducible, and on the CPU it cost a sixth of each step: every temporary
    tensor of the optimiser was written twice.
    """
    before = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = before
