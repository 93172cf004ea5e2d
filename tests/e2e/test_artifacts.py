"""The trained model as a registered artifact (dvc.yaml's `artifacts:`, versions and stages as GTO's git tags):
`dvc artifacts get` from the folder remote, and `load_trained(artifact=...)` / `movielens --artifact` reading it."""

from __future__ import annotations

import shutil

import polars as pl
from harness import dvc, git, python

from movielens_pipeline.trained import ARTIFACT, CHECKPOINT, ENSEMBLE_ARTIFACT, RANKER_ARTIFACT, load_trained

PAIRS = pl.DataFrame({"userId": [1, 2, 3, 4], "movieId": [1, 2, 3, 4]})


def test_dvc_artifacts_get_and_the_cli_fetch_a_registered_version_from_the_remote(project_repo, tmp_path):
    repo = project_repo
    checkpoint = (repo / CHECKPOINT).read_bytes()
    baseline = load_trained(repo).predict(PAIRS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # Declared, but no version registered yet: DVC's registry has nothing to give.
    unregistered = dvc(elsewhere, "artifacts", "get", str(repo), ARTIFACT, check=False)
    assert unregistered.returncode != 0 and f"Unable to find artifact '{ARTIFACT}'" in unregistered.stderr

    # Register the committed model (what `gto register` and `gto assign` write), push it to the folder remote
    # (.dvc/config's default: tmp_path/movielens-pipeline-dvc-remote), and drop the cache: only the remote has it.
    git(repo, "tag", "-a", f"{ARTIFACT}@v1.0.0", "-m", "Registering version v1.0.0")
    git(repo, "tag", "-a", f"{ARTIFACT}#prod#1", "-m", "Assigning stage prod to version v1.0.0")
    dvc(repo, "push")
    shutil.rmtree(repo / ".dvc" / "cache")

    for args, name in (([], "latest.ckpt"), (["--rev", "v1.0.0"], "v1.ckpt"), (["--stage", "prod"], "prod.ckpt")):
        dvc(elsewhere, "artifacts", "get", str(repo), ARTIFACT, *args, "-o", name)
        assert (elsewhere / name).read_bytes() == checkpoint, args

    for artifact in (ARTIFACT, f"{ARTIFACT}@v1.0.0", f"{ARTIFACT}#prod"):
        assert load_trained(repo, artifact=artifact).predict(PAIRS).equals(baseline), artifact

    result = python(repo, "-m", "movielens_pipeline.cli", "predict", "1:1", "2:2", "--artifact", f"{ARTIFACT}#prod")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[0] == "userId,movieId,predicted_rating"

    unknown = python(repo, "-m", "movielens_pipeline.cli", "recommend", "1", "--artifact", f"{ARTIFACT}@v9.0.0")
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1
    assert f"error: artifact '{ARTIFACT}@v9.0.0' not found" in unknown.stderr
    assert f"`{ARTIFACT}` and `{RANKER_ARTIFACT}`, ensemble/dvc.yaml `{ENSEMBLE_ARTIFACT}`" in unknown.stderr
