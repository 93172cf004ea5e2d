"""split.py: seeded train/val/test parts that partition the prepared ratings, and their stats."""

from __future__ import annotations

import json

import polars as pl
import pytest
from fakes import indexed_frame, make_rows, ratings_frame
from harness import project_params

from movielens_pipeline.preprocess import index_ratings
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
    # Whole rows travel together, with the prepared table's columns.
    assert sorted(pl.concat(list(parts.values())).rows()) == sorted(ratings.rows())
    assert all(part.columns == ratings.columns for part in parts.values())


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
    source = tmp_path / "ratings.parquet"
    if not source.exists():
        prepared().write_parquet(source)
    out_dir = tmp_path / name
    out_dir.mkdir()
    stats = split(source, project_params("split", seed=5), out_dir)
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
