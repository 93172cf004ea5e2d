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
from movielens_pipeline.models.ridge import pad_by_owner, ridge_rows
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


def owners_ratings(counts: list[int], n_others: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per rating: its owner (owners with `counts` ratings each, in owner order), the other side's index, a target."""
    generator = np.random.default_rng(seed)
    owners = np.repeat(np.arange(len(counts)), counts)
    return owners, generator.integers(0, n_others, len(owners)), generator.normal(size=len(owners))


def test_ridge_rows_solves_each_owners_penalised_least_squares():
    # Owners with 0, 1, 2, 3, 7 and 20 ratings: several buckets of padding, and one owner without ratings.
    counts = [0, 1, 2, 3, 7, 20]
    owners, others, targets = owners_ratings(counts, n_others=9)
    factors = np.random.default_rng(1).normal(size=(9, 3))
    starts, _ = csr_index(torch.from_numpy(owners), len(counts))
    padded = pad_by_owner(starts, torch.from_numpy(others), n_others=9, dim=4)
    # The ALS penalty (0.3 x the owner's ratings), then a penalty per coefficient around a prior mean.
    per_owner = 0.3 * torch.tensor(counts, dtype=torch.float64).unsqueeze(1)
    per_coefficient, prior_mean = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64), torch.tensor([1.0, 0, -1, 2])
    for penalty, mean in ((per_owner, None), (per_coefficient, prior_mean.double())):
        solved = ridge_rows(padded, torch.from_numpy(factors), torch.from_numpy(targets), penalty, mean).numpy()
        mean = np.zeros(4) if mean is None else mean.numpy()
        np.testing.assert_array_equal(solved[0], mean)  # no ratings: the prior mean
        for owner, count in enumerate(counts[1:], start=1):
            mine = owners == owner
            design = np.column_stack([np.ones(count), factors[others[mine]]])
            ridge = np.diag(penalty.expand(len(counts), 4)[owner].numpy())
            expected = np.linalg.solve(design.T @ design + ridge, design.T @ targets[mine] + ridge @ mean)
            np.testing.assert_allclose(solved[owner], expected, rtol=1e-8)


def test_ridge_rows_draws_each_row_jointly_from_its_normal_conditional():
    # 4,000 owners with the same five ratings: 4,000 draws of one conditional, N(mean, noise^2 (D'D + P)^-1).
    owners, others, targets = owners_ratings([5], n_others=3)
    n, noise = 4000, 0.5
    starts = torch.arange(n + 1) * 5
    others, targets = torch.from_numpy(np.tile(others, n)), torch.from_numpy(np.tile(targets, n))
    factors = torch.tensor([[1.0, 0.5], [-0.5, 1.0], [0.3, -1.2]], dtype=torch.float64)
    padded = pad_by_owner(starts, others, n_others=3, dim=3)
    penalty, prior_mean = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64), torch.tensor([0.1, 0.0, -0.1])
    torch.manual_seed(0)
    means, draws = ridge_rows(padded, factors, targets, penalty, prior_mean.double(), draw_std=noise)
    design = np.column_stack([np.ones(5), factors[others[:5]].numpy()])
    covariance = noise**2 * np.linalg.inv(design.T @ design + np.diag(penalty.numpy()))
    np.testing.assert_allclose(means.numpy(), np.broadcast_to(means[0].numpy(), (n, 3)))
    # Within 4 standard errors of the mean, and each (co)variance within 10 %.
    standard_error = np.sqrt(np.diag(covariance) / n)
    assert np.all(np.abs(draws.numpy().mean(0) - means[0].numpy()) < 4 * standard_error)
    np.testing.assert_allclose(np.cov(draws.numpy().T), covariance, rtol=0.1, atol=0.1 * covariance.max())


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


def test_the_gibbs_chain_starts_from_alternating_least_squares():
    # Outside a Trainer the epoch is 0: every bayes_mf sweep is then one of the ALS sweeps its chain starts
    # from, with the penalty start_regularization; from the same movie factors, ALS's sweep gives the same fit.
    users, movies, ratings = (torch.from_numpy(column) for column in owners_ratings([3, 5, 8, 2], n_others=6))
    data = TrainingData(users, movies, (ratings + 3.0).float(), torch.zeros(len(users)), torch.zeros(6, 0))
    shape = DataShape(4, 6, 0, len(users), float((ratings + 3.0).mean()))
    train = project_params("train", model="bayes_mf", bayes_mf={"embedding_dim": 2, "start_regularization": 0.2})
    sampler = build_model("bayes_mf", train.settings, data, shape)
    als_settings = project_params("train", model="als", als={"embedding_dim": 2, "regularization": 0.2}).settings
    als = build_model("als", als_settings, data, shape)
    als.global_bias.copy_(sampler.current_global_bias)
    als.movie_factors.copy_(sampler.current_movie_factors)
    sampler.sweep(), als.sweep()
    for name in ("user_bias", "user_factors", "movie_bias", "movie_factors"):
        torch.testing.assert_close(getattr(sampler, f"current_{name}"), getattr(als, name))
    assert int(sampler.samples) == 0  # a start sweep is no sample


def test_a_sweep_model_refuses_more_than_one_process(prepared, tmp_path):
    with pytest.raises(ParamsError, match=r"^train\.devices x num_nodes: got 2 processes; `als` is fitted by closed"):
        fit(prepared, tmp_path, "als", {"embedding_dim": 4, "regularization": 0.1}, devices=2, strategy="ddp")
