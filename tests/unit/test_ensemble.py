"""The ensemble's library (ensemble.py, models/blend.py): members trained with their val predictions from a fit
that never saw val, blend weights fitted on val alone, and the blend served from one checkpoint."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
from fakes import low_rank_rows, ratings_frame
from harness import project_params

from movielens_pipeline.data import rating_tensors
from movielens_pipeline.ensemble import (
    MEMBER_CHECKPOINT,
    PREDICTIONS,
    blend,
    fit_weights,
    member_params,
    read_member_predictions,
    train_member,
)
from movielens_pipeline.models import Blend, CheckpointError, load_model
from movielens_pipeline.models.blend import blend_checkpoint
from movielens_pipeline.params import ParamsError, parse_section
from movielens_pipeline.preprocess import index_ratings
from movielens_pipeline.split import split_ratings
from movielens_pipeline.trained import predicted_ratings

QUICK = {"max_epochs": 6, "svdpp": {"batch_size": 256, "learning_rate": 0.01, "embedding_dim": 8}}


@pytest.fixture(scope="module")
def prepared() -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame]:
    ratings, users, movies = index_ratings(ratings_frame(low_rank_rows(n_users=120, n_movies=60, per_user=25)))
    return split_ratings(ratings, project_params("split")), users, movies


@pytest.fixture(scope="module")
def members_dir(prepared, tmp_path_factory):
    """Two members trained into one members folder: svdpp refitted on train + val (its table of each user's rated
    movies then grows), als not."""
    parts, users, movies = prepared
    folder = tmp_path_factory.mktemp("members")
    for model, refit in (("svdpp", True), ("als", False)):
        params = member_params(project_params("train", **QUICK), model, refit=refit)
        train_member(params, parts, users, movies, folder / model)
    return folder


def test_fit_weights_recovers_a_blend_and_the_penalty_shrinks_the_weights_not_the_intercept():
    generator = np.random.default_rng(0)
    predictions = generator.normal(3.5, 1.0, size=(500, 3))
    ratings = 0.2 + predictions @ np.array([0.5, 0.3, 0.15])
    intercept, weights = fit_weights(predictions, ratings, penalty=0.0)
    assert intercept == pytest.approx(0.2) and weights == pytest.approx([0.5, 0.3, 0.15])
    _, shrunk = fit_weights(predictions, ratings, penalty=0.5)
    assert np.linalg.norm(shrunk) < np.linalg.norm(weights)
    intercept, nothing = fit_weights(predictions, ratings, penalty=1e6)
    assert nothing == pytest.approx([0, 0, 0], abs=1e-5) and intercept == pytest.approx(ratings.mean(), abs=1e-4)


def test_a_members_val_predictions_come_from_its_first_fit_and_its_test_predictions_from_the_refit(
    prepared, members_dir
):
    parts, _, _ = prepared
    model = load_model(members_dir / "svdpp" / MEMBER_CHECKPOINT)
    users, movies, ratings, days = rating_tensors(parts["test"])
    test_predicted = pl.read_parquet(members_dir / "svdpp" / PREDICTIONS["test"])["predicted_rating"]
    assert np.array_equal(test_predicted.to_numpy(), predicted_ratings(model, users, movies, days))
    # The refitted model trained on val: its val predictions are not what the blend is fitted on.
    users, movies, _, days = rating_tensors(parts["val"])
    val_ratings = parts["val"]["rating"].to_numpy()
    val_predicted = pl.read_parquet(members_dir / "svdpp" / PREDICTIONS["val"])["predicted_rating"].to_numpy()
    refit_val_rmse = np.sqrt(np.mean((predicted_ratings(model, users, movies, days) - val_ratings) ** 2))
    first_fit_val_rmse = np.sqrt(np.mean((val_predicted - val_ratings) ** 2))
    assert first_fit_val_rmse > refit_val_rmse


def test_a_member_folder_holds_its_predictions_and_model_only(members_dir):
    # No timings (dvclive's): a retrained member with the same results is the same DVC output, byte for byte.
    assert sorted(path.name for path in (members_dir / "svdpp").iterdir()) == sorted(
        [*PREDICTIONS.values(), MEMBER_CHECKPOINT]
    )


def test_changing_the_test_ratings_changes_no_weight(prepared, members_dir, tmp_path):
    parts, users, movies = prepared
    shuffled_test = parts["test"].with_columns(pl.col("rating").shuffle(seed=1))
    other_members = tmp_path / "members"
    params = member_params(project_params("train", **QUICK), "svdpp", refit=True)
    train_member(params, parts | {"test": shuffled_test}, users, movies, other_members / "svdpp")
    shutil.copytree(members_dir / "als", other_members / "als")
    ensemble = parse_section("ensemble", {"members": ["svdpp", "als"], "weight_penalty": 0.0, "refit": True})
    weights = [
        blend(ensemble, folder, parts["val"], tmp_path / f"{index}.ckpt", tmp_path / f"{index}.json")["weights"]
        for index, folder in enumerate((members_dir, other_members))
    ]
    assert weights[0] == weights[1]
    assert (tmp_path / "0.ckpt").read_bytes() == (tmp_path / "1.ckpt").read_bytes()  # the same models, byte for byte


def test_the_blend_checkpoint_serves_intercept_plus_weighted_members_clipped(prepared, members_dir, tmp_path):
    parts, _, _ = prepared
    ensemble = parse_section("ensemble", {"members": ["als", "svdpp"], "weight_penalty": 0.01, "refit": True})
    summary = blend(ensemble, members_dir, parts["val"], tmp_path / "blend.ckpt", tmp_path / "blend.json")
    assert json.loads((tmp_path / "blend.json").read_text()) == summary
    served = load_model(tmp_path / "blend.ckpt")
    assert isinstance(served, Blend) and list(served.members) == ["als", "svdpp"]
    users, movies, _, days = rating_tensors(parts["test"])
    expected = summary["intercept"] + sum(
        weight * predicted_ratings(load_model(members_dir / member / MEMBER_CHECKPOINT), users, movies, days)
        for member, weight in summary["weights"].items()
    )
    assert predicted_ratings(served, users, movies, days) == pytest.approx(np.clip(expected, 0.5, 5.0), abs=1e-5)


def test_a_blend_round_trips_through_its_checkpoint_and_clips_to_the_rating_scale(members_dir):
    checkpoint = torch.load(members_dir / "als" / MEMBER_CHECKPOINT, weights_only=True)
    buffer = io.BytesIO()
    torch.save(blend_checkpoint({"als": checkpoint}, intercept=10.0, weights=[1.0]), buffer)
    buffer.seek(0)
    served = load_model(buffer, "blend.ckpt")
    assert predicted_ratings(served, torch.tensor([0, 1]), torch.tensor([0, 1])).tolist() == [5.0, 5.0]


def test_a_member_the_matrix_did_not_train_or_trained_on_another_split_is_refused_by_name(members_dir, prepared):
    parts, _, _ = prepared
    with pytest.raises(ParamsError, match=r"ensemble.members: 'bayes_mf' has no predictions .* trains als, svdpp"):
        read_member_predictions(members_dir, ["als", "bayes_mf"], "val", parts["val"].height)
    with pytest.raises(ParamsError, match=r"predictions for 7 val ratings: the member was trained on another split"):
        read_member_predictions(members_dir, ["als"], "val", 7)
    with pytest.raises(ParamsError, match=r"ensemble member 'nope': no such model; known models: .*biased_mf"):
        member_params(project_params("train"), "nope", refit=False)


def test_a_truncated_member_checkpoint_is_refused_naming_the_file_and_nothing_is_written(
    prepared, members_dir, tmp_path
):
    parts, _, _ = prepared
    members = tmp_path / "members"
    shutil.copytree(members_dir, members)
    checkpoint = members / "als" / MEMBER_CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # cut short, as a killed copy leaves it
    ensemble = parse_section("ensemble", {"members": ["svdpp", "als"], "weight_penalty": 0.0, "refit": True})
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(checkpoint))}: not a checkpoint the train stage"):
        blend(ensemble, members, parts["val"], tmp_path / "blend.ckpt", tmp_path / "blend.json")
    assert not (tmp_path / "blend.ckpt").exists() and not (tmp_path / "blend.json").exists()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (["als", "als"], r"ensemble.members: got \['als', 'als'\]; expected distinct model names \('als' is listed"),
        ([], r"ensemble.members: got \[\]; expected a non-empty list of strings"),
    ],
)
def test_the_ensemble_section_refuses_an_empty_or_repeated_member_list(members, message):
    with pytest.raises(ParamsError, match=message):
        parse_section("ensemble", {"members": members, "weight_penalty": 0.0, "refit": True})


def test_the_blend_loads_without_lightning():
    # The blend stage's seconds are mostly imports: Lightning's alone are three or four of them.
    script = (
        "import sys; from movielens_pipeline.ensemble import blend; "
        "sys.exit(sorted(m for m in sys.modules if 'lightning' in m) or 0)"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
