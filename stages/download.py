"""Download stage: fetch the release that params `data` names into data/raw/<dataset>/."""

from pathlib import Path

from movielens_pipeline.download import download
from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import load_section


def main() -> None:
    params = load_section("data")
    download(params, Path("data/raw") / params.dataset)


if __name__ == "__main__":
    run_stage(main)
