"""Train a rating model with Lightning: one data module, early stopping on val RMSE, the best epoch's weights, refit.

`train` is the train stage: it resolves the model's `auto` settings once, builds the data
module with its final batch size and layout, fits (`fit`, which refit calls again on train
+ val), and writes the checkpoint and dvclive's folder. `Fitting` is the one Lightning
module: it holds the model (a plain torch module, which serving loads without Lightning)
and its data, and hands each step to the model's family. `BestEpoch` is the one place that
watches validation: it keeps the best epoch and its weights and stops training.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import polars as pl
import pytorch_lightning as lightning
import torch
from dvclive import Live
from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator
from pytorch_lightning.callbacks import Callback

from .atomic import atomic_dir, atomic_path, write_json, writing
from .data import DataShape, RatingsDataModule
from .models import REGISTRY, RatingModel, TrainParams, build_model, saved_bytes
from .models.base import Batch
from .optim import use_sparse_tables
from .params import GradientSettings, ParamsError

TIME_TO_ACCURACY_TOLERANCE = 0.01
# The training summary's wall-clock figures, which differ on every run of the same training. They go to
# TIMINGS_FILE in the dvclive folder, which .dvcignore keeps out of the output's hash (dvc.lock) and .gitignore
# out of git: the git-tracked metrics.json holds only what the same params and data reproduce.
TIMINGS = ("train_seconds", "ratings_per_second", "seconds_to_1pct_of_best_val_rmse")
TIMINGS_FILE = "timings.json"


class Fitting(lightning.LightningModule):
    """A rating model and its data as the Trainer fits them: the one Lightning module.

    The model is a plain torch module; each training step is its family's (`RatingModel.training_step`, handed
    this module for logging, the optimisers and the backward pass; optimisation is manual, so a family steps its
    own optimisers, or none), and so are its optimisers. Validation logs the model's loss. The data module's
    tensors go to the Trainer's device, and each process takes its shard of every batch. The checkpoint is the
    model's own (its keys not prefixed): `BestEpoch` and `train` save `fitting.model`.
    """

    def __init__(self, model: RatingModel, data: RatingsDataModule):
        super().__init__()
        self.model, self.data = model, data
        self.automatic_optimization = False

    def setup(self, stage: str) -> None:
        self.data.place(self.trainer.strategy.root_device, self.trainer.global_rank, self.trainer.world_size)
        self.data.setup(stage)

    def train_dataloader(self):
        return self.data.train_dataloader()

    def val_dataloader(self):
        return self.data.val_dataloader()

    def configure_optimizers(self) -> list[torch.optim.Optimizer] | None:
        return self.model.configure_optimizers()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        return self.model.training_step(batch, self)

    def on_train_epoch_start(self) -> None:
        # The epoch's training loss is tallied here, not `self.log`ged each step: Lightning's bookkeeping of a
        # logged value costs about a millisecond a step, a sixth of a small-batch step on the CPU.
        self.train_loss_sum = torch.zeros((), device=self.device)
        self.train_loss_ratings = 0

    def add_train_loss(self, loss: torch.Tensor, ratings: int) -> None:
        """Add a step's mean training loss over its `ratings` ratings to the epoch's tally (on the device: no sync)."""
        self.train_loss_sum = self.train_loss_sum + loss * ratings
        self.train_loss_ratings += ratings

    def epoch_train_loss(self) -> float:
        """The epoch's mean training loss per rating, over every process's ratings (every process calls it)."""
        loss_sum = self.trainer.strategy.reduce(self.train_loss_sum, reduce_op="sum")
        ratings = torch.tensor(self.train_loss_ratings, device=self.device)
        return float(loss_sum / self.trainer.strategy.reduce(ratings, reduce_op="sum"))

    def on_validation_epoch_start(self) -> None:
        self.model.start_validation()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        users, movies, ratings, days = batch
        # Under DDP each process validates its shard; the mean over processes decides early stopping.
        loss = self.model.loss(users, movies, ratings, days)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(ratings), sync_dist=True)


class BestEpoch(Callback):
    """The best validation so far: its epoch, loss and weights; and early stopping.

    Training stops once `patience` epochs in a row have each failed to lower the best val RMSE
    by `min_improvement` (relative). Lightning's EarlyStopping takes an absolute `min_delta`,
    which means a different thing at every error level, and measures it from the last epoch
    that passed it, so a slow creep (0.03 % an epoch at 25 M ratings) never stops. Lightning
    itself trains on to `min_epochs`.

    With `keep_last` (a model that runs its own fixed number of epochs: a sampler), the last epoch is kept
    whatever its val loss: that number is the setting chosen on validation, and a sampler's posterior mean
    only gains from more samples; choosing one of its epochs on val again would fit val's noise, and cut a
    refit's later chains short.
    """

    def __init__(self, patience: int, min_improvement: float, keep_last: bool = False):
        self.patience, self.min_improvement, self.keep_last = patience, min_improvement, keep_last
        self.epoch = -1
        self.val_loss = math.inf
        self.state: dict[str, torch.Tensor] = {}  # the best epoch's weights and buffers, on the CPU
        self.epochs_without_progress = 0

    def on_validation_end(self, trainer: lightning.Trainer, module: Fitting) -> None:
        val_loss = float(trainer.callback_metrics["val_loss"])
        progress = math.sqrt(val_loss) < math.sqrt(self.val_loss) * (1 - self.min_improvement)
        self.epochs_without_progress = 0 if progress else self.epochs_without_progress + 1
        if val_loss < self.val_loss or self.keep_last:
            self.epoch, self.val_loss = trainer.current_epoch, val_loss
            state = module.model.state_dict()
            self.state = {key: value.detach().to("cpu", copy=True) for key, value in state.items()}
        if self.epochs_without_progress >= self.patience:
            trainer.should_stop = True


class EpochLog(Callback):
    """Each epoch's train and val loss to dvclive (step = epoch) and the console, and how long it took."""

    def __init__(self, live: Live | None = None):
        self.live = live  # None: log to the console only (a DDP process other than the first)
        self.epoch_seconds: list[float] = []  # training time of each epoch, validation excluded
        self.elapsed: list[float] = []  # seconds from the start of fitting to the end of each epoch's validation
        self.val_losses: list[float] = []

    def on_fit_start(self, trainer: lightning.Trainer, module: Fitting) -> None:
        self.fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer: lightning.Trainer, module: Fitting) -> None:
        self.epoch_started = time.perf_counter()

    def on_validation_start(self, trainer: lightning.Trainer, module: Fitting) -> None:
        self.epoch_seconds.append(time.perf_counter() - self.epoch_started)

    def on_train_epoch_end(self, trainer: lightning.Trainer, module: Fitting) -> None:
        train_loss = module.epoch_train_loss()
        val_loss = float(trainer.callback_metrics["val_loss"])
        self.elapsed.append(time.perf_counter() - self.fit_started)
        self.val_losses.append(val_loss)
        if self.live is None:
            return
        # log_metric appends the epoch's row to the plots at once. Not next_step: it also rewrites metrics.json
        # and builds DVC Studio's payload, rereading every plot row so far, on every step, Studio or not
        # (dvclive 3.x): a fifth of a 300-sweep fit. `Live`'s exit writes the summary once.
        self.live.step = trainer.current_epoch
        self.live.log_metric("train/loss", train_loss)
        self.live.log_metric("val/loss", val_loss)
        print(f"epoch {trainer.current_epoch:3d}  train mse {train_loss:.4f}  val mse {val_loss:.4f}", flush=True)

    def seconds_to_accuracy(self, best_val_loss: float, tolerance: float = TIME_TO_ACCURACY_TOLERANCE) -> float:
        """Seconds of fitting until the val RMSE first came within `tolerance` of the best val RMSE."""
        target = math.sqrt(best_val_loss) * (1 + tolerance)
        return next(s for s, loss in zip(self.elapsed, self.val_losses, strict=True) if math.sqrt(loss) <= target)


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
) -> dict:
    """Fit `params.model` on the `train` ratings (early stopping on `val`), keep the best val epoch's model at
    `checkpoint_path`, log to `live_dir`. With `params.refit`, the checkpoint is instead a new model trained on
    train + val for the best epoch's count, and `first_fit_path`, if given, receives the best val epoch's model
    (what an ensemble's weights are fitted on: it never saw the val ratings). The returned summary holds the
    timings (`TIMINGS`) too; dvclive's metrics.json does not: they go to `live_dir`/TIMINGS_FILE.

    Both outputs are written atomically. Under DDP (`train.strategy`) every process calls this;
    the first writes the outputs and returns the summary, the others write nothing and return {}.
    `before_writing` may refuse to write the outputs (it raises): the train stage checks that params.yaml
    did not change under it. `sparse_tables` None: sparse rows and RowAdam on one CPU process, dense tables
    and fused Adam on an accelerator or under DDP; True or False forces one (the tests run the dense path
    on the CPU).
    """
    quiet_lightning()
    model_class = REGISTRY[params.model]
    if model_class.batches == "whole" and params.world_size > 1:
        raise ParamsError(
            f"train.devices x num_nodes: got {params.world_size} processes; `{params.model}` is fitted by "
            "closed-form sweeps on one process: set both to 1"
        )
    settings = params.settings
    if isinstance(settings, GradientSettings):
        settings = settings.resolved(train.height)  # `auto` batch size and learning rate, once
    if sparse_tables is None:
        sparse_tables = not on_accelerator(params.accelerator) and params.strategy != "ddp"
    data = RatingsDataModule(
        batch_size=getattr(settings, "batch_size", train.height),
        batches=model_class.batches,
        train=train,
        val=val,
        users=users,
        movies=movies,
        seed=params.seed,
    )
    fixed_epochs = model_class.fixed_epochs(settings)
    alongside = refits_alongside(params, fixed_epochs)
    check_memory(params, settings, data.shape())  # the module is lazy: nothing is built or loaded yet
    # threads 0: this machine's CPUs, shared among the processes that train on it (DDP's, or refit's beside).
    threads = params.threads or max(1, len(os.sched_getaffinity(0)) // (params.devices * (1 + alongside)))
    torch.set_num_threads(threads)
    best, epoch_log = BestEpoch(params.patience, params.min_improvement, keep_last=fixed_epochs is not None), EpochLog()
    trainer = new_trainer(params, callbacks=[best, epoch_log], epochs=fixed_epochs)
    # Under DDP every process runs this function; only the first writes the outputs, each atomically.
    with contextlib.ExitStack() as outputs:
        checkpoint_staging = checkpoint_path
        if trainer.is_global_zero:
            checkpoint_staging = outputs.enter_context(atomic_path(checkpoint_path))
            live = outputs.enter_context(
                Live(str(outputs.enter_context(atomic_dir(live_dir))), dvcyaml=None, save_dvc_exp=False, report=None)
            )
            # The settings as used (`auto` resolved), and which optimiser path trained the tables.
            used = {params.model: settings.model_dump(), "sparse_tables": sparse_tables}
            live.log_params(params.model_dump(exclude=set(REGISTRY)) | used)
            epoch_log.live = live
        started = time.perf_counter()
        with contextlib.ExitStack() as refitting_beside, unfilled_memory():
            if alongside:  # a spawned process, not a fork: this one already runs torch's thread pools
                pool = refitting_beside.enter_context(multiprocessing.get_context("spawn").Pool(1))
                # The pool pickles its arguments while the first fit runs: a module of its own, which nothing here
                # changes meanwhile.
                refit_args = (params, settings, data.with_val_in_training(), sparse_tables, fixed_epochs, threads)
                refitting = pool.apply_async(refit, refit_args)
            first_fit = fit(trainer, params, settings, data, sparse_tables)
            if alongside:
                refitted = refitting.get()  # leaving the block ends the process, on an error too
            elif params.refit:
                refitted = refit(params, settings, data.with_val_in_training(), sparse_tables, best.epoch + 1, threads)
        train_seconds = time.perf_counter() - started
        if not trainer.is_global_zero:
            return {}
        summary = {
            "best_epoch": best.epoch,
            "best_val_mse": best.val_loss,
            "epochs": trainer.current_epoch,
            "train_seconds": round(train_seconds, 3),
            # Under DDP each process trains on its shard; the epoch is the whole training part.
            "ratings_per_second": round(train.height / statistics.median(epoch_log.epoch_seconds)),
            # Time to accuracy: how soon training was nearly as good as it got (1 % above the best val RMSE).
            "seconds_to_1pct_of_best_val_rmse": round(epoch_log.seconds_to_accuracy(best.val_loss), 3),
        }
        if params.refit:
            summary["refit_epochs"] = best.epoch + 1
        before_writing()
        with writing(checkpoint_staging, "the best checkpoint"):
            checkpoint = refitted if params.refit else checkpoint_bytes(first_fit, best.state, best.epoch + 1)
            checkpoint_staging.write_bytes(checkpoint)
        if first_fit_path is not None:
            with atomic_path(first_fit_path) as first_fit_staging, writing(first_fit_staging, "the first fit"):
                # The first fit's own model: a refit's may hold tables sized by train + val (svdpp's rated movies).
                first_fit_staging.write_bytes(checkpoint_bytes(first_fit, best.state, best.epoch + 1))
        for name, value in summary.items():
            if name not in TIMINGS:
                live.summary[name] = value
        timings = {name: summary[name] for name in TIMINGS}
        write_json(timings, Path(live.dir) / TIMINGS_FILE, "the training timings", indent=4)
    return summary


def quiet_lightning() -> None:
    """Keep Lightning's start-up notes (hardware found, product tips) out of `dvc repro` output.

    They drown the per-epoch lines; warnings and errors still show.
    """
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.13
    # A model fitted by closed-form sweeps has no optimiser, by design.
    warnings.filterwarnings("ignore", message=r".*configure_optimizers` returned `None`")


def check_memory(params: TrainParams, settings, shape: DataShape, memory_bytes: int | None = None) -> None:
    """Refuse a model whose tables would not fit in this machine's memory (`memory_bytes`, physical memory by
    default), before any is built: one line naming the setting that sizes them most, the estimate and the memory.

    The estimate is `RatingModel.training_bytes` (weights and buffers, optimiser state, the best epoch's
    copy) for each of the processes that train on this machine: `train.devices`, or two when refit trains beside the
    first fit (`refits_alongside`)."""
    memory_bytes = physical_memory() if memory_bytes is None else memory_bytes
    model_class = REGISTRY[params.model]
    alongside = refits_alongside(params, model_class.fixed_epochs(settings))
    needed = params.devices * (1 + alongside) * model_class.training_bytes(shape, settings)
    if memory_bytes is None or needed <= memory_bytes:
        return
    processes = f" in each of {params.devices} processes (train.devices)" if params.devices > 1 else ""
    processes = " in each of 2 processes (refit trains beside the first fit)" if alongside else processes
    figure = (
        f"training `{params.model}` on {shape.n_users:,} users and {shape.n_movies:,} movies would hold about "
        f"{needed / 2**30:,.1f} GiB (weights, optimiser state, the best epoch's copy{processes}), more than this "
        f"machine's {memory_bytes / 2**30:,.1f} GiB of memory"
    )
    key = largest_size_setting(model_class, settings, shape)
    if key is None:  # no setting sizes the tables: the data does
        raise ParamsError(f"train.model: got {params.model!r}; {figure}: train it on fewer users and movies")
    raise ParamsError(f"train.{params.model}.{key}: got {getattr(settings, key)}; {figure}: lower it")


def largest_size_setting(model_class: type[RatingModel], settings, shape: DataShape) -> str | None:
    """The integer setting of `model_class` whose value sizes its tables most (the one whose lowering to 1 frees
    the most bytes), None when no setting changes their size."""
    full = model_class.training_bytes(shape, settings)
    freed = {
        key: full - model_class.training_bytes(shape, settings.model_copy(update={key: 1}))
        for key, value in settings.model_dump().items()
        if type(value) is int and value > 1
    }
    key = max(freed, key=freed.__getitem__, default=None)
    return key if key is not None and freed[key] > 0 else None


def physical_memory() -> int | None:
    """This machine's physical memory in bytes; None where the system does not say."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or not this name
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def fit(
    trainer: lightning.Trainer, params: TrainParams, settings, data: RatingsDataModule, sparse_tables: bool
) -> RatingModel:
    """A new `params.model` with `settings`, seeded by `params.seed`, trained on `data` by `trainer`."""
    lightning.seed_everything(params.seed, workers=True, verbose=False)
    model = build_model(params.model, settings, data.training_data(), data.shape())
    use_sparse_tables(model, sparse_tables)
    trainer.fit(Fitting(model, data))
    return model


def refits_alongside(params: TrainParams, fixed_epochs: int | None) -> bool:
    """Whether refit trains in a second process while the first fit trains: when the model fixes its epochs and
    sweeps more than once (a sampler), so that refit's count is known before the first fit ends, on one CPU
    process. A sweep's batched small solves gain little from a second thread (`bayes_mf`'s: 123 ms on one, 105 ms
    on two), so two fits side by side, each on half the CPUs, finish sooner than one after the other. A one-pass
    fit (`item_knn`'s: large matrix products, which do use every thread) is over before the second process has
    imported torch and Lightning (5-7 s)."""
    one_process = params.world_size == 1 and not on_accelerator(params.accelerator)
    return params.refit and fixed_epochs is not None and fixed_epochs > 1 and one_process


def refit(
    params: TrainParams, settings, data: RatingsDataModule, sparse_tables: bool, epochs: int, threads: int
) -> bytes:
    """The checkpoint of a new model trained on `data` (train + val: `RatingsDataModule.with_val_in_training`) for
    `epochs` epochs, without validation, on `threads` CPU threads: refit's, in `train`'s process or in one beside it."""
    quiet_lightning()
    torch.set_num_threads(threads)
    with unfilled_memory():
        model = fit(new_trainer(params, epochs=epochs, validate=False), params, settings, data, sparse_tables)
    return checkpoint_bytes(model, model.state_dict(), epochs)


def new_trainer(
    params: TrainParams, callbacks: Sequence[Callback] = (), epochs: int | None = None, validate: bool = True
) -> lightning.Trainer:
    """A Trainer that fits until the callbacks stop it (within the params' epoch bounds), or, given `epochs`,
    for exactly that many epochs (a sampler's count, or refit's, which does not validate)."""
    bounds = {"max_epochs": params.max_epochs, "min_epochs": params.min_epochs}
    if epochs is not None:
        bounds = {"max_epochs": epochs, "min_epochs": epochs}
    if not validate:
        bounds["limit_val_batches"] = 0
    return lightning.Trainer(callbacks=list(callbacks), **bounds, **trainer_options(params))


def checkpoint_bytes(model: RatingModel, state: dict[str, torch.Tensor], epochs: int) -> bytes:
    """The checkpoint of `model` with the weights `state`, trained for `epochs` epochs: what `models.load_model` reads.

    Optimiser states are left out (twice the weights' size, and nothing resumes from them)."""
    return saved_bytes(model.checkpoint() | {"state_dict": state, "epochs": epochs})


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


def trainer_options(params: TrainParams) -> dict:
    """The Trainer settings every fit shares: devices and strategy, determinism, and no logger, bars or checkpoints."""
    return {
        "accelerator": params.accelerator,
        "devices": params.devices,
        "num_nodes": params.num_nodes,
        "strategy": params.strategy,
        "deterministic": True,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
