"""Train and rank stages: the split's train and val ratings -> the best-val checkpoint and dvclive curves.

`--section train` trains the rating model (best val MSE), `--section rank` the ranking model (best val NDCG@k, as
params.yaml's evaluate section defines it)."""

import argparse
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.errors import run_stage
from movielens_pipeline.inputs import read_indexes, read_ratings
from movielens_pipeline.models import load_train_params
from movielens_pipeline.params import load_section, unchanged_params
from movielens_pipeline.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--section", choices=("train", "rank"), required=True, help="params.yaml's section")
    parser.add_argument("--train", type=Path, required=True, help="training ratings (Parquet)")
    parser.add_argument("--val", type=Path, required=True, help="validation ratings, for early stopping")
    parser.add_argument("--users", type=Path, required=True, help="the user index table")
    parser.add_argument("--movies", type=Path, required=True, help="the movie index table, with genres")
    parser.add_argument("--checkpoint", type=Path, required=True, help="where the best checkpoint goes")
    parser.add_argument("--live", type=Path, required=True, help="dvclive's folder: curves and summary")
    args = parser.parse_args()
    params = load_train_params(section=args.section)
    ranking_params = load_section("evaluate") if args.section == "rank" else None
    params_unchanged = unchanged_params()  # checked again before the outputs are written
    users, movies = read_indexes(args.users, args.movies)
    train_ratings, val_ratings = (
        read_ratings(path, str(path), users.height, movies.height, allow_empty=False) for path in (args.train, args.val)
    )
    summary = train(  # writes both outputs atomically
        params,
        train_ratings,
        val_ratings,
        users,
        movies,
        checkpoint_path=args.checkpoint,
        live_dir=args.live,
        before_writing=params_unchanged,
        ranking_params=ranking_params,
    )
    if summary:  # under DDP, the first process's
        metric, value = next((key, value) for key, value in summary.items() if key.startswith("best_val_"))
        print(f"best epoch {summary['best_epoch']}: {metric} {value:.4f}, {summary['train_seconds']} s")


if __name__ == "__main__":
    run_stage(main)
