"""Train/val/test splits: the seed's random one, or by time per user; deterministic, every rating in one part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from .atomic import write_json, write_parquet
from .errors import PipelineError
from .inputs import read_ratings
from .params import SplitParams
from .schema import USER_INDEX

PARTS = ("train", "val", "test")


class SplitError(PipelineError):
    """A split that would leave a part empty."""


def split_ratings(ratings: pl.DataFrame, params: SplitParams) -> dict[str, pl.DataFrame]:
    """The parts `params.strategy` cuts: `random` (the seed's) or `temporal` (each user's latest ratings held out)."""
    if params.strategy == "temporal":
        return temporal_split(ratings, params)
    return random_split(ratings, params)


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


def split(prepared_ratings: Path, params: SplitParams, out_dir: Path) -> dict:
    """Split the prepared ratings and write train/val/test Parquet files and stats.json into `out_dir`."""
    parts = split_ratings(read_ratings(prepared_ratings, str(prepared_ratings), allow_empty=False), params)
    for name, part in parts.items():
        write_parquet(part, out_dir / f"{name}.parquet", f"the {name} ratings")
    stats = split_stats(parts)
    write_json(stats, out_dir / "stats.json", "the split's statistics")
    return stats
