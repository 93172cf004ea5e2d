"""Sums and means whose bits do not depend on how many threads torch runs.

Torch adds up a tensor of fewer than PARALLEL_GRAIN elements on one thread, in one order. A longer one it splits
among its threads and then adds their partial sums, so with another thread count (another machine's cores, or
`train.threads`) the last bits differ: a Gibbs chain's noise precision, and with it every later draw and the
checkpoint's bytes. Longer tensors are summed here in blocks of SUM_BLOCK elements, each on one thread in one
order, then the block sums in order. Shorter ones go to torch as they are (the same bits as before).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

PARALLEL_GRAIN = 32_768  # torch's at::internal::GRAIN_SIZE: below it, a reduction runs on one thread
SUM_BLOCK = PARALLEL_GRAIN // 2


def fixed_order_sum(values: Tensor) -> Tensor:
    """`values.sum()`, added up in the same order whatever torch's thread count."""
    flat = values.reshape(-1)
    if flat.numel() < PARALLEL_GRAIN:
        return flat.sum()
    n_blocks = -(-flat.numel() // SUM_BLOCK)
    # One block per output: torch shares the blocks among its threads but sums each one on one thread.
    blocks = F.pad(flat, (0, n_blocks * SUM_BLOCK - flat.numel())).view(n_blocks, SUM_BLOCK)
    return blocks.sum(1).sum()


def fixed_order_mean(values: Tensor) -> Tensor:
    """`values.mean()`, added up in the same order whatever torch's thread count."""
    if values.numel() < PARALLEL_GRAIN:
        return values.mean()
    return fixed_order_sum(values) / values.numel()


def mean_squared_error(predicted: Tensor, targets: Tensor) -> Tensor:
    """`F.mse_loss(predicted, targets)`, added up in the same order whatever torch's thread count."""
    if predicted.numel() < PARALLEL_GRAIN:
        return F.mse_loss(predicted, targets)
    return fixed_order_mean((predicted - targets).square())
