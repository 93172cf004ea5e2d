"""Ensemble member stage: one model trained on the shared split -> its val and test predictions and checkpoint."""

import argparse
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.ensemble import member_params, train_member
from movielens_pipeline.errors import run_stage
from movielens_pipeline.inputs import read_indexes, read_ratings
from movielens_pipeline.models import load_train_params
from movielens_pipeline.params import load_section, unchanged_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the model to train (its settings: params.yaml's train.MODEL)")
    parser.add_argument("--train", type=Path, required=True, help="training ratings (Parquet)")
    parser.add_argument("--val", type=Path, required=True, help="validation ratings: early stopping, the blend's fit")
    parser.add_argument("--test", type=Path, required=True, help="test ratings, to predict")
    parser.add_argument("--users", type=Path, required=True, help="the user index table")
    parser.add_argument("--movies", type=Path, required=True, help="the movie index table, with genres")
    parser.add_argument("--out", type=Path, required=True, help="the member's folder: predictions and checkpoint")
    args = parser.parse_args()
    params = member_params(load_train_params(), args.model, refit=load_section("ensemble").refit)
    params_unchanged = unchanged_params()  # checked again before the outputs are written
    users, movies = read_indexes(args.users, args.movies)
    parts = {
        part: read_ratings(path, str(path), users.height, movies.height, allow_empty=False)
        for part, path in (("train", args.train), ("val", args.val), ("test", args.test))
    }
    rmse = train_member(params, parts, users, movies, args.out, before_writing=params_unchanged)
    print(f"{args.model}: val rmse {rmse['val']:.4f} (first fit), test rmse {rmse['test']:.4f}")


if __name__ == "__main__":
    run_stage(main)
