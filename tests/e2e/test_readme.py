"""The README's commands, run as a reader would type them: a command that no longer runs fails CI.

Run on the end-to-end project (a generated data set of ML-100K's ids): asking the trained model, and running
and comparing experiments, every line but those `NOT_RUN_HERE` names (with the test that covers each)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from harness import PROJECT, dvc, git, start_queue, tool_env, wait_for_the_queue

README = PROJECT / "README.md"
# Lines of the experiments block that cannot run here as written, and what covers them instead.
NOT_RUN_HERE = {
    "data.dataset=ml-1m": "a download from GroupLens; tests/unit/test_releases.py checks each release's layout",
    "ensemble/dvc.yaml": "seven models trained; tests/e2e/test_ensemble_pipeline.py runs the ensemble's experiments",
}


def commands_under(heading: str) -> list[str]:
    """The lines of the first bash block after the README's `heading`, comments stripped."""
    section = README.read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def run_line(command: str, repo) -> subprocess.CompletedProcess:
    """Run one README line in `repo` as a reader's shell would (the venv first on PATH); it must succeed."""
    result = subprocess.run(["bash", "-c", command], cwd=repo, env=tool_env(repo), capture_output=True, text=True)
    assert result.returncode == 0, f"README: `{command}` failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_commands_that_ask_the_trained_model_run(project_repo):
    commands = commands_under("## Ask the trained model")
    assert any(command.startswith("movielens recommend") for command in commands)
    for command in commands:
        run_line(command, project_repo)
    assert (project_repo / "predicted.parquet").is_file()


@pytest.mark.slow  # twelve experiments, five minutes: `make test-readme` (the tests workflow's readme job)
def test_the_commands_that_run_and_compare_experiments_run(project_repo):
    # Two epochs a run: the block runs twelve experiments, and this is about the commands, not the models.
    params = yaml.safe_load((project_repo / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["max_epochs"] = 2
    (project_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    git(project_repo, "commit", "-q", "-am", "two epochs a run")
    commands = commands_under("## Run an experiment and compare")
    not_run = [command for command in commands if any(marker in command for marker in NOT_RUN_HERE)]
    assert len(not_run) == len(NOT_RUN_HERE), f"each exception names one README line: {not_run}"
    for command in commands:
        if command in not_run:
            continue
        if "<name>" in command:  # a placeholder for the reader's experiment: the first one listed
            name = dvc(project_repo, "exp", "list", "--names-only").stdout.split()[0]
            command = command.replace("<name>", name)
        if "data.dataset=" in command:  # another data set than the project's: without the test's ML-100K mirror
            command += " -S data.url=null -S data.md5=null"
        if command.startswith("dvc queue start"):
            start_queue(project_repo, jobs=int(command.split("-j")[1]))
            status = wait_for_the_queue(project_repo)
            assert "Failed" not in status, status
            continue
        result = run_line(command, project_repo)
        if command.startswith("dvc exp diff"):
            assert result.stdout.strip(), f"README: `{command}` printed nothing"
    # The queued lines ran: three embedding sizes, then two models x three seeds.
    # (Of every commit: the block ends by committing an applied experiment, a new baseline with none of its own.)
    assert len(dvc(project_repo, "exp", "list", "--all-commits", "--names-only").stdout.split()) >= 12
    assert (project_repo / "dvc_plots" / "index.html").is_file()
    assert "synthetic" in (project_repo / "params.yaml").read_text()  # applied and committed, as the block ends
