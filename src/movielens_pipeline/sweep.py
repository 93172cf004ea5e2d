"""A sweep written as `dvc exp run --queue -S` takes it, split into one experiment per combination by DVC's own
expansion (Hydra's sweeper: comma lists, `range()`, `choice()`), each checked against params.yaml's schema.

    python -m movielens_pipeline.sweep 'train.biased_mf.embedding_dim=range(16,65,16) train.seed=0,1'
    python -m movielens_pipeline.sweep 'train.model=choice(biases, biased_mf)' train.seed=0,1

prints the GitHub Actions matrix (`{"include": [{"name": ..., "set_args": "-S ... -S ..."}, ...]}`) that
`.github/workflows/dvc-sweep.yml` fans out over runners, one `dvc exp run` each. The combinations are the
ones `dvc exp run --queue` would queue for the same `-S` values, in the same order, and each is checked
against params.yaml's schema first, as the stages would check it, so a typo or an out-of-range value fails
the planning job instead of every runner.
"""

from __future__ import annotations

import argparse
import copy
import json
import re

from .errors import PipelineError, run_stage
from .models import model_settings
from .params import parse_section, read_params_file

PARAMS_FILE = "params.yaml"
# A combination travels to each runner as `-S override` words, expanded unquoted by the workflow's shell.
UNSAFE_IN_SET_ARGS = re.compile(r"[\s'\"*?]")


def overrides_of(sweep: str) -> list[str]:
    """The `-S` values of a sweep written on one line: split on spaces, but not inside quotes or brackets
    (`choice(biases, biased_mf)` is one value, as on `dvc exp run`'s command line in quotes)."""
    words, word, depth, quote = [], "", 0, ""
    for char in sweep:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char.isspace() and depth == 0:
            words, word = (words + [word] if word else words), ""
            continue
        word += char
    return words + [word] if word else words


def combinations(sweep: str | list[str]) -> list[list[str]]:
    """Every combination of a sweep (one string, or its `-S` values), as the `key=value` overrides DVC applies
    to params.yaml for it, in the order `dvc exp run --queue` queues them: DVC's own expansion, not ours."""
    from dvc.exceptions import DvcException
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps, to_hydra_overrides
    from hydra.errors import HydraException

    words = overrides_of(sweep) if isinstance(sweep, str) else list(sweep)
    if not words:
        raise PipelineError("sweep: give at least one section.key=value[,value...], as for `dvc exp run -S`")
    by_file = to_path_overrides(words)
    others = sorted(set(by_file) - {PARAMS_FILE})
    if others:
        raise PipelineError(f"sweep: {others[0]}: this project's params are in {PARAMS_FILE} only")
    try:
        keys = [override.key_or_group for override in to_hydra_overrides(by_file[PARAMS_FILE])]
        expanded = get_hydra_sweeps(by_file)
    except (HydraException, DvcException) as error:  # DVC refuses glob(); its sweeper, interval() and bad syntax
        message = "; ".join(line for line in str(error).splitlines() if line and not line.startswith("See "))
        raise PipelineError(f"sweep: {message} (section.key=value, value,... | range() | choice())") from None
    twice = next((key for key in keys if keys.count(key) > 1), None)
    if twice is not None:
        raise PipelineError(f"sweep: {twice} is given twice")
    return [combination[PARAMS_FILE] for combination in expanded]


def check(combination: list[str], document: dict) -> None:
    """Refuse a combination params.yaml's schema refuses, naming the key (as each stage would). The values are
    typed as DVC types them when it writes params.yaml (Hydra's grammar: `0.05` a float, `null` None)."""
    from dvc.utils.hydra import to_hydra_overrides

    changed: dict[str, dict] = {}
    for override in to_hydra_overrides(combination):
        section, *keys = override.key_or_group.split(".")
        if section not in document:
            raise PipelineError(f"sweep: unknown section '{section}'; valid sections are: {', '.join(document)}")
        if not keys:
            raise PipelineError(f"sweep: '{override.input_line}' sets a whole section; set section.key=value")
        owner = changed.setdefault(section, copy.deepcopy(document[section]))
        for key in keys[:-1]:
            if not isinstance(owner.get(key), dict):
                owner[key] = {}
            owner = owner[key]
        if override.is_delete():
            owner.pop(keys[-1], None)
        else:
            owner[keys[-1]] = override.value()
    for section, values in changed.items():
        parse_section(section, values, model_settings())


def experiment_name(combination: list[str]) -> str:
    """A git-ref-safe experiment name that says what was set: `embedding_dim-16-weight_decay-0.01`."""
    words = []
    for override in combination:
        key, _, value = override.lstrip("+~").partition("=")
        words.append(f"{key.split('.')[-1]}-{value}" if value else f"no-{key.split('.')[-1]}")
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(words))


def matrix(sweep: str | list[str]) -> dict[str, list[dict[str, str]]]:
    """The GitHub Actions matrix of a sweep: for each combination its experiment name and `-S` arguments."""
    document = read_params_file()
    include = []
    for combination in combinations(sweep):
        unsafe = next((override for override in combination if UNSAFE_IN_SET_ARGS.search(override)), None)
        if unsafe is not None:
            raise PipelineError(
                f"sweep: '{unsafe}': a value with spaces, quotes, * or ? cannot pass through the workflow's "
                "unquoted -S arguments"
            )
        check(combination, document)
        set_args = " ".join(f"-S {override}" for override in combination)
        include.append({"name": experiment_name(combination), "set_args": set_args})
    return {"include": include}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "sweep",
        nargs="+",
        help="-S values as for `dvc exp run --queue -S`, in one argument (space-separated) or several, e.g. "
        "'train.biased_mf.embedding_dim=range(16,65,16) train.model=choice(biases,biased_mf)'",
    )
    args = parser.parse_args()
    words = [word for argument in args.sweep for word in overrides_of(argument)]
    run_stage(lambda: print(json.dumps(matrix(words))))


if __name__ == "__main__":
    main()
