"""bench/given_folds.py: ML-100K's own folds from `dvc exp show --json`, beside the published figures."""

from __future__ import annotations

import pytest
from harness import PROJECT, bench_module

given_folds = bench_module("given_folds")


def run(name: str, fold: str, rmse: float, rows: int = 20_000, ensemble: tuple | None = None, refit=True) -> dict:
    """An experiment on `fold`; `ensemble`: the ensemble's test RMSE and rows."""
    split = {"strategy": "given", "fold": fold, "train_fraction": 0.7, "val_fraction": 0.08, "seed": 0}
    params = {
        "data": {"dataset": "ml-100k"},
        "split": split,
        "train": {"model": "bayes_mf", "refit": refit, "seed": 0, "threads": 2},
        "ensemble": {"members": ["bayes_mf", "als"], "weight_penalty": 0.0, "refit": True},
    }
    metrics = {"eval/metrics.json": {"data": {"test": {"rmse": rmse, "rows": rows}, "baseline": {"rmse": 1.1}}}}
    if ensemble is not None:
        blended = {"test": {"rmse": ensemble[0], "rows": ensemble[1]}}
        metrics["ensemble/eval/metrics.json"] = {"data": {"ensemble": blended}}
    return {"name": name, "data": {"rev": name, "params": {"params.yaml": {"data": params}}, "metrics": metrics}}


def exp_show(*groups: tuple[dict, str]) -> list[dict]:
    baseline = run("main", "u1", 0.8786, rows=15_000)
    baseline["data"]["params"]["params.yaml"]["data"]["split"]["strategy"] = "random"
    experiments = [{"revs": [experiment], "executor": {"state": state}} for experiment, state in groups]
    return [{**baseline, "experiments": experiments}]


def test_runs_are_read_per_fold_and_stale_or_unfinished_ones_are_left_out():
    recorded = given_folds.fold_runs(
        exp_show(
            (run("u1", "u1", 0.8801, ensemble=(0.8702, 20_000)), "success"),
            (run("u2", "u2", 0.8902, ensemble=(0.8639, 15_000)), "success"),  # dvc.yaml alone: the baseline's
            (run("u3", "u3", 0.8786), "queued"),  # shows the baseline's metrics
            (run("u4", "u4", 0.8786), "failed"),
            (run("u5", "u5", 0.8850, refit=False), None),
        )
    )
    assert [(entry["fold"], entry["model"], entry["rmse"]) for entry in recorded] == [
        ("u1", "`bayes_mf`, refit", 0.8801),
        ("u1", "`ensemble`, refit", 0.8702),
        ("u2", "`bayes_mf`, refit", 0.8902),
        ("u5", "`bayes_mf`", 0.8850),
    ]


def test_the_table_has_a_row_per_fold_the_mean_of_the_five_and_the_published_figures():
    recorded = [
        {"name": f"u{i}", "fold": f"u{i}", "model": "`bayes_mf`, refit", "val_fraction": 0.08, "rmse": 0.88 + i / 100}
        for i in range(1, 6)
    ] + [{"name": "u1:ensemble", "fold": "u1", "model": "`ensemble`, refit", "val_fraction": 0.08, "rmse": 0.87}]
    lines = given_folds.table(recorded).splitlines()
    assert lines[0] == "| fold | `bayes_mf`, refit, val 8% | `ensemble`, refit, val 8% |"
    assert lines[2] == "| u1 | 0.8900 | 0.8700 |" and lines[3] == "| u2 | 0.9000 | – |"
    assert lines[7] == f"| mean of u1-u5 | {0.91:.4f} | – |"
    assert "| GLocal-K (Han et al., 2021) | 0.8889 |" in lines


def test_the_committed_table_is_the_one_the_kept_runs_give():
    stale = "docs/results.md's folds table is stale: bench/given_folds.py --update"
    assert (PROJECT / "docs" / "results.md").read_text(encoding="utf-8") == given_folds.page(given_folds.read_runs()), (
        stale
    )


@pytest.mark.parametrize("fold", ["u1", "u2", "u3", "u4", "u5"])
def test_the_default_model_ran_on_every_fold_with_the_committed_settings(fold):
    kept = [entry for entry in given_folds.read_runs() if entry["fold"] == fold and "`bayes_mf`" in entry["model"]]
    assert kept, f"no run of the default model on {fold}: bench/given_folds.py"
