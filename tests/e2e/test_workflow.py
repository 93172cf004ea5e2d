"""The pull-request workflow: its shape, no committed secrets, and the image publishing script against a
local bare repository (GitHub itself cannot be reached from tests)."""

from __future__ import annotations

import re
import subprocess

import yaml
from harness import PROJECT, git

WORKFLOW = PROJECT / ".github/workflows/dvc-report.yml"
PUBLISH = PROJECT / "scripts/publish_report_images.sh"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def commands() -> str:
    return "\n".join(step.get("run", "") for step in workflow()["jobs"]["report"]["steps"])


def test_runs_on_every_pull_request_and_may_comment():
    document = workflow()
    assert "pull_request" in document[True]  # YAML 1.1 reads the key `on` as True
    assert document["permissions"] == {}  # nothing by default: each job says what it needs
    assert document["jobs"]["report"]["permissions"] == {"contents": "write", "pull-requests": "write"}


def test_sets_up_reproduces_with_the_remote_and_reports_like_make_report():
    run = commands()
    assert "make venv" in run
    assert "dvc repro --pull --allow-missing" in run
    assert 'python -m movielens_pipeline.report "$BASE_REV"' in run
    assert "report/report.md" in run and "--method PATCH" in run  # one comment, edited on later pushes


def test_credentials_come_only_from_secrets():
    text = WORKFLOW.read_text()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING"):
        assert f"{name}: ${{{{ secrets.{name} }}}}" in text
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)


def test_publish_script_pushes_images_to_their_branch_twice_without_losing_any(tmp_path):
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", str(origin), str(checkout))
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "--allow-empty", "-m", "x")
    git(checkout, "push", "-q", "origin", "HEAD:refs/heads/main")
    images = tmp_path / "plots"
    images.mkdir()
    (images / "loss.png").write_bytes(b"\x89PNG first")
    for folder in ("pr-1/aaa", "pr-2/bbb"):
        subprocess.run([str(PUBLISH), str(images), "dvc-report-assets", folder], cwd=checkout, check=True)
    listed = git(origin, "ls-tree", "-r", "--name-only", "dvc-report-assets").split()
    assert listed == ["pr-1/aaa/loss.png", "pr-2/bbb/loss.png"]
    assert git(checkout, "status", "--porcelain") == ""


SWEEP = PROJECT / ".github/workflows/dvc-sweep.yml"


def test_sweep_is_started_by_hand_and_fans_out_one_job_per_combination():
    document = yaml.safe_load(SWEEP.read_text())
    assert "sweep" in document[True]["workflow_dispatch"]["inputs"]
    plan = "\n".join(step.get("run", "") for step in document["jobs"]["plan"]["steps"])
    assert 'python -m movielens_pipeline.sweep "$SWEEP"' in plan and "$GITHUB_OUTPUT" in plan
    run_job = document["jobs"]["run"]
    assert run_job["needs"] == "plan"
    assert run_job["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert (
        run_job["env"]["EXPERIMENT"] == "${{ matrix.name }}" and run_job["env"]["SET_ARGS"] == "${{ matrix.set_args }}"
    )
    run = "\n".join(step.get("run", "") for step in run_job["steps"])
    assert 'dvc exp run $SET_ARGS --name "$EXPERIMENT" --pull --allow-missing' in run
    assert "dvc push" in run and 'dvc exp push origin "$EXPERIMENT"' in run
    assert document["permissions"] == {} and document["jobs"]["plan"]["permissions"] == {"contents": "read"}
    assert run_job["permissions"] == {"contents": "write"}  # experiments are pushed as git refs
    text = SWEEP.read_text()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING"):
        assert f"{name}: ${{{{ secrets.{name} }}}}" in text


def test_every_action_is_pinned_by_commit_and_only_jobs_that_push_keep_the_checkouts_credentials():
    pushing_jobs = {("dvc-report.yml", "report"), ("dvc-sweep.yml", "run")}  # the assets branch; dvc exp push
    for path in sorted((PROJECT / ".github/workflows").glob("*.yml")):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            for step in job["steps"]:
                if "uses" not in step:
                    continue
                assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", step["uses"]), (path.name, name, step["uses"])
                if step["uses"].startswith("actions/checkout@"):
                    kept = step.get("with", {}).get("persist-credentials", True)
                    assert kept == ((path.name, name) in pushing_jobs), (path.name, name)


TESTS = PROJECT / ".github/workflows/tests.yml"


def test_the_tests_workflow_runs_ci_and_the_readme_pipeline_on_every_pull_request_and_push():
    document = yaml.safe_load(TESTS.read_text())
    assert set(document[True]) == {"pull_request", "push"}
    suite, pipeline = document["jobs"]["suite"], document["jobs"]["pipeline"]
    assert [step["run"] for step in suite["steps"] if "run" in step] == ["sudo --preserve-env=PATH bash .ci/run"]
    runs = [step["run"] for step in pipeline["steps"] if "run" in step]
    assert runs[0] == "make pipeline" and 'test -z "$(git status --porcelain)"' in runs[1]
    cached = [step["with"] for step in pipeline["steps"] if step.get("uses", "").startswith("actions/cache@")]
    assert cached == [
        {"path": ".dvc/cache", "key": "dvc-cache-${{ hashFiles('dvc.lock') }}", "restore-keys": "dvc-cache-"}
    ]
    assert all(job["permissions"] == {"contents": "read"} for job in document["jobs"].values())


def test_every_make_target_a_workflow_or_ci_runs_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (PROJECT / "Makefile").read_text(), re.MULTILINE))
    texts = [path.read_text() for path in sorted((PROJECT / ".github/workflows").glob("*.yml"))]
    called = {
        target
        for text in [*texts, (PROJECT / ".ci/run").read_text()]
        for target in re.findall(r"\bmake ([a-z][\w-]*)", text)
    }
    assert {"venv", "test", "pipeline", "lint-workflows"} <= called
    assert called <= targets, called - targets
