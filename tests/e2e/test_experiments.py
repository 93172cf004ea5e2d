"""Experiments end to end with the real dvc: exp run against a committed baseline, diffs, the local report,
misspelled params and a queued sweep."""

from __future__ import annotations

import json

import pytest
from harness import dvc, exp_runs, git, python, require, start_queue, tool_env, wait_for_the_queue


def params_of(run: dict) -> dict:
    return run["data"]["params"]["params.yaml"]["data"]


def metrics_of(run: dict) -> dict:
    return {path: content["data"] for path, content in run["data"]["metrics"].items()}


def test_exp_run_shows_both_runs_and_the_report_matches_the_diffs(project_repo, tmp_path):
    repo = project_repo
    dvc(repo, "exp", "run", "-S", "train.biased_mf.embedding_dim=8", "--name", "dim-8")

    runs = {params_of(run)["train"]["biased_mf"]["embedding_dim"]: run for run in exp_runs(repo)}
    assert set(runs) == {64, 8}
    assert runs[8]["name"] == "dim-8"
    for run in runs.values():
        metrics = metrics_of(run)
        assert {"rmse", "mae"} <= set(metrics["eval/metrics.json"]["test"])
        assert "rmse" in metrics["eval/metrics.json"]["baseline"]
        # Ranking: the model's top 10 and the popularity baseline's, side by side in `dvc exp show`.
        assert {"ndcg@10", "precision@10", "recall@10", "coverage@10"} <= set(metrics["eval/metrics.json"]["ranker"])
        assert {"ndcg@10", "precision@10"} <= set(metrics["eval/metrics.json"]["popularity"])
        assert set(metrics["dvclive/train/val.json"]["val"]) == {"rmse"}  # what the model was chosen on
        assert "dvclive/train/metrics.json" not in metrics  # dvclive's own summary: epochs, step, last losses
    assert metrics_of(runs[8])["eval/metrics.json"] != metrics_of(runs[64])["eval/metrics.json"]

    params_md = dvc(repo, "params", "diff", "HEAD", "--md").stdout
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in params_md.splitlines()]
    assert ["params.yaml", "train.biased_mf.embedding_dim", "64", "8"] in rows
    metrics_md = dvc(repo, "metrics", "diff", "HEAD", "--md").stdout
    assert "test.rmse" in metrics_md and "eval/metrics.json" in metrics_md

    require("vl_convert")
    out = tmp_path / "report"
    result = python(repo, "-m", "movielens_pipeline.report", "HEAD", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = (out / "report.md").read_text()
    assert report.strip() == result.stdout.strip()
    # The same tables, row for row; dvc itself lists the metrics files in no fixed order, the report sorts them,
    # the test metrics first.
    lines = params_md.strip().splitlines()
    assert "\n".join(lines[:2] + sorted(lines[2:])) in report
    metrics_rows = metrics_md.strip().splitlines()[2:]
    reported = report.split("### Metrics")[1].split("###")[0].strip().splitlines()
    assert sorted(reported[2:]) == sorted(metrics_rows) and "| test." in reported[2]
    images = sorted(out.glob("plots/*.png"))
    assert len(images) == 6 and all(image.read_bytes().startswith(b"\x89PNG") for image in images)
    assert "![Loss per epoch (MSE)](plots/loss-per-epoch-mse.png)" in report


def test_exp_show_of_two_models_fits_a_terminal(project_repo):
    """Two runs that differ only in train.model: in a 120-column terminal, `dvc exp show --only-changed` shows the
    test RMSE, MAE and NDCG@10 (the rating model's own ranking), the val RMSE and the model, named without file
    prefixes; only the checkpoint's hash, the last column, may fold to an ellipsis."""
    repo = project_repo
    dvc(repo, "exp", "run", "-n", "saved-inks", "-S", "train.model=als")
    shown = dvc(repo, "exp", "show", "--only-changed", "--no-pager", env=tool_env(repo) | {"COLUMNS": "120"}).stdout
    lines = shown.rstrip().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 120, shown
    header = lines[1].split()
    assert header[:7] == ["Experiment", "Created", "test.rmse", "test.mae", "test.ndcg@10", "val.rmse", "train.model"]
    assert "saved-inks" in shown and "als" in shown and "biased_mf" in shown


def test_misspelled_param_fails_at_once_naming_the_key(project_repo):
    repo = project_repo
    before = (repo / "dvclive/train/metrics.json").read_text()

    # DVC itself refuses to set a key params.yaml does not have.
    typo = dvc(repo, "exp", "run", "-S", "train.biased_mf.embeding_dim=8", check=False)
    assert typo.returncode != 0 and "train.biased_mf.embeding_dim" in typo.stderr
    assert git(repo, "status", "--porcelain") == ""

    # Forced in with `+` (as DVC's message suggests), the first stage to run stops before any work.
    forced = dvc(repo, "exp", "run", "-S", "+train.patiense=3", check=False)
    output = forced.stdout + forced.stderr
    assert forced.returncode != 0
    assert "train.patiense: unknown key; valid keys are:" in output and "patience," in output
    assert (repo / "dvclive/train/metrics.json").read_text() == before  # no training happened
    git(repo, "checkout", "--", "params.yaml")

    # A misspelled section touches no stage's params; the check_params stage catches it.
    section = dvc(repo, "exp", "run", "-S", "+trian.embedding_dim=8", check=False)
    assert section.returncode != 0
    sections = "data, preprocess, split, train, rank, evaluate, ensemble"
    assert f"unknown section 'trian'; valid sections are: {sections}" in section.stderr
    assert (repo / "dvclive/train/metrics.json").read_text() == before
    git(repo, "checkout", "--", "params.yaml")

    # A model's own setting is typed by the train stage, which refuses it before it reads anything (DVC has
    # removed the stage's outputs by then, as before any run of a stage: no new training replaced them).
    forced = dvc(repo, "exp", "run", "-S", "+train.biased_mf.embeding_dim=8", check=False)
    output = forced.stdout + forced.stderr
    assert forced.returncode != 0 and "Running stage 'train'" in output and "epoch" not in output
    assert "train.biased_mf.embeding_dim: unknown key; valid keys are:" in output and "embedding_dim," in output


def test_a_profile_sets_the_data_set_and_its_settings_in_one_selector(project_repo):
    repo = project_repo
    # Queued, not run (25 M ratings): DVC's Hydra composition has written the run's params.yaml already.
    dvc(repo, "exp", "run", "--queue", "-S", "profile=ml-25m-twin", "-S", "train.max_epochs=3", "--name", "twin")
    try:
        (queued,) = [run for run in exp_runs(repo, experiments_only=True) if run.get("name") == "twin"]
        params = params_of(queued)
        assert params["data"]["dataset"] == "synthetic" and params["data"]["synthetic_ratings"] == 25_000_095
        assert params["train"]["bayes_mf"]["embedding_dim"] == 8 and params["rank"]["ease"]["max_movies"] == 2000
        assert params["train"]["max_epochs"] == 3  # -S on top of the profile
        assert params["train"]["biased_mf"]["batch_size"] == 256  # the rest: conf/config.yaml (here the test's)
        assert git(repo, "status", "--porcelain") == ""  # the workspace is left alone
    finally:
        dvc(repo, "queue", "remove", "--all")


def test_queued_sweep_of_three_values_finishes(project_repo):
    repo = project_repo
    # Few epochs: this is about the queue, not the models.
    dvc(repo, "exp", "run", "--queue", "-S", "train.biased_mf.embedding_dim=4,8,16", "-S", "train.max_epochs=3")
    start_queue(repo, jobs=2)
    try:
        status = wait_for_the_queue(repo)
    finally:
        dvc(repo, "queue", "stop", check=False)
    assert status.count("Success") == 3, status

    finished = {
        params_of(run)["train"]["biased_mf"]["embedding_dim"]: run for run in exp_runs(repo, experiments_only=True)
    }
    assert set(finished) == {4, 8, 16}
    for run in finished.values():
        assert metrics_of(run)["eval/metrics.json"]["test"]["rmse"] > 0
    assert json.loads((repo / "eval/metrics.json").read_text())  # the workspace keeps the baseline's outputs

    # Runs side by side shared nothing: the one with dimension 8, run again alone, scores the same.
    dvc(
        repo, "exp", "run", "-S", "train.biased_mf.embedding_dim=8", "-S", "train.max_epochs=3", "--name", "dim-8-alone"
    )
    alone = json.loads((repo / "eval/metrics.json").read_text())
    assert alone["test"] == pytest.approx(metrics_of(finished[8])["eval/metrics.json"]["test"], abs=1e-6)
