"""Preprocess stage: a raw data folder (read through its manifest) -> the canonical tables and dataset.json."""

import argparse
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.atomic import atomic_dir
from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import load_section
from movielens_pipeline.preprocess import preprocess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_dir", type=Path, help="the download stage's folder: data/raw")
    parser.add_argument("out_dir", type=Path, help="ratings, users and movies Parquet files and dataset.json")
    args = parser.parse_args()
    params = load_section("preprocess")
    with atomic_dir(args.out_dir) as staging:
        summary = preprocess(args.raw_dir, params, staging)
    print(
        f"prepared {summary['rows']} of {summary['raw_rows']} ratings: "
        f"{summary['users']} users, {summary['movies']} movies"
    )


if __name__ == "__main__":
    run_stage(main)
