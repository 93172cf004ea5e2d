"""Train a rating model: resolve its settings, fit it by its family's path, refit, write the outputs.

The model's family (`RatingModel.family`) picks the path: `gradient.py` fits by minibatch gradient
steps through Lightning (devices, DDP, early stopping); `sweeps.py` runs the model's own closed-form
sweeps in a plain loop. Both log each epoch (or sweep) to dvclive under the same names and keep the
best validation epoch (`progress.py`): the best val MSE, or a ranking model's best val NDCG@k (`validation.py`).
Around them: the memory check (`memory.py`), how many processes and threads train and where refit runs
(`processes.py`), the outputs (`outputs.py`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from ..data import RatingsDataModule, device_of
from ..errors import deferred_stops
from ..models import REGISTRY
from ..params import EvaluateParams, TrainParams
from .memory import check_memory
from .outputs import TIMINGS, TIMINGS_FILE, VAL_FILE, Outputs, checkpoint_bytes
from .processes import processes, refits_beside, refitting, threads_per_process
from .progress import EpochLog
from .validation import VAL_MSE, RankingValidation

__all__ = ["TIMINGS", "TIMINGS_FILE", "VAL_FILE", "train"]


def train(
    params: TrainParams,
    train: pl.DataFrame,
    val: pl.DataFrame,
    users: pl.DataFrame,
    movies: pl.DataFrame,
    checkpoint_path: Path,
    live_dir: Path,
    sparse_tables: bool | None = None,
    before_writing: Callable[[], None] = lambda: None,
    first_fit_path: Path | None = None,
    ranking_params: EvaluateParams | None = None,
) -> dict:
    """Fit `params.model` on the `train` ratings (its best epoch chosen on `val`) and write its checkpoint to
    `checkpoint_path`, its curves and summary to `live_dir`. With `params.refit`, the checkpoint is a new model
    trained on train + val for the best epoch's count, and `first_fit_path`, if given, receives the first fit's
    (what an ensemble's weights are fitted on: it never saw val). Returns the summary, timings (`TIMINGS`)
    included; they go to `live_dir`/TIMINGS_FILE, not to dvclive's metrics.json.

    Both outputs are written atomically. Under DDP every process calls this; the first writes the outputs and
    returns the summary, the others return {}. `before_writing` may refuse to write (it raises): the train
    stage checks that params.yaml did not change under it. `sparse_tables`: see `gradient.GradientPath`.

    A ranking model (`RatingModel.task`, params.yaml's `rank`) is validated on val NDCG@k as `ranking_params` (the
    evaluate section) defines it, which it then requires; a rating model on val MSE.
    """
    ranking = None
    if REGISTRY[params.model].task == "ranking":
        if ranking_params is None:
            raise ValueError(f"{params.model} ranks: train() needs the ranking_params it is validated with")
        ranking = RankingValidation(ranking_params, val, train, users, movies)
    log = EpochLog(VAL_MSE if ranking is None else ranking.metric)
    path = family_path(REGISTRY[params.model].family)(params, log, sparse_tables, ranking)
    settings = path.settings(train.height)
    data = RatingsDataModule(train=train, val=val, users=users, movies=movies, seed=params.seed)
    planned = path.planned_epochs(settings)
    beside = refits_beside(params, planned, device_of(params.accelerator))
    check_memory(params, settings, data.shape(), processes(params, beside))  # nothing built or loaded yet
    threads = threads_per_process(params, beside)
    torch.set_num_threads(threads)
    refit_data = data.with_val_in_training() if params.refit else None  # made only for a refit to train on
    refit_args = (params, settings, path.choices, refit_data, threads)
    opened = (
        Outputs.open(checkpoint_path, live_dir, first_fit_path) if path.writes_outputs else contextlib.nullcontext()
    )
    with opened as outputs:  # None in a DDP process other than the first
        if outputs is not None:
            # The settings as used (`auto` resolved), and what the path chose (which optimiser trained the tables).
            outputs.live.log_params(
                params.model_dump(exclude=set(REGISTRY)) | {params.model: settings.model_dump()} | path.choices
            )
            log.live = outputs.live
        started = time.perf_counter()
        # A signal stops training after a batch or an epoch (errors.deferred_stops says why).
        with deferred_stops(), refitting(path.refit, refit_args, planned, beside) as refit:
            first = path.fit(settings, data)  # each path's fit sets its own kernels
            refitted = refit(first.best.epoch + 1) if params.refit else None
        train_seconds = time.perf_counter() - started
        if outputs is None:
            return {}
        summary = log.summary(first, train_seconds, train.height) | (
            {"refit_epochs": first.best.epoch + 1} if params.refit else {}
        )
        before_writing()
        first_fit = None
        if refitted is None or first_fit_path is not None:
            # The first fit's own model: a refit's may hold tables sized by train + val (svdpp's rated movies).
            first_fit = checkpoint_bytes(first.model, first.best.state, first.best.epoch + 1)
        outputs.write(refitted or first_fit, first_fit, summary, log.chosen_on(first))
    return summary


def family_path(family: str) -> type:
    """The fit path of a model family. Imported here: the gradient path imports Lightning, seconds the sweep path
    does not pay."""
    if family == "sweep":
        from .sweeps import SweepPath

        return SweepPath
    from .gradient import GradientPath

    return GradientPath
