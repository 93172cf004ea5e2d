"""`load_model` builds a checkpoint's model without drawing a random start and assigns the checkpoint's weights:
every model, trained here on a tiny split, and a blend of them predict byte for byte as the model built with its
random start and loaded over it did."""

from __future__ import annotations

import io

import polars as pl
import pytest
import torch
from fakes import low_rank_rows, ratings_frame
from harness import model_params, project_params, ranking_params

from movielens_pipeline.data import rating_tensors
from movielens_pipeline.models import REGISTRY, Blend, load_model
from movielens_pipeline.models.__init__ import _shape_and_settings
from movielens_pipeline.models.blend import blend_checkpoint
from movielens_pipeline.preprocess import index_ratings
from movielens_pipeline.split import split_ratings
from movielens_pipeline.trained import predicted_ratings
from movielens_pipeline.training import train

# Each model small and quick: a few epochs; bayes_mf past its ALS start and burn-in, with and without its bags.
SETTINGS = {
    "embedding_dim": 4,
    "hidden_dim": 4,
    "time_bins": 3,
    "sweeps": 7,
    "burn_in": 5,
    "batch_size": 64,
    "learning_rate": 0.01,
}
MODELS = [(name, {}) for name in sorted(REGISTRY)] + [("bayes_mf", {"implicit": False})]


@pytest.fixture(scope="module")
def tiny_split():
    """Generated ratings indexed and split as the pipeline does, movies with genres."""
    ratings, users, movies = index_ratings(ratings_frame(low_rank_rows(n_users=30, n_movies=20, per_user=12)))
    movies = movies.with_columns(genres=pl.Series([[("Comedy", "Drama")[index % 2]] for index in range(movies.height)]))
    return split_ratings(ratings, project_params("split")), users, movies


@pytest.fixture(scope="module")
def checkpoints(tiny_split, tmp_path_factory) -> dict[str, dict]:
    """Each model of MODELS trained on the tiny split, its checkpoint as `torch.load` reads it."""
    parts, users, movies = tiny_split
    read = {}
    for name, changes in MODELS:
        settings = {key: value for key, value in SETTINGS.items() if key in REGISTRY[name].Settings.model_fields}
        params = model_params(name, max_epochs=3, **{name: settings | changes})
        folder = tmp_path_factory.mktemp(name)
        train(
            params,
            *(parts["train"], parts["val"], users, movies),
            folder / "model.ckpt",
            folder / "live",
            ranking_params=ranking_params(name),
        )
        read[f"{name}{changes}"] = torch.load(folder / "model.ckpt", weights_only=True)
    return read


def built_then_loaded(checkpoint: dict) -> torch.nn.Module:
    """The model as loading built it before: its random start drawn, then the weights copied over it."""
    cls = REGISTRY[checkpoint["model_name"]]
    model = cls(*_shape_and_settings(cls, checkpoint["hyper_parameters"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def saved(checkpoint: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return buffer


def every_pair(tiny_split):
    """Every (user, movie) index pair, and the test ratings' with their days."""
    _, users, movies = tiny_split
    grid = torch.arange(users.height).repeat_interleave(movies.height), torch.arange(movies.height).repeat(users.height)
    test_users, test_movies, _, days = rating_tensors(tiny_split[0]["test"])
    return [(*grid, None), (test_users, test_movies, days)]


@pytest.mark.parametrize("name", [f"{name}{changes}" for name, changes in MODELS])
def test_a_model_loaded_without_a_random_start_predicts_as_one_built_with_it(checkpoints, tiny_split, name):
    random_state = torch.get_rng_state()
    loaded = load_model(saved(checkpoints[name]), name)
    assert torch.equal(torch.get_rng_state(), random_state)  # nothing drawn
    before = built_then_loaded(checkpoints[name])
    for users, movies, days in every_pair(tiny_split):
        expected = predicted_ratings(before, users, movies, days)
        assert predicted_ratings(loaded, users, movies, days).tobytes() == expected.tobytes()
    # What the checkpoint leaves out (training's state) is there, on the CPU, in the size it is built with.
    built = dict(before.named_buffers())
    for key, tensor in [*loaded.named_parameters(), *loaded.named_buffers()]:
        assert tensor.device == torch.device("cpu"), key
        assert tensor.shape == built.get(key, tensor).shape and tensor.dtype == built.get(key, tensor).dtype, key
    assert all(parameter.requires_grad for parameter in loaded.parameters())


def test_a_blend_of_members_loaded_without_a_random_start_predicts_as_before(checkpoints, tiny_split):
    members = {name: checkpoints[name] for name in ("svdpp{}", "bayes_mf{}", "autorec{}")}
    weights = [0.5, 0.3, 0.4]
    loaded = load_model(saved(blend_checkpoint(members, -0.6, weights)), "blend.ckpt")
    before = Blend({name: built_then_loaded(checkpoint) for name, checkpoint in members.items()}, -0.6, weights).eval()
    for users, movies, days in every_pair(tiny_split):
        expected = predicted_ratings(before, users, movies, days)
        assert predicted_ratings(loaded, users, movies, days).tobytes() == expected.tobytes()
