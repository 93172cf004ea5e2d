"""Each bench/ script whose numbers the docs publish, run through its main() on a tiny generated project.

The scripts read the project's files (params.yaml, data/prepared, data/split): the tests point them
at a project of 1,500 synthetic ratings made by the pipeline's own download, preprocess and split
code, with few epochs, and check what each prints: the right rows, finite values on the rating
scale (or in [0, 1], or positive for speeds). scale.py (every stage through `dvc repro`) takes a
minute: it is marked slow. experiment_table.py and
synthetic_oracle.py's estimator have their own tests (test_experiment_table.py, test_synthetic_oracle.py).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml
from harness import PROJECT, bench_module

from movielens_pipeline.download import fetch_dataset
from movielens_pipeline.params import parse_section
from movielens_pipeline.preprocess import preprocess
from movielens_pipeline.schema import RATING_MAX, RATING_MIN
from movielens_pipeline.split import split

BENCH = PROJECT / "bench"
SCALE_WIDTH = RATING_MAX - RATING_MIN  # no RMSE on the rating scale can be larger
NUMBER = r"(-?[\d.]+(?:e-?\d+)?)"


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory) -> Path:
    """A project folder as `dvc repro` leaves it (params.yaml, data/raw, data/prepared, data/split), made by the
    stages' own functions from 1,500 synthetic ratings, with training cut to a few epochs."""
    root = tmp_path_factory.mktemp("tiny-project")
    document = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))
    document["data"].update(
        dataset="synthetic", synthetic_ratings=1500, synthetic_users=60, synthetic_movies=60, synthetic_rank=4
    )
    document["train"].update(max_epochs=3, patience=1)
    document["train"]["bayes_mf"].update(sweeps=5, burn_in=1)  # one sample kept per chain, after 4 ALS sweeps
    (root / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    folders = {name: root / "data" / name for name in ("raw", "prepared", "split")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    fetch_dataset(parse_section("data", document["data"]), folders["raw"])
    preprocess(folders["raw"], parse_section("preprocess", document["preprocess"]), folders["prepared"])
    split(
        folders["prepared"] / "ratings.parquet",
        folders["prepared"] / "dataset.json",
        parse_section("split", document["split"]),
        folders["split"],
    )
    return root


@pytest.fixture
def bench(monkeypatch) -> ModuleType:
    """A loader of bench/<name>.py as a fresh module (bench/ on sys.path, as when the script runs); torch's
    thread count, which the scripts set, is restored afterwards."""
    monkeypatch.syspath_prepend(str(BENCH))
    threads = torch.get_num_threads()

    yield lambda name: bench_module(name, f"bench_{name}")
    torch.set_num_threads(threads)


def run_main(module: ModuleType, monkeypatch, capsys, *args: str) -> str:
    """What the script's main() prints, run as `python bench/<script>.py args...`."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *args])
    module.main()
    return capsys.readouterr().out


def table_rows(output: str) -> dict[str, list[str]]:
    """A printed markdown table's body rows, by their first cell (backticks dropped)."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(cells[0]) <= {"-"} and cells[0] not in ("", "model"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def assert_rmse(value: float) -> None:
    assert math.isfinite(value) and 0 < value < SCALE_WIDTH, value


def test_ranking_scores_each_model_and_popularity_with_the_evaluate_stages_metrics(
    tiny_project, bench, monkeypatch, capsys
):
    monkeypatch.chdir(tiny_project)  # it reads params.yaml, data/split and data/prepared from the working folder
    output = run_main(bench("ranking"), monkeypatch, capsys, "--models", "bpr")
    rows = table_rows(output)
    assert set(rows) == {"bpr", "popularity"}
    for cells in rows.values():
        *shares, seconds = (float(cell) for cell in cells)
        assert len(shares) == 5 and all(0 <= share <= 1 for share in shares)  # val and test NDCG, P, R, coverage
        assert seconds >= 0
    assert rows["bpr"][-1] != "0.0" and rows["popularity"][-1] == "0.0"
    users = int(re.search(r"^(\d+) test users with a liked movie", output, re.MULTILINE).group(1))
    assert users > 0


def test_serving_times_loading_recommending_and_predicting(tiny_project, bench, monkeypatch, capsys):
    monkeypatch.chdir(tiny_project)  # params.yaml's train section sizes the model
    args = ("--users", "50", "--movies", "40", "--train-ratings", "400", "--pairs", "2000", "--repeats", "1")
    output = run_main(bench("serving"), monkeypatch, capsys, *args, "--cli-runs", "1")
    assert output.startswith("biased_mf, dim 64: 50 users, 40 movies, 400 training ratings")
    load = float(re.search(rf"load_trained: +{NUMBER} s", output).group(1))
    recommend = float(re.search(rf"recommend, one user: +{NUMBER} ms \(scoring 40 movies\)", output).group(1))
    pairs_per_second = float(re.search(rf"predict: +{NUMBER} M pairs/s \(2,000 pairs\)", output).group(1))
    # load_trained is printed to 0.01 s: this tiny model's can round to 0.00.
    assert 0 <= load < 60 and 0 < recommend < 60_000 and pairs_per_second > 0
    # The commands, each a new process against the scratch project, beside `import torch`.
    torch_seconds = float(re.search(rf"python -c 'import torch': +{NUMBER} s \(best of 1\)", output).group(1))
    for command in ("predict 1:1", "recommend 1"):
        found = re.search(rf"movielens {command}: +{NUMBER} s \(best of 1\), \+?{NUMBER} s over import torch", output)
        assert float(found.group(1)) > 0 and float(found.group(2)) == pytest.approx(
            float(found.group(1)) - torch_seconds, abs=0.011
        )


def test_synthetic_generation_reports_time_peak_memory_and_size_of_the_generated_set(
    tiny_project, bench, monkeypatch, capsys
):
    monkeypatch.chdir(tiny_project)  # its child reads params.yaml's data section from the working folder
    args = ("--ratings", "2000", "--users", "100", "--movies", "100", "--rank", "4")
    report = json.loads(run_main(bench("synthetic_generation"), monkeypatch, capsys, *args))
    assert report["ratings"] == 2000 and (report["users"], report["movies"], report["rank"]) == (100, 100, 4)
    assert 0 < report["generate_and_write_seconds"] <= report["process_wall_seconds"] < 120
    assert 0 < report["peak_rss_gib"] < 4 and 0 <= report["written_mib"] < 1  # MiB to one decimal
    assert report["within_targets"] is True


def test_train_speed_measures_ratings_per_second_of_ours_and_the_seed_loader(tiny_project, bench, monkeypatch, capsys):
    monkeypatch.chdir(tiny_project)  # params.yaml's train section, as from the project root
    args = ("--ratings", "4000", "--users", "100", "--movies", "50", "--dim", "8", "--epochs", "2")
    args += ("--batch-size", "512", "--threads", "1", "--seed-ratings", "1000")
    output = run_main(bench("train_speed"), monkeypatch, capsys, *args)
    assert output.startswith("4,000 ratings, 100 users, 50 movies, dimension 8, 1 threads")
    speeds = {name: float(value) for name, value in re.findall(rf"^ *(ours|seed loader): +{NUMBER} M", output, re.M)}
    assert set(speeds) == {"ours", "seed loader"} and all(0 < speed < 1000 for speed in speeds.values())
    ratio = float(re.search(rf"^ours / seed loader: {NUMBER}x$", output, re.MULTILINE).group(1))
    # The speeds are printed to 0.0005 M: a slow seed loader's (0.010 M) is then known to 5 %, and so is the ratio.
    half_step, ours, seed = 0.0005, speeds["ours"], speeds["seed loader"]
    assert (ours - half_step) / (seed + half_step) - 0.05 <= ratio <= (ours + half_step) / (seed - half_step) + 0.05


def test_time_to_accuracy_trains_each_model_on_the_split_and_reports_its_rmses(
    tiny_project, bench, monkeypatch, capsys
):
    # The project's params.yaml, its training cut short as the tiny project's is; the tiny project's data.
    args = ("--data", str(tiny_project), "--models", "als", "bayes_mf", "--set", "train.max_epochs=3")
    args += ("train.patience=1", "train.bayes_mf.sweeps=5", "train.bayes_mf.burn_in=1")
    output = run_main(bench("time_to_accuracy"), monkeypatch, capsys, *args)
    assert output.startswith("synthetic, 1 split(s), no refit")
    rows = table_rows(output)
    assert set(rows) == {"als", "bayes_mf"}
    for model, (to_accuracy, fit, epochs, val, test, floor_ratio) in rows.items():
        assert 0 <= float(to_accuracy) <= float(fit) < 120
        assert 1 <= int(epochs) <= (10 if model == "bayes_mf" else 3)
        assert_rmse(float(val))
        assert_rmse(float(test))
        assert 0.5 < float(floor_ratio.rstrip("x")) < 5, model
    assert rows["bayes_mf"][2] == "10"  # a sampler runs exactly its sweeps: the committed 2 chains of 5


def test_synthetic_oracle_puts_the_half_oracles_above_the_noise_floor(tiny_project, bench, monkeypatch, capsys):
    output = run_main(bench("synthetic_oracle"), monkeypatch, capsys, str(tiny_project))
    rows = {label: (float(rmse), float(ratio)) for label, (rmse, ratio) in table_rows(output).items()}
    floor = rows.pop("noise floor (the truth)")
    assert floor[1] == 1.0
    assert_rmse(floor[0])
    assert len(rows) == 3
    for label, (rmse, ratio) in rows.items():
        assert_rmse(rmse)
        assert ratio == pytest.approx(rmse / floor[0], abs=0.001)
        assert ratio > 0.9, label  # estimating parameters from a few ratings cannot beat knowing them, bar the clip


@pytest.mark.slow
def test_scale_runs_every_stage_through_dvc_and_reports_time_memory_and_rmse(bench, monkeypatch, capsys):
    args = ("--ratings", "1500", "--users", "60", "--movies", "60", "--set", "train.max_epochs=2")
    output = run_main(bench("scale"), monkeypatch, capsys, *args)
    rows = table_rows(output)
    stages = ("check_params", "download", "preprocess", "split", "train", "evaluate")
    assert set(rows) == {*stages, "all"}
    for stage in stages:
        seconds, gib = rows[stage]
        assert float(seconds.removesuffix(" s")) >= 0 and 0 < float(gib.removesuffix(" GiB")) < 8
    rmse, ratio, floor, baseline = re.search(
        rf"test RMSE {NUMBER} \({NUMBER}x the noise floor {NUMBER}\), training-mean baseline {NUMBER}", output
    ).groups()
    for value in (rmse, floor, baseline):
        assert_rmse(float(value))
    assert float(ratio) == pytest.approx(float(rmse) / float(floor), abs=0.001)
