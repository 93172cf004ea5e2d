"""How gradient-trained models are optimised: sparse or dense tables, RowAdam, and the L2 penalty on looked-up rows.

RowAdam: lazy Adam with L2 for the sparse row gradients of embedding tables.

`torch.optim.SparseAdam` does the same Adam arithmetic but coalesces each gradient (a sort
of every (row, column) entry) and goes through sparse-tensor arithmetic; summing duplicate
rows with one `index_add_` and updating only those rows takes about 0.6x the time per
step here. The L2 penalty lives here too: autograd would spend a fifth of each step on
the squares of every looked-up row, while here it is one multiply-add on the distinct rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..models.gradient.common import TABLES
from ..models.sums import fixed_order_mean


class RowAdam(torch.optim.Optimizer):
    """Adam that touches only the rows present in each sparse gradient, with an L2 penalty per lookup.

    `weight_decay` is the loss term `weight_decay * mean over lookups of ||row||^2`: a row
    looked up k times among n lookups gets `2 * weight_decay * k / n * row` added to its
    gradient, as in SGD matrix factorisation, where each rating regularises what it uses.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            distinct_rows = DistinctRows()
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise ValueError("RowAdam takes sparse gradients only: use it for nn.Embedding(sparse=True)")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                # A row looked up several times in a batch has several gradient entries: sum them.
                lookups = param.grad._indices()[0]
                rows, position, counts = distinct_rows(lookups)
                values = param.grad._values()
                grad = torch.zeros(len(rows), *param.shape[1:], dtype=values.dtype, device=values.device)
                grad.index_add_(0, position, values)
                param_rows = param.index_select(0, rows)
                if group["weight_decay"]:
                    share = (2 * group["weight_decay"] / len(lookups)) * counts.to(values.dtype)
                    grad.addcmul_(param_rows, share.view(-1, *[1] * (param.dim() - 1)))
                exp_avg = state["exp_avg"].index_select(0, rows).mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = group["lr"] / (1 - beta1 ** state["step"])
                with distinct_rows_copy():
                    state["exp_avg"].index_copy_(0, rows, exp_avg)
                    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                    denominator = exp_avg_sq.div_(1 - beta2 ** state["step"]).sqrt_().add_(group["eps"])
                    param.index_copy_(0, rows, param_rows.add_(exp_avg.div_(denominator).mul_(-step_size)))


@contextlib.contextmanager
def distinct_rows_copy() -> Iterator[None]:
    """Within: `index_copy_` takes its plain path, even in deterministic mode (Lightning's `deterministic=True`).

    Deterministic mode routes `index_copy_` through a sort, because with a repeated index the
    last write would win by chance; RowAdam copies to distinct rows only, where the plain path
    is deterministic too, and twice as fast.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


class DistinctRows:
    """`torch.unique` of lookup indices, remembered within one step: a user's bias and factors
    are looked up with the same indices, and sorting them once saves a sort of the batch per table."""

    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []

    def __call__(self, lookups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for earlier, found in self.seen:
            if torch.equal(earlier, lookups):  # False for another shape
                return found
        found = torch.unique(lookups, return_inverse=True, return_counts=True)
        self.seen.append((lookups, found))
        return found


def use_sparse_tables(model: nn.Module, sparse: bool) -> None:
    """Give every per-user and per-movie table of `model` sparse gradients (or dense ones): training's choice.

    Sparse rows and RowAdam win on one CPU process (an epoch costs what its batches touch, not the
    whole table per step); dense tables and one fused Adam on an accelerator and under DDP, whose
    gradient reduction takes dense gradients only.
    """
    for module in model.modules():
        if isinstance(module, TABLES):
            module.sparse = sparse


def table_optimizers(
    model: nn.Module, learning_rate: float, decays: dict[nn.Module, float]
) -> tuple[list[torch.optim.Optimizer], Callable[[], torch.Tensor | float]]:
    """The optimisers of a gradient-trained model, and the L2 term its loss adds each step.

    `decays` holds each of the model's tables (in the model's order) and its L2 penalty. Sparse tables:
    RowAdam (which applies the L2 penalty itself) for the tables, Adam for the rest; the loss adds nothing.
    Dense tables: one Adam, fused where the device has it, and the loss adds the same penalty from the rows
    each step looked up (under DDP it must be in the loss, to be averaged with it).
    """
    tables = list(decays)
    table_weights = {id(module.weight) for module in tables}
    rest = [parameter for parameter in model.parameters() if id(parameter) not in table_weights]
    if any(not module.sparse for module in tables):
        return [torch.optim.Adam(model.parameters(), lr=learning_rate, fused=True)], LookupPenalty(decays)
    optimizers: list[torch.optim.Optimizer] = []
    if tables:
        # One parameter group per penalty, in the tables' order.
        groups = [
            {"params": [table.weight for table in tables if decays[table] == decay], "weight_decay": decay}
            for decay in dict.fromkeys(decays.values())
        ]
        optimizers.append(RowAdam(groups, lr=learning_rate))
    if rest:
        optimizers.append(torch.optim.Adam(rest, lr=learning_rate))
    return optimizers, lambda: 0.0


class LookupPenalty:
    """RowAdam's L2 penalty as a loss term, for dense tables: per table, its weight decay x the mean squared
    norm of the rows it looked up in this training step (a row looked up k times counts k times)."""

    def __init__(self, decays: dict[nn.Module, float]):
        self.decays = decays
        self.lookups: dict[nn.Module, list[torch.Tensor]] = {}
        for table in decays:
            table.register_forward_hook(self.record)

    def record(self, table: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        """Forward hook: note the rows a training step looks up (an EmbeddingBag's first input too)."""
        if table.training and torch.is_grad_enabled():
            self.lookups.setdefault(table, []).append(inputs[0].reshape(-1))

    def __call__(self) -> torch.Tensor | float:
        """The penalty of the lookups since the last call, which it forgets."""
        penalty: torch.Tensor | float = 0.0
        for table, calls in self.lookups.items():
            # Each row's squared norm once, then one number per lookup: a bag looks up more rows than a table has.
            squared_norms = table.weight.square().sum(dim=1).index_select(0, torch.cat(calls))
            penalty = penalty + self.decays[table] * fixed_order_mean(squared_norms)
        self.lookups.clear()
        return penalty
