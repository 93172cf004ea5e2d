"""A profile's recorded sweep: the default model's runs on the profile's data set, chosen on val RMSE.

    dvc exp run --queue -S profile=ml-25m-twin -S 'train.bayes_mf.embedding_dim=8,12' -S 'train.bayes_mf.sweeps=14,24'
    dvc queue start -j 1                 # then, once `dvc queue status` shows them done:
    dvc exp show --json | .venv/bin/python bench/profile_sweep.py ml-25m-twin --record
    dvc exp show --json | .venv/bin/python bench/profile_sweep.py ml-25m-twin --record --add  # a further step
    .venv/bin/python bench/profile_sweep.py ml-25m-twin --update   # the docs from the kept runs

A run counts when its params hold the profile's data set (what the profile sets under `data`) and it trained the
model the profile trains (`train.model`): its model settings, best val RMSE, test RMSE and the noise floor. They
are kept in bench/results/<profile>-sweep.json; docs/results.md shows them between the profile's markers, best
val RMSE first, the choice in bold (test plays no part in it). A test checks the table, and that the profile's
settings are the choice.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import yaml
from experiment_table import RESULTS_PAGE, add_record_options, read_json, runs, with_tables, write_json, write_page

from movielens_pipeline.models import REGISTRY
from movielens_pipeline.profiles import compose_params, flat, read_profiles

PROJECT = Path(__file__).resolve().parents[1]


def runs_file(profile: str) -> Path:
    return PROJECT / "bench" / "results" / f"{profile}-sweep.json"


def markers(profile: str) -> tuple[str, str]:
    return f"<!-- profile-sweep:{profile}:start -->", f"<!-- profile-sweep:{profile}:end -->"


def profile_params(profile: str) -> dict:
    """params.yaml as `dvc exp run -S profile=<profile>` composes it from this checkout's conf/."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "params.yaml"
        compose_params([f"profile={profile}"], path, PROJECT / "conf")
        return yaml.safe_load(path.read_text(encoding="utf-8"))


def sweep_runs(exp_show: list[dict], profile: str) -> list[dict]:
    """The runs on `profile`'s data set of the model it trains: name, settings, val and test RMSE, noise floor."""
    composed = profile_params(profile)
    model = composed["train"]["model"]
    data = {
        key: value
        for key, value in flat(read_profiles(PROJECT / "conf")[profile][1]).items()
        if key.startswith("data.")
    }
    found = []
    for run in runs(exp_show, baselines=True):
        params = run["params"]
        if params["train"]["model"] != model or any(flat(params)[key] != value for key, value in data.items()):
            continue
        found.append(
            {
                "name": run["name"],
                "settings": params["train"][model],
                "val_rmse": math.sqrt(run["training"]["best_val_mse"]),
                "test_rmse": run["metrics"]["test"]["rmse"],
                "noise_floor": run["metrics"]["noise_floor"]["rmse"],
            }
        )
    return sorted(found, key=lambda run: (run["val_rmse"], run["name"]))


def chosen(recorded: list[dict], model: str | None = None) -> dict:
    """The settings of the best val RMSE; given the `model`, a setting added since the run reads as what it meant
    then (as in an old checkpoint)."""
    settings = min(recorded, key=lambda run: run["val_rmse"])["settings"]
    return REGISTRY[model].checkpoint_settings(settings) if model else settings


def table(recorded: list[dict], model: str | None = None) -> str:
    """Markdown: a row per run, the settings that vary, best val RMSE first, the choice in bold; given the `model`,
    a setting added since a run reads as what it meant then."""
    if model:
        recorded = [run | {"settings": REGISTRY[model].checkpoint_settings(run["settings"])} for run in recorded]
    keys = list(dict.fromkeys(key for run in recorded for key in run["settings"]))
    varying = [key for key in keys if len({str(run["settings"].get(key)) for run in recorded}) > 1]
    lines = [
        "| " + " | ".join(f"`{key}`" for key in varying) + " | best val RMSE | test RMSE | x noise floor |",
        "|" + "---|" * (len(varying) + 3),
    ]
    best = min(run["val_rmse"] for run in recorded)
    for run in sorted(recorded, key=lambda run: run["val_rmse"]):
        cells = [str(run["settings"].get(key)) for key in varying]
        cells += [f"{run['val_rmse']:.4f}", f"{run['test_rmse']:.4f}", f"{run['test_rmse'] / run['noise_floor']:.3f}x"]
        if run["val_rmse"] == best:
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def page(profile: str, recorded: list[dict]) -> str:
    model = profile_params(profile)["train"]["model"]
    return with_tables(RESULTS_PAGE.read_text(encoding="utf-8"), table(recorded, model), *markers(profile))


def read_runs(profile: str) -> list[dict]:
    return read_json(runs_file(profile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", help="a profile of conf/profile/, e.g. ml-25m-twin")
    add_record_options(parser, runs_file("<profile>").name)
    parser.add_argument("--add", action="store_true", help="with --record: keep the kept runs, add stdin's to them")
    args = parser.parse_args()
    recorded = read_runs(args.profile) if args.update else sweep_runs(json.load(sys.stdin), args.profile)
    if args.record and args.add:
        added = {run["name"] for run in recorded}
        recorded = [run for run in read_runs(args.profile) if run["name"] not in added] + recorded
    if args.record:
        write_json(runs_file(args.profile), recorded)
    if args.record or args.update:
        write_page(page(args.profile, recorded))
    else:
        print(table(recorded))


if __name__ == "__main__":
    main()
