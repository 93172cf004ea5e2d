"""What validation measures after each epoch (or sweep): a rating model's val MSE, a ranking model's val NDCG@k.

A rating model's val MSE is its loss on the val ratings, which each path tallies as it goes (Lightning's
validation steps, the sweep loop's pass). A ranking model's scores are not ratings: it is measured as the evaluate
stage measures the ranker on test, each val user's top k among the movies they did not rate in training against
the val movies they liked (`evaluate.liked_movies`, `evaluate.mean_ndcg`), so the epoch kept is the best ranker.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from torch import nn

from ..errors import PipelineError
from ..evaluate import liked_movies, mean_ndcg
from ..params import EvaluateParams
from ..trained import trained_model


@dataclass(frozen=True)
class ValMetric:
    """What validation reports: its name on the console and in the summary (`best_val_<label>`), in dvclive, and
    which way is better."""

    label: str
    live_name: str
    maximize: bool


VAL_MSE = ValMetric("mse", "val/loss", maximize=False)  # val/loss: the loss plot's series, as train/loss


class RankingValidation:
    """Val NDCG@k of a ranking model, with the evaluate section's k, liked rating and users drawn."""

    def __init__(
        self, params: EvaluateParams, val: pl.DataFrame, train: pl.DataFrame, users: pl.DataFrame, movies: pl.DataFrame
    ):
        self.k = params.ranking_k
        self.metric = ValMetric(f"ndcg@{self.k}", f"val/ndcg@{self.k}", maximize=True)
        self.users, self.liked = liked_movies(val, params)
        if not self.users.height:
            raise PipelineError(
                f"the val ratings hold no rating of {params.ranking_relevant_rating} or more "
                "(evaluate.ranking_relevant_rating): a ranking model has nothing to be validated on"
            )
        self.tables = users, movies, train

    def __call__(self, model: nn.Module) -> float:
        """`model`'s mean val NDCG@k."""
        return mean_ndcg(trained_model(model, *self.tables), self.users, self.liked, self.k)
