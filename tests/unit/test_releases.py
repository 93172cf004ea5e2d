"""Every release end to end: a generated archive in its exact layout, served over HTTP, downloaded, prepared.

The archives are generated (folder names, separators, headers, encodings as GroupLens
ships them), never real MovieLens files.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest
from fakes import (
    DOUBLE_COLON_LAYOUT,
    FIXTURE_MOVIES,
    UNLISTED_MOVIE,
    make_release_zip,
    make_wheel,
    recbole_item_bytes,
    release_members,
    release_rows,
    sha256_of,
    tab_bytes,
)
from harness import project_params

from movielens_pipeline.download import WheelSource, download
from movielens_pipeline.preprocess import DataError, read_movies, read_ratings
from movielens_pipeline.preprocess import preprocess as run_preprocess
from movielens_pipeline.releases import MOVIES_DAT, RECBOLE_ITEM, RELEASES, U_ITEM, Manifest, WheelMirror

EXPECTED_RAW_FILES = {
    "ml-100k": ["manifest.json", "u.data", "u.item"],
    "ml-1m": ["manifest.json", "movies.dat", "ratings.dat"],
    "ml-10m": ["manifest.json", "movies.dat", "ratings.dat"],
}


def serve_release(name: str, tmp_path: Path, faulty_server, monkeypatch) -> list[tuple]:
    """Serve a generated `name`.zip and its .md5 like GroupLens and point the release at them; return the rows."""
    rows = release_rows(name)
    archive = make_release_zip(tmp_path / "mirror", name, rows)
    url = faulty_server.serve(f"/datasets/movielens/{name}.zip", archive.read_bytes())
    faulty_server.serve(f"/datasets/movielens/{name}.zip.md5", (archive.parent / f"{name}.zip.md5").read_bytes())
    # Our archive is not the real one: drop the pinned sums, so the published .md5 decides.
    ratings_file = release_members(name, rows)[RELEASES[name].ratings_member]
    release = dataclasses.replace(
        RELEASES[name],
        archive_url=url,
        archive_md5=None,
        ratings_sha256=sha256_of(ratings_file) if RELEASES[name].ratings_sha256 else None,
    )
    monkeypatch.setitem(RELEASES, name, release)
    return rows


def expected_movies(rated: set[int]) -> list[tuple]:
    listed = {movie: (title, sorted(genres)) for movie, title, genres in FIXTURE_MOVIES}
    return [(movie, *listed.get(movie, (None, None))) for movie in sorted(rated)]


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_release_downloads_and_prepares_into_the_canonical_tables(name, tmp_path, faulty_server, monkeypatch):
    rows = serve_release(name, tmp_path, faulty_server, monkeypatch)
    raw_dir = tmp_path / "data" / "raw" / name
    download(project_params("data", dataset=name, retries=0), raw_dir)
    assert sorted(p.name for p in raw_dir.iterdir()) == EXPECTED_RAW_FILES.get(
        name, ["manifest.json", "movies.csv", "ratings.csv"]
    )

    prepared = tmp_path / "data" / "prepared"
    prepared.mkdir()
    summary = run_preprocess(raw_dir, project_params("preprocess"), prepared)
    ratings = pl.read_parquet(prepared / "ratings.parquet")
    assert summary["rows"] == len(rows)
    assert sorted(ratings.select("userId", "movieId", "rating", "timestamp").rows()) == sorted(rows)
    assert dict(ratings.schema) == {
        "userId": pl.Int64,
        "movieId": pl.Int64,
        "rating": pl.Float32,
        "timestamp": pl.Int64,
        "userIdMapped": pl.UInt32,
        "movieIdMapped": pl.UInt32,
        "source_row": pl.UInt32,
    }
    # Each rating's record number in the release's file, whatever its layout (split.strategy `given`).
    assert ratings.sort("source_row").select("userId", "movieId", "rating", "timestamp").rows() == rows

    movies = pl.read_parquet(prepared / "movies.parquet")
    assert movies.columns == ["movieId", "movieIdMapped", "n_ratings", "title", "genres"]
    assert movies["genres"].dtype == pl.List(pl.String)
    shown = [(m, t, None if g is None else sorted(g)) for m, t, g in movies.select("movieId", "title", "genres").rows()]
    assert shown == expected_movies({movie for _, movie, _, _ in rows})
    assert UNLISTED_MOVIE in movies["movieId"].to_list()

    description = json.loads((prepared / "dataset.json").read_text(encoding="utf-8"))
    assert description["dataset"] == name
    assert description["noise_floor_rmse"] is None
    assert description["movies_with_title"] == len(FIXTURE_MOVIES) - 1  # the placeholder and the unlisted: null


def test_ml_100k_wheel_and_grouplens_give_identical_prepared_tables(tmp_path, monkeypatch):
    """The recbole copy (title and year apart, misspelt placeholder) normalises to u.item's movies, byte for byte."""
    rows = release_rows("ml-100k")
    members = release_members("ml-100k", rows)
    wheel_members = {
        "fakepkg/ml-100k.inter": b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + tab_bytes(rows),
        "fakepkg/ml-100k.item": recbole_item_bytes(),
    }
    wheel = make_wheel(tmp_path / "wheelhouse", "fakepkg", "1.0", wheel_members)
    mirror = WheelMirror("fakepkg==1.0", sha256_of(wheel), "fakepkg/ml-100k.inter", 1, "fakepkg/ml-100k.item")
    release = dataclasses.replace(RELEASES["ml-100k"], ratings_sha256=sha256_of(tab_bytes(rows)), mirror=mirror)
    monkeypatch.setitem(RELEASES, "ml-100k", release)
    options = ("--no-index", "--find-links", str(wheel.parent), "--disable-pip-version-check")

    from_wheel = tmp_path / "wheel" / "raw"
    download(project_params("data"), from_wheel, sources=[WheelSource(mirror, pip_options=options)])
    assert sorted(p.name for p in from_wheel.iterdir()) == ["manifest.json", "ml-100k.item", "u.data"]
    assert Manifest.read(from_wheel) == Manifest("ml-100k", "u.data", "tab", "ml-100k.item", RECBOLE_ITEM)
    from_grouplens = tmp_path / "grouplens" / "raw"
    from_grouplens.mkdir(parents=True)
    (from_grouplens / "u.data").write_bytes(members["ml-100k/u.data"])
    (from_grouplens / "u.item").write_bytes(members["ml-100k/u.item"])
    Manifest("ml-100k", "u.data", "tab", "u.item", U_ITEM).write(from_grouplens)
    assert (from_wheel / "u.data").read_bytes() == (from_grouplens / "u.data").read_bytes()

    outputs = {}
    for raw_dir in (from_wheel, from_grouplens):
        prepared = raw_dir.parent / "prepared"
        prepared.mkdir()
        run_preprocess(raw_dir, project_params("preprocess"), prepared)
        outputs[raw_dir] = {path.name: path.read_bytes() for path in prepared.iterdir()}
    assert outputs[from_wheel] == outputs[from_grouplens]
    assert sorted(outputs[from_wheel]) == ["dataset.json", "movies.parquet", "ratings.parquet", "users.parquet"]


# --- the '::' ratings layout ------------------------------------------------------------------


def test_double_colon_ratings_parse_half_stars_and_number_lines(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_bytes(b"1::122::5::838985046\n1::185::4.5::838983525\n70000::65133::0.5::1231616364\n")
    ratings = read_ratings(path, DOUBLE_COLON_LAYOUT)
    assert ratings.rows() == [
        (1, 1, 122, 5.0, 838985046),
        (2, 1, 185, 4.5, 838983525),
        (3, 70000, 65133, 0.5, 1231616364),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1:122::5::838985046", "expected 4 fields (userId, movieId, rating, timestamp) separated by '::', got 3"),
        ("1::122::5", "expected 4 fields (userId, movieId, rating, timestamp) separated by '::', got 3"),
        ("1::122::5::838985046::7", "expected 4 fields"),
        ("1::x::5::838985046", "expected integer ids, a numeric rating and an integer timestamp"),
        ("1\t122\t5\t838985046", "expected 4 fields (userId, movieId, rating, timestamp) separated by '::', got 1"),
    ],
    ids=["single-colon", "too-few", "too-many", "not-a-number", "tab-separated"],
)
def test_malformed_double_colon_line_is_named(tmp_path, line, expected):
    path = tmp_path / "ratings.dat"
    path.write_text(f"1::1::4::1\n2::2::3::2\n{line}\n3::3::5::3\n", encoding="ascii")
    with pytest.raises(DataError) as raised:
        read_ratings(path, DOUBLE_COLON_LAYOUT)
    assert str(raised.value).startswith(f"{path}, line 3: {expected}")


# --- movies files -------------------------------------------------------------------------------


def test_movies_dat_title_ending_in_a_colon_and_latin1_letters(tmp_path):
    path = tmp_path / "movies.dat"
    path.write_bytes("7::Colon: (1997)::Drama|Children's\n8::Amélie (2001)::(no genres listed)\n".encode("latin-1"))
    assert read_movies(path, MOVIES_DAT).rows() == [
        (7, "Colon: (1997)", ["Drama", "Children"]),
        (8, "Amélie (2001)", []),
    ]


def test_malformed_movies_dat_line_is_named(tmp_path):
    path = tmp_path / "movies.dat"
    path.write_bytes(b"1::Toy Story (1995)::Comedy\nnot a movie line\n")
    with pytest.raises(DataError, match=r"movies\.dat, line 2: expected MovieID::Title::Genres"):
        read_movies(path, MOVIES_DAT)


def test_u_item_with_the_wrong_number_of_fields_is_named(tmp_path):
    path = tmp_path / "u.item"
    path.write_bytes(b"1|Toy Story (1995)|01-Jan-1995||url|0|0|0|1\n")
    with pytest.raises(DataError, match=r"u\.item, line 1: expected 24 '\|'-separated fields"):
        read_movies(path, U_ITEM)


def test_duplicate_movie_id_is_named(tmp_path):
    path = tmp_path / "movies.dat"
    path.write_bytes(b"1::A (1995)::Comedy\n1::B (1996)::Drama\n")
    with pytest.raises(DataError, match=r"movies\.dat: movie 1 is listed more than once"):
        read_movies(path, MOVIES_DAT)
