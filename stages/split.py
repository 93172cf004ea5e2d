"""Split stage: the prepared ratings -> train, val and test Parquet files and stats.json."""

import argparse
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.atomic import atomic_dir
from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import load_section
from movielens_pipeline.split import split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ratings", type=Path, help="the prepared ratings: data/prepared/ratings.parquet")
    parser.add_argument("dataset", type=Path, help="preprocess's data/prepared/dataset.json (which data set)")
    parser.add_argument("out_dir", type=Path, help="train/val/test.parquet and stats.json go here")
    args = parser.parse_args()
    params = load_section("split")
    with atomic_dir(args.out_dir) as staging:
        stats = split(args.ratings, args.dataset, params, staging)
    print(", ".join(f"{part}: {counts['rows']} ratings" for part, counts in stats.items()))
    for part in ("val", "test"):
        users, movies = stats[part]["users_unseen_in_train"], stats[part]["movies_unseen_in_train"]
        if users or movies:
            print(
                f"note: {part} has {users} users and {movies} movies without training ratings; "
                f"their ratings are predicted from the biases alone ({args.out_dir / 'stats.json'})"
            )


if __name__ == "__main__":
    run_stage(main)
