"""item_knn (models/sweep/item_knn.py): its similarities and predictions against their definitions, real training."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from fakes import low_rank_split
from harness import project_params

from movielens_pipeline.data import DataShape, TrainingData, rating_tensors
from movielens_pipeline.evaluate import error_metrics
from movielens_pipeline.models import build_model, load_model
from movielens_pipeline.models.sweep import item_knn as neighbours_module
from movielens_pipeline.trained import predicted_ratings
from movielens_pipeline.training import train

N_USERS, N_MOVIES = 30, 12


def fitted(settings: dict, seed: int = 0):
    """An item_knn model fitted on random ratings (each user rates about half the movies), and those ratings."""
    generator = np.random.default_rng(seed)
    rated = generator.random((N_USERS, N_MOVIES)) < 0.5
    users, movies = (torch.from_numpy(index) for index in np.nonzero(rated))
    ratings = torch.from_numpy(generator.integers(1, 6, len(users)).astype(np.float32))
    data = TrainingData(users, movies, ratings, torch.zeros(len(users)), torch.zeros(N_MOVIES, 0))
    shape = DataShape(N_USERS, N_MOVIES, 0, len(users), float(ratings.mean()))
    params = project_params("train", model="item_knn", item_knn=settings)
    model = build_model("item_knn", params.settings, data, shape)
    with torch.no_grad():
        model.fit()
    return model, users.numpy(), movies.numpy(), ratings.numpy().astype(np.float64)


def residual_matrix(model, users, movies, ratings) -> tuple[np.ndarray, np.ndarray]:
    """The training residuals against the model's baseline as users x movies (0 where unrated), and which are rated."""
    baseline = model.global_bias + model.user_bias[users] + model.movie_bias[movies]
    residuals, rated = np.zeros((N_USERS, N_MOVIES)), np.zeros((N_USERS, N_MOVIES), dtype=bool)
    residuals[users, movies] = ratings - baseline.numpy()
    rated[users, movies] = True
    return residuals, rated


def test_the_baseline_is_the_ridge_fit_of_the_biases():
    model, users, movies, ratings = fitted({"user_bias_penalty": 3.0, "movie_bias_penalty": 2.0})
    residuals, rated = residual_matrix(model, users, movies, ratings)
    # At the fixed point each bias is its ratings' summed deviation over (count + penalty).
    movie_sums = (residuals + model.movie_bias.numpy()) * rated
    np.testing.assert_allclose(model.movie_bias.numpy() * (rated.sum(0) + 2.0), movie_sums.sum(0), atol=1e-3)
    assert float(model.global_bias) == pytest.approx(ratings.mean())


def test_each_movie_keeps_its_most_similar_movies_by_shrunk_pearson_correlation_of_residuals():
    model, users, movies, ratings = fitted({"shrinkage": 5.0, "candidates": 4})
    residuals, rated = residual_matrix(model, users, movies, ratings)
    expected = np.zeros((N_MOVIES, N_MOVIES))
    for m in range(N_MOVIES):
        for j in range(N_MOVIES):
            common = rated[:, m] & rated[:, j]
            norm = np.sqrt((residuals[common, m] ** 2).sum() * (residuals[common, j] ** 2).sum())
            correlation = (residuals[common, m] * residuals[common, j]).sum() / norm if norm > 0 else 0.0
            expected[m, j] = correlation * max(common.sum() - 1, 0) / (common.sum() - 1 + 5.0)
    np.fill_diagonal(expected, -np.inf)
    kept = np.sort(expected, axis=1)[:, ::-1][:, :4]
    np.testing.assert_allclose(model.neighbour_similarities.numpy(), np.maximum(kept, 0), atol=1e-5)
    chosen = np.take_along_axis(expected, model.neighbour_movies.numpy(), axis=1)
    np.testing.assert_allclose(chosen, kept, atol=1e-5)  # the movies those similarities belong to
    assert (model.neighbour_movies.numpy() != np.arange(N_MOVIES)[:, None]).all()  # never itself


def test_a_prediction_is_the_baseline_plus_the_weighted_residuals_of_the_most_similar_rated_movies():
    model, users, movies, ratings = fitted({"neighbours": 3, "candidates": N_MOVIES - 1, "shrinkage": 1.0})
    residuals, rated = residual_matrix(model, users, movies, ratings)
    similarity = np.zeros((N_MOVIES, N_MOVIES))
    np.put_along_axis(similarity, model.neighbour_movies.numpy(), model.neighbour_similarities.numpy(), axis=1)
    query_users, query_movies = np.repeat(np.arange(N_USERS), N_MOVIES), np.tile(np.arange(N_MOVIES), N_USERS)
    bias, interaction = model.score(torch.from_numpy(query_users), torch.from_numpy(query_movies))
    expected = []
    for user, movie in zip(query_users, query_movies, strict=True):
        candidates = [j for j in np.argsort(-similarity[movie], kind="stable") if rated[user, j] and j != movie]
        top = [j for j in candidates[:3] if similarity[movie, j] > 0]
        weights = similarity[movie, top]
        expected.append((weights * residuals[user, top]).sum() / weights.sum() if top else 0.0)
    np.testing.assert_allclose(interaction.numpy(), expected, atol=1e-5)
    baseline = model.global_bias + model.user_bias[query_users] + model.movie_bias[query_movies]
    torch.testing.assert_close(bias, baseline)


def test_a_few_pairs_score_as_they_do_among_every_movie_of_their_users():
    # Every movie for every user reads the ratings from a users x movies table; a few pairs, by binary search.
    model, *_ = fitted({"neighbours": 3, "shrinkage": 1.0})
    every_user, every_movie = torch.arange(N_USERS).repeat_interleave(N_MOVIES), torch.arange(N_MOVIES).repeat(N_USERS)
    candidates = model.neighbour_movies[every_movie]
    assert N_USERS * N_MOVIES <= candidates.numel()  # the table
    _, all_pairs = model.score(every_user, every_movie)
    for pair in torch.randperm(len(every_user), generator=torch.Generator().manual_seed(0))[:40].split(1):
        assert len(every_user[pair].unique()) * N_MOVIES > candidates[pair].numel()  # the binary search
        _, few_pairs = model.score(every_user[pair], every_movie[pair])
        assert torch.equal(few_pairs, all_pairs[pair])


def test_pairs_scored_a_few_at_a_time_score_as_in_one_call(monkeypatch):
    model, *_ = fitted({"neighbours": 3, "shrinkage": 1.0})
    every_user, every_movie = torch.arange(N_USERS).repeat_interleave(N_MOVIES), torch.arange(N_MOVIES).repeat(N_USERS)
    _, whole = model.score(every_user, every_movie)
    # 7 pairs a call, the last 3 (360 pairs): the calls' results must come back in order.
    monkeypatch.setattr(neighbours_module, "CANDIDATE_LOOKUPS", 7 * model.neighbour_movies.shape[1])
    _, chunked = model.score(every_user, every_movie)
    assert torch.equal(chunked, whole)


def test_the_similarities_are_the_same_in_blocks_of_movies(monkeypatch):
    whole, *_ = fitted({})
    monkeypatch.setattr(neighbours_module, "SIMILARITY_BLOCK_FLOATS", 5 * N_USERS)  # blocks of 5 movies
    blocked, *_ = fitted({})
    torch.testing.assert_close(blocked.neighbour_similarities, whole.neighbour_similarities)
    torch.testing.assert_close(blocked.neighbour_movies, whole.neighbour_movies)


@pytest.fixture(scope="module")
def prepared() -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame]:
    return low_rank_split()


def test_item_knn_trains_once_beats_the_baseline_and_is_seeded(prepared, tmp_path):
    parts, users, movies = prepared
    params = project_params("train", model="item_knn")
    summaries = [
        train(params, parts["train"], parts["val"], users, movies, tmp_path / f"{run}.ckpt", tmp_path / f"live{run}")
        for run in (0, 1)
    ]
    assert summaries[0]["epochs"] == 1
    assert (tmp_path / "0.ckpt").read_bytes() == (tmp_path / "1.ckpt").read_bytes()
    test_users, test_movies, actual, days = rating_tensors(parts["test"])
    model = load_model(tmp_path / "0.ckpt")
    predicted = predicted_ratings(model, test_users, test_movies, days)
    mean = parts["train"]["rating"].mean()
    baseline_rmse = float(np.sqrt(((parts["test"]["rating"] - mean) ** 2).mean()))
    assert error_metrics(predicted, actual.numpy())["rmse"] < 0.9 * baseline_rmse
    assert "train_ratings" not in torch.load(tmp_path / "0.ckpt", weights_only=True)["state_dict"]
