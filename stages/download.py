"""Download stage: fetch the release params `data` names, or generate the synthetic one, into data/raw/<dataset>/."""

from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.download import download
from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import SYNTHETIC, load_section
from movielens_pipeline.synthetic import write_synthetic


def main() -> None:
    params = load_section("data")
    out_dir = Path("data/raw") / params.dataset
    if params.dataset == SYNTHETIC:
        write_synthetic(params, out_dir)
    else:
        download(params, out_dir)


if __name__ == "__main__":
    run_stage(main)
