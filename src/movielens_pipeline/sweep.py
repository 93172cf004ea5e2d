"""A sweep written as `dvc exp run --queue -S` takes it, split into one experiment per combination.

    python -m movielens_pipeline.sweep 'train.biased_mf.embedding_dim=16,32,64 train.biased_mf.weight_decay=0.01,0.05'

prints the GitHub Actions matrix (`{"include": [{"name": ..., "set_args": "-S ... -S ..."}, ...]}`) that
`.github/workflows/dvc-sweep.yml` fans out over runners, one `dvc exp run` each. Every key is
checked against params.yaml's schema first, as `dvc exp run -S` would be, so a typo fails the
planning job instead of every runner.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex

import yaml

from .errors import PipelineError, run_stage
from .models import TrainParams
from .params import SECTIONS, parse_section, read_params_file

# `section.key=v1,v2,...` (the key may be a model's: `train.autorec.hidden_dim`): the form `dvc exp run
# --queue -S` sweeps (values without spaces: the workflow passes them through the shell unquoted).
ASSIGNMENT = re.compile(r"^(?P<section>\w+)\.(?P<key>\w+(?:\.\w+)?)=(?P<values>[^=\s'\"]+)$")
SCHEMAS = {**SECTIONS, "train": TrainParams}


def combinations(sweep: str) -> list[dict[str, str]]:
    """Every combination of the swept values, in order, each as `section.key` -> value (as written)."""
    axes = []
    for assignment in shlex.split(sweep):
        match = ASSIGNMENT.match(assignment)
        if match is None:
            raise PipelineError(f"sweep: '{assignment}' is not section.key=value[,value...]")
        name = f"{match['section']}.{match['key']}"
        values = [value.strip() for value in match["values"].split(",") if value.strip()]
        if name in (axis_name for axis_name, _ in axes):
            raise PipelineError(f"sweep: {name} is given twice")
        axes.append((name, values))
    if not axes:
        raise PipelineError("sweep: give at least one section.key=value[,value...]")
    names = [name for name, _ in axes]
    return [dict(zip(names, chosen, strict=True)) for chosen in itertools.product(*(values for _, values in axes))]


def check(combination: dict[str, str], document: dict) -> None:
    """Refuse a combination params.yaml's schema refuses, naming the key (as each stage would)."""
    changed: dict[str, dict] = {}
    for name, value in combination.items():
        section, *keys = name.split(".")
        if section not in document:
            raise PipelineError(f"sweep: unknown section '{section}'; valid sections are: {', '.join(document)}")
        owner = changed.setdefault(section, dict(document[section]))
        for key in keys[:-1]:
            owner[key] = dict(owner.get(key) or {})
            owner = owner[key]
        owner[keys[-1]] = yaml.safe_load(value)
    for section, values in changed.items():
        parse_section(section, values, SCHEMAS)


def experiment_name(combination: dict[str, str]) -> str:
    """A git-ref-safe experiment name that says what was set: `embedding_dim-16-weight_decay-0.01`."""
    words = [f"{name.split('.')[-1]}-{value}" for name, value in combination.items()]
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(words))


def matrix(sweep: str) -> dict[str, list[dict[str, str]]]:
    """The GitHub Actions matrix of a sweep: for each combination its experiment name and `-S` arguments."""
    document = read_params_file()
    include = []
    for combination in combinations(sweep):
        check(combination, document)
        set_args = " ".join(f"-S {name}={value}" for name, value in combination.items())
        include.append({"name": experiment_name(combination), "set_args": set_args})
    return {"include": include}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="e.g. 'train.biased_mf.embedding_dim=16,32,64 train.model=biased_mf,svdpp'")
    args = parser.parse_args()
    run_stage(lambda: print(json.dumps(matrix(args.sweep))))


if __name__ == "__main__":
    main()
