"""Models, the batch loader, real Lightning training and evaluation on small generated data."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from helpers import low_rank_rows, ratings_frame

from movielens_pipeline.evaluate import error_metrics, evaluate, predict, rating_histogram
from movielens_pipeline.models import MODELS, RATING_MAX, RATING_MIN, build_model, load_model
from movielens_pipeline.params import parse_section
from movielens_pipeline.preprocess import index_ratings
from movielens_pipeline.split import split_ratings
from movielens_pipeline.training import RatingBatches, train


@pytest.fixture(scope="module")
def parts() -> dict[str, pl.DataFrame]:
    indexed, _, _ = index_ratings(ratings_frame(low_rank_rows(n_users=200, n_movies=100, per_user=30)))
    return split_ratings(indexed, parse_section("split", {}))


@pytest.fixture(scope="module")
def index_space(parts) -> tuple[int, int]:
    every = pl.concat(parts.values())
    return int(every["userIdMapped"].max()) + 1, int(every["movieIdMapped"].max()) + 1


def fit(parts, index_space, tmp_path, **train_params) -> tuple[dict, object]:
    params = parse_section("train", {"batch_size": 256, "learning_rate": 0.01, "max_epochs": 12} | train_params)
    checkpoint = tmp_path / "model.ckpt"
    summary = train(parts["train"], parts["val"], *index_space, params, checkpoint, tmp_path / "live")
    return summary, checkpoint


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predictions_stay_on_the_rating_scale_even_with_extreme_parameters(name):
    params = parse_section("train", {"model": name, "embedding_dim": 4})
    model = build_model(params, n_users=5, n_movies=7, train_mean=3.5)
    users, movies = torch.arange(5).repeat(7), torch.arange(7).repeat_interleave(5)
    for scale in (0.0, 1e3, -1e3):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(scale)
        predictions = model(users, movies)
        assert predictions.shape == (35,)
        assert torch.all((predictions >= RATING_MIN) & (predictions <= RATING_MAX))


def test_global_mean_starts_as_the_notebook_did_and_biased_mf_at_the_training_mean():
    users = movies = torch.zeros(3, dtype=torch.int64)
    global_mean = build_model(parse_section("train", {"model": "global_mean"}), 2, 2, train_mean=3.9)
    biased_mf = build_model(parse_section("train", {"model": "biased_mf"}), 2, 2, train_mean=3.9)
    assert torch.allclose(global_mean(users, movies), torch.full((3,), 2.75))
    with torch.no_grad():
        biased_mf.user_factors.weight.zero_()
    assert torch.allclose(biased_mf(users, movies), torch.full((3,), 3.9))


def test_batches_cover_every_row_once_per_epoch_in_a_seeded_order(parts):
    batches = RatingBatches(parts["train"], batch_size=100, shuffle=True, seed=3)
    epochs = [torch.cat([ratings for _, _, ratings in batches]) for _ in range(2)]
    sizes = [len(users) for users, _, _ in batches]
    assert len(batches) == len(sizes) == -(-parts["train"].height // 100) and max(sizes) == 100
    expected = np.sort(parts["train"]["rating"].to_numpy())
    for epoch in epochs:
        assert np.array_equal(np.sort(epoch.numpy()), expected)
    assert not torch.equal(epochs[0], epochs[1])  # a new permutation each epoch
    again = RatingBatches(parts["train"], batch_size=100, shuffle=True, seed=3)
    assert torch.equal(torch.cat([ratings for _, _, ratings in again]), epochs[0])


def test_batches_without_shuffle_keep_row_order_and_pair_columns(parts):
    batches = RatingBatches(parts["val"], batch_size=64, shuffle=False)
    users, movies, ratings = (torch.cat(column) for column in zip(*batches, strict=True))
    assert users.tolist() == parts["val"]["userIdMapped"].to_list()
    assert movies.tolist() == parts["val"]["movieIdMapped"].to_list()
    assert ratings.dtype == torch.float32 and users.dtype == torch.int64


def test_biased_mf_training_beats_the_mean_and_keeps_the_best_checkpoint(parts, index_space, tmp_path):
    summary, checkpoint = fit(parts, index_space, tmp_path, model="biased_mf", patience=2)
    model = load_model(checkpoint)
    val_metrics = error_metrics(predict(model, parts["val"], 4096), parts["val"]["rating"].to_numpy())
    # The checkpoint is the best epoch's weights, not the last epoch's.
    assert val_metrics["mse"] == pytest.approx(summary["best_val_mse"], rel=1e-5)
    actual = parts["val"]["rating"].to_numpy()
    mean_metrics = error_metrics(np.full_like(actual, parts["train"]["rating"].mean()), actual)
    assert val_metrics["mse"] < 0.8 * mean_metrics["mse"]
    logged = json.loads((tmp_path / "live/metrics.json").read_text())
    assert logged["best_epoch"] == summary["best_epoch"] and logged["epochs"] == summary["epochs"]
    curve = (tmp_path / "live/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert len(curve) == summary["epochs"] + 1  # a header and one row per epoch


def test_training_is_deterministic_on_cpu(parts, index_space, tmp_path):
    first, first_checkpoint = fit(parts, index_space, tmp_path / "a", max_epochs=3)
    second, second_checkpoint = fit(parts, index_space, tmp_path / "b", max_epochs=3)
    assert first["best_val_mse"] == second["best_val_mse"]
    first_state, second_state = load_model(first_checkpoint).state_dict(), load_model(second_checkpoint).state_dict()
    assert all(torch.equal(first_state[name], second_state[name]) for name in first_state)


def test_min_epochs_holds_back_early_stopping(parts, index_space, tmp_path):
    # A learning rate this high makes val loss worse at once; patience 1 would stop at epoch 2.
    summary, _ = fit(parts, index_space, tmp_path, learning_rate=1.0, patience=1, min_epochs=6, max_epochs=10)
    assert summary["epochs"] >= 6


def test_global_mean_learns_the_training_mean(parts, index_space, tmp_path):
    _, checkpoint = fit(parts, index_space, tmp_path, model="global_mean", max_epochs=20, patience=20)
    with torch.no_grad():
        learned = float(load_model(checkpoint)(torch.tensor([0]), torch.tensor([0])))
    # From 2.75 to the mean; the best-val checkpoint sits between the train and val means
    # (about 1,000 ratings each, so those differ by a few hundredths).
    assert learned == pytest.approx(parts["train"]["rating"].mean(), abs=0.05)


def test_error_metrics_on_known_values():
    metrics = error_metrics(np.array([3.0, 4.0, 5.0]), np.array([4.0, 4.0, 3.0]))
    assert metrics == pytest.approx({"mse": 5 / 3, "rmse": (5 / 3) ** 0.5, "mae": 1.0})


def test_rating_histogram_counts_every_rating_in_its_bin():
    rows = rating_histogram(np.array([0.5, 2.6, 5.0, 5.0]), np.array([1.0, 1.0, 4.0, 5.0]), bins=9)
    assert [row["rating"] for row in rows] == pytest.approx(np.arange(0.75, 5.0, 0.5).tolist())
    assert sum(row["actual"] for row in rows) == sum(row["predicted"] for row in rows) == 4
    assert rows[-1]["predicted"] == 2 and rows[0]["predicted"] == 1 and rows[4]["predicted"] == 1


def test_evaluate_writes_test_and_baseline_metrics_and_the_histogram(parts, index_space, tmp_path):
    _, checkpoint = fit(parts, index_space, tmp_path, max_epochs=2)
    params = parse_section("evaluate", {"histogram_bins": 9})
    metrics = evaluate(checkpoint, parts["train"], parts["test"], params, tmp_path / "eval")
    written = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert written["test"]["rmse"] == pytest.approx(metrics["test/rmse"])
    assert written["test"]["rows"] == parts["test"].height
    baseline_error = parts["test"]["rating"].to_numpy() - parts["train"]["rating"].mean()
    assert written["baseline"]["mse"] == pytest.approx(float(np.mean(baseline_error**2)), rel=1e-6)
    histogram = json.loads((tmp_path / "eval/plots/custom/rating_histogram.json").read_text())
    assert len(histogram) == 9 and sum(row["actual"] for row in histogram) == parts["test"].height
