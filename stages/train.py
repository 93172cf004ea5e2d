"""Train stage: data/split + data/prepared -> models/model.ckpt (best val loss) and dvclive/train/."""

from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)
import polars as pl

from movielens_pipeline.atomic import atomic_dir, atomic_path
from movielens_pipeline.errors import run_stage
from movielens_pipeline.params import load_section
from movielens_pipeline.training import train


def main() -> None:
    params = load_section("train")
    with atomic_path(Path("models/model.ckpt")) as checkpoint, atomic_dir(Path("dvclive/train")) as live_dir:
        summary = train(
            pl.read_parquet("data/split/train.parquet"),
            pl.read_parquet("data/split/val.parquet"),
            pl.read_parquet("data/prepared/users.parquet"),
            pl.read_parquet("data/prepared/movies.parquet"),
            params,
            checkpoint,
            live_dir,
        )
    print(f"best epoch {summary['best_epoch']}: val mse {summary['best_val_mse']:.4f}, {summary['train_seconds']} s")


if __name__ == "__main__":
    run_stage(main)
