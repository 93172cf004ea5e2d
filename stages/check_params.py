"""Check-params stage: validate every params.yaml section and every model's settings, so a typo anywhere
stops `dvc repro` at once.

Each stage validates the whole file too (of `train`, the shared keys: the models' settings are typed by
the models, which only this stage and train import); this stage also runs when the change touches no
stage's section (say a new, misspelled top-level section), which would otherwise pass unnoticed.
"""

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.errors import run_stage
from movielens_pipeline.models import load_train_params


def main() -> None:
    load_train_params()  # every section, and every model's settings in train


if __name__ == "__main__":
    run_stage(main)
