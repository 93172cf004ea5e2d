"""Top-k ranking on the pipeline's own split: our models vs the popularity baseline vs `implicit`'s ALS.

    .venv/bin/python bench/ranking.py                       # ials, ease, bpr and biased_mf, after `dvc repro`
    .venv/bin/python bench/ranking.py --models bpr --implicit-factors 64 --implicit-iterations 15

Reads data/split/{train,val}.parquet, data/split/test.parquet and data/prepared/{users,movies}.parquet
(run `dvc repro` first), trains each model with the pipeline's own `train()` and the committed
params.yaml (only `train.model` changed), and scores every one with the evaluate stage's
`ranking()`: the same users, the same top-k among movies not rated in training, the same metric
code. `implicit` (`pip install implicit==0.7.2`) is measured only when installed: its ALS is
fitted on the training ratings as implicit feedback (each rated movie a 1) and ranked by the
same code, through a scorer that looks like one of our models.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml

from movielens_pipeline.evaluate import ranking
from movielens_pipeline.models import REGISTRY, SECTION_OF_TASK, load_model, model_settings
from movielens_pipeline.params import parse_section, read_params_file
from movielens_pipeline.schema import MOVIE_INDEX, USER_INDEX
from movielens_pipeline.trained import trained_model
from movielens_pipeline.training import train

SPLIT, PREPARED = Path("data/split"), Path("data/prepared")


class FactorScorer(torch.nn.Module):
    """Another library's user and item factors, scored as our models are (a dot product per pair)."""

    def __init__(self, user_factors: np.ndarray, item_factors: np.ndarray):
        super().__init__()
        self.user_factors, self.item_factors = torch.from_numpy(user_factors), torch.from_numpy(item_factors)

    def forward(self, users: torch.Tensor, movies: torch.Tensor) -> torch.Tensor:
        return (self.user_factors[users] * self.item_factors[movies]).sum(dim=1)


def ours(
    name: str, tables: dict[str, pl.DataFrame], section_params: dict, ranking_params
) -> tuple[torch.nn.Module, float]:
    """`name` trained by the pipeline's train() with its section's params (`train` or `rank`, ranked as the rank
    stage validates); returns the model and seconds taken."""
    params = parse_section(section_of(name), {**section_params, "model": name}, model_settings())
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        parts = {part: tables[part] for part in ("train", "val", "users", "movies")}
        checkpoint, live = Path(scratch) / "model.ckpt", Path(scratch) / "live"
        train(params, **parts, checkpoint_path=checkpoint, live_dir=live, ranking_params=ranking_params)
        seconds = time.perf_counter() - started
        return load_model(Path(scratch) / "model.ckpt"), seconds


def section_of(name: str) -> str:
    """The params.yaml section that trains model `name`: rank for a ranking model, else train."""
    return SECTION_OF_TASK[REGISTRY[name].task]


def implicit_als(tables: dict[str, pl.DataFrame], factors: int, iterations: int) -> tuple[torch.nn.Module, float]:
    """implicit's ALS on the training ratings (each a 1), as a scorer; None if implicit is not installed."""
    try:
        from implicit.als import AlternatingLeastSquares
        from scipy.sparse import csr_matrix
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None, 0.0
    train_part = tables["train"]
    shape = (tables["users"].height, tables["movies"].height)
    user_items = csr_matrix(
        (np.ones(train_part.height, dtype=np.float32), (train_part[USER_INDEX], train_part[MOVIE_INDEX])), shape=shape
    )
    model = AlternatingLeastSquares(factors=factors, iterations=iterations, random_state=0)
    started = time.perf_counter()
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS threads inside them slow it down
        model.fit(user_items, show_progress=False)
    return FactorScorer(np.asarray(model.user_factors), np.asarray(model.item_factors)), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ials", "ease", "bpr", "biased_mf"])
    parser.add_argument("--implicit-factors", type=int, default=64)
    parser.add_argument("--implicit-iterations", type=int, default=15)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="each model's settings to change: weight_decay=0.01"
    )
    args = parser.parse_args()
    changes = {key: yaml.safe_load(value) for key, value in (change.split("=", 1) for change in args.set)}

    document = read_params_file()
    evaluate_params = parse_section("evaluate", document["evaluate"])
    tables = {part: pl.read_parquet(SPLIT / f"{part}.parquet") for part in ("train", "val", "test")}
    tables |= {name: pl.read_parquet(PREPARED / f"{name}.parquet") for name in ("users", "movies")}
    k = evaluate_params.ranking_k
    dataset = document["data"]["dataset"]
    print(f"{dataset}, split {document['split']['strategy']} (seed {document['split']['seed']}), top {k}")

    scorers = {}
    for name in args.models:
        values = document[section_of(name)]
        scorers[name] = ours(name, tables, values | {name: values[name] | changes}, evaluate_params)
    als, als_seconds = implicit_als(tables, args.implicit_factors, args.implicit_iterations)
    if als is not None:
        scorers[f"implicit ALS ({args.implicit_factors} factors, {args.implicit_iterations} it.)"] = (als, als_seconds)

    rows = []
    for name, (model, seconds) in scorers.items():
        trained = trained_model(model, tables["users"], tables["movies"], tables["train"])
        # Val NDCG (the val part's liked movies) is what a choice between settings may look at; test is reported.
        val_metrics, _ = ranking(trained, tables["val"], tables["train"], evaluate_params)
        metrics, _ = ranking(trained, tables["test"], tables["train"], evaluate_params)
        rows.append((name, seconds, val_metrics[f"ranker/ndcg@{k}"], metrics, "ranker"))
    rows.append(("popularity", 0.0, val_metrics[f"popularity/ndcg@{k}"], metrics, "popularity"))
    print(f"\n| model | val NDCG@{k} | test NDCG@{k} | precision@{k} | recall@{k} | coverage@{k} | fit seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, seconds, val_ndcg, metrics, group in rows:
        values = [val_ndcg] + [
            metrics[f"{group}/{metric}@{k}"] for metric in ("ndcg", "precision", "recall", "coverage")
        ]
        print(f"| {name} | " + " | ".join(f"{value:.4f}" for value in values) + f" | {seconds:.1f} |")
    print(
        f"\n{metrics['ranking/users']} test users with a liked movie (rated {evaluate_params.ranking_relevant_rating}+)"
    )
    if als is None:
        print("implicit: not installed (pip install implicit==0.7.2)")


if __name__ == "__main__":
    main()
