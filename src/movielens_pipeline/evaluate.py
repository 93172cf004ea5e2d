"""Score the best checkpoint on the test set against the seed's training-mean baseline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import torch
from dvclive import Live
from torch import Tensor

from .atomic import write_json
from .data import RatingsDataModule, device_of, rating_tensors
from .models import RatingModel, load_model
from .params import EvaluateParams
from .schema import MOVIE_INDEX, RATING_MAX, RATING_MIN, USER_INDEX
from .trained import TrainedModel, predicted_ratings, trained_model

HALF_STAR = 0.5  # MovieLens's step; ML-100K and ML-1M use whole stars only


def error_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """MSE (the seed's metric), RMSE and MAE, computed in float64."""
    errors = predicted.astype(np.float64) - actual.astype(np.float64)
    mse = float(np.mean(errors**2))
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(errors)))}


def rating_histogram(predicted: np.ndarray, actual: np.ndarray) -> list[dict[str, float | str]]:
    """Share of test ratings per half star, true and predicted (rounded to the nearest half star), long form:
    one row per (rating, series), `actual` then `predicted`, every half star present. The plot
    (.dvc/plots/rating_shares.json) draws the `actual` rows once, whatever the number of revisions."""
    stars = np.arange(RATING_MIN, RATING_MAX + HALF_STAR / 2, HALF_STAR)
    rows = []
    for series, values in (("actual", actual), ("predicted", predicted)):
        nearest = np.clip(np.round(values.astype(np.float64) / HALF_STAR) * HALF_STAR, RATING_MIN, RATING_MAX)
        counts = np.array([np.sum(np.isclose(nearest, star)) for star in stars])
        shares = counts / max(len(values), 1)
        rows += [
            {"rating": float(star), "series": series, "share": float(share)}
            for star, share in zip(stars, shares, strict=True)
        ]
    return rows


def error_by_rating(predicted: np.ndarray, actual: np.ndarray) -> list[dict[str, float]]:
    """RMSE and mean signed error (predicted - true) for each distinct true rating, ascending."""
    rows = []
    for rating in np.unique(actual):
        chosen = actual == rating
        errors = predicted[chosen].astype(np.float64) - float(rating)
        rows.append(
            {
                "rating": float(rating),
                "rmse": float(np.sqrt(np.mean(errors**2))),
                "mean_error": float(np.mean(errors)),
                "ratings": int(chosen.sum()),
            }
        )
    return rows


def activity_buckets(params: EvaluateParams) -> list[tuple[str, int, float]]:
    """(label, lowest, highest-exclusive) number of training ratings of each user bucket, cold to heavy."""
    light, medium, heavy = params.light_user_min_ratings, params.medium_user_min_ratings, params.heavy_user_min_ratings
    return [
        (f"cold (0-{light - 1})", 0, light),
        (f"light ({light}-{medium - 1})", light, medium),
        (f"medium ({medium}-{heavy - 1})", medium, heavy),
        (f"heavy ({heavy}+)", heavy, math.inf),
    ]


def rmse_by_user_activity(
    predicted: np.ndarray, test: pl.DataFrame, train: pl.DataFrame, params: EvaluateParams
) -> list[dict[str, float | str]]:
    """Test RMSE of users grouped by their number of training ratings; empty buckets have rmse null."""
    counts = train.group_by("userIdMapped").agg(pl.len().alias("activity"))
    activity = (
        test.select("userIdMapped")
        .with_row_index("row")
        .join(counts, on="userIdMapped", how="left")
        .sort("row")["activity"]
        .fill_null(0)
        .to_numpy()
    )
    errors = predicted.astype(np.float64) - test["rating"].to_numpy().astype(np.float64)
    users = test["userIdMapped"].to_numpy()
    rows = []
    for label, lowest, highest in activity_buckets(params):
        chosen = (activity >= lowest) & (activity < highest)
        rows.append(
            {
                "user_activity": label,
                "rmse": float(np.sqrt(np.mean(errors[chosen] ** 2))) if chosen.any() else None,
                "users": int(np.unique(users[chosen]).size),
                "ratings": int(chosen.sum()),
            }
        )
    return rows


def ranking(
    trained: TrainedModel, test: pl.DataFrame, train: pl.DataFrame, params: EvaluateParams
) -> tuple[dict, list]:
    """Top-k quality of the ranker (`TrainedModel.ranker`) and of the popularity baseline, the rating model's own
    NDCG@k (`test/ndcg@k`: what a change of rating model does to its ranking), and the ranker's and popularity's
    NDCGs by user activity, over the users `liked_movies` picks: each user's top k among the movies they did not
    rate in training, against the movies they liked in test.

    The rows by activity are long form, one per bucket and series (`model`, then `popularity`: the plot draws
    the baseline once, however many revisions it compares); an empty bucket has ndcg null.
    """
    k = params.ranking_k
    users, liked = liked_movies(test, params)
    user_indices = torch.from_numpy(users[USER_INDEX].to_numpy().astype(np.int64))
    metrics: dict[str, float] = {"ranking/users": users.height}
    ndcg_of = {}
    for group in ("ranker", "popularity"):
        scores, top = trained.top_movies(user_indices, k, by=group)
        precision, recall, ndcg_of[group] = top_k_quality(top, scores.isfinite(), liked, trained.n_movies, k)
        if users.height:
            metrics |= {
                f"{group}/precision@{k}": float(precision.mean()),
                f"{group}/recall@{k}": float(recall.mean()),
                f"{group}/ndcg@{k}": float(ndcg_of[group].mean()),
                # Share of the catalogue that appears in at least one top-k list.
                f"{group}/coverage@{k}": top[scores.isfinite()].unique().numel() / trained.n_movies,
            }
    if users.height:
        if trained.ranker is trained.model:
            metrics[f"test/ndcg@{k}"] = metrics[f"ranker/ndcg@{k}"]
        else:
            scores, top = trained.top_movies(user_indices, k, by="model")
            metrics[f"test/ndcg@{k}"] = float(
                top_k_quality(top, scores.isfinite(), liked, trained.n_movies, k)[2].mean()
            )
    activity = users.join(train.group_by(USER_INDEX).agg(pl.len().alias("activity")), on=USER_INDEX, how="left")
    activity = activity.sort("row")["activity"].fill_null(0).to_numpy()
    rows = []
    for label, lowest, highest in activity_buckets(params):
        chosen = torch.from_numpy((activity >= lowest) & (activity < highest))
        for series, group in (("model", "ranker"), ("popularity", "popularity")):
            value = float(ndcg_of[group][chosen].mean()) if chosen.any() else None
            rows.append({"user_activity": label, "series": series, "ndcg": value, "users": int(chosen.sum())})
    return metrics, rows


def liked_movies(ratings: pl.DataFrame, params: EvaluateParams) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The users ranking is measured on, and what each liked: the users of `ratings` (test, or val while a ranker
    trains) with at least one rating of `ranking_relevant_rating` or more, at most `ranking_max_users` of them
    (drawn with `ranking_seed`), as (row, userIdMapped) in index order; and (row, movieIdMapped) of each liked one."""
    liked = ratings.filter(pl.col("rating") >= params.ranking_relevant_rating)
    users = liked.select(USER_INDEX).unique().sort(USER_INDEX)
    if params.ranking_max_users is not None and users.height > params.ranking_max_users:
        users = users.sample(params.ranking_max_users, seed=params.ranking_seed).sort(USER_INDEX)
    users = users.with_row_index("row")
    return users, liked.join(users, on=USER_INDEX).select("row", MOVIE_INDEX)


def mean_ndcg(trained: TrainedModel, users: pl.DataFrame, liked: pl.DataFrame, k: int) -> float:
    """The ranker's mean NDCG@k over `users`, against what each `liked` (as `liked_movies` gives them)."""
    scores, top = trained.top_movies(torch.from_numpy(users[USER_INDEX].to_numpy().astype(np.int64)), k)
    return float(top_k_quality(top, scores.isfinite(), liked, trained.n_movies, k)[2].mean())


def top_k_quality(
    top: Tensor, filled: Tensor, liked: pl.DataFrame, n_movies: int, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per user (row of `top`): precision@k, recall@k and NDCG@k (binary relevance) of its top-k movie indices.

    `filled` marks real entries of `top` (False where the user had fewer than k movies left);
    `liked` holds (row, movieIdMapped) of each relevant movie.
    """
    rows = torch.from_numpy(liked["row"].to_numpy().astype(np.int64))
    relevant_keys = rows * n_movies + torch.from_numpy(liked[MOVIE_INDEX].to_numpy().astype(np.int64))
    top_keys = torch.arange(len(top)).unsqueeze(1) * n_movies + top
    hits = (torch.isin(top_keys, relevant_keys) & filled).double()
    n_relevant = torch.bincount(rows, minlength=len(top)).double()
    discounts = 1 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    best_possible = torch.cumsum(discounts, 0)[(n_relevant.clamp(max=k) - 1).long()]
    ndcg = (hits[:, : discounts.numel()] * discounts[: hits.shape[1]]).sum(dim=1) / best_possible
    return hits.sum(dim=1) / k, hits.sum(dim=1) / n_relevant, ndcg


def test_metrics(predicted: np.ndarray, test: pl.DataFrame, train: pl.DataFrame, model: RatingModel) -> dict:
    """The metrics `dvc exp show` and `dvc metrics diff` compare, each named by group: test/..., baseline/...
    RMSE and MAE only: the seed's MSE is RMSE squared, and one more column in every table."""
    actual = test["rating"].to_numpy()
    baseline = np.full_like(actual, train["rating"].mean())
    metrics = {}
    for group, values in (("test", predicted), ("baseline", baseline)):
        errors = error_metrics(values, actual)
        metrics |= {f"{group}/rmse": errors["rmse"], f"{group}/mae": errors["mae"]}
    metrics["test/rows"] = len(actual)
    users, movies, _, _ = rating_tensors(test)
    known = model.user_seen.cpu()[users] & model.movie_seen.cpu()[movies]
    # Ratings whose user or movie had no training rating: predicted from the biases alone.
    metrics["test/cold_start_rows"] = int((~known).sum())
    return metrics


def evaluate(
    checkpoint: Path,
    data: RatingsDataModule,
    params: EvaluateParams,
    out_dir: Path,
    noise_floor_rmse: float | None = None,
    ranker: Path | None = None,
    group: str | None = None,
) -> dict:
    """Score `data`'s predict part (the test ratings) against the training-mean baseline of its train part,
    and rank movies for its users with the `ranker` checkpoint (None: the rating model's own ranking) against the
    popularity baseline (`data` needs its users and movies tables).

    Writes the metrics and the plot data (eval/plots/custom/*.json) with dvclive into `out_dir`.
    `noise_floor_rmse`, known for generated data only, is logged as `noise_floor/rmse` beside `test/rmse`.
    With `group`, every name is `<group>/...`, so another pipeline's file (the ensemble's) has names of its own
    in `dvc exp show`, which would otherwise prefix both files' columns with their paths.
    """
    train, test = data.tables["train"], data.tables["predict"]
    device = device_of(params.accelerator)
    model = load_model(checkpoint).to(device)
    actual = test["rating"].to_numpy()
    users, movies, _, days = rating_tensors(test)
    predicted = predicted_ratings(model, users, movies, days)
    metrics = test_metrics(predicted, test, train, model)
    if noise_floor_rmse is not None:
        metrics["noise_floor/rmse"] = noise_floor_rmse
    read_ranker = None if ranker is None else lambda: load_model(ranker).to(device)
    ranking_metrics, ndcg_by_activity = ranking(
        trained_model(model, data.users, data.movies, train, read_ranker), test, train, params
    )
    metrics |= ranking_metrics
    # The plots are declared (titles, axes, templates) at the top of dvc.yaml; here only their data.
    plots = {
        "rating_histogram": rating_histogram(predicted, actual),
        "error_by_rating": error_by_rating(predicted, actual),
        "rmse_by_user_activity": rmse_by_user_activity(predicted, test, train, params),
        "ndcg_by_user_activity": ndcg_by_activity,
    }
    with Live(str(out_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for name, value in metrics.items():
            live.log_metric(name if group is None else f"{group}/{name}", value, plot=False)
    write_plot_data(out_dir / "plots" / "custom", plots)
    return metrics


def write_plot_data(folder: Path, plots: dict[str, list[dict]]) -> None:
    """One JSON list of rows per plot, where dvclive's `log_plot` would put it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in plots.items():
        write_json(rows, folder / f"{name}.json", f"the {name} plot's data", indent=4)
