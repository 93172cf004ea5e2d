"""Blend stage: the members' val predictions -> the blend's weights (val only) and its servable checkpoint."""

import argparse
from pathlib import Path

import _checkout  # noqa: F401  (first: the library from this checkout)

from movielens_pipeline.ensemble import blend
from movielens_pipeline.errors import run_stage
from movielens_pipeline.inputs import read_indexes, read_ratings
from movielens_pipeline.params import load_section, unchanged_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=Path, required=True, help="the member stage's folders, one per model")
    parser.add_argument("--val", type=Path, required=True, help="validation ratings: what the weights are fitted on")
    parser.add_argument("--users", type=Path, required=True, help="the user index table")
    parser.add_argument("--movies", type=Path, required=True, help="the movie index table")
    parser.add_argument("--model", type=Path, required=True, help="where the blend's checkpoint goes")
    parser.add_argument("--summary", type=Path, required=True, help="where its weights and val fit go (JSON)")
    args = parser.parse_args()
    params = load_section("ensemble")
    params_unchanged = unchanged_params()  # checked again before the outputs are written
    users, movies = read_indexes(args.users, args.movies)
    val = read_ratings(args.val, str(args.val), users.height, movies.height, allow_empty=False)
    summary = blend(params, args.members, val, args.model, args.summary, before_writing=params_unchanged)
    weights = ", ".join(f"{member} {weight:.3f}" for member, weight in summary["weights"].items())
    print(f"blend: intercept {summary['intercept']:.3f}, {weights}; val rmse {summary['val_fit']['rmse']:.4f} (fit)")


if __name__ == "__main__":
    run_stage(main)
