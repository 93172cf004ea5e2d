"""Training throughput: our biased_mf vs the seed's loader style vs Surprise's SVD, same ratings.

    .venv/bin/python bench/train_speed.py [--ratings 2000000 --users 150000 --movies 20000 --dim 64]

Prints ratings per second for one training epoch of each and the ratios. Surprise is
measured only when scikit-surprise is installed (`pip install scikit-surprise==1.1.5`).
The seed loader runs on a slice of the ratings: at its speed a full epoch takes minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytorch_lightning as lightning
import torch
from torch.utils.data import DataLoader, TensorDataset

from movielens_pipeline.models import model_settings
from movielens_pipeline.params import parse_section, read_params_file
from movielens_pipeline.schema import RATING_MAX, RATING_MIN
from movielens_pipeline.training import train


def synthetic_ratings(n_ratings: int, n_users: int, n_movies: int, seed: int = 0) -> pl.DataFrame:
    """Random (user, movie) pairs with power-law movie popularity and half-star ratings."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.8
    movies = rng.choice(n_movies, n_ratings, p=popularity / popularity.sum())
    users = rng.integers(0, n_users, n_ratings)
    ratings = np.clip(np.round((3.5 + rng.normal(0, 1, n_ratings)) * 2) / 2, RATING_MIN, RATING_MAX)
    return pl.DataFrame(
        {
            "userIdMapped": users.astype(np.uint32),
            "movieIdMapped": movies.astype(np.uint32),
            "rating": ratings.astype(np.float32),
            "timestamp": np.zeros(n_ratings, dtype=np.int64),
        }
    )


def ours(ratings: pl.DataFrame, args: argparse.Namespace) -> float:
    """Ratings per second of one epoch of the pipeline's own train() (median over epochs)."""
    values = read_params_file()["train"]  # the project's params.yaml, run from the project root
    biased_mf = {"embedding_dim": args.dim, "batch_size": args.batch_size, "learning_rate": args.learning_rate}
    values |= {"model": "biased_mf", "max_epochs": args.epochs, "min_epochs": args.epochs, "threads": args.threads}
    values["biased_mf"] = values["biased_mf"] | biased_mf
    params = parse_section("train", values, model_settings())
    validation = ratings.head(1000)
    users = pl.DataFrame({"userIdMapped": np.arange(args.users, dtype=np.uint32)})
    movies = pl.DataFrame({"movieIdMapped": np.arange(args.movies, dtype=np.uint32)})
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        scratch = Path(scratch)
        summary = train(params, ratings, validation, users, movies, scratch / "m.ckpt", scratch / "live")
    return summary["ratings_per_second"]


class _EpochTimer(lightning.Callback):
    def on_train_epoch_start(self, trainer, module):
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.started


class SeedStyleBiasedMF(lightning.LightningModule):
    """Biased MF written the way the notebook wrote GlobalMeanModel: dense embeddings, Adam, automatic optimisation."""

    def __init__(self, n_users: int, n_movies: int, dim: int, learning_rate: float):
        super().__init__()
        self.learning_rate = learning_rate
        self.user_bias, self.movie_bias = torch.nn.Embedding(n_users, 1), torch.nn.Embedding(n_movies, 1)
        self.user_factors, self.movie_factors = torch.nn.Embedding(n_users, dim), torch.nn.Embedding(n_movies, dim)
        self.logit = torch.nn.Parameter(torch.zeros(1))

    def forward(self, users, movies):
        dot = (self.user_factors(users) * self.movie_factors(movies)).sum(dim=1)
        logit = self.logit + self.user_bias(users)[:, 0] + self.movie_bias(movies)[:, 0] + dot
        return 0.5 + 4.5 * torch.sigmoid(logit)

    def training_step(self, batch, batch_idx):
        users, movies, ratings = batch
        loss = torch.nn.functional.mse_loss(self(users, movies), ratings)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


def seed_loader(ratings: pl.DataFrame, args: argparse.Namespace) -> float:
    """The notebook's style: TensorDataset + DataLoader(batch_size=4096, shuffle=True), dense Adam."""
    subset = ratings.head(args.seed_ratings)
    dataset = TensorDataset(
        torch.from_numpy(subset["userIdMapped"].to_numpy().astype(np.int64)),
        torch.from_numpy(subset["movieIdMapped"].to_numpy().astype(np.int64)),
        torch.from_numpy(subset["rating"].to_numpy().astype(np.float32)),
    )
    model = SeedStyleBiasedMF(args.users, args.movies, args.dim, args.learning_rate)
    timer = _EpochTimer()
    trainer = lightning.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        accelerator="cpu",
    )
    trainer.fit(model, DataLoader(dataset, batch_size=4096, shuffle=True))
    return subset.height / timer.seconds


def surprise_svd(ratings: pl.DataFrame, args: argparse.Namespace) -> float | None:
    """Surprise's SVD (Cython SGD, one core) with the same dimension and epochs."""
    try:
        from surprise import SVD, Dataset, Reader
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "ratings.csv"
        ratings.write_csv(path, include_header=False)
        reader = Reader(line_format="user item rating", sep=",", rating_scale=(RATING_MIN, RATING_MAX))
        trainset = Dataset.load_from_file(str(path), reader).build_full_trainset()
    started = time.perf_counter()
    SVD(n_factors=args.dim, n_epochs=args.epochs, random_state=0).fit(trainset)
    return ratings.height * args.epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=150_000)
    parser.add_argument("--movies", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=65536)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for ours; 0: every CPU")
    parser.add_argument("--seed-ratings", type=int, default=200_000, help="ratings the seed loader runs on")
    args = parser.parse_args()

    lightning.seed_everything(0, verbose=False)
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    ratings = synthetic_ratings(args.ratings, args.users, args.movies)
    print(
        f"{args.ratings:,} ratings, {args.users:,} users, {args.movies:,} movies, dimension {args.dim}, "
        f"{torch.get_num_threads()} threads"
    )
    results = {"ours": ours(ratings, args), "seed loader": seed_loader(ratings, args)}
    svd = surprise_svd(ratings, args)
    if svd is not None:
        results["surprise SVD"] = svd
    for name, speed in results.items():
        print(f"{name:>14}: {speed / 1e6:6.3f} M ratings/s")
    print(f"ours / seed loader: {results['ours'] / results['seed loader']:.1f}x")
    if svd is not None:
        print(f"ours / surprise SVD: {results['ours'] / svd:.2f}x")
    else:
        print("surprise SVD: not installed (pip install scikit-surprise==1.1.5)")


if __name__ == "__main__":
    main()
