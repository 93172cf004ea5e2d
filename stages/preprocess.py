"""Preprocess stage: raw files of one data set -> data/prepared/{ratings,users,movies}.parquet and dataset.json."""

import argparse
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.atomic import atomic_dir
from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import DATASETS, load_section
from movielens_pipeline.preprocess import preprocess


def main() -> None:
    # dvc.yaml passes ${data.dataset}, so this stage reruns when the data set changes.
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=DATASETS)
    dataset = parser.parse_args().dataset
    params = load_section("preprocess")
    with atomic_dir(Path("data/prepared")) as staging:
        summary = preprocess(Path("data/raw") / dataset, dataset, params, staging)
    print(
        f"prepared {summary['rows']} of {summary['raw_rows']} ratings: "
        f"{summary['users']} users, {summary['movies']} movies"
    )


if __name__ == "__main__":
    run_stage(main)
