"""Results tables from `dvc exp show --json`: test RMSE and MAE per model, and the sweeps that chose the defaults.

    dvc exp show --json | .venv/bin/python bench/experiment_table.py                 # print the tables
    dvc exp show --json | .venv/bin/python bench/experiment_table.py --record       # keep the runs, update the docs
    dvc exp show --json | .venv/bin/python bench/experiment_table.py --record-sweep # the same for a sweep
    dvc exp show --json | .venv/bin/python bench/experiment_table.py --add-sweep --match 'p8020-bayes_mf-sessions-'
    dvc exp show --json | .venv/bin/python bench/experiment_table.py --add          # add runs to the kept ones
    dvc exp show --json | .venv/bin/python bench/experiment_table.py --add --ensemble --match 'ens-'  # ensembles too
    .venv/bin/python bench/experiment_table.py --update                             # update the docs from the kept runs

Runs are grouped by (data set, split fractions, model, refit); each cell is the mean over the
seeds in the group (a run repeated with the same seeds counts once) with the standard
deviation beside it. A sweep's runs are grouped by model, one row per setting of the train
params that vary, ordered by validation RMSE: the first row is the model's chosen setting
(the test part plays no part in it). `--record` and `--record-sweep` write the runs they
read to RUNS_FILE and SWEEP_FILE (params and metrics only; a sweep replaces the kept runs of
the models it swept, and keeps the others'; `--add-sweep` keeps them too, a further step of a
model's sweep), so the tables in docs/results.md
and README.md, between their marker comments, are generated from what the pipeline
measured and a test can check they still are.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from movielens_pipeline.models import REGISTRY

PROJECT = Path(__file__).resolve().parents[1]
RUNS_FILE = PROJECT / "bench" / "results" / "ml-100k-runs.json"
SWEEP_FILE = PROJECT / "bench" / "results" / "ml-100k-sweep.json"
RESULTS_PAGE = PROJECT / "docs" / "results.md"
README = PROJECT / "README.md"
PARAMS_FILE = PROJECT / "params.yaml"
START, END = "<!-- experiment-table:start -->", "<!-- experiment-table:end -->"
SWEEP_START, SWEEP_END = "<!-- sweep-table:start -->", "<!-- sweep-table:end -->"
# The README shows ML-100K on the notebook's protocol only; docs/results.md every table.
README_TABLE = ("ml-100k", "0.7/0.15/0.15")


def runs(exp_show: list[dict], baselines: bool = True, ensemble: bool = False) -> list[dict]:
    """Every run (baselines, unless told not, and experiments) with test metrics: its name, params, eval and
    training metrics. With `ensemble` (runs of `dvc exp run dvc.yaml ensemble/dvc.yaml`), each run's
    ensemble too, as a run of its own named `<run>:ensemble` (without, its metrics may be an earlier run's:
    a run of dvc.yaml alone commits the ensemble's metrics as it found them)."""
    found = []
    for baseline in exp_show:
        # A queued, running or failed experiment shows its baseline's metrics: only finished ones count.
        finished = [
            group
            for group in baseline.get("experiments") or []
            if (group.get("executor") or {}).get("state") in (None, "success")
        ]
        experiments = [exp for group in finished for exp in group["revs"]]
        for run in [baseline, *experiments] if baselines else experiments:
            data = run.get("data") or {}
            all_metrics = data.get("metrics") or {}
            metrics = all_metrics.get("eval/metrics.json", {}).get("data", {})
            training = training_summary(all_metrics)
            params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
            if "test" in metrics and run.get("name") != "workspace" and data.get("rev") != "workspace":
                kept = {section: params[section] for section in ("data", "split", "train")}
                name = run.get("name") or data.get("rev")
                found.append({"name": name, "params": kept, "metrics": metrics, "training": training})
                blended = all_metrics.get("ensemble/eval/metrics.json", {}).get("data", {})
                blended = blended.get("ensemble", blended)  # its own names since 2026-12-07
                if ensemble and "test" in blended:
                    blend = all_metrics.get("ensemble/blend.json", {}).get("data", {})
                    ensemble_params = kept | {"train": ensemble_train(params)}
                    found.append(
                        {"name": f"{name}:ensemble", "params": ensemble_params, "metrics": blended, "training": blend}
                    )
    return sorted(found, key=lambda run: run["name"])


def training_summary(all_metrics: dict) -> dict:
    """A run's `best_val_mse`, as the recorded runs hold it: from dvclive/train/val.json's `val.rmse`, or from
    dvclive's summary in experiments run before val.json was the declared metrics file (2026-12-07)."""
    chosen_on = all_metrics.get("dvclive/train/val.json", {}).get("data", {})
    if "val" in chosen_on:
        return {"best_val_mse": chosen_on["val"]["rmse"] ** 2}
    return all_metrics.get("dvclive/train/metrics.json", {}).get("data", {})


def ensemble_train(params: dict) -> dict:
    """An ensemble run's "train" params as the tables read them: the model `ensemble`, its members and refit."""
    settings = params["ensemble"]
    return {"model": "ensemble", "seed": params["train"]["seed"], "threads": params["train"]["threads"]} | settings


def summary(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4f}{spread}"


def protocol(split: dict) -> str:
    test_fraction = 1 - split["train_fraction"] - split["val_fraction"]
    return f"{split['train_fraction']:g}/{split['val_fraction']:g}/{test_fraction:.2g}"


def tables(recorded: list[dict], only: tuple[str, str] | None = None, default: str | None = None) -> str:
    """Markdown: per (data set, protocol) a heading line and one row per model (model `default` marked as the
    default), then the baseline."""
    groups: dict[tuple[str, str], dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for run in recorded:
        split, train = run["params"]["split"], run["params"]["train"]
        key = (run["params"]["data"]["dataset"], protocol(split))
        groups[key][label(train)][(split["seed"], train["seed"])] = run["metrics"]
    parts = []
    for (dataset, split_protocol), models in sorted(groups.items()):
        if only is not None and (dataset, split_protocol) != only:
            continue
        seeds = sorted({seed for by_seed in models.values() for seed, _ in by_seed})
        lines = [
            f"**{dataset}, split {split_protocol} (train/val/test), split seeds {', '.join(map(str, seeds))}**",
            "",
            "| model | runs | test RMSE | test MAE |",
            "|---|---|---|---|",
        ]
        baselines = {}
        for model, by_seed in sorted(models.items(), key=lambda item: -statistics.mean(_rmse(item[1]))):
            metrics = list(by_seed.values())
            mae = summary([m["test"]["mae"] for m in metrics])
            shown = f"{model} (the default)" if model == f"`{default}`" else model
            lines.append(f"| {shown} | {len(metrics)} | {summary(_rmse(by_seed))} | {mae} |")
            baselines.update(by_seed)
        baseline = list(baselines.values())
        rmse, mae = (
            summary([m["baseline"]["rmse"] for m in baseline]),
            summary([m["baseline"]["mae"] for m in baseline]),
        )
        lines.append(f"| training-mean baseline | {len(baseline)} | {rmse} | {mae} |")
        floors = [m["noise_floor"]["rmse"] for m in baseline if "noise_floor" in m]
        if floors:  # generated data only: the RMSE of the true scores, the best a model can hope for
            lines.append(f"| noise floor (true scores) | {len(floors)} | {summary(floors)} | |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def label(train: dict) -> str:
    """A model's name in the tables: `model`, with ", refit" when it was refitted on train + val."""
    return f"`{train['model']}`" + (", refit" if train.get("refit") else "")


def val_rmse(run: dict) -> float:
    """The best validation RMSE of a run's training (what a sweep chooses on)."""
    return math.sqrt(run["training"]["best_val_mse"])


def train_settings(train: dict) -> dict:
    """A run's train params as one flat mapping: the shared keys and its model's own settings.

    Runs recorded before each model had its own sub-section (`train.<model>`) hold one flat list."""
    own = train.get(train["model"])
    shared = {key: value for key, value in train.items() if not isinstance(value, dict)}
    if not isinstance(own, dict):
        return shared
    # A run from before one of its model's settings existed ran with what that setting means for an old checkpoint.
    model = REGISTRY.get(train["model"])
    return shared | (model.checkpoint_settings(own) if model else own)


def swept(recorded: list[dict]) -> dict[str, list[tuple[dict, float]]]:
    """Per model: each setting of the train params that vary among its runs, with its val RMSE, best first."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for run in recorded:
        by_model[run["params"]["train"]["model"]].append(train_settings(run["params"]["train"]) | {"run": run})
    settings = {}
    for model, model_runs in by_model.items():
        keys = sorted(
            key
            for key in model_runs[0]
            if key not in ("threads", "run") and len({json.dumps(run.get(key)) for run in model_runs}) > 1
        )
        rows = [({key: run[key] for key in keys}, val_rmse(run["run"])) for run in model_runs]
        # An exact tie (a sampler that peaked before its last sweep scores the same with more) goes to the
        # smaller setting: fewer sweeps, a lower rank.
        settings[model] = sorted(rows, key=lambda row: (row[1], [_order(value) for value in row[0].values()]))
    return settings


def _order(value: object) -> tuple:
    """A setting's place among others of its key: numbers (and booleans) by value, before anything else."""
    return (0, value, "") if isinstance(value, int | float) else (1, 0, json.dumps(value))


def chosen(recorded: list[dict]) -> dict[str, dict]:
    """Per model, the setting of the swept train params with the lowest val RMSE."""
    return {model: rows[0][0] for model, rows in swept(recorded).items()}


def sweep_tables(recorded: list[dict]) -> str:
    """Markdown: per model, its swept params and val RMSE, best first (in bold: the setting chosen)."""
    splits = {protocol(run["params"]["split"]) + f", split seed {run['params']['split']['seed']}" for run in recorded}
    parts = [f"Split {', '.join(sorted(splits))}; {len(recorded)} runs. Chosen: the lowest val RMSE (bold)."]
    for model, rows in sorted(swept(recorded).items()):
        keys = list(rows[0][0])
        lines = [
            f"**`{model}`**",
            "",
            "| " + " | ".join(keys) + " | val RMSE |",
            "|" + "---|" * (len(keys) + 1),
        ]
        for index, (setting, rmse) in enumerate(rows):
            cells = [str(setting[key]) for key in keys] + [f"{rmse:.4f}"]
            lines.append("| " + " | ".join(f"**{cell}**" if index == 0 else cell for cell in cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _rmse(by_seed: dict) -> list[float]:
    return [metrics["test"]["rmse"] for metrics in by_seed.values()]


def with_tables(text: str, table_text: str, start: str = START, end: str = END) -> str:
    """`text` with the part between the marker comments replaced by `table_text`."""
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table_text}\n{end}{tail}"


def pages(recorded: list[dict], sweep: list[dict]) -> dict[Path, str]:
    """The README and the results page as they should read, tables regenerated from `recorded` and `sweep`."""
    results = with_tables(RESULTS_PAGE.read_text(encoding="utf-8"), tables(recorded))
    return {
        RESULTS_PAGE: with_tables(results, sweep_tables(sweep), SWEEP_START, SWEEP_END),
        README: with_tables(README.read_text(encoding="utf-8"), tables(recorded, README_TABLE, default_model())),
    }


def default_model() -> str:
    """The committed `train.model`."""
    return yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))["train"]["model"]


def merged(kept: list[dict], new: list[dict], key) -> list[dict]:
    """`kept` without the runs that share a `key` with one of `new`, plus `new`, sorted by name."""
    replaced = {key(run) for run in new}
    return sorted([run for run in kept if key(run) not in replaced] + new, key=lambda run: run["name"])


def read_json(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, recorded: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def add_record_options(parser: argparse.ArgumentParser, runs_file: str) -> None:
    """The results scripts' two ways to write the docs: `--record` stdin's runs in `runs_file`, or `--update`."""
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--record", action="store_true", help=f"keep stdin's runs in {runs_file}, update docs")
    action.add_argument("--update", action="store_true", help="update the docs from the kept runs")


def write_page(text: str) -> None:
    """docs/results.md as `text`, said on stdout."""
    RESULTS_PAGE.write_text(text, encoding="utf-8")
    print(f"updated {RESULTS_PAGE.relative_to(PROJECT)}")


def kept_pages() -> dict[Path, str]:
    """The docs as the kept runs (pipeline runs, ensembles among them, and the sweep) say they should read."""
    return pages(read_json(RUNS_FILE), read_json(SWEEP_FILE))


def update_docs() -> None:
    """Rewrite the generated tables in the docs from the kept runs."""
    for path, text in kept_pages().items():
        path.write_text(text, encoding="utf-8")
        print(f"updated {path.relative_to(PROJECT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--record", action="store_true", help=f"keep stdin's runs in {RUNS_FILE.name}, update docs")
    action.add_argument("--record-sweep", action="store_true", help=f"keep stdin's runs in {SWEEP_FILE.name}, too")
    action.add_argument(
        "--add", action="store_true", help=f"add stdin's runs to {RUNS_FILE.name} (a name kept replaces its run)"
    )
    action.add_argument(
        "--add-sweep",
        action="store_true",
        help=f"add stdin's runs to {SWEEP_FILE.name} beside its model's kept ones (a further step of their sweep)",
    )
    action.add_argument("--update", action="store_true", help="update the docs from the kept runs")
    parser.add_argument(
        "--ensemble", action="store_true", help="the runs ran ensemble/dvc.yaml too: read its metrics as well"
    )
    parser.add_argument("--match", metavar="REGEX", help="only the runs whose name matches (re.match)")
    args = parser.parse_args()
    if not args.update:
        sweep = args.record_sweep or args.add_sweep
        read = runs(json.load(sys.stdin), baselines=not sweep, ensemble=args.ensemble)
        read = [run for run in read if args.match is None or re.match(args.match, run["name"])]
        if not (args.record or sweep or args.add):
            print(tables(read))
            return
        if args.add:
            read = merged(read_json(RUNS_FILE), read, key=lambda run: run["name"])
        if args.record_sweep:
            read = merged(read_json(SWEEP_FILE), read, key=lambda run: run["params"]["train"]["model"])
        if args.add_sweep:
            read = merged(read_json(SWEEP_FILE), read, key=lambda run: run["name"])
        write_json(SWEEP_FILE if sweep else RUNS_FILE, read)
    update_docs()


if __name__ == "__main__":
    main()
