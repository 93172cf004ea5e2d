"""bench/experiment_table.py: results tables from `dvc exp show --json`, and the docs generated from them."""

from __future__ import annotations

import json

import pytest
import yaml
from harness import PROJECT, bench_module

experiment_table = bench_module("experiment_table")


def run(
    name: str, model: str, seed: int, rmse: float, train_fraction: float = 0.7, val_rmse: float = 0.9, **train
) -> dict:
    params = {
        "data": {"dataset": "ml-100k"},
        "split": {"train_fraction": train_fraction, "val_fraction": 0.15, "seed": seed},
        "train": {"model": model, "seed": seed, "threads": 1, "weight_decay": 0.05, "refit": False} | train,
    }
    metrics = {"test": {"rmse": rmse, "mae": rmse / 2}, "baseline": {"rmse": 1.1, "mae": 0.9}}
    files = {
        "params": {"params.yaml": {"data": params}},
        "metrics": {
            "eval/metrics.json": {"data": metrics},
            "dvclive/train/val.json": {"data": {"val": {"rmse": val_rmse}}},
        },
    }
    return {"name": name, "data": {"rev": name, **files}}


def exp_show(*experiments: dict) -> list[dict]:
    workspace = run("workspace", "biased_mf", 0, 0.5)
    return [workspace, {**run("main", "biased_mf", 0, 0.91), "experiments": [{"revs": list(experiments)}]}]


def test_runs_keep_baselines_and_experiments_but_not_the_workspace():
    found = experiment_table.runs(exp_show(run("exp-a", "biases", 0, 0.93)))
    assert [entry["name"] for entry in found] == ["exp-a", "main"]
    assert found[0]["params"]["train"]["model"] == "biases" and found[0]["metrics"]["test"]["rmse"] == 0.93


def test_an_ensemble_run_is_read_as_a_run_of_its_own_only_when_asked():
    experiment = run("exp-e", "bayes_mf", 0, 0.89)
    params = experiment["data"]["params"]["params.yaml"]["data"]
    params["ensemble"] = {"members": ["bayes_mf", "als"], "weight_penalty": 0.0, "refit": True}
    metrics = experiment["data"]["metrics"]
    blended = {"test": {"rmse": 0.87, "mae": 0.68}, "baseline": {"rmse": 1.1}}
    metrics["ensemble/eval/metrics.json"] = {"data": {"ensemble": blended}}
    metrics["ensemble/blend.json"] = {"data": {"weights": {"bayes_mf": 0.7, "als": 0.3}}}
    assert [found["name"] for found in experiment_table.runs(exp_show(experiment), baselines=False)] == ["exp-e"]
    main, ensemble = experiment_table.runs(exp_show(experiment), baselines=False, ensemble=True)
    assert main["params"]["train"]["model"] == "bayes_mf" and main["metrics"]["test"]["rmse"] == 0.89
    assert ensemble["name"] == "exp-e:ensemble" and ensemble["metrics"]["test"]["rmse"] == 0.87
    assert ensemble["params"]["train"] == {"model": "ensemble", "seed": 0, "threads": 1} | params["ensemble"]
    assert ensemble["params"]["split"] == main["params"]["split"]
    assert experiment_table.label(ensemble["params"]["train"]) == "`ensemble`, refit"


def test_tables_group_by_protocol_and_model_with_mean_and_spread_over_seeds():
    recorded = experiment_table.runs(
        exp_show(
            run("a", "biases", 1, 0.94),
            run("b", "biases", 2, 0.96),
            run("c", "biases", 2, 0.96),  # the same seeds again count once
            run("d", "biases", 0, 0.92, train_fraction=0.72),
            run("e", "biases", 1, 0.90, refit=True),
        )
    )
    text = experiment_table.tables(recorded)
    assert "**ml-100k, split 0.7/0.15/0.15 (train/val/test), split seeds 0, 1, 2**" in text
    assert "| `biases` | 2 | 0.9500 ± 0.0141 | 0.4750 ± 0.0071 |" in text
    assert "| `biased_mf` | 1 | 0.9100 | 0.4550 |" in text
    assert "| `biases`, refit | 1 | 0.9000 | 0.4500 |" in text  # refitted runs are a row of their own
    assert "split 0.72/0.15/0.13" in text
    only = experiment_table.tables(recorded, ("ml-100k", "0.72/0.15/0.13"))
    assert "0.7/0.15/0.15" not in only and "| `biases` | 1 | 0.9200 | 0.4600 |" in only


def test_a_sweep_table_shows_the_params_that_vary_best_val_rmse_first_and_the_choice_in_bold():
    sweep = experiment_table.runs(
        exp_show(
            run("a", "svdpp", 0, 0.95, val_rmse=0.93, weight_decay=0.02),
            run("b", "svdpp", 0, 0.90, val_rmse=0.92, weight_decay=0.1),  # chosen on val, not on test
            run("c", "svdpp", 0, 0.91, val_rmse=0.94, weight_decay=0.4),
            run("d", "autorec", 0, 0.90, val_rmse=0.91, hidden_dim=100),
        ),
        baselines=False,
    )
    assert [entry["name"] for entry in sweep] == ["a", "b", "c", "d"]
    assert experiment_table.chosen(sweep) == {"svdpp": {"weight_decay": 0.1}, "autorec": {}}
    text = experiment_table.sweep_tables(sweep)
    table = text[text.index("**`svdpp`**") :].splitlines()
    assert table[2:] == [
        "| weight_decay | val RMSE |",
        "|---|---|",
        "| **0.1** | **0.9200** |",
        "| 0.02 | 0.9300 |",
        "| 0.4 | 0.9400 |",
    ]


def test_an_exact_tie_in_val_rmse_goes_to_the_smaller_setting():
    tied = [
        run(name, "bayes_mf", 0, 0.88, val_rmse=0.89, sweeps=sweeps, embedding_dim=16)
        for name, sweeps in (("a-500", 500), ("b-300", 300), ("c-1000", 1000))
    ]
    recorded = experiment_table.runs(exp_show(*tied), baselines=False)
    assert [row[0]["sweeps"] for row in experiment_table.swept(recorded)["bayes_mf"]] == [300, 500, 1000]


def test_each_models_committed_settings_are_the_recorded_sweeps_choice():
    sweep = json.loads(experiment_table.SWEEP_FILE.read_text(encoding="utf-8"))
    committed = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))["train"]
    choices = experiment_table.chosen(sweep)
    assert {"biased_mf", "svdpp", "genre_mlp", "timesvd", "autorec", "als", "bayes_mf"} <= set(choices)
    for model, setting in choices.items():
        # `dvc exp run -S train.model=<model>` trains with train.<model>: those must be the sweep's choice.
        settings = experiment_table.train_settings(committed | {"model": model})
        assert {key: settings.get(key) for key in setting} == setting, model


def test_a_recorded_sweep_replaces_the_kept_runs_of_the_models_it_swept_and_keeps_the_others():
    def sweep_run(name: str, model: str) -> dict:
        return {"name": name, "params": {"train": {"model": model}}}

    kept, new = [sweep_run("b", "svdpp"), sweep_run("c", "als")], [sweep_run("a", "als")]
    by_model = experiment_table.merged(kept, new, key=lambda run: run["params"]["train"]["model"])
    assert by_model == [sweep_run("a", "als"), sweep_run("b", "svdpp")]


def test_a_runs_settings_are_its_models_own_or_the_flat_list_of_older_runs():
    nested = {"model": "biased_mf", "seed": 0, "biased_mf": {"weight_decay": 0.05}, "svdpp": {"weight_decay": 0.1}}
    assert experiment_table.train_settings(nested) == {"model": "biased_mf", "seed": 0, "weight_decay": 0.05}
    # A setting added since a run was made reads as what it meant then, as an old checkpoint's does.
    before_chains = {"model": "bayes_mf", "bayes_mf": {"sweeps": 300, "implicit": True}}
    assert experiment_table.train_settings(before_chains) == {
        "model": "bayes_mf",
        "sweeps": 300,
        "implicit": True,
        "genres": False,
        "release_year_span": 0,
        "chains": 1,
        "session_minutes": [],
    }
    before_own_penalty = {"model": "svdpp", "svdpp": {"weight_decay": 0.1}}
    assert experiment_table.train_settings(before_own_penalty)["implicit_weight_decay"] == 0.1
    flat = {"model": "svdpp", "seed": 0, "weight_decay": 0.1, "dropout": 0.5}
    assert experiment_table.train_settings(flat) == flat


def test_with_tables_replaces_only_the_marked_part():
    text = f"intro\n{experiment_table.START}\nold\n{experiment_table.END}\noutro\n"
    assert (
        experiment_table.with_tables(text, "new")
        == f"intro\n{experiment_table.START}\nnew\n{experiment_table.END}\noutro\n"
    )


def test_the_committed_tables_are_the_ones_the_recorded_runs_give():
    for path, expected in experiment_table.kept_pages().items():
        assert path.read_text(encoding="utf-8") == expected, f"{path.name} is stale: bench/experiment_table.py --update"


def test_the_default_model_is_the_most_accurate_single_model_on_the_notebooks_split():
    # The rule (README): the most accurate single model whose `make pipeline` stays within two minutes.
    recorded = json.loads(experiment_table.RUNS_FILE.read_text(encoding="utf-8"))
    single = {
        entry["params"]["train"]["model"]: entry["metrics"]["test"]["rmse"]
        for entry in recorded
        if entry["params"]["train"]["model"] != "ensemble"
        and not entry["params"]["train"].get("refit")
        and (entry["params"]["data"]["dataset"], experiment_table.protocol(entry["params"]["split"]))
        == experiment_table.README_TABLE
    }
    default = experiment_table.default_model()
    assert default == min(single, key=single.get) == "bayes_mf"
    # The recorded run is the committed pipeline's: `make pipeline` gives the README's figure.
    committed = json.loads((experiment_table.PROJECT / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert single[default] == pytest.approx(committed["test"]["rmse"], abs=5e-5)
    row = f"| `{default}` (the default) | 1 | {committed['test']['rmse']:.4f} |"
    assert row in experiment_table.README.read_text(encoding="utf-8")
