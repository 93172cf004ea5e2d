"""Every registered model trained on one generated data set: the SHA-256 of its checkpoint and its training summary.

A refactor of models or training that should change no number is checked by running this before and after, with
the same thread count, and comparing the two outputs (`diff`): every line must match. Prints JSON lines, one per
model and refit setting.

    python bench/checkpoint_digests.py --threads 1 > before.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' generated data and params

from fakes import low_rank_rows, ratings_frame  # noqa: E402
from harness import model_params, project_params, ranking_params, section_of  # noqa: E402

from movielens_pipeline.models import REGISTRY  # noqa: E402
from movielens_pipeline.preprocess import index_ratings  # noqa: E402
from movielens_pipeline.split import split_ratings  # noqa: E402
from movielens_pipeline.training import TIMINGS, train  # noqa: E402

GENRES = ("Action", "Comedy", "Drama", "Horror")
# Small enough that every model trains in seconds; the samplers' and ALS's sweep counts cut to match. ALS runs long
# enough for early stopping to stop it, past a `min_epochs` that holds it for a while after patience runs out.
TRAIN = {"als": {"max_epochs": 30, "min_epochs": 10}}
QUICK = {
    "bayes_mf": {"sweeps": 12, "burn_in": 6, "chains": 2, "embedding_dim": 8},
    "als": {"embedding_dim": 8},
    "item_knn": {"neighbours": 20, "candidates": 40},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (train.threads)")
    parser.add_argument("--models", nargs="*", default=list(REGISTRY), help="models to train (default: all)")
    args = parser.parse_args()
    ratings, users, movies = index_ratings(ratings_frame(low_rank_rows(n_users=300, n_movies=150, per_user=40)))
    genres = [[GENRES[index % 4], GENRES[(index // 4) % 4]] for index in range(movies.height)]
    movies = movies.with_columns(genres=pl.Series(genres))
    parts = split_ratings(ratings, project_params("split"))
    for model in args.models:
        for refit in (False, True):
            # A ranking model trains in the rank section, validated as the rank stage validates it.
            committed = project_params(section_of(model)).model_dump()[model]
            settings = committed | QUICK.get(model, {})
            params = model_params(
                model,
                **{"refit": refit, "max_epochs": 8, "threads": args.threads, model: settings} | TRAIN.get(model, {}),
            )
            with tempfile.TemporaryDirectory() as scratch:
                checkpoint, first_fit = Path(scratch) / "model.ckpt", Path(scratch) / "first.ckpt"
                summary = train(
                    params,
                    parts["train"],
                    parts["val"],
                    users,
                    movies,
                    checkpoint,
                    Path(scratch) / "live",
                    first_fit_path=first_fit,
                    ranking_params=ranking_params(model),
                )
                live_files = sorted(
                    p for p in (Path(scratch) / "live").rglob("*") if p.is_file() and p.name != "timings.json"
                )
                row = {
                    "model": model,
                    "refit": refit,
                    "checkpoint": hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16],
                    "first_fit": hashlib.sha256(first_fit.read_bytes()).hexdigest()[:16],
                    "live": {
                        str(p.relative_to(Path(scratch) / "live")): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
                        for p in live_files
                    },
                } | {key: value for key, value in summary.items() if key not in TIMINGS}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
