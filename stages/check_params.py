"""Check-params stage: validate every params.yaml section, so a typo anywhere stops `dvc repro` at once.

Each stage validates the whole file too; this stage also runs when the change touches no
stage's section (say a new, misspelled top-level section), which would otherwise pass unnoticed.
Of `train`, it checks the shared keys and that `train.model` names a model's section; each
model's own settings are typed by its module, which imports torch, so the train stage checks
them, as the first thing it does (this stage stays under a second).
"""

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import SECTIONS, check_split_fits_data, load_section


def main() -> None:
    sections = {name: load_section(name) for name in SECTIONS}
    check_split_fits_data(sections["data"], sections["split"])


if __name__ == "__main__":
    run_stage(main)
