"""Turn a release's raw files into the canonical, validated, filtered, indexed tables.

Writes ratings.parquet (the canonical table), users.parquet, movies.parquet (with the
normalised title and genres) and dataset.json (the data set's name and, for the
synthetic twin, the noise floor: the best RMSE a model can hope for).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from .atomic import write_json, write_parquet
from .errors import PipelineError
from .params import PreprocessParams
from .releases import (
    MANIFEST_FILE,
    MOVIES_CSV,
    MOVIES_DAT,
    PARQUET,
    RATINGS_LAYOUTS,
    RECBOLE_ITEM,
    U_ITEM,
    Manifest,
    RatingsLayout,
)
from .schema import MOVIE_INDEX, MOVIES_SCHEMA, RATING_MAX, RATING_MIN, RATINGS_SCHEMA, SOURCE_ROW, USER_INDEX

DOUBLE_COLON = "::"
# u.item's 19 genre flag columns, in order (the release's u.genre).
U_ITEM_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
U_ITEM_FIELDS = 5 + len(U_ITEM_GENRES)  # id, title, release date, video release date, IMDb URL, flags
# Normalised genres use the vocabulary of ml-20m and later: no "unknown" or "(no genres
# listed)" entries (an empty list says it) and "Children" for the older "Children's".
NO_GENRE = frozenset({"unknown", "(no genres listed)"})
GENRE_RENAMES = {"Children's": "Children"}
# ml-100k's placeholder record (movie 267) has no title; the recbole copy misspells it.
NO_TITLE = frozenset({"unknown", "unkonwn"})
TRUE_SCORE = "true_score"  # synthetic only: the noiseless score, clipped to the rating scale


class DataError(PipelineError):
    """Input data that breaks the canonical table's rules; the message names file and line."""


def read_ratings(path: Path, layout: RatingsLayout) -> pl.DataFrame:
    """Parse a release's ratings file into userId, movieId, rating, timestamp and its line number."""
    path = Path(path)
    if layout.separator == DOUBLE_COLON:
        return _read_double_colon(path, layout)
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


def _read_double_colon(path: Path, layout: RatingsLayout) -> pl.DataFrame:
    """Parse `a::b::c::d` lines: polars splits on ':' (multi-threaded), which leaves an empty field between.

    polars cannot split on a two-character separator; as every value is a number, splitting on
    one ':' is exact, and any line where a gap field is not empty is malformed.
    """
    gaps = ["gap1", "gap2", "gap3"]
    names = ["userId", gaps[0], "movieId", gaps[1], "rating", gaps[2], "timestamp"]
    try:
        parsed = pl.read_csv(
            path,
            separator=":",
            has_header=False,
            quote_char=None,
            new_columns=names,
            schema_overrides={**RATINGS_SCHEMA, **dict.fromkeys(gaps, pl.String)},
            row_index_name="line",
            row_index_offset=1,
        )
    except pl.exceptions.PolarsError as error:
        raise DataError(_describe_parse_failure(path, layout, error)) from None
    malformed = (
        parsed.width != len(names) + 1
        or parsed.select(
            pl.any_horizontal(pl.col(gaps).is_not_null()) | pl.any_horizontal(pl.col(list(RATINGS_SCHEMA)).is_null())
        )
        .to_series()
        .any()
    )
    if malformed:
        raise DataError(_describe_parse_failure(path, layout, ValueError("a line is not four fields")))
    return parsed.select("line", *RATINGS_SCHEMA)


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
    """Add contiguous userIdMapped / movieIdMapped (by ascending id) to ratings with a source_row; return
    ratings, users, movies."""
    users = _index(ratings, "userId", USER_INDEX)
    movies = _index(ratings, "movieId", MOVIE_INDEX)
    indexed = (
        ratings.join(users.drop("n_ratings"), on="userId")
        .join(movies.drop("n_ratings"), on="movieId")
        .sort(["userId", "timestamp", "movieId"])
        .select(*RATINGS_SCHEMA, USER_INDEX, MOVIE_INDEX, SOURCE_ROW)
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


def read_movies(path: Path, movies_format: str) -> pl.DataFrame:
    """Parse a release's movies file into movieId, title and genres (a list), normalised across releases."""
    path = Path(path)
    if movies_format == PARQUET:
        movies = pl.read_parquet(path)
    elif movies_format == MOVIES_CSV:
        try:
            raw = pl.read_csv(path, schema={"movieId": pl.Int64, "title": pl.String, "genres": pl.String})
        except pl.exceptions.PolarsError as error:
            raise DataError(f"{path}: cannot be parsed as movieId,title,genres: {str(error).splitlines()[0]}") from None
        movies = raw.with_columns(pl.col("genres").str.split("|"))
    elif movies_format == MOVIES_DAT:
        fields = _lines(path, "iso-8859-1").str.extract_groups(r"^(\d+)::(.*)::(.*)$")
        _check_lines(path, fields.struct.field("1").is_null(), "MovieID::Title::Genres")
        movies = fields.struct.unnest().select(
            movieId=pl.col("1").cast(pl.Int64), title=pl.col("2"), genres=pl.col("3").str.split("|")
        )
    elif movies_format == U_ITEM:
        fields = _lines(path, "iso-8859-1").str.split("|")
        _check_lines(path, fields.list.len() != U_ITEM_FIELDS, f"{U_ITEM_FIELDS} '|'-separated fields")
        flags = [pl.when(pl.col("f").list.get(5 + i) == "1").then(pl.lit(g)) for i, g in enumerate(U_ITEM_GENRES)]
        movies = fields.to_frame("f").select(
            movieId=pl.col("f").list.get(0).cast(pl.Int64),
            title=pl.col("f").list.get(1),
            genres=pl.concat_list(flags).list.drop_nulls(),
        )
    elif movies_format == RECBOLE_ITEM:
        raw = pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False, encoding="utf8")
        raw.columns = ["movieId", "title", "year", "genres"]
        # u.item's title is "<title> (<year>)"; the recbole copy keeps the two apart.
        year = pl.col("year").str.strip_chars()
        movies = raw.select(
            movieId=pl.col("movieId").cast(pl.Int64),
            title=pl.when(year.str.contains(r"^\d{4}$")).then(pl.format("{} ({})", "title", year)).otherwise("title"),
            genres=pl.col("genres").str.split(" "),
        )
    else:
        raise ValueError(f"unknown movies format {movies_format!r}")
    return normalise_movies(movies, str(path))


def normalise_movies(movies: pl.DataFrame, source: str) -> pl.DataFrame:
    """One vocabulary across releases: stripped titles (null for a placeholder), genre lists without 'none' entries."""
    title = pl.col("title").str.strip_chars()
    genre = pl.element().str.strip_chars().replace(GENRE_RENAMES)
    normalised = movies.select(
        "movieId",
        title=pl.when(title.is_in(list(NO_TITLE)) | (title == "")).then(None).otherwise(title),
        genres=pl.col("genres").list.eval(genre.filter(~genre.is_in(list(NO_GENRE)) & (genre != ""))),
    ).cast(MOVIES_SCHEMA)
    duplicated = normalised.filter(pl.col("movieId").is_duplicated())
    if duplicated.height:
        raise DataError(f"{source}: movie {duplicated['movieId'][0]} is listed more than once")
    return normalised.sort("movieId")


def _lines(path: Path, encoding: str) -> pl.Series:
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not {encoding} text: {error}") from None
    return pl.Series("line", text.splitlines(), dtype=pl.String)


def _check_lines(path: Path, bad: pl.Series, expected: str) -> None:
    if bad.any():
        number = int(bad.arg_true()[0]) + 1
        raise DataError(f"{path}, line {number}: expected {expected}")


def read_raw(raw_dir: Path) -> tuple[Manifest, pl.DataFrame, pl.DataFrame | None]:
    """The manifest, the raw ratings (with a line column) and movies (None if the source had none) in `raw_dir`."""
    raw_dir = Path(raw_dir)
    manifest = Manifest.read(raw_dir)
    ratings_path = raw_dir / manifest.ratings_file
    if manifest.ratings_format == PARQUET:
        ratings = pl.read_parquet(ratings_path).with_row_index("line", offset=1)
    elif manifest.ratings_format in RATINGS_LAYOUTS:
        ratings = read_ratings(ratings_path, RATINGS_LAYOUTS[manifest.ratings_format])
    else:
        raise DataError(f"{raw_dir / MANIFEST_FILE}: unknown ratings format {manifest.ratings_format!r}")
    if manifest.movies_file is None:
        return manifest, ratings, None
    return manifest, ratings, read_movies(raw_dir / manifest.movies_file, manifest.movies_format)


def noise_floor_rmse(ratings: pl.DataFrame) -> float | None:
    """RMSE of the true (noiseless, clipped) scores against the ratings, where the data set has them."""
    if TRUE_SCORE not in ratings.columns:
        return None
    error = pl.col("rating").cast(pl.Float64) - pl.col(TRUE_SCORE).cast(pl.Float64)
    return math.sqrt(ratings.select((error * error).mean()).item())


def preprocess(raw_dir: Path, params: PreprocessParams, out_dir: Path) -> dict:
    """Read, validate, filter and index the raw files in `raw_dir`; write the tables and dataset.json into `out_dir`."""
    manifest, ratings, movies = read_raw(raw_dir)
    validate_ratings(ratings, str(Path(raw_dir) / manifest.ratings_file))
    # The raw ratings are in file order: number them before the filters drop any.
    kept = filter_ratings(ratings.drop("line").with_row_index(SOURCE_ROW), params)
    indexed, users, movie_index = index_ratings(kept)
    if movies is None:
        movies = pl.DataFrame(schema=MOVIES_SCHEMA)
    movie_table = movie_index.join(movies, on="movieId", how="left").sort("movieId")
    write_parquet(indexed, out_dir / "ratings.parquet", "the prepared ratings")
    write_parquet(users, out_dir / "users.parquet", "the user index")
    write_parquet(movie_table, out_dir / "movies.parquet", "the movie index")
    noise_floor = noise_floor_rmse(kept)
    description = {
        "dataset": manifest.dataset,
        "noise_floor_rmse": None if noise_floor is None else round(noise_floor, 6),
        # Over what the noise floor is measured: the same ratings split and evaluate see.
        "noise_floor_over": None if noise_floor is None else "ratings kept by the preprocess filters",
        "ratings": indexed.height,
        "users": users.height,
        "movies": movie_table.height,
        "movies_with_title": movie_table["title"].is_not_null().sum(),
    }
    write_json(description, out_dir / "dataset.json", "the data set's description")
    return {"raw_rows": ratings.height, "rows": indexed.height, "users": users.height, "movies": movie_table.height}
