"""Using a trained model at ML-25M's size: load time, `recommend` for one user, `predict` throughput, and the
`movielens` command's wall time against `import torch`.

    .venv/bin/python bench/serving.py                     # biased_mf, 162,541 users x 59,047 movies, dim 64
    .venv/bin/python bench/serving.py --model svdpp --train-ratings 1000000
    .venv/bin/python bench/serving.py --users 943 --movies 1682 --train-ratings 70000   # ML-100K's size

Writes, in a scratch folder laid out as the pipeline leaves a project (models/, data/prepared/,
data/split/), a checkpoint of an untrained model of that size (its weights drawn at random:
speed does not depend on what was learned) and random training ratings, then times
`load_trained()` (reading the checkpoint and the users and movies tables: no training rating yet),
`recommend()` for single users (reading that user's training ratings, scoring every movie)
and `predict()` on a million random pairs. Medians over repeats, after one warm-up call.

Then what a user waits for: `movielens predict USER:MOVIE` and `movielens recommend USER` against that
folder, each a new process, beside `python -c 'import torch'`, the floor of any command that uses torch;
the best of `--cli-runs` runs of each (the least disturbed by other work on the machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from movielens_pipeline.data import DataShape, TrainingData
from movielens_pipeline.models import build_model, model_settings, saved_bytes
from movielens_pipeline.params import parse_section, read_params_file
from movielens_pipeline.trained import CHECKPOINT, HELD_OUT, MOVIES, RANKER, TRAIN, USERS, load_trained

# ML-25M: 162,541 users, 59,047 rated movies, 25,000,095 ratings (70 % of them in training).
ML_25M_USERS, ML_25M_MOVIES, ML_25M_TRAIN_RATINGS = 162_541, 59_047, 17_500_066


def write_project(root: Path, args: argparse.Namespace) -> None:
    """The files load_trained reads, at the requested size, with MovieLens-like ids (not the indices)."""
    rng = np.random.default_rng(0)
    users = pl.DataFrame(
        {"userId": np.arange(1, args.users + 1), "userIdMapped": np.arange(args.users, dtype=np.uint32)}
    )
    movies = pl.DataFrame(
        {
            "movieId": np.arange(args.movies) * 3 + 1,
            "movieIdMapped": np.arange(args.movies, dtype=np.uint32),
            "title": [f"Movie {index}" for index in range(args.movies)],
            "genres": [["Drama"]] * args.movies,
        }
    )
    # Sorted by user, as the split stage leaves training ratings (preprocess orders them by user and time).
    user_index = np.sort(rng.integers(0, args.users, args.train_ratings).astype(np.uint32))
    movie_index = rng.integers(0, args.movies, args.train_ratings).astype(np.uint32)
    train = pl.DataFrame(
        {
            "userId": user_index.astype(np.int64) + 1,
            "movieId": movie_index.astype(np.int64) * 3 + 1,
            "rating": rng.integers(1, 11, args.train_ratings).astype(np.float32) / 2,
            "timestamp": np.zeros(args.train_ratings, dtype=np.int64),
            "userIdMapped": user_index,
            "movieIdMapped": movie_index,
        }
    )
    # The held-out parts `recommend` also skips, each about 15 % of the ratings as the split makes them (here slices
    # of the same table: what is timed is reading them, not what they hold).
    held_out = dict(zip(HELD_OUT, (train.head(len(train) * 15 // 70), train.tail(len(train) * 15 // 70)), strict=True))
    for path, table in ((USERS, users), (MOVIES, movies), (TRAIN, train), *held_out.items()):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        table.write_parquet(root / path)
    values = read_params_file()["train"]
    values[args.model] = values[args.model] | {"embedding_dim": args.dim}
    params = parse_section("train", {**values, "model": args.model}, model_settings())
    data = TrainingData(
        torch.from_numpy(user_index.astype(np.int64)),
        torch.from_numpy(movie_index.astype(np.int64)),
        torch.from_numpy(train["rating"].to_numpy(writable=True)),
        torch.zeros(args.train_ratings),
        torch.zeros(args.movies, 0),
    )
    shape = DataShape(args.users, args.movies, 0, args.train_ratings, 3.5)
    model = build_model(args.model, params.settings.resolved(args.train_ratings), data, shape)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.1)
    checkpoint = model.checkpoint() | {"epochs": 0}
    (root / CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
    # The same model ranks: `recommend` scores every movie through the ranker as through any model.
    for path in (CHECKPOINT, RANKER):
        (root / path).write_bytes(saved_bytes(checkpoint))


def timed(function, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls after a warm-up call, and the last result."""
    result = function()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def time_api(root: Path, args: argparse.Namespace) -> None:
    """Print the medians of `load_trained`, `recommend` for one user and `predict` throughput, in this process."""
    load_seconds, trained = timed(lambda: load_trained(root), max(1, args.repeats // 2))
    rng = np.random.default_rng(1)
    one_user = iter(rng.integers(1, args.users + 1, args.repeats + 1).tolist())
    recommend_seconds, top = timed(lambda: trained.recommend([next(one_user)], n=10), args.repeats)
    pairs = pl.DataFrame(
        {
            "userId": rng.integers(1, args.users + 1, args.pairs),
            "movieId": rng.integers(0, args.movies, args.pairs) * 3 + 1,
        }
    )
    predict_seconds, predicted = timed(lambda: trained.predict(pairs), args.repeats)
    assert top.height == 10 and predicted.height == args.pairs
    print(f"load_trained:          {load_seconds:6.2f} s")
    print(f"recommend, one user:   {recommend_seconds * 1000:6.1f} ms (scoring {args.movies:,} movies)")
    print(f"predict:               {args.pairs / predict_seconds / 1e6:6.2f} M pairs/s ({args.pairs:,} pairs)")


def best_wall_seconds(command: list[str], runs: int, prints_table: bool = True) -> float:
    """The shortest wall time of `runs` runs of `command`, each a new process, which must print a table if
    `prints_table`."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        assert not prints_table or done.stdout.startswith("userId,"), done.stdout[:200]
    return min(seconds)


def movielens_command() -> list[str]:
    """The `movielens` command of this environment (`make venv` installs it beside python), else its module."""
    script = Path(sys.executable).with_name("movielens")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "movielens_pipeline.cli"]


def time_commands(root: Path, runs: int) -> None:
    """Print the best wall time of `import torch` and of the `movielens` commands for one user, and the difference."""
    floor = best_wall_seconds([sys.executable, "-c", "import torch"], runs, prints_table=False)
    print(f"python -c 'import torch':            {floor:6.2f} s (best of {runs})")
    movielens = movielens_command()
    for name, arguments in (("predict 1:1", ["predict", "1:1"]), ("recommend 1", ["recommend", "1"])):
        seconds = best_wall_seconds([*movielens, *arguments, "--repo", str(root)], runs)
        over = seconds - floor
        print(f"movielens {name + ':':27s}{seconds:6.2f} s (best of {runs}), {over:+.2f} s over import torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="biased_mf")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--users", type=int, default=ML_25M_USERS)
    parser.add_argument("--movies", type=int, default=ML_25M_MOVIES)
    parser.add_argument("--train-ratings", type=int, default=ML_25M_TRAIN_RATINGS)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cli-runs", type=int, default=3, help="runs of each command timed (0: none)")
    args = parser.parse_args()

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(
        f"{args.model}, dim {args.dim}: {args.users:,} users, {args.movies:,} movies, "
        f"{args.train_ratings:,} training ratings, {torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_project(root, args)
        time_api(root, args)  # returns what it loaded to the allocator before the commands run beside this process
        if args.cli_runs:
            time_commands(root, args.cli_runs)


if __name__ == "__main__":
    main()
