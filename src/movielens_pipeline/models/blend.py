"""The ensemble pipeline's model: a linear blend of trained rating models, served like any one of them.

Not a model `train.model` can name: its members are trained by the ensemble's member stages and its
weights fitted on their validation predictions (`ensemble.py`). Its checkpoint holds each member's
whole checkpoint beside the weights, so it is one self-contained file that `load_model` reads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..schema import RATING_MAX, RATING_MIN
from .base import RatingModel

BLEND = "blend"  # the checkpoint's model_name


class Blend(nn.Module):
    """intercept + sum_m weight_m x member_m's predicted rating, clipped to the rating scale."""

    name = BLEND

    def __init__(self, members: dict[str, RatingModel], intercept: float, weights: list[float]):
        super().__init__()
        if len(weights) != len(members):
            raise ValueError(f"{len(members)} members, {len(weights)} weights")
        self.members = nn.ModuleDict(members)
        self.register_buffer("intercept", torch.tensor(intercept, dtype=torch.float64))
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float64))
        # What serving and the evaluate stage ask of a model: who training saw. Any member's training saw the
        # same users and movies (they share the split), except where one refitted on val too: the union.
        first = next(iter(self.members.values()))
        self.register_buffer("user_seen", torch.zeros_like(first.user_seen))
        self.register_buffer("movie_seen", torch.zeros_like(first.movie_seen))
        for member in self.members.values():
            self.user_seen |= member.user_seen
            self.movie_seen |= member.movie_seen

    def ranking_score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> Tensor:
        """The blend before it is clipped to the rating scale (float64): it orders movies as the predictions do,
        without the ties clipping makes at the scale's ends."""
        blended = self.intercept.expand(len(users)).clone()
        for weight, member in zip(self.weights, self.members.values(), strict=True):
            blended += weight * member(users, movies, days).double()
        return blended

    def forward(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> Tensor:
        return self.ranking_score(users, movies, days).clamp(RATING_MIN, RATING_MAX).float()


def blend_checkpoint(member_checkpoints: dict[str, dict[str, Any]], intercept: float, weights: list[float]) -> dict:
    """The checkpoint `load_model` reads back as a Blend: the intercept, a weight per member, each member's own
    checkpoint (plain types, as `torch.load(weights_only=True)` reads them)."""
    return {
        "model_name": BLEND,
        "intercept": float(intercept),
        "weights": dict(zip(member_checkpoints, weights, strict=True)),
        "members": member_checkpoints,
    }
