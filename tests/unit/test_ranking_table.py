"""bench/ranking_table.py: the rankers' sweeps and two-protocol table from `dvc exp show --json`, and the docs and
params generated from them."""

from __future__ import annotations

import yaml
from harness import PROJECT, bench_module

ranking_table = bench_module("ranking_table")


def run(name: str, ranker: str, val: float, test: float, strategy: str = "random", **settings) -> dict:
    rank = {"model": ranker, "threads": 0, "seed": 0, ranker: {"penalty": 500.0} | settings}
    params = {"data": {"dataset": "ml-100k"}, "split": {"strategy": strategy, "seed": 0}, "rank": rank, "train": {}}
    quality = {"ndcg@10": test, "precision@10": test / 2, "recall@10": test, "coverage@10": 0.2}
    popularity = {"ndcg@10": 0.12, "precision@10": 0.08, "recall@10": 0.12, "coverage@10": 0.01}
    metrics = {"test": {"rmse": 0.9}, "ranker": quality, "popularity": popularity}
    files = {
        "params": {"params.yaml": {"data": params}},
        "metrics": {
            "eval/metrics.json": {"data": metrics},
            "dvclive/rank/val.json": {"data": {"val": {"ndcg@10": val}}},
        },
    }
    return {"name": name, "data": {"rev": name, **files}}


def exp_show(*experiments: dict) -> list[dict]:
    """A baseline commit (with ranker metrics of its own, which a sweep does not count) and its experiments."""
    return [{**run("main", "ease", 0.9, 0.9), "experiments": [{"revs": list(experiments)}]}]


def test_the_sweep_is_chosen_on_val_per_protocol_and_ranker_and_test_plays_no_part():
    recorded = ranking_table.runs(
        exp_show(
            run("a", "ease", 0.24, 0.25, penalty=100.0),
            run("b", "ease", 0.25, 0.23, penalty=500.0),  # best val, worse test: chosen
            run("c", "ease", 0.13, 0.11, strategy="temporal", penalty=100.0),
            run("d", "ease", 0.12, 0.12, strategy="temporal", penalty=500.0),
        )
    )
    assert [entry["name"] for entry in recorded] == ["a", "b", "c", "d"]  # not the baseline commit
    assert ranking_table.chosen(recorded)["ease"]["penalty"] == 500.0
    assert ranking_table.chosen(recorded, ("ml-100k", "temporal"))["ease"]["penalty"] == 100.0
    sweeps = ranking_table.sweep_tables(recorded)
    random = sweeps[sweeps.index("**`ease`, ml-100k, random split**") :].split("\n\n")[1].splitlines()
    assert random == ["| penalty | val NDCG@10 | test NDCG@10 |", "|---|---|---|"] + [
        "| **500.0** | **0.2500** | **0.2300** |",
        "| 100.0 | 0.2400 | 0.2500 |",
    ]
    summary = ranking_table.summary_table(recorded).splitlines()
    assert summary[2].startswith("| ranker | random: val NDCG@10 | test NDCG@10 | test precision@10 |")
    assert "| temporal: val NDCG@10 |" in summary[2]
    ease = "| `ease` | 0.2500 | 0.2300 | 0.1150 | 0.2300 | 0.2000 | 0.1300 | 0.1100 | 0.0550 | 0.1100 | 0.2000 |"
    assert summary[4] == ease
    assert summary[5].startswith("| most popular |  | 0.1200 | 0.0800 | 0.1200 | 0.0100 |  | 0.1200 |")


def test_a_record_replaces_the_kept_runs_of_the_protocol_and_ranker_it_read():
    kept = ranking_table.runs(exp_show(run("a", "ease", 0.2, 0.2), run("b", "ease", 0.1, 0.1, strategy="temporal")))
    new = ranking_table.runs(exp_show(run("c", "ease", 0.3, 0.3)))
    assert [entry["name"] for entry in ranking_table.merged(kept, new)] == ["b", "c"]


def test_the_committed_tables_are_the_ones_the_recorded_runs_give():
    expected = ranking_table.page(ranking_table.read_runs())
    assert ranking_table.RESULTS_PAGE.read_text(encoding="utf-8") == expected, "stale: bench/ranking_table.py --update"


def test_each_rankers_committed_settings_are_the_default_protocols_choice():
    committed = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))["rank"]
    choices = ranking_table.chosen(ranking_table.read_runs())
    assert {"ials", "ease", "bpr"} <= set(choices)
    for ranker, setting in choices.items():
        # `dvc exp run -S rank.model=<ranker>` trains with rank.<ranker>: those must be the sweep's choice.
        own = committed[ranker]
        assert own == {key: setting[key] for key in own}, ranker
