"""Ranking tables from recorded `dvc exp` runs: each ranker's sweep per split protocol, chosen on val NDCG@10,
and the two-protocol table of the chosen settings' test metrics beside popularity's.

    dvc exp show --json | .venv/bin/python bench/ranking_table.py            # print the tables
    dvc exp show --json | .venv/bin/python bench/ranking_table.py --record   # keep the runs, update the docs
    .venv/bin/python bench/ranking_table.py --update                          # update the docs from the kept runs

A run is an experiment with the ranker's metrics: its params (`data`, `split`, `rank`), the
evaluate stage's `ranker.*` and `popularity.*` test metrics and the rank stage's best val NDCG@10. Runs are
grouped by data set and split strategy (`random`, `temporal`), then by ranker: one row per setting of the
rank params that vary, best val NDCG@10 first; the first row is the ranker's chosen setting on that protocol
(test plays no part in it). `--record` replaces the kept runs of the (protocol, ranker) pairs it read, keeps
the others (RUNS_FILE), and rewrites the tables in docs/results.md between their markers; a test checks that
the committed tables are what the kept runs give, and that params.yaml's `rank` settings are the default
protocol's choice.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from experiment_table import RESULTS_PAGE, add_record_options, read_json, with_tables, write_json, write_page

PROJECT = Path(__file__).resolve().parents[1]
RUNS_FILE = PROJECT / "bench" / "results" / "ml-100k-ranking-sweep.json"
START, END = "<!-- ranking-table:start -->", "<!-- ranking-table:end -->"
SWEEP_START, SWEEP_END = "<!-- ranking-sweep:start -->", "<!-- ranking-sweep:end -->"
K = 10  # evaluate.ranking_k of every recorded run
DEFAULT_PROTOCOL = ("ml-100k", "random")  # what params.yaml's rank settings are chosen on
SHARED_KEYS_IGNORED = ("threads",)  # how a run was computed, not what it computed


def runs(exp_show: list[dict]) -> list[dict]:
    """Every experiment with the ranker's test metrics (not the baseline commits, which a sweep starts from): its
    name, params, metrics and val NDCG@K."""
    found = []
    for baseline in exp_show:
        for run in [exp for group in baseline.get("experiments") or [] for exp in group["revs"]]:
            data = run.get("data") or {}
            all_metrics = data.get("metrics") or {}
            metrics = all_metrics.get("eval/metrics.json", {}).get("data", {})
            # The val figure: dvclive/rank/val.json, or dvclive's summary in runs before val.json (2026-12-07).
            chosen_on = all_metrics.get("dvclive/rank/val.json", {}).get("data", {}).get("val", {})
            ranked = all_metrics.get("dvclive/rank/metrics.json", {}).get("data", {})
            params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
            if "ranker" in metrics and run.get("name") != "workspace" and data.get("rev") != "workspace":
                found.append(
                    {
                        "name": run.get("name") or data.get("rev"),
                        "params": {section: params[section] for section in ("data", "split", "rank")},
                        "metrics": {group: metrics[group] for group in ("ranker", "popularity")},
                        "val_ndcg": chosen_on.get(f"ndcg@{K}", ranked.get(f"best_val_ndcg@{K}")),
                    }
                )
    return sorted(found, key=lambda run: run["name"])


def protocol(run: dict) -> tuple[str, str]:
    """(data set, split strategy) of a run."""
    return run["params"]["data"]["dataset"], run["params"]["split"]["strategy"]


def rank_settings(rank: dict) -> dict:
    """A run's rank params as one flat mapping: the shared keys and its ranker's own settings."""
    shared = {key: value for key, value in rank.items() if not isinstance(value, dict)}
    return shared | rank[rank["model"]]


def swept(recorded: list[dict]) -> dict[tuple[str, str], dict[str, list[tuple[dict, dict]]]]:
    """Per protocol and ranker: each setting of the rank params that vary among its runs, with its run, best val
    NDCG first (an exact tie to the setting listed first in the kept runs' order, by name)."""
    by_group: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in recorded:
        by_group[protocol(run)][run["params"]["rank"]["model"]].append(run)
    tables = {}
    for group, rankers in by_group.items():
        tables[group] = {}
        for ranker, ranker_runs in rankers.items():
            settings = [rank_settings(run["params"]["rank"]) for run in ranker_runs]
            keys = sorted(
                key
                for key in settings[0]
                if key not in SHARED_KEYS_IGNORED and len({json.dumps(s.get(key)) for s in settings}) > 1
            )
            rows = [({key: s[key] for key in keys}, run) for s, run in zip(settings, ranker_runs, strict=True)]
            tables[group][ranker] = sorted(rows, key=lambda row: -row[1]["val_ndcg"])
    return tables


def chosen(recorded: list[dict], group: tuple[str, str] = DEFAULT_PROTOCOL) -> dict[str, dict]:
    """Per ranker, on protocol `group`: the full rank settings of its run with the best val NDCG."""
    return {
        ranker: rank_settings(rows[0][1]["params"]["rank"]) for ranker, rows in swept(recorded).get(group, {}).items()
    }


def summary_table(recorded: list[dict]) -> str:
    """Markdown: one row per ranker and popularity; per protocol, the chosen setting's val and test NDCG@K and its
    test precision, recall and coverage."""
    tables = swept(recorded)
    groups = sorted(tables)
    metrics = ("ndcg", "precision", "recall", "coverage")
    names = {"ndcg": "NDCG", "precision": "precision", "recall": "recall", "coverage": "coverage"}
    header = "| ranker | " + " | ".join(
        f"{strategy}: val NDCG@{K} | " + " | ".join(f"test {names[metric]}@{K}" for metric in metrics)
        for _, strategy in groups
    )
    lines = [
        f"{', '.join(sorted({dataset for dataset, _ in groups}))}; each ranker with the setting its protocol's "
        f"sweep chose on val NDCG@{K} ({len(recorded)} runs).",
        "",
        header + " |",
        "|---|" + "---|" * (len(groups) * (1 + len(metrics))),
    ]
    rankers = sorted({ranker for group in groups for ranker in tables[group]})
    for ranker in rankers:
        cells = []
        for group in groups:
            rows = tables[group].get(ranker)
            if rows is None:
                cells += [""] * (1 + len(metrics))
                continue
            best = rows[0][1]
            cells += [f"{best['val_ndcg']:.4f}"] + [f"{best['metrics']['ranker'][f'{m}@{K}']:.4f}" for m in metrics]
        lines.append(f"| `{ranker}` | " + " | ".join(cells) + " |")
    popularity = []
    for group in groups:
        first = next(iter(tables[group].values()))[0][1]["metrics"]["popularity"]
        popularity += [""] + [f"{first[f'{m}@{K}']:.4f}" for m in metrics]
    lines.append("| most popular | " + " | ".join(popularity) + " |")
    return "\n".join(lines)


def sweep_tables(recorded: list[dict]) -> str:
    """Markdown: per protocol and ranker, its swept settings with val and test NDCG@K, best val first (bold:
    the chosen setting)."""
    parts = []
    for (dataset, strategy), rankers in sorted(swept(recorded).items()):
        for ranker, rows in sorted(rankers.items()):
            keys = list(rows[0][0])
            lines = [
                f"**`{ranker}`, {dataset}, {strategy} split**",
                "",
                "| " + " | ".join([*keys, f"val NDCG@{K}", f"test NDCG@{K}"]) + " |",
                "|" + "---|" * (len(keys) + 2),
            ]
            for index, (setting, run) in enumerate(rows):
                cells = [str(setting[key]) for key in keys]
                cells += [f"{run['val_ndcg']:.4f}", f"{run['metrics']['ranker'][f'ndcg@{K}']:.4f}"]
                lines.append("| " + " | ".join(f"**{cell}**" if index == 0 else cell for cell in cells) + " |")
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def page(recorded: list[dict]) -> str:
    """docs/results.md as it should read, its ranking tables regenerated from `recorded`."""
    text = with_tables(RESULTS_PAGE.read_text(encoding="utf-8"), summary_table(recorded), START, END)
    return with_tables(text, sweep_tables(recorded), SWEEP_START, SWEEP_END)


def merged(kept: list[dict], new: list[dict]) -> list[dict]:
    """`kept` without the runs of a (protocol, ranker) that `new` holds, plus `new`, sorted by name."""

    def key(run: dict) -> tuple:
        return (*protocol(run), run["params"]["rank"]["model"])

    replaced = {key(run) for run in new}
    return sorted([run for run in kept if key(run) not in replaced] + new, key=lambda run: run["name"])


def read_runs() -> list[dict]:
    return read_json(RUNS_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_record_options(parser, RUNS_FILE.name)
    args = parser.parse_args()
    if args.update:
        recorded = read_runs()
    else:
        read = runs(json.load(sys.stdin))
        if not args.record:
            print(summary_table(read) + "\n\n" + sweep_tables(read))
            return
        recorded = merged(read_runs() if RUNS_FILE.exists() else [], read)
        write_json(RUNS_FILE, recorded)
    write_page(page(recorded))


if __name__ == "__main__":
    main()
