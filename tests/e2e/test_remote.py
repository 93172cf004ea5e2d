"""dvc push / pull for real: the default local remote folder, and S3 served by moto on 127.0.0.1.

Each pushes the baseline run, clones the git repo afresh (empty DVC cache), pulls, and checks
that `dvc repro` then has nothing to run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from harness import dvc, git, require, tool_env

BUCKET = "movielens-test"
OUTPUTS = ("data/raw/u.data", "data/split/train.parquet", "models/model.ckpt")


def fresh_clone(repo: Path, target: Path) -> Path:
    git(target.parent, "clone", "-q", str(repo), target.name)
    assert not (target / ".dvc/cache").exists() and not (target / "models/model.ckpt").exists()
    return target


def assert_nothing_to_run(repo: Path, env: dict[str, str] | None = None) -> None:
    result = dvc(repo, "repro", env=env)
    assert "Running stage" not in result.stdout, result.stdout
    assert "Data and pipelines are up to date" in result.stdout


def test_default_local_remote_push_then_pull_into_a_fresh_clone(project_repo, tmp_path):
    # .dvc/config's default remote is a folder beside the clone: here tmp_path/movielens-pipeline-dvc-remote.
    dvc(project_repo, "push")
    remote = tmp_path / "movielens-pipeline-dvc-remote"
    assert any(remote.rglob("*")), "nothing pushed"

    clone = fresh_clone(project_repo, tmp_path / "clone")
    dvc(clone, "pull")
    for output in OUTPUTS:
        assert (clone / output).read_bytes() == (project_repo / output).read_bytes(), output
    assert_nothing_to_run(clone)


def test_repro_pull_allow_missing_fetches_only_what_a_changed_stage_needs(project_repo, tmp_path):
    # What CI does on a pull request: no pull up front, run what changed, fetch only its inputs.
    dvc(project_repo, "push")
    clone = fresh_clone(project_repo, tmp_path / "ci")
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["evaluate"]["heavy_user_min_ratings"] += 1  # the evaluate stage's alone (not the rank stage's)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(clone, "repro", "--pull", "--allow-missing")
    ran = sorted(line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage"))
    assert ran == ["check_params", "evaluate"], result.stdout
    assert (clone / "models/model.ckpt").is_file()
    assert not (clone / "data/raw/u.data").exists()  # the download stage was neither run nor pulled
    buckets = json.loads((clone / "eval/plots/custom/rmse_by_user_activity.json").read_text())
    assert buckets[-1]["user_activity"] == f"heavy ({params['evaluate']['heavy_user_min_ratings']}+)"
    dvc(clone, "push")  # the workflow's next step: outputs of skipped stages are missing here, and that is fine


@pytest.fixture
def s3_endpoint() -> str:
    """An S3 API (moto in server mode) on 127.0.0.1 with an empty bucket; returns its URL."""
    require("moto")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, **S3_CREDENTIALS).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def s3_env(repo: Path) -> dict[str, str]:
    """Dummy credentials, and empty AWS config files in place of ~/.aws, so nothing real is ever used."""
    empty = repo.parent / "empty-aws-config"
    empty.touch()
    return tool_env(
        repo,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        NO_PROXY="127.0.0.1",
    )


def use_s3_remote(repo: Path, endpoint: str) -> dict[str, str]:
    """Make an S3 remote the default, as the README tells a team to (credentials from the environment)."""
    dvc(repo, "remote", "add", "--local", "--default", "team", f"s3://{BUCKET}/dvc")
    dvc(repo, "remote", "modify", "--local", "team", "endpointurl", endpoint)
    return s3_env(repo)


def test_s3_remote_push_then_pull_into_a_fresh_clone(project_repo, s3_endpoint, tmp_path):
    import boto3

    env = use_s3_remote(project_repo, s3_endpoint)
    dvc(project_repo, "push", env=env)
    stored = boto3.client("s3", endpoint_url=s3_endpoint, **S3_CREDENTIALS).list_objects_v2(Bucket=BUCKET)
    assert stored.get("KeyCount", 0) > 0

    clone = fresh_clone(project_repo, tmp_path / "clone")
    env = use_s3_remote(clone, s3_endpoint)
    dvc(clone, "pull", env=env)
    for output in OUTPUTS:
        assert (clone / output).read_bytes() == (project_repo / output).read_bytes(), output
    assert_nothing_to_run(clone, env)
