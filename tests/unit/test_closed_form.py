"""Models fitted by closed-form sweeps (models/sweep/): the solves, the sampler, and real training."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import numpy as np
import polars as pl
import pytest
import torch
from fakes import low_rank_split
from harness import project_params

from movielens_pipeline import training
from movielens_pipeline.data import DataShape, TrainingData, csr_index, rating_tensors
from movielens_pipeline.evaluate import error_metrics
from movielens_pipeline.models import REGISTRY, build_model, load_model
from movielens_pipeline.models.sweep import bayes_mf, ridge
from movielens_pipeline.models.sweep.als import ALS
from movielens_pipeline.models.sweep.bags import (
    Bags,
    Eigenbasis,
    bag_eigenbasis,
    bag_gram,
    bag_sums,
    bag_vectors_by_conjugate_gradients,
    bag_vectors_conditional,
    make_bags,
    member_sums,
)
from movielens_pipeline.models.sweep.bayes_mf import BayesMF
from movielens_pipeline.models.sweep.ridge import pad_by_owner, ridge_rows
from movielens_pipeline.models.sweep.sessions import find_sessions, make_sessions
from movielens_pipeline.params import ParamsError
from movielens_pipeline.schema import RATING_MAX, RATING_MIN
from movielens_pipeline.trained import predicted_ratings
from movielens_pipeline.training import train
from movielens_pipeline.training.processes import refits_beside

# What bayes_mf gave before implicit feedback existed, in `test_without_implicit_the_sampler_is_the_one_before_bags`:
# with `implicit: false` the sampler must draw the same random numbers and give the same model.
OLD_USER_BIAS = [-0.35689586, 0.08439032, -0.12056844, -0.11692289, 0.07339632, 0.16844940]
OLD_MOVIE_FACTORS = [[0.09991458, 0.88155937], [-0.19427799, 0.16724007], [0.12941219, 0.65961629]]


@pytest.fixture(scope="module")
def prepared() -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame]:
    return low_rank_split()


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
    # Then one prior mean per owner (bayes_mf's with implicit feedback).
    per_coefficient, prior_mean = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64), torch.tensor([1.0, 0, -1, 2])
    per_owner_mean = torch.from_numpy(np.random.default_rng(2).normal(size=(len(counts), 4)))
    cases = ((per_owner, None), (per_coefficient, prior_mean.double()), (per_coefficient, per_owner_mean))
    for penalty, mean in cases:
        solved = ridge_rows(padded, torch.from_numpy(factors), torch.from_numpy(targets), penalty, mean).numpy()
        mean = np.zeros((len(counts), 4)) if mean is None else mean.expand(len(counts), 4).numpy()
        np.testing.assert_array_equal(solved[0], mean[0])  # no ratings: the prior mean
        for owner, count in enumerate(counts[1:], start=1):
            mine = owners == owner
            design = np.column_stack([np.ones(count), factors[others[mine]]])
            ridge = np.diag(penalty.expand(len(counts), 4)[owner].numpy())
            expected = np.linalg.solve(design.T @ design + ridge, design.T @ targets[mine] + ridge @ mean[owner])
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
    settings = {"embedding_dim": 4, "sweeps": 30, "burn_in": 10, "chains": 1}
    summary, checkpoint = fit(prepared, tmp_path / "a", "bayes_mf", settings, patience=1)
    assert summary["epochs"] == 30  # a sampler runs its sweeps: patience does not stop it
    kept = torch.load(checkpoint, weights_only=True)
    # It keeps its last sweep, not one chosen on val: the mean of every sample after burn-in.
    assert summary["best_epoch"] == 29 and int(kept["state_dict"]["samples"]) == 30 - 10
    assert summary["best_val_mse"] == pytest.approx(rmse_of(checkpoint, prepared[0]["val"]) ** 2, rel=1e-5)
    assert "current_user_factors" not in kept["state_dict"] and "train_ratings" not in kept["state_dict"]
    parts = prepared[0]
    mean = parts["train"]["rating"].mean()
    assert rmse_of(checkpoint, parts["test"]) < 0.9 * float(np.sqrt(((parts["test"]["rating"] - mean) ** 2).mean()))
    # Seeded: the same params give the same checkpoint, byte for byte.
    _, again = fit(prepared, tmp_path / "b", "bayes_mf", settings, patience=1)
    assert checkpoint.read_bytes() == again.read_bytes()


def counted_sweeps(monkeypatch, model_class) -> list[tuple[int, int]]:
    """Per sweep `model_class` runs in this process from now on: its training ratings and its epoch (the sweep's
    number in its fit)."""
    swept, sweeps = [], model_class.sweeps

    def counted(self) -> Iterator[torch.Tensor]:
        for epoch, train_mse in enumerate(sweeps(self)):
            swept.append((len(self.train_ratings), epoch))
            yield train_mse

    monkeypatch.setattr(model_class, "sweeps", counted)
    return swept


def test_a_refit_sweeps_once_an_epoch_over_train_and_val(prepared, tmp_path, monkeypatch):
    # The refit's training part (train + val) is larger than the first fit's: each epoch is still one sweep over
    # all of it.
    swept = counted_sweeps(monkeypatch, ALS)
    summary, checkpoint = fit(prepared, tmp_path, "als", {"embedding_dim": 4, "regularization": 0.1}, refit=True)
    parts = prepared[0]
    first, refit = parts["train"].height, parts["train"].height + parts["val"].height
    assert swept == [(first, epoch) for epoch in range(summary["epochs"])] + [
        (refit, epoch) for epoch in range(summary["refit_epochs"])
    ]
    assert torch.load(checkpoint, weights_only=True)["epochs"] == summary["refit_epochs"]


def test_a_samplers_refit_trains_beside_its_first_fit_and_gives_the_model_it_gives_after_it(
    prepared, tmp_path, monkeypatch
):
    # A sampler's refit sweeps as many epochs as its first fit, known before: it runs in a second process.
    settings = {"embedding_dim": 4, "sweeps": 12, "burn_in": 2, "chains": 2}
    swept = counted_sweeps(monkeypatch, BayesMF)
    summary, beside = fit(prepared, tmp_path / "beside", "bayes_mf", settings, refit=True, threads=1)
    parts = prepared[0]
    first, refit = parts["train"].height, parts["train"].height + parts["val"].height
    assert summary["epochs"] == summary["refit_epochs"] == 24
    assert swept == [(first, epoch) for epoch in range(24)]  # this process swept the first fit only
    # Run after the first fit, in this process, the refit sweeps once an epoch over train + val, and its model
    # is the same, byte for byte.
    swept.clear()
    monkeypatch.setattr(training, "refits_beside", lambda params, planned_epochs, device: False)
    _, after = fit(prepared, tmp_path / "after", "bayes_mf", settings, refit=True, threads=1)
    assert swept == [(first, epoch) for epoch in range(24)] + [(refit, epoch) for epoch in range(24)]
    assert beside.read_bytes() == after.read_bytes()
    kept = torch.load(beside, weights_only=True)
    # Each chain's sweeps after its ALS start (which outlasts burn_in here), once each.
    assert kept["epochs"] == 24 and int(kept["state_dict"]["samples"]) == 2 * (12 - bayes_mf.START_SWEEPS)


@pytest.mark.parametrize(
    ("model", "train_params", "beside"),
    [
        ("bayes_mf", {"refit": True}, True),
        ("bayes_mf", {"refit": False}, False),  # no refit
        ("item_knn", {"refit": True}, False),  # one pass: over before a second process has started
        ("als", {"refit": True}, False),  # early stopping decides its epochs
        ("biased_mf", {"refit": True}, False),
    ],
)
def test_only_a_samplers_refit_trains_beside_its_first_fit(model, train_params, beside):
    params, model_class = project_params("train", model=model, **train_params), REGISTRY[model]
    # A gradient model plans no number of epochs: early stopping decides.
    planned = model_class.planned_sweeps(params.settings) if model_class.family == "sweep" else None
    assert refits_beside(params, planned, torch.device("cpu")) is beside


def test_the_gibbs_chain_starts_from_alternating_least_squares():
    # A chain's first sweep is one of the ALS sweeps it starts from, with the penalty start_regularization; from
    # the same movie factors, ALS's sweep gives the same fit.
    users, movies, ratings = (torch.from_numpy(column) for column in owners_ratings([3, 5, 8, 2], n_others=6))
    data = TrainingData(users, movies, (ratings + 3.0).float(), torch.zeros(len(users)), torch.zeros(6, 0))
    shape = DataShape(4, 6, 0, len(users), float((ratings + 3.0).mean()))
    train = project_params("train", model="bayes_mf", bayes_mf={"embedding_dim": 2, "start_regularization": 0.2})
    sampler = build_model("bayes_mf", train.settings, data, shape)
    als_settings = project_params("train", model="als", als={"embedding_dim": 2, "regularization": 0.2}).settings
    als = build_model("als", als_settings, data, shape)
    als.global_bias.copy_(sampler.sample.global_bias)
    als.movie_factors.copy_(sampler.sample.movie.factors)
    run_sweeps(sampler.sweeps(), 1)
    run_sweeps(als.sweeps(), 1)
    current = sampler.sample
    for drawn, solved in (
        (current.user.bias, als.user_bias),
        (current.user.factors, als.user_factors),
        (current.movie.bias, als.movie_bias),
        (current.movie.factors, als.movie_factors),
    ):
        torch.testing.assert_close(drawn, solved)
    assert int(sampler.samples) == 0  # a start sweep is no sample


@pytest.mark.parametrize("chains", [1, 2])
def test_sweeps_and_burn_in_are_accepted_exactly_when_every_chain_keeps_a_sample(chains):
    # Walks the combinations: an accepted one trains a model that kept samples; a refused one, built past the
    # schema, would have kept none (the model would be the training mean), and its refusal is one line.
    users, movies, ratings = (torch.from_numpy(column) for column in owners_ratings([3, 5, 8, 2], n_others=6))
    data = TrainingData(users, movies, (ratings + 3.0).float(), torch.zeros(len(users)), torch.zeros(6, 0))
    shape = DataShape(4, 6, 0, len(users), float((ratings + 3.0).mean()))
    committed = project_params("train", model="bayes_mf").settings.model_dump()
    accepted = 0
    for sweeps in range(1, 9):
        for burn_in in range(0, 9):
            values = {"embedding_dim": 2, "sweeps": sweeps, "burn_in": burn_in, "chains": chains, "implicit": False}
            try:
                settings = project_params("train", model="bayes_mf", bayes_mf=values).settings
            except ParamsError as error:
                assert str(error).startswith(f"train.bayes_mf.sweeps: got {sweeps}; expected more than ")
                assert str(error).endswith("no sample would be kept") and "\n" not in str(error)
                settings = REGISTRY["bayes_mf"].Settings.model_construct(**(committed | values))
                keeps = False
            else:
                keeps, accepted = True, accepted + 1
            model = build_model("bayes_mf", settings, data, shape)
            run_sweeps(model.sweeps(), sweeps * chains)
            assert (int(model.samples) > 0) is keeps, (sweeps, burn_in)
    assert accepted == sum(sweeps > max(burn_in, 4) for sweeps in range(1, 9) for burn_in in range(9))


def test_a_sweep_model_refuses_more_than_one_process(prepared, tmp_path):
    expected = r"^train\.devices x num_nodes: got 2 processes; `als` is fitted by closed"
    with pytest.raises(ParamsError, match=expected) as raised:
        fit(prepared, tmp_path, "als", {"embedding_dim": 4, "regularization": 0.1}, devices=2, strategy="ddp")
    assert "\n" not in str(raised.value)


# Implicit feedback: each user's (movie's) prior mean shifted by its bag of the other side's vectors.


def run_sweeps(sweeps: Iterator[torch.Tensor], count: int) -> None:
    """The next `count` of a model's sweeps (`model.sweeps()`, one fit's), outside training's loop."""
    with torch.no_grad():
        for _ in islice(sweeps, count):
            pass


def sampler(
    users, movies, ratings, n_users: int, n_movies: int, days=None, movie_genres=None, movie_years=None, **settings
):
    """A bayes_mf model that has seen these training ratings (all on day 0 unless `days` are given; no genres nor
    release years unless `movie_genres`, multi-hot, or `movie_years`), with the committed settings and `settings`."""
    ratings = torch.as_tensor(ratings, dtype=torch.float32)
    days = torch.as_tensor(np.zeros(len(ratings)) if days is None else days, dtype=torch.float64)
    genres = torch.zeros(n_movies, 0) if movie_genres is None else torch.as_tensor(movie_genres, dtype=torch.float32)
    years = None if movie_years is None else torch.as_tensor(movie_years)
    data = TrainingData(torch.as_tensor(users), torch.as_tensor(movies), ratings, days, genres, years)
    shape = DataShape(n_users, n_movies, genres.shape[1], len(ratings), float(ratings.mean()))
    return build_model("bayes_mf", project_params("train", model="bayes_mf", bayes_mf=settings).settings, data, shape)


def bag_matrix(owners: np.ndarray, members: np.ndarray, n_owners: int, n_members: int) -> np.ndarray:
    """The bags as a dense owners x members array, as defined: each member 1 / sqrt(the owner's ratings)."""
    counts = np.bincount(owners, minlength=n_owners)
    matrix = np.zeros((n_owners, n_members))
    np.add.at(matrix, (owners, members), 1 / np.sqrt(counts[owners]))
    return matrix


def test_the_bags_hold_the_training_ratings_each_weighted_by_one_over_the_root_of_its_size():
    # User 3 has no training rating (only val or test ones, say): its bag is empty, as is movie 4's.
    users, movies = np.array([0, 0, 0, 1, 2, 2]), np.array([0, 1, 3, 1, 2, 0])
    model = sampler(users, movies, [4.0, 3, 5, 2, 1, 4], n_users=4, n_movies=5, implicit=True)
    user_bags, movie_bags = model.side_bags("user"), model.side_bags("movie")
    expected = bag_matrix(users, movies, 4, 5)
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), [1, 1, 1, 0])  # Koren's SVD++ normalisation
    vectors, rows = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    # B Y, B' X and B'B from the bags' rows and columns: the matrix of the training ratings.
    # (The weights are the model's float32.)
    np.testing.assert_allclose(bag_sums(user_bags, vectors).numpy(), expected @ vectors.numpy(), rtol=1e-6)
    np.testing.assert_allclose(member_sums(user_bags, rows).numpy(), expected.T @ rows.numpy(), rtol=1e-6)
    np.testing.assert_allclose(bag_gram(user_bags).numpy(), expected.T @ expected, rtol=1e-6)
    movie_matrix = bag_matrix(movies, users, 5, 4)
    np.testing.assert_allclose(bag_sums(movie_bags, rows).numpy(), movie_matrix @ rows.numpy(), rtol=1e-6)


def test_with_genres_a_movies_bag_adds_its_genres_each_weighted_by_one_over_the_root_of_their_number():
    # Movie 0 has two genres, movie 1 one, movie 2 none; movie 3 has a genre but no training rating.
    users, movies = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0])
    movie_genres = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
    genre_part = movie_genres / np.sqrt(movie_genres.sum(1, keepdims=True).clip(min=1))
    for implicit in (True, False):
        model = sampler(
            users, movies, [4.0, 3, 5, 2, 1], 3, 4, movie_genres=movie_genres, implicit=implicit, genres=True
        )
        users_part = bag_matrix(movies, users, 4, 3) if implicit else np.zeros((4, 0))
        expected = np.hstack([users_part, genre_part])  # the users first, then the genres
        assert model.sample.movie.bag_vectors.shape == (expected.shape[1], model.settings.embedding_dim + 1)
        movie_bags, vectors = model.side_bags("movie"), torch.randn(expected.shape[1], 3, dtype=torch.float64)
        np.testing.assert_allclose(bag_sums(movie_bags, vectors).numpy(), expected @ vectors.numpy(), rtol=1e-6)
        rows = torch.randn(4, 3, dtype=torch.float64)
        np.testing.assert_allclose(member_sums(movie_bags, rows).numpy(), expected.T @ rows.numpy(), rtol=1e-6)
        np.testing.assert_allclose(bag_gram(movie_bags).numpy(), expected.T @ expected, rtol=1e-6)
        assert len(model.sample.user.bag_vectors) == (4 if implicit else 0)  # users' bags hold no genres


def test_a_movies_attributes_are_its_genres_then_its_release_years_group():
    genres = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    years = torch.tensor([1995, 1999, 1970, 0])  # the last title has no year: no group
    data = TrainingData(
        torch.zeros(1, dtype=torch.int64),
        torch.zeros(1, dtype=torch.int64),
        torch.ones(1),
        torch.zeros(1, dtype=torch.float64),
        genres,
        years,
    )
    # Groups of 10 years from a multiple of 10: 1970-1979 and 1990-1999, the groups that have a movie, in order.
    expected_years = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(bayes_mf.movie_attributes(data, True, 10), torch.cat([genres, expected_years], 1))
    torch.testing.assert_close(bayes_mf.movie_attributes(data, False, 10), expected_years)
    five = bayes_mf.movie_attributes(data, False, 5)  # 1970-1974, 1995-1999: 1995 and 1999 share theirs
    torch.testing.assert_close(five, torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(bayes_mf.movie_attributes(data, True, 0), genres)
    assert bayes_mf.movie_attributes(data, False, 0) is None


def test_release_year_groups_join_the_movies_bags_after_the_genres():
    users, movies, ratings = owners_ratings([3, 5, 8, 2, 6, 4], n_others=7)
    movie_genres = np.random.default_rng(3).integers(0, 2, (7, 4))
    years = [1950, 1955, 1990, 1991, 1999, 0, 2001]  # 1950s, 1990s, 2000s; one movie without a year
    torch.manual_seed(0)
    model = sampler(users, movies, ratings + 3, 6, 7, movie_genres=movie_genres, movie_years=years, embedding_dim=2)
    # The committed settings: the 6 users (implicit), the 4 genres, then the three groups of years.
    assert len(model.sample.movie.bag_vectors) == 6 + 4 + 3
    run_sweeps(model.sweeps(), 12)
    movie_bags = model.bags["movie"]
    assert int(movie_bags.member_starts[-1]) == len(users) + movie_genres.sum() + 6
    attributes = np.hstack(
        [movie_genres, [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]]]
    )
    expected = np.hstack([bag_matrix(movies, users, 7, 6), attributes / np.sqrt(attributes.sum(1, keepdims=True))])
    vectors = torch.randn(13, 3, dtype=torch.float64)
    # (The weights are the model's float32.)
    np.testing.assert_allclose(bag_sums(movie_bags, vectors).numpy(), expected @ vectors.numpy(), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(model.movie_factors).all()


def test_genres_change_the_fit_and_without_any_the_model_is_the_one_without_genres():
    users, movies, ratings = owners_ratings([3, 5, 8, 2, 6, 4], n_others=7)
    movie_genres = np.random.default_rng(3).integers(0, 2, (7, 4))
    fitted = {}
    for name, genres, table in (("genres", True, movie_genres), ("none", True, None), ("off", False, movie_genres)):
        torch.manual_seed(0)
        model = sampler(users, movies, ratings + 3, 6, 7, movie_genres=table, embedding_dim=2, burn_in=5, genres=genres)
        run_sweeps(model.sweeps(), 12)
        fitted[name] = model.state_dict()
    for key, value in fitted["off"].items():
        torch.testing.assert_close(fitted["none"][key], value, rtol=0, atol=0)
    assert not torch.equal(fitted["genres"]["movie_factors"], fitted["off"]["movie_factors"])


def test_the_bags_are_those_of_the_ratings_the_model_is_trained_on():
    # The model is given train, or train + val when refitting: its bags are those ratings', whatever else exists.
    users, movies, ratings = (column for column in owners_ratings([3, 5, 8, 2], n_others=6))
    for held in (slice(0, 12), slice(None)):
        model = sampler(users[held], movies[held], ratings[held] + 3, n_users=4, n_movies=6, implicit=True)
        run_sweeps(model.sweeps(), bayes_mf.START_SWEEPS + 1)  # the first Gibbs sweep makes the bags
        vectors = torch.randn(6, 2)
        np.testing.assert_allclose(
            bag_sums(model.bags["user"], vectors).numpy(),
            bag_matrix(users[held], movies[held], 4, 6) @ vectors.numpy(),
            rtol=1e-5,
        )


def bag_problem(n_coordinates: int, transposed: bool) -> tuple[Bags, Eigenbasis, dict[str, torch.Tensor], np.ndarray]:
    """Five users' bags of four movies (`transposed`: the four movies' bags of the users, B'B then known from BB'
    and spanning its range only), an exact draw's inputs over `n_coordinates` coordinates, and B dense."""
    users, movies = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4]), np.array([0, 1, 1, 2, 3, 0, 2, 3, 1])
    (owners, n_owners), (members, n_members) = ((movies, 4), (users, 5)) if transposed else ((users, 5), (movies, 4))
    layouts = (*csr_and_others(owners, members, n_owners), *csr_and_others(members, owners, n_members))
    bags = make_bags(*layouts, torch.float64)
    generator = torch.Generator().manual_seed(0)
    row_precision = torch.linspace(0.5, 4.0, n_coordinates, dtype=torch.float64)
    inputs = {
        "deviations": torch.randn(n_owners, n_coordinates, generator=generator, dtype=torch.float64),
        "row_precision": row_precision,
        "vector_mean": torch.linspace(-1.0, 1.0, n_coordinates, dtype=torch.float64),
        "vector_precision": 3.0 / row_precision,
    }
    return bags, bag_eigenbasis(bags, torch.float64), inputs, bag_matrix(owners, members, n_owners, n_members)


def csr_and_others(owners: np.ndarray, others: np.ndarray, n_owners: int) -> tuple[torch.Tensor, torch.Tensor]:
    starts, order = csr_index(torch.from_numpy(owners), n_owners)
    return starts, torch.from_numpy(others)[order]


@pytest.mark.parametrize("transposed", [False, True])
def test_the_bag_vectors_mean_is_the_dense_solve_of_their_precision(transposed):
    bags, basis, inputs, matrix = bag_problem(n_coordinates=3, transposed=transposed)
    members = matrix.shape[1]
    # Transposed: movies 2 and 3 have the same raters, so B'B (users x users) has rank 3; its basis spans that.
    assert basis.vectors.shape == ((5, 3) if transposed else (4, 4))
    mean = bag_vectors_conditional(basis, bags, **inputs, draw=False).numpy()
    for d in range(3):
        rows, vectors = inputs["row_precision"][d].item(), inputs["vector_precision"][d].item()
        precision = rows * matrix.T @ matrix + vectors * np.eye(members)
        right = rows * matrix.T @ inputs["deviations"][:, d].numpy() + vectors * inputs["vector_mean"][d].item()
        np.testing.assert_allclose(mean[:, d], np.linalg.solve(precision, right), rtol=1e-10)


def many_draws(inputs: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """One coordinate's inputs repeated over `n` coordinates: `n` draws of one conditional at once."""
    return {name: value.expand(-1, n) if value.dim() == 2 else value.expand(n) for name, value in inputs.items()}


def assert_draws_match(draws: np.ndarray, mean: np.ndarray, covariance: np.ndarray) -> None:
    """Draws (one per column) with this mean (within 4 standard errors) and covariance (within 10 %)."""
    standard_error = np.sqrt(np.diag(covariance) / draws.shape[1])
    assert np.all(np.abs(draws.mean(1) - mean) < 4 * standard_error)
    np.testing.assert_allclose(np.cov(draws), covariance, rtol=0.1, atol=0.1 * covariance.max())


@pytest.mark.parametrize("transposed", [False, True])
def test_the_bag_vectors_are_drawn_with_the_inverse_of_their_precision_as_covariance(transposed):
    bags, basis, inputs, matrix = bag_problem(n_coordinates=1, transposed=transposed)
    inputs = many_draws(inputs, 4000)  # the same conditional 4,000 times
    torch.manual_seed(0)
    draws = bag_vectors_conditional(basis, bags, **inputs).numpy()
    rows, vectors = inputs["row_precision"][0].item(), inputs["vector_precision"][0].item()
    covariance = np.linalg.inv(rows * matrix.T @ matrix + vectors * np.eye(matrix.shape[1]))
    assert_draws_match(draws, bag_vectors_conditional(basis, bags, **inputs, draw=False)[:, 0].numpy(), covariance)


def test_a_light_user_is_pulled_towards_the_users_who_rated_the_same_movies():
    # 20 users rated movies 0-9 and share a row (its deviation from the side's prior mean); 20 others rated
    # 10-19 and share the opposite row. The mean of the bag vectors given those rows puts the prior mean of a
    # user who rated only movies 0-2 (user 40) near the first group's row, though no rating of its says so.
    groups = [(user, movie) for user in range(40) for movie in range(10 * (user // 20), 10 * (user // 20) + 10)]
    users, movies = (np.array(column) for column in zip(*groups, (40, 0), (40, 1), (40, 2), strict=True))
    row = torch.tensor([0.5, 1.0, -1.0], dtype=torch.float64)
    deviations = torch.cat([row.expand(20, 3), -row.expand(20, 3)])
    precision = torch.full((3,), 10.0, dtype=torch.float64)
    grouped = slice(0, 400)  # the groups' ratings, which the vectors are drawn from
    group_bags = make_bags(
        *csr_and_others(users[grouped], movies[grouped], 40),
        *csr_and_others(movies[grouped], users[grouped], 20),
        torch.float64,
    )
    basis = bag_eigenbasis(group_bags, torch.float64)
    vectors = bag_vectors_conditional(basis, group_bags, deviations, precision, torch.zeros(3), precision / 10, False)
    bags = make_bags(*csr_and_others(users, movies, 41), *csr_and_others(movies, users, 20), torch.float64)
    light = bag_sums(bags, vectors)[40]
    assert torch.nn.functional.cosine_similarity(light, row, dim=0) > 0.99
    assert 0.4 * row.norm() < light.norm() < row.norm()  # 3 of the group's 10 movies, over sqrt(3)
    # Its row's conditional mean given three ratings that say nothing (no factors, no residual) is that prior mean.
    padded = pad_by_owner(*csr_and_others(users, movies, 41), n_others=20, dim=3)
    movie_rows, targets = torch.zeros(20, 2, dtype=torch.float64), torch.zeros(len(users), dtype=torch.float64)
    with_bag = ridge_rows(padded, movie_rows, targets, precision, bag_sums(bags, vectors))[40]
    without = ridge_rows(padded, movie_rows, targets, precision)[40]
    torch.testing.assert_close(with_bag[1:], light[1:])
    assert (with_bag - row).norm() < 0.6 * (without - row).norm()


def test_without_implicit_the_sampler_is_the_one_before_bags():
    # The values the sampler gave before bags existed (same seed, same ratings, the same random stream).
    users, movies, ratings = owners_ratings([3, 5, 8, 2, 6, 4], n_others=7)
    torch.manual_seed(0)
    settings = {"embedding_dim": 2, "burn_in": 5, "start_regularization": 0.15, "implicit": False, "chains": 1}
    model = sampler(users, movies, ratings + 3, n_users=6, n_movies=7, **settings, session_minutes=[])
    run_sweeps(model.sweeps(), 8)
    assert int(model.samples) == 3
    torch.testing.assert_close(model.user_bias, torch.tensor(OLD_USER_BIAS), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.movie_factors[:3], torch.tensor(OLD_MOVIE_FACTORS), rtol=1e-5, atol=1e-6)


def test_the_sampler_with_bags_is_seeded_and_keeps_the_same_checkpoint_keys():
    users, movies, ratings = owners_ratings([3, 5, 8, 2, 6, 4], n_others=7)
    fitted = {}
    for name, implicit in (("bags", True), ("again", True), ("plain", False)):
        torch.manual_seed(0)
        model = sampler(
            users, movies, ratings + 3, n_users=6, n_movies=7, embedding_dim=2, burn_in=5, implicit=implicit
        )
        run_sweeps(model.sweeps(), 12)
        fitted[name] = model.state_dict()
    for key, value in fitted["bags"].items():
        torch.testing.assert_close(fitted["again"][key], value, rtol=0, atol=0)
    assert fitted["bags"].keys() == fitted["plain"].keys()
    assert not torch.equal(fitted["bags"]["user_factors"], fitted["plain"]["user_factors"])
    # Without bags nothing of them is held: the memory estimate and a run at any size are those before bags.
    assert model.sample.user.bag_vectors.numel() == model.sample.movie.bag_prior_mean.numel() == 0 and not model.bags


def test_conjugate_gradients_draw_the_same_conditional_without_a_dense_matrix():
    # The fallback beyond MAX_EXACT_MEMBERS: its mean is the exact one, its draws have the same covariance.
    bags, basis, inputs, _ = bag_problem(n_coordinates=3, transposed=False)
    start = torch.zeros(4, 3, dtype=torch.float64)
    solved = bag_vectors_by_conjugate_gradients(bags, **inputs, start=start, draw=False)
    exact = bag_vectors_conditional(basis, bags, **inputs, draw=False)
    torch.testing.assert_close(solved, exact, rtol=1e-5, atol=1e-8)
    # A float32 model's: the passes over the ratings in float32, the iterates in float64.
    inputs32 = {name: value.float() for name, value in inputs.items()}
    solved = bag_vectors_by_conjugate_gradients(bags, **inputs32, start=start.float(), draw=False)
    assert solved.dtype == torch.float32
    torch.testing.assert_close(solved.double(), exact, rtol=1e-5, atol=1e-6)
    bags, basis, inputs, matrix = bag_problem(n_coordinates=1, transposed=False)
    inputs = many_draws(inputs, 4000)
    torch.manual_seed(0)
    draws = bag_vectors_by_conjugate_gradients(bags, **inputs, start=torch.zeros(4, 4000, dtype=torch.float64))
    rows, vectors = inputs["row_precision"][0].item(), inputs["vector_precision"][0].item()
    covariance = np.linalg.inv(rows * matrix.T @ matrix + vectors * np.eye(4))
    assert_draws_match(
        draws.numpy(), bag_vectors_conditional(basis, bags, **inputs, draw=False)[:, 0].numpy(), covariance
    )


def test_bags_with_more_members_than_the_exact_draw_takes_are_drawn_by_conjugate_gradients(monkeypatch):
    users, movies, ratings = owners_ratings([3, 5, 8, 2, 6, 4], n_others=7)
    monkeypatch.setattr(bayes_mf, "MAX_EXACT_MEMBERS", 6)  # the 7 movies' vectors by CG, the 6 users' exactly
    torch.manual_seed(0)
    model = sampler(users, movies, ratings + 3, n_users=6, n_movies=7, embedding_dim=2, burn_in=5, implicit=True)
    run_sweeps(model.sweeps(), 12)
    assert set(model.bag_bases) == {"movie"}
    assert torch.isfinite(model.user_factors).all() and int(model.samples) == 7


def test_a_checkpoint_from_before_the_bags_loads_as_a_model_without_them(tmp_path):
    model = sampler([0, 1, 1], [0, 0, 1], [4.0, 3.0, 5.0], n_users=2, n_movies=2, implicit=False)
    checkpoint = model.checkpoint()
    for new_setting in ("implicit", "genres"):  # what the train stage saved before bags
        del checkpoint["hyper_parameters"]["settings"][new_setting]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = load_model(tmp_path / "old.ckpt")
    assert loaded.settings.implicit is False and loaded.settings.genres is False
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())


def test_chains_run_one_after_another_and_predict_with_the_mean_of_their_predictions():
    users, movies, ratings = owners_ratings([3, 5, 8, 2, 6, 4], n_others=7)
    settings = {"embedding_dim": 2, "sweeps": 8, "burn_in": 5, "implicit": True}
    torch.manual_seed(0)
    one = sampler(users, movies, ratings + 3, n_users=6, n_movies=7, **settings, chains=1)
    run_sweeps(one.sweeps(), 8)
    torch.manual_seed(0)
    three = sampler(users, movies, ratings + 3, n_users=6, n_movies=7, **settings, chains=3)
    three_sweeps = three.sweeps()  # one fit's sweeps, run a few at a time
    run_sweeps(three_sweeps, 8)
    # The first chain is the one-chain sampler's, draw for draw.
    torch.testing.assert_close(three.user_bias, one.user_bias, rtol=0, atol=0)
    torch.testing.assert_close(three.user_factors[:, :2], one.user_factors, rtol=0, atol=0)
    assert three.user_factors[:, 2:].abs().sum() == 0  # the chains still to run predict nothing yet

    query_users, query_movies = torch.from_numpy(users), torch.from_numpy(movies)

    def chain_predictions(model) -> torch.Tensor:
        """Each chain's prediction of the queries from its own mean parameters (chains x queries)."""
        means = model.chain_means
        return torch.stack(
            [
                means.global_bias[chain]
                + means.user_bias[chain][query_users]
                + means.movie_bias[chain][query_movies]
                + (means.user_factors[chain][query_users] * means.movie_factors[chain][query_movies]).sum(1)
                for chain in range(3)
            ]
        )

    def predicted(model) -> torch.Tensor:
        bias, interaction = model.score(query_users, query_movies)
        return (bias + interaction).double()

    run_sweeps(three_sweeps, 6)  # epochs 8-13: the second chain keeps its first sample (burn-in 5)
    with torch.no_grad():
        # Each chain weighs by the samples it kept: 3 and 1.
        expected = (3 * chain_predictions(three)[0] + chain_predictions(three)[1]) / 4
        torch.testing.assert_close(predicted(three), expected, rtol=1e-5, atol=1e-5)
    run_sweeps(three_sweeps, 10)  # epochs 14-23
    assert int(three.samples) == 3 * 3
    torch.testing.assert_close(predicted(three), chain_predictions(three).mean(0), rtol=1e-5, atol=1e-5)
    # Each chain from its own random start: three different fits.
    assert not torch.allclose(chain_predictions(three)[0], chain_predictions(three)[1])
    assert not torch.allclose(chain_predictions(three)[1], chain_predictions(three)[2])


def test_a_checkpoint_from_before_chains_loads_as_one_chain(prepared, tmp_path):
    settings = {"embedding_dim": 4, "sweeps": 6, "burn_in": 2, "chains": 1}  # as every checkpoint before chains
    _, checkpoint = fit(prepared, tmp_path, "bayes_mf", settings, patience=1)
    saved = torch.load(checkpoint, weights_only=True)
    del saved["hyper_parameters"]["settings"]["chains"]
    torch.save(saved, tmp_path / "old.ckpt")
    parts = prepared[0]
    assert load_model(tmp_path / "old.ckpt").settings.chains == 1
    assert rmse_of(tmp_path / "old.ckpt", parts["test"]) == rmse_of(checkpoint, parts["test"])


@pytest.mark.parametrize("dim", [3, 65, 4097])
def test_a_ridge_chunk_holds_at_most_gram_floats_design_gram_and_cholesky_values_whatever_the_rank(dim):
    # Many owners with one or two ratings each: at a high rank their k x k Gram matrices, not their design rows,
    # would fill memory (the case the memory estimate once missed); the chunks are cut so they cannot.
    rng = np.random.default_rng(0)
    owners = np.repeat(np.arange(3000), rng.integers(1, 3, 3000))
    padded = pad_by_owner(*csr_and_others(owners, rng.integers(0, 50, len(owners)), 3000), n_others=50, dim=dim)
    for chunk_owners, rows, _ in padded.chunks:
        held = rows.numel() * dim + 2 * len(chunk_owners) * dim * dim
        assert held <= ridge.GRAM_FLOATS or len(chunk_owners) == 1
    assert sum(len(chunk_owners) for chunk_owners, _, _ in padded.chunks) == 3000


def test_sessions_are_each_users_windows_and_are_found_again():
    # Days since 1970, float64 as the pipeline holds them: user 0 rates twice 2 minutes apart, then a day later;
    # user 1 once, in the same window as user 0's first two.
    day = 20_000.0
    users, days = torch.tensor([0, 0, 0, 1]), torch.tensor([day, day + 2 / 1440, day + 1, day], dtype=torch.float64)
    sessions = make_sessions(users, days, minutes=[15])
    assert len(sessions.keys) == 3 and bool((sessions.keys[1:] > sessions.keys[:-1]).all())
    of_rating = sessions.of_rating[0].tolist()
    assert of_rating[0] == of_rating[1] and len({of_rating[0], of_rating[2], of_rating[3]}) == 3
    # Found again for a rating in a training window; not for another user's, nor for a window training never saw.
    asked_users = torch.tensor([0, 0, 1, 2, 1])
    asked_days = torch.tensor([day + 5 / 1440, day + 1, day + 1, day, day - 1], dtype=torch.float64)
    index, found = find_sessions(sessions.keys, asked_users, asked_days, minutes=[15])
    assert found.tolist() == [[True, True, False, False, False]]
    assert index[0, :2].tolist() == [of_rating[0], of_rating[2]]
    # No training sessions at all: nothing is found.
    assert not find_sessions(sessions.keys[:0], asked_users, asked_days, minutes=[15])[1].any()
    # Two scales, 15 minutes and 2 days: each a block of the keys, the 2 days' holding user 0's three ratings.
    sessions = make_sessions(users, days, minutes=[15, 2 * 1440])
    assert sessions.starts.tolist() == [0, 3, 3 + 2] and sessions.of_rating.shape == (2, 4)
    assert sessions.of_rating[1].tolist() == [3, 3, 3, 4]
    index, found = find_sessions(sessions.keys, asked_users, asked_days, minutes=[15, 2 * 1440])
    assert found.tolist() == [[True, True, False, False, False], [True, True, True, False, False]]


def test_one_minute_sessions_follow_the_clock_at_todays_dates():
    # Ratings' times as the pipeline reads them (`rating_tensors`): 2026's seconds are 20,000 days after 1970, where
    # float32 days step by 169 seconds. Seconds 0 and 59 of a minute share its window, second 60 starts the next.
    minute = 1_796_083_200  # 2026-12-01 00:00 UTC
    ratings = pl.DataFrame(
        {"userIdMapped": [0, 0, 0, 0], "movieIdMapped": [0, 1, 2, 3], "rating": [4.0] * 4},
        schema_overrides={"rating": pl.Float32},
    ).with_columns(timestamp=pl.Series([minute, minute + 59, minute + 60, minute + 119]))
    users, _, _, days = rating_tensors(ratings)
    assert days.dtype == torch.float64
    assert make_sessions(users, days, minutes=[1]).of_rating.tolist() == [[0, 0, 1, 1]]


def test_bayes_mf_learns_each_sessions_bias_and_predicts_with_it_where_it_knows_the_session():
    # 60 users x 40 movies at rank 2; each user rates in two sessions a week apart, one in a good mood (+0.6), the
    # other in a bad one (-0.6). Held-out ratings fall in those sessions.
    generator = np.random.default_rng(0)
    user_factors, movie_factors = generator.normal(size=(60, 2)), generator.normal(size=(40, 2))
    users, movies = np.repeat(np.arange(60), 40), np.tile(np.arange(40), 60)
    session = generator.integers(0, 2, len(users))
    mood = np.where(session == 1, 0.6, -0.6)
    ratings = 3 + (user_factors[users] * movie_factors[movies]).sum(1) * 0.5 + mood
    ratings += generator.normal(scale=0.3, size=len(users))
    days = 20_000.0 + 7 * session + generator.uniform(0, 0.02, len(users))  # each session within half an hour
    held = generator.random(len(users)) < 0.2
    train, test = ~held, held
    rmse = {}
    for minutes in ([], [60], [30, 90]):  # the moods at one scale, then shared between two
        torch.manual_seed(0)
        model = sampler(users[train], movies[train], ratings[train], n_users=60, n_movies=40, days=days[train],
                        embedding_dim=2, sweeps=40, burn_in=10, chains=1, session_minutes=minutes)  # fmt: skip
        run_sweeps(model.sweeps(), 40)
        test_days = torch.from_numpy(days[test])
        with torch.no_grad():
            predicted = model(torch.from_numpy(users[test]), torch.from_numpy(movies[test]), test_days).numpy()
            timeless = model(torch.from_numpy(users[test]), torch.from_numpy(movies[test])).numpy()
        rmse[sum(minutes)] = float(np.sqrt(np.mean((predicted - ratings[test]) ** 2)))
        if minutes:
            # Each session's biases add up to its mood, give or take the noise; a rating without a time gets none.
            learned = sum(model.session_bias[sessions] for sessions in model.session_of_rating).numpy()
            assert np.corrcoef(learned, mood[train])[0, 1] > 0.95
            assert np.abs(timeless - predicted).max() > 0.3
            np.testing.assert_allclose(timeless, sessionless_prediction(model, users[test], movies[test]), rtol=1e-6)
    assert rmse[60] < 0.6 * rmse[0] and rmse[120] < 0.6 * rmse[0]


def sessionless_prediction(model, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """The model's prediction from its biases and factors alone, clipped as a rating: no session's bias."""
    users, movies = torch.from_numpy(users), torch.from_numpy(movies)
    score = model.global_bias + model.user_bias[users] + model.movie_bias[movies]
    score = score + (model.user_factors[users] * model.movie_factors[movies]).sum(1)
    return score.clamp(RATING_MIN, RATING_MAX).numpy()


def test_a_bayes_mf_checkpoint_with_sessions_predicts_as_its_fit_and_one_from_before_sessions_loads(prepared, tmp_path):
    settings = {"embedding_dim": 4, "sweeps": 12, "burn_in": 4, "chains": 2, "session_minutes": [60, 1440]}
    summary, checkpoint = fit(prepared, tmp_path / "sessions", "bayes_mf", settings, patience=1)
    saved = torch.load(checkpoint, weights_only=True)
    assert len(saved["state_dict"]["session_keys"]) == len(saved["state_dict"]["session_bias"]) > 0
    # Read back, sized by the checkpoint: the val RMSE the fit reported, its sessions' biases included.
    assert summary["best_val_mse"] == pytest.approx(rmse_of(checkpoint, prepared[0]["val"]) ** 2, rel=1e-5)
    # A checkpoint from before sessions: no setting, no tables; it loads without sessions.
    _, plain = fit(prepared, tmp_path / "plain", "bayes_mf", settings | {"session_minutes": []}, patience=1)
    old = torch.load(plain, weights_only=True)
    del old["hyper_parameters"]["settings"]["session_minutes"]
    for name in ("session_keys", "session_bias"):
        del old["state_dict"][name]
    torch.save(old, tmp_path / "old.ckpt")
    assert load_model(tmp_path / "old.ckpt").settings.session_minutes == []
    assert rmse_of(tmp_path / "old.ckpt", prepared[0]["test"]) == rmse_of(plain, prepared[0]["test"])


@pytest.mark.parametrize(
    "minutes, expected",
    [
        ([0], "train.bayes_mf.session_minutes: got 0; expected a list of integers from 1 to 527040, at most 7"),
        ([5, 60, 5], "train.bayes_mf.session_minutes: got [5, 60, 5]; expected each time scale once"),
        (list(range(5, 13)), "expected a list of integers from 1 to 527040, at most 7"),
        (60, "train.bayes_mf.session_minutes: got 60 (int); expected a list of integers"),
    ],
)
def test_session_scales_that_cannot_be_drawn_are_refused_in_one_line_naming_the_param(minutes, expected):
    with pytest.raises(ParamsError) as refused:
        project_params("train", model="bayes_mf", bayes_mf={"session_minutes": minutes})
    assert expected in str(refused.value) and "\n" not in str(refused.value)
