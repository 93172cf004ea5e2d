"""Train stage: the split's train and val ratings -> the best-val-loss checkpoint and dvclive curves."""

import argparse
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)
import polars as pl

from movielens_pipeline.errors import run_stage
from movielens_pipeline.models import load_train_params
from movielens_pipeline.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=Path, required=True, help="training ratings (Parquet)")
    parser.add_argument("--val", type=Path, required=True, help="validation ratings, for early stopping")
    parser.add_argument("--users", type=Path, required=True, help="the user index table")
    parser.add_argument("--movies", type=Path, required=True, help="the movie index table, with genres")
    parser.add_argument("--checkpoint", type=Path, required=True, help="where the best checkpoint goes")
    parser.add_argument("--live", type=Path, required=True, help="dvclive's folder: curves and summary")
    args = parser.parse_args()
    params = load_train_params()
    tables = {name: pl.read_parquet(getattr(args, name)) for name in ("train", "val", "users", "movies")}
    summary = train(params, **tables, checkpoint_path=args.checkpoint, live_dir=args.live)  # writes both atomically
    if summary:  # under DDP, the first process's
        print(
            f"best epoch {summary['best_epoch']}: val mse {summary['best_val_mse']:.4f}, {summary['train_seconds']} s"
        )


if __name__ == "__main__":
    run_stage(main)
