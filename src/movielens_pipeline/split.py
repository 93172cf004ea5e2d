"""Train/val/test splits: the seed's random one, by time per user, or ML-100K's own folds; deterministic, every
rating in one part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from .atomic import write_json, write_parquet
from .datasets import FOLDS_RELEASE
from .errors import PipelineError
from .inputs import read_manifest, read_ratings
from .params import SplitParams
from .schema import SOURCE_ROW, USER_INDEX

PARTS = ("train", "val", "test")
# ML-100K's folds as its mku.sh cuts them from u.data: u1-u5 test on consecutive blocks of 20,000 lines, ua/ub
# (allbut.pl) on each user's ratings number 1-10 / 11-20 in file order.
ML_100K_RATINGS = 100_000
FOLD_TEST_ROWS = 20_000
ALLBUT_TEST_NUMBERS = {"ua": (1, 10), "ub": (11, 20)}


class SplitError(PipelineError):
    """A split that would leave a part empty."""


def split_ratings(ratings: pl.DataFrame, params: SplitParams, dataset: str | None = None) -> dict[str, pl.DataFrame]:
    """The parts `params.strategy` cuts: `random` (the seed's), `temporal` (each user's latest ratings held out)
    or `given` (ML-100K's fold: `dataset` must be it); without the source_row column."""
    if params.strategy == "given":
        parts = given_split(ratings, params, dataset)
    elif params.strategy == "temporal":
        parts = temporal_split(ratings, params)
    else:
        parts = random_split(ratings, params)
    return {name: part.drop(SOURCE_ROW, strict=False) for name, part in parts.items()}


def random_split(ratings: pl.DataFrame, params: SplitParams) -> dict[str, pl.DataFrame]:
    """Shuffle row numbers with the seed and cut them by the fractions; test gets the rest."""
    n_rows = ratings.height
    n_train = round(n_rows * params.train_fraction)
    n_val = round(n_rows * params.val_fraction)
    _refuse_empty_parts({"train": n_train, "val": n_val, "test": n_rows - n_train - n_val}, n_rows, params)
    order = np.random.default_rng(params.seed).permutation(n_rows)
    bounds = np.cumsum([0, n_train, n_val, n_rows - n_train - n_val])
    # Each part keeps the prepared table's row order, so its bytes depend only on its content.
    return {part: ratings[np.sort(order[bounds[i] : bounds[i + 1]])] for i, part in enumerate(PARTS)}


def temporal_split(ratings: pl.DataFrame, params: SplitParams) -> dict[str, pl.DataFrame]:
    """Per user, in time order: the first `train_fraction` of their ratings train, the next `val_fraction`
    val, the latest test (rounded per user; ties in time by movieId). No part predicts a user's past from
    their future, as a random split does; a user with one rating keeps it in train."""
    position = pl.int_range(pl.len()).over(USER_INDEX, order_by=["timestamp", "movieId"])
    count = pl.len().over(USER_INDEX)
    part = (
        pl.when(position < (count * params.train_fraction).round())
        .then(0)
        .when(position < (count * (params.train_fraction + params.val_fraction)).round())
        .then(1)
        .otherwise(2)
    )
    labels = ratings.select(part.alias("part"))["part"].to_numpy()
    sizes = {name: int((labels == i).sum()) for i, name in enumerate(PARTS)}
    _refuse_empty_parts(sizes, ratings.height, params)
    return {name: ratings.filter(pl.Series(labels == i)) for i, name in enumerate(PARTS)}


def given_split(ratings: pl.DataFrame, params: SplitParams, dataset: str | None) -> dict[str, pl.DataFrame]:
    """ML-100K's fold `params.fold`: its test part as the release defines it, val `val_fraction` of all ratings
    drawn with the seed from the fold's base part, train the rest of the base part."""
    if dataset != FOLDS_RELEASE:
        raise SplitError(
            f"split.strategy: got 'given' for the data set {dataset!r}; only {FOLDS_RELEASE} ships its own folds "
            "(u1-u5, ua, ub): use split.strategy random or temporal"
        )
    source_rows = ratings[SOURCE_ROW]
    if (
        ratings.height != ML_100K_RATINGS
        or source_rows.n_unique() != ML_100K_RATINGS
        or source_rows.max() >= ML_100K_RATINGS
    ):
        raise SplitError(
            f"split.strategy: got 'given' with {ratings.height:,} prepared ratings; ML-100K's folds are defined "
            f"on all {ML_100K_RATINGS:,} of u.data's lines: set preprocess.sample_size and top_n_movies to null "
            "and both minimum counts to 1"
        )
    row = pl.col(SOURCE_ROW)
    if params.fold in ALLBUT_TEST_NUMBERS:
        first, last = ALLBUT_TEST_NUMBERS[params.fold]
        number = pl.int_range(1, pl.len() + 1).over("userId", order_by=SOURCE_ROW)
        in_test = number.is_between(first, last)
    else:
        fold_number = int(params.fold[1:])
        in_test = row.is_between(FOLD_TEST_ROWS * (fold_number - 1), FOLD_TEST_ROWS * fold_number, closed="left")
    labels = np.where(ratings.select(in_test).to_series().to_numpy(), 2, 0)
    base_rows = np.flatnonzero(labels == 0)
    n_val = round(ratings.height * params.val_fraction)
    if n_val >= base_rows.size:
        raise SplitError(
            f"split.val_fraction: got {params.val_fraction}; fold {params.fold}'s base part has {base_rows.size:,} "
            f"ratings, fewer than the {n_val:,} val would take"
        )
    # Drawn over the base rows in source order, so val does not depend on how preprocess sorts.
    base_in_source_order = base_rows[np.argsort(source_rows.to_numpy()[base_rows], kind="stable")]
    labels[np.random.default_rng(params.seed).choice(base_in_source_order, n_val, replace=False)] = 1
    return {name: ratings.filter(pl.Series(labels == i)) for i, name in enumerate(PARTS)}


def _refuse_empty_parts(sizes: dict[str, int], n_rows: int, params: SplitParams) -> None:
    empty = [part for part, size in sizes.items() if size <= 0]
    if empty:
        raise SplitError(
            f"{n_rows} ratings split ({params.strategy}) by train_fraction={params.train_fraction}, "
            f"val_fraction={params.val_fraction} leave the {' and '.join(empty)} part empty"
        )


def split_stats(parts: dict[str, pl.DataFrame]) -> dict:
    """Rows, users and movies per part, and how many val/test users or movies training never saw."""
    train_users = parts["train"]["userIdMapped"].unique()
    train_movies = parts["train"]["movieIdMapped"].unique()
    total = sum(part.height for part in parts.values())
    stats = {}
    for name, part in parts.items():
        stats[name] = {
            "rows": part.height,
            "fraction": round(part.height / total, 6),
            "users": part["userIdMapped"].n_unique(),
            "movies": part["movieIdMapped"].n_unique(),
        }
        if name != "train":
            stats[name]["users_unseen_in_train"] = _count_unseen(part["userIdMapped"], train_users)
            stats[name]["movies_unseen_in_train"] = _count_unseen(part["movieIdMapped"], train_movies)
    return stats


def _count_unseen(indices: pl.Series, seen: pl.Series) -> int:
    return int((~indices.unique().is_in(seen.implode())).sum())


def split(prepared_ratings: Path, dataset_json: Path, params: SplitParams, out_dir: Path) -> dict:
    """Split the prepared ratings (of the data set preprocess's `dataset_json` names) and write train/val/test
    Parquet files and stats.json into `out_dir`."""
    ratings = read_ratings(prepared_ratings, str(prepared_ratings), allow_empty=False)
    dataset = read_manifest(dataset_json, str(dataset_json), ("dataset",))["dataset"]
    parts = split_ratings(ratings, params, dataset)
    for name, part in parts.items():
        write_parquet(part, out_dir / f"{name}.parquet", f"the {name} ratings")
    stats = split_stats(parts)
    write_json(stats, out_dir / "stats.json", "the split's statistics")
    return stats
