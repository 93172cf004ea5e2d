"""Evaluate stage: models/model.ckpt on data/split/test.parquet -> eval/metrics.json and eval/plots/."""

import json
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)
import polars as pl

from movielens_pipeline.atomic import atomic_dir
from movielens_pipeline.errors import run_stage
from movielens_pipeline.evaluate import evaluate
from movielens_pipeline.params import load_section


def main() -> None:
    params = load_section("evaluate")
    dataset = json.loads(Path("data/prepared/dataset.json").read_text(encoding="utf-8"))
    with atomic_dir(Path("eval")) as staging:
        metrics = evaluate(
            Path("models/model.ckpt"),
            pl.read_parquet("data/split/train.parquet"),
            pl.read_parquet("data/split/test.parquet"),
            params,
            staging,
            noise_floor_rmse=dataset["noise_floor_rmse"],
        )
    floor = f", noise floor {metrics['noise_floor/rmse']:.4f}" if "noise_floor/rmse" in metrics else ""
    print(f"test rmse {metrics['test/rmse']:.4f} (training-mean baseline {metrics['baseline/rmse']:.4f}{floor})")


if __name__ == "__main__":
    run_stage(main)
