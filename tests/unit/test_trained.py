"""The trained-model API and the `movielens` command on a small model trained here, in a folder laid out as
the pipeline's (the revision option is tested end to end, in e2e/test_trained_revisions.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from fakes import low_rank_rows, ratings_frame
from harness import PROJECT, model_params, project_params

from movielens_pipeline import cli
from movielens_pipeline.data import DataShape, rating_tensors
from movielens_pipeline.errors import PipelineError
from movielens_pipeline.models import REGISTRY, load_model
from movielens_pipeline.preprocess import index_ratings
from movielens_pipeline.schema import MOVIE_INDEX, USER_INDEX
from movielens_pipeline.split import split_ratings
from movielens_pipeline.trained import (
    ARTIFACT,
    CHECKPOINT,
    HELD_OUT,
    MOVIES,
    RANKER,
    RANKER_ARTIFACT,
    TRAIN,
    USERS,
    UnknownIdError,
    load_trained,
    parse_artifact,
    predicted_ratings,
    trained_model,
)
from movielens_pipeline.training import train


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder with the files the pipeline would leave: prepared users and movies, the split, a checkpoint.

    User and movie ids are not their indices (ids start at 1, movie ids step by 10), so a mapping mistake shows.
    """
    root = tmp_path_factory.mktemp("trained")
    rows = low_rank_rows(n_users=60, n_movies=40, per_user=25)
    rows = [(user, movie * 10, rating, timestamp) for user, movie, rating, timestamp in rows]
    ratings, users, movies = index_ratings(ratings_frame(rows))
    movies = movies.with_columns(
        title=pl.format("Movie {}", "movieId"), genres=pl.col("movieId").map_elements(lambda m: [f"g{m % 3}"])
    )
    parts = split_ratings(ratings, project_params("split"))
    held_out = dict(zip(HELD_OUT, (parts["val"], parts["test"]), strict=True))
    for path, table in ((USERS, users), (MOVIES, movies), (TRAIN, parts["train"]), *held_out.items()):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        table.write_parquet(root / path)
    params = model_params("biased_mf", max_epochs=4, biased_mf={"batch_size": 128, "learning_rate": 0.02})
    (root / CHECKPOINT).parent.mkdir(parents=True)
    train(params, parts["train"], parts["val"], users, movies, root / CHECKPOINT, root / "live")
    ranker_params = project_params("rank", model="ials", ials={"embedding_dim": 8, "sweeps": 3})
    ranking_params = project_params("evaluate")
    train(
        ranker_params,
        parts["train"],
        parts["val"],
        users,
        movies,
        root / RANKER,
        root / "rank",
        ranking_params=ranking_params,
    )
    return root


def test_the_paths_it_reads_are_what_dvc_yaml_makes():
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    outs = {
        next(iter(out)) if isinstance(out, dict) else out for stage in stages.values() for out in stage.get("outs", [])
    }
    for path in (CHECKPOINT, RANKER, USERS, MOVIES, TRAIN, *HELD_OUT):
        assert any(path == out or path.startswith(out + "/") for out in outs), path


@pytest.mark.parametrize(("name", "path"), [(ARTIFACT, CHECKPOINT), (RANKER_ARTIFACT, RANKER)])
def test_each_model_artifact_is_its_checkpoint_with_a_type_a_description_and_labels(name, path):
    artifact = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["artifacts"][name]
    assert artifact["path"] == path and artifact["type"] == "model"
    assert artifact["desc"] and artifact["labels"]


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("rating-model", ("rating-model", None, None)),
        ("rating-model@v1.2.0", ("rating-model", "v1.2.0", None)),
        ("rating-model#prod", ("rating-model", None, "prod")),
    ],
)
def test_an_artifact_is_a_name_with_a_version_or_a_stage(spec, parsed):
    assert parse_artifact(spec) == parsed


@pytest.mark.parametrize("spec", ["", "rating-model@", "rating-model#", "@v1.0.0", "rating-model#prod@v1.0.0"])
def test_a_malformed_artifact_is_refused_by_name(spec):
    with pytest.raises(PipelineError, match="expected NAME, NAME@VERSION or NAME#STAGE"):
        parse_artifact(spec)


def test_a_revision_and_an_artifact_together_are_refused(project):
    with pytest.raises(PipelineError, match="not both"):
        load_trained(project, rev="main", artifact=ARTIFACT)


def test_predict_maps_ids_to_the_models_indices_and_keeps_the_order(project):
    trained = load_trained(project)
    split_train = pl.read_parquet(project / TRAIN)
    pairs = split_train.select("userId", "movieId").reverse().head(50)
    predicted = trained.predict(pairs)
    assert predicted.select("userId", "movieId").equals(pairs)
    # The same numbers as the model on the pipeline's own indices with the test ratings' days (the evaluate
    # stage's path): biased_mf ignores days.
    users, movies, _, days = rating_tensors(split_train.reverse().head(50))
    by_index = predicted_ratings(load_model(project / CHECKPOINT), users, movies, days)
    np.testing.assert_array_equal(predicted["predicted_rating"].to_numpy(), by_index)


@pytest.fixture(scope="module")
def timed_project(project, tmp_path_factory):
    """The project with a model that reads the rating's time (`timesvd`, its biases moving with the day)."""
    root = tmp_path_factory.mktemp("timed") / "project"
    shutil.copytree(project, root)
    parts = {part: pl.read_parquet(root / path) for part, path in (("train", TRAIN), ("val", HELD_OUT[0]))}
    params = model_params("timesvd", max_epochs=4, timesvd={"batch_size": 128, "learning_rate": 0.02, "time_bins": 5})
    users, movies = pl.read_parquet(root / USERS), pl.read_parquet(root / MOVIES)
    train(params, parts["train"], parts["val"], users, movies, root / CHECKPOINT, root / "timed-live")
    return root


def test_pairs_with_times_are_predicted_as_of_them_as_the_evaluate_stage_predicts(timed_project):
    trained = load_trained(timed_project)
    test = pl.read_parquet(timed_project / HELD_OUT[1]).head(50)
    predicted = trained.predict(test.select("userId", "movieId", "timestamp"))
    assert predicted.columns == ["userId", "movieId", "timestamp", "predicted_rating"]
    users, movies, _, days = rating_tensors(test)
    by_index = predicted_ratings(load_model(timed_project / CHECKPOINT), users, movies, days)
    np.testing.assert_array_equal(predicted["predicted_rating"].to_numpy(), by_index)
    # Without times, as of each user's last training day: another prediction.
    timeless = trained.predict(test.select("userId", "movieId"))["predicted_rating"].to_numpy()
    assert np.abs(timeless - by_index).max() > 1e-4


def test_unknown_ids_are_refused_by_name_or_get_the_training_mean_with_cold_start(project):
    trained = load_trained(project)
    pairs = pl.DataFrame({"userId": [1, 999, 1], "movieId": [10, 10, 12345]})
    with pytest.raises(UnknownIdError, match=r"user 999 is not in the trained model \(60 users, ids 1-60\)"):
        trained.predict(pairs)
    with pytest.raises(UnknownIdError, match="movie 12345 is not in the trained model"):
        trained.predict(pairs.filter(pl.col("userId") == 1))
    predicted = trained.predict(pairs, cold_start=True)["predicted_rating"].to_list()
    train_mean = pl.read_parquet(project / TRAIN)["rating"].mean()
    assert predicted[1] == pytest.approx(train_mean) and predicted[2] == pytest.approx(train_mean)
    assert predicted[0] != pytest.approx(train_mean)


def test_an_empty_pairs_table_gives_an_empty_result(project):
    empty = pl.DataFrame(schema={"userId": pl.Int64, "movieId": pl.Int64})
    assert load_trained(project).predict(empty).columns == ["userId", "movieId", "predicted_rating"]
    assert load_trained(project).predict(empty).height == 0


def every_rating(project) -> pl.DataFrame:
    """Every rating of the split: train, val and test."""
    return pl.concat([pl.read_parquet(project / path) for path in (TRAIN, *HELD_OUT)])


def test_recommend_ranks_by_the_ranker_every_movie_the_user_did_not_rate(project):
    trained = load_trained(project)
    assert trained.ranker.name == "ials" and trained.model.name == "biased_mf"
    split_train = every_rating(project)
    movies, users = pl.read_parquet(project / MOVIES), pl.read_parquet(project / USERS)
    top = trained.recommend([7, 3], n=5)
    assert top["userId"].to_list() == [7] * 5 + [3] * 5
    assert top["rank"].to_list() == [1, 2, 3, 4, 5] * 2
    ranker = load_model(project / RANKER)
    for user in (7, 3):
        rated = set(split_train.filter(pl.col("userId") == user)["movieId"])
        candidates = movies.filter(~pl.col("movieId").is_in(sorted(rated)))
        user_index = int(users.filter(pl.col("userId") == user)[USER_INDEX][0])
        with torch.inference_mode():
            scores = ranker.ranking_score(
                torch.full((candidates.height,), user_index),
                torch.from_numpy(candidates[MOVIE_INDEX].to_numpy().astype(np.int64)),
            ).numpy()
        best = candidates["movieId"].to_numpy()[np.argsort(-scores, kind="stable")[:5]]
        mine = top.filter(pl.col("userId") == user)
        assert mine["movieId"].to_list() == best.tolist() and not set(mine["movieId"]) & rated
        # What it shows beside each is the rating model's predicted rating.
        pairs = mine.select("userId", "movieId")
        np.testing.assert_array_equal(mine["predicted_rating"], trained.predict(pairs)["predicted_rating"])
        titles = dict(zip(movies["movieId"], movies["title"], strict=True))
        assert mine["title"].to_list() == [titles[movie] for movie in mine["movieId"]]


def test_recommend_skips_what_the_user_rated_in_val_and_test_and_evaluation_skips_training_only(project):
    trained = load_trained(project)
    held_out = pl.concat([pl.read_parquet(project / path) for path in HELD_OUT])
    user = int(held_out["userId"][0])
    theirs = set(held_out.filter(pl.col("userId") == user)["movieId"])
    everything = trained.recommend([user], n=trained.n_movies)
    assert theirs and not theirs & set(everything["movieId"])
    # Evaluation's top lists leave the held-out movies in: they are what it looks for.
    user_index = torch.tensor([int(trained.user_index.indices(np.array([user]), cold_start=False)[0])])
    _, top = trained.top_movies(user_index, trained.n_movies)
    movie_ids = set(trained.movies["movieId"].to_numpy()[top[0].numpy()])
    assert theirs <= movie_ids


def test_movies_whose_predictions_clip_at_five_are_ranked_by_their_unclipped_scores(project):
    # An ALS model (linear output) whose movie biases put several movies above the scale for every user: clipped,
    # they would all tie at 5; the recommendations order them by the score before clipping, highest first.
    users, movies = pl.read_parquet(project / USERS), pl.read_parquet(project / MOVIES)
    split_train = pl.read_parquet(project / TRAIN)
    shape = DataShape(users.height, movies.height, 0, split_train.height, 3.5)
    settings = project_params("train", model="als", als={"embedding_dim": 2}).settings
    model = REGISTRY["als"](shape, settings).eval()
    model.user_seen[:], model.movie_seen[:] = True, True
    model.movie_bias[:] = torch.linspace(-1.0, 4.0, movies.height)  # the last movies reach 7.5 before clipping
    user = int(users.filter(pl.col(USER_INDEX) == 0)["userId"][0])
    rated = set(split_train.filter(pl.col(USER_INDEX) == 0)[MOVIE_INDEX])
    unrated = [movie for movie in reversed(range(movies.height)) if movie not in rated]
    top = trained_model(model, users, movies, split_train).recommend([user], n=5)
    assert top["movieId"].to_list() == [int(movies["movieId"][movie]) for movie in unrated[:5]]
    assert top["predicted_rating"].to_list() == [5.0] * 5  # what it shows is still the predicted rating


def test_a_missing_ensemble_says_which_pipeline_makes_it(project):
    with pytest.raises(PipelineError, match=r"ensemble/model\.ckpt not found: run `dvc repro ensemble/dvc\.yaml`"):
        load_trained(project, ensemble=True)


def test_a_user_who_rated_almost_everything_gets_only_what_is_left(project):
    users, movies = pl.read_parquet(project / USERS), pl.read_parquet(project / MOVIES)
    train = pl.read_parquet(project / TRAIN).select("userIdMapped", "movieIdMapped")
    # User index 0 has rated all but movie indices 0 and 1.
    rated = range(2, movies.height)
    almost_all = pl.DataFrame({"userIdMapped": [0] * len(rated), "movieIdMapped": rated}, schema=train.schema)
    train = pl.concat([almost_all, train.filter(pl.col("userIdMapped") != 0)])
    trained = trained_model(load_trained(project).model, users, movies, train)
    user_id = users.filter(pl.col("userIdMapped") == 0)["userId"][0]
    top = trained.recommend([user_id], n=10)
    assert top["rank"].to_list() == [1, 2]
    assert sorted(top["movieId"]) == sorted(movies.filter(pl.col("movieIdMapped") < 2)["movieId"])


def test_predict_reads_no_training_rating_and_recommend_only_the_asked_users(project, tmp_path):
    for path in (CHECKPOINT, RANKER, USERS, MOVIES, *HELD_OUT):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes((project / path).read_bytes())
    train = pl.read_parquet(project / TRAIN)
    user = train["userId"][0]
    # Every other user's ratings name a movie index the movies table does not have: reading one of them fails.
    mine = pl.col("userId") == user
    broken = train.with_columns(movieIdMapped=pl.when(mine).then("movieIdMapped").otherwise(10**6).cast(pl.UInt32))
    broken.write_parquet(tmp_path / TRAIN)
    trained, expected = load_trained(tmp_path), load_trained(project)
    pairs = train.select("userId", "movieId").head(20)
    assert trained.predict(pairs).equals(expected.predict(pairs))
    assert trained.recommend([user], n=5).equals(expected.recommend([user], n=5))
    first_bad_row = int(train.with_row_index("row", offset=1).filter(~mine)["row"][0])
    with pytest.raises(PipelineError, match=rf"{TRAIN}: row {first_bad_row}: movieIdMapped is 1000000 \("):
        trained.recommend([train.filter(~mine)["userId"][0]])


def test_recommend_refuses_an_unknown_user_or_offers_popular_movies_with_cold_start(project):
    trained = load_trained(project)
    with pytest.raises(UnknownIdError, match="user 999 is not in the trained model"):
        trained.recommend([999])
    top = trained.recommend([999, 2], n=3, cold_start=True)
    assert top["userId"].to_list() == [999] * 3 + [2] * 3
    assert top.filter(pl.col("userId") == 999)["movieId"].to_list() == most_rated(project, 3)
    train_mean = pl.read_parquet(project / TRAIN)["rating"].mean()
    assert top.filter(pl.col("userId") == 999)["predicted_rating"].to_list() == pytest.approx([train_mean] * 3)


def most_rated(project, n: int) -> list[int]:
    """The n movie ids with the most training ratings, ties by the lower id (ids ascend with the index)."""
    counts = pl.read_parquet(project / TRAIN)["movieId"].value_counts()
    return counts.sort(["count", "movieId"], descending=[True, False])["movieId"].head(n).to_list()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
        print(stop.code, file=__import__("sys").stderr)
    out, err = capsys.readouterr()
    return code, out, err


# Serving must start fast (docs/models.md, "Serving without Lightning"): Lightning's import alone costs seconds
# (torch._dynamo, through lightning_fabric), and dvclive's and DVC's add to it. A command that answers from the
# workspace imports none of them, nor the training modules that do.
NOT_FOR_SERVING = ("pytorch_lightning", "lightning", "lightning_fabric", "dvclive", "dvc", "torch._dynamo")
SERVING_RUN = """
import sys
from movielens_pipeline import cli
cli.main(sys.argv[1:])
heavy = {heavy!r}
heavy += ("movielens_pipeline.training", "movielens_pipeline.ensemble")
loaded = sorted({{m for m in sys.modules for h in heavy if m == h or m.startswith(h + ".")}})
sys.exit(f"imported: {{loaded}}" if loaded else 0)
"""


@pytest.mark.parametrize("command", [["predict", "1:10", "2:20"], ["recommend", "1", "-n", "3"]])
def test_serving_imports_neither_lightning_nor_dvc_nor_training(project, command):
    run = subprocess.run(
        [sys.executable, "-c", SERVING_RUN.format(heavy=NOT_FOR_SERVING), *command, "--repo", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("userId,")


def test_cli_predicts_pairs_from_arguments_and_files(project, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "predict", "--repo", str(project), "1:10", "2:20")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "userId,movieId,predicted_rating" and [line.split(",")[:2] for line in lines[1:]] == [
        ["1", "10"],
        ["2", "20"],
    ]
    (tmp_path / "pairs.csv").write_text("userId,movieId\n3,30\n")
    code, out, err = run_cli(
        capsys,
        "predict",
        "--repo",
        str(project),
        "--pairs",
        str(tmp_path / "pairs.csv"),
        "--out",
        str(tmp_path / "p.parquet"),
    )
    assert code == 0 and pl.read_parquet(tmp_path / "p.parquet")["movieId"].to_list() == [30]
    assert out == "" and err == f"wrote 1 row to {tmp_path / 'p.parquet'}\n"  # where it went, not on stdout
    # A file with times: each pair as of its time; USER:MOVIE pairs beside it, which have none, are refused.
    (tmp_path / "timed.csv").write_text("userId,movieId,timestamp\n3,30,978300760\n")
    code, out, _ = run_cli(capsys, "predict", "--repo", str(project), "--pairs", str(tmp_path / "timed.csv"))
    assert code == 0 and out.splitlines()[0] == "userId,movieId,timestamp,predicted_rating"
    assert out.splitlines()[1].startswith("3,30,978300760,")
    code, _, err = run_cli(capsys, "predict", "--repo", str(project), "1:10", "--pairs", str(tmp_path / "timed.csv"))
    assert code == 1 and "has times and USER:MOVIE pairs have none" in err
    (tmp_path / "empty.csv").write_text("userId,movieId\n")
    code, out, _ = run_cli(capsys, "predict", "--repo", str(project), "--pairs", str(tmp_path / "empty.csv"))
    assert code == 0 and out.strip() == "userId,movieId,predicted_rating"


def test_cli_recommends_with_titles_and_genres(project, capsys, tmp_path):
    (tmp_path / "users.csv").write_text("userId\n4\n")
    code, out, _ = run_cli(
        capsys, "recommend", "--repo", str(project), "5", "--users", str(tmp_path / "users.csv"), "-n", "2"
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "userId,rank,movieId,title,genres,predicted_rating"
    assert [line.split(",")[:2] for line in lines[1:]] == [["5", "1"], ["5", "2"], ["4", "1"], ["4", "2"]]
    movie = lines[1].split(",")[2]
    assert lines[1].split(",")[3:5] == [f"Movie {movie}", f"g{int(movie) % 3}"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["recommend", "999"], "error: user 999 is not in the trained model"),
        (["predict", "1:x"], "error: predict: '1:x' is not a pair of ids USER:MOVIE"),
        (["predict", "1:²"], "error: predict: '1:²' is not a pair of ids USER:MOVIE, e.g. 1:50 (each a whole number"),
        (["predict", "1:99999999999999999999"], "error: predict: '1:99999999999999999999' is not a pair of ids"),
        (["predict", "1"], "error: predict: '1' is not a pair of ids USER:MOVIE, e.g. 1:50"),
        (["recommend", "99999999999999999999"], "error: recommend: user '99999999999999999999': expected a whole"),
        (["recommend", "٣"], "error: recommend: user '٣': expected a whole number from 0 to 9223372036854775807"),
        (["recommend", "--", "-5"], "error: recommend: user '-5': expected a whole number"),
        (["predict"], "error: predict: give USER:MOVIE pairs"),
        (["recommend", "1", "--out", "top.txt"], "error: top.txt: expected a .csv or .parquet file to write"),
        (["predict", "--pairs", "missing.csv"], "error: missing.csv: no such file"),
        (["recommend", "1", "-n", "0"], "error: recommend: n must be at least 1"),
        (["recommend", "1", "--artifact", "rating-model@"], "error: artifact: got 'rating-model@'; expected NAME"),
        (["recommend", "1", "--artifact", "rating-model"], "error: artifact 'rating-model': "),
    ],
)
def test_cli_errors_are_one_line(project, capsys, args, message):
    code, out, err = run_cli(capsys, *args[:1], "--repo", str(project), *args[1:])
    assert code == 1 and out == ""
    assert err.strip().startswith(message) and len(err.strip().splitlines()) == 1


def test_cli_refuses_a_pairs_file_without_the_id_columns(project, capsys, tmp_path):
    (tmp_path / "pairs.csv").write_text("user,movie\n1,10\n")
    code, _, err = run_cli(capsys, "predict", "--repo", str(project), "--pairs", str(tmp_path / "pairs.csv"))
    assert code == 1 and "expected columns userId, movieId; missing userId, movieId" in err


def test_cli_refuses_a_time_that_is_not_whole_seconds_by_row(project, capsys, tmp_path):
    (tmp_path / "pairs.csv").write_text("userId,movieId,timestamp\n1,10,978300760\n2,20,\n")
    code, _, err = run_cli(capsys, "predict", "--repo", str(project), "--pairs", str(tmp_path / "pairs.csv"))
    assert code == 1 and "pairs.csv: row 2: timestamp is empty; expected whole Unix seconds" in err
    pl.DataFrame({"userId": [1], "movieId": [10], "timestamp": [9.783e8 + 0.5]}).write_parquet(tmp_path / "p.parquet")
    code, _, err = run_cli(capsys, "predict", "--repo", str(project), "--pairs", str(tmp_path / "p.parquet"))
    assert code == 1 and "p.parquet: row 1: timestamp is 978300000.5; expected whole Unix seconds" in err


def test_cli_without_a_trained_model_says_what_to_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "recommend", "--repo", str(tmp_path), "1")
    assert code == 1 and "models/model.ckpt not found: run `dvc repro`" in err


def test_cli_cold_start_answers_for_unknown_ids(project, capsys):
    code, out, _ = run_cli(capsys, "recommend", "--repo", str(project), "999", "-n", "2", "--cold-start")
    assert code == 0
    popular = most_rated(project, 2)
    assert [line.split(",")[2] for line in out.strip().splitlines()[1:]] == [str(movie) for movie in popular]
    train_mean = pl.read_parquet(project / TRAIN)["rating"].mean()
    # Beside popularity's picks, the rating a cold start gets from `predict`: the training mean.
    assert [float(line.split(",")[-1]) for line in out.strip().splitlines()[1:]] == pytest.approx([train_mean] * 2)
    code, out, _ = run_cli(capsys, "predict", "--repo", str(project), "999:10", "--cold-start")
    assert code == 0 and float(out.strip().splitlines()[1].split(",")[2]) == pytest.approx(train_mean)
