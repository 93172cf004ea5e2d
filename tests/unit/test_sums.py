"""models/sums.py: sums whose bits do not depend on torch's thread count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from movielens_pipeline.models.sums import PARALLEL_GRAIN, fixed_order_mean, fixed_order_sum, mean_squared_error


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def under_threads(compute, counts=(1, 2, 3)) -> list[torch.Tensor]:
    results = []
    for count in counts:
        torch.set_num_threads(count)
        results.append(compute())
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_long_sum_has_the_same_bits_with_any_thread_count(restore_threads, dtype):
    values = torch.randn(100_003, generator=torch.Generator().manual_seed(0), dtype=dtype) * 1e3
    plain = under_threads(values.sum)
    fixed = under_threads(lambda: fixed_order_sum(values))
    # torch's own sum splits among its threads (so this test can tell); the fixed-order one does not.
    assert not all(torch.equal(plain[0], other) for other in plain[1:])
    assert all(torch.equal(fixed[0], other) for other in fixed[1:])
    assert fixed[0].item() == pytest.approx(values.double().sum().item(), rel=1e-5)


def test_short_tensors_are_torchs_own_sum_mean_and_loss():
    values = torch.randn(PARALLEL_GRAIN - 1, generator=torch.Generator().manual_seed(1))
    targets = torch.randn(PARALLEL_GRAIN - 1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(fixed_order_sum(values), values.sum())
    assert torch.equal(fixed_order_mean(values), values.mean())
    assert torch.equal(mean_squared_error(values, targets), F.mse_loss(values, targets))


def test_long_mean_and_loss_agree_with_torch_and_keep_their_gradient():
    predicted = torch.randn(3 * PARALLEL_GRAIN + 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    targets = torch.randn(3 * PARALLEL_GRAIN + 5, generator=torch.Generator().manual_seed(4))
    loss = mean_squared_error(predicted, targets)
    assert loss.item() == pytest.approx(F.mse_loss(predicted, targets).item(), rel=1e-6)
    loss.backward()
    assert torch.allclose(predicted.grad, 2 * (predicted - targets).detach() / len(targets))
    matrix = torch.randn(400, 300, generator=torch.Generator().manual_seed(5))
    assert fixed_order_mean(matrix).item() == pytest.approx(matrix.mean().item(), rel=1e-5, abs=1e-7)
