"""The contract every rating model shares, and the registry that names each model once.

A model is a `RatingModel`: it registers its name and its settings (a section of
`params.yaml`'s `train`) with `@register`, creates its parameters, and returns from `score`
a bias and an interaction per rating, which its output form (`output`) turns into a rating:
a sigmoid over the sum, scaled to the rating scale (the seed's form), or the sum clipped to
it. What is common lives here: cold starts (a user or movie training never saw gets the
bias alone), the loss, predictions, the checkpoint's contents. How a model is fitted is its
family's: `GradientModel` (minibatch gradient steps) below, or `SweepModel` (closed-form
sweeps, one per epoch).

A model is a plain torch module: serving (`trained.py`, the `movielens` command) loads and
scores it without importing Lightning, whose import costs seconds. Training wraps it in
Lightning's module (`training.Fitting`), which hands each family's `training_step` what only
Lightning has (`Fit`: the training loss's tally, the optimisers, the backward pass, the epoch).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import DataShape, TrainingData
from ..optim import table_optimizers
from ..params import ModelSettings
from ..schema import RATING_MAX, RATING_MIN

# Training ratings a sweep model predicts at once for its training MSE: bounds the temporaries of a prediction
# that gathers many values per rating (item_knn's `candidates`).
PREDICTION_CHUNK = 65_536

REGISTRY: dict[str, type[RatingModel]] = {}
Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # user index, movie index, rating, day: one row per rating


def register(model: type[RatingModel]) -> type[RatingModel]:
    """Class decorator: make `model` trainable as `train.model: <model.name>`, with `train.<name>` its settings."""
    if model.name in REGISTRY:
        raise ValueError(f"two models are named {model.name!r}")
    REGISTRY[model.name] = model
    return model


class Fit(Protocol):
    """What a family's `training_step` asks of the Lightning module that trains it (`training.Fitting`)."""

    current_epoch: int

    def add_train_loss(self, loss: Tensor, ratings: int) -> None: ...

    def optimizers(self) -> Any: ...

    def manual_backward(self, loss: Tensor) -> None: ...


class RatingModel(nn.Module):
    """Shared contract; a model sets `name`, `Settings`, creates parameters and defines `score`."""

    name: ClassVar[str]
    Settings: ClassVar[type[ModelSettings]]
    # The training batches the model wants from the data module: any ratings, ratings grouped by movie, or
    # all of them in one batch, in row order (a model that sweeps over its own copy of the ratings).
    batches: ClassVar[Literal["ratings", "movies", "whole"]] = "ratings"
    # How bias + interaction becomes a rating: the rating-scale sigmoid, or the sum clipped to the scale.
    output: ClassVar[Literal["sigmoid", "linear"]] = "sigmoid"
    # Tensors the size of each parameter that the model's optimiser keeps while training (Adam: two moments).
    optimizer_state_copies: ClassVar[int] = 0

    def __init__(self, shape: DataShape, settings: ModelSettings):
        super().__init__()
        self.shape, self.settings = shape, settings
        # What rebuilds the model, in plain types only: the checkpoint is read back with torch.load(weights_only=True).
        self.hyper_parameters = {"shape": asdict(shape), "settings": settings.model_dump()}
        # Users and movies with training ratings: the others get the bias-only prediction.
        self.register_buffer("user_seen", torch.zeros(shape.n_users, dtype=torch.bool))
        self.register_buffer("movie_seen", torch.zeros(shape.n_movies, dtype=torch.bool))

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are."""
        return self.user_seen.device

    def remember(self, data: TrainingData) -> None:
        """Record, before training, what the model needs from the training data (in buffers)."""
        self.user_seen[data.users] = True
        self.movie_seen[data.movies] = True

    def score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per rating: the bias and the interaction, before the output form."""
        raise NotImplementedError

    def ranking_score(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> Tensor:
        """Per rating, bias + interaction, the interaction only where training saw both the user and the movie.
        It orders movies as the predictions do."""
        bias, interaction = self.score(users, movies, days)
        known = self.user_seen[users] & self.movie_seen[movies]
        return bias + torch.where(known, interaction, torch.zeros_like(interaction))

    def forward(self, users: Tensor, movies: Tensor, days: Tensor | None = None) -> Tensor:
        score = self.ranking_score(users, movies, days)
        if self.output == "linear":
            return score.clamp(RATING_MIN, RATING_MAX)
        return rating_of_logit(score)

    def loss(self, users: Tensor, movies: Tensor, ratings: Tensor, days: Tensor) -> Tensor:
        """What training minimises and validation reports: the squared error of the predicted ratings."""
        return F.mse_loss(self(users, movies, days), ratings)

    def training_step(self, batch: Batch, fit: Fit) -> Tensor | None:
        """One training step on `batch`, the family's fit; `fit` tallies its training loss and steps the optimisers."""
        raise NotImplementedError

    def configure_optimizers(self) -> list[torch.optim.Optimizer] | None:
        """The optimisers `training_step` steps (through `fit.optimizers()`); None: none."""
        return None

    def start_validation(self) -> None:
        """Called before each validation pass (which calls `loss` in eval mode)."""

    @classmethod
    def checkpoint_settings(cls, saved: dict) -> dict:
        """The settings a checkpoint saved, completed with what a setting added since then meant before it."""
        return saved

    @classmethod
    def fixed_epochs(cls, settings: ModelSettings) -> int | None:
        """How many epochs the model trains, if it decides that itself (a sampler); None: early stopping decides."""
        return None

    @classmethod
    def training_bytes(cls, shape: DataShape, settings: ModelSettings) -> int:
        """Bytes one training process holds for this model's tables, without allocating them: the model is built
        on the meta device (shapes, no storage), so every parameter and buffer it creates is counted, whatever
        the model. Its parameters and buffers, the optimiser's state per parameter, and the best epoch's copy
        of the weights (`training.BestEpoch`); not the gradients, the data or the batches' temporaries."""
        with torch.device("meta"):
            model = cls(shape, settings)
        parameters = sum(_nbytes(parameter) for parameter in model.parameters())
        buffers = sum(_nbytes(buffer) for buffer in model.buffers())
        best_copy = sum(_nbytes(value) for value in model.state_dict().values())
        return parameters * (1 + cls.optimizer_state_copies) + buffers + best_copy

    def checkpoint(self) -> dict[str, Any]:
        """What a trained model's checkpoint holds: the name, what rebuilds it, and the weights (plain types)."""
        hyper_parameters = dict(self.hyper_parameters)
        return {"model_name": self.name, "hyper_parameters": hyper_parameters, "state_dict": self.state_dict()}


class GradientModel(RatingModel):
    """A model fitted by minibatch gradient steps on its loss, with Adam and the L2 penalty on the rows each
    step looks up. Whether the per-user and per-movie tables get sparse or dense gradients is training's
    choice (`optim.use_sparse_tables`); the model only creates them with `table`."""

    optimizer_state_copies = 2  # Adam's (and RowAdam's) first and second moments

    def __init__(self, shape: DataShape, settings: ModelSettings):
        super().__init__(shape, settings)
        # Sparse tables have their own optimiser beside Adam for the rest: each step steps both (Lightning's
        # manual optimisation; `training.Fitting`).
        self.row_penalty = None  # set with the optimisers: the dense tables' L2 as a loss term

    def training_step(self, batch: Batch, fit: Fit) -> Tensor:
        users, movies, ratings, days = batch
        loss = self.loss(users, movies, ratings, days)
        optimizers = fit.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for optimizer in optimizers:
            optimizer.zero_grad()
        fit.manual_backward(loss + self.row_penalty())
        for optimizer in optimizers:
            optimizer.step()
        fit.add_train_loss(loss.detach(), len(ratings))
        return loss

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # global_mean has no tables, and no weight_decay to set.
        weight_decay = getattr(self.settings, "weight_decay", 0.0)
        optimizers, self.row_penalty = table_optimizers(
            self, self.settings.learning_rate, weight_decay, self.table_weight_decays()
        )
        return optimizers

    def table_weight_decays(self) -> dict[nn.Module, float]:
        """Tables whose L2 penalty is not the model's `weight_decay`, with their own."""
        return {}


class SweepModel(RatingModel):
    """A model fitted by closed-form sweeps over users and movies, one per epoch, with no optimiser: `sweep`
    updates every parameter from the training ratings, which the model keeps beside it (not in its
    checkpoint), and returns the training MSE. Its output is linear."""

    batches = "whole"
    output = "linear"

    def __init__(self, shape: DataShape, settings: ModelSettings):
        super().__init__(shape, settings)
        for name in ("train_users", "train_movies", "train_ratings"):
            self.register_buffer(name, torch.zeros(0), persistent=False)

    def remember(self, data: TrainingData) -> None:
        super().remember(data)
        self.train_users, self.train_movies, self.train_ratings = data.users, data.movies, data.ratings

    def sweep(self, epoch: int) -> Tensor:
        """One pass over users, then movies, the `epoch`-th (from 0); returns the training MSE."""
        raise NotImplementedError

    def training_step(self, batch: Batch, fit: Fit) -> None:
        # The batch is every training rating, which the model already keeps: one sweep per epoch.
        with torch.no_grad():
            mse = self.sweep(fit.current_epoch)
        fit.add_train_loss(mse, len(self.train_ratings))

    def training_mse(self) -> Tensor:
        """The mean squared error of the (unclipped) predictions of the training ratings, PREDICTION_CHUNK at a
        time (a prediction may gather many values: item_knn's look at `candidates` movies each)."""
        squared_errors = torch.zeros((), dtype=torch.float64, device=self.device)
        for first in range(0, len(self.train_ratings), PREDICTION_CHUNK):
            chunk = slice(first, first + PREDICTION_CHUNK)
            bias, interaction = self.score(self.train_users[chunk], self.train_movies[chunk])
            squared_errors += (self.train_ratings[chunk] - bias - interaction).double().square().sum()
        return (squared_errors / len(self.train_ratings)).float()


def table(rows: int, columns: int, std: float = 0.0, bag: bool = False) -> nn.Embedding | nn.EmbeddingBag:
    """Per-user or per-movie parameters (a bag sums rows), N(0, std) at start, 0 if std is 0."""
    created = nn.EmbeddingBag(rows, columns, mode="sum") if bag else nn.Embedding(rows, columns)
    nn.init.normal_(created.weight, std=std) if std > 0 else nn.init.zeros_(created.weight)
    return created


def _nbytes(tensor: Tensor) -> int:
    return tensor.nelement() * tensor.element_size()


def factor_std(dim: int) -> float:
    """Starting spread of each factor: every embedding starts with a norm near 0.1, whatever its dimension."""
    return 0.1 / math.sqrt(dim)


def rating_of_logit(logit: Tensor) -> Tensor:
    """The rating-scale sigmoid: a logit to a rating between RATING_MIN and RATING_MAX (the seed's parametrisation)."""
    return RATING_MIN + (RATING_MAX - RATING_MIN) * torch.sigmoid(logit)


def logit_of_rating(rating: float) -> float:
    """The logit whose rating-scale sigmoid is `rating`: where a model's bias starts."""
    share = (rating - RATING_MIN) / (RATING_MAX - RATING_MIN)
    return math.log(share / (1 - share))
