"""A linear blend of the rating models, fitted on validation predictions, on the 80/20 protocol.

    .venv/bin/python bench/blend.py                  # print each seed's weights and test RMSE
    .venv/bin/python bench/blend.py --record         # keep the runs, regenerate the tables in the docs

For each split seed (72/8/20 of data/prepared/ratings.parquet: run `dvc repro` first), each
member model is trained twice by the pipeline's own `train()` with its committed settings
(its section of params.yaml's `train`): without refit, whose best-val checkpoint predicts
the val part, and with refit (train + val), which predicts the test part. The blend's
weights (and an intercept) are the least-squares fit of the val ratings on the first
models' val predictions; they are applied to the refitted models' test predictions, so
neither the weights nor the models ever see a test rating. `--record` writes the blend's
runs to BLEND_FILE, in experiment_table.py's format, and the results table gains a
`blend, refit` row.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from experiment_table import BLEND_FILE, PROJECT, update_docs, write_json

from movielens_pipeline.data import rating_tensors
from movielens_pipeline.evaluate import error_metrics
from movielens_pipeline.models import TrainParams, load_model
from movielens_pipeline.params import SECTIONS, parse_section, read_params_file
from movielens_pipeline.split import split_ratings
from movielens_pipeline.trained import predicted_ratings

PREPARED = PROJECT / "data" / "prepared"
PARAMS_FILE = PROJECT / "params.yaml"
MEMBERS = ("biased_mf", "svdpp", "genre_mlp", "timesvd", "autorec")
SPLIT = {"strategy": "random", "train_fraction": 0.72, "val_fraction": 0.08}


def member_params(model: str, seed: int, refit: bool) -> dict:
    """The committed train params, training `model` (with its own settings, train.<model>)."""
    return read_params_file(PARAMS_FILE)["train"] | {"model": model, "seed": seed, "refit": refit}


def predictions(train_values: dict, parts: dict[str, pl.DataFrame], tables: dict, predicted_part: str) -> np.ndarray:
    """Train with `train_values` on `parts` and predict `predicted_part` with the kept checkpoint."""
    from movielens_pipeline.training import train  # Lightning's import takes seconds: only when training

    params = parse_section("train", train_values, {**SECTIONS, "train": TrainParams})
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        scratch = Path(scratch)
        train(
            params,
            parts["train"],
            parts["val"],
            **tables,
            checkpoint_path=scratch / "model.ckpt",
            live_dir=scratch / "live",
        )
        model = load_model(Path(scratch) / "model.ckpt")
    users, movies, _, days = rating_tensors(parts[predicted_part])
    return predicted_ratings(model, users, movies, days)


def blend_run(seed: int, ratings: pl.DataFrame, tables: dict) -> dict:
    """The blend on split seed `seed`: weights fitted on val, test metrics of the refitted members blended."""
    split = {**SPLIT, "seed": seed}
    parts = split_ratings(ratings, parse_section("split", split))
    val_columns, test_columns = [], []
    for model in MEMBERS:
        val_columns.append(predictions(member_params(model, seed, refit=False), parts, tables, "val"))
        test_columns.append(predictions(member_params(model, seed, refit=True), parts, tables, "test"))
    val_design = np.column_stack([np.ones(parts["val"].height), *val_columns]).astype(np.float64)
    weights, *_ = np.linalg.lstsq(val_design, parts["val"]["rating"].to_numpy().astype(np.float64), rcond=None)
    test_design = np.column_stack([np.ones(parts["test"].height), *test_columns]).astype(np.float64)
    blended = np.clip(test_design @ weights, 0.5, 5.0)
    actual = parts["test"]["rating"].to_numpy()
    members = {
        model: error_metrics(column, actual)["rmse"] for model, column in zip(MEMBERS, test_columns, strict=True)
    }
    baseline = error_metrics(np.full_like(actual, parts["train"]["rating"].mean()), actual)
    print(f"seed {seed}: weights {np.round(weights, 3).tolist()} (intercept, {', '.join(MEMBERS)})")
    print(f"  refitted members' test RMSE {members}; blend {error_metrics(blended, actual)['rmse']:.4f}")
    return {
        "name": f"blend-s{seed}",
        "params": {
            "data": {"dataset": "ml-100k"},
            "split": split,
            "train": {"model": "blend", "members": list(MEMBERS), "refit": True, "seed": seed},
        },
        "metrics": {"test": error_metrics(blended, actual), "baseline": baseline, "members": members},
        "training": {"weights": weights.tolist()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split (and training) seeds")
    parser.add_argument("--record", action="store_true", help=f"keep the runs in {BLEND_FILE.name}, update docs")
    args = parser.parse_args()
    ratings = pl.read_parquet(PREPARED / "ratings.parquet")
    tables = {name: pl.read_parquet(PREPARED / f"{name}.parquet") for name in ("users", "movies")}
    blends = [blend_run(seed, ratings, tables) for seed in args.seeds]
    if args.record:
        write_json(BLEND_FILE, blends)
        update_docs()


if __name__ == "__main__":
    main()
