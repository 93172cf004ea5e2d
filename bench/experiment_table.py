"""Results tables from `dvc exp show --json`: test RMSE and MAE per model, one table per data set and split.

    dvc exp show --json | .venv/bin/python bench/experiment_table.py                 # print the tables
    dvc exp show --json | .venv/bin/python bench/experiment_table.py --record       # keep the runs, update the docs
    .venv/bin/python bench/experiment_table.py --update                             # update the docs from the kept runs

Runs are grouped by (data set, split fractions, model); each cell is the mean over the
seeds in the group (a run repeated with the same seeds counts once) with the standard
deviation beside it. `--record` writes the runs it read to RUNS_FILE (params and metrics
only), so the tables in docs/results.md and README.md, between their marker comments, are
generated from what the pipeline measured and a test can check they still are.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
RUNS_FILE = PROJECT / "bench" / "results" / "ml-100k-runs.json"
RESULTS_PAGE = PROJECT / "docs" / "results.md"
README = PROJECT / "README.md"
START, END = "<!-- experiment-table:start -->", "<!-- experiment-table:end -->"
# The README shows ML-100K on the notebook's protocol only; docs/results.md every table.
README_TABLE = ("ml-100k", "0.7/0.15/0.15")


def runs(exp_show: list[dict]) -> list[dict]:
    """Every run (baselines and experiments) with test metrics: its name, params and eval metrics."""
    found = []
    for baseline in exp_show:
        for run in [baseline, *(exp for group in baseline.get("experiments") or [] for exp in group["revs"])]:
            data = run.get("data") or {}
            metrics = (data.get("metrics") or {}).get("eval/metrics.json", {}).get("data", {})
            params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
            if "test" in metrics and run.get("name") != "workspace" and data.get("rev") != "workspace":
                kept = {section: params[section] for section in ("data", "split", "train")}
                found.append({"name": run.get("name") or data.get("rev"), "params": kept, "metrics": metrics})
    return sorted(found, key=lambda run: run["name"])


def summary(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4f}{spread}"


def protocol(split: dict) -> str:
    test_fraction = 1 - split["train_fraction"] - split["val_fraction"]
    return f"{split['train_fraction']:g}/{split['val_fraction']:g}/{test_fraction:.2g}"


def tables(recorded: list[dict], only: tuple[str, str] | None = None) -> str:
    """Markdown: per (data set, protocol) a heading line and one row per model, then the baseline."""
    groups: dict[tuple[str, str], dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for run in recorded:
        split, train = run["params"]["split"], run["params"]["train"]
        key = (run["params"]["data"]["dataset"], protocol(split))
        groups[key][train["model"]][(split["seed"], train["seed"])] = run["metrics"]
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
            lines.append(f"| `{model}` | {len(metrics)} | {summary(_rmse(by_seed))} | {mae} |")
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


def _rmse(by_seed: dict) -> list[float]:
    return [metrics["test"]["rmse"] for metrics in by_seed.values()]


def with_tables(text: str, table_text: str) -> str:
    """`text` with the part between the marker comments replaced by `table_text`."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table_text}\n{END}{tail}"


def pages(recorded: list[dict]) -> dict[Path, str]:
    """The README and the results page as they should read, tables regenerated from `recorded`."""
    return {
        RESULTS_PAGE: with_tables(RESULTS_PAGE.read_text(encoding="utf-8"), tables(recorded)),
        README: with_tables(README.read_text(encoding="utf-8"), tables(recorded, README_TABLE)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--record", action="store_true", help=f"keep stdin's runs in {RUNS_FILE.name}, update docs")
    action.add_argument("--update", action="store_true", help="update the docs from the kept runs")
    args = parser.parse_args()
    if args.update:
        recorded = json.loads(RUNS_FILE.read_text(encoding="utf-8"))
    else:
        recorded = runs(json.load(sys.stdin))
    if args.record:
        RUNS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RUNS_FILE.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if args.record or args.update:
        for path, text in pages(recorded).items():
            path.write_text(text, encoding="utf-8")
            print(f"updated {path.relative_to(PROJECT)}")
    else:
        print(tables(recorded))


if __name__ == "__main__":
    main()
