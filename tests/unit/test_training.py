"""Models, real Lightning training and evaluation on small generated data."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from fakes import low_rank_rows, ratings_frame
from harness import model_params, project_params, ranking_params

from movielens_pipeline.data import DataShape, RatingsDataModule, TrainingData, rating_tensors
from movielens_pipeline.evaluate import error_metrics, evaluate, ranking, rating_histogram, top_k_quality
from movielens_pipeline.models import REGISTRY, build_model, load_model
from movielens_pipeline.models.base import rating_of_logit
from movielens_pipeline.params import GradientSettings, ParamsError, unchanged_params
from movielens_pipeline.preprocess import index_ratings
from movielens_pipeline.schema import RATING_MAX, RATING_MIN
from movielens_pipeline.split import split_ratings
from movielens_pipeline.trained import predicted_ratings, trained_model
from movielens_pipeline.training import TIMINGS, TIMINGS_FILE, VAL_FILE, train
from movielens_pipeline.training.optim import table_optimizers, use_sparse_tables
from movielens_pipeline.training.progress import BestEpoch

GENRES = ("Action", "Comedy", "Drama", "Horror")


@pytest.fixture(scope="module")
def prepared() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Generated ratings indexed as the preprocess stage does, and users and movies tables with genres."""
    ratings, users, movies = index_ratings(ratings_frame(low_rank_rows(n_users=200, n_movies=100, per_user=30)))
    genres = [[GENRES[index % 4], GENRES[(index // 4) % 4]] for index in range(movies.height)]
    return ratings, users, movies.with_columns(genres=pl.Series(genres))


@pytest.fixture(scope="module")
def parts(prepared) -> dict[str, pl.DataFrame]:
    return split_ratings(prepared[0], project_params("split"))


def model_settings(name: str, **values) -> dict:
    """Of `values`, those model `name` has a setting for (every model here takes `embedding_dim=16` then)."""
    return {key: value for key, value in values.items() if key in REGISTRY[name].Settings.model_fields}


def fit(prepared, parts, tmp_path, sparse_tables=None, model="biased_mf", settings=None, **train_params):
    """train() on the generated split: small batches, a quick learning rate, 12 epochs unless told otherwise."""
    chosen = model_settings(model, **{"batch_size": 256, "learning_rate": 0.01} | (settings or {}))
    params = model_params(model, **{"max_epochs": 12, model: chosen} | train_params)
    checkpoint = tmp_path / "model.ckpt"
    _, users, movies = prepared
    summary = train(
        params,
        parts["train"],
        parts["val"],
        users,
        movies,
        checkpoint,
        tmp_path / "live",
        sparse_tables=sparse_tables,
        ranking_params=ranking_params(model),
    )
    return summary, checkpoint


def new_model(name: str, data: TrainingData, n_users: int, n_movies: int, train_mean: float = 3.5, **settings):
    """Model `name` with its committed settings (`settings` changed), sized for these users and movies."""
    chosen = model_params(name, **{name: model_settings(name, **settings)}).settings
    if isinstance(chosen, GradientSettings):
        chosen = chosen.resolved(len(data.users))
    shape = DataShape(n_users, n_movies, data.movie_genres.shape[1], len(data.users), train_mean)
    return build_model(name, chosen, data, shape)


def predicted(checkpoint, ratings: pl.DataFrame) -> np.ndarray:
    users, movies, _, days = rating_tensors(ratings)
    return predicted_ratings(load_model(checkpoint), users, movies, days)


def tiny_data(n_users: int, n_movies: int, n_genres: int = 0) -> TrainingData:
    """Training data in which every user and movie has a rating."""
    users = torch.arange(max(n_users, n_movies)) % n_users
    movies = torch.arange(max(n_users, n_movies)) % n_movies
    return training_data(users, movies, torch.ones(n_movies, n_genres))


def training_data(users: torch.Tensor, movies: torch.Tensor, movie_genres: torch.Tensor) -> TrainingData:
    """Training data of these users and movies, each rating a 4 given on a day of its own."""
    return TrainingData(users, movies, torch.full(users.shape, 4.0), torch.arange(len(users)) + 10_000.0, movie_genres)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_predictions_stay_on_the_rating_scale_even_with_extreme_parameters(name):
    model = new_model(name, tiny_data(5, 7, n_genres=3), n_users=5, n_movies=7, embedding_dim=4)
    users, movies = torch.arange(5).repeat(7), torch.arange(7).repeat_interleave(5)
    for scale in (0.0, 1e3, -1e3):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(scale)
        predictions = model(users, movies)
        assert predictions.shape == (35,)
        assert torch.all((predictions >= RATING_MIN) & (predictions <= RATING_MAX))


def test_a_linear_model_predicts_bias_plus_interaction_clipped_to_the_rating_scale():
    sigmoid_model = new_model("biased_mf", tiny_data(3, 3), 3, 3, embedding_dim=2)

    class LinearMF(type(sigmoid_model)):  # the output form is the one difference
        output = "linear"

    model = LinearMF(sigmoid_model.shape, sigmoid_model.settings)
    model.remember(tiny_data(3, 3))
    users, movies = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    with torch.no_grad():
        model.global_logit.fill_(3.0)
        model.user_bias.weight[:, 0] = torch.tensor([0.5, 5.0, -5.0])
        bias, interaction = model.score(users, movies)
        assert torch.equal(model(users, movies), (bias + interaction).clamp(RATING_MIN, RATING_MAX))
        assert model(users, movies)[1] == RATING_MAX and model(users, movies)[2] == RATING_MIN


def test_global_mean_starts_as_the_notebook_did_and_biased_mf_at_the_training_mean():
    users = movies = torch.zeros(3, dtype=torch.int64)
    global_mean = new_model("global_mean", tiny_data(2, 2), 2, 2, train_mean=3.9)
    biased_mf = new_model("biased_mf", tiny_data(2, 2), 2, 2, train_mean=3.9)
    assert torch.allclose(global_mean(users, movies), torch.full((3,), 2.75))
    with torch.no_grad():
        biased_mf.user_factors.weight.zero_()
    assert torch.allclose(biased_mf(users, movies), torch.full((3,), 3.9))


def test_biased_mf_training_beats_the_mean_and_keeps_the_best_checkpoint(prepared, parts, tmp_path):
    summary, checkpoint = fit(prepared, parts, tmp_path, patience=2)
    val_metrics = error_metrics(predicted(checkpoint, parts["val"]), parts["val"]["rating"].to_numpy())
    # The checkpoint is the best epoch's weights, not the last epoch's.
    assert val_metrics["mse"] == pytest.approx(summary["best_val_mse"], rel=1e-5)
    actual = parts["val"]["rating"].to_numpy()
    mean_metrics = error_metrics(np.full_like(actual, parts["train"]["rating"].mean()), actual)
    assert val_metrics["mse"] < 0.8 * mean_metrics["mse"]
    logged = json.loads((tmp_path / "live/metrics.json").read_text())
    assert logged["best_epoch"] == summary["best_epoch"] and logged["epochs"] == summary["epochs"]
    # The one declared metrics file of the folder: the figure the checkpoint was chosen on, as an RMSE.
    chosen_on = json.loads((tmp_path / "live" / VAL_FILE).read_text())
    assert chosen_on == {"val": {"rmse": pytest.approx(val_metrics["rmse"], rel=1e-5)}}
    curve = (tmp_path / "live/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert len(curve) == summary["epochs"] + 1  # a header and one row per epoch


def test_training_is_deterministic_on_cpu(prepared, parts, tmp_path):
    first, first_checkpoint = fit(prepared, parts, tmp_path / "a", max_epochs=3)
    second, second_checkpoint = fit(prepared, parts, tmp_path / "b", max_epochs=3)
    assert first["best_val_mse"] == second["best_val_mse"]
    first_state, second_state = load_model(first_checkpoint).state_dict(), load_model(second_checkpoint).state_dict()
    assert all(torch.equal(first_state[name], second_state[name]) for name in first_state)
    # Byte for byte, though the two files have different names (torch names an archive's folder after its file).
    assert first_checkpoint.read_bytes() == second_checkpoint.read_bytes()
    # train() switches off deterministic mode's NaN fill of new memory only while it fits.
    assert torch.utils.deterministic.fill_uninitialized_memory
    # dvclive's folder is byte for byte the same too, but for the timings file (kept out of dvc.lock and git).
    assert live_files(tmp_path / "a" / "live") == live_files(tmp_path / "b" / "live")


def live_files(folder) -> dict[str, bytes]:
    """The files of a dvclive folder by relative path, less the timings file."""
    files = {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    assert "metrics.json" in files and TIMINGS_FILE in files
    return {name: content for name, content in files.items() if name != TIMINGS_FILE}


def test_timings_go_to_their_own_file_not_to_the_tracked_metrics(prepared, parts, tmp_path):
    summary, _ = fit(prepared, parts, tmp_path, max_epochs=2)
    logged = json.loads((tmp_path / "live/metrics.json").read_text())
    timings = json.loads((tmp_path / "live" / TIMINGS_FILE).read_text())
    assert set(timings) == set(TIMINGS) and not set(TIMINGS) & set(logged)
    assert timings == {name: summary[name] for name in TIMINGS}  # the summary returned still holds them
    assert timings["train_seconds"] > 0 and timings["ratings_per_second"] > 0
    assert {"best_epoch", "best_val_mse", "epochs"} <= set(logged)


def test_refit_trains_a_new_model_on_train_and_val_for_the_chosen_number_of_epochs(prepared, parts, tmp_path):
    summary, checkpoint = fit(prepared, parts, tmp_path / "refit", refit=True, max_epochs=6)
    plain_summary, plain_checkpoint = fit(prepared, parts, tmp_path / "plain", max_epochs=6)
    # The first fit is the same; it only chooses how many epochs the refit trains.
    assert summary["best_epoch"] == plain_summary["best_epoch"] and "refit_epochs" not in plain_summary
    assert summary["refit_epochs"] == summary["best_epoch"] + 1
    assert torch.load(checkpoint, weights_only=True)["epochs"] == summary["refit_epochs"]
    assert torch.load(plain_checkpoint, weights_only=True)["epochs"] == plain_summary["best_epoch"] + 1
    model = load_model(checkpoint)
    assert model.shape.n_train_ratings == parts["train"].height + parts["val"].height
    assert model.user_seen[torch.from_numpy(parts["val"]["userIdMapped"].to_numpy().astype(np.int64))].all()
    assert checkpoint.read_bytes() != plain_checkpoint.read_bytes()


def test_min_epochs_holds_back_early_stopping(prepared, parts, tmp_path):
    # A learning rate this high makes val loss worse at once; patience 1 would stop at epoch 2.
    summary, _ = fit(
        prepared, parts, tmp_path, settings={"learning_rate": 1.0}, patience=1, min_epochs=6, max_epochs=10
    )
    assert summary["epochs"] >= 6


def epochs_until_stopped(val_rmses: list[float], patience: int, min_improvement: float) -> int | None:
    """The number of epochs after which BestEpoch signals a stop on this val RMSE curve (None: never)."""
    best = BestEpoch(patience, min_improvement)
    for epoch, val_rmse in enumerate(val_rmses, start=1):
        best.update(epoch - 1, float(torch.tensor(val_rmse**2)), torch.nn.Linear(1, 1))
        if best.stop:
            return epoch
    return None


def test_the_best_epoch_keeps_its_own_weights_not_the_last_ones():
    best, module = BestEpoch(patience=5, min_improvement=0.0), torch.nn.Linear(1, 1)
    for epoch, (val_loss, weight) in enumerate([(1.0, 1.0), (0.5, 2.0), (0.7, 3.0), (0.5, 4.0)]):
        with torch.no_grad():
            module.weight.fill_(weight)
        best.update(epoch, val_loss, module)
    # Epoch 1 is the best (a later tie does not replace it), with the weights it had then.
    assert (best.epoch, best.val_loss) == (1, 0.5) and float(best.state["weight"]) == 2.0


def test_early_stop_counts_only_relative_progress_of_the_val_rmse():
    creeping = [1.0, 0.9, 0.8995, 0.899, 0.8985, 0.898]  # 0.06 % an epoch after the second
    assert epochs_until_stopped(creeping, patience=3, min_improvement=0.001) == 5
    assert epochs_until_stopped(creeping, patience=3, min_improvement=0.0) is None
    # Each epoch must earn its keep: small steps do not add up to progress.
    assert epochs_until_stopped([1.0, 0.9995, 0.999, 0.9985, 0.998], patience=3, min_improvement=0.001) == 4
    # A worse epoch is no progress, and the best stays the reference.
    assert epochs_until_stopped([1.0, 1.1, 0.9995, 0.998], patience=3, min_improvement=0.001) is None
    assert epochs_until_stopped([1.0, 1.1, 1.2], patience=2, min_improvement=0.0) == 3
    # The same relative curve at another error level stops at the same epoch.
    assert epochs_until_stopped([0.5 * rmse for rmse in creeping], patience=3, min_improvement=0.001) == 5


def test_global_mean_learns_the_training_mean(prepared, parts, tmp_path):
    _, checkpoint = fit(prepared, parts, tmp_path, model="global_mean", max_epochs=20, patience=20)
    with torch.no_grad():
        learned = float(load_model(checkpoint)(torch.tensor([0]), torch.tensor([0])))
    # From 2.75 to the mean; the best-val checkpoint sits between the train and val means
    # (about 1,000 ratings each, so those differ by a few hundredths).
    assert learned == pytest.approx(parts["train"]["rating"].mean(), abs=0.05)


@pytest.mark.parametrize("name", ["biases", "biased_mf", "svdpp", "genre_mlp", "timesvd", "autorec"])
def test_every_model_beats_the_mean_baseline_on_test(name, prepared, parts, tmp_path):
    _, checkpoint = fit(prepared, parts, tmp_path, model=name, settings={"embedding_dim": 16}, max_epochs=8)
    actual = parts["test"]["rating"].to_numpy()
    model_rmse = error_metrics(predicted(checkpoint, parts["test"]), actual)["rmse"]
    mean_rmse = error_metrics(np.full_like(actual, parts["train"]["rating"].mean()), actual)["rmse"]
    assert model_rmse < 0.95 * mean_rmse, (name, model_rmse, mean_rmse)


@pytest.mark.parametrize("name", ["biased_mf", "svdpp", "genre_mlp", "bpr", "timesvd", "autorec"])
def test_unseen_users_and_movies_get_the_bias_only_prediction(name):
    # User 2 and movie 2 have no training ratings.
    data = training_data(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]), torch.eye(3))
    model = new_model(name, data, n_users=3, n_movies=3, embedding_dim=4).eval()  # eval: no dropout
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(-1, 1)
        users, movies = torch.tensor([2, 0, 2, 1]), torch.tensor([0, 2, 2, 1])
        bias, interaction = model.score(users, movies)
        known = torch.tensor([0.0, 0.0, 0.0, 1.0])
        expected = RATING_MIN + (RATING_MAX - RATING_MIN) * torch.sigmoid(bias + known * interaction)
        assert torch.allclose(model(users, movies), expected)
        assert interaction[3] != 0 and torch.isfinite(model(users, movies)).all()


def test_bpr_loss_ranks_each_rated_movie_against_a_random_one():
    data = training_data(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]), torch.zeros(5, 0))
    model = new_model("bpr", data, n_users=2, n_movies=5, embedding_dim=4)
    users, movies, ratings = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]), torch.tensor([4.0, 1.0, 3.0])
    torch.manual_seed(7)
    loss = model.loss(users, movies, ratings, torch.zeros(3))
    torch.manual_seed(7)
    negatives = torch.randint(0, 5, (3,))
    expected = -torch.nn.functional.logsigmoid(
        model.ranking_score(users, movies) - model.ranking_score(users, negatives)
    ).mean()
    assert torch.allclose(loss, expected)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    assert float(model.loss(users, movies, ratings, torch.zeros(3)).detach()) == pytest.approx(
        np.log(2)
    )  # every score ties


def test_bpr_ranks_better_than_popularity(prepared, parts, tmp_path):
    _, checkpoint = fit(prepared, parts, tmp_path, model="bpr", settings={"embedding_dim": 16}, max_epochs=12)
    _, users, movies = prepared
    trained = trained_model(load_model(checkpoint), users, movies, parts["train"])
    metrics, _ = ranking(trained, parts["test"], parts["train"], project_params("evaluate", ranking_k=5))
    assert metrics["ranker/ndcg@5"] > 1.2 * metrics["popularity/ndcg@5"], metrics


def test_svdpp_implicit_term_sums_the_factors_of_each_users_training_movies():
    data = training_data(torch.tensor([1, 0, 1, 1]), torch.tensor([2, 0, 0, 3]), torch.zeros(4, 0))
    model = new_model("svdpp", data, n_users=3, n_movies=4, embedding_dim=3)
    factors = model.implicit_factors.weight.detach()
    implicit = model.implicit(torch.tensor([1, 0, 1, 2])).detach()
    assert torch.allclose(implicit[0], (factors[2] + factors[0] + factors[3]) / 3**0.5)
    assert torch.allclose(implicit[1], factors[0]) and torch.equal(implicit[2], implicit[0])
    assert torch.equal(implicit[3], torch.zeros(3))  # user 2 rated nothing


def test_timesvd_gives_each_movie_a_bias_per_time_bin_and_each_user_a_drifting_bias():
    # User 0 rates on days 100, 110 and 140 (mean 116.7); user 1 on day 180, the last training day.
    data = TrainingData(
        torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 0, 1]), torch.full((4,), 4.0),
        torch.tensor([100.0, 110.0, 140.0, 180.0]), torch.zeros(2, 0),
    )  # fmt: skip
    model = new_model("timesvd", data, n_users=2, n_movies=2, embedding_dim=2, time_bins=4)
    with torch.no_grad():
        model.movie_bin_bias.weight[:, 0] = torch.arange(8.0)  # movie m, bin b: 4 m + b
        model.user_drift.weight[:, 0] = torch.tensor([0.5, 0.0])
    users, movies = torch.tensor([0, 0, 0, 1]), torch.tensor([1, 1, 1, 0])
    days = torch.tensor([90.0, 125.0, 500.0, 180.0])  # before the first day, bin 1, after the last day
    apart = days[:3] - 350 / 3
    drift = 0.5 * apart.sign() * apart.abs() ** 0.4
    expected = torch.cat([torch.tensor([4.0, 5.0, 7.0]) + drift, torch.tensor([3.0])])
    assert torch.allclose(model.time_bias(users, movies, days), expected)
    # Without a day (serving), a rating is predicted as of the user's last training day.
    assert torch.equal(model(users, movies), model(users, movies, torch.tensor([140.0, 140.0, 140.0, 180.0])))
    assert model(users[:1], movies[:1], days[:1]) != model(users[:1], movies[:1], days[1:2])


def test_autorec_encodes_each_movies_training_ratings_and_leaves_a_training_rating_out_of_its_own_input():
    ratings = torch.tensor([5.0, 1.0, 4.0, 2.0])
    data = TrainingData(
        torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 1, 0]), ratings, torch.zeros(4), torch.zeros(3, 0)
    )
    model = new_model("autorec", data, n_users=3, n_movies=3, train_mean=3.0, hidden_dim=3)
    encoder = model.encoder.weight.detach()
    with torch.no_grad():
        code = model.encoded(torch.tensor([1, 0, 2, 1]))
    movie_1 = 2 * encoder[0] - 2 * encoder[1] + 1 * encoder[2] + model.code_bias
    assert torch.allclose(code[0], movie_1) and torch.equal(code[3], code[0])
    assert torch.allclose(code[1], -1 * encoder[0] + model.code_bias)
    assert torch.equal(code[2], model.code_bias.detach())  # movie 2 has no training rating
    # In training, user 1's rating of movie 1 is predicted from the others' ratings of it (users 0 and 2).
    model.train()
    with torch.no_grad():
        loss = model.loss(torch.tensor([1]), torch.tensor([1]), torch.tensor([1.0]), torch.zeros(1))
        code_without = torch.sigmoid(2 * encoder[0] + 1 * encoder[2] + model.code_bias)
        logit = model.global_logit + model.user_bias.weight[1] + model.decoder.weight[1] @ code_without
        assert torch.allclose(loss, (rating_of_logit(logit) - 1.0) ** 2)
    # Out of training every movie's code is computed once and kept, until training changes the weights.
    model.eval()
    movies = torch.tensor([2, 1, 1, 0])
    with torch.no_grad():
        assert torch.allclose(model.codes(movies), torch.sigmoid(model.encoded(movies)))
        assert model.kept_codes.shape == (3, 3)
    model.train()
    assert model.kept_codes is None


@pytest.mark.parametrize("name", ["timesvd", "autorec"])
def test_the_new_models_checkpoints_give_back_the_predictions_they_were_chosen_on(name, prepared, parts, tmp_path):
    summary, _ = fit(prepared, parts, tmp_path, model=name, max_epochs=4)
    # The buffers (each movie's ratings, the users' days) travel in the checkpoint with the weights.
    val_mse = error_metrics(predicted(tmp_path / "model.ckpt", parts["val"]), parts["val"]["rating"].to_numpy())["mse"]
    assert val_mse == pytest.approx(summary["best_val_mse"], rel=1e-5)


def test_error_metrics_on_known_values():
    metrics = error_metrics(np.array([3.0, 4.0, 5.0]), np.array([4.0, 4.0, 3.0]))
    assert metrics == pytest.approx({"mse": 5 / 3, "rmse": (5 / 3) ** 0.5, "mae": 1.0})


def test_rating_histogram_gives_the_share_of_ratings_per_half_star():
    rows = rating_histogram(np.array([0.5, 2.6, 4.8, 5.3]), np.array([1.0, 1.0, 4.0, 5.0]))
    assert [row["rating"] for row in rows[:10]] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    shares = {(row["series"], row["rating"]): row["share"] for row in rows}
    assert len(rows) == 20 and shares[("actual", 1.0)] == 0.5 and shares[("actual", 4.0)] == 0.25
    # Predictions go to the nearest half star, within the scale: 2.6 -> 2.5, 4.8 and 5.3 -> 5.0.
    assert shares[("predicted", 2.5)] == 0.25 and shares[("predicted", 5.0)] == 0.5
    for series in ("actual", "predicted"):
        assert sum(share for (name, _), share in shares.items() if name == series) == pytest.approx(1)


def test_evaluate_writes_test_and_baseline_metrics_and_the_histogram(prepared, parts, tmp_path):
    _, checkpoint = fit(prepared, parts, tmp_path, max_epochs=2)
    params = project_params("evaluate")
    _, users, movies = prepared
    data = RatingsDataModule(params.batch_size, train=parts["train"], predict=parts["test"], users=users, movies=movies)
    metrics = evaluate(checkpoint, data, params, tmp_path / "eval")
    written = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert written["test"]["rmse"] == pytest.approx(metrics["test/rmse"])
    assert written["test"]["rows"] == parts["test"].height
    seen_users, seen_movies = parts["train"]["userIdMapped"].implode(), parts["train"]["movieIdMapped"].implode()
    cold = parts["test"].filter(~pl.col("userIdMapped").is_in(seen_users) | ~pl.col("movieIdMapped").is_in(seen_movies))
    assert written["test"]["cold_start_rows"] == cold.height
    baseline_error = parts["test"]["rating"].to_numpy() - parts["train"]["rating"].mean()
    assert written["baseline"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(baseline_error**2))), rel=1e-6)
    assert set(written["test"]) == {"rmse", "mae", "ndcg@10", "rows", "cold_start_rows"}  # MSE is RMSE squared: none
    evaluate(checkpoint, data, params, tmp_path / "grouped", group="ensemble")
    grouped = json.loads((tmp_path / "grouped/metrics.json").read_text())
    assert list(grouped) == ["ensemble"] and grouped["ensemble"]["test"] == written["test"]
    histogram = json.loads((tmp_path / "eval/plots/custom/rating_histogram.json").read_text())
    assert len(histogram) == 20 and sum(row["share"] for row in histogram) == pytest.approx(2)
    assert "noise_floor" not in written  # a real data set has none
    evaluate(checkpoint, data, params, tmp_path / "eval2", noise_floor_rmse=0.5)
    assert json.loads((tmp_path / "eval2/metrics.json").read_text())["noise_floor"] == {"rmse": 0.5}


def test_top_k_quality_on_a_worked_example():
    top = torch.tensor([[1, 2, 3], [4, 5, 6]])
    filled = torch.tensor([[True, True, True], [True, True, False]])  # user 1 had only two movies left
    liked = pl.DataFrame({"row": [0, 0, 1], "movieIdMapped": [2, 9, 6]})
    precision, recall, ndcg = top_k_quality(top, filled, liked, n_movies=10, k=3)
    assert precision.tolist() == pytest.approx([1 / 3, 0])
    assert recall.tolist() == pytest.approx([1 / 2, 0])
    # One hit at rank 2 out of two liked movies: (1 / log2 3) / (1 + 1 / log2 3).
    assert ndcg.tolist() == pytest.approx([(1 / np.log2(3)) / (1 + 1 / np.log2(3)), 0])


def test_ranking_matches_a_brute_force_top_k_for_the_model_and_popularity(prepared, parts, tmp_path):
    _, checkpoint = fit(prepared, parts, tmp_path, max_epochs=2)
    _, users, movies = prepared
    params = project_params("evaluate", ranking_k=5, ranking_relevant_rating=4.0, ranking_max_users=None)
    model = load_model(checkpoint)
    train_part, test_part = parts["train"], parts["test"]
    # The ranker a copy of the rating model: the model's own ranking (test/ndcg@5) is computed apart from it.
    trained = trained_model(model, users, movies, train_part, read_ranker=lambda: load_model(checkpoint))
    metrics, by_activity = ranking(trained, test_part, train_part, params)

    liked = test_part.filter(pl.col("rating") >= 4)
    ranked_users = sorted(set(liked["userIdMapped"]))
    counts = np.bincount(train_part["movieIdMapped"].to_numpy(), minlength=movies.height)
    expected = {"test": [], "popularity": []}
    for user in ranked_users:
        rated = set(train_part.filter(pl.col("userIdMapped") == user)["movieIdMapped"])
        relevant = set(liked.filter(pl.col("userIdMapped") == user)["movieIdMapped"])
        candidates = [movie for movie in range(movies.height) if movie not in rated]
        with torch.inference_mode():
            predicted = model(torch.full((len(candidates),), user), torch.tensor(candidates)).numpy()
        for group, score in (("test", predicted), ("popularity", counts[candidates].astype(float))):
            # Ties (popularity) go to the lower movie index, as a stable descending sort gives.
            top = [candidates[i] for i in np.argsort(-score, kind="stable")[:5]]
            gains = [1 / np.log2(rank + 2) for rank, movie in enumerate(top) if movie in relevant]
            ideal = sum(1 / np.log2(rank + 2) for rank in range(min(5, len(relevant))))
            expected[group].append(sum(gains) / ideal)
    assert metrics["ranking/users"] == len(ranked_users)
    assert metrics["ranker/ndcg@5"] == pytest.approx(np.mean(expected["test"]), rel=1e-6)
    assert metrics["test/ndcg@5"] == pytest.approx(np.mean(expected["test"]), rel=1e-6)
    assert metrics["popularity/ndcg@5"] == pytest.approx(np.mean(expected["popularity"]), rel=1e-6)
    assert 0 < metrics["ranker/coverage@5"] <= 1 and 0 <= metrics["ranker/precision@5"] <= 1
    assert sum(row["users"] for row in by_activity if row["series"] == "model") == len(ranked_users)


def test_ranking_draws_at_most_ranking_max_users_the_same_way_each_time(prepared, parts, tmp_path):
    _, checkpoint = fit(prepared, parts, tmp_path, max_epochs=1)
    _, users, movies = prepared
    trained = trained_model(load_model(checkpoint), users, movies, parts["train"])
    params = project_params("evaluate", ranking_max_users=17)
    first, _ = ranking(trained, parts["test"], parts["train"], params)
    second, _ = ranking(trained, parts["test"], parts["train"], params)
    assert first["ranking/users"] == 17 and first == second


# --- the accelerator's path (dense tables, one fused Adam, the L2 penalty in the loss), on the CPU ---


def gradients_with_the_penalty(model, sparse: bool, users, movies, ratings, weight_decay) -> dict[str, torch.Tensor]:
    """Each parameter's full gradient with its tables `sparse` or dense: for sparse tables, the MSE's plus the
    penalty RowAdam adds (optim.py); for dense ones, of the MSE plus the loss term training adds. A table
    the model gives its own penalty (svdpp's implicit factors) has it."""
    use_sparse_tables(model, sparse)
    table_decays = model.table_weight_decays()
    _, penalty = table_optimizers(model, 0.01, table_decays)
    decay_of = {id(table.weight): decay for table, decay in table_decays.items()}
    model.train()
    model.zero_grad()
    loss = torch.nn.functional.mse_loss(model(users, movies), ratings)
    (loss + penalty()).backward()
    found = {}
    for name, parameter in model.named_parameters():
        grad = parameter.grad
        if grad is not None and grad.is_sparse:
            lookups = grad._indices()[0]  # one entry per lookup, as RowAdam counts them
            counts = torch.bincount(lookups, minlength=parameter.shape[0]).to(parameter.dtype)
            share = 2 * decay_of.get(id(parameter), weight_decay) * counts / len(lookups)
            grad = grad.to_dense() + share.view(-1, *[1] * (parameter.dim() - 1)) * parameter.detach()
        found[name] = torch.zeros_like(parameter) if grad is None else grad
    return found


@pytest.mark.parametrize("name", ["biases", "biased_mf", "svdpp", "genre_mlp", "bpr", "timesvd", "autorec"])
def test_the_dense_path_has_the_same_loss_gradient_as_rowadams(name, prepared, parts):
    data = RatingsDataModule(256, train=parts["train"], users=prepared[1], movies=prepared[2])
    training = data.training_data()
    models = {}
    for sparse in (True, False):
        torch.manual_seed(0)
        own_penalty = {"implicit_weight_decay": 2.0} if name == "svdpp" else {}
        models[sparse] = new_model(
            name, training, data.n_users, data.n_movies, embedding_dim=8, weight_decay=0.3, dropout=0.0, **own_penalty
        )
    users, movies = training.users[:500], training.movies[:500]
    ratings = torch.tensor(parts["train"]["rating"].to_numpy()[:500])
    sparse, dense = (
        gradients_with_the_penalty(models[flag], flag, users, movies, ratings, weight_decay=0.3)
        for flag in (True, False)
    )
    assert sparse.keys() == dense.keys()
    for key in sparse:
        assert torch.allclose(sparse[key], dense[key], atol=1e-6), key
    tables = [m for m in models[False].modules() if isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag)]
    assert tables and not any(table.sparse for table in tables)
    optimizers, _ = table_optimizers(models[False], 0.01, models[False].table_weight_decays())
    assert [type(o).__name__ for o in optimizers] == ["Adam"] and optimizers[0].defaults["fused"] is True
    optimizers, _ = table_optimizers(models[True], 0.01, models[True].table_weight_decays())
    assert type(optimizers[0]).__name__ == "RowAdam"
    # One RowAdam group per penalty: svdpp's implicit factors in their own.
    assert [group["weight_decay"] for group in optimizers[0].param_groups] == [0.3, 2.0] if name == "svdpp" else [0.3]


def test_training_on_the_dense_path_learns_and_its_checkpoint_loads(prepared, parts, tmp_path):
    summary, checkpoint = fit(prepared, parts, tmp_path, sparse_tables=False, max_epochs=6)
    actual = parts["val"]["rating"].to_numpy()
    model_mse = error_metrics(predicted(checkpoint, parts["val"]), actual)["mse"]
    mean_mse = error_metrics(np.full_like(actual, parts["train"]["rating"].mean()), actual)["mse"]
    assert model_mse == pytest.approx(summary["best_val_mse"], rel=1e-5) and model_mse < 0.9 * mean_mse


def test_train_writes_nothing_when_told_not_to_at_the_end(prepared, parts, tmp_path):
    # The train stage's check that params.yaml did not change under it (another `dvc exp run`).
    def refuse() -> None:
        raise ParamsError("params.yaml changed while the stage ran")

    params = project_params("train", max_epochs=1, biased_mf={"batch_size": 256, "learning_rate": 0.01})
    _, users, movies = prepared
    with pytest.raises(ParamsError, match="changed while the stage ran"):
        train(
            params,
            parts["train"],
            parts["val"],
            users,
            movies,
            tmp_path / "m.ckpt",
            tmp_path / "live",
            before_writing=refuse,
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_unchanged_params_notices_a_rewrite(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: {}\n")
    check = unchanged_params(path)
    check()
    path.write_text("train: {model: svdpp}\n")
    with pytest.raises(ParamsError, match=r"params\.yaml changed while the stage ran .* `dvc exp run --queue`"):
        check()


def test_an_svdpp_checkpoint_from_before_its_own_implicit_penalty_loads_with_the_model_penalty(tmp_path):
    model = new_model("svdpp", tiny_data(3, 4), 3, 4, embedding_dim=4, weight_decay=0.25, implicit_weight_decay=1.0)
    checkpoint = model.checkpoint()
    del checkpoint["hyper_parameters"]["settings"]["implicit_weight_decay"]  # what the train stage saved before
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = load_model(tmp_path / "old.ckpt")
    assert loaded.settings.implicit_weight_decay == 0.25
    decays = loaded.table_weight_decays()
    assert decays[loaded.implicit_factors] == 0.25 and set(decays.values()) == {0.25}
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
