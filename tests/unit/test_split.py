"""split.py: seeded train/val/test parts that partition the prepared ratings, and their stats."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from fakes import indexed_frame, make_rows, ratings_frame
from harness import project_params

from movielens_pipeline.params import ParamsError, SplitParams, check_split_fits_data
from movielens_pipeline.preprocess import index_ratings
from movielens_pipeline.schema import SOURCE_ROW
from movielens_pipeline.split import PARTS, SplitError, split, split_ratings, split_stats


def prepared(n_ratings: int = 400, seed: int = 0) -> pl.DataFrame:
    """A prepared ratings table as the preprocess stage writes it."""
    indexed, _, _ = index_ratings(ratings_frame(make_rows(n_ratings, n_users=40, n_movies=50, seed=seed)))
    return indexed


def pairs(frame: pl.DataFrame) -> set[tuple[int, int]]:
    return set(frame.select("userId", "movieId").rows())


@pytest.mark.parametrize(
    ("n_rows", "train", "val", "sizes"),
    [
        (400, 0.7, 0.15, (280, 60, 60)),
        (101, 0.7, 0.15, (71, 15, 15)),
        (10, 0.5, 0.3, (5, 3, 2)),
        (3, 0.34, 0.33, (1, 1, 1)),
    ],
)
def test_part_sizes_follow_the_fractions(n_rows, train, val, sizes):
    parts = split_ratings(prepared(n_rows), project_params("split", train_fraction=train, val_fraction=val))
    assert list(parts) == list(PARTS)
    assert tuple(parts[name].height for name in PARTS) == sizes


def test_parts_are_disjoint_and_cover_the_input():
    ratings = prepared()
    parts = split_ratings(ratings, project_params("split"))
    train, val, test = (pairs(parts[name]) for name in PARTS)
    assert not train & val and not train & test and not val & test
    assert train | val | test == pairs(ratings)
    assert sum(part.height for part in parts.values()) == ratings.height
    # Whole rows travel together, with the prepared table's columns but its source row.
    assert ratings.columns[-1] == SOURCE_ROW
    assert sorted(pl.concat(list(parts.values())).rows()) == sorted(ratings.drop(SOURCE_ROW).rows())
    assert all(part.columns == ratings.columns[:-1] for part in parts.values())


def test_parts_keep_the_prepared_row_order():
    ratings = prepared().with_row_index("position")
    for part in split_ratings(ratings, project_params("split", seed=3)).values():
        assert part["position"].is_sorted()


def test_same_seed_gives_identical_parts():
    ratings = prepared()
    first = split_ratings(ratings, project_params("split", seed=11))
    again = split_ratings(ratings, project_params("split", seed=11))
    assert all(first[name].equals(again[name]) for name in PARTS)


def test_different_seed_gives_different_parts():
    ratings = prepared()
    first = split_ratings(ratings, project_params("split", seed=11))
    other = split_ratings(ratings, project_params("split", seed=12))
    assert all(not first[name].equals(other[name]) for name in PARTS)
    assert {name: first[name].height for name in PARTS} == {name: other[name].height for name in PARTS}


def test_split_is_not_just_the_first_rows():
    ratings = prepared()
    parts = split_ratings(ratings, project_params("split"))
    assert not parts["train"].equals(ratings.head(parts["train"].height))


@pytest.mark.parametrize(
    ("n_rows", "train", "val", "empty"),
    [(2, 0.7, 0.15, "val part"), (1, 0.7, 0.15, "val and test part"), (4, 0.1, 0.5, "train part")],
)
def test_an_empty_part_is_refused(n_rows, train, val, empty):
    with pytest.raises(SplitError) as raised:
        split_ratings(prepared(n_rows), project_params("split", train_fraction=train, val_fraction=val))
    message = str(raised.value)
    assert message.startswith(f"{n_rows} ratings split (random) by train_fraction={train}, val_fraction={val}")
    assert message.endswith(f"leave the {empty} empty")


def run_split(tmp_path, name: str) -> tuple[dict, dict[str, bytes]]:
    source, dataset_json = tmp_path / "ratings.parquet", tmp_path / "dataset.json"
    if not source.exists():
        prepared().write_parquet(source)
        dataset_json.write_text(json.dumps({"dataset": "synthetic"}), encoding="utf-8")
    out_dir = tmp_path / name
    out_dir.mkdir()
    stats = split(source, dataset_json, project_params("split", seed=5), out_dir)
    return stats, {path.name: path.read_bytes() for path in sorted(out_dir.iterdir())}


def test_split_writes_byte_identical_files_across_runs(tmp_path):
    stats, first = run_split(tmp_path, "first")
    again_stats, again = run_split(tmp_path, "second")
    assert sorted(first) == ["stats.json", "test.parquet", "train.parquet", "val.parquet"]
    assert first == again
    assert stats == again_stats == json.loads(first["stats.json"])
    written = {name: pl.read_parquet(tmp_path / "first" / f"{name}.parquet") for name in PARTS}
    expected = split_ratings(pl.read_parquet(tmp_path / "ratings.parquet"), project_params("split", seed=5))
    assert all(written[name].equals(expected[name]) for name in PARTS)


def test_split_stats_counts_rows_users_movies_and_unseen():
    parts = {
        "train": indexed_frame([(0, 0), (0, 1), (1, 0), (1, 2)]),
        "val": indexed_frame([(1, 1), (2, 0), (2, 3), (3, 4)]),
        "test": indexed_frame([(0, 2), (4, 5)]),
    }
    assert split_stats(parts) == {
        "train": {"rows": 4, "fraction": 0.4, "users": 2, "movies": 3},
        "val": {
            "rows": 4,
            "fraction": 0.4,
            "users": 3,
            "movies": 4,
            "users_unseen_in_train": 2,  # users 2 and 3
            "movies_unseen_in_train": 2,  # movies 3 and 4
        },
        "test": {
            "rows": 2,
            "fraction": 0.2,
            "users": 2,
            "movies": 2,
            "users_unseen_in_train": 1,  # user 4
            "movies_unseen_in_train": 1,  # movie 5
        },
    }


def test_split_stats_of_a_real_split_add_up():
    parts = split_ratings(prepared(), project_params("split"))
    stats = split_stats(parts)
    assert sum(stats[name]["rows"] for name in PARTS) == 400
    assert sum(stats[name]["fraction"] for name in PARTS) == pytest.approx(1.0)
    for name in ("val", "test"):
        unseen = set(parts[name]["userIdMapped"]) - set(parts["train"]["userIdMapped"])
        assert stats[name]["users_unseen_in_train"] == len(unseen)


def test_temporal_split_holds_out_each_users_latest_ratings():
    ratings = prepared(2000)
    parts = split_ratings(ratings, project_params("split", strategy="temporal"))
    assert sum(part.height for part in parts.values()) == ratings.height
    assert set.union(*(pairs(part) for part in parts.values())) == pairs(ratings)
    for user, own in ratings.group_by("userIdMapped"):
        in_time_order = own.sort("timestamp", "movieId")
        n = own.height
        n_train, n_before_test = round(n * 0.7), round(n * 0.85)
        expected = {
            "train": in_time_order.head(n_train),
            "val": in_time_order.slice(n_train, n_before_test - n_train),
            "test": in_time_order.slice(n_before_test),
        }
        for name, part in parts.items():
            assert pairs(part.filter(pl.col("userIdMapped") == user[0])) == pairs(expected[name]), (user, name)
    # Each part keeps the prepared table's row order (its bytes depend on its content only).
    for part in parts.values():
        rows = ratings.with_row_index("row").join(part, on=["userId", "movieId"], how="semi")["row"]
        assert rows.is_sorted()


def test_temporal_split_refuses_an_empty_part_naming_the_strategy():
    with pytest.raises(SplitError, match=r"^4 ratings split \(temporal\) .* leave the val and test part empty"):
        split_ratings(prepared(4), project_params("split", strategy="temporal"))


# --- given: ML-100K's own folds --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml_100k_shaped() -> pl.DataFrame:
    """100,000 prepared ratings as preprocess writes ML-100K's (sorted by user and time), their source rows in a
    shuffled file order: 1,000 users with 100 ratings each."""
    rng = np.random.default_rng(0)
    n_users, per_user = 1000, 100
    file_order = rng.permutation(n_users * per_user)
    raw = pl.DataFrame(
        {
            "userId": np.repeat(np.arange(1, n_users + 1), per_user)[file_order],
            "movieId": np.tile(np.arange(1, per_user + 1), n_users)[file_order],
            "rating": rng.integers(1, 6, n_users * per_user).astype(np.float32),
            "timestamp": rng.integers(0, 10**9, n_users * per_user),
        }
    ).with_row_index(SOURCE_ROW)
    return index_ratings(raw)[0]


def given(fold: str, **overrides) -> SplitParams:
    return project_params("split", strategy="given", fold=fold, **overrides)


def source_rows(ratings: pl.DataFrame, part: pl.DataFrame) -> np.ndarray:
    """The source rows of a part's ratings (the parts leave the column out; a user rates a movie once)."""
    return part.join(ratings, on=["userId", "movieId"], how="left")[SOURCE_ROW].sort().to_numpy()


@pytest.mark.parametrize("fold_number", [1, 2, 3, 4, 5])
def test_fold_u_i_tests_on_its_block_of_20000_lines(ml_100k_shaped, fold_number):
    parts = split_ratings(ml_100k_shaped, given(f"u{fold_number}"), "ml-100k")
    start = 20_000 * (fold_number - 1)
    assert (source_rows(ml_100k_shaped, parts["test"]) == np.arange(start, start + 20_000)).all()
    assert parts["val"].height == round(100_000 * project_params("split").val_fraction)
    assert parts["train"].height + parts["val"].height == 80_000
    base = np.concatenate([source_rows(ml_100k_shaped, parts[name]) for name in ("train", "val")])
    assert ((base < start) | (base >= start + 20_000)).all() and np.unique(base).size == 80_000


def test_the_five_u_folds_test_every_rating_once(ml_100k_shaped):
    tested = np.concatenate(
        [
            source_rows(ml_100k_shaped, split_ratings(ml_100k_shaped, given(f"u{i}"), "ml-100k")["test"])
            for i in range(1, 6)
        ]
    )
    assert np.array_equal(np.sort(tested), np.arange(100_000))


@pytest.mark.parametrize(("fold", "first", "last"), [("ua", 1, 10), ("ub", 11, 20)])
def test_fold_ua_ub_hold_out_each_users_ratings_by_file_order(ml_100k_shaped, fold, first, last):
    parts = split_ratings(ml_100k_shaped, given(fold), "ml-100k")
    numbered = ml_100k_shaped.sort(SOURCE_ROW).with_columns(number=pl.int_range(1, pl.len() + 1).over("userId"))
    expected = numbered.filter(pl.col("number").is_between(first, last))[SOURCE_ROW].sort().to_numpy()
    assert np.array_equal(source_rows(ml_100k_shaped, parts["test"]), expected)
    assert parts["test"].group_by("userId").len()["len"].unique().to_list() == [10]


def test_given_val_is_a_seeded_draw_from_the_base_part(ml_100k_shaped):
    first, again, other = (split_ratings(ml_100k_shaped, given("u2", seed=seed), "ml-100k") for seed in (4, 4, 5))
    assert all(first[name].equals(again[name]) for name in PARTS)
    assert first["test"].equals(other["test"]) and not first["val"].equals(other["val"])
    # The draw follows the file's order, not the prepared table's: shuffling the prepared rows changes nothing.
    shuffled = split_ratings(ml_100k_shaped.sample(fraction=1.0, shuffle=True, seed=1), given("u2", seed=4), "ml-100k")
    assert np.array_equal(source_rows(ml_100k_shaped, shuffled["val"]), source_rows(ml_100k_shaped, first["val"]))


def test_given_folds_are_refused_for_another_data_set(ml_100k_shaped):
    with pytest.raises(SplitError, match=r"^split.strategy: got 'given' for the data set 'synthetic'; only ml-100k"):
        split_ratings(ml_100k_shaped, given("u1"), "synthetic")
    data = project_params("data", dataset="ml-1m")
    with pytest.raises(ParamsError, match=r"^split.strategy: got 'given' with data.dataset 'ml-1m'; only ml-100k"):
        check_split_fits_data(data, given("u1"))
    check_split_fits_data(project_params("data"), given("u1"))  # the default data set has its folds


def test_given_folds_need_every_rating_of_the_release(ml_100k_shaped):
    with pytest.raises(SplitError, match=r"with 99,999 prepared ratings; ML-100K's folds are defined on all 100,000"):
        split_ratings(ml_100k_shaped.head(99_999), given("u1"), "ml-100k")
