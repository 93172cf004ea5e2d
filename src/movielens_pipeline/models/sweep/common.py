"""The sweep family's contract: a model fitted by closed-form sweeps over users and movies, with no optimiser.

The model owns its fit: `sweeps` runs one sweep at a time, each updating every parameter from the training
ratings (which the model keeps beside it, not in its checkpoint), and yields the training MSE after it. How many
sweeps it runs is the model's to say (`planned_sweeps`): a fixed number (a sampler's chains, a one-pass fit),
or as many as validation keeps improving (`train.max_epochs` at most). `training/sweeps.py` is the plain loop
that runs them. The output is linear.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ...data import DataShape, TrainingData
from ...params import ModelSettings
from ..base import RatingModel
from ..sums import fixed_order_sum

# Training ratings predicted at once for the training MSE: bounds the temporaries of a prediction that gathers
# many values per rating (item_knn's `candidates`).
PREDICTION_CHUNK = 65_536


class SweepModel(RatingModel):
    """A model that sweeps: `sweeps` yields the training MSE after each sweep; `planned_sweeps` says how many."""

    family = "sweep"
    output = "linear"

    def __init__(self, shape: DataShape, settings: ModelSettings):
        super().__init__(shape, settings)
        for name in ("train_users", "train_movies", "train_ratings"):
            self.register_buffer(name, torch.zeros(0), persistent=False)

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        self.train_users, self.train_movies, self.train_ratings = data.users, data.movies, data.ratings

    @classmethod
    def planned_sweeps(cls, settings: ModelSettings) -> int | None:
        """How many sweeps the model runs with `settings`, all of them kept (the last one's model is the fit);
        None: sweeps until validation stops improving, the best one kept (early stopping)."""
        return None

    def sweeps(self) -> Iterator[Tensor]:
        """The sweeps, one at a time (endless for a model that stops on validation): each yields the training MSE
        after it, the model's parameters then being that sweep's."""
        raise NotImplementedError

    def training_mse(self) -> Tensor:
        """The mean squared error of the (unclipped) predictions of the training ratings, PREDICTION_CHUNK at a
        time (a prediction may gather many values: item_knn's look at `candidates` movies each)."""
        squared_errors = torch.zeros((), dtype=torch.float64, device=self.device)
        for first in range(0, len(self.train_ratings), PREDICTION_CHUNK):
            chunk = slice(first, first + PREDICTION_CHUNK)
            bias, interaction = self.score(self.train_users[chunk], self.train_movies[chunk])
            squared_errors += fixed_order_sum((self.train_ratings[chunk] - bias - interaction).double().square())
        return (squared_errors / len(self.train_ratings)).float()
