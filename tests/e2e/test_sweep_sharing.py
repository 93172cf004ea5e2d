"""A sweep over runners, as .github/workflows/dvc-sweep.yml runs it, with a bare git repository as `origin`
and a local folder as the team's DVC remote: two clones each run one combination and push, a third pulls."""

from __future__ import annotations

import json

from harness import GIT_IDENTITY, dvc, exp_runs, git, python

from movielens_pipeline.models import load_model


def clone_of(origin, target):
    git(target.parent, "clone", "-q", str(origin), target.name)
    for key, value in GIT_IDENTITY.items():
        git(target, "config", key, value)
    return target


def test_runners_share_experiments_through_git_and_the_dvc_remote(project_repo, tmp_path):
    # The team remote is .dvc/config's default, a folder beside each clone: tmp_path/movielens-pipeline-dvc-remote.
    dvc(project_repo, "push")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(project_repo), str(origin))

    planned = python(project_repo, "-m", "movielens_pipeline.sweep", "train.biased_mf.embedding_dim=8,16")
    assert planned.returncode == 0, planned.stderr
    combinations = json.loads(planned.stdout)["include"]
    assert [c["name"] for c in combinations] == ["embedding_dim-8", "embedding_dim-16"]

    for runner, combination in zip(("runner-a", "runner-b"), combinations, strict=True):
        clone = clone_of(origin, tmp_path / runner)
        # The workflow's steps: run with only the inputs it needs pulled, then share outputs and experiment.
        dvc(
            clone,
            "exp",
            "run",
            *combination["set_args"].split(),
            "--name",
            combination["name"],
            "--pull",
            "--allow-missing",
        )
        dvc(clone, "push")
        dvc(clone, "exp", "push", "origin", combination["name"])

    laptop = clone_of(origin, tmp_path / "laptop")
    dvc(laptop, "exp", "pull", "origin", "--all-commits")
    runs = {run["name"]: run for run in exp_runs(laptop, experiments_only=True)}
    assert set(runs) == {"embedding_dim-8", "embedding_dim-16"}
    for name, run in runs.items():
        assert run["data"]["params"]["params.yaml"]["data"]["train"]["biased_mf"]["embedding_dim"] == int(
            name.split("-")[1]
        )
        assert "rmse" in run["data"]["metrics"]["eval/metrics.json"]["data"]["test"]

    # `dvc exp pull` brings each experiment's own outputs; the data they share with the baseline comes with
    # `dvc pull`, which `dvc exp apply` needs in the cache to check the experiment out whole.
    dvc(laptop, "pull")
    dvc(laptop, "exp", "apply", "embedding_dim-8")
    dvc(laptop, "pull")
    assert load_model(laptop / "models/model.ckpt").settings.embedding_dim == 8
    assert "Running stage" not in dvc(laptop, "repro").stdout  # the applied run is complete and up to date
