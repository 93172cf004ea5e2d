"""Summarise `dvc exp show --json` as a table: test RMSE and MAE per model and split protocol.

    dvc exp show --json [--rev REV] | .venv/bin/python bench/experiment_table.py

Runs are grouped by (data set, split fractions, model); each cell is the mean over the
seeds in the group (a run repeated with the same seeds counts once) with the standard
deviation beside it.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def runs(exp_show: list[dict]) -> list[dict]:
    """Every run (baselines and experiments) that has test metrics, as flat dicts."""
    found = []
    for baseline in exp_show:
        for run in [baseline, *(exp for group in baseline.get("experiments") or [] for exp in group["revs"])]:
            data = run.get("data") or {}
            metrics = (data.get("metrics") or {}).get("eval/metrics.json", {}).get("data", {})
            params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
            if "test" in metrics and run.get("name") != "workspace" and data.get("rev") != "workspace":
                found.append({"name": run.get("name") or data.get("rev"), "metrics": metrics, "params": params})
    return found


def summary(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4f}{spread}"


def main() -> None:
    groups = defaultdict(dict)
    for run in runs(json.load(sys.stdin)):
        split, train = run["params"]["split"], run["params"]["train"]
        test_fraction = 1 - split["train_fraction"] - split["val_fraction"]
        protocol = f"{split['train_fraction']:g}/{split['val_fraction']:g}/{test_fraction:.2g}"
        key = (run["params"]["data"]["dataset"], protocol, train["model"])
        groups[key][(split["seed"], train["seed"])] = run["metrics"]
    print("| data set | split train/val/test | model | seeds | test RMSE | test MAE | baseline RMSE |")
    print("|---|---|---|---|---|---|---|")
    for (dataset, protocol, model), by_seed in sorted(groups.items()):
        metrics = list(by_seed.values())
        rmse = summary([m["test"]["rmse"] for m in metrics])
        mae = summary([m["test"]["mae"] for m in metrics])
        baseline = summary([m["baseline"]["rmse"] for m in metrics])
        print(f"| {dataset} | {protocol} | `{model}` | {len(metrics)} | {rmse} | {mae} | {baseline} |")


if __name__ == "__main__":
    main()
