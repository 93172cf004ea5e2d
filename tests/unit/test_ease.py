"""ease (models/sweep/ease.py): its weights and scores against Steck's closed form, its bound on the catalogue,
and real training through the sweep path."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from fakes import low_rank_split
from harness import project_params

from movielens_pipeline.data import DataShape, TrainingData
from movielens_pipeline.evaluate import ranking
from movielens_pipeline.models import REGISTRY, build_model, load_model
from movielens_pipeline.models.sweep import ease as ease_module
from movielens_pipeline.params import ParamsError
from movielens_pipeline.trained import trained_model
from movielens_pipeline.training import train
from movielens_pipeline.training.memory import check_memory

N_USERS, N_MOVIES = 40, 12


def rated_pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct rated movies, 2 to 8 of them, some movies rated far more often than others."""
    rng = np.random.default_rng(seed)
    popularity = rng.dirichlet(np.full(N_MOVIES, 0.7))
    users, movies = [], []
    for user in range(N_USERS):
        rated = rng.choice(N_MOVIES, size=rng.integers(2, 9), replace=False, p=popularity)
        users += [user] * len(rated)
        movies += sorted(rated)
    return np.array(users), np.array(movies)


def fitted(
    penalty: float = 5.0, max_movies: int = N_MOVIES, rating_weight: float = 0.0
) -> tuple[torch.nn.Module, np.ndarray, torch.Tensor]:
    """EASE fitted on `rated_pairs` with ratings 1-5, the users x movies matrix X it should have built
    (1 + rating_weight x (rating - their mean) where rated), and the fit's reported error."""
    users, movies = rated_pairs()
    ratings = np.random.default_rng(1).integers(1, 6, len(users)).astype(np.float32)
    data = TrainingData(
        torch.from_numpy(users),
        torch.from_numpy(movies),
        torch.from_numpy(ratings),
        torch.zeros(len(users)),
        torch.zeros(N_MOVIES, 0),
    )
    chosen = {"penalty": penalty, "max_movies": max_movies, "rating_weight": rating_weight}
    settings = project_params("rank", model="ease", ease=chosen).settings
    model = build_model("ease", settings, data, DataShape(N_USERS, N_MOVIES, 0, len(users), float(ratings.mean())))
    (error,) = list(model.sweeps())
    matrix = np.zeros((N_USERS, N_MOVIES))
    matrix[users, movies] = 1.0 + rating_weight * (ratings - ratings.mean())
    return model, matrix, error


def steck(matrix: np.ndarray, penalty: float) -> np.ndarray:
    """Steck's B: P = (X'X + penalty I)^-1, B = I - P / diag(P), by numpy's dense inverse."""
    inverse = np.linalg.inv(matrix.T @ matrix + penalty * np.eye(matrix.shape[1]))
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


@pytest.mark.parametrize("rating_weight", [0.0, 0.5])
def test_the_weights_are_stecks_closed_form_with_a_zero_diagonal(rating_weight):
    model, matrix, _ = fitted(penalty=5.0, rating_weight=rating_weight)
    np.testing.assert_allclose(model.item_weights.numpy(), steck(matrix, 5.0), rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(model.item_weights.diagonal()) == 0


def test_without_a_rating_weight_every_rated_movie_is_a_one_whatever_its_rating():
    _, matrix, _ = fitted(rating_weight=0.0)
    assert set(np.unique(matrix)) == {0.0, 1.0}


@pytest.mark.parametrize("rating_weight", [0.0, 0.5])
def test_the_fits_reported_error_is_the_reconstruction_error_per_training_rating(rating_weight):
    model, matrix, error = fitted(penalty=5.0, rating_weight=rating_weight)
    weights = steck(matrix, 5.0)
    expected = np.square(matrix - matrix @ weights).sum() / np.count_nonzero(rated_pairs()[0] >= 0)
    assert float(error) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("rating_weight", [0.0, 0.5])
def test_a_score_sums_the_weights_of_the_movies_the_user_rated_times_their_entries(rating_weight):
    model, matrix, _ = fitted(rating_weight=rating_weight)
    users, movies = torch.meshgrid(torch.arange(N_USERS), torch.arange(N_MOVIES), indexing="ij")
    bias, interaction = model.score(users.reshape(-1), movies.reshape(-1))
    np.testing.assert_allclose(interaction.view(N_USERS, N_MOVIES).numpy(), matrix @ steck(matrix, 5.0), atol=1e-5)
    assert torch.count_nonzero(bias) == 0


def test_scores_computed_a_few_users_at_a_time_are_the_same(monkeypatch):
    model, _, _ = fitted(rating_weight=0.5)
    users, movies = torch.randint(0, N_USERS, (500,)), torch.randint(0, N_MOVIES, (500,))
    _, at_once = model.score(users, movies)
    monkeypatch.setattr(ease_module, "SCORE_FLOATS", 3 * N_MOVIES)  # three users per chunk
    _, chunked = model.score(users, movies)
    assert torch.equal(at_once, chunked)


def test_max_movies_fits_the_most_rated_movies_alone_and_the_others_score_nothing():
    model, matrix, _ = fitted(max_movies=5)
    counts = matrix.sum(axis=0)
    most_rated = sorted(np.argsort(-counts, kind="stable")[:5])
    assert torch.equal(torch.nonzero(model.movie_column >= 0).squeeze(1), torch.tensor(most_rated))
    np.testing.assert_allclose(model.item_weights.numpy(), steck(matrix[:, most_rated], 5.0), rtol=1e-5, atol=1e-6)
    others = [movie for movie in range(N_MOVIES) if movie not in most_rated]
    _, interaction = model.score(torch.zeros(len(others), dtype=torch.int64), torch.tensor(others))
    assert torch.count_nonzero(interaction) == 0


def test_the_memory_check_counts_the_inverse_and_names_max_movies():
    shape = DataShape(n_users=162_541, n_movies=59_047, n_genres=20, n_train_ratings=17_500_000, train_mean=3.5)
    settings = project_params("rank", model="ease", ease={"max_movies": 50_000}).settings
    held = REGISTRY["ease"].training_bytes(shape, settings)
    assert held > 3 * 8 * 50_000**2  # the Gram matrix, its factor and its inverse in float64, besides B
    params = project_params("rank", model="ease", ease={"max_movies": 50_000})
    with pytest.raises(ParamsError, match=r"^rank\.ease\.max_movies: got 50000; training `ease` on 162,541 users"):
        check_memory(params, settings, shape, memory_bytes=16 * 2**30)


@pytest.fixture(scope="module")
def prepared() -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame]:
    return low_rank_split()


def test_ease_trains_through_the_sweep_path_and_ranks_better_than_popularity(prepared, tmp_path):
    parts, users, movies = prepared
    params = project_params("rank", model="ease", ease={"penalty": 50.0})
    summary = train(
        params,
        *(parts["train"], parts["val"], users, movies),
        tmp_path / "model.ckpt",
        tmp_path / "live",
        ranking_params=project_params("evaluate", ranking_k=5),
    )
    assert summary["epochs"] == 1 and summary["best_epoch"] == 0
    trained = trained_model(load_model(tmp_path / "model.ckpt"), users, movies, parts["train"])
    metrics, _ = ranking(trained, parts["test"], parts["train"], project_params("evaluate", ranking_k=5))
    assert metrics["ranker/ndcg@5"] > 1.2 * metrics["popularity/ndcg@5"], metrics
