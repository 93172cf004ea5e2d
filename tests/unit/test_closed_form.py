"""Models fitted by closed-form sweeps (models/closed_form.py): the solves, the sampler, and real training."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from fakes import low_rank_rows, ratings_frame
from harness import project_params

from movielens_pipeline.data import DataShape, TrainingData, csr_index, rating_tensors
from movielens_pipeline.evaluate import error_metrics
from movielens_pipeline.models import build_model, load_model
from movielens_pipeline.models.closed_form import ridge_rows
from movielens_pipeline.params import ParamsError
from movielens_pipeline.preprocess import index_ratings
from movielens_pipeline.split import split_ratings
from movielens_pipeline.trained import predicted_ratings
from movielens_pipeline.training import train


@pytest.fixture(scope="module")
def prepared() -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame]:
    ratings, users, movies = index_ratings(ratings_frame(low_rank_rows(n_users=200, n_movies=100, per_user=30)))
    return split_ratings(ratings, project_params("split")), users, movies


def fit(prepared, tmp_path, model: str, settings: dict, **train_params) -> tuple[dict, object]:
    parts, users, movies = prepared
    params = project_params("train", **{"model": model, model: settings} | train_params)
    checkpoint = tmp_path / "model.ckpt"
    summary = train(params, parts["train"], parts["val"], users, movies, checkpoint, tmp_path / "live")
    return summary, checkpoint


def rmse_of(checkpoint, ratings: pl.DataFrame) -> float:
    users, movies, actual, days = rating_tensors(ratings)
    return error_metrics(predicted_ratings(load_model(checkpoint), users, movies, days), actual.numpy())["rmse"]


def test_ridge_rows_solves_each_owners_penalised_least_squares():
    generator = np.random.default_rng(0)
    # Owners with 0, 1, 2, 3, 7 and 20 ratings: several buckets of padding, and one owner without ratings.
    counts = [0, 1, 2, 3, 7, 20]
    owners = np.repeat(np.arange(len(counts)), counts)
    others = generator.integers(0, 9, len(owners))
    factors = generator.normal(size=(9, 3))
    targets = generator.normal(size=len(owners))
    by_owner = csr_index(torch.from_numpy(owners), len(counts))
    solved = ridge_rows(
        by_owner, torch.from_numpy(others), torch.from_numpy(factors), torch.from_numpy(targets), penalty=0.3
    ).numpy()
    assert np.array_equal(solved[0], np.zeros(4))
    for owner, count in enumerate(counts[1:], start=1):
        mine = owners == owner
        design = np.column_stack([np.ones(count), factors[others[mine]]])
        expected = np.linalg.solve(design.T @ design + 0.3 * count * np.eye(4), design.T @ targets[mine])
        np.testing.assert_allclose(solved[owner], expected, rtol=1e-8)


def test_als_beats_the_mean_and_its_checkpoint_gives_back_the_val_rmse(prepared, tmp_path):
    summary, checkpoint = fit(prepared, tmp_path, "als", {"embedding_dim": 4, "regularization": 0.1})
    parts = prepared[0]
    val_rmse = rmse_of(checkpoint, parts["val"])
    assert val_rmse == pytest.approx(summary["best_val_mse"] ** 0.5, rel=1e-5)
    mean = parts["train"]["rating"].mean()
    assert rmse_of(checkpoint, parts["test"]) < 0.9 * float(np.sqrt(((parts["test"]["rating"] - mean) ** 2).mean()))
    assert summary["epochs"] < 50  # early stopping on val RMSE, as for any model


def test_bayes_mf_runs_its_sweeps_and_averages_the_samples_after_burn_in(prepared, tmp_path):
    settings = {"embedding_dim": 4, "sweeps": 30, "burn_in": 10}
    summary, checkpoint = fit(prepared, tmp_path / "a", "bayes_mf", settings, patience=1)
    assert summary["epochs"] == 30  # a sampler runs its sweeps: patience does not stop it
    kept = torch.load(checkpoint, weights_only=True)
    # The best epoch is chosen on val; its parameters are the mean of the samples kept by then.
    assert int(kept["state_dict"]["samples"]) == summary["best_epoch"] + 1 - 10
    assert "current_user_factors" not in kept["state_dict"] and "train_ratings" not in kept["state_dict"]
    parts = prepared[0]
    mean = parts["train"]["rating"].mean()
    assert rmse_of(checkpoint, parts["test"]) < 0.9 * float(np.sqrt(((parts["test"]["rating"] - mean) ** 2).mean()))
    # Seeded: the same params give the same checkpoint, byte for byte.
    _, again = fit(prepared, tmp_path / "b", "bayes_mf", settings, patience=1)
    assert checkpoint.read_bytes() == again.read_bytes()


def test_the_samplers_conditional_of_a_precise_likelihood_is_the_least_squares_value():
    # Three users, one rating each of movie 0 (factor 2): with a near-exact likelihood, each user's
    # factor is drawn at its least-squares value, residual / 2, whatever the prior.
    data = TrainingData(torch.tensor([0, 1, 2]), torch.zeros(3, dtype=torch.int64), torch.tensor([3.0, 4.0, 5.0]),
                        torch.zeros(3), torch.zeros(1, 0))  # fmt: skip
    settings = project_params("train", model="bayes_mf", bayes_mf={"embedding_dim": 1}).settings
    model = build_model("bayes_mf", settings, data, DataShape(3, 1, 0, 3, 4.0))
    model.current_movie_factors.fill_(2.0)
    model.residual = data.ratings - 4.0 - 2.0 * model.current_user_factors[:, 0]
    values = model.current_user_factors[:, 0]
    model.sample_rows("user_factors", values, data.users, torch.full((3,), 2.0), torch.tensor(1e10))
    np.testing.assert_allclose(values.numpy(), [-0.5, 0.0, 0.5], atol=1e-3)
    np.testing.assert_allclose(model.residual.numpy(), [0.0, 0.0, 0.0], atol=1e-2)


def test_a_sweep_model_refuses_more_than_one_process(prepared, tmp_path):
    with pytest.raises(ParamsError, match=r"^train\.devices x num_nodes: got 2 processes; `als` is fitted by closed"):
        fit(prepared, tmp_path, "als", {"embedding_dim": 4, "regularization": 0.1}, devices=2, strategy="ddp")
