"""Turn a release's ratings file into the canonical, validated, filtered, indexed table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from .errors import PipelineError
from .params import PreprocessParams
from .releases import RatingsLayout

RATINGS_SCHEMA = {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float32, "timestamp": pl.Int64}
RATING_MIN, RATING_MAX = 0.5, 5.0


class DataError(PipelineError):
    """Input data that breaks the canonical table's rules; the message names file and line."""


def read_ratings(path: Path, layout: RatingsLayout) -> pl.DataFrame:
    """Parse a release's ratings file into userId, movieId, rating, timestamp and its line number."""
    path = Path(path)
    try:
        ratings = pl.read_csv(
            path,
            separator=layout.separator,
            has_header=layout.has_header,
            new_columns=list(RATINGS_SCHEMA),
            schema_overrides=RATINGS_SCHEMA,
            row_index_name="line",
            row_index_offset=2 if layout.has_header else 1,
        )
    except pl.exceptions.PolarsError as error:
        raise DataError(_describe_parse_failure(path, layout, error)) from None
    if ratings.width != len(RATINGS_SCHEMA) + 1:
        raise DataError(
            f"{path}: expected {len(RATINGS_SCHEMA)} columns ({', '.join(RATINGS_SCHEMA)}) "
            f"separated by {layout.separator!r}, found {ratings.width - 1}"
        )
    # Polars reads a line with too few fields as nulls instead of failing: name that line.
    if ratings.select(pl.any_horizontal(pl.exclude("line").is_null()).any()).item():
        short_line = _first_bad_line(path, layout, check_values=False)
        if short_line is not None:
            raise DataError(short_line)
    return ratings


def _describe_parse_failure(path: Path, layout: RatingsLayout, error: Exception) -> str:
    """Find the first line polars could not parse and say what is wrong with it."""
    bad_line = _first_bad_line(path, layout)
    return bad_line or f"{path}: cannot be parsed as ratings: {str(error).splitlines()[0]}"


def _first_bad_line(path: Path, layout: RatingsLayout, check_values: bool = True) -> str | None:
    """Describe the first line with the wrong number of fields (or, with check_values, unparsable ones)."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if number == 1 and layout.has_header:
                continue
            fields = raw.rstrip(b"\r\n").split(layout.separator.encode())
            shown = raw[:80].decode("utf-8", errors="replace").rstrip()
            if len(fields) != len(RATINGS_SCHEMA):
                return (
                    f"{path}, line {number}: expected {len(RATINGS_SCHEMA)} fields "
                    f"({', '.join(RATINGS_SCHEMA)}) separated by {layout.separator!r}, got {len(fields)}: {shown!r}"
                )
            if not check_values:
                continue
            try:
                int(fields[0]), int(fields[1]), float(fields[2]), int(fields[3])
            except ValueError:
                return (
                    f"{path}, line {number}: expected integer ids, a numeric rating "
                    f"and an integer timestamp, got {shown!r}"
                )
    return None


def validate_ratings(ratings: pl.DataFrame, source: str) -> None:
    """Raise DataError naming the first offending line if the table breaks the canonical rules."""
    if ratings.height == 0:
        raise DataError(f"{source}: no ratings")
    for column in RATINGS_SCHEMA:
        nulls = ratings.filter(pl.col(column).is_null())
        if nulls.height:
            raise DataError(f"{source}, line {nulls['line'][0]}: {column} is missing ({nulls.height} rows in all)")
    off_scale = ratings.filter(
        (pl.col("rating") < RATING_MIN) | (pl.col("rating") > RATING_MAX) | ((pl.col("rating") * 2) % 1 != 0)
    )
    if off_scale.height:
        first = off_scale.row(0, named=True)
        raise DataError(
            f"{source}, line {first['line']}: rating {first['rating']:g} is not a half star from "
            f"{RATING_MIN} to {RATING_MAX} ({off_scale.height} rows in all)"
        )
    duplicates = ratings.filter(pl.struct("userId", "movieId").is_duplicated())
    if duplicates.height:
        first = duplicates.row(0, named=True)
        raise DataError(
            f"{source}, line {first['line']}: user {first['userId']} rated movie {first['movieId']} "
            f"more than once ({duplicates.height} rows in all)"
        )


def filter_ratings(ratings: pl.DataFrame, params: PreprocessParams) -> pl.DataFrame:
    """Apply the seed's filters in order: seeded sample, N most-rated movies, minimum counts."""
    if params.sample_size is not None and params.sample_size < ratings.height:
        rows = np.random.default_rng(params.seed).choice(ratings.height, params.sample_size, replace=False)
        ratings = ratings[np.sort(rows)]
    if params.top_n_movies is not None:
        counts = ratings.group_by("movieId").len()
        # Ties at the cut are broken by movieId, so the choice never depends on row order.
        top_movies = counts.sort(["len", "movieId"], descending=[True, False]).head(params.top_n_movies)
        ratings = ratings.filter(pl.col("movieId").is_in(top_movies["movieId"].implode()))
    # Dropping a user can take a movie below its minimum and back: repeat until stable.
    while True:
        kept = ratings.filter(
            (pl.len().over("userId") >= params.min_ratings_per_user)
            & (pl.len().over("movieId") >= params.min_ratings_per_movie)
        )
        if kept.height == ratings.height:
            break
        ratings = kept
    if ratings.height == 0:
        raise DataError(
            f"the preprocess filters left no ratings (top_n_movies={params.top_n_movies}, "
            f"min_ratings_per_user={params.min_ratings_per_user}, "
            f"min_ratings_per_movie={params.min_ratings_per_movie}): lower them in params.yaml"
        )
    return ratings


def index_ratings(ratings: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Add contiguous userIdMapped / movieIdMapped (by ascending id); return ratings, users, movies."""
    users = _index(ratings, "userId", "userIdMapped")
    movies = _index(ratings, "movieId", "movieIdMapped")
    indexed = (
        ratings.join(users.drop("n_ratings"), on="userId")
        .join(movies.drop("n_ratings"), on="movieId")
        .sort(["userId", "timestamp", "movieId"])
        .select(*RATINGS_SCHEMA, "userIdMapped", "movieIdMapped")
    )
    return indexed, users, movies


def _index(ratings: pl.DataFrame, id_column: str, index_column: str) -> pl.DataFrame:
    return (
        ratings.group_by(id_column)
        .agg(n_ratings=pl.len().cast(pl.UInt32))
        .sort(id_column)
        .with_row_index(index_column)
        .select(id_column, pl.col(index_column).cast(pl.UInt32), "n_ratings")
    )


def preprocess(raw_ratings: Path, layout: RatingsLayout, params: PreprocessParams, out_dir: Path) -> dict:
    """Read, validate, filter and index `raw_ratings`; write the tables into `out_dir`."""
    ratings = read_ratings(raw_ratings, layout)
    validate_ratings(ratings, str(raw_ratings))
    indexed, users, movies = index_ratings(filter_ratings(ratings.drop("line"), params))
    indexed.write_parquet(out_dir / "ratings.parquet")
    users.write_parquet(out_dir / "users.parquet")
    movies.write_parquet(out_dir / "movies.parquet")
    return {"raw_rows": ratings.height, "rows": indexed.height, "users": users.height, "movies": movies.height}
