"""bench/profile_sweep.py: a profile's recorded sweep, chosen on val RMSE, and the profile's settings its choice."""

from __future__ import annotations

import pytest
from harness import PROJECT, bench_module

profile_sweep = bench_module("profile_sweep")

TWIN = "ml-25m-twin"


def run(name: str, dataset: str, dim: int, val_mse: float, test: float) -> dict:
    data = {"dataset": dataset, "synthetic_ratings": 25_000_095, "synthetic_users": 162_541, "synthetic_movies": 59_047}
    train = {"model": "bayes_mf", "bayes_mf": {"embedding_dim": dim, "sweeps": 14}}
    params = {"data": data, "split": {"strategy": "random"}, "train": train}
    metrics = {
        "eval/metrics.json": {"data": {"test": {"rmse": test}, "noise_floor": {"rmse": 0.5}}},
        "dvclive/train/val.json": {"data": {"val": {"rmse": val_mse**0.5}}},
    }
    return {"name": name, "data": {"rev": name, "params": {"params.yaml": {"data": params}}, "metrics": metrics}}


def test_only_runs_on_the_profiles_data_count_and_the_best_val_is_chosen_in_bold():
    exp_show = [
        {
            **run("main", "ml-100k", 32, 0.77, 0.88),
            "experiments": [
                {"revs": [run("a", "synthetic", 8, 0.30, 0.54)]},
                {"revs": [run("b", "synthetic", 12, 0.29, 0.55)]},  # test worse, val better: chosen
            ],
        }
    ]
    recorded = profile_sweep.sweep_runs(exp_show, TWIN)
    assert [entry["name"] for entry in recorded] == ["b", "a"]
    assert profile_sweep.chosen(recorded)["embedding_dim"] == 12
    lines = profile_sweep.table(recorded).splitlines()
    assert lines[0] == "| `embedding_dim` | best val RMSE | test RMSE | x noise floor |"
    assert lines[2] == f"| **12** | **{0.29**0.5:.4f}** | **0.5500** | **1.100x** |"


def test_the_committed_table_is_the_one_the_kept_runs_give():
    stale = "docs/results.md's twin sweep is stale: bench/profile_sweep.py ml-25m-twin --update"
    assert (PROJECT / "docs" / "results.md").read_text() == profile_sweep.page(TWIN, profile_sweep.read_runs(TWIN)), (
        stale
    )


@pytest.mark.parametrize("profile", [TWIN])
def test_the_profiles_settings_are_its_recorded_sweeps_choice(profile):
    composed = profile_sweep.profile_params(profile)["train"]
    model = composed["model"]
    assert composed[model] == profile_sweep.chosen(profile_sweep.read_runs(profile), model)
