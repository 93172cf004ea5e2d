"""preprocess.py on generated ratings: parsing, validation with file and line, filters, indexing, output."""

from __future__ import annotations

import polars as pl
import pytest
from fakes import CSV_LAYOUT, TAB_LAYOUT, make_rows, ratings_frame, write_csv, write_tab
from harness import project_params

from movielens_pipeline.params import PreprocessParams
from movielens_pipeline.preprocess import (
    RATINGS_SCHEMA,
    DataError,
    filter_ratings,
    index_ratings,
    preprocess,
    read_ratings,
    validate_ratings,
)
from movielens_pipeline.releases import Manifest, ManifestError
from movielens_pipeline.schema import SOURCE_ROW

ROWS = make_rows(60, seed=3)


# --- read_ratings ------------------------------------------------------------------------


def test_read_tab_file_gives_typed_columns_and_line_numbers(tmp_path):
    ratings = read_ratings(write_tab(tmp_path / "u.data", ROWS), TAB_LAYOUT)
    assert dict(ratings.schema) == {"line": pl.UInt32, **RATINGS_SCHEMA}
    assert ratings.drop("line").rows() == ROWS
    assert ratings["line"].to_list() == list(range(1, len(ROWS) + 1))


def test_read_csv_with_header_skips_it_and_numbers_lines_from_two(tmp_path):
    ratings = read_ratings(write_csv(tmp_path / "ratings.csv", ROWS), CSV_LAYOUT)
    assert ratings.drop("line").rows() == ROWS
    assert ratings["line"].to_list() == list(range(2, len(ROWS) + 2))


def test_read_then_validate_accepts_generated_ratings(tmp_path):
    path = write_tab(tmp_path / "u.data", ROWS)
    validate_ratings(read_ratings(path, TAB_LAYOUT), str(path))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1\t2\tabc\t3\n", "expected integer ids, a numeric rating and an integer timestamp, got '1\\t2\\tabc\\t3'"),
        ("1\t2.5\t4\t3\n", "expected integer ids, a numeric rating and an integer timestamp"),
        ("1\t2\t4\n", "expected 4 fields (userId, movieId, rating, timestamp) separated by '\\t', got 3"),
        ("1\t2\t4\t3\t9\n", "expected 4 fields (userId, movieId, rating, timestamp) separated by '\\t', got 5"),
        ("\n", "expected 4 fields (userId, movieId, rating, timestamp) separated by '\\t', got 1"),
    ],
    ids=["garbage-rating", "float-id", "too-few-fields", "too-many-fields", "blank-line"],
)
def test_unparsable_line_is_named_by_read_ratings(tmp_path, line, expected):
    path = write_tab(tmp_path / "u.data", ROWS[:10], extra_lines={6: line})
    with pytest.raises(DataError) as raised:
        read_ratings(path, TAB_LAYOUT)
    assert str(raised.value).startswith(f"{path}, line 6: {expected}")


def test_short_first_line_is_named_by_read_ratings(tmp_path):
    path = write_tab(tmp_path / "u.data", ROWS[:5], extra_lines={1: "1\t2\t4\n"})
    with pytest.raises(DataError, match=r", line 1: expected 4 fields .* got 3"):
        read_ratings(path, TAB_LAYOUT)


def test_short_line_in_a_csv_counts_the_header(tmp_path):
    path = write_csv(tmp_path / "ratings.csv", ROWS[:5])
    path.write_text(path.read_text(encoding="utf-8") + "7,8,4\n", encoding="utf-8")
    with pytest.raises(DataError) as raised:
        read_ratings(path, CSV_LAYOUT)
    assert str(raised.value).startswith(f"{path}, line 7: expected 4 fields")


def test_empty_file_is_a_clear_data_error(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"")
    with pytest.raises(DataError) as raised:
        read_ratings(path, TAB_LAYOUT)
    assert str(raised.value).startswith(str(path))
    assert "empty" in str(raised.value)


def test_header_only_csv_has_no_ratings(tmp_path):
    path = write_csv(tmp_path / "ratings.csv", [])
    ratings = read_ratings(path, CSV_LAYOUT)
    with pytest.raises(DataError, match=r"ratings\.csv: no ratings$"):
        validate_ratings(ratings, str(path))


# --- validate_ratings ------------------------------------------------------------------------


def validation_error(tmp_path, bad_line: str, at: int = 5) -> str:
    path = write_tab(tmp_path / "u.data", ROWS[:10], extra_lines={at: bad_line})
    ratings = read_ratings(path, TAB_LAYOUT)
    with pytest.raises(DataError) as raised:
        validate_ratings(ratings, str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}, line {at}: ")
    return message


@pytest.mark.parametrize("rating", ["6", "0", "5.5", "-1", "nan", "inf"])
def test_rating_off_the_scale_names_file_and_line(tmp_path, rating):
    message = validation_error(tmp_path, f"999\t999\t{rating}\t1\n")
    assert "is not a half star from 0.5 to 5.0 (1 rows in all)" in message


def test_rating_off_the_half_star_grid_names_file_and_line(tmp_path):
    message = validation_error(tmp_path, "999\t999\t3.3\t1\n", at=8)
    assert "rating 3.3 " in message and "is not a half star" in message


@pytest.mark.parametrize("rating", [0.5, 1.0, 2.5, 5.0])
def test_ratings_on_the_half_star_grid_are_accepted(rating):
    validate_ratings(ratings_frame([(1, 1, rating, 1)]).with_row_index("line", offset=1), "ok")


def test_duplicate_user_movie_pair_names_the_first_line(tmp_path):
    user, movie, _, _ = ROWS[2]  # line 3
    message = validation_error(tmp_path, f"{user}\t{movie}\t4\t5\n", at=3)
    assert message.endswith(f"user {user} rated movie {movie} more than once (2 rows in all)")


@pytest.mark.parametrize(
    ("line", "column"),
    [("\t2\t4\t5\n", "userId"), ("1\t\t4\t5\n", "movieId"), ("1\t2\t\t5\n", "rating"), ("1\t2\t4\t\n", "timestamp")],
)
def test_null_field_names_the_column_and_line(tmp_path, line, column):
    message = validation_error(tmp_path, line, at=4)
    assert message.endswith(f"{column} is missing (1 rows in all)")


def test_validation_counts_every_offending_row(tmp_path):
    path = write_tab(tmp_path / "u.data", ROWS[:10], extra_lines={3: "900\t1\t7\t1\n", 9: "901\t1\t8\t1\n"})
    with pytest.raises(DataError, match=r"line 3: rating 7 .*\(2 rows in all\)"):
        validate_ratings(read_ratings(path, TAB_LAYOUT), str(path))


# --- filter_ratings -----------------------------------------------------------------------------


def rows_for_counts(counts: dict[int, int]) -> list[tuple[int, int, float, int]]:
    """Ratings in which movie m has counts[m] ratings, from users 1, 2, ..."""
    return [(user, movie, 4.0, 100 * movie + user) for movie, n in counts.items() for user in range(1, n + 1)]


def test_top_n_movies_keeps_the_most_rated_and_breaks_ties_by_movie_id():
    ratings = ratings_frame(rows_for_counts({30: 2, 10: 3, 50: 1, 20: 2, 5: 2, 40: 4}))
    kept = filter_ratings(ratings, project_params("preprocess", top_n_movies=3))
    # 40 (4) and 10 (3), then the three-way tie at 2 ratings goes to the smallest id, 5.
    assert sorted(kept["movieId"].unique().to_list()) == [5, 10, 40]
    assert kept.height == 4 + 3 + 2


def test_top_n_movies_does_not_depend_on_row_order():
    ratings = ratings_frame(rows_for_counts({30: 2, 10: 3, 20: 2, 5: 2}))
    params = project_params("preprocess", top_n_movies=2)
    expected = set(filter_ratings(ratings, params)["movieId"])
    for seed in range(5):
        shuffled = ratings.sample(fraction=1.0, shuffle=True, seed=seed)
        assert set(filter_ratings(shuffled, params)["movieId"]) == expected == {5, 10}


def test_top_n_movies_larger_than_the_catalogue_keeps_everything():
    ratings = ratings_frame(ROWS)
    assert filter_ratings(ratings, project_params("preprocess", top_n_movies=10_000)).equals(ratings)


def test_minimum_counts_are_applied_until_nothing_changes():
    # Users 1-3 rate movies 1-3 (a dense core). User 4 rates movies 3 and 4; user 5 rates
    # movie 4 only. Minimum 2 of each: the first pass drops user 5, which leaves movie 4
    # with one rating; the second drops movie 4, which leaves user 4 with one; the third
    # drops user 4.
    core = [(user, movie, 3.0, 1) for user in (1, 2, 3) for movie in (1, 2, 3)]
    ratings = ratings_frame(core + [(4, 3, 3.0, 1), (4, 4, 3.0, 1), (5, 4, 3.0, 1)])
    params = project_params("preprocess", min_ratings_per_user=2, min_ratings_per_movie=2)
    one_pass = ratings.filter((pl.len().over("userId") >= 2) & (pl.len().over("movieId") >= 2))
    assert one_pass.height == len(core) + 2  # one pass is not enough here
    kept = filter_ratings(ratings, params)
    assert sorted(kept.select("userId", "movieId").rows()) == sorted((u, m) for u, m, _, _ in core)
    assert kept.group_by("userId").len()["len"].min() >= 2
    assert kept.group_by("movieId").len()["len"].min() >= 2


def test_minimum_counts_of_one_keep_everything_in_order():
    ratings = ratings_frame(ROWS)
    assert filter_ratings(ratings, project_params("preprocess")).equals(ratings)


def test_sample_is_seeded_reproducible_and_keeps_row_order():
    ratings = ratings_frame(ROWS)
    first = filter_ratings(ratings, project_params("preprocess", sample_size=20, seed=7))
    again = filter_ratings(ratings, project_params("preprocess", sample_size=20, seed=7))
    other = filter_ratings(ratings, project_params("preprocess", sample_size=20, seed=8))
    assert first.height == 20
    assert first.equals(again)
    assert not first.equals(other)
    # Generated timestamps increase with the row number, so kept order shows as sorted timestamps.
    assert first["timestamp"].is_sorted()
    assert set(first.rows()) <= set(ratings.rows())


def test_sample_size_at_or_above_the_row_count_keeps_everything():
    ratings = ratings_frame(ROWS)
    assert filter_ratings(ratings, project_params("preprocess", sample_size=len(ROWS), seed=1)).equals(ratings)
    assert filter_ratings(ratings, project_params("preprocess", sample_size=10 * len(ROWS), seed=1)).equals(ratings)


def test_filters_that_leave_nothing_raise_naming_the_params():
    ratings = ratings_frame(ROWS)
    params = project_params("preprocess", top_n_movies=3, min_ratings_per_user=500)
    with pytest.raises(DataError) as raised:
        filter_ratings(ratings, params)
    message = str(raised.value)
    assert "left no ratings" in message
    assert "top_n_movies=3" in message and "min_ratings_per_user=500" in message
    assert "min_ratings_per_movie=1" in message and "params.yaml" in message


# --- index_ratings -------------------------------------------------------------------------------


def test_index_is_contiguous_uint32_by_ascending_id():
    ratings = ratings_frame(ROWS)
    indexed, users, movies = index_ratings(ratings)
    for table, id_column, index_column in ((users, "userId", "userIdMapped"), (movies, "movieId", "movieIdMapped")):
        assert table.columns == [id_column, index_column, "n_ratings"]
        assert table[index_column].dtype == pl.UInt32 and table["n_ratings"].dtype == pl.UInt32
        assert table[index_column].to_list() == list(range(table.height))
        assert table[id_column].to_list() == sorted(set(ratings[id_column]))
        counts = dict(ratings.group_by(id_column).len().rows())
        assert dict(zip(table[id_column], table["n_ratings"], strict=True)) == counts
    assert indexed.columns == [*RATINGS_SCHEMA, "userIdMapped", "movieIdMapped", SOURCE_ROW]
    assert indexed["userIdMapped"].dtype == pl.UInt32 and indexed["movieIdMapped"].dtype == pl.UInt32


def test_indexed_ratings_agree_with_the_mapping_tables():
    ratings = ratings_frame(ROWS)
    indexed, users, movies = index_ratings(ratings)
    user_index = dict(users.select("userId", "userIdMapped").rows())
    movie_index = dict(movies.select("movieId", "movieIdMapped").rows())
    for row in indexed.iter_rows(named=True):
        assert user_index[row["userId"]] == row["userIdMapped"]
        assert movie_index[row["movieId"]] == row["movieIdMapped"]
    # Every rating is kept exactly once, sorted by user, time and movie.
    assert sorted(indexed.select(ratings.columns).rows()) == sorted(ratings.rows())
    assert indexed.select("userId", "timestamp", "movieId").rows() == sorted(
        indexed.select("userId", "timestamp", "movieId").rows()
    )


# --- preprocess end to end ------------------------------------------------------------------------


def run_preprocess(tmp_path, name: str, params: PreprocessParams) -> tuple[dict, dict[str, bytes]]:
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir(exist_ok=True)
    write_tab(raw_dir / "u.data", make_rows(300, n_users=30, n_movies=40, seed=5))
    Manifest("ml-100k", "u.data", "tab", None, None).write(raw_dir)
    out_dir = tmp_path / name
    out_dir.mkdir()
    summary = preprocess(raw_dir, params, out_dir)
    return summary, {path.name: path.read_bytes() for path in sorted(out_dir.iterdir())}


def test_preprocess_writes_three_tables_byte_identical_across_runs(tmp_path):
    params = project_params(
        "preprocess", sample_size=250, top_n_movies=30, min_ratings_per_user=3, min_ratings_per_movie=2
    )
    summary, first = run_preprocess(tmp_path, "first", params)
    again_summary, again = run_preprocess(tmp_path, "second", params)
    assert sorted(first) == ["dataset.json", "movies.parquet", "ratings.parquet", "users.parquet"]
    assert first == again
    assert summary == again_summary
    prepared = pl.read_parquet(tmp_path / "first" / "ratings.parquet")
    assert summary["raw_rows"] == 300
    assert summary["rows"] == prepared.height < 250
    assert summary["users"] == pl.read_parquet(tmp_path / "first" / "users.parquet").height
    assert summary["movies"] == pl.read_parquet(tmp_path / "first" / "movies.parquet").height
    assert prepared.group_by("userId").len()["len"].min() >= 3


@pytest.mark.parametrize(("layout", "write"), [("tab", write_tab), ("csv", write_csv)])
def test_prepared_ratings_keep_each_ratings_record_number_in_the_file(tmp_path, layout, write):
    # split.strategy `given` cuts ML-100K's folds by u.data's line order, which the prepared table's sort loses.
    rows = make_rows(200, n_users=20, n_movies=40, seed=3)
    write(tmp_path / "ratings", rows)  # a CSV has a header line, which is not a record
    Manifest("ml-100k", "ratings", layout, None, None).write(tmp_path)
    out_dir = tmp_path / "prepared"
    out_dir.mkdir()
    preprocess(tmp_path, project_params("preprocess", min_ratings_per_user=2), out_dir)
    prepared = pl.read_parquet(out_dir / "ratings.parquet")
    assert 0 < prepared.height <= len(rows) and not prepared[SOURCE_ROW].is_sorted()
    for row in prepared.select("userId", "movieId", SOURCE_ROW).iter_rows():
        assert tuple(rows[row[2]][:2]) == row[:2]


def test_preprocess_stops_on_invalid_data_before_writing(tmp_path):
    write_tab(tmp_path / "u.data", ROWS[:10], extra_lines={4: "1\t2\t9\t3\n"})
    Manifest("ml-100k", "u.data", "tab", None, None).write(tmp_path)
    out_dir = tmp_path / "prepared"
    out_dir.mkdir()
    with pytest.raises(DataError, match=r"u\.data, line 4: rating 9 "):
        preprocess(tmp_path, project_params("preprocess"), out_dir)
    assert list(out_dir.iterdir()) == []


def test_preprocess_without_a_manifest_says_which_stage_writes_it(tmp_path):
    write_tab(tmp_path / "u.data", ROWS[:10])
    with pytest.raises(ManifestError, match=rf"^{tmp_path}/manifest\.json: not found; the download stage writes it"):
        preprocess(tmp_path, project_params("preprocess"), tmp_path)
    (tmp_path / "manifest.json").write_text('{"dataset": "ml-100k"}', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"manifest\.json: not a manifest the download stage wrote"):
        preprocess(tmp_path, project_params("preprocess"), tmp_path)


def test_preprocess_reads_the_format_the_manifest_names_whatever_the_data_set(tmp_path):
    # The data set's name decides nothing here: the manifest's formats do.
    write_csv(tmp_path / "ratings.csv", ROWS[:10])
    Manifest("ml-100k", "ratings.csv", "csv", None, None).write(tmp_path)
    out_dir = tmp_path / "prepared"
    out_dir.mkdir()
    assert preprocess(tmp_path, project_params("preprocess"), out_dir)["rows"] == 10
    Manifest("ml-100k", "ratings.csv", "xlsx", None, None).write(tmp_path)
    with pytest.raises(DataError, match=r"manifest\.json: unknown ratings format 'xlsx'"):
        preprocess(tmp_path, project_params("preprocess"), out_dir)
