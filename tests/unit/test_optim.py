"""RowAdam: lazy Adam on sparse row gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from movielens_pipeline.training.optim import RowAdam


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_matches_adam_with_an_l2_penalty_per_lookup_when_every_row_is_in_every_batch(weight_decay):
    torch.manual_seed(0)
    sparse, dense = nn.Embedding(5, 3, sparse=True), nn.Embedding(5, 3)
    dense.weight.data.copy_(sparse.weight.data)
    row_adam = RowAdam([sparse.weight], lr=0.05, weight_decay=weight_decay)
    adam = torch.optim.Adam([dense.weight], lr=0.05)
    for step in range(6):
        # Every row at least once, some several times: duplicate entries must be summed.
        rows = torch.tensor([0, 1, 2, 3, 4, step % 5, (step * 2) % 5])
        targets = torch.randn(len(rows), 3)
        row_adam.zero_grad()
        ((sparse(rows) - targets) ** 2).sum().backward()
        row_adam.step()
        adam.zero_grad()
        looked_up = dense(rows)
        penalty = weight_decay * looked_up.pow(2).sum(dim=1).mean()
        (((looked_up - targets) ** 2).sum() + penalty).backward()
        adam.step()
    assert torch.allclose(sparse.weight, dense.weight, atol=1e-6)


def test_rows_outside_the_batch_keep_their_values_and_moments():
    table = nn.Embedding(4, 2, sparse=True)
    before = table.weight.detach().clone()
    optimizer = RowAdam([table.weight], lr=0.1)
    table(torch.tensor([1, 1, 3])).sum().backward()
    optimizer.step()
    changed = (table.weight != before).any(dim=1)
    assert changed.tolist() == [False, True, False, True]
    assert torch.equal(optimizer.state[table.weight]["exp_avg"][[0, 2]], torch.zeros(2, 2))


def test_refuses_dense_gradients():
    table = nn.Embedding(3, 2)
    optimizer = RowAdam([table.weight])
    table(torch.tensor([0])).sum().backward()
    with pytest.raises(ValueError, match="sparse gradients only"):
        optimizer.step()


def test_tables_looked_up_with_the_same_indices_update_as_if_each_had_its_own_optimizer():
    # One optimizer sorts shared lookups once (DistinctRows); the result must not depend on it.
    torch.manual_seed(0)
    together = [nn.Embedding(6, 3, sparse=True), nn.Embedding(6, 1, sparse=True), nn.Embedding(4, 3, sparse=True)]
    apart = [nn.Embedding(6, 3, sparse=True), nn.Embedding(6, 1, sparse=True), nn.Embedding(4, 3, sparse=True)]
    for source, copy in zip(together, apart, strict=True):
        copy.weight.data.copy_(source.weight.data)
    shared = RowAdam([table.weight for table in together], lr=0.05, weight_decay=0.2)
    separate = [RowAdam([table.weight], lr=0.05, weight_decay=0.2) for table in apart]
    for step in range(5):
        users, movies = torch.tensor([0, 1, 1, step % 6, 5]), torch.tensor([0, 3, 2, 2, step % 4])
        for tables, optimizers in ((together, [shared]), (apart, separate)):
            loss = (tables[0](users) * tables[2](movies)).sum() + tables[1](users).sum()
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(together, apart, strict=True))


def test_deterministic_mode_gives_the_same_update_and_stays_on_after_a_step():
    # RowAdam copies rows back outside deterministic mode (they are distinct): the result must be the same.
    def two_steps() -> torch.Tensor:
        torch.manual_seed(0)
        table = nn.Embedding(50, 4, sparse=True)
        optimizer = RowAdam([table.weight], lr=0.05, weight_decay=0.1)
        for _ in range(2):
            optimizer.zero_grad()
            table(torch.randint(0, 50, (200,))).square().sum().backward()
            optimizer.step()
        return table.weight.detach().clone()

    plain = two_steps()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        deterministic = two_steps()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(plain, deterministic)
