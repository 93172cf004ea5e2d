"""Time to accuracy side by side: each model trained by the pipeline's own `train()` on the same split.

    .venv/bin/python bench/time_to_accuracy.py                        # als, bayes_mf, biased_mf on data/split
    .venv/bin/python bench/time_to_accuracy.py --split 0.72 0.08 --seeds 0 1 2 --refit
    .venv/bin/python bench/time_to_accuracy.py --models als --data /tmp/scale/project --set train.als.embedding_dim=16

Per model (its committed settings, params.yaml's `train.<model>`): the seconds of fitting until the
val RMSE first came within 1 % of its best (`seconds_to_1pct_of_best_val`), the whole fit's
seconds, the epochs, the best val RMSE, and the test RMSE (with its ratio to the noise floor on
generated data). Without `--split`, the workspace's split files (data/split: run `dvc repro`
first); with it, data/prepared/ratings.parquet split afresh for each seed (`--refit`: each model
then refitted on train + val, as `train.refit` does). `--data` reads another project's data/ (such as
a `bench/scale.py --keep` folder's generated set); `--set` changes `train.*` params first, as
`dvc exp run -S` would.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
from pathlib import Path

import polars as pl
from scale import assigned  # bench/scale.py: `section.key=value` into params

from movielens_pipeline.data import rating_tensors
from movielens_pipeline.evaluate import error_metrics
from movielens_pipeline.models import load_model, model_settings
from movielens_pipeline.params import parse_section, read_params_file
from movielens_pipeline.split import split_ratings
from movielens_pipeline.trained import predicted_ratings
from movielens_pipeline.training import train

PROJECT = Path(__file__).resolve().parents[1]


def run(model: str, parts: dict[str, pl.DataFrame], tables: dict, seed: int, refit: bool, changes: list[str]) -> dict:
    """Train `model` with its committed settings (and `changes`) on `parts`; its summary and test RMSE."""
    values = read_params_file(PROJECT / "params.yaml")["train"] | {"model": model, "seed": seed, "refit": refit}
    values = assigned({"train": values}, changes)["train"]
    params = parse_section("train", values, model_settings())
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        scratch = Path(scratch)
        summary = train(params, parts["train"], parts["val"], **tables, checkpoint_path=scratch / "m.ckpt",
                        live_dir=scratch / "live")  # fmt: skip
        users, movies, actual, days = rating_tensors(parts["test"])
        predicted = predicted_ratings(load_model(scratch / "m.ckpt"), users, movies, days)
    return summary | {"test_rmse": error_metrics(predicted, actual.numpy())["rmse"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["als", "bayes_mf", "biased_mf"])
    parser.add_argument("--split", nargs=2, type=float, metavar=("TRAIN", "VAL"), help="fractions; default: data/split")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="split and training seeds (with --split)")
    parser.add_argument("--refit", action="store_true", help="refit each model on train + val")
    parser.add_argument("--data", type=Path, default=PROJECT, help="the project folder whose data/ to read")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="e.g. train.als.regularization=0.05")
    args = parser.parse_args()
    prepared, split_folder = args.data / "data" / "prepared", args.data / "data" / "split"
    tables = {name: pl.read_parquet(prepared / f"{name}.parquet") for name in ("users", "movies")}
    dataset = json.loads((prepared / "dataset.json").read_text())
    floor = dataset.get("noise_floor_rmse")
    if args.split:
        ratings = pl.read_parquet(prepared / "ratings.parquet")
        fractions = {"strategy": "random", "train_fraction": args.split[0], "val_fraction": args.split[1]}
        splits = {
            seed: split_ratings(ratings, parse_section("split", fractions | {"seed": seed})) for seed in args.seeds
        }
    else:
        splits = {read_params_file(PROJECT / "params.yaml")["split"]["seed"]: {
            part: pl.read_parquet(split_folder / f"{part}.parquet") for part in ("train", "val", "test")
        }}  # fmt: skip
    print(f"{dataset['dataset']}, {len(splits)} split(s), {'refit' if args.refit else 'no refit'}\n")
    header = "| model | seconds to 1 % of best val | fit seconds | epochs | val RMSE | test RMSE |"
    print(header + (" x noise floor |" if floor else "") + "\n|" + "---|" * (7 if floor else 6))
    for model in args.models:
        runs = [run(model, parts, tables, seed, args.refit, args.set) for seed, parts in splits.items()]

        def mean(key: str, runs: list[dict] = runs) -> float:
            return statistics.mean(float(summary[key]) for summary in runs)

        val = statistics.mean(summary["best_val_mse"] ** 0.5 for summary in runs)
        test = mean("test_rmse")
        cells = [f"`{model}`", f"{mean('seconds_to_1pct_of_best_val'):.1f}", f"{mean('train_seconds'):.1f}",
                 f"{mean('epochs'):.0f}", f"{val:.4f}", f"{test:.4f}"]  # fmt: skip
        if floor:
            cells.append(f"{test / floor:.3f}x")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
