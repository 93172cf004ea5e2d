"""inputs.py: each kind of file a stage reads is checked on the way in, with one line naming file, row and value."""

from __future__ import annotations

import polars as pl
import pytest

from movielens_pipeline.inputs import InputError, read_index, read_indexes, read_manifest, read_parquet, read_ratings


def ratings(**changes) -> pl.DataFrame:
    table = pl.DataFrame(
        {
            "userId": [1, 1, 2],
            "movieId": [10, 20, 10],
            "rating": [4.0, 3.5, 5.0],
            "timestamp": [100, 200, 300],
            "userIdMapped": [0, 0, 1],
            "movieIdMapped": [0, 1, 0],
        },
        schema_overrides={"rating": pl.Float32, "userIdMapped": pl.UInt32, "movieIdMapped": pl.UInt32},
    )
    return table.with_columns(**{name: pl.Series(name, values) for name, values in changes.items()})


def written(tmp_path, table: pl.DataFrame, name: str = "part.parquet"):
    path = tmp_path / name
    table.write_parquet(path)
    return path


def test_a_table_as_the_pipeline_writes_it_passes(tmp_path):
    path = written(tmp_path, ratings())
    assert read_ratings(path, "train.parquet", n_users=2, n_movies=2).equals(ratings())
    assert read_ratings(path.read_bytes(), "train.parquet at main").height == 3  # from a revision's bytes


@pytest.mark.parametrize("content", [b"", b"PAR1 not really", b"garbage" * 100])
def test_a_file_that_is_not_parquet_is_named(tmp_path, content):
    path = tmp_path / "train.parquet"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"^data/split/train\.parquet: not a readable Parquet file \("):
        read_parquet(path, "data/split/train.parquet")


def test_a_truncated_parquet_file_is_named(tmp_path):
    path = written(tmp_path, ratings())
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InputError, match=r"part\.parquet: not a readable Parquet file"):
        read_ratings(path, "part.parquet")


def test_a_missing_file_says_which_and_what_writes_it(tmp_path):
    with pytest.raises(InputError, match=r"^nowhere\.parquet: not found; the stage that writes it has not run"):
        read_ratings(tmp_path / "nowhere.parquet", "nowhere.parquet")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (ratings().rename({"rating": "stars"}), "no column 'rating'; a ratings table has userId, movieId, rating"),
        (ratings(rating=["4", "3.5", "5"]), "column 'rating' holds String; expected numbers"),
        (ratings(userId=[1.0, 1.5, 2.0]), "column 'userId' holds Float64; expected whole numbers"),
        (ratings(rating=[4.0, float("nan"), 5.0]), "row 2: rating is nan; expected a rating from 0.5 to 5.0"),
        (ratings(rating=[400.0, 350.0, 500.0]), r"row 1: rating is 400.0 \(and 2 more rows\); expected a rating"),
        (ratings(rating=[4.0, None, 5.0]), "row 2: rating is None; expected a rating"),
        (ratings(userIdMapped=[0, 0, 7]), r"row 3: userIdMapped is 7; expected an index from 0 to 1 \(the users"),
        (ratings(movieIdMapped=[0, 2, 0]), r"row 2: movieIdMapped is 2; expected an index from 0 to 1 \(the movies"),
    ],
)
def test_a_ratings_table_that_is_not_what_the_pipeline_writes_is_refused(tmp_path, table, message):
    with pytest.raises(InputError, match=rf"^part\.parquet: {message}"):
        read_ratings(written(tmp_path, table), "part.parquet", n_users=2, n_movies=2)


def test_an_empty_table_is_refused_where_ratings_are_needed(tmp_path):
    path = written(tmp_path, ratings().head(0))
    assert read_ratings(path, "val.parquet").height == 0
    with pytest.raises(InputError, match=r"^test\.parquet: no ratings; expected at least one"):
        read_ratings(path, "test.parquet", allow_empty=False)


def test_an_index_table_numbers_its_rows_from_zero(tmp_path):
    users = pl.DataFrame({"userId": [5, 9], "userIdMapped": [0, 1]}, schema_overrides={"userIdMapped": pl.UInt32})
    assert read_index(written(tmp_path, users), "users.parquet", "user").height == 2
    for broken in (users.with_columns(userIdMapped=pl.Series([0, 2])), users.with_columns(userId=pl.Series([5, 5]))):
        with pytest.raises(InputError, match=r"^users\.parquet: (userIdMapped must number|userId holds a repeated)"):
            read_index(written(tmp_path, broken), "users.parquet", "user")
    with pytest.raises(InputError, match=r"^movies\.parquet: no column 'movieId'"):
        read_index(written(tmp_path, users, "movies.parquet"), "movies.parquet", "movie")


def test_the_stages_read_both_index_tables_each_named_by_its_path(tmp_path):
    users = written(tmp_path, pl.DataFrame({"userId": [5], "userIdMapped": [0]}), "users.parquet")
    movies = written(tmp_path, pl.DataFrame({"movieId": [7, 3], "movieIdMapped": [0, 1]}), "movies.parquet")
    assert [table.height for table in read_indexes(users, movies)] == [1, 2]
    with pytest.raises(InputError, match=r"^.*movies\.parquet: no column 'userId'"):
        read_indexes(movies, users)  # the tables swapped: the file read as the users' is named


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not readable JSON"),
        ("{not json", "not readable JSON"),
        ("[1, 2]", "expected a JSON mapping, got list"),
        ('{"dataset": "ml-100k"}', "no key 'noise_floor_rmse'; expected noise_floor_rmse"),
    ],
)
def test_a_manifest_that_is_not_the_pipelines_is_named(tmp_path, text, message):
    path = tmp_path / "dataset.json"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"^dataset\.json: {message}"):
        read_manifest(path, "dataset.json", ("noise_floor_rmse",))
