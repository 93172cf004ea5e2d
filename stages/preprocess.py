"""Preprocess stage: raw ratings of one release -> data/prepared/{ratings,users,movies}.parquet."""

import argparse
from pathlib import Path

from movielens_pipeline.atomic import atomic_dir
from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import load_section
from movielens_pipeline.preprocess import preprocess
from movielens_pipeline.releases import RELEASES


def main() -> None:
    # dvc.yaml passes ${data.dataset}, so this stage reruns when the data set changes.
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=sorted(RELEASES))
    release = RELEASES[parser.parse_args().dataset]
    params = load_section("preprocess")
    with atomic_dir(Path("data/prepared")) as staging:
        raw_ratings = Path("data/raw") / release.name / release.ratings_file
        summary = preprocess(raw_ratings, release.layout, params, staging)
    print(
        f"prepared {summary['rows']} of {summary['raw_rows']} ratings: "
        f"{summary['users']} users, {summary['movies']} movies"
    )


if __name__ == "__main__":
    run_stage(main)
