"""End-to-end fixtures: the project after a baseline `dvc repro` in a temp git repo, built once per session and
copied for each test that changes it, fed a generated data set served from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from fakes import low_rank_rows, tab_bytes
from harness import PLOTS_TEMPLATE, PROJECT, copy_project, dvc, git

# Small and quick: generated data, few epochs. Shared by every end-to-end test.
E2E_PARAMS = {
    "train": {
        "model": "biased_mf",  # trains in seconds; the committed default (bayes_mf) takes a minute on ML-100K
        "max_epochs": 15,
        "biased_mf": {"batch_size": 256, "learning_rate": 0.01},
        "global_mean": {"batch_size": 256, "learning_rate": 0.01},
    },
    "rank": {"ials": {"embedding_dim": 16, "sweeps": 5}},  # test_trained_revisions ranks with it: kept quick
    # The generated users have about 28 training ratings each: spread them over several buckets.
    "evaluate": {"light_user_min_ratings": 20, "medium_user_min_ratings": 27, "heavy_user_min_ratings": 30},
}


@pytest.fixture(scope="session")
def archive_url(tmp_path_factory, serve_directory) -> tuple[str, str]:
    """A generated ml-100k.zip served on 127.0.0.1; returns its URL and MD5."""
    folder = tmp_path_factory.mktemp("mirror")
    with zipfile.ZipFile(folder / "ml-100k.zip", "w") as archive:
        archive.writestr("ml-100k/u.data", tab_bytes(low_rank_rows()))
    md5 = hashlib.md5((folder / "ml-100k.zip").read_bytes()).hexdigest()
    return f"{serve_directory(folder)}/ml-100k.zip", md5


@pytest.fixture(scope="session")
def baseline_repo(tmp_path_factory, archive_url) -> Path:
    """The project in a new git repo after `dvc repro`, outputs committed ("baseline run"). Do not change it:
    tests that do take `project_repo`, a copy."""
    url, md5 = archive_url
    params = {**E2E_PARAMS, "data": {"url": url, "md5": md5}}
    repo = copy_project(tmp_path_factory.mktemp("baseline") / "project", params)
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline run")
    return repo


@pytest.fixture
def project_repo(baseline_repo, tmp_path) -> Path:
    """A private copy of `baseline_repo` (git history, DVC cache and outputs) to change at will."""
    return Path(shutil.copytree(baseline_repo, tmp_path / "project", symlinks=True))


@pytest.fixture(scope="session")
def plots_template() -> Path:
    """The offline plots page template `make venv` builds; skipped without it, except in CI where it must exist."""
    path = PROJECT / PLOTS_TEMPLATE
    if not path.is_file():
        message = f"{PLOTS_TEMPLATE} missing: run `make plots-template` (needs npm)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
