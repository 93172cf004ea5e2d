"""The baselines: the seed's global mean, and biases alone."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...params import GradientSettings, WeightDecay
from ..base import logit_of_rating, register
from .common import GradientModel, table


class GlobalMeanSettings(GradientSettings):
    """`global_mean`: the notebook's model; only how it is optimised."""


@register
class GlobalMean(GradientModel):
    """The seed's GlobalMeanModel: one logit, the same prediction for every rating."""

    name = "global_mean"
    Settings = GlobalMeanSettings

    def __init__(self, shape, settings):
        super().__init__(shape, settings)
        # Starts at logit 0 (a prediction of 2.75) and learns the mean, as in the seed.
        self.logit = nn.Parameter(torch.zeros(1))

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.logit.expand(users.shape), torch.zeros(users.shape, device=users.device)


class BiasesSettings(GradientSettings):
    """`biases`: global mean + user bias + movie bias."""

    weight_decay: WeightDecay


@register
class Biases(GradientModel):
    """Global mean + user bias + movie bias (Surprise's BaselineOnly, in logit space)."""

    name = "biases"
    Settings = BiasesSettings

    def __init__(self, shape, settings):
        super().__init__(shape, settings)
        self.global_logit = nn.Parameter(torch.tensor([logit_of_rating(shape.train_mean)]))
        self.user_bias = table(shape.n_users, 1)
        self.movie_bias = table(shape.n_movies, 1)

    def bias(self, users: Tensor, movies: Tensor) -> Tensor:
        """Global + user + movie bias logit per rating."""
        return self.global_logit + self.user_bias(users)[:, 0] + self.movie_bias(movies)[:, 0]

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bias = self.bias(users, movies)
        return bias, torch.zeros_like(bias)
