"""How close to the noise floor can any model get on a synthetic split? Half-oracles give a floor.

    .venv/bin/python bench/synthetic_oracle.py PROJECT    # PROJECT: a checkout whose data/split is synthetic

The noise floor is the RMSE of the generator's noiseless scores: what a model that knew every
user's and every movie's hidden parameters would get. A model has to learn both from the
training ratings, and a user (or movie) with few of them cannot be pinned down. Two half-oracles
measure that cost on the split's test ratings:

- the *user half-oracle* knows every movie's bias and factors exactly (from the generator's
  seed) and estimates each user's bias and factors from that user's training ratings with the
  Bayes-optimal estimator (the posterior mean under the generator's own Gaussian prior);
- the *movie half-oracle* does the same with the users known.

No model that learns both sides can beat either half-oracle by more than what the clip to the
rating scale allows; together, their excess MSEs over the noise floor add up to about the
excess of the best model that learns both (each side's estimation error adds to the other's).
Prints the three RMSEs and that estimate, each also as a multiple of the noise floor.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))

from movielens_pipeline.evaluate import error_metrics  # noqa: E402
from movielens_pipeline.params import parse_section, read_params_file  # noqa: E402
from movielens_pipeline.schema import RATING_MAX, RATING_MIN  # noqa: E402
from movielens_pipeline.synthetic import (  # noqa: E402
    GLOBAL_MEAN,
    MOVIE_BIAS_SD,
    USER_BIAS_SD,
    draw_truth,
    factor_sd,
)

CHUNK = 1 << 20  # ratings per block when summing the per-owner normal equations


def posterior_means(
    owners: np.ndarray, n_owners: int, features: np.ndarray, targets: np.ndarray, prior_sd: np.ndarray, noise_var: float
) -> np.ndarray:
    """Per owner, the posterior mean of w in targets ~ features . w + N(0, noise_var), w ~ N(0, diag(prior_sd^2))."""
    width = features.shape[1]
    gram = torch.zeros(n_owners, width * width, dtype=torch.float64)
    moment = torch.zeros(n_owners, width, dtype=torch.float64)
    for start in range(0, len(owners), CHUNK):
        block = slice(start, start + CHUNK)
        index = torch.from_numpy(owners[block])
        x = torch.from_numpy(features[block]).double()
        gram.index_add_(0, index, (x[:, :, None] * x[:, None, :]).reshape(len(x), -1))
        moment.index_add_(0, index, x * torch.from_numpy(targets[block]).double()[:, None])
    precision = gram.reshape(n_owners, width, width) / noise_var + torch.diag(torch.from_numpy(prior_sd**-2.0))
    return torch.linalg.solve(precision, moment / noise_var).numpy()


def clipped(score: np.ndarray) -> np.ndarray:
    return np.clip(score, RATING_MIN, RATING_MAX)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return error_metrics(predicted, actual)["rmse"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path, help="a checkout with data/split from the synthetic data set")
    args = parser.parse_args()
    data_params = parse_section("data", read_params_file(args.project / "params.yaml")["data"])
    if data_params.dataset != "synthetic":
        sys.exit(f"{args.project / 'params.yaml'}: data.dataset is {data_params.dataset!r}; this needs 'synthetic'")
    user_bias, movie_bias, user_factors, movie_factors = draw_truth(
        data_params, np.random.default_rng(data_params.synthetic_seed)
    )
    rank = data_params.synthetic_rank
    parts = {name: pl.read_parquet(args.project / "data" / "split" / f"{name}.parquet") for name in ("train", "test")}
    # Generator indices: ids are index + 1 (synthetic.generate).
    users = {name: part["userId"].to_numpy() - 1 for name, part in parts.items()}
    movies = {name: part["movieId"].to_numpy() - 1 for name, part in parts.items()}
    ratings = {name: part["rating"].to_numpy().astype(np.float64) for name, part in parts.items()}

    def truth(part: str) -> np.ndarray:
        u, m = users[part], movies[part]
        return GLOBAL_MEAN + user_bias[u] + movie_bias[m] + np.einsum("ij,ij->i", user_factors[u], movie_factors[m])

    noise_var = float(np.mean((ratings["train"] - clipped(truth("train"))) ** 2))
    floor = rmse(clipped(truth("test")), ratings["test"])
    results = {"noise floor (the truth)": floor}
    sides = {
        "user half-oracle (movies known)": (users, user_bias, movies, movie_bias, movie_factors, USER_BIAS_SD),
        "movie half-oracle (users known)": (movies, movie_bias, users, user_bias, user_factors, MOVIE_BIAS_SD),
    }
    for label, (owner, own_bias, other, other_bias, other_factors, bias_sd) in sides.items():
        features = np.concatenate([np.ones((len(owner["train"]), 1)), other_factors[other["train"]]], axis=1)
        targets = ratings["train"] - GLOBAL_MEAN - other_bias[other["train"]]
        prior_sd = np.array([bias_sd] + [factor_sd(rank)] * rank)
        estimates = posterior_means(owner["train"], len(own_bias), features, targets, prior_sd, noise_var)
        learned = estimates[owner["test"]]
        score = GLOBAL_MEAN + other_bias[other["test"]] + learned[:, 0]
        score += np.einsum("ij,ij->i", learned[:, 1:], other_factors[other["test"]])
        results[label] = rmse(clipped(score), ratings["test"])
    excess = sum(value**2 - floor**2 for label, value in results.items() if "half-oracle" in label)
    results["estimate for a model that learns both"] = math.sqrt(floor**2 + excess)
    print(f"{len(ratings['train']):,} training ratings, {len(ratings['test']):,} test ratings\n")
    print("| | test RMSE | x noise floor |\n|---|---|---|")
    for label, value in results.items():
        print(f"| {label} | {value:.4f} | {value / floor:.3f} |")


if __name__ == "__main__":
    main()
