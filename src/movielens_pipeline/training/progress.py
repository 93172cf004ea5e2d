"""What both fit paths share while a model trains: the mean loss over batches, the best validation so far and
early stopping, and each epoch's line in dvclive and on the console, with its timings.

Plain objects, no Lightning: the sweep path (`sweeps.py`) calls them from its loop, the gradient path's
callbacks (`gradient.py`) from Lightning's hooks. An epoch of a sweep model is one sweep.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
from dvclive import Live
from torch import Tensor, nn

from ..errors import stop_point
from .validation import VAL_MSE, ValMetric

TIME_TO_ACCURACY_TOLERANCE = 0.01


class LossTally:
    """The mean of per-batch mean losses weighted by each batch's ratings, summed on the losses' device (no sync
    per step), as Lightning's logged means are: float32 sum of loss x ratings over the ratings."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.total = torch.zeros((), device=device)
        self.ratings = 0

    def add(self, loss: Tensor, ratings: int) -> None:
        """Add a batch's mean loss over its `ratings` ratings."""
        self.total = self.total + loss * ratings
        self.ratings += ratings

    def mean(self) -> Tensor:
        """The mean loss per rating so far."""
        return self.total / torch.tensor(self.ratings, device=self.total.device)


class BestEpoch:
    """The best validation so far: its epoch, value and weights; and when to stop.

    `stop` turns true (and stays true) once `patience` epochs in a row have each failed to lower
    the best val RMSE by `min_improvement` (relative; with `maximize`, to raise the val metric, NDCG, by
    it). Lightning's EarlyStopping takes an absolute
    `min_delta`, which means a different thing at every error level, and measures it from the last
    epoch that passed it, so a slow creep (0.03 % an epoch at 25 M ratings) never stops. Training
    itself goes on to `train.min_epochs`.

    With `keep_last` (a model that runs its own number of epochs: a sampler), the last epoch is kept
    whatever its val loss: that number is the setting chosen on validation, and a sampler's posterior mean
    only gains from more samples; choosing one of its epochs on val again would fit val's noise, and cut a
    refit's later chains short.
    """

    def __init__(self, patience: int, min_improvement: float, keep_last: bool = False, maximize: bool = False):
        self.patience, self.min_improvement, self.keep_last = patience, min_improvement, keep_last
        self.maximize = maximize
        self.epoch = -1
        self.val_loss = -math.inf if maximize else math.inf  # the best val MSE (or, with `maximize`, metric)
        self.last = math.nan  # the last epoch's
        self.state: dict[str, Tensor] = {}  # the best epoch's weights and buffers, on the CPU
        self.epochs_without_progress = 0
        self.stop = False

    def update(self, epoch: int, val_loss: float, model: nn.Module) -> None:
        """Epoch `epoch` of `model` validated at `val_loss`: keep it if it is the best, and count its progress."""
        self.last = val_loss
        if self.maximize:
            progress = val_loss > self.val_loss * (1 + self.min_improvement)
            better = val_loss > self.val_loss
        else:
            progress = math.sqrt(val_loss) < math.sqrt(self.val_loss) * (1 - self.min_improvement)
            better = val_loss < self.val_loss
        self.epochs_without_progress = 0 if progress else self.epochs_without_progress + 1
        if better or self.keep_last:
            self.epoch, self.val_loss = epoch, val_loss
            self.state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
        if self.epochs_without_progress >= self.patience:
            self.stop = True


class EpochLog:
    """Each epoch's train loss and val metric (`metric`: MSE, or a ranker's NDCG) to dvclive (step = epoch) and the
    console, and how long it took."""

    def __init__(self, metric: ValMetric = VAL_MSE, live: Live | None = None):
        self.metric = metric
        self.live = live  # None: log to the console only (a DDP process other than the first)
        self.epoch_seconds: list[float] = []  # training time of each epoch, validation excluded
        self.elapsed: list[float] = []  # seconds from the start of fitting to the end of each epoch's validation
        self.val_losses: list[float] = []

    def fit_started(self) -> None:
        self.fit_start = time.perf_counter()

    def epoch_started(self) -> None:
        self.epoch_start = time.perf_counter()

    def training_ended(self) -> None:
        """The epoch's training is over; its validation starts."""
        self.epoch_seconds.append(time.perf_counter() - self.epoch_start)

    def epoch_ended(self, epoch: int, train_loss: float, val_loss: float) -> None:
        """Epoch `epoch` is over, validation included: log its train loss and val metric, then stop if a signal
        came (`errors.stop_point`: an epoch of a sweep model is one sweep, and its only stop point)."""
        stop_point()
        self.elapsed.append(time.perf_counter() - self.fit_start)
        self.val_losses.append(val_loss)
        if self.live is None:
            return
        # log_metric appends the epoch's row to the plots at once. Not next_step: it also rewrites metrics.json
        # and builds DVC Studio's payload, rereading every plot row so far, on every step, Studio or not
        # (dvclive 3.x): a fifth of a 300-sweep fit. `Live`'s exit writes the summary once.
        self.live.step = epoch
        self.live.log_metric("train/loss", train_loss)
        self.live.log_metric(self.metric.live_name, val_loss)
        print(f"epoch {epoch:3d}  train loss {train_loss:.4f}  val {self.metric.label} {val_loss:.4f}", flush=True)

    def summary(self, first: Fitted, train_seconds: float, n_ratings: int) -> dict:
        """The first fit's summary: its best epoch and val metric, its epochs, and the timings (`outputs.TIMINGS`)."""
        label = self.metric.label
        return {
            "best_epoch": first.best.epoch,
            f"best_val_{label}": first.best.val_loss,
            "epochs": first.epochs,
            "train_seconds": round(train_seconds, 3),
            # Under DDP each process trains on its shard; the epoch is the whole training part.
            "ratings_per_second": round(n_ratings / statistics.median(self.epoch_seconds)),
            # Time to accuracy: how soon training was nearly as good as it got (1 % from the best val RMSE, NDCG).
            "seconds_to_1pct_of_best_val": round(self.seconds_to_accuracy(first.best.val_loss), 3),
        }

    def chosen_on(self, first: Fitted) -> dict:
        """The val figure the first fit's best epoch was chosen on, as `dvc exp show` compares it: `val/rmse` (the
        root of the val MSE, in the test RMSE's units) or a ranker's `val/ndcg@k`."""
        value = first.best.val_loss
        if self.metric.label == VAL_MSE.label:
            return {"val": {"rmse": math.sqrt(value)}}
        return {"val": {self.metric.label: value}}

    def seconds_to_accuracy(self, best_val_loss: float, tolerance: float = TIME_TO_ACCURACY_TOLERANCE) -> float:
        """Seconds of fitting until the val RMSE (a ranker's metric) first came within `tolerance` of its best."""
        if self.metric.maximize:
            reached = (value >= best_val_loss * (1 - tolerance) for value in self.val_losses)
        else:
            reached = (math.sqrt(loss) <= math.sqrt(best_val_loss) * (1 + tolerance) for loss in self.val_losses)
        return next(seconds for seconds, done in zip(self.elapsed, reached, strict=True) if done)


@dataclass
class Fitted:
    """A first fit: the model as its last epoch left it, the best epoch (and its weights), the epochs run."""

    model: nn.Module
    best: BestEpoch
    epochs: int
