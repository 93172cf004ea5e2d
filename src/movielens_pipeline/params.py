"""One typed, validated view of each `params.yaml` section.

Every stage reads exactly one section through `load_section`, so a misspelled key, a
wrong type or an out-of-range value fails before any work starts, with a message that
names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from .errors import PipelineError

PARAMS_FILE = Path("params.yaml")

# The GroupLens releases (releases.RELEASES; a test checks the two agree) and the generated twin.
DATASETS = (
    "ml-100k",
    "ml-1m",
    "ml-10m",
    "ml-20m",
    "ml-25m",
    "ml-32m",
    "ml-latest-small",
    "ml-latest",
    "synthetic",
)
SYNTHETIC = "synthetic"
MODELS = ("global_mean", "biases", "biased_mf", "svdpp", "genre_mlp")
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeds are unsigned 32-bit
MAX_SYNTHETIC_RATINGS = 32_000_000  # the size of the largest release, ml-32m
MAX_SYNTHETIC_RANK = 256
# Distinct (user, movie) pairs are drawn by rejection: beyond this share of the grid it stalls.
MAX_SYNTHETIC_DENSITY = 0.5


class ParamsError(PipelineError):
    """A params.yaml value that is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class DataParams:
    """Download stage: which data set, where to fetch it from, and the synthetic twin's shape."""

    dataset: str = "ml-100k"
    # An http(s):// or file:// URL or a local path to the release archive (e.g. a
    # mirror of ml-100k.zip); when set, it is the only source tried.
    url: str | None = None
    # Expected MD5 of the archive at `url`; None means the release's published sum.
    md5: str | None = None
    timeout_seconds: float = 30.0  # connect and read timeout of each HTTP request
    retries: int = 4  # further attempts after a transient failure (HTTP 5xx, reset, timeout)
    backoff_seconds: float = 1.0  # wait before the first retry; doubles after each
    # data.dataset: synthetic (see synthetic.py): size, shape and seed of the generated ratings.
    # ML-100K's shape by default, so that a synthetic `dvc repro` is as quick as ml-100k's.
    synthetic_ratings: int = 100_000
    synthetic_users: int = 1_000
    synthetic_movies: int = 1_700
    synthetic_rank: int = 8  # rank of the true user x movie score matrix
    synthetic_noise: float = 0.5  # standard deviation of the Gaussian noise on each score
    synthetic_seed: int = 0

    def check(self, section: str) -> None:
        _require(self.dataset in DATASETS, section, "dataset", self.dataset, f"one of {list(DATASETS)}")
        if self.md5 is not None:
            is_md5 = len(self.md5) == 32 and all(c in "0123456789abcdef" for c in self.md5.lower())
            _require(is_md5, section, "md5", self.md5, "32 hexadecimal digits")
        _require(self.timeout_seconds > 0, section, "timeout_seconds", self.timeout_seconds, "a number > 0")
        _require(self.retries >= 0, section, "retries", self.retries, "an integer >= 0")
        _require(self.backoff_seconds >= 0, section, "backoff_seconds", self.backoff_seconds, "a number >= 0")
        if self.md5 is not None and self.url is None:
            raise ParamsError(f"{section}.md5 is set but {section}.url is not: md5 checks the archive at url")
        if self.dataset == SYNTHETIC and self.url is not None:
            raise ParamsError(
                f"{section}.url is set but {section}.dataset is synthetic, which is generated, not fetched"
            )
        self._check_synthetic(section)

    def _check_synthetic(self, section: str) -> None:
        for key in ("synthetic_users", "synthetic_movies"):
            _require(getattr(self, key) >= 1, section, key, getattr(self, key), "an integer >= 1")
        _require(
            1 <= self.synthetic_ratings <= MAX_SYNTHETIC_RATINGS,
            section,
            "synthetic_ratings",
            self.synthetic_ratings,
            f"an integer from 1 to {MAX_SYNTHETIC_RATINGS}",
        )
        _require(
            self.synthetic_ratings >= self.synthetic_users,
            section,
            "synthetic_ratings",
            self.synthetic_ratings,
            f"at least synthetic_users ({self.synthetic_users}): every user rates a movie",
        )
        grid = self.synthetic_users * self.synthetic_movies
        _require(
            self.synthetic_ratings <= MAX_SYNTHETIC_DENSITY * grid,
            section,
            "synthetic_ratings",
            self.synthetic_ratings,
            f"at most {MAX_SYNTHETIC_DENSITY:.0%} of synthetic_users x synthetic_movies ({grid}): "
            "raise those or lower synthetic_ratings",
        )
        _require(
            1 <= self.synthetic_rank <= MAX_SYNTHETIC_RANK,
            section,
            "synthetic_rank",
            self.synthetic_rank,
            f"an integer from 1 to {MAX_SYNTHETIC_RANK}",
        )
        _require(self.synthetic_noise >= 0, section, "synthetic_noise", self.synthetic_noise, "a number >= 0")
        _check_seed(section, self.synthetic_seed, key="synthetic_seed")


@dataclass(frozen=True)
class PreprocessParams:
    """Preprocess stage: the seed's filters, applied in this order: sample, top movies, minimum counts."""

    sample_size: int | None = None  # seeded random sample of this many ratings; None keeps all
    top_n_movies: int | None = None  # keep only the N most-rated movies (the seed: 50 on ml-25m)
    min_ratings_per_user: int = 1
    min_ratings_per_movie: int = 1
    seed: int = 0

    def check(self, section: str) -> None:
        for key in ("sample_size", "top_n_movies", "min_ratings_per_user", "min_ratings_per_movie"):
            value = getattr(self, key)
            _require(value is None or value >= 1, section, key, value, "an integer >= 1")
        _check_seed(section, self.seed)


@dataclass(frozen=True)
class SplitParams:
    """Split stage: random train/val/test fractions; test gets the rest."""

    train_fraction: float = 0.7
    val_fraction: float = 0.15
    seed: int = 0

    def check(self, section: str) -> None:
        for key in ("train_fraction", "val_fraction"):
            value = getattr(self, key)
            _require(0 < value < 1, section, key, value, "a fraction strictly between 0 and 1")
        total = self.train_fraction + self.val_fraction
        _require(
            total < 1, section, "train_fraction + val_fraction", total, "a sum below 1, so the test part is not empty"
        )
        _check_seed(section, self.seed)


@dataclass(frozen=True)
class TrainParams:
    """Train stage: the model and its optimisation."""

    model: str = "biased_mf"
    embedding_dim: int = 32
    hidden_dim: int = 32  # width of genre_mlp's hidden layer
    dropout: float = 0.5  # dropout before and after genre_mlp's hidden layer
    learning_rate: float = 0.01
    weight_decay: float = 0.0  # L2 penalty on the per-user and per-movie rows each rating uses
    batch_size: int = 1024
    max_epochs: int = 50
    min_epochs: int = 1
    patience: int = 2  # epochs without a better val loss before stopping
    seed: int = 0
    accelerator: Literal["cpu", "gpu", "auto"] = "cpu"
    threads: int = 0  # CPU threads for torch; 0: every CPU this process may run on

    def check(self, section: str) -> None:
        _require(self.model in MODELS, section, "model", self.model, f"one of {list(MODELS)}")
        _require(self.embedding_dim >= 1, section, "embedding_dim", self.embedding_dim, "an integer >= 1")
        _require(self.hidden_dim >= 1, section, "hidden_dim", self.hidden_dim, "an integer >= 1")
        _require(0 <= self.dropout < 1, section, "dropout", self.dropout, "a number from 0 up to (not including) 1")
        _require(self.learning_rate > 0, section, "learning_rate", self.learning_rate, "a number > 0")
        _require(self.weight_decay >= 0, section, "weight_decay", self.weight_decay, "a number >= 0")
        _require(self.batch_size >= 1, section, "batch_size", self.batch_size, "an integer >= 1")
        _require(self.max_epochs >= 1, section, "max_epochs", self.max_epochs, "an integer >= 1")
        _require(
            1 <= self.min_epochs <= self.max_epochs,
            section,
            "min_epochs",
            self.min_epochs,
            f"an integer from 1 to max_epochs ({self.max_epochs})",
        )
        _require(self.patience >= 1, section, "patience", self.patience, "an integer >= 1")
        _require(self.threads >= 0, section, "threads", self.threads, "an integer >= 0 (0: every CPU available)")
        _check_seed(section, self.seed)


@dataclass(frozen=True)
class EvaluateParams:
    """Evaluate stage: how predictions are computed and summarised."""

    batch_size: int = 65536  # ratings scored per forward pass
    histogram_bins: int = 18  # bins of the ratings-vs-predictions histogram over the rating scale
    # User activity = the user's number of training ratings. Users below light_user_min_ratings
    # are "cold", then light, medium, and heavy from heavy_user_min_ratings on.
    light_user_min_ratings: int = 20
    medium_user_min_ratings: int = 50
    heavy_user_min_ratings: int = 150

    def check(self, section: str) -> None:
        _require(self.batch_size >= 1, section, "batch_size", self.batch_size, "an integer >= 1")
        _require(self.histogram_bins >= 1, section, "histogram_bins", self.histogram_bins, "an integer >= 1")
        _require(
            self.light_user_min_ratings >= 1,
            section,
            "light_user_min_ratings",
            self.light_user_min_ratings,
            "an integer >= 1",
        )
        _require(
            self.medium_user_min_ratings > self.light_user_min_ratings,
            section,
            "medium_user_min_ratings",
            self.medium_user_min_ratings,
            f"an integer above light_user_min_ratings ({self.light_user_min_ratings})",
        )
        _require(
            self.heavy_user_min_ratings > self.medium_user_min_ratings,
            section,
            "heavy_user_min_ratings",
            self.heavy_user_min_ratings,
            f"an integer above medium_user_min_ratings ({self.medium_user_min_ratings})",
        )


SECTIONS = {
    "data": DataParams,
    "preprocess": PreprocessParams,
    "split": SplitParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
}


def load_section(section: str, path: Path = PARAMS_FILE):
    """Read `path` and return its `section` as a validated, typed dataclass."""
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
    if section not in document:
        raise ParamsError(f"{path}: section '{section}' is missing")
    # Every section is checked, not only the caller's: a typo anywhere in the file (say from
    # `dvc exp run -S +trian.seed=1`) fails the first stage that runs, before any work.
    unknown = sorted(str(name) for name in set(document) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section '{unknown[0]}'; valid sections are: {', '.join(SECTIONS)}")
    parsed = {name: parse_section(name, values) for name, values in document.items()}
    return parsed[section]


def parse_section(section: str, values: object):
    """Build and validate the dataclass of `section` from its raw mapping."""
    cls = SECTIONS[section]
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ParamsError(f"{section}: expected a mapping of keys, got {values!r}")
    fields = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ParamsError(f"{section}.{unknown[0]}: unknown key; valid keys are: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    typed = {key: _coerce(section, key, value, hints[key]) for key, value in values.items()}
    params = cls(**typed)
    params.check(section)
    return params


def _coerce(section: str, key: str, value: object, expected: object) -> object:
    """Return `value` if it fits the annotation `expected` (ints widen to floats), else raise."""
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if typing.get_origin(option) is Literal and value in typing.get_args(option):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option in (int, str, bool) and type(value) is option:
            return value
    allowed = " or ".join(_describe(option) for option in options)
    raise ParamsError(f"{section}.{key}: got {value!r} ({type(value).__name__}); expected {allowed}")


def _describe(option: object) -> str:
    if typing.get_origin(option) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(option))
    return "null" if option is type(None) else getattr(option, "__name__", str(option))


def _check_seed(section: str, seed: int, key: str = "seed") -> None:
    _require(0 <= seed <= MAX_SEED, section, key, seed, f"an integer from 0 to {MAX_SEED}")


def _require(ok: bool, section: str, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ParamsError(f"{section}.{key}: got {value!r}; expected {allowed}")
