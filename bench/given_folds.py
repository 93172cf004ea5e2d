"""ML-100K's own folds (u1-u5) beside the published figures: the default model and the ensemble on each fold.

    for fold in u1 u2 u3 u4 u5; do
      dvc exp run --queue -n given-$fold dvc.yaml ensemble/dvc.yaml -S split.strategy=given -S split.fold=$fold
    done
    dvc queue start -j 1                 # then, once `dvc queue status` shows them done:
    dvc exp show --json | .venv/bin/python bench/given_folds.py --record   # keep the runs, update the docs
    .venv/bin/python bench/given_folds.py --update                          # update the docs from the kept runs

A run is an experiment on `split.strategy: given`: its fold, the rating model's and the ensemble's test RMSE
(read as bench/experiment_table.py reads any run). The table in docs/results.md (between its markers) has a row
per fold and their mean, a column per model and val share, and the figures published on u1.base/u1.test; a
test checks it is what the kept runs give.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from experiment_table import (
    RESULTS_PAGE,
    add_record_options,
    label,
    read_json,
    runs,
    with_tables,
    write_json,
    write_page,
)

PROJECT = Path(__file__).resolve().parents[1]
RUNS_FILE = PROJECT / "bench" / "results" / "ml-100k-given-folds.json"
START, END = "<!-- given-folds:start -->", "<!-- given-folds:end -->"
FOLDS = ("u1", "u2", "u3", "u4", "u5")
# Test RMSE published on u1.base/u1.test, as each paper reports it.
PUBLISHED_ON_U1 = {
    "GLocal-K (Han et al., 2021)": 0.8889,
    "GraphRec (Rashed et al., 2019)": 0.904,
    "GC-MC (van den Berg et al., 2017)": 0.910,
}


def fold_runs(exp_show: list[dict]) -> list[dict]:
    """The runs on ML-100K's given folds, each `{"name", "fold", "model", "val_fraction", "rmse"}` (the model as
    the tables name it: ", refit" when refitted on train + val): one per rating model and one per ensemble."""
    found = []
    every_run = runs(exp_show, baselines=False, ensemble=True)
    test_rows = {run["name"]: run["metrics"]["test"]["rows"] for run in every_run}
    for run in every_run:
        split = run["params"]["split"]
        # A run of dvc.yaml alone keeps the ensemble's metrics as it found them, of another test part.
        of_its_split = test_rows[run["name"].removesuffix(":ensemble")] == run["metrics"]["test"]["rows"]
        if run["params"]["data"]["dataset"] == "ml-100k" and split["strategy"] == "given" and of_its_split:
            found.append(
                {
                    "name": run["name"],
                    "fold": split["fold"],
                    "model": label(run["params"]["train"]),
                    "val_fraction": split["val_fraction"],
                    "rmse": run["metrics"]["test"]["rmse"],
                }
            )
    return sorted(found, key=lambda run: (run["fold"], run["model"]))


def table(recorded: list[dict]) -> str:
    """Markdown: test RMSE per fold and (model, val share), the five folds' mean, then the published u1 figures."""
    columns = sorted({(run["model"], run["val_fraction"]) for run in recorded}, key=lambda c: ("ensemble" in c[0], c))
    rmse = {(run["fold"], run["model"], run["val_fraction"]): run["rmse"] for run in recorded}
    lines = [
        "| fold | " + " | ".join(f"{model}, val {val:.0%}" for model, val in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for fold in FOLDS:
        cells = [f"{rmse[fold, *column]:.4f}" if (fold, *column) in rmse else "–" for column in columns]
        lines.append(f"| {fold} | " + " | ".join(cells) + " |")
    means = []
    for column in columns:
        values = [rmse[fold, *column] for fold in FOLDS if (fold, *column) in rmse]
        means.append(f"{statistics.mean(values):.4f}" if len(values) == len(FOLDS) else "–")
    lines.append("| mean of u1-u5 | " + " | ".join(means) + " |")
    lines += ["", "| published on u1 | test RMSE |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in PUBLISHED_ON_U1.items()]
    return "\n".join(lines)


def page(recorded: list[dict]) -> str:
    """docs/results.md with the folds' table regenerated from `recorded`."""
    return with_tables(RESULTS_PAGE.read_text(encoding="utf-8"), table(recorded), START, END)


def read_runs() -> list[dict]:
    return read_json(RUNS_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_record_options(parser, RUNS_FILE.name)
    args = parser.parse_args()
    if args.update:
        recorded = read_runs()
    else:
        recorded = fold_runs(json.load(sys.stdin))
        if args.record:
            write_json(RUNS_FILE, recorded)
    if args.record or args.update:
        write_page(page(recorded))
    else:
        print(table(recorded))


if __name__ == "__main__":
    main()
