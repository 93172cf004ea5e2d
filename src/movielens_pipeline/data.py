"""The one home of the ratings a model sees: a data module over the split's tables.

Each part (train, val, predict) becomes four tensors once, in `setup`, on the device the
model trains on (moved there once per fit, not once per batch); an epoch is one
permutation of the row numbers, drawn on that device, and each batch a slice of it: no
per-sample `__getitem__` and no collate, which is what makes an epoch fast.

`RatingsDataModule` has a LightningDataModule's hooks (`setup`, `train_dataloader`, ...)
without being one: the gradient path's Lightning module (`training.gradient.Fitting`) calls
them and tells it the Trainer's device and this process's shard (`place`); the sweep path
takes the training data and the val tensors from it whole. Nothing here imports Lightning,
so serving (the CSR index, the models' `DataShape`) and the sweep path do not pay for its import.

Batches come in two layouts, as a gradient model asks (`GradientModel.batches`): "ratings", any
ratings in random order, or "movies", the ratings of movies in random order, grouped by
movie, so that a batch holds few movies, each (but at a batch's two ends) with all its
ratings: what a movie-based autoencoder trains on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch
from torch import Tensor

from .schema import MOVIE_INDEX, USER_INDEX


@dataclass(frozen=True)
class TrainingData:
    """What a model may learn from besides the loss: the training ratings' users and movies, and genres."""

    users: Tensor  # int64 user index of each training rating
    movies: Tensor  # int64 movie index of each training rating
    ratings: Tensor  # float32 rating of each training rating
    days: Tensor  # float64 day (timestamp / 86,400) of each training rating
    movie_genres: Tensor  # float32 (n_movies, n_genres) multi-hot; n_genres may be 0
    movie_years: Tensor | None = None  # int64 (n_movies,) release year, 0 where unknown; None: not read


@dataclass(frozen=True)
class DataShape:
    """What a model is sized by: the index space, the genres and the training ratings it is fitted on."""

    n_users: int
    n_movies: int
    n_genres: int
    n_train_ratings: int
    train_mean: float


# Every release's titles end in the movie's year, "Toy Story (1995)" (recbole's copy once preprocessed).
TITLE_YEAR = r"\((\d{4})\)\s*$"
Part = tuple[Tensor, Tensor, Tensor, Tensor]  # user index, movie index, rating, day: one row per rating
Batches = Literal["ratings", "movies"]
SECONDS_PER_DAY = 86_400


class RatingBatches:
    """Batches of (user index, movie index, rating, day) tensors, each a slice of the whole part.

    Under data-parallel training each of `world_size` processes iterates its own RatingBatches
    with the same generator seed, so all draw the same permutation; from each global batch
    of `batch_size` rows, process `rank` takes every `world_size`-th row from `rank` on. Every
    rating is then used once per epoch across processes, the global batch size is unchanged,
    shards differ by at most one row, and every process takes the same number of steps.

    `group_by_movie`: each pass permutes the movies, not the ratings, and takes the rows movie by
    movie in that order (a movie's own ratings in their row order), then slices as before.
    """

    def __init__(
        self,
        part: Part,
        batch_size: int,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world_size: int = 1,
        group_by_movie: bool = False,
    ):
        # The generator lives on the tensors' device, so the permutation is drawn where the slices are taken.
        self.part = part
        self.n_rows = len(part[0])
        self.batch_size = batch_size
        self.generator = generator  # None: in row order; else a new permutation per pass
        self.rank, self.world_size = rank, world_size
        self.group_by_movie = group_by_movie

    def __len__(self) -> int:
        return len(self.batch_starts()) - 1

    def batch_starts(self) -> list[int]:
        """Where each batch starts, then the end; a last batch with fewer rows than processes joins the one before."""
        n_rows = self.n_rows
        starts = list(range(0, n_rows, self.batch_size)) + [n_rows]
        if len(starts) > 2 and starts[-1] - starts[-2] < self.world_size:
            del starts[-2]
        return starts

    def __iter__(self) -> Iterator[Part]:
        order = None
        if self.generator is not None:
            order = self.movie_order() if self.group_by_movie else self.rating_order()
        elif self.world_size > 1:
            order = torch.arange(self.n_rows, device=self.part[0].device)
        starts = self.batch_starts()
        for start, end in zip(starts[:-1], starts[1:], strict=True):
            rows = slice(start, end) if order is None else order[start:end][self.rank :: self.world_size]
            yield tuple(column[rows] for column in self.part)

    def rating_order(self) -> Tensor:
        """A random order of the rows."""
        return torch.randperm(self.n_rows, generator=self.generator, device=self.generator.device)

    def movie_order(self) -> Tensor:
        """The rows grouped by movie, the movies in a random order."""
        movies = self.part[1]
        movie_rank = torch.randperm(int(movies.max()) + 1, generator=self.generator, device=self.generator.device)
        return torch.argsort(movie_rank[movies], stable=True)


def device_of(accelerator: str) -> torch.device:
    """The device `train.accelerator` or `evaluate.accelerator` names: `auto` takes a GPU (or Apple's MPS) when
    there is one, as Lightning's `auto` does."""
    if accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if accelerator == "auto" and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def rating_tensors(ratings: pl.DataFrame) -> Part:
    """A ratings table's user indices, movie indices (int64), ratings (float32) and days since 1970 (float64)."""
    return (
        torch.from_numpy(ratings[USER_INDEX].to_numpy().astype(np.int64)),
        torch.from_numpy(ratings[MOVIE_INDEX].to_numpy().astype(np.int64)),
        torch.from_numpy(ratings["rating"].to_numpy().astype(np.float32)),
        days_of(ratings["timestamp"].to_numpy()),
    )


def days_of(timestamps: np.ndarray) -> Tensor:
    """Unix seconds as days since 1970, the time every model reads: float64, which holds a whole second exactly
    (float32 days step by 84 seconds in 1998, by 169 since 2015: sessions of a minute need the clock's)."""
    return torch.from_numpy(timestamps / SECONDS_PER_DAY)


def genre_names(movies: pl.DataFrame) -> list[str]:
    """The genres the movies table knows, sorted: the columns of `genre_matrix`."""
    if "genres" not in movies.columns:
        return []
    return sorted(set(movies["genres"].explode().drop_nulls().to_list()))


def genre_matrix(movies: pl.DataFrame) -> Tensor:
    """Multi-hot (n_movies, n_genres) float32 genres in movie index order; no columns if none are known."""
    names = genre_names(movies)
    if not names:
        return torch.zeros(movies.height, 0)
    genres = movies.sort(MOVIE_INDEX)["genres"]
    matrix = torch.zeros(movies.height, len(names))
    for row, movie_genres in enumerate(genres.to_list()):
        for name in movie_genres or []:
            matrix[row, names.index(name)] = 1.0
    return matrix


def release_years(movies: pl.DataFrame) -> Tensor:
    """Each movie's release year, from its title's "(YYYY)" ending: int64 in movie index order, 0 where it has none."""
    if "title" not in movies.columns:
        return torch.zeros(movies.height, dtype=torch.int64)
    years = movies.sort(MOVIE_INDEX)["title"].str.extract(TITLE_YEAR, 1).cast(pl.Int64).fill_null(0)
    return torch.from_numpy(years.to_numpy().copy())


def csr_index(keys: Tensor, n_keys: int) -> tuple[Tensor, Tensor]:
    """A CSR index of rows by key (a user or movie index): `starts` (n_keys + 1), where key k's rows begin in
    `order`, and `order`, the row numbers grouped by key (each key's rows in their row order)."""
    starts = torch.zeros(n_keys + 1, dtype=torch.int64, device=keys.device)
    starts[1:] = torch.cumsum(torch.bincount(keys, minlength=n_keys), dim=0)
    if bool(
        (keys[1:] >= keys[:-1]).all()
    ):  # the split's parts are sorted by user: a sort would cost a second at 17.5 M
        return starts, torch.arange(len(keys), device=keys.device)
    return starts, torch.argsort(keys, stable=True)


def csr_rows(starts: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """The rows of each key's segment in a CSR index (`starts[k]:starts[k + 1]`), concatenated, and where
    each key's rows begin among them: the indices and offsets of an `EmbeddingBag` over those segments."""
    lengths = starts[keys + 1] - starts[keys]
    offsets = torch.cumsum(lengths, dim=0) - lengths
    within = torch.arange(int(lengths.sum()), device=keys.device) - offsets.repeat_interleave(lengths)
    return starts[keys].repeat_interleave(lengths) + within, offsets


class RatingsDataModule:
    """Train, val and predict ratings as tensors, batched by slicing; the index space from the users and movies tables.

    Any part may be left out: evaluate gives only `train` (for its statistics) and `predict`.
    `batches` is the training batches' layout the model asks for (`GradientModel.batches`); `batched` sets it
    and the batch size. The tensors live on
    `device` (the CPU by default) and each batch is whole, until a fit `place`s them on its own.
    """

    def __init__(
        self,
        batch_size: int | None = None,
        *,
        batches: Batches = "ratings",
        train: pl.DataFrame | None = None,
        val: pl.DataFrame | None = None,
        predict: pl.DataFrame | None = None,
        users: pl.DataFrame | None = None,
        movies: pl.DataFrame | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
    ):
        self.batch_size = batch_size
        self.tables = {"train": train, "val": val, "predict": predict}
        self.users, self.movies = users, movies
        self.seed = seed
        self.device = torch.device("cpu" if device is None else device)
        self.rank, self.world_size = 0, 1  # this process's shard of each batch (`RatingBatches`)
        self.tensors: dict[str, Part] = {}
        self.batches = batches

    @classmethod
    def from_parquet(cls, batch_size: int | None = None, seed: int = 0, **paths: Path | None) -> RatingsDataModule:
        """The module over the Parquet files named by part (train, val, predict) and table (users, movies)."""
        tables = {name: None if path is None else pl.read_parquet(path) for name, path in paths.items()}
        return cls(batch_size, seed=seed, **tables)

    def place(self, device: torch.device, rank: int = 0, world_size: int = 1) -> None:
        """Fit on `device`, as process `rank` of `world_size` (DDP): the Trainer's, before `setup`."""
        self.device, self.rank, self.world_size = torch.device(device), rank, world_size

    def setup(self, stage: str | None = None) -> None:
        """Turn each part into tensors, once, and put them on the device (a no-op once they are there)."""
        for part, table in self.tables.items():
            if table is not None:
                self.part(part)
        device = self.device
        self.tensors = {part: tuple(t.to(device) for t in tensors) for part, tensors in self.tensors.items()}

    @property
    def n_users(self) -> int:
        return self.users.height

    @property
    def n_movies(self) -> int:
        return self.movies.height

    def train_mean(self) -> float:
        """The mean training rating: the baseline's prediction and where the biases start."""
        return float(self.tables["train"]["rating"].mean())

    def shape(self) -> DataShape:
        """What a model trained on this module is sized by."""
        return DataShape(
            self.n_users, self.n_movies, len(genre_names(self.movies)), self.tables["train"].height, self.train_mean()
        )

    def with_val_in_training(self) -> RatingsDataModule:
        """A module like this one whose training part is train + val, and without validation (refit's)."""
        train = pl.concat([self.tables["train"], self.tables["val"]])
        return self.with_tables(self.batch_size, self.batches, {"train": train, "val": None, "predict": None})

    def batched(self, batch_size: int, batches: Batches) -> RatingsDataModule:
        """A module over the same tables whose training batches have `batch_size` ratings, laid out as `batches`."""
        return self.with_tables(batch_size, batches, self.tables)

    def with_tables(
        self, batch_size: int | None, batches: Batches, tables: dict[str, pl.DataFrame | None]
    ) -> RatingsDataModule:
        """A new module over `tables` (train, val, predict), this one's users, movies, seed and device."""
        return RatingsDataModule(
            batch_size,
            batches=batches,
            **tables,
            users=self.users,
            movies=self.movies,
            seed=self.seed,
            device=self.device,
        )

    def part(self, part: str) -> Part:
        """The tensors of `part`, made from its table the first time they are asked for."""
        if part not in self.tensors:
            self.tensors[part] = rating_tensors(self.tables[part])
        return self.tensors[part]

    def training_data(self) -> TrainingData:
        """What a model may learn from besides the loss (see `RatingModel.remember`), on the CPU.

        The training tensors themselves, not a copy, unless setup has already put them on an accelerator.
        """
        users, movies, ratings, days = (column.cpu() for column in self.part("train"))
        return TrainingData(users, movies, ratings, days, genre_matrix(self.movies), release_years(self.movies))

    def train_dataloader(self) -> RatingBatches:
        # One generator for the whole fit: each epoch draws the next permutation from it (the same on every process).
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        group_by_movie = self.batches == "movies"
        return RatingBatches(
            self.tensors["train"], self.batch_size, generator, self.rank, self.world_size, group_by_movie
        )

    def val_dataloader(self) -> RatingBatches | list:
        if "val" not in self.tensors:  # a fit without validation (train's refit on train + val)
            return []
        return RatingBatches(self.tensors["val"], self.batch_size, None, self.rank, self.world_size)

    def predict_dataloader(self) -> RatingBatches:
        return RatingBatches(self.tensors["predict"], self.batch_size)
