"""The ensemble pipeline (ensemble/dvc.yaml): members trained on the shared split, and their blend.

A member is one model trained by the train stage's own `train()` with its settings in `params.yaml`'s
`train`; it writes its first fit's predictions of the val ratings (that fit never saw them) and its
test predictions, from the same fit or, with `ensemble.refit`, from a model refitted on train + val.
The blend's intercept and weights are the ridge-regularised least-squares fit of the val ratings on
the members' val predictions: nothing the test part holds chooses anything. The blend's checkpoint
holds the test-predicting members whole, so the evaluate stage and `movielens predict` read it as
they read one model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from .atomic import atomic_dir, atomic_path, scratch_dir, write_json, write_parquet, writing
from .data import rating_tensors
from .evaluate import error_metrics
from .models import REGISTRY, load_model, model_settings, read_checkpoint, saved_bytes
from .models.blend import blend_checkpoint
from .params import EnsembleParams, ParamsError, TrainParams, parse_section
from .schema import RATING_MAX, RATING_MIN
from .trained import predicted_ratings

# A member's folder: its predictions of each part (one `predicted_rating` column, in the part's row order),
# and the model that predicts test. Not its training's dvclive folder: that holds the training's timings, which
# differ from run to run, and would make DVC see a new member, and rerun the blend, whenever one is retrained.
PREDICTIONS = {"val": "val.parquet", "test": "test.parquet"}
MEMBER_CHECKPOINT = "model.ckpt"


def member_params(train_params: TrainParams, model: str, refit: bool) -> TrainParams:
    """The train section as the member `model` trains: its own settings and the shared keys, `refit` the ensemble's."""
    if model not in REGISTRY:
        raise ParamsError(f"ensemble member '{model}': no such model; known models: {', '.join(REGISTRY)}")
    return parse_section("train", train_params.model_dump() | {"model": model, "refit": refit}, model_settings())


def train_member(
    params: TrainParams,
    parts: dict[str, pl.DataFrame],
    users: pl.DataFrame,
    movies: pl.DataFrame,
    out_dir: Path,
    before_writing=lambda: None,
) -> dict[str, float]:
    """Train `params.model` on `parts` (train, val, test) and write its member folder `out_dir` atomically; returns
    its val and test RMSE."""
    from .training import train  # imported here: Lightning costs seconds, and the blend stage needs none of it

    # The first fit and dvclive's folder go to a scratch folder beside the output, not to /tmp: a run killed with
    # SIGKILL leaves it where the next run of this member clears it (`atomic.clear_stale`).
    with atomic_dir(out_dir) as staging, scratch_dir(out_dir) as scratch:
        first_fit = Path(scratch) / "first_fit.ckpt"
        train(
            params,
            parts["train"],
            parts["val"],
            users,
            movies,
            checkpoint_path=staging / MEMBER_CHECKPOINT,
            live_dir=Path(scratch) / "live",
            first_fit_path=first_fit,
            before_writing=before_writing,
        )
        rmse = {}
        for part, checkpoint in (("val", first_fit), ("test", staging / MEMBER_CHECKPOINT)):
            users_of, movies_of, ratings, days = rating_tensors(parts[part])
            predicted = predicted_ratings(load_model(checkpoint), users_of, movies_of, days)
            rmse[part] = error_metrics(predicted, ratings.numpy())["rmse"]
            write_parquet(
                pl.DataFrame({"predicted_rating": predicted}), staging / PREDICTIONS[part], f"{part} predictions"
            )
    return rmse


def read_member_predictions(members_dir: Path, members: list[str], part: str, rows: int) -> np.ndarray:
    """The members' predictions of `part` (`rows` ratings), one column per member, in `members`' order."""
    columns = []
    for member in members:
        path = members_dir / member / PREDICTIONS[part]
        if not path.is_file():
            trained = (
                sorted(folder.name for folder in members_dir.iterdir() if folder.is_dir())
                if members_dir.is_dir()
                else []
            )
            raise ParamsError(
                f"ensemble.members: '{member}' has no predictions at {path}; the member stage of ensemble/dvc.yaml "
                f"trains {', '.join(trained) or 'none yet'} (list a model there to train it)"
            )
        predicted = pl.read_parquet(path)["predicted_rating"].to_numpy()
        if len(predicted) != rows:
            raise ParamsError(
                f"{path}: {len(predicted)} predictions for {rows} {part} ratings: the member was trained on "
                f"another split; run `dvc repro ensemble/dvc.yaml`"
            )
        columns.append(predicted.astype(np.float64))
    return np.column_stack(columns)


def fit_weights(predictions: np.ndarray, ratings: np.ndarray, penalty: float) -> tuple[float, np.ndarray]:
    """The intercept and weights minimising mean((ratings - intercept - predictions @ weights)^2) + penalty x
    |weights|^2, in float64; the intercept is not penalised."""
    predictions, ratings = predictions.astype(np.float64), ratings.astype(np.float64)
    prediction_means, rating_mean = predictions.mean(axis=0), ratings.mean()
    centred = predictions - prediction_means
    gram = centred.T @ centred / len(ratings) + penalty * np.eye(predictions.shape[1])
    weights = np.linalg.solve(gram, centred.T @ (ratings - rating_mean) / len(ratings))
    return float(rating_mean - prediction_means @ weights), weights


def blend(
    params: EnsembleParams,
    members_dir: Path,
    val: pl.DataFrame,
    model_path: Path,
    summary_path: Path,
    before_writing=lambda: None,
) -> dict:
    """Fit the blend of `params.members` on the val ratings, write its checkpoint to `model_path` and its weights
    and val fit to `summary_path` (JSON, a DVC metric), both atomically; returns that summary. `before_writing`
    may refuse to write (it raises), as in `training.train`."""
    val_ratings = val["rating"].to_numpy()
    predictions = read_member_predictions(members_dir, params.members, "val", val.height)
    intercept, weights = fit_weights(predictions, val_ratings, params.weight_penalty)
    blended = np.clip(predictions @ weights + intercept, RATING_MIN, RATING_MAX)
    summary = {
        # In-sample: the weights were fitted on these ratings. The test metrics are the evaluate stage's.
        "val_fit": {"rmse": error_metrics(blended, val_ratings)["rmse"]},
        "intercept": intercept,
        "weights": dict(zip(params.members, weights.tolist(), strict=True)),
        "members_val_rmse": {
            member: error_metrics(column, val_ratings)["rmse"]
            for member, column in zip(params.members, predictions.T, strict=True)
        },
    }
    checkpoints = {member: read_checkpoint(members_dir / member / MEMBER_CHECKPOINT) for member in params.members}
    before_writing()
    with atomic_path(model_path) as staging, writing(staging, "the blend's checkpoint"):
        staging.write_bytes(saved_bytes(blend_checkpoint(checkpoints, intercept, weights.tolist())))
    with atomic_path(summary_path) as staging:
        write_json(summary, staging, "the blend's weights", indent=4)
    return summary
