"""The README's commands, run as a reader would type them: a command that no longer runs fails CI.

Run on the end-to-end project (a generated data set of ML-100K's ids): `make pipeline` on a fresh copy, asking the
trained model, and running and comparing experiments, every line but those `RUN_AS_THE_SUITE` and `NOT_RUN_HERE`
name (with what covers each)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
import yaml
from harness import (
    LOCK_FILES,
    PIPELINE_OUTPUTS,
    PLOTS_TEMPLATE,
    PROJECT,
    copy_project,
    dvc,
    git,
    start_queue,
    tool_env,
    wait_for_the_queue,
)

from movielens_pipeline.sweep import combinations

README = PROJECT / "README.md"
VENV = PROJECT / ".venv"
# Lines of the "Two commands" block that are the test suite itself, and what runs them.
RUN_AS_THE_SUITE = {
    "make test": "CI's suite job (.ci/run), of which this test is a part",
    "make test-unit": "tests/unit, a part of `make test`",
}
# What `make venv` builds, and the files Make rebuilds it from when they are newer.
MAKE_PREREQUISITES = {
    VENV / ".installed": ("requirements.lock", "pyproject.toml"),
    PROJECT / PLOTS_TEMPLATE: ("scripts/offline_plots_template.py",),
}
# Lines of the experiments block that cannot run here as written, and what covers them instead.
NOT_RUN_HERE = {
    "profile=ml-1m": "a download from GroupLens; tests/unit/test_releases.py checks each release's layout, "
    "tests/unit/test_profiles.py the profile's params",
    "profile=ml-25m-twin": "25 M ratings; tests/e2e/test_experiments.py queues it and checks the params DVC composed",
    "split.strategy=given": "needs ML-100K's 100,000 ratings; tests/e2e/test_given_folds.py runs a fold",
    "ensemble/dvc.yaml": "seven models trained; tests/e2e/test_ensemble_pipeline.py runs the ensemble's experiments",
}


def commands_under(heading: str) -> list[str]:
    """The lines of the first bash block after the README's `heading`, comments stripped."""
    section = README.read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


EXPERIMENT_REF = re.compile(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/")  # refs/exps/<baseline commit>/<name>


def runs_of(command: str) -> list[dict]:
    """The runs a `dvc exp run` line stands for (one, or its sweep's: DVC's own expansion, as
    movielens_pipeline.sweep uses it), each as the value it sets per key."""
    words = shlex.split(command)
    overrides = [words[i + 1] for i, word in enumerate(words) if word == "-S"]
    return [
        {key: yaml.safe_load(value) for key, value in (override.split("=", 1) for override in combination)}
        for combination in combinations(overrides)
    ]


def name_of(command: str) -> str | None:
    words = shlex.split(command)
    return next((words[i + 1] for i, word in enumerate(words) if word in ("-n", "--name")), None)


def experiments(repo) -> dict[str, str]:
    """Each experiment's ref (refs/exps/.../<name>) and commit."""
    listed = git(repo, "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)").split("\n")
    return dict(line.split() for line in listed if EXPERIMENT_REF.match(line))  # not DVC's stashes and exec refs


def params_of(repo, revision: str) -> dict:
    return yaml.safe_load(git(repo, "show", f"{revision}:params.yaml"))


def value_at(params: dict, key: str):
    for part in key.split("."):
        params = params[part]
    return params


def run_line(command: str, repo) -> subprocess.CompletedProcess:
    """Run one README line in `repo` as a reader's shell would (the venv first on PATH); it must succeed."""
    result = subprocess.run(["bash", "-c", command], cwd=repo, env=tool_env(repo), capture_output=True, text=True)
    assert result.returncode == 0, f"README: `{command}` failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_two_commands_run_the_whole_pipeline_on_a_fresh_copy(baseline_repo, plots_template, tmp_path):
    # With `plots_template` (copy_project copies it) and the venv built, `make venv` has nothing to build.
    if not (VENV / ".installed").is_file():
        pytest.skip(f"{VENV} is not built: `make venv`")
    commands = commands_under("## Two commands")
    assert "make pipeline" in commands
    for line in RUN_AS_THE_SUITE:
        assert commands.count(line) == 1, f"each exception names one README line: {line!r} in {commands}"
    # The data source is params.yaml's to name (`make pipeline` takes no -S): the end-to-end params, the generated
    # data set served on 127.0.0.1 instead of GroupLens, committed so that the clone starts clean as a fresh one.
    repo = copy_project(tmp_path / "clone", yaml.safe_load((baseline_repo / "params.yaml").read_text()))
    (repo / ".venv").symlink_to(VENV)
    # .gitignore's `.venv/` matches a clone's folder, not this link to the project's.
    with (repo / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n")
    # A copy's files are as new as the project's checkout, often newer than its venv: older, Make keeps what is built.
    for built, sources in MAKE_PREREQUISITES.items():
        for source in sources:
            older = built.stat().st_mtime - 1
            os.utime(repo / source, (older, older))
    targets = [str(built.relative_to(PROJECT)) for built in MAKE_PREREQUISITES]
    up_to_date = subprocess.run(["make", "--question", *targets], cwd=repo, env=tool_env(repo))
    assert up_to_date.returncode == 0, f"make would rebuild {targets}: never in the project's own venv"

    for command in commands:
        if command not in RUN_AS_THE_SUITE:
            run_line(command, repo)

    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == set(stages)
    assert (repo / "models/model.ckpt").is_file() and (repo / "eval/metrics.json").is_file()
    # New files only, each one the project tracks (the outputs copy_project leaves out): nothing modified, and
    # nothing a fresh clone would show untracked.
    tracked_outputs = {
        name
        for name in git(PROJECT, "ls-files").splitlines()
        if name.startswith(PIPELINE_OUTPUTS) or name in LOCK_FILES
    }
    changes = git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert changes and all(change[:2] in ("??", "A ") and change[3:] in tracked_outputs for change in changes), changes
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "make pipeline")
    assert "Running stage" not in dvc(repo, "repro").stdout
    assert git(repo, "status", "--porcelain") == ""


def test_the_commands_that_ask_the_trained_model_run(project_repo, tmp_path):
    commands = commands_under("## Ask the trained model")
    assert any(command.startswith("movielens recommend") for command in commands)
    before = git(project_repo, "status", "--porcelain", "--untracked-files=all")
    for command in commands:
        run_line(command.replace("/tmp/", f"{tmp_path}/"), project_repo)  # the README's /tmp, this test's own
    assert (tmp_path / "predicted.parquet").is_file()
    # Nothing lands in the repository for the next block's `git add -A` to commit (an experiment's refs aside).
    assert git(project_repo, "status", "--porcelain", "--untracked-files=all") == before


@pytest.mark.slow  # twelve experiments, five minutes: `make test-readme` (the tests workflow's readme job)
def test_the_commands_that_run_and_compare_experiments_run(project_repo):
    # Two epochs a run: the block runs twelve experiments, and this is about the commands, not the models. Set in
    # conf/config.yaml, which each `dvc exp run -S` composes params.yaml from.
    for path in (project_repo / "conf" / "config.yaml", project_repo / "params.yaml"):
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
        params["train"]["max_epochs"] = 2
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    git(project_repo, "commit", "-q", "-am", "two epochs a run")
    commands = commands_under("## Run an experiment and compare")
    not_run = [command for command in commands if any(marker in command for marker in NOT_RUN_HERE)]
    assert len(not_run) == len(NOT_RUN_HERE), f"each exception names one README line: {not_run}"
    # What each line claims, checked on what it made: an experiment run with every setting its line names (and
    # under its name), a queue whose runs are the line's sweep, each run once.
    queued: list[dict] = []  # each queued run's settings, until the queue runs
    named: list[str] = []  # the -n names of the runs made outside the queue
    seen = experiments(project_repo)  # all but the queued lines' runs
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
            made = experiments(project_repo)
            ran = [commit for ref, commit in made.items() if ref not in seen]
            # Each run's values of every key a queued line sets; a key its line leaves alone keeps the committed one.
            keys = sorted({key for run in queued for key in run})
            committed = params_of(project_repo, "HEAD")
            expected = sorted(tuple(run.get(key, value_at(committed, key)) for key in keys) for run in queued)
            got = sorted(tuple(value_at(params_of(project_repo, commit), key) for key in keys) for commit in ran)
            assert got == expected, f"README: the queued lines ran {got} for {keys}, not {expected}"
            seen = made
            continue
        result = run_line(command, project_repo)
        if command.startswith("dvc exp diff"):
            assert result.stdout.strip(), f"README: `{command}` printed nothing"
        if command.startswith("dvc exp run") and "--queue" in command:
            queued += runs_of(command)
        elif command.startswith("dvc exp run"):
            made = experiments(project_repo)
            new_runs = {ref: commit for ref, commit in made.items() if ref not in seen}
            seen = made
            assert len(new_runs) == 1, f"README: `{command}` made {sorted(new_runs)}"
            [(ref, commit)] = new_runs.items()
            params = params_of(project_repo, commit)
            if name_of(command):
                named.append(name_of(command))
                assert ref.endswith(f"/{named[-1]}"), f"README: `{command}` is named {ref}"
            [run] = runs_of(command)
            for key, value in run.items():
                assert value_at(params, key) == value, f"README: `{command}` ran with {key}={value_at(params, key)}"
        if command.startswith("dvc exp show"):  # the same table as CSV: a row per run, with what they differ in
            table = dvc(project_repo, *shlex.split(command)[1:], "--csv").stdout.splitlines()
            assert {"test.rmse", "test.ndcg@10", "train.model"} <= set(table[0].split(",")), table[0]
            assert len(table) - 1 >= len(experiments(project_repo)), table
        if command.startswith("dvc plots diff"):  # the legend names each run (the -n names: models, not words)
            page = (project_repo / "dvc_plots" / "index.html").read_text(encoding="utf-8")
            for run in named:
                assert run in page, f"README: `{command}` draws no {run}"
        if command.startswith("dvc exp apply"):
            applied = experiments(project_repo)
            commit = next(commit for ref, commit in applied.items() if ref.endswith(f"/{name}"))
            assert yaml.safe_load((project_repo / "params.yaml").read_text()) == params_of(project_repo, commit)
    # The queued lines ran: three embedding sizes, then two models x three seeds.
    # (Of every commit: the block ends by committing an applied experiment, a new baseline with none of its own.)
    assert len(dvc(project_repo, "exp", "list", "--all-commits", "--names-only").stdout.split()) >= 12
    assert (project_repo / "dvc_plots" / "index.html").is_file()
    # Applied and committed, as the block ends: the commit holds the experiment's outputs, the tree is clean.
    assert "dvc.lock" in git(project_repo, "show", "--name-only", "--format=", "HEAD").split()
    assert git(project_repo, "status", "--porcelain") == ""
