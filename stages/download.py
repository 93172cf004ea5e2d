"""Download stage: the data set params `data` names, fetched and verified or generated, into the folder given."""

import argparse
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.download import fetch_dataset
from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import load_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_dir", type=Path, help="where the files and their manifest go: data/raw")
    args = parser.parse_args()
    fetch_dataset(load_section("data"), args.raw_dir)


if __name__ == "__main__":
    run_stage(main)
