"""The models, one folder per family (gradient/, sweep/): each model registers itself by being imported, below.

`REGISTRY` maps each model's name to its class; each class carries its settings (`Settings`, the schema of
`params.yaml`'s `train.<name>`, or `rank.<name>` for a ranking model: `SECTION_OF_TASK`). `load_train_params`
reads the train (or rank) section with every model's settings typed; `build_model` and `load_model` make a model
from params or from a checkpoint. Adding a model: a class with `@register` in its module, its import line below,
and its section in `params.yaml`.
"""

from __future__ import annotations

import io
import pickle

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..data import DataShape, TrainingData
from ..errors import PipelineError
from ..params import PARAMS_FILE, TrainParams, load_section
from .base import REGISTRY, RatingModel
from .blend import BLEND, Blend
from .gradient import baselines, factorization, neural, ranking  # noqa: F401  (the registry: each module registers
from .sweep import als, bayes_mf, ease, ials, item_knn  # noqa: F401            the models it defines, once)

# The params.yaml section that trains each task's models.
SECTION_OF_TASK = {"rating": "train", "ranking": "rank"}


def model_settings() -> dict[str, dict[str, type]]:
    """By section (`train`, `rank`): the settings class of each registered model it trains, by name; what types the
    section's sub-sections."""
    return {
        section: {name: model.Settings for name, model in REGISTRY.items() if SECTION_OF_TASK[model.task] == section}
        for section in SECTION_OF_TASK.values()
    }


def load_train_params(path=PARAMS_FILE, section: str = "train") -> TrainParams:
    """params.yaml's train (or rank) section, every model's sub-section validated (the other sections too)."""
    return load_section(section, path, model_settings=model_settings())


def build_model(name: str, settings, data: TrainingData, shape: DataShape) -> RatingModel:
    """The model `name` with its (resolved) `settings`, sized by `shape`, having seen the training `data`."""
    model = REGISTRY[name](shape, settings)
    model.remember(data)
    return model


class CheckpointError(PipelineError):
    """A checkpoint that cannot be read, or that names no model this code knows."""


def load_model(checkpoint_path, source: str | None = None) -> RatingModel | Blend:
    """Rebuild a trained model from its checkpoint without unpickling arbitrary objects, in eval mode.

    `source` names the checkpoint in messages (when `checkpoint_path` is a buffer)."""
    source = source or str(checkpoint_path)
    return model_of_checkpoint(read_checkpoint(checkpoint_path, source), source)


def read_checkpoint(checkpoint_path, source: str | None = None) -> dict:
    """A checkpoint's contents as `torch.load` reads them without unpickling arbitrary objects: the one reader of
    checkpoint files, whose errors name the file (`source`, when `checkpoint_path` is a buffer)."""
    source = source or str(checkpoint_path)
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{source}: not found; the train stage writes it (dvc repro train)") from None
    except (OSError, RuntimeError, EOFError, TypeError, ValueError, pickle.UnpicklingError) as error:
        raise CheckpointError(f"{source}: not a checkpoint the train stage wrote: {error}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{source}: not a checkpoint the train stage wrote: it holds a {type(checkpoint).__name__}"
        )
    return checkpoint


def model_of_checkpoint(checkpoint: object, source: str) -> RatingModel | Blend:
    """The model a checkpoint's contents (as `torch.load` read them) describe, in eval mode: a rating model, or
    the ensemble's blend of several (each member's checkpoint inside it)."""
    try:
        name = checkpoint["model_name"]
        if name == BLEND:
            members = {
                member: model_of_checkpoint(contents, f"{source}, member {member}")
                for member, contents in checkpoint["members"].items()
            }
            weights = [checkpoint["weights"][member] for member in members]
            return Blend(members, checkpoint["intercept"], weights).eval()
        hyper_parameters, state = checkpoint["hyper_parameters"], checkpoint["state_dict"]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: not a checkpoint the train stage wrote: {error!r}") from None
    if name not in REGISTRY:
        raise CheckpointError(f"{source}: model {name!r} is unknown; known models: {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    shape, settings = _shape_and_settings(cls, hyper_parameters)
    with _NoRandomStart():
        model = cls(shape, settings)
    model.load_state_dict(_as_built(model, state), assign=True)
    return model.eval()


def saved_bytes(contents: dict) -> bytes:
    """A checkpoint's bytes: `torch.save` of `contents`. Saved via a buffer because torch names the archive's inner
    folder after the file: so the same contents give the same bytes, and DVC sees an unchanged output."""
    buffer = io.BytesIO()
    torch.save(contents, buffer)
    return buffer.getvalue()


class _NoRandomStart(TorchFunctionMode):
    """Models built as usual, their tensors allocated, but no random start drawn (a fifth of a second at ML-25M's
    size) for the checkpoint's weights to replace: the initialisers that draw are skipped, `torch.randn` gives zeros.
    Not the meta device: operations on meta tensors import torch._dynamo, seconds that serving must not pay."""

    DRAWS = (nn.init.normal_, nn.init.uniform_, nn.init.kaiming_uniform_, torch.Tensor.normal_, torch.Tensor.uniform_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.DRAWS:
            return args[0] if args else kwargs["tensor"]
        return (torch.zeros if func is torch.randn else func)(*args, **kwargs)


def _as_built(model: RatingModel, state: dict) -> dict:
    """`state` in the dtypes the model builds: assigned, not copied into the built tensors, it would keep its own."""
    built = model.state_dict()
    return {
        key: value.to(built[key].dtype) if key in built and isinstance(value, torch.Tensor) else value
        for key, value in state.items()
    }


def _shape_and_settings(cls: type[RatingModel], hyper_parameters: dict) -> tuple[DataShape, object]:
    """The DataShape and settings a checkpoint's hyper-parameters hold; checkpoints written before models had
    settings of their own (one flat list) hold both in one mapping, with settings the model did not use."""
    if "shape" in hyper_parameters:
        settings = cls.checkpoint_settings(hyper_parameters["settings"])
        return DataShape(**hyper_parameters["shape"]), cls.Settings.model_validate(settings)
    shape = DataShape(**{key: hyper_parameters[key] for key in DataShape.__dataclass_fields__})
    fields = {key: hyper_parameters[key] for key in cls.Settings.model_fields if key in hyper_parameters}
    # batch_size was never saved: it shapes no weight.
    return shape, cls.Settings.model_construct(**fields)


__all__ = [
    "BLEND",
    "REGISTRY",
    "Blend",
    "CheckpointError",
    "DataShape",
    "SECTION_OF_TASK",
    "RatingModel",
    "build_model",
    "load_train_params",
    "read_checkpoint",
    "model_settings",
    "load_model",
    "saved_bytes",
]
