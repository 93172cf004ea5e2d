"""Score the best checkpoint on the test set against the seed's training-mean baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
from dvclive import Live

from .models import RATING_MAX, RATING_MIN, RatingModel, load_model
from .params import EvaluateParams
from .training import RatingBatches

ID_COLUMNS = ("userIdMapped", "movieIdMapped")


def predict(model: RatingModel, ratings: pl.DataFrame, batch_size: int) -> np.ndarray:
    """The model's predicted rating for every row of `ratings`, in row order."""
    batches = RatingBatches(ratings, batch_size, shuffle=False)
    with torch.no_grad():
        predictions = [model(users, movies) for users, movies, _ in batches]
    return torch.cat(predictions).numpy() if predictions else np.empty(0, dtype=np.float32)


def error_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """MSE (the seed's metric), RMSE and MAE, computed in float64."""
    errors = predicted.astype(np.float64) - actual.astype(np.float64)
    mse = float(np.mean(errors**2))
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(errors)))}


def rating_histogram(predicted: np.ndarray, actual: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Counts of true and predicted ratings in equal bins over the rating scale (the seed's histogram)."""
    edges = np.linspace(RATING_MIN, RATING_MAX, bins + 1)
    true_counts, _ = np.histogram(actual, bins=edges)
    predicted_counts, _ = np.histogram(predicted, bins=edges)
    centers = (edges[:-1] + edges[1:]) / 2
    return [
        {"rating": round(float(center), 4), "actual": int(true), "predicted": int(pred)}
        for center, true, pred in zip(centers, true_counts, predicted_counts, strict=True)
    ]


def evaluate(checkpoint: Path, train: pl.DataFrame, test: pl.DataFrame, params: EvaluateParams, out_dir: Path) -> dict:
    """Write test and baseline metrics and the histogram plot with dvclive into `out_dir`."""
    model = load_model(checkpoint)
    actual = test["rating"].to_numpy()
    predicted = predict(model, test, params.batch_size)
    baseline = np.full_like(actual, train["rating"].mean())
    metrics = {f"test/{name}": value for name, value in error_metrics(predicted, actual).items()}
    metrics |= {f"baseline/{name}": value for name, value in error_metrics(baseline, actual).items()}
    metrics["test/rows"] = len(actual)
    users, movies = (torch.from_numpy(test[column].to_numpy().astype(np.int64)) for column in ID_COLUMNS)
    known = model.user_seen[users] & model.movie_seen[movies]
    # Ratings whose user or movie had no training rating: predicted from the biases alone.
    metrics["test/cold_start_rows"] = int((~known).sum())
    with Live(str(out_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for name, value in metrics.items():
            live.log_metric(name, value, plot=False)
        live.log_plot(
            "rating_histogram",
            rating_histogram(predicted, actual, params.histogram_bins),
            x="rating",
            y=["actual", "predicted"],
            title="Test ratings: actual vs predicted",
        )
    return metrics
