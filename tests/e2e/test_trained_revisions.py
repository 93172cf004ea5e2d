"""`movielens recommend --rev` and `load_trained(rev=...)` with the real dvc: an experiment, a branch, a revision
that does not exist and one whose outputs are in no cache."""

from __future__ import annotations

import shutil

import polars as pl
import pytest
from harness import dvc, git, python

from movielens_pipeline.trained import load_trained

PAIRS = pl.DataFrame({"userId": [1, 2, 3, 4], "movieId": [1, 2, 3, 4]})


def test_any_revision_answers_without_a_checkout(project_repo):
    repo = project_repo
    baseline = load_trained(repo).predict(PAIRS)
    git(repo, "branch", "before-dim-8")
    dvc(repo, "exp", "run", "-S", "train.biased_mf.embedding_dim=8", "--name", "dim-8")
    workspace = load_trained(repo).predict(PAIRS)
    assert not workspace.equals(baseline)
    status = git(repo, "status", "--porcelain")

    assert load_trained(repo, rev="before-dim-8").predict(PAIRS).equals(baseline)
    assert load_trained(repo, rev="dim-8").predict(PAIRS).equals(workspace)
    assert git(repo, "status", "--porcelain") == status  # nothing was checked out

    # The command, as a user types it, in the project folder.
    result = python(repo, "-m", "movielens_pipeline.cli", "recommend", "1", "-n", "3", "--rev", "before-dim-8")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "userId,rank,movieId,title,genres,predicted_rating" and len(lines) == 4
    expected = load_trained(repo, rev="before-dim-8").recommend([1], n=3)["movieId"].to_list()
    assert [int(line.split(",")[2]) for line in lines[1:]] == expected

    missing = python(repo, "-m", "movielens_pipeline.cli", "recommend", "1", "--rev", "no-such-rev")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "error: no revision 'no-such-rev' in .: not a commit, branch, tag or experiment name"
    )

    # Outputs in no cache and no remote: the error names the file and the revision.
    shutil.rmtree(repo / ".dvc" / "cache")
    uncached = python(repo, "-m", "movielens_pipeline.cli", "recommend", "1", "--rev", "before-dim-8")
    assert uncached.returncode == 1 and len(uncached.stderr.strip().splitlines()) == 1
    assert "error: models/model.ckpt at revision 'before-dim-8' is in no DVC cache or remote" in uncached.stderr


def test_recommend_serves_the_ranker_of_the_revision_asked(project_repo):
    """`dvc exp run -S rank.model=...` compares rankers as train.model compares rating models; `movielens recommend
    --rev` answers with that revision's ranker, beside the same rating model's predicted ratings."""
    repo = project_repo
    baseline = load_trained(repo)
    assert baseline.ranker.name == "ease" and baseline.model.name == "biased_mf"
    rating_model = (repo / "models/model.ckpt").read_bytes()
    dvc(repo, "exp", "run", "-S", "rank.model=ials", "--name", "ials-ranker")
    assert (repo / "models/model.ckpt").read_bytes() == rating_model  # the rating model did not retrain
    assert load_trained(repo, rev="ials-ranker").ranker.name == "ials"
    assert load_trained(repo, rev="HEAD").ranker.name == "ease"

    train = pl.read_parquet(repo / "data/split/train.parquet")
    rated = set(train.filter(pl.col("userId") == 42)["movieId"])
    answers = {}
    for rev in ("HEAD", "ials-ranker"):
        result = python(repo, "-m", "movielens_pipeline.cli", "recommend", "42", "--rev", rev)
        assert result.returncode == 0, result.stderr
        top = pl.read_csv(result.stdout.encode())
        expected = load_trained(repo, rev=rev).recommend([42])
        assert top["movieId"].to_list() == expected["movieId"].to_list() and len(top) == 10
        assert not set(top["movieId"]) & rated
        # The rating beside each pick is the (unchanged) rating model's.
        pairs = top.select("userId", "movieId")
        predicted = baseline.predict(pairs)["predicted_rating"].to_list()
        assert top["predicted_rating"].to_list() == pytest.approx(predicted, rel=1e-6)
        answers[rev] = top["movieId"].to_list()
    assert answers["HEAD"] != answers["ials-ranker"]
