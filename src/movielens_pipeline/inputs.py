"""Every table and manifest a stage or the CLI reads, checked on the way in: one reader per kind of file.

A file that is missing, not what its format says, or whose columns, types or values are not
what the pipeline writes (a renamed column, ratings as strings, a NaN or a rating off the
scale, an index outside the users or movies table) ends with one line naming the file, the row
where it matters, and what was expected: before any heavy work, and before anything is written.
A checkpoint is checked where it is read, by `models.load_model`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl

from .errors import PipelineError
from .schema import MOVIE_INDEX, RATING_MAX, RATING_MIN, USER_INDEX

# What each column of a ratings table must hold: "id" a whole number, "rating" a number on the scale.
RATINGS_COLUMNS = {
    "userId": "id",
    "movieId": "id",
    "rating": "rating",
    "timestamp": "id",
    USER_INDEX: "id",
    MOVIE_INDEX: "id",
}
INDEX_COLUMNS = {"user": ("userId", USER_INDEX), "movie": ("movieId", MOVIE_INDEX)}


class InputError(PipelineError):
    """A file a stage reads that is missing or not what the pipeline writes there."""


def read_parquet(source: Path | bytes, name: str) -> pl.DataFrame:
    """The Parquet table at `source` (a path, or the file's bytes), named `name` in messages."""
    try:
        return pl.read_parquet(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise InputError(f"{name}: not found; the stage that writes it has not run (dvc repro)") from None
    except (pl.exceptions.PolarsError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{name}: not a readable Parquet file ({reason})") from None


def read_ratings(
    source: Path | bytes,
    name: str,
    n_users: int | None = None,
    n_movies: int | None = None,
    allow_empty: bool = True,
) -> pl.DataFrame:
    """A ratings table as the pipeline writes it: the columns of RATINGS_COLUMNS, whole-number ids, finite
    ratings on the rating scale, and (given the index sizes) indices within the users and movies tables."""
    table = read_parquet(source, name)
    check_columns(table, name, RATINGS_COLUMNS, "a ratings table")
    if not allow_empty and table.height == 0:
        raise InputError(f"{name}: no ratings; expected at least one")
    rating = pl.col("rating")
    off_scale = rating.is_null() | rating.is_nan() | (rating < RATING_MIN) | (rating > RATING_MAX)
    first_row(table, off_scale, name, "rating", f"a rating from {RATING_MIN} to {RATING_MAX}")
    for column, size, table_name in ((USER_INDEX, n_users, "users"), (MOVIE_INDEX, n_movies, "movies")):
        outside = pl.col(column).is_null() | (pl.col(column) < 0)
        if size is not None:
            outside = outside | (pl.col(column) >= size)
        expected = f"an index from 0 to {size - 1} (the {table_name} table's)" if size else "an index >= 0"
        first_row(table, outside, name, column, expected)
    return table


def scan_ratings(source: Path | bytes, name: str, n_users: int, n_movies: int) -> pl.LazyFrame:
    """The ratings table at `source` as a lazy scan, for a reader that needs only some of its rows: its columns
    are checked now, from the file's footer; the rows' values are the reader's to check (`read_ratings` on the
    whole file names the first bad one)."""
    try:
        ratings = pl.scan_parquet(source)
        schema = ratings.collect_schema()
    except (pl.exceptions.PolarsError, OSError):
        read_ratings(source, name, n_users, n_movies)  # names the file and what makes it unreadable
        raise
    check_columns(pl.DataFrame(schema=schema), name, RATINGS_COLUMNS, "a ratings table")
    return ratings


def read_index(source: Path | bytes, name: str, kind: str) -> pl.DataFrame:
    """The users or movies table (`kind` "user" or "movie"): distinct ids, and indices 0 to n - 1, each once."""
    table = read_parquet(source, name)
    id_column, index_column = INDEX_COLUMNS[kind]
    check_columns(table, name, {id_column: "id", index_column: "id"}, f"the {kind} index")
    if table[id_column].null_count() or table[id_column].n_unique() != table.height:
        raise InputError(f"{name}: {id_column} holds a repeated or missing id; expected one row per {kind}")
    indices = table[index_column]
    if (
        indices.null_count()
        or table.height
        and (indices.n_unique() != table.height or indices.max() != table.height - 1)
    ):
        raise InputError(f"{name}: {index_column} must number the {table.height} rows 0 to {table.height - 1}")
    return table


def read_indexes(users_path: Path, movies_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The prepare stage's user and movie index tables, each checked as `read_index` checks it."""
    return read_index(users_path, str(users_path), "user"), read_index(movies_path, str(movies_path), "movie")


def read_manifest(path: Path, name: str, keys: tuple[str, ...]) -> dict:
    """A JSON mapping the pipeline wrote (dataset.json), with at least `keys`."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{name}: not found; the stage that writes it has not run (dvc repro)") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{name}: not readable JSON ({error})") from None
    if not isinstance(document, dict):
        raise InputError(f"{name}: expected a JSON mapping, got {type(document).__name__}")
    missing = [key for key in keys if key not in document]
    if missing:
        raise InputError(f"{name}: no key '{missing[0]}'; expected {', '.join(keys)}")
    return document


def check_columns(table: pl.DataFrame, name: str, columns: dict[str, str], what: str) -> None:
    """Refuse a table without one of `columns`, or whose column holds the wrong kind of value."""
    for column, kind in columns.items():
        if column not in table.columns:
            raise InputError(f"{name}: no column '{column}'; {what} has {', '.join(columns)}")
        dtype = table.schema[column]
        fits = dtype.is_integer() if kind == "id" else dtype.is_numeric()
        if not fits:
            expected = "whole numbers" if kind == "id" else "numbers"
            raise InputError(f"{name}: column '{column}' holds {dtype}; expected {expected}")


def first_row(table: pl.DataFrame, bad: pl.Expr, name: str, column: str, expected: str) -> None:
    """Refuse the table if a row matches `bad`, naming the first such row (1-based) and its value."""
    found = table.with_row_index("row", offset=1).filter(bad).select("row", column).head(1)
    if found.height:
        row, value = found.row(0)
        more = table.select(bad.sum()).item() - 1
        others = f" (and {more} more rows)" if more else ""
        raise InputError(f"{name}: row {row}: {column} is {value!r}{others}; expected {expected}")
