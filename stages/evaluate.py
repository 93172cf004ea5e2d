"""Evaluate stage: the rating model and the ranker on the test ratings -> metrics and plot data, against the
training-mean and popularity baselines."""

import argparse
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.atomic import atomic_dir
from movielens_pipeline.data import RatingsDataModule
from movielens_pipeline.errors import run_stage
from movielens_pipeline.evaluate import evaluate
from movielens_pipeline.inputs import read_indexes, read_manifest, read_ratings
from movielens_pipeline.params import load_section, unchanged_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the trained rating model")
    parser.add_argument("--ranker", type=Path, help="the ranking model (default: the rating model ranks)")
    parser.add_argument("--train", type=Path, required=True, help="training ratings: the baseline and user activity")
    parser.add_argument("--test", type=Path, required=True, help="the ratings to score")
    parser.add_argument("--users", type=Path, required=True, help="preprocess's users table (the index space)")
    parser.add_argument("--movies", type=Path, required=True, help="preprocess's movies table (the index space)")
    parser.add_argument("--dataset", type=Path, required=True, help="preprocess's dataset.json (the noise floor)")
    parser.add_argument("--out", type=Path, required=True, help="metrics.json and plots/ go here")
    parser.add_argument("--group", help="name every metric <group>/... (the ensemble's own names)")
    args = parser.parse_args()
    params = load_section("evaluate")
    params_unchanged = unchanged_params()  # checked again before the outputs are written
    dataset = read_manifest(args.dataset, str(args.dataset), ("noise_floor_rmse",))
    users, movies = read_indexes(args.users, args.movies)
    train, test = (
        read_ratings(path, str(path), users.height, movies.height, allow_empty=False)
        for path in (args.train, args.test)
    )
    data = RatingsDataModule(params.batch_size, train=train, predict=test, users=users, movies=movies)
    with atomic_dir(args.out) as staging:
        metrics = evaluate(
            args.checkpoint,
            data,
            params,
            staging,
            noise_floor_rmse=dataset["noise_floor_rmse"],
            ranker=args.ranker,
            group=args.group,
        )
        params_unchanged()
    floor = f", noise floor {metrics['noise_floor/rmse']:.4f}" if "noise_floor/rmse" in metrics else ""
    print(f"test rmse {metrics['test/rmse']:.4f} (training-mean baseline {metrics['baseline/rmse']:.4f}{floor})")
    k = params.ranking_k
    if metrics["ranking/users"]:
        print(
            f"ranker ndcg@{k} {metrics[f'ranker/ndcg@{k}']:.4f} (popularity {metrics[f'popularity/ndcg@{k}']:.4f},"
            f" the rating model's own {metrics[f'test/ndcg@{k}']:.4f})"
        )


if __name__ == "__main__":
    run_stage(main)
