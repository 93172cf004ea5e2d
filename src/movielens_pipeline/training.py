"""Train a rating model with Lightning on a RatingsDataModule: early stopping, best checkpoint, dvclive curves."""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as lightning
import torch
from dvclive import Live
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint

from .data import RatingsDataModule
from .models import RatingModel, build_model, quiet_lightning
from .params import TrainParams


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


def train(data: RatingsDataModule, params: TrainParams, checkpoint_path: Path, live_dir: Path) -> dict:
    """Fit `params.model` on `data`, keep the best-val-loss checkpoint at `checkpoint_path`, log to `live_dir`."""
    quiet_lightning()
    torch.set_num_threads(params.threads or len(os.sched_getaffinity(0)))
    lightning.seed_everything(params.seed, workers=True, verbose=False)
    model = build_model(params, data.training_data(), data.n_users, data.n_movies, data.train_mean())
    live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    with live, tempfile.TemporaryDirectory() as scratch:
        live.log_params({"model": params.model, **dict(model.hparams)} | params.model_dump())
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
        trainer.fit(model, datamodule=data)
        train_seconds = time.perf_counter() - started
        shutil.copyfile(checkpoint.best_model_path, checkpoint_path)
        summary = {
            "best_epoch": epoch_log.best_epoch,
            "best_val_mse": epoch_log.best_val_loss,
            "epochs": trainer.current_epoch,
            "train_seconds": round(train_seconds, 3),
            "ratings_per_second": round(data.tables["train"].height / statistics.median(epoch_log.epoch_seconds)),
        }
        for name, value in summary.items():
            live.summary[name] = value
    return summary
