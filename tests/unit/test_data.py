"""The data module: tensors made once, batches as slices of one seeded permutation per epoch, genres."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from fakes import make_rows, ratings_frame

from movielens_pipeline.data import RatingBatches, RatingsDataModule, genre_matrix, rating_tensors, release_years
from movielens_pipeline.preprocess import index_ratings


@pytest.fixture(scope="module")
def indexed() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return index_ratings(ratings_frame(make_rows(500, n_users=40, n_movies=30, seed=1)))


def module(indexed, **changes) -> RatingsDataModule:
    ratings, users, movies = indexed
    parts = {"train": ratings[:400], "val": ratings[400:450], "predict": ratings[450:]}
    return RatingsDataModule(**({"batch_size": 64, "users": users, "movies": movies, "seed": 3} | parts | changes))


def epoch(batches: RatingBatches) -> torch.Tensor:
    return torch.cat([ratings for _, _, ratings, _ in batches])


def test_each_epoch_covers_every_training_row_once_in_a_new_seeded_order(indexed):
    data = module(indexed)
    data.setup("fit")
    batches = data.train_dataloader()
    first, second = epoch(batches), epoch(batches)
    expected = np.sort(indexed[0][:400]["rating"].to_numpy())
    for ratings in (first, second):
        assert np.array_equal(np.sort(ratings.numpy()), expected)
    assert not torch.equal(first, second)  # a new permutation each epoch
    sizes = [len(users) for users, _, _, _ in batches]
    assert len(batches) == len(sizes) == 7 and sizes[:-1] == [64] * 6 and sizes[-1] == 400 - 6 * 64
    again = module(indexed)
    again.setup("fit")
    assert torch.equal(epoch(again.train_dataloader()), first)  # the same seed, the same order
    other = module(indexed, seed=4)
    other.setup("fit")
    assert not torch.equal(epoch(other.train_dataloader()), first)


@pytest.mark.parametrize("part", ["val", "predict"])
def test_val_and_predict_keep_row_order_and_pair_the_columns(indexed, part):
    data = module(indexed)
    data.setup("predict")
    batches = getattr(data, f"{part}_dataloader")()
    users, movies, ratings, days = (torch.cat(column) for column in zip(*batches, strict=True))
    table = data.tables[part]
    assert users.tolist() == table["userIdMapped"].to_list()
    assert movies.tolist() == table["movieIdMapped"].to_list()
    assert torch.equal(days, torch.from_numpy(table["timestamp"].to_numpy() / 86_400))
    assert ratings.dtype == torch.float32 and days.dtype == torch.float64 and users.dtype == movies.dtype == torch.int64
    assert epoch(batches).tolist() == ratings.tolist()  # the same order on every pass


def test_batches_are_views_of_tensors_made_once(indexed):
    data = module(indexed)
    data.setup("fit")
    tensors = data.tensors["val"]
    data.setup("validate")  # Lightning may call setup again: nothing is rebuilt or copied
    assert all(again is first for again, first in zip(data.tensors["val"], tensors, strict=True))
    users, _, _, _ = next(iter(data.val_dataloader()))
    assert users.data_ptr() == tensors[0].data_ptr()  # a slice, not a copy


def test_the_index_space_and_the_training_mean_come_from_the_tables(indexed):
    ratings, users, movies = indexed
    data = module(indexed)
    assert (data.n_users, data.n_movies) == (users.height, movies.height)
    assert data.train_mean() == pytest.approx(ratings[:400]["rating"].mean())
    training = data.training_data()
    assert torch.equal(training.users, rating_tensors(ratings[:400])[0])
    assert training.movie_genres.shape == (movies.height, 0)  # these movies have no genres column


def test_from_parquet_reads_the_parts_it_is_given(indexed, tmp_path):
    ratings, users, movies = indexed
    ratings[:400].write_parquet(tmp_path / "train.parquet")
    ratings[450:].write_parquet(tmp_path / "test.parquet")
    data = RatingsDataModule.from_parquet(32, train=tmp_path / "train.parquet", predict=tmp_path / "test.parquet")
    assert data.tables["train"].equals(ratings[:400]) and data.tables["predict"].equals(ratings[450:])
    assert data.tables["val"] is None


def test_genre_matrix_is_multi_hot_in_movie_index_order():
    movies = pl.DataFrame({"movieIdMapped": [1, 0, 2, 3], "genres": [["Drama"], ["Comedy", "Drama"], [], None]})
    expected = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])  # columns: Comedy, Drama
    assert torch.equal(genre_matrix(movies), expected)
    assert genre_matrix(pl.DataFrame({"movieIdMapped": [0, 1]})).shape == (2, 0)


def test_release_years_come_from_the_titles_ending_in_movie_index_order():
    titles = ["Heat (1995)", "Nineteen Eighty-Four (1984) ", "Sleepers", None, "1492: Conquest of Paradise (1992)"]
    movies = pl.DataFrame({"movieIdMapped": [1, 0, 2, 3, 4], "title": titles})
    # A year in the middle of a title ("1492") is not its release year; no year, or no title: 0.
    assert release_years(movies).tolist() == [1984, 1995, 0, 0, 1992]
    assert release_years(pl.DataFrame({"movieIdMapped": [0, 1]})).tolist() == [0, 0]


def test_tensors_and_the_permutation_live_on_the_device_given(indexed):
    # The accelerator path on the CPU: the device is a parameter, the code the same.
    data = module(indexed, device="cpu")
    data.setup("fit")
    assert all(tensor.device.type == "cpu" for part in data.tensors.values() for tensor in part)
    batches = data.train_dataloader()
    assert batches.generator.device.type == "cpu"
    assert all(column.device == data.device for column in next(iter(batches)))


def test_without_a_device_or_a_fit_the_tensors_stay_on_the_cpu_and_batches_are_whole(indexed):
    data = module(indexed)
    assert data.device == torch.device("cpu") and (data.rank, data.world_size) == (0, 1)


def test_a_fit_places_the_tensors_and_takes_its_shard(indexed):
    data = module(indexed)
    data.place(torch.device("cpu"), rank=1, world_size=2)  # what training.Fitting does with the Trainer's
    data.setup("fit")
    batches = data.train_dataloader()
    assert (batches.rank, batches.world_size) == (1, 2) and len(next(iter(batches))[0]) == 32
    refit = data.with_val_in_training()
    assert refit.device == data.device and (refit.rank, refit.world_size) == (0, 1)


def rows_of(batch: tuple[torch.Tensor, ...], part: tuple) -> set[int]:
    """The row numbers of `part` a batch holds (users and movies together identify a row here)."""
    users, movies = part[:2]
    row_of = {(int(u), int(m)): row for row, (u, m) in enumerate(zip(users, movies, strict=True))}
    return {row_of[int(u), int(m)] for u, m in zip(batch[0], batch[1], strict=True)}


@pytest.mark.parametrize(
    ("n_rows", "batch_size", "world_size"), [(400, 64, 2), (400, 64, 3), (401, 100, 4), (130, 64, 3)]
)
def test_data_parallel_shards_use_every_rating_once_per_epoch(n_rows, batch_size, world_size):
    ratings = index_ratings(ratings_frame(make_rows(n_rows, n_users=60, n_movies=50, seed=2)))[0]
    part = rating_tensors(ratings)
    assert len(set(zip(part[0].tolist(), part[1].tolist(), strict=True))) == n_rows  # rows are told apart
    shards = [
        RatingBatches(part, batch_size, torch.Generator().manual_seed(5), rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    for _ in range(2):  # two epochs: a new permutation, the same on every process
        per_rank = [[rows_of(batch, part) for batch in shard] for shard in shards]
        assert len({len(batches) for batches in per_rank}) == 1  # every process takes the same number of steps
        for step in zip(*per_rank, strict=True):
            sizes = [len(rows) for rows in step]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1  # shards within one row, none empty
            assert sum(sizes) == len(set().union(*step))  # no row in two shards
        used = [row for batches in per_rank for rows in batches for row in rows]
        assert sorted(used) == list(range(n_rows))  # every rating once per epoch, across processes
        # The global batch size is unchanged: each step's shards together are one batch of the single-process run.
        assert sum(len(rows) for rows in next(zip(*per_rank, strict=True))) == batch_size


def test_a_last_batch_too_small_to_shard_joins_the_one_before():
    part = (torch.arange(10), torch.arange(10), torch.zeros(10))
    assert RatingBatches(part, 4, world_size=3).batch_starts() == [0, 4, 10]  # 2 rows left for 3 processes
    assert RatingBatches(part, 4, world_size=2).batch_starts() == [0, 4, 8, 10]
    assert RatingBatches(part, 4).batch_starts() == [0, 4, 8, 10]


def test_movie_batches_take_the_movies_in_a_new_seeded_order_each_with_its_ratings_together(indexed):
    data = module(indexed, batch_size=32, batches="movies")
    data.setup("fit")
    train = data.tensors["train"]
    batches = data.train_dataloader()
    first, second = (list(batches) for _ in range(2))
    for batch_list in (first, second):
        assert [len(users) for users, _, _, _ in batch_list] == [32] * 12 + [16]  # the rating batches' sizes
        assert sorted(row for batch in batch_list for row in rows_of(batch, train)) == list(range(400))
        # Each movie's ratings are consecutive in the epoch: a movie spans at most two batches.
        movies_in_order = torch.cat([movies for _, movies, _, _ in batch_list]).tolist()
        runs = [movie for i, movie in enumerate(movies_in_order) if i == 0 or movie != movies_in_order[i - 1]]
        assert len(runs) == len(set(movies_in_order))
    assert not torch.equal(first[0][1], second[0][1])  # a new order of the movies each epoch
    again = module(indexed, batch_size=32, batches="movies")
    again.setup("fit")
    assert all(torch.equal(a[1], b[1]) for a, b in zip(again.train_dataloader(), first, strict=True))  # same seed
