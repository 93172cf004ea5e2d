"""The sweep family's path: a plain loop over the model's own sweeps, no Lightning.

The model says what one sweep does and how many it plans (`SweepModel.sweeps`, `planned_sweeps`);
this loop runs them, validates after each (val MSE, or a ranker's val NDCG: the same names in dvclive as the
gradient path's epochs), keeps the best sweep and stops where the model leaves that to validation, or keeps
the last where it plans its own number. One process, on the CPU or one GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import torch

from ..data import RatingsDataModule, device_of
from ..errors import stop_point
from ..models import REGISTRY, RatingModel, build_model
from ..params import ParamsError, TrainParams
from .determinism import deterministic, seed_everything, unfilled_memory
from .outputs import checkpoint_bytes
from .progress import BestEpoch, EpochLog, Fitted, LossTally
from .validation import RankingValidation


class SweepPath:
    """Fits a sweep model with `params`, logging each sweep to `log`."""

    writes_outputs = True  # one process
    choices: dict = {}  # nothing chosen beyond the params

    def __init__(
        self,
        params: TrainParams,
        log: EpochLog,
        sparse_tables: bool | None = None,
        ranking: RankingValidation | None = None,
    ):
        if params.world_size > 1:
            raise ParamsError(
                f"{params.name}.devices x num_nodes: got {params.world_size} processes; `{params.model}` is fitted by "
                "closed-form sweeps on one process: set both to 1"
            )
        self.params, self.log, self.ranking = params, log, ranking
        self.device = device_of(params.accelerator)

    def settings(self, n_train: int):
        """The model's settings as they train (a sweep model has nothing to resolve)."""
        return self.params.settings

    def planned_epochs(self, settings) -> int | None:
        return REGISTRY[self.params.model].planned_sweeps(settings)

    def fit(self, settings, data: RatingsDataModule) -> Fitted:
        """A new model fitted on `data`'s train part, validated on its val part after each sweep."""
        params, log = self.params, self.log
        planned = self.planned_epochs(settings)
        best = BestEpoch(
            params.patience, params.min_improvement, keep_last=planned is not None, maximize=log.metric.maximize
        )
        validate = self.ranking or val_mse(data, self.device)
        n_train, limit = len(data.part("train")[0]), planned or params.max_epochs
        with deterministic(self.device), unfilled_memory(), torch.no_grad():
            model = new_model(params, settings, data, self.device)
            sweeps = model.sweeps()
            log.fit_started()
            for sweep in range(limit):
                log.epoch_started()
                train_mse = next(sweeps)
                log.training_ended()
                # Tallied as the gradient path's losses are, in float32 (x ratings / ratings): a sweep model's
                # curves and best val MSE are the numbers it had when Lightning drove it, to the bit.
                train_loss = LossTally(self.device)
                train_loss.add(train_mse, n_train)
                val_value = validate(model)
                log.epoch_ended(sweep, float(train_loss.mean()), val_value)
                best.update(sweep, val_value, model)
                if planned is None and best.stop and sweep + 1 >= params.min_epochs:
                    break
        return Fitted(model, best, sweep + 1)

    @staticmethod
    def refit(
        params: TrainParams, settings, choices: dict, data: RatingsDataModule, threads: int, epochs: int
    ) -> bytes:
        """The checkpoint of a new model swept `epochs` times on `data` (train + val), without validation, on
        `threads` CPU threads: in `train`'s process or in one beside it (`processes.refitting`)."""
        torch.set_num_threads(threads)
        device = device_of(params.accelerator)
        with deterministic(device), unfilled_memory(), torch.no_grad():
            model = new_model(params, settings, data, device)
            for _ in islice(model.sweeps(), epochs):  # no validation: val is in the training data
                stop_point()  # a refit's only stop point, as epoch_ended is the first fit's
        return checkpoint_bytes(model, model.state_dict(), epochs)


def val_mse(data: RatingsDataModule, device: torch.device) -> Callable[[RatingModel], float]:
    """A rating model's validation: its loss on `data`'s val ratings (moved to `device` once), tallied as the
    gradient path tallies it."""
    users, movies, ratings, days = (column.to(device) for column in data.part("val"))

    def validate(model: RatingModel) -> float:
        val_loss = LossTally(device)
        val_loss.add(model.loss(users, movies, ratings, days), len(ratings))
        return float(val_loss.mean())

    return validate


def new_model(params: TrainParams, settings, data: RatingsDataModule, device: torch.device) -> RatingModel:
    """A new `params.model` with `settings`, seeded by `params.seed`, having seen `data`'s training ratings."""
    seed_everything(params.seed)
    return build_model(params.model, settings, data.training_data(), data.shape()).to(device)
