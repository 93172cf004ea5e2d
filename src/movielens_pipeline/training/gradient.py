"""The gradient family's path: Lightning fits the model by minibatch gradient steps (devices, DDP, early stopping).

`Fitting` is the one Lightning module: it holds the model (a plain torch module, which serving loads
without Lightning) and its data, takes each training step (the loss, the L2 penalty on the rows the step
looked up, the backward pass, the optimisers' steps) and validates. Two callbacks connect Lightning's
hooks to what both paths share (`progress.py`): the best epoch and early stopping, and each epoch's log.
"""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from collections.abc import Sequence

import pytorch_lightning as lightning
import torch
from pytorch_lightning.callbacks import Callback

from ..data import Part, RatingsDataModule, device_of
from ..errors import stop, stop_point
from ..models import REGISTRY, RatingModel, build_model
from ..params import TrainParams
from .determinism import unfilled_memory
from .optim import table_optimizers, use_sparse_tables
from .outputs import checkpoint_bytes
from .progress import BestEpoch, EpochLog, Fitted, LossTally
from .validation import RankingValidation


class Fitting(lightning.LightningModule):
    """A gradient model and its data as the Trainer fits them.

    Optimisation is manual: each step steps the model's optimisers (`optim.table_optimizers`: RowAdam for sparse
    tables beside Adam, or one Adam). The data module's tensors go to the Trainer's device, and each process takes
    its shard of every batch. The checkpoint is the model's own (its keys not prefixed).
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

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        optimizers, self.row_penalty = table_optimizers(
            self.model, self.model.settings.learning_rate, self.model.table_weight_decays()
        )
        return optimizers

    def training_step(self, batch: Part, batch_idx: int) -> torch.Tensor:
        users, movies, ratings, days = batch
        loss = self.model.loss(users, movies, ratings, days)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(loss + self.row_penalty())
        for optimizer in optimizers:
            optimizer.step()
        # Tallied, not `self.log`ged each step: Lightning's bookkeeping of a logged value costs about a millisecond
        # a step, a sixth of a small-batch step on the CPU.
        self.train_loss.add(loss.detach(), len(ratings))
        return loss

    def on_train_epoch_start(self) -> None:
        self.train_loss = LossTally(self.device)

    def epoch_train_loss(self) -> float:
        """The epoch's mean training loss per rating, over every process's ratings (every process calls it)."""
        loss_sum = self.trainer.strategy.reduce(self.train_loss.total, reduce_op="sum")
        ratings = torch.tensor(self.train_loss.ratings, device=self.device)
        return float(loss_sum / self.trainer.strategy.reduce(ratings, reduce_op="sum"))

    def on_validation_epoch_start(self) -> None:
        self.model.start_validation()

    def validation_step(self, batch: Part, batch_idx: int) -> None:
        users, movies, ratings, days = batch
        # Under DDP each process validates its shard; the mean over processes decides early stopping.
        loss = self.model.loss(users, movies, ratings, days)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(ratings), sync_dist=True)


class WatchValidation(Callback):
    """After each validation: the best epoch so far (`BestEpoch`), and Lightning told to stop when it says so. The
    val MSE is the mean loss of the validation steps; a ranker's val NDCG@k is measured here (`ranking`)."""

    def __init__(self, best: BestEpoch, ranking: RankingValidation | None = None):
        self.best, self.ranking = best, ranking

    def on_validation_end(self, trainer: lightning.Trainer, module: Fitting) -> None:
        if self.ranking is None:
            val_value = float(trainer.callback_metrics["val_loss"])
        else:  # every process measures the whole val part: the same value, the same decision to stop
            val_value = self.ranking(module.model)
        self.best.update(trainer.current_epoch, val_value, module.model)
        if self.best.stop:
            trainer.should_stop = True  # Lightning goes on to min_epochs


class LogEpochs(Callback):
    """Each epoch's train loss, val metric (as `best` last saw it) and timings to the `EpochLog`."""

    def __init__(self, log: EpochLog, best: BestEpoch):
        self.epoch_log, self.best = log, best

    def on_fit_start(self, trainer: lightning.Trainer, module: Fitting) -> None:
        self.epoch_log.fit_started()

    def on_train_epoch_start(self, trainer: lightning.Trainer, module: Fitting) -> None:
        self.epoch_log.epoch_started()

    def on_validation_start(self, trainer: lightning.Trainer, module: Fitting) -> None:
        self.epoch_log.training_ended()

    def on_train_epoch_end(self, trainer: lightning.Trainer, module: Fitting) -> None:
        # After the epoch's validation (Lightning validates at the end of the epoch's last batch).
        self.epoch_log.epoch_ended(trainer.current_epoch, module.epoch_train_loss(), self.best.last)


class GradientPath:
    """Fits a gradient model with `params` through Lightning, logging each epoch to `log`. `sparse_tables` None:
    sparse rows and RowAdam on one CPU process, dense tables and fused Adam on an accelerator or under DDP; True or
    False forces one (the tests run the dense path on the CPU)."""

    def __init__(
        self,
        params: TrainParams,
        log: EpochLog,
        sparse_tables: bool | None = None,
        ranking: RankingValidation | None = None,
    ):
        quiet_lightning()
        if sparse_tables is None:
            sparse_tables = device_of(params.accelerator).type == "cpu" and params.strategy != "ddp"
        self.params = params
        self.choices = {"sparse_tables": sparse_tables}
        self.best = BestEpoch(params.patience, params.min_improvement, maximize=log.metric.maximize)
        self.trainer = new_trainer(params, callbacks=[WatchValidation(self.best, ranking), LogEpochs(log, self.best)])

    @property
    def writes_outputs(self) -> bool:
        """Under DDP every process trains; the first writes the outputs."""
        return self.trainer.is_global_zero

    def settings(self, n_train: int):
        """The model's settings with `auto` batch size and learning rate resolved for `n_train` ratings, once."""
        return self.params.settings.resolved(n_train)

    def planned_epochs(self, settings) -> None:
        return None  # early stopping decides

    def fit(self, settings, data: RatingsDataModule) -> Fitted:
        """A new model fitted on `data`'s train part by the Trainer, early stopping on its val part."""
        with unfilled_memory():
            model = fit(self.trainer, self.params, settings, data, self.choices["sparse_tables"])
        return Fitted(model, self.best, self.trainer.current_epoch)

    @staticmethod
    def refit(
        params: TrainParams, settings, choices: dict, data: RatingsDataModule, threads: int, epochs: int
    ) -> bytes:
        """The checkpoint of a new model trained on `data` (train + val) for `epochs` epochs, without validation."""
        quiet_lightning()
        torch.set_num_threads(threads)
        trainer = new_trainer(params, epochs=epochs, validate=False)
        with unfilled_memory():
            model = fit(trainer, params, settings, data, choices["sparse_tables"])
        return checkpoint_bytes(model, model.state_dict(), epochs)


def fit(
    trainer: lightning.Trainer, params: TrainParams, settings, data: RatingsDataModule, sparse_tables: bool
) -> RatingModel:
    """A new `params.model` with `settings`, seeded by `params.seed`, trained on `data` by `trainer`."""
    lightning.seed_everything(params.seed, workers=True, verbose=False)
    batched = data.batched(settings.batch_size, REGISTRY[params.model].batches)
    model = build_model(params.model, settings, batched.training_data(), batched.shape())
    use_sparse_tables(model, sparse_tables)
    trainer.fit(Fitting(model, batched))
    return model


class StopPoints(Callback):
    """A SIGTERM or SIGINT during training stops it after the batch it came in (`errors.stop_point`), through the
    stage's own handler (`errors.stop`), put back over the one Lightning installs when fitting starts."""

    def on_train_start(self, *args) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)

    def on_train_batch_end(self, *args) -> None:
        stop_point()

    def on_validation_batch_end(self, *args) -> None:
        stop_point()


def quiet_lightning() -> None:
    """Keep Lightning's start-up notes (hardware found, product tips) out of `dvc repro` output.

    They drown the per-epoch lines; warnings and errors still show.
    """
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.13


def new_trainer(
    params: TrainParams, callbacks: Sequence[Callback] = (), epochs: int | None = None, validate: bool = True
) -> lightning.Trainer:
    """A Trainer that fits until the callbacks stop it (within the params' epoch bounds), or, given `epochs`,
    for exactly that many epochs (refit's, which does not validate)."""
    bounds = {"max_epochs": params.max_epochs, "min_epochs": params.min_epochs}
    if epochs is not None:
        bounds = {"max_epochs": epochs, "min_epochs": epochs}
    if not validate:
        bounds["limit_val_batches"] = 0
    return lightning.Trainer(callbacks=[*callbacks, StopPoints()], **bounds, **trainer_options(params))


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
