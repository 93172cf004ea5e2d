"""One typed, validated view of each `params.yaml` section.

`params.yaml` is the one place that holds param values: the models below have no
defaults, so every key must be set there, and a missing, misspelled, mistyped or
out-of-range key stops the first stage that runs with one line naming it, its value and
what is allowed. Each field's description is the reference `docs/params.md` is generated from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic.fields import FieldInfo

from .datasets import DATASETS, FOLDS_RELEASE, GIVEN_FOLDS, SYNTHETIC
from .errors import PipelineError
from .schema import RATING_MAX, RATING_MIN

PARAMS_FILE = Path("params.yaml")

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeds are unsigned 32-bit
MAX_SYNTHETIC_RATINGS = 32_000_000  # the size of the largest release, ml-32m
# Distinct (user, movie) pairs are drawn by rejection: beyond this share of the grid it stalls.
MAX_SYNTHETIC_DENSITY = 0.5

MD5_PATTERN = r"^[0-9a-fA-F]{32}$"
# How the error messages and docs/params.md name a string pattern.
PATTERN_WORDS = {MD5_PATTERN: "32 hexadecimal digits"}

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
PositiveInt = Annotated[int, Field(ge=1)]
Accelerator = Literal["cpu", "gpu", "auto"]  # Lightning's accelerator names


class ParamsError(PipelineError):
    """A params.yaml value that is missing, unknown, of the wrong type or out of range."""


class Section(BaseModel):
    """A params.yaml section: every key required, no unknown key, types strict (ints widen to floats only),
    floats finite."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
    name: ClassVar[str]

    def fail(self, key: str, allowed: str) -> ParamsError:
        """The error for a value of this section that breaks a rule involving other keys."""
        return ParamsError(f"{self.name}.{key}: got {getattr(self, key)!r}; expected {allowed}")


class DataParams(Section):
    """Download stage: which data set, where to fetch it from, and the synthetic twin's shape."""

    name: ClassVar[str] = "data"
    dataset: Literal[DATASETS] = Field(description="a GroupLens release, or `synthetic` (generated, not fetched)")
    url: str | None = Field(
        description="http(s)://, file:// URL or local path of the release archive, then the only source tried; "
        "null: GroupLens, then its mirrors"
    )
    md5: Annotated[str, Field(pattern=MD5_PATTERN)] | None = Field(
        description="MD5 of the archive at `url` (vouches for an archive that is not the genuine release); "
        "null: the release's pinned and published sums"
    )
    timeout_seconds: Annotated[float, Field(gt=0)] = Field(description="connect and read timeout of each HTTP request")
    retries: Annotated[int, Field(ge=0)] = Field(
        description="further attempts after HTTP 5xx/408/429, a reset or cut connection, a timeout"
    )
    backoff_seconds: Annotated[float, Field(ge=0)] = Field(
        description="wait before the first retry; doubles after each"
    )
    synthetic_ratings: Annotated[int, Field(ge=1, le=MAX_SYNTHETIC_RATINGS)] = Field(
        description="synthetic: number of ratings (at least one per user, at most half of users x movies)"
    )
    synthetic_users: PositiveInt = Field(description="synthetic: number of users")
    synthetic_movies: PositiveInt = Field(description="synthetic: number of movies")
    synthetic_rank: Annotated[int, Field(ge=1, le=256)] = Field(
        description="synthetic: rank of the true user x movie scores"
    )
    synthetic_noise: Annotated[float, Field(ge=0)] = Field(
        description="synthetic: standard deviation of the Gaussian noise on each score"
    )
    synthetic_exposure: Annotated[float, Field(ge=0, le=10)] = Field(
        description="synthetic: how much a user's taste picks the movies they rate: a movie's chance is its "
        "popularity x exp(this x the user's affinity for it, the interaction term of its true score); 0: "
        "popularity alone"
    )
    synthetic_seed: Seed = Field(description="synthetic: seed of the generator")

    @model_validator(mode="after")
    def _consistent(self) -> DataParams:
        if self.md5 is not None and self.url is None:
            raise ParamsError("data.md5 is set but data.url is not: md5 checks the archive at url")
        if self.dataset == SYNTHETIC and self.url is not None:
            raise ParamsError("data.url is set but data.dataset is synthetic, which is generated, not fetched")
        if self.synthetic_ratings < self.synthetic_users:
            raise self.fail(
                "synthetic_ratings", f"at least synthetic_users ({self.synthetic_users}): every user rates a movie"
            )
        grid = self.synthetic_users * self.synthetic_movies
        if self.synthetic_ratings > MAX_SYNTHETIC_DENSITY * grid:
            raise self.fail(
                "synthetic_ratings",
                f"at most {MAX_SYNTHETIC_DENSITY:.0%} of synthetic_users x synthetic_movies ({grid}): "
                "raise those or lower synthetic_ratings",
            )
        return self


class PreprocessParams(Section):
    """Preprocess stage: the seed's filters, applied in this order: sample, top movies, minimum counts."""

    name: ClassVar[str] = "preprocess"
    sample_size: PositiveInt | None = Field(description="a seeded random sample of this many ratings; null keeps all")
    top_n_movies: PositiveInt | None = Field(
        description="keep the N most-rated movies (the seed: 50 on ML-25M), ties by movieId; null keeps all"
    )
    min_ratings_per_user: PositiveInt = Field(
        description="drop users with fewer ratings (repeated with the movie rule until both hold)"
    )
    min_ratings_per_movie: PositiveInt = Field(description="drop movies with fewer ratings")
    seed: Seed = Field(description="seed of the sample")


class SplitParams(Section):
    """Split stage: train/val/test fractions, of all ratings at random or of each user's ratings in time order;
    or ML-100K's own folds."""

    name: ClassVar[str] = "split"
    strategy: Literal["random", "temporal", "given"] = Field(
        description="random: the seed's shuffle; temporal: each user's latest ratings go to val, then test; "
        "given: ML-100K's own fold `split.fold` (the published protocol; other data sets refuse it)"
    )
    fold: Literal[GIVEN_FOLDS] = Field(
        description="given only: ML-100K's fold; u1-u5: the test part is u.data's lines 20,000 x (i - 1) + 1 to "
        "20,000 x i (mku.sh), ua/ub: each user's 1st-10th / 11th-20th ratings in file order (allbut.pl)"
    )
    train_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        description="share of ratings for training (random, temporal; given: the fold's base part less val)"
    )
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        description="share of ratings for validation (early stopping); test gets the rest (given: drawn with the "
        "seed from the fold's base part)"
    )
    seed: Seed = Field(description="seed of the shuffle (random; given: of the val draw)")

    @model_validator(mode="after")
    def _test_not_empty(self) -> SplitParams:
        total = self.train_fraction + self.val_fraction
        if total >= 1:
            raise ParamsError(
                f"split.train_fraction + val_fraction: got {total!r}; expected a sum below 1, "
                "so the test part is not empty"
            )
        return self


def check_split_fits_data(data: DataParams, split: SplitParams) -> None:
    """Refuse ML-100K's own folds for another data set, before anything is downloaded (check_params)."""
    if split.strategy == "given" and data.dataset != FOLDS_RELEASE:
        raise ParamsError(
            f"split.strategy: got 'given' with data.dataset {data.dataset!r}; only {FOLDS_RELEASE} ships its own "
            "folds (u1-u5, ua, ub): use split.strategy random or temporal"
        )


AUTO = "auto"
# `auto` batch sizes: about this many batches per epoch, as a power of two within these bounds.
AUTO_BATCHES_PER_EPOCH = 128
AUTO_BATCH_SIZE_RANGE = (512, 65_536)
# `auto` learning rates: tuned on ML-100K at the smallest batch, measured at 25 M ratings at the largest.
AUTO_LEARNING_RATE_RANGE = (0.003, 0.01)


def auto_batch_size(n_train: int) -> int:
    """About AUTO_BATCHES_PER_EPOCH batches per epoch, a power of two within AUTO_BATCH_SIZE_RANGE."""
    smallest, largest = AUTO_BATCH_SIZE_RANGE
    power = round(math.log2(max(n_train, 1) / AUTO_BATCHES_PER_EPOCH))
    return int(min(largest, max(smallest, 2**power)))


def auto_learning_rate(batch_size: int) -> float:
    """Log-linear in the batch size between the two ends of AUTO_LEARNING_RATE_RANGE, constant beyond them."""
    (smallest, largest), (low, high) = AUTO_BATCH_SIZE_RANGE, AUTO_LEARNING_RATE_RANGE
    share = (math.log(batch_size) - math.log(smallest)) / (math.log(largest) - math.log(smallest))
    return float(low * (high / low) ** min(1.0, max(0.0, share)))


class ModelSettings(BaseModel):
    """A model's own settings, its sub-section of `train` (each model's module defines its own)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class GradientSettings(ModelSettings):
    """The settings of a model trained by minibatch gradient steps: Adam's step and the batch."""

    learning_rate: Annotated[float, Field(gt=0, le=100)] | Literal["auto"] = Field(
        description=f"Adam's learning rate; `auto`: {AUTO_LEARNING_RATE_RANGE[0]} at a batch of "
        f"{AUTO_BATCH_SIZE_RANGE[0]:,}, {AUTO_LEARNING_RATE_RANGE[1]} at {AUTO_BATCH_SIZE_RANGE[1]:,}, log-linear "
        "between (the values tuned on ML-100K and measured at 25 M ratings)"
    )
    batch_size: Annotated[int, Field(ge=1, le=2**31)] | Literal["auto"] = Field(
        description=f"ratings per optimiser step; `auto`: about {AUTO_BATCHES_PER_EPOCH} batches per epoch, a power "
        f"of two from {AUTO_BATCH_SIZE_RANGE[0]:,} (ML-100K) to {AUTO_BATCH_SIZE_RANGE[1]:,} (millions of ratings, "
        "where bigger batches stop paying on the CPU)"
    )

    def resolved(self, n_train: int) -> Any:
        """These settings with `auto` batch size and learning rate replaced by the rules' values for `n_train`
        training ratings."""
        batch_size = auto_batch_size(n_train) if self.batch_size == AUTO else self.batch_size
        learning_rate = auto_learning_rate(batch_size) if self.learning_rate == AUTO else self.learning_rate
        return self.model_copy(update={"batch_size": batch_size, "learning_rate": learning_rate})


# Settings several models share, each described once.
EmbeddingDim = Annotated[int, Field(ge=1, le=4096, description="size of the user and movie embeddings")]
WeightDecay = Annotated[
    float, Field(ge=0, le=1000, description="L2 penalty on the per-user and per-movie rows each batch looks up")
]


class TrainParams(Section):
    """Train stage: which model, how long and where it trains; each model's own settings are the
    sub-section named after it (`train.biased_mf`, ...), so switching `model` needs nothing else."""

    name: ClassVar[str] = "train"
    # The sub-sections are the extra keys. Validated with the models' settings (`models.load_train_params`),
    # each becomes its model's typed settings; without them (`check_params`, which must not import torch),
    # each need only be a mapping.
    model_config = ConfigDict(extra="allow")
    model: str = Field(description="the model to train, by the name of its sub-section (docs/models.md)")
    max_epochs: Annotated[int, Field(ge=1, le=100_000)] = Field(description="at most this many epochs")
    min_epochs: PositiveInt = Field(description="early stopping cannot stop before this many epochs")
    patience: PositiveInt = Field(description="epochs without progress (see `min_improvement`) before stopping")
    min_improvement: Annotated[float, Field(ge=0, lt=1)] = Field(
        description="early stopping counts an epoch as progress when it lowers the best val RMSE so far by this "
        "much (relative; 0.001: 0.1 %); 0 counts any drop. The checkpoint is the best epoch's either way"
    )
    refit: bool = Field(
        description="after early stopping chose the best epoch, train a new model on train + val for that many "
        "epochs and keep it (val then only chose the epochs); false keeps the best-val checkpoint"
    )
    seed: Seed = Field(description="seed of initialisation and shuffling")
    accelerator: Accelerator = Field(
        description="Lightning's accelerator; metrics are reproducible to the bit on the CPU"
    )
    threads: Annotated[int, Field(ge=0, le=4096)] = Field(
        description="torch CPU threads per process; 0: the CPUs the process may use, shared among the processes "
        "that train (`devices`, or two when a sampler's refit trains beside its first fit). MKL splits a matrix "
        "product by its thread count, so a model that multiplies large matrices (bayes_mf, ease, ials) differs in "
        "its last bits with another count: a number, not 0, gives the same checkpoint on every machine"
    )
    devices: Annotated[int, Field(ge=1, le=4096)] = Field(
        description="Lightning's devices per node: processes (CPU) or GPUs that train together"
    )
    num_nodes: Annotated[int, Field(ge=1, le=4096)] = Field(
        description="machines that train together (each runs `devices` processes)"
    )
    strategy: Literal["auto", "ddp"] = Field(
        description="Lightning's strategy: auto (one process), or ddp (data-parallel over devices x num_nodes)"
    )

    @property
    def settings(self) -> Any:
        """The settings of the model `model` names: its sub-section."""
        return self.model_extra[self.model]

    @model_validator(mode="after")
    def _sub_sections(self, info: ValidationInfo) -> TrainParams:
        sub_sections, section = self.model_extra or {}, self.name
        settings_of = (info.context or {}).get("model_settings")
        for key, value in sub_sections.items():
            if settings_of is not None and key in settings_of and not isinstance(value, dict | ModelSettings):
                raise ParamsError(f"{section}.{key}: got {value!r}; expected a mapping of keys (see docs/params.md)")
            if not isinstance(value, dict | ModelSettings):
                raise ParamsError(
                    f"{section}.{key}: unknown key; valid keys are: {', '.join(sorted(type(self).model_fields))}, "
                    "and one sub-section (a mapping) per model"
                )
        if settings_of is not None:
            if self.model not in settings_of:
                models = ", ".join(repr(name) for name in settings_of)
                raise ParamsError(f"{section}.model: got {self.model!r} (str); expected one of {models}")
            unknown = [key for key in sub_sections if key not in settings_of]
            if unknown:
                raise ParamsError(
                    f"{section}.{unknown[0]}: unknown key; valid keys are: "
                    f"{', '.join(sorted([*type(self).model_fields, *settings_of]))}"
                )
            missing = [name for name in settings_of if name not in sub_sections]
            if missing:
                raise ParamsError(
                    f"{section}.{missing[0]}: missing; every key must be set in params.yaml (see docs/params.md)"
                )
            for name, settings in settings_of.items():
                sub_sections[name] = parse_settings(f"{section}.{name}", settings, sub_sections[name])
        if self.model not in sub_sections:
            models = ", ".join(repr(name) for name in sub_sections)
            raise self.fail("model", f"one of {models} (a model with a sub-section in {section})")
        return self

    @model_validator(mode="after")
    def _epochs(self) -> TrainParams:
        if self.min_epochs > self.max_epochs:
            raise self.fail("min_epochs", f"an integer from 1 to max_epochs ({self.max_epochs})")
        return self

    @property
    def world_size(self) -> int:
        """Processes training together: devices x num_nodes."""
        return self.devices * self.num_nodes

    @model_validator(mode="after")
    def _parallel(self) -> TrainParams:
        if self.world_size > 1 and self.strategy != "ddp":
            raise self.fail("strategy", f"ddp, to train on {self.world_size} processes (devices x num_nodes)")
        return self


class RankParams(TrainParams):
    """Rank stage: the ranking model that `movielens recommend` serves (`ease`, `ials`, `bpr`), trained as the
    train stage trains the rating model, each ranker's settings its sub-section (`rank.ials`, ...). Its best
    epoch is chosen on val NDCG@k, measured as the evaluate stage measures test NDCG@k (evaluate's ranking_* keys)."""

    name: ClassVar[str] = "rank"


def parse_settings(name: str, settings: type[ModelSettings], values: dict | ModelSettings) -> ModelSettings:
    """A model's sub-section `name` (`train.als`) validated by its `settings` class; a problem is a ParamsError."""
    if isinstance(values, settings):
        return values
    try:
        return settings.model_validate(values)
    except ValidationError as error:
        raise ParamsError(describe_error(settings, error.errors()[0], prefix=name)) from None


class EvaluateParams(Section):
    """Evaluate stage: how predictions are computed and summarised.

    User activity is a user's number of training ratings: users below
    `light_user_min_ratings` are "cold", then light, medium, and heavy from `heavy_user_min_ratings`.
    """

    name: ClassVar[str] = "evaluate"
    batch_size: PositiveInt = Field(description="ratings scored per forward pass")
    accelerator: Accelerator = Field(description="Lightning's accelerator for the predictions")
    light_user_min_ratings: PositiveInt = Field(description="users with fewer training ratings are cold")
    medium_user_min_ratings: PositiveInt = Field(description="light users have fewer training ratings than this")
    heavy_user_min_ratings: PositiveInt = Field(description="heavy users have at least this many training ratings")
    ranking_k: PositiveInt = Field(
        description="length of each user's top list in the ranking metrics (the k of NDCG@k)"
    )
    ranking_relevant_rating: float = Field(
        ge=RATING_MIN, le=RATING_MAX, description="a test rating this high or higher marks a movie the user liked"
    )
    ranking_max_users: PositiveInt | None = Field(
        description="rank for at most this many test users (drawn with ranking_seed); null: every one"
    )
    ranking_seed: Seed = Field(description="seed of the draw of users when ranking_max_users applies")

    @model_validator(mode="after")
    def _buckets_ascend(self) -> EvaluateParams:
        if self.medium_user_min_ratings <= self.light_user_min_ratings:
            raise self.fail(
                "medium_user_min_ratings", f"an integer above light_user_min_ratings ({self.light_user_min_ratings})"
            )
        if self.heavy_user_min_ratings <= self.medium_user_min_ratings:
            raise self.fail(
                "heavy_user_min_ratings", f"an integer above medium_user_min_ratings ({self.medium_user_min_ratings})"
            )
        return self


class EnsembleParams(Section):
    """Ensemble pipeline (ensemble/dvc.yaml): its member stage trains each model its matrix lists, with that
    model's settings in `train`; the blend combines the `members` named here, weighted by a least-squares fit
    of the val ratings on the members' val predictions."""

    name: ClassVar[str] = "ensemble"
    members: list[str] = Field(
        min_length=1,
        description="the models the blend combines, by name; each one the matrix of ensemble/dvc.yaml trains",
    )
    weight_penalty: float = Field(
        ge=0,
        le=1000,
        description="ridge penalty on the blend's weights (not its intercept): the fit minimises the val MSE plus "
        "this x the sum of squared weights; 0: plain least squares",
    )
    refit: bool = Field(
        description="the members that predict test (and are served) are refitted on train + val, as train.refit; "
        "the weights come from the first fits' val predictions either way"
    )

    @model_validator(mode="after")
    def _distinct_members(self) -> EnsembleParams:
        repeated = sorted({member for member in self.members if self.members.count(member) > 1})
        if repeated:
            raise self.fail("members", f"distinct model names ('{repeated[0]}' is listed twice)")
        return self


SECTIONS: dict[str, type[Section]] = {
    section.name: section
    for section in (DataParams, PreprocessParams, SplitParams, TrainParams, RankParams, EvaluateParams, EnsembleParams)
}


def unchanged_params(path: Path = PARAMS_FILE) -> Callable[[], None]:
    """A check that `path` still holds what it holds now: a stage calls it before writing its outputs.

    Two `dvc exp run` in one workspace rewrite the same params.yaml: the first run's stages would
    then write outputs made with params the second set. Run experiments side by side with
    `dvc exp run --queue` (each in its own copy of the workspace)."""
    before = Path(path).read_bytes()

    def check() -> None:
        if Path(path).read_bytes() != before:
            raise ParamsError(
                f"{path} changed while the stage ran (another `dvc exp run` in this workspace?); nothing was "
                "written. Run experiments side by side with `dvc exp run --queue`, then `dvc queue start`"
            )

    return check


def read_params_file(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The raw sections of `path`; a file that is missing, unreadable or not a mapping is a ParamsError."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run the stage from the project root)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ParamsError(f"{path}: cannot be read: {error}") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(document).__name__}")
    return document


def load_section(
    section: str,
    path: Path = PARAMS_FILE,
    model_settings: Mapping[str, Mapping[str, type[ModelSettings]]] | None = None,
) -> Any:
    """Read `path` and return its `section` as a validated, typed model (the whole file is checked).

    `model_settings` (by section, `train` and `rank`: each model's settings class, by name) types their
    sub-sections: the train and rank stages' view."""
    document = read_params_file(path)
    # Every section is checked, not only the caller's: a typo anywhere in the file (say from
    # `dvc exp run -S +trian.seed=1`) fails the first stage that runs, before any work.
    unknown = sorted(str(name) for name in set(document) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section '{unknown[0]}'; valid sections are: {', '.join(SECTIONS)}")
    missing = [name for name in SECTIONS if name not in document]
    if missing:
        raise ParamsError(f"{path}: section '{missing[0]}' is missing")
    parsed = {name: parse_section(name, values, model_settings) for name, values in document.items()}
    return parsed[section]


def parse_section(
    section: str, values: object, model_settings: Mapping[str, Mapping[str, type[ModelSettings]]] | None = None
) -> Any:
    """Build and validate the model of `section` from its raw mapping; the first problem is a ParamsError.
    `model_settings`: as `load_section`'s."""
    model = SECTIONS[section]
    if not isinstance(values, dict):
        raise ParamsError(f"{section}: expected a mapping of keys, got {values!r}")
    try:
        return model.model_validate(values, context={"model_settings": (model_settings or {}).get(section)})
    except ValidationError as error:
        raise ParamsError(describe_error(model, error.errors()[0])) from None


def describe_error(model: type[BaseModel], error: dict, prefix: str | None = None) -> str:
    """One line for pydantic's `error`: the key (`train.autorec.hidden_dim`), the value given and what is allowed.
    `prefix` names the model's values (a section's own name by default)."""
    owner: type[BaseModel] = model
    names = [prefix or model.name]
    for part in error["loc"]:  # down through sub-sections, to the key (a union's branch tags follow it)
        names.append(str(part))
        field = owner.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            break
        owner = field.annotation
    name, key = ".".join(names), names[-1]
    if error["type"] == "missing":
        return f"{name}: missing; every key must be set in params.yaml (see docs/params.md)"
    if error["type"] == "extra_forbidden":
        return f"{name}: unknown key; valid keys are: {', '.join(sorted(owner.model_fields))}"
    value = error["input"]
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{name}: got {value!r}; expected a mapping of keys (see docs/params.md)"
    if error["type"] == "finite_number":
        return f"{name}: got {value!r}; expected a finite number"
    # Say the type when the type is the problem, not when the value is out of range.
    kind = "" if error["type"] in RANGE_ERRORS else f" ({type(value).__name__})"
    return f"{name}: got {value!r}{kind}; expected {allowed(owner.model_fields[key])}"


RANGE_ERRORS = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "string_pattern_mismatch", "too_short"}
)


def allowed(field: FieldInfo) -> str:
    """What a field accepts, in words: 'an integer >= 1', 'one of 'cpu', 'gpu'', 'null or a number > 0'."""
    options = [option for option in _options(field.annotation) if option is not type(None)]
    words = " or ".join(_describe(option, field.metadata if len(options) == 1 else []) for option in options)
    return f"null or {words}" if type(None) in _options(field.annotation) else words


def _options(annotation: Any) -> tuple:
    return get_args(annotation) if get_origin(annotation) in (Union, type(int | None)) else (annotation,)


def _describe(option: Any, metadata: list) -> str:
    if get_origin(option) is Literal:
        choices = [repr(choice) for choice in get_args(option)]
        return choices[0] if len(choices) == 1 else "one of " + ", ".join(choices)
    if get_origin(option) is Annotated:
        option, *extra = get_args(option)
        metadata = [*metadata, *(item for entry in extra for item in getattr(entry, "metadata", [entry]))]
    if option is bool:
        return "true or false"
    if get_origin(option) is list:
        shortest = next((item.min_length for item in metadata if getattr(item, "min_length", None)), 0)
        longest = next((item.max_length for item in metadata if getattr(item, "max_length", None)), None)
        noun, *rest = _describe(get_args(option)[0], []).split(" ", 2)[1:]  # 'an integer from 1 to 9' -> 'integer'
        size = {0: "", 1: "non-empty "}.get(shortest, f"{shortest} or more ")
        most = f", at most {longest}" if longest else ""
        return f"a {size}list of {' '.join([noun + 's', *rest])}{most}"
    if option is str:
        pattern = next((item.pattern for item in metadata if getattr(item, "pattern", None)), None)
        return PATTERN_WORDS.get(pattern, "a string")
    noun = {int: "an integer", float: "a number"}[option]
    low = next((item for item in metadata if isinstance(item, Ge | Gt)), None)
    high = next((item for item in metadata if isinstance(item, Le | Lt)), None)
    if isinstance(low, Ge) and isinstance(high, Le):
        return f"{noun} from {low.ge} to {high.le}"
    if isinstance(low, Gt) and isinstance(high, Lt):
        return f"{noun} strictly between {low.gt} and {high.lt}"
    if isinstance(low, Ge) and isinstance(high, Lt):
        return f"{noun} from {low.ge} up to (not including) {high.lt}"
    if isinstance(low, Gt) and isinstance(high, Le):
        return f"{noun} > {low.gt} and at most {high.le}"
    if low is not None:
        return f"{noun} >= {low.ge}" if isinstance(low, Ge) else f"{noun} > {low.gt}"
    return noun
