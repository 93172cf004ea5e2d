"""Ridge regressions of many rows at once, the linear algebra of the sweep models (als.py, bayes_mf.py, ease.py): every
user's (or movie's) bias and factors solved together from its ratings, batched over users (movies) with
similar numbers of ratings, in chunks that bound memory, on whatever device the tensors are on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# Values per batched solve, its padded design rows, Gram matrices and Cholesky factors together (128 MiB of
# float64): what bounds a solve's memory at any size and rank.
GRAM_FLOATS = 1 << 24
# Owners are bucketed by their number of ratings, two buckets per doubling: on ML-25M-shaped data that pads
# 18 % more rows than there are ratings, against 41 % with one bucket per doubling.
BUCKETS_PER_DOUBLING = 2


class PaddedRatings(NamedTuple):
    """One side's ratings laid out for `ridge_rows`: owners (users, or movies) in buckets of similar counts
    (1, 2, 3-4, 5, 6-8, 9-11, 12-16, ...: BUCKETS_PER_DOUBLING), each owner's ratings padded to its bucket's
    largest count, so that every Gram matrix is one batched matrix product and every solve one batched
    Cholesky. Per chunk of a bucket (at most GRAM_FLOATS padded design values): the owners, and per owner
    and padded slot the row of the design (the other side's index; one past the last for padding) and the
    rating's position (one past the last for padding)."""

    counts: Tensor  # ratings per owner
    chunks: list[tuple[Tensor, Tensor, Tensor]]  # (owners, design rows, rating positions)


def pad_by_owner(starts: Tensor, others: Tensor, n_others: int, dim: int) -> PaddedRatings:
    """The layout of ratings grouped by owner (owner o's are `starts[o]:starts[o + 1]` of `others`, the other
    side's index per rating) for solves of `dim` coefficients."""
    counts = starts.diff()
    bucket_of = (torch.log2(counts.clamp(min=1).double()) * BUCKETS_PER_DOUBLING).ceil().long()
    bucket_of[counts == 0] = -1  # an owner without ratings needs no solve
    padded_others = F.pad(others, (0, 1), value=n_others)
    chunks = []
    for bucket in torch.unique(bucket_of).tolist():
        if bucket < 0:
            continue
        owners = torch.nonzero(bucket_of == bucket).squeeze(1)
        width = int(counts[owners].max())
        position = torch.arange(width, device=starts.device)
        # Per owner a chunk holds its padded design rows (width x dim) and its Gram matrix and Cholesky factor (dim
        # x dim each): GRAM_FLOATS bounds them all, whatever the rank (at a high rank the Gram matrices dominate).
        for chunk in owners.split(max(1, GRAM_FLOATS // (width * dim + 2 * dim * dim))):
            filled = position < counts[chunk].unsqueeze(1)
            slots = torch.where(filled, starts[chunk].unsqueeze(1) + position, len(others))
            chunks.append((chunk, padded_others[slots], slots))
    return PaddedRatings(counts, chunks)


def ridge_rows(
    padded: PaddedRatings,
    factors: Tensor,
    targets: Tensor,
    penalty: Tensor,
    prior_mean: Tensor | None = None,
    draw_std: Tensor | float | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """For every owner o (a user, or a movie), the coefficients x = [bias, factors] minimising
    |t_o - D_o x|^2 + sum_j penalty[o, j] (x_j - prior_mean[o, j])^2, where D_o = [1, factors[others]] are the
    rows of o's ratings (the other side's factors) and t_o their `targets` (in the order `padded` was made
    from): the ridge regression, or a Normal posterior's mean. `penalty` and `prior_mean` broadcast to
    (owners, 1 + factors): one row for all owners, or one per owner; `prior_mean` defaults to 0. With
    `draw_std`, also a draw from N(that mean, draw_std^2 (D_o'D_o + diag penalty)^-1): the Gibbs sampler's
    joint conditional of a row, draw_std being the noise's sd; then (means, draws). An owner without
    ratings gets its prior mean (and a draw from the prior).
    """
    device, dtype = factors.device, factors.dtype
    n_owners, dim = len(padded.counts), factors.shape[1] + 1
    penalty = penalty.to(dtype).expand(n_owners, dim)
    prior_mean = torch.zeros(dim, device=device, dtype=dtype) if prior_mean is None else prior_mean
    prior_mean = prior_mean.expand(n_owners, dim)
    # Padded slots point one past the last design row and target, both zeros: padding adds nothing to the
    # Gram matrices, with no mask to multiply by.
    design_rows = F.pad(torch.cat([torch.ones(len(factors), 1, device=device, dtype=dtype), factors], 1), (0, 0, 0, 1))
    targets = F.pad(targets, (0, 1))
    solutions = prior_mean.clone()
    draws = solutions.clone()
    empty = padded.counts == 0
    if draw_std is not None and bool(empty.any()):
        spread = draw_std / penalty[empty].sqrt()
        draws[empty] += torch.randn(int(empty.sum()), dim, device=device, dtype=dtype) * spread
    for owners, rows, slots in padded.chunks:
        # index_select, not design_rows[rows]: the same gather, faster on the CPU.
        design = design_rows.index_select(0, rows.view(-1)).view(*rows.shape, dim)
        gram = design.transpose(1, 2) @ design
        gram.diagonal(dim1=1, dim2=2).add_(penalty[owners])
        right = design.transpose(1, 2) @ targets.index_select(0, slots.view(-1)).view(*slots.shape, 1)
        right += (penalty[owners] * prior_mean[owners]).unsqueeze(2)
        cholesky = torch.linalg.cholesky(gram)
        solved = torch.cholesky_solve(right, cholesky)
        solutions[owners] = solved.squeeze(2)
        if draw_std is not None:
            # L L' = gram, so L'^-1 z has covariance gram^-1.
            noise = torch.randn(len(owners), dim, 1, device=device, dtype=dtype)
            noise = torch.linalg.solve_triangular(cholesky.transpose(1, 2), noise, upper=True)
            draws[owners] = (solved + noise * draw_std).squeeze(2)
    return solutions if draw_std is None else (solutions, draws)


def gram_of_rows(starts: Tensor, columns: Tensor, weights: Tensor, n_columns: int) -> Tensor:
    """M'M (n_columns x n_columns, float64) for the sparse M whose row i holds `weights` at `columns` in
    `starts[i]:starts[i + 1]`, from a chunk of its rows at a time made dense."""
    n_rows, device = len(starts) - 1, columns.device
    row_of = torch.repeat_interleave(torch.arange(n_rows, device=device), starts.diff())
    gram = torch.zeros(n_columns, n_columns, dtype=torch.float64, device=device)
    step = max(1, GRAM_FLOATS // n_columns)
    for first in range(0, n_rows, step):
        last = min(first + step, n_rows)
        entries = slice(int(starts[first]), int(starts[last]))
        dense = torch.zeros(last - first, n_columns, dtype=torch.float64, device=device)
        # Accumulated, not assigned: an owner with two ratings of one member holds it twice, as in `bag_sums`.
        dense.index_put_((row_of[entries] - first, columns[entries]), weights[entries].double(), accumulate=True)
        gram.addmm_(dense.T, dense)
    return gram


def conjugate_gradients(
    apply: Callable[[Tensor], Tensor],
    right: Tensor,
    start: Tensor,
    dim: int,
    steps: int,
    inverse_diagonal: Tensor | None = None,
    tolerance: float = 0.0,
) -> Tensor:
    """x with apply(x) = right for many independent systems at once, each a slice along `dim` (each column with dim
    0, each row with dim 1; `apply` acts on each alone, symmetric positive definite), by at most `steps` conjugate-
    gradient steps from `start`, Jacobi-preconditioned by `inverse_diagonal` if given; stops sooner once every
    system's residual is within `tolerance` x its right-hand side."""
    solution = start.clone()
    residual = right - apply(solution)
    direction = residual.clone() if inverse_diagonal is None else residual * inverse_diagonal
    product = (residual * direction).sum(dim)
    target = tolerance * right.norm(dim=dim)
    for _ in range(steps):
        if bool((residual.norm(dim=dim) <= target).all()):
            break
        applied = apply(direction)
        curvature = (direction * applied).sum(dim)
        # A system already solved has a zero direction: it stays as it is (no 0 / 0).
        step = torch.where(curvature > 0, product / curvature, 0.0).unsqueeze(dim)
        solution += step * direction
        residual -= step * applied
        preconditioned = residual if inverse_diagonal is None else residual * inverse_diagonal
        new_product = (residual * preconditioned).sum(dim)
        direction = preconditioned + torch.where(product > 0, new_product / product, 0.0).unsqueeze(dim) * direction
        product = new_product
    return solution
