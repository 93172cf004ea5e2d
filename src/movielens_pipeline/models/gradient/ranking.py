"""A model trained to rank rather than to predict ratings: BPR on implicit feedback."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...params import EmbeddingDim, GradientSettings, WeightDecay
from ..base import factor_std, register
from .common import GradientModel, table


class BPRSettings(GradientSettings):
    """`bpr`: movie bias + user . movie factors, trained with the BPR loss (its L2 chosen on val NDCG@10)."""

    embedding_dim: EmbeddingDim
    weight_decay: WeightDecay


@register
class BPR(GradientModel):
    """Ranking by implicit feedback: a movie bias + user . movie factors, trained with the BPR loss.

    Every training rating is a positive; each is paired with a movie drawn at random (a negative:
    usually one the user never rated) and the loss, -log sigmoid(score(pos) - score(neg)), asks
    the rated one to rank higher. Scores order movies for a user; the predicted "ratings" (the
    scores through the rating-scale sigmoid) are not calibrated, so its RMSE means nothing.
    """

    name = "bpr"
    task = "ranking"
    Settings = BPRSettings

    def __init__(self, shape, settings):
        super().__init__(shape, settings)
        dim = settings.embedding_dim
        self.movie_bias = table(shape.n_movies, 1)
        self.user_factors = table(shape.n_users, dim, factor_std(dim))
        self.movie_factors = table(shape.n_movies, dim, factor_std(dim))

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.movie_bias(movies)[:, 0], (self.user_factors(users) * self.movie_factors(movies)).sum(dim=1)

    def start_validation(self) -> None:
        # The same negatives at every validation: the val loss then moves only with the model.
        self.validation_negatives = torch.Generator(device=self.device).manual_seed(0)

    def loss(self, users: Tensor, movies: Tensor, ratings: Tensor, days: Tensor) -> Tensor:
        """The BPR loss of each rated movie against one random movie (in training from torch's seeded RNG)."""
        generator = None if self.training else self.validation_negatives
        negatives = torch.randint(0, self.shape.n_movies, movies.shape, device=movies.device, generator=generator)
        both = self.ranking_score(users.repeat(2), torch.cat([movies, negatives]))
        positive, negative = both.split(len(movies))
        return -F.logsigmoid(positive - negative).mean()
