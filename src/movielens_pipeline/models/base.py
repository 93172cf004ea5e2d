"""The contract every rating model shares, and the registry that names each model once.

A model is a `RatingModel`: it registers its name and its settings (a section of
`params.yaml`'s `train`) with `@register`, creates its parameters, and returns from `score`
a bias and an interaction per rating, which its output form (`output`) turns into a rating:
a sigmoid over the sum, scaled to the rating scale (the seed's form), or the sum clipped to
it. What is common lives here: cold starts (a user or movie training never saw gets the
bias alone), the loss, predictions, the checkpoint's contents, the memory training needs.

How a model is fitted is its family's, which it declares (`family`): `gradient` models
(`gradient/common.py`) take minibatch gradient steps through Lightning, `sweep` models
(`sweep/common.py`) run their own closed-form sweeps in a plain loop (training/ holds both
paths). A model is a plain torch module: serving (`trained.py`, the `movielens` command)
loads and scores it without importing Lightning, whose import costs seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..data import DataShape, TrainingData
from ..params import ModelSettings
from ..schema import RATING_MAX, RATING_MIN
from .sums import mean_squared_error

REGISTRY: dict[str, type[RatingModel]] = {}


def register(model: type[RatingModel]) -> type[RatingModel]:
    """Class decorator: make `model` trainable as `train.model: <model.name>` (a ranking model: `rank.model`), with
    `train.<name>` (`rank.<name>`) its settings."""
    if model.name in REGISTRY:
        raise ValueError(f"two models are named {model.name!r}")
    REGISTRY[model.name] = model
    return model


class RatingModel(nn.Module):
    """Shared contract; a model sets `name`, `Settings`, creates parameters and defines `score`."""

    name: ClassVar[str]
    Settings: ClassVar[type[ModelSettings]]
    # How the model is fitted: by minibatch gradient steps (Lightning), or by its own closed-form sweeps.
    family: ClassVar[Literal["gradient", "sweep"]]
    # What it is for: predicting ratings (params.yaml's `train`, validated on val MSE) or ranking movies (`rank`,
    # validated on val NDCG@k; its scores are not ratings).
    task: ClassVar[Literal["rating", "ranking"]] = "rating"
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
        return mean_squared_error(self(users, movies, days), ratings)

    @classmethod
    def checkpoint_settings(cls, saved: dict) -> dict:
        """The settings a checkpoint saved, completed with what a setting added since then meant before it."""
        return saved

    @classmethod
    def training_bytes(cls, shape: DataShape, settings: ModelSettings) -> int:
        """Bytes one training process holds for this model's tables, without allocating them: the model is built
        on the meta device (shapes, no storage), so every parameter and buffer it creates is counted, whatever
        the model. Its parameters and buffers, the optimiser's state per parameter, the best epoch's copy of the
        weights (`training.progress.BestEpoch`) and what the model says its fit holds beside (`working_bytes`);
        not the gradients, the data or the batches' temporaries."""
        with torch.device("meta"):
            model = cls(shape, settings)
        parameters = sum(_nbytes(parameter) for parameter in model.parameters())
        buffers = sum(_nbytes(buffer) for buffer in model.buffers())
        best_copy = sum(_nbytes(value) for value in model.state_dict().values())
        return parameters * (1 + cls.optimizer_state_copies) + buffers + best_copy + cls.working_bytes(shape, settings)

    @classmethod
    def working_bytes(cls, shape: DataShape, settings: ModelSettings) -> int:
        """Bytes a fit holds at once beyond the model's own tensors (a closed-form fit's matrices); 0 by default."""
        return 0

    def checkpoint(self) -> dict[str, Any]:
        """What a trained model's checkpoint holds: the name, what rebuilds it, and the weights (plain types)."""
        hyper_parameters = dict(self.hyper_parameters)
        return {"model_name": self.name, "hyper_parameters": hyper_parameters, "state_dict": self.state_dict()}


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
