"""Implicit feedback for the Bayesian sampler (bayes_mf.py): each side's bags of the other side's rows (the movies' with
their attributes), and the draws of the bag vectors from their conditional, exactly through an eigenbasis or by
conjugate gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data import csr_index
from .ridge import conjugate_gradients, gram_of_rows

# Implicit feedback (`bayes_mf`'s `implicit`). Each bag weighs its members 1 / |bag|^BAG_NORM_EXPONENT: 1 makes
# it their mean, 0.5 is Koren's SVD++ (a heavy user's bag sums to more). Chosen on val RMSE (docs/models.md).
BAG_NORM_EXPONENT = 0.5
# The bag vectors' first values: libFM's init_stdev, as the factors'.
BAG_INIT_STD = 0.1
# Eigenvalues of BB' below this share of the largest are rounding's, taken as B'B's zeros (`bag_eigenbasis`).
RANGE_TOLERANCE = 1e-10
# Conjugate gradients stop when every coordinate's residual is this small against its right-hand side (float64
# solves; far below the draw's own spread), or after CG_MAX_ITERATIONS (each costs two passes over the ratings).
CG_TOLERANCE = 1e-6
CG_MAX_ITERATIONS = 200


class Bags(NamedTuple):
    """One side's implicit feedback, the sparse matrix B (owners x members): each owner's (user's) bag holds the
    members of the other side (movies) it has training ratings with, each weighted 1 / |bag|^BAG_NORM_EXPONENT.
    Held by rows (owner o's members and weights are `owner_starts[o]:owner_starts[o + 1]` of `members` and
    `member_weights`) and by columns (member j's owners, and j's weight in each owner's bag), as the ratings
    grouped by either side are."""

    owner_starts: Tensor
    members: Tensor
    member_weights: Tensor  # in the model's dtype
    member_starts: Tensor
    owners: Tensor
    owner_weights: Tensor


class Eigenbasis(NamedTuple):
    """A symmetric positive semi-definite matrix as V diag(values) V', V's columns orthonormal."""

    vectors: Tensor
    values: Tensor


def make_bags(owner_starts: Tensor, members: Tensor, member_starts: Tensor, owners: Tensor, dtype: torch.dtype) -> Bags:
    """The bags of the ratings grouped by owner (owner o's members are `owner_starts[o]:owner_starts[o + 1]` of
    `members`), given the same ratings grouped by member too (member j's owners: `member_starts`, `owners`)."""
    counts = owner_starts.diff()
    weight_in_bag = counts.double().clamp(min=1).pow(-BAG_NORM_EXPONENT).to(dtype)  # each owner's members' weight
    member_weights = torch.repeat_interleave(weight_in_bag, counts)
    return Bags(owner_starts, members, member_weights, member_starts, owners, weight_in_bag.index_select(0, owners))


def with_attributes(bags: Bags | None, attributes: Tensor, first_member: int) -> Bags:
    """The movies' bags (`bags`, None for none) with each movie's attributes (multi-hot, movies x attributes: genres,
    release-year group) added as members `first_member` + a, each weighted 1 / |its attributes|^BAG_NORM_EXPONENT."""
    n_movies, n_attributes = attributes.shape
    movie_of, attribute_of = attributes.nonzero(as_tuple=True)
    if bags is not None and not len(movie_of):  # none: the bags as they are, summed in the same order
        return bags
    per_movie = (attributes > 0).sum(1).double().clamp(min=1).pow(-BAG_NORM_EXPONENT)
    owners, members, weights = movie_of, attribute_of + first_member, per_movie[movie_of]
    if bags is not None:  # each movie's users first, as they were, then its attributes
        owners = torch.cat(
            [torch.repeat_interleave(torch.arange(n_movies, device=movie_of.device), bags.owner_starts.diff()), owners]
        )
        members = torch.cat([bags.members, members])
        weights = torch.cat([bags.member_weights.double(), weights])
    dtype = attributes.dtype if bags is None else bags.member_weights.dtype
    owner_starts, by_owner = csr_index(owners, n_movies)
    member_starts, by_member = csr_index(members, first_member + n_attributes)
    weights = weights.to(dtype)
    return Bags(
        owner_starts, members[by_owner], weights[by_owner], member_starts, owners[by_member], weights[by_member]
    )


def bag_sums(bags: Bags, vectors: Tensor) -> Tensor:
    """B @ vectors: each owner's weighted sum of its members' vectors (owners x columns)."""
    weights = bags.member_weights.to(vectors.dtype)
    return F.embedding_bag(bags.members, vectors, bags.owner_starts[:-1], mode="sum", per_sample_weights=weights)


def member_sums(bags: Bags, rows: Tensor, squared: bool = False) -> Tensor:
    """B' @ rows: per member, the sum of its weight x the row of each owner whose bag holds it (members x columns);
    `squared`: of its weight squared (B'B's diagonal, with rows of ones)."""
    weights = bags.owner_weights.to(rows.dtype)
    weights = weights.square() if squared else weights
    return F.embedding_bag(bags.owners, rows, bags.member_starts[:-1], mode="sum", per_sample_weights=weights)


def bag_gram(bags: Bags) -> Tensor:
    """B'B (members x members, float64)."""
    return gram_of_rows(bags.owner_starts, bags.members, bags.member_weights, len(bags.member_starts) - 1)


def bag_eigenbasis(bags: Bags, dtype: torch.dtype) -> Eigenbasis:
    """B'B's eigenbasis, computed in float64, kept in `dtype` (the model's). With fewer owners than members, from
    BB' (owners x owners), whose eigendecomposition U S U' costs less (the cube of its size): B'B's eigenvectors
    with nonzero eigenvalues are then B'U S^-1/2, for the same eigenvalues, and the basis spans B'B's range only."""
    n_owners, n_members = len(bags.owner_starts) - 1, len(bags.member_starts) - 1
    if n_members <= n_owners:
        values, vectors = torch.linalg.eigh(bag_gram(bags))
        # Rounding leaves the zero eigenvalues of a singular Gram matrix slightly negative, or slightly positive.
        return Eigenbasis(vectors.to(dtype), values.clamp(min=0).to(dtype))
    values, owner_vectors = torch.linalg.eigh(
        gram_of_rows(bags.member_starts, bags.owners, bags.owner_weights, n_owners)
    )
    kept = values > RANGE_TOLERANCE * values.max()
    vectors = member_sums(bags, owner_vectors[:, kept]) / values[kept].sqrt()
    return Eigenbasis(vectors.to(dtype), values[kept].to(dtype))


def bag_vectors_conditional(
    basis: Eigenbasis,
    bags: Bags,
    deviations: Tensor,
    row_precision: Tensor,
    vector_mean: Tensor,
    vector_precision: Tensor,
    draw: bool = True,
) -> Tensor:
    """Bag vectors Y (members x coordinates) drawn from their conditional given the owners' rows: per coordinate
    d, deviations[:, d] ~ N(B y_d, I / row_precision[d]) and y_d ~ N(vector_mean[d], I / vector_precision[d]),
    so y_d's precision is row_precision[d] B'B + vector_precision[d] I; `draw` False: the conditional's mean.
    `basis` is B'B's eigenbasis, in which that precision is diagonal for every d at once: an exact draw, all
    coordinates in two or three matrix products, in the dtype of `deviations`."""
    right = member_sums(bags, deviations) * row_precision + vector_mean * vector_precision
    vectors = basis.vectors
    precision = basis.values.unsqueeze(1) * row_precision + vector_precision  # per eigenvector and coordinate
    if vectors.shape[0] == vectors.shape[1]:  # a complete basis
        rotated = (vectors.T @ right) / precision
        if draw:
            rotated += torch.randn_like(rotated) / precision.sqrt()
        return vectors @ rotated
    # The basis spans B'B's range; off it, the precision is vector_precision alone. So the draw is that of the
    # prior's precision, `outside`, corrected within the range: outside + V (range's draw - V' outside).
    noise = torch.randn_like(right) if draw else torch.zeros_like(right)
    spread = vector_precision.rsqrt()
    outside = right / vector_precision + noise * spread
    rotated_right, rotated_noise = (vectors.T @ torch.cat([right, noise], 1)).split(right.shape[1], dim=1)
    correction = rotated_right * (1 / precision - 1 / vector_precision) + rotated_noise * (precision.rsqrt() - spread)
    return outside + vectors @ correction


def bag_vectors_by_conjugate_gradients(
    bags: Bags,
    deviations: Tensor,
    row_precision: Tensor,
    vector_mean: Tensor,
    vector_precision: Tensor,
    start: Tensor,
    draw: bool = True,
) -> Tensor:
    """The draw of `bag_vectors_conditional` without a dense matrix, for any number of members: the solution y of
    P y = right + e, P being each coordinate's precision and e ~ N(0, P) (B' z1 scaled by the rows' precision's
    root, plus z2 by the vectors'), is a draw of N(P^-1 right, P^-1) (perturb-and-solve, Papandreou & Yuille
    2010). Solved by Jacobi-preconditioned conjugate gradients, all coordinates at once, in float64, from `start`
    (the last draw); exact up to CG_TOLERANCE."""
    row_precision, vector_mean, vector_precision = (
        value.to(torch.float64) for value in (row_precision, vector_mean, vector_precision)
    )
    right = member_sums(bags, deviations.to(torch.float64)) * row_precision + vector_mean * vector_precision
    if draw:
        owners_noise = torch.randn(len(deviations), right.shape[1], dtype=torch.float64, device=right.device)
        right += member_sums(bags, owners_noise) * row_precision.sqrt()
        right += torch.randn_like(right) * vector_precision.sqrt()

    def precision_times(vectors: Tensor) -> Tensor:
        # B'B v in the model's dtype (the passes over the ratings, 4x faster than in float64 on the CPU), the
        # iterates in float64.
        gram_times = member_sums(bags, bag_sums(bags, vectors.to(deviations.dtype))).to(torch.float64)
        return gram_times * row_precision + vectors * vector_precision

    ones = torch.ones(len(deviations), 1, dtype=torch.float64, device=right.device)
    diagonal = member_sums(bags, ones, squared=True) * row_precision + vector_precision
    solved = conjugate_gradients(
        precision_times, right, start.to(torch.float64), 0, CG_MAX_ITERATIONS, 1 / diagonal, CG_TOLERANCE
    )
    return solved.to(deviations.dtype)
