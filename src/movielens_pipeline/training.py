"""Train a rating model with Lightning on a RatingsDataModule: early stopping, best checkpoint, dvclive curves."""

from __future__ import annotations

import contextlib
import io
import math
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytorch_lightning as lightning
import torch
from dvclive import Live
from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from .atomic import atomic_dir, atomic_path, scratch_dir, writing
from .data import RatingsDataModule
from .models import RatingModel, build_model, quiet_lightning
from .params import TrainParams

TIME_TO_ACCURACY_TOLERANCE = 0.01
# What the model's checkpoint keeps of Lightning's (models.load_model reads it).
CHECKPOINT_KEYS = ("epoch", "global_step", "pytorch-lightning_version", "hyper_parameters", "state_dict", "model_name")


class EpochLog(Callback):
    """Log each epoch's train and val MSE to dvclive (step = epoch) and to the console."""

    def __init__(self, live: Live | None = None):
        self.live = live  # None: log to the console only (a DDP process other than the first)
        self.best_epoch = -1
        self.best_val_loss = math.inf
        self.epoch_seconds: list[float] = []  # training time of each epoch, validation excluded
        self.elapsed: list[float] = []  # seconds from the start of fitting to the end of each epoch's validation
        self.val_losses: list[float] = []

    def on_fit_start(self, trainer: lightning.Trainer, module: RatingModel) -> None:
        self.fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer: lightning.Trainer, module: RatingModel) -> None:
        self.epoch_started = time.perf_counter()

    def on_validation_start(self, trainer: lightning.Trainer, module: RatingModel) -> None:
        self.epoch_seconds.append(time.perf_counter() - self.epoch_started)

    def on_train_epoch_end(self, trainer: lightning.Trainer, module: RatingModel) -> None:
        train_loss = float(trainer.callback_metrics["train_loss"])
        val_loss = float(trainer.callback_metrics["val_loss"])
        self.elapsed.append(time.perf_counter() - self.fit_started)
        self.val_losses.append(val_loss)
        if val_loss < self.best_val_loss:
            self.best_epoch, self.best_val_loss = trainer.current_epoch, val_loss
        if self.live is None:
            return
        self.live.step = trainer.current_epoch
        self.live.log_metric("train/loss", train_loss)
        self.live.log_metric("val/loss", val_loss)
        self.live.next_step()
        print(f"epoch {trainer.current_epoch:3d}  train mse {train_loss:.4f}  val mse {val_loss:.4f}", flush=True)

    def seconds_to_accuracy(self, tolerance: float = TIME_TO_ACCURACY_TOLERANCE) -> float:
        """Seconds of fitting until the val RMSE first came within `tolerance` of the best val RMSE."""
        target = math.sqrt(self.best_val_loss) * (1 + tolerance)
        return next(s for s, loss in zip(self.elapsed, self.val_losses, strict=True) if math.sqrt(loss) <= target)


class EarlyStop(Callback):
    """Stop once `patience` epochs in a row have each failed to lower the best val RMSE by `min_improvement` (relative).

    Lightning's EarlyStopping takes an absolute `min_delta` on the monitored value, which means
    a different thing at every error level, and measures it from the last epoch that passed it,
    so a slow creep (0.03 % an epoch at 25 M ratings, each epoch half a minute on 2 cores)
    never stops. Here each epoch must earn its cost. Lightning itself trains on to `min_epochs`.
    """

    def __init__(self, patience: int, min_improvement: float):
        self.patience, self.min_improvement = patience, min_improvement
        self.best_rmse = math.inf
        self.epochs_without_progress = 0

    def on_validation_end(self, trainer: lightning.Trainer, module: RatingModel) -> None:
        val_rmse = math.sqrt(float(trainer.callback_metrics["val_loss"]))
        progress = val_rmse < self.best_rmse * (1 - self.min_improvement)
        self.epochs_without_progress = 0 if progress else self.epochs_without_progress + 1
        self.best_rmse = min(self.best_rmse, val_rmse)
        if self.epochs_without_progress >= self.patience:
            trainer.should_stop = True


def portable_checkpoint(lightning_checkpoint: Path) -> bytes:
    """The bytes of what a trained model needs from Lightning's checkpoint: the weights, hyper-parameters and names.

    Left out: optimiser states (twice the weights' size, and nothing resumes from them) and
    callback states, which hold the scratch folder's random name. The bytes are written via a
    buffer because torch names the archive's inner folder after the file: so the same training
    gives the same checkpoint, byte for byte, and DVC sees an unchanged output.
    """
    full = torch.load(lightning_checkpoint, map_location="cpu", weights_only=True)
    buffer = io.BytesIO()
    torch.save({key: full[key] for key in CHECKPOINT_KEYS}, buffer)
    return buffer.getvalue()


@contextlib.contextmanager
def unfilled_memory() -> Iterator[None]:
    """Within: new tensors are not filled with NaN, which deterministic mode does by default.

    The fill is a debugging aid (it makes reads of memory never written show up); it is not what
    makes results reproducible, and on the CPU it cost a sixth of each step: every temporary
    tensor of the optimiser was written twice.
    """
    before = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = before


def on_accelerator(accelerator: str) -> bool:
    """Whether Lightning will train on a GPU (or Apple's MPS) for `train.accelerator`, as its "auto" decides."""
    if accelerator == "cpu":
        return False
    return accelerator == "gpu" or CUDAAccelerator.is_available() or MPSAccelerator.is_available()


def train(
    data: RatingsDataModule,
    params: TrainParams,
    checkpoint_path: Path,
    live_dir: Path,
    sparse_tables: bool | None = None,
) -> dict:
    """Fit `params.model` on `data`, keep the best-val-loss checkpoint at `checkpoint_path`, log to `live_dir`.
    With `params.refit`, the checkpoint is instead a new model trained on train + val for the best epoch's count.

    Both outputs are written atomically. Under DDP (`train.strategy`) every process calls this;
    the first writes the outputs and returns the summary, the others write nothing and return {}.

    `sparse_tables` None: sparse rows and RowAdam on one CPU process, dense tables and fused Adam on
    an accelerator or under DDP; True or False forces one (the tests run the dense path on the CPU).
    `auto` batch size and learning rate are resolved here, from the number of training ratings,
    and the data module batches by the resolved size; dvclive logs the values used.
    """
    quiet_lightning()
    params = params.resolved(data.tables["train"].height)
    data.batch_size = params.batch_size
    # threads 0: this machine's CPUs, shared among the processes DDP starts on it.
    torch.set_num_threads(params.threads or max(1, len(os.sched_getaffinity(0)) // params.devices))
    if sparse_tables is None:
        # Sparse rows and RowAdam win on one CPU process; dense tables and fused Adam on an accelerator,
        # and under DDP, whose gradient reduction wants dense gradients (NCCL takes no sparse ones).
        sparse_tables = not on_accelerator(params.accelerator) and params.strategy != "ddp"
    lightning.seed_everything(params.seed, workers=True, verbose=False)
    model = build_model(
        params, data.training_data(), data.n_users, data.n_movies, data.train_mean(), sparse_tables=sparse_tables
    )
    data.group_by_movie = model.batches == "movies"
    epoch_log = EpochLog()
    checkpoint = ModelCheckpoint(filename="best", monitor="val_loss", mode="min", save_top_k=1)
    trainer = lightning.Trainer(
        max_epochs=params.max_epochs,
        # Early stopping is ignored before min_epochs, as the seed's wrapper did.
        min_epochs=params.min_epochs,
        callbacks=[EarlyStop(params.patience, params.min_improvement), checkpoint, epoch_log],
        **trainer_options(params),
    )
    # Under DDP every process runs this function; only the first writes the outputs, each atomically.
    with contextlib.ExitStack() as outputs:
        # A full disk is reported by the staging path it hit, which atomic_path then names by the output's.
        checkpoint_staging = checkpoint_path
        if trainer.is_global_zero:
            checkpoint_staging = outputs.enter_context(atomic_path(checkpoint_path))
            live = outputs.enter_context(
                Live(str(outputs.enter_context(atomic_dir(live_dir))), dvcyaml=None, save_dvc_exp=False, report=None)
            )
            live.log_params({"model": params.model, **dict(model.hparams)} | params.model_dump())
            epoch_log.live = live
        # Lightning's own checkpoints go beside the output, on its disk, where the next run clears them
        # if this one is killed. Lightning saves into the first process's folder, from that process alone.
        checkpoint.dirpath = str(outputs.enter_context(scratch_dir(checkpoint_path)))
        started = time.perf_counter()
        with (
            writing(checkpoint_staging, "a checkpoint (Lightning's, in a scratch folder beside it)"),
            unfilled_memory(),
        ):
            trainer.fit(model, datamodule=data)
            best = Path(checkpoint.best_model_path)
            if params.refit:
                best = refit(data, params, epoch_log.best_epoch + 1, sparse_tables, Path(checkpoint.dirpath))
        train_seconds = time.perf_counter() - started
        if not trainer.is_global_zero:
            return {}
        summary = {
            "best_epoch": epoch_log.best_epoch,
            "best_val_mse": epoch_log.best_val_loss,
            "epochs": trainer.current_epoch,
            "train_seconds": round(train_seconds, 3),
            # Under DDP each process trains on its shard; the epoch is the whole training part.
            "ratings_per_second": round(data.tables["train"].height / statistics.median(epoch_log.epoch_seconds)),
            # Time to accuracy: how soon training was nearly as good as it got (1 % above the best val RMSE).
            "seconds_to_1pct_of_best_val_rmse": round(epoch_log.seconds_to_accuracy(), 3),
        }
        if params.refit:
            summary["refit_epochs"] = epoch_log.best_epoch + 1
        with writing(checkpoint_staging, "the best checkpoint"):
            checkpoint_staging.write_bytes(portable_checkpoint(best))
        for name, value in summary.items():
            live.summary[name] = value
    return summary


def refit(data: RatingsDataModule, params: TrainParams, epochs: int, sparse_tables: bool, folder: Path) -> Path:
    """A new model, trained on `data`'s train and val parts together for `epochs` epochs; its checkpoint in `folder`.

    The same seed, batch size and learning rate as the fit that chose `epochs`; no validation.
    """
    both = RatingsDataModule(
        params.batch_size,
        train=pl.concat([data.tables["train"], data.tables["val"]]),
        users=data.users,
        movies=data.movies,
        seed=data.seed,
    )
    lightning.seed_everything(params.seed, workers=True, verbose=False)
    model = build_model(
        params, both.training_data(), both.n_users, both.n_movies, both.train_mean(), sparse_tables=sparse_tables
    )
    both.group_by_movie = model.batches == "movies"
    trainer = lightning.Trainer(
        max_epochs=epochs, min_epochs=epochs, limit_val_batches=0, enable_checkpointing=False, **trainer_options(params)
    )
    trainer.fit(model, datamodule=both)
    path = folder / "refit.ckpt"
    trainer.save_checkpoint(path)  # from the first process alone, under DDP
    return path


def trainer_options(params: TrainParams) -> dict:
    """The Trainer settings every fit shares: devices and strategy, determinism, and no logger or bars."""
    return {
        "accelerator": params.accelerator,
        "devices": params.devices,
        "num_nodes": params.num_nodes,
        "strategy": params.strategy,
        "deterministic": True,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
