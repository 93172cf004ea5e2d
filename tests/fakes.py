"""Generated test data: ratings in every release's layout, archives, wheels and digests (never real MovieLens files)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

from movielens_pipeline.releases import RatingsLayout
from movielens_pipeline.schema import SOURCE_ROW

TAB_LAYOUT = RatingsLayout(name="tab", separator="\t", has_header=False, max_bytes=1 << 20)
CSV_LAYOUT = RatingsLayout(name="csv", separator=",", has_header=True, max_bytes=1 << 20)
DOUBLE_COLON_LAYOUT = RatingsLayout(name="double-colon", separator="::", has_header=False, max_bytes=1 << 20)
CSV_HEADER = "userId,movieId,rating,timestamp"

Row = tuple[int, int, float, int]


def make_rows(n_ratings: int, n_users: int = 20, n_movies: int = 30, seed: int = 0) -> list[Row]:
    """Random ratings with distinct (user, movie) pairs, half-star ratings and increasing timestamps."""
    rng = np.random.default_rng(seed)
    assert n_ratings <= n_users * n_movies
    pairs = rng.choice(n_users * n_movies, n_ratings, replace=False)
    ratings = rng.integers(1, 11, n_ratings) / 2
    timestamps = 874_000_000 + np.arange(n_ratings) * 60
    # Ids start at 1 and leave gaps, like real releases after filtering.
    return [
        (int(pair // n_movies) * 3 + 1, int(pair % n_movies) * 7 + 2, float(rating), int(timestamp))
        for pair, rating, timestamp in zip(pairs, ratings, timestamps, strict=True)
    ]


def low_rank_rows(n_users: int = 300, n_movies: int = 150, per_user: int = 40, seed: int = 0) -> list[Row]:
    """Integer ratings 1-5 from biases + rank-4 factors + noise, so a real model can beat the mean."""
    rng = np.random.default_rng(seed)
    user_bias, movie_bias = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_movies)
    user_factors, movie_factors = rng.normal(0, 0.6, (n_users, 4)), rng.normal(0, 0.6, (n_movies, 4))
    rows = []
    for user in range(n_users):
        for movie in rng.choice(n_movies, per_user, replace=False):
            score = 3.5 + user_bias[user] + movie_bias[movie] + user_factors[user] @ movie_factors[movie]
            rating = float(np.clip(np.rint(score + rng.normal(0, 0.3)), 1, 5))
            rows.append((user + 1, int(movie) + 1, rating, 880_000_000 + int(rng.integers(0, 10_000_000))))
    return rows


def format_rating(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def tab_lines(rows: list[Row]) -> list[str]:
    return [f"{user}\t{movie}\t{format_rating(rating)}\t{timestamp}\n" for user, movie, rating, timestamp in rows]


def tab_bytes(rows: list[Row]) -> bytes:
    return "".join(tab_lines(rows)).encode()


def write_tab(path: Path, rows: list[Row], extra_lines: dict[int, str] | None = None) -> Path:
    """Write `rows` as a headerless tab file; `extra_lines` maps a 1-based line number to a raw line put there."""
    lines = tab_lines(rows)
    for number, line in sorted((extra_lines or {}).items()):
        lines.insert(number - 1, line)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[Row]) -> Path:
    body = "".join(f"{u},{m},{format_rating(r)},{t}\n" for u, m, r, t in rows)
    path.write_text(f"{CSV_HEADER}\n{body}", encoding="utf-8")
    return path


def ratings_frame(rows: list[Row]) -> pl.DataFrame:
    """The frame preprocess filters and indexes: what read_ratings makes of `rows`, numbered in file order."""
    return pl.DataFrame(
        rows,
        schema={"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float32, "timestamp": pl.Int64},
        orient="row",
    ).with_row_index(SOURCE_ROW)


def low_rank_split(
    n_users: int = 200, n_movies: int = 100, per_user: int = 30
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame]:
    """`low_rank_rows` indexed and split as the preprocess and split stages do (the committed split params): the
    parts by name, and the users and movies tables."""
    from harness import project_params  # the committed params.yaml

    from movielens_pipeline.preprocess import index_ratings
    from movielens_pipeline.split import split_ratings

    ratings, users, movies = index_ratings(ratings_frame(low_rank_rows(n_users, n_movies, per_user)))
    return split_ratings(ratings, project_params("split")), users, movies


def indexed_frame(pairs: list[tuple[int, int]]) -> pl.DataFrame:
    """A tiny prepared-ratings frame with the mapped id columns that split works on."""
    return pl.DataFrame(
        {
            "userIdMapped": [user for user, _ in pairs],
            "movieIdMapped": [movie for _, movie in pairs],
            "rating": [3.0] * len(pairs),
        },
        schema={"userIdMapped": pl.UInt32, "movieIdMapped": pl.UInt32, "rating": pl.Float32},
    )


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def sha256_of(path_or_bytes: Path | bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return hashlib.sha256(data).hexdigest()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def make_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal pure-Python wheel pip accepts: `members` plus METADATA, WHEEL and RECORD."""
    dist_info = f"{name}-{version}.dist-info"
    files = dict(members)
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [f"{member},sha256={_record_digest(data)},{len(data)}" for member, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    return make_zip(folder / f"{name}-{version}-py3-none-any.whl", files)


def _record_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


# --- release archives in each release's exact layout (generated, never real MovieLens files) ---

# movieId, title (None: the release's placeholder record, no title), genres in the normalised
# vocabulary. Titles cover commas, quotes, colons and non-ASCII letters.
MovieRow = tuple[int, str | None, list[str]]
FIXTURE_MOVIES: list[MovieRow] = [
    (1, "Toy Story (1995)", ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]),
    (11, "American President, The (1995)", ["Comedy", "Drama", "Romance"]),
    (32, "Twelve Monkeys (a.k.a. 12 Monkeys) (1995)", ["Mystery", "Sci-Fi", "Thriller"]),
    (267, None, []),
    (543, "Misérables, Les (1995)", ["Drama", "Musical"]),
    (1104, 'Bugs Bunny "Special" Edition, The (1999)', ["Animation"]),
    (2001, "Star Trek: First Contact (1996)", ["Action", "Sci-Fi"]),
    (2002, "Colon at the end: (1997)", ["Drama"]),
]
UNLISTED_MOVIE = 99_999  # rated, but missing from the movies file: its title and genres are null
U_ITEM_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
RELEASE_FOLDERS = {"ml-10m": "ml-10M100K"}
INTEGER_RATINGS = ("ml-100k", "ml-1m")


def release_rows(name: str, n_users: int = 12, seed: int = 0) -> list[Row]:
    """Ratings of every fixture movie (and one unlisted) by a few users, on the release's rating scale."""
    rng = np.random.default_rng(seed)
    movies = [movie for movie, _, _ in FIXTURE_MOVIES] + [UNLISTED_MOVIE]
    rows = []
    for user in range(1, n_users + 1):
        for movie in rng.choice(movies, size=len(movies) // 2 + 1, replace=False):
            stars = int(rng.integers(1, 6)) if name in INTEGER_RATINGS else int(rng.integers(1, 11)) / 2
            rows.append((user * 5, int(movie), float(stars), 874_000_000 + int(rng.integers(0, 10**8))))
    return rows


def _u_item_line(movie: int, title: str | None, genres: list[str]) -> str:
    names = ["Children's" if genre == "Children" else genre for genre in genres] or ["unknown"]
    flags = "|".join("1" if genre in names else "0" for genre in U_ITEM_GENRES)
    if title is None:
        return f"{movie}|unknown||||{flags}\n"
    url = "http://us.imdb.com/M/title-exact?" + title.replace(" ", "%20")
    return f"{movie}|{title}|01-Jan-1995||{url}|{flags}\n"


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


def release_members(name: str, rows: list[Row], movies: list[MovieRow] = FIXTURE_MOVIES) -> dict[str, bytes]:
    """The members of `name`'s zip: folder, file names, separators, headers and encodings as GroupLens ships them."""
    folder = RELEASE_FOLDERS.get(name, name)
    members = {f"{folder}/": b""}
    if name == "ml-100k":
        members[f"{folder}/README"] = b"fixture\n"
        members[f"{folder}/u.data"] = tab_bytes(rows)
        items = "".join(_u_item_line(*movie) for movie in movies)
        members[f"{folder}/u.item"] = items.encode("iso-8859-1")
        members[f"{folder}/u.genre"] = "".join(f"{g}|{i}\n" for i, g in enumerate(U_ITEM_GENRES)).encode()
    elif name in ("ml-1m", "ml-10m"):
        children = "Children's" if name == "ml-1m" else "Children"
        lines = [f"{u}::{m}::{format_rating(r)}::{t}\n" for u, m, r, t in rows]
        members[f"{folder}/ratings.dat"] = "".join(lines).encode()
        movie_lines = []
        for movie, title, genres in movies:
            listed = "|".join(children if g == "Children" else g for g in genres) or "(no genres listed)"
            movie_lines.append(f"{movie}::{title or 'unknown'}::{listed}\n")
        members[f"{folder}/movies.dat"] = "".join(movie_lines).encode("iso-8859-1")
        members[f"{folder}/README.html"] = b"<html>fixture</html>\n"
    else:
        body = "".join(f"{u},{m},{r:.1f},{t}\n" for u, m, r, t in rows)
        members[f"{folder}/ratings.csv"] = f"{CSV_HEADER}\n{body}".encode()
        movie_lines = [
            f"{movie},{_csv_field(title or 'unknown')},{'|'.join(genres) or '(no genres listed)'}\n"
            for movie, title, genres in movies
        ]
        members[f"{folder}/movies.csv"] = ("movieId,title,genres\n" + "".join(movie_lines)).encode("utf-8")
        members[f"{folder}/links.csv"] = b"movieId,imdbId,tmdbId\n1,0114709,862\n"
        members[f"{folder}/README.txt"] = b"fixture\n"
    return members


def make_release_zip(folder: Path, name: str, rows: list[Row], movies: list[MovieRow] = FIXTURE_MOVIES) -> Path:
    """Write `<name>.zip` in the release's layout and the `<name>.zip.md5` GroupLens publishes beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = make_zip(folder / f"{name}.zip", release_members(name, rows, movies))
    (folder / f"{name}.zip.md5").write_text(f"MD5 ({name}.zip) = {md5_of(archive)}\n", encoding="ascii")
    return archive


def recbole_item_bytes(movies: list[MovieRow] = FIXTURE_MOVIES) -> bytes:
    """The recbole wheel's ml-100k.item for `movies`: header, title and year apart, genres space-separated."""
    lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    for movie, title, genres in movies:
        names = " ".join("Children's" if g == "Children" else g for g in genres) or "unknown"
        if title is None:
            lines.append(f"{movie}\tunkonwn\tunkonwn\t{names}\n")
        else:
            bare, year = title.rsplit(" (", 1)
            lines.append(f"{movie}\t{bare}\t{year.rstrip(')')}\t{names}\n")
    return "".join(lines).encode("utf-8")
