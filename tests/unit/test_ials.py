"""ials (models/sweep/ials.py): each sweep's row solves against their normal equations, its objective, its bounded
memory, and real training through the sweep path."""

from __future__ import annotations

from itertools import islice

import numpy as np
import polars as pl
import pytest
import torch
from fakes import low_rank_split
from harness import project_params

from movielens_pipeline.data import DataShape, TrainingData
from movielens_pipeline.evaluate import ranking
from movielens_pipeline.models import build_model, load_model
from movielens_pipeline.models.sweep import ials as ials_module
from movielens_pipeline.trained import trained_model
from movielens_pipeline.training import train

N_USERS, N_MOVIES, DIM = 30, 15, 3


def new_model(**settings) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """ials on random distinct (user, movie) ratings, with `settings`; which pairs are rated, and their ratings."""
    rng = np.random.default_rng(0)
    rated = rng.random((N_USERS, N_MOVIES)) < 0.3
    rated[5] = False  # a user without ratings: pulled to 0 by the unobserved movies alone
    users, movies = np.nonzero(rated)
    ratings = rng.integers(1, 6, len(users)).astype(np.float32)
    data = TrainingData(
        torch.from_numpy(users).long(),
        torch.from_numpy(movies).long(),
        torch.from_numpy(ratings),
        torch.zeros(len(users)),
        torch.zeros(N_MOVIES, 0),
    )
    chosen = {"embedding_dim": DIM, "confidence": 0.5, "unobserved_weight": 0.2, "regularization": 0.05} | settings
    params = project_params("rank", model="ials", ials=chosen)
    torch.manual_seed(0)  # the factors' random start
    model = build_model("ials", params.settings, data, DataShape(N_USERS, N_MOVIES, 0, len(users), 3.0))
    matrix = np.zeros((N_USERS, N_MOVIES))
    matrix[users, movies] = ratings
    return model, rated, matrix


def exact_rows(others: np.ndarray, rated: np.ndarray, ratings: np.ndarray, settings) -> np.ndarray:
    """Each row's solution of its normal equations, dense: (a Y'Y + sum_rated c y y' + penalty I) x = sum_rated c y."""
    rows = []
    for owner in range(len(rated)):
        confidence = np.where(rated[owner], 1 + settings.confidence * ratings[owner], 0.0)
        frequency = rated[owner].sum() + settings.unobserved_weight * len(others)
        penalty = settings.regularization * frequency**settings.regularization_exponent
        matrix = settings.unobserved_weight * others.T @ others + (others.T * confidence) @ others
        matrix += penalty * np.eye(others.shape[1])
        rows.append(np.linalg.solve(matrix, others.T @ confidence))
    return np.array(rows)


def test_each_sweep_solves_every_users_then_every_movies_normal_equations():
    model, rated, ratings = new_model(cg_steps=DIM)  # CG is exact in as many steps as the dimension
    movies_before = model.movie_factors.double().numpy().copy()
    next(model.sweeps())
    users = exact_rows(movies_before, rated, ratings, model.settings)
    np.testing.assert_allclose(model.user_factors.numpy(), users, rtol=1e-3, atol=1e-5)
    movies = exact_rows(model.user_factors.double().numpy(), rated.T, ratings.T, model.settings)
    np.testing.assert_allclose(model.movie_factors.numpy(), movies, rtol=1e-3, atol=1e-5)
    assert np.abs(users[5]).max() < 1e-6  # no rated movie: nothing pulls it from 0


def test_rows_solved_a_few_ratings_at_a_time_are_the_same(monkeypatch):
    at_once, _, _ = new_model()
    list(islice(at_once.sweeps(), 2))
    chunked, _, _ = new_model()
    monkeypatch.setattr(ials_module, "RATING_FLOATS", 4 * DIM)  # a few ratings (at least one row) per chunk
    list(islice(chunked.sweeps(), 2))
    torch.testing.assert_close(chunked.user_factors, at_once.user_factors)
    torch.testing.assert_close(chunked.movie_factors, at_once.movie_factors)


def test_a_sweep_reports_the_weighted_error_of_every_pair_per_training_rating():
    model, rated, ratings = new_model()
    (error,) = list(islice(model.sweeps(), 1))
    predicted = model.user_factors.double().numpy() @ model.movie_factors.double().numpy().T
    settings = model.settings
    observed = (np.where(rated, 1 + settings.confidence * ratings, 0.0) * (1 - predicted) ** 2).sum()
    every = settings.unobserved_weight * (predicted**2).sum()
    assert float(error) == pytest.approx((observed + every) / rated.sum(), rel=1e-4)


def test_the_penalty_grows_with_a_rows_frequency_unless_the_exponent_is_0():
    for exponent in (0.0, 1.0):
        model, rated, ratings = new_model(cg_steps=DIM, regularization_exponent=exponent)
        movies_before = model.movie_factors.double().numpy().copy()
        next(model.sweeps())
        expected = exact_rows(movies_before, rated, ratings, model.settings)
        np.testing.assert_allclose(model.user_factors.numpy(), expected, rtol=1e-3, atol=1e-5)


@pytest.fixture(scope="module")
def prepared() -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame]:
    return low_rank_split()


def test_ials_trains_through_the_sweep_path_and_ranks_better_than_popularity(prepared, tmp_path):
    parts, users, movies = prepared
    params = project_params("rank", model="ials", ials={"embedding_dim": 16, "sweeps": 8})
    summary = train(
        params,
        *(parts["train"], parts["val"], users, movies),
        tmp_path / "model.ckpt",
        tmp_path / "live",
        ranking_params=project_params("evaluate", ranking_k=5),
    )
    assert summary["epochs"] == 8 and summary["best_epoch"] == 7  # its planned sweeps, the last one kept
    trained = trained_model(load_model(tmp_path / "model.ckpt"), users, movies, parts["train"])
    metrics, _ = ranking(trained, parts["test"], parts["train"], project_params("evaluate", ranking_k=5))
    assert metrics["ranker/ndcg@5"] > 1.2 * metrics["popularity/ndcg@5"], metrics
