"""Split stage: data/prepared/ratings.parquet -> data/split/{train,val,test}.parquet and stats.json."""

from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.atomic import atomic_dir
from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import load_section
from movielens_pipeline.split import split


def main() -> None:
    params = load_section("split")
    with atomic_dir(Path("data/split")) as staging:
        stats = split(Path("data/prepared/ratings.parquet"), params, staging)
    print(", ".join(f"{part}: {counts['rows']} ratings" for part, counts in stats.items()))
    for part in ("val", "test"):
        users, movies = stats[part]["users_unseen_in_train"], stats[part]["movies_unseen_in_train"]
        if users or movies:
            print(
                f"note: {part} has {users} users and {movies} movies without training ratings; "
                "their ratings are predicted from the biases alone (data/split/stats.json)"
            )


if __name__ == "__main__":
    run_stage(main)
