"""Train a rating model with Lightning: batch-level tensor slicing, early stopping, best checkpoint."""

from __future__ import annotations

import logging
import math
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytorch_lightning as lightning
import torch
from dvclive import Live
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint

from .models import RatingModel, TrainingData, build_model
from .params import TrainParams

NO_GENRES = "(no genres listed)"  # MovieLens's marker for a movie without genres


class RatingBatches:
    """Batches of (user index, movie index, rating) tensors, cut from the whole table.

    An epoch is one permutation of the row numbers and each batch a slice of it: no
    per-sample `__getitem__` and no collate, which is what makes an epoch fast.
    """

    def __init__(self, ratings: pl.DataFrame, batch_size: int, shuffle: bool, seed: int = 0):
        self.users = torch.from_numpy(ratings["userIdMapped"].to_numpy().astype(np.int64))
        self.movies = torch.from_numpy(ratings["movieIdMapped"].to_numpy().astype(np.int64))
        self.ratings = torch.from_numpy(ratings["rating"].to_numpy().astype(np.float32))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.ratings) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n_rows = len(self.ratings)
        order = torch.randperm(n_rows, generator=self.generator) if self.shuffle else None
        for start in range(0, n_rows, self.batch_size):
            rows = slice(start, start + self.batch_size) if order is None else order[start : start + self.batch_size]
            yield self.users[rows], self.movies[rows], self.ratings[rows]


class EpochLog(Callback):
    """Log each epoch's train and val MSE to dvclive (step = epoch) and to the console."""

    def __init__(self, live: Live):
        self.live = live
        self.best_epoch = -1
        self.best_val_loss = math.inf
        self.epoch_seconds: list[float] = []  # training time of each epoch, validation excluded

    def on_train_epoch_start(self, trainer: lightning.Trainer, module: RatingModel) -> None:
        self.epoch_started = time.perf_counter()

    def on_validation_start(self, trainer: lightning.Trainer, module: RatingModel) -> None:
        self.epoch_seconds.append(time.perf_counter() - self.epoch_started)

    def on_train_epoch_end(self, trainer: lightning.Trainer, module: RatingModel) -> None:
        train_loss = float(trainer.callback_metrics["train_loss"])
        val_loss = float(trainer.callback_metrics["val_loss"])
        if val_loss < self.best_val_loss:
            self.best_epoch, self.best_val_loss = trainer.current_epoch, val_loss
        self.live.step = trainer.current_epoch
        self.live.log_metric("train/loss", train_loss)
        self.live.log_metric("val/loss", val_loss)
        self.live.next_step()
        print(f"epoch {trainer.current_epoch:3d}  train mse {train_loss:.4f}  val mse {val_loss:.4f}", flush=True)


def genre_matrix(movies: pl.DataFrame) -> torch.Tensor:
    """Multi-hot (n_movies, n_genres) float32 genres in movieIdMapped order; no columns if none are known."""
    if "genres" not in movies.columns:
        return torch.zeros(movies.height, 0)
    genres = movies.sort("movieIdMapped")["genres"]
    if genres.dtype == pl.String:
        genres = genres.str.split("|")
    names = sorted(set(genres.explode().drop_nulls().to_list()) - {NO_GENRES})
    matrix = torch.zeros(movies.height, len(names))
    for row, movie_genres in enumerate(genres.to_list()):
        for name in movie_genres or []:
            if name != NO_GENRES:
                matrix[row, names.index(name)] = 1.0
    return matrix


def train(
    train_ratings: pl.DataFrame,
    val_ratings: pl.DataFrame,
    users: pl.DataFrame,
    movies: pl.DataFrame,
    params: TrainParams,
    checkpoint_path: Path,
    live_dir: Path,
) -> dict:
    """Fit `params.model`, keep the best-val-loss checkpoint at `checkpoint_path`, log to `live_dir`."""
    # Lightning's start-up notes (hardware found, product tips) drown the per-epoch lines
    # in `dvc repro` output; warnings and errors still show.
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.13
    torch.set_num_threads(params.threads or len(os.sched_getaffinity(0)))
    lightning.seed_everything(params.seed, workers=True, verbose=False)
    train_batches = RatingBatches(train_ratings, params.batch_size, shuffle=True, seed=params.seed)
    data = TrainingData(train_batches.users, train_batches.movies, genre_matrix(movies))
    model = build_model(params, data, users.height, movies.height, float(train_ratings["rating"].mean()))
    val_batches = RatingBatches(val_ratings, params.batch_size, shuffle=False)
    live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    with live, tempfile.TemporaryDirectory() as scratch:
        live.log_params({"model": params.model, **dict(model.hparams)} | _as_dict(params))
        epoch_log = EpochLog(live)
        checkpoint = ModelCheckpoint(dirpath=scratch, filename="best", monitor="val_loss", mode="min", save_top_k=1)
        trainer = lightning.Trainer(
            max_epochs=params.max_epochs,
            # Early stopping is ignored before min_epochs, as the seed's wrapper did.
            min_epochs=params.min_epochs,
            callbacks=[EarlyStopping(monitor="val_loss", mode="min", patience=params.patience), checkpoint, epoch_log],
            accelerator=params.accelerator,
            devices=1,
            deterministic=True,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=scratch,
        )
        started = time.perf_counter()
        trainer.fit(model, train_batches, val_batches)
        train_seconds = time.perf_counter() - started
        shutil.copyfile(checkpoint.best_model_path, checkpoint_path)
        summary = {
            "best_epoch": epoch_log.best_epoch,
            "best_val_mse": epoch_log.best_val_loss,
            "epochs": trainer.current_epoch,
            "train_seconds": round(train_seconds, 3),
            "ratings_per_second": round(len(train_ratings) / statistics.median(epoch_log.epoch_seconds)),
        }
        for name, value in summary.items():
            live.summary[name] = value
    return summary


def _as_dict(params: TrainParams) -> dict:
    return {key: getattr(params, key) for key in params.__dataclass_fields__}
