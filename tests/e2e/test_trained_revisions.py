"""`movielens recommend --rev` and `load_trained(rev=...)` with the real dvc: an experiment, a branch, a revision
that does not exist and one whose outputs are in no cache."""

from __future__ import annotations

import shutil

import polars as pl
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
