"""ML-100K's own folds through the real pipeline: `dvc repro` with split.strategy `given` tests on the lines of
u.data that the release's mku.sh and allbut.pl name, and any other data set is refused before the download."""

from __future__ import annotations

import hashlib
import random
import zipfile
from pathlib import Path

import polars as pl
import pytest
from fakes import low_rank_rows, tab_bytes
from harness import copy_project, dvc

from movielens_pipeline.split import ML_100K_RATINGS


@pytest.fixture(scope="module")
def u_data(tmp_path_factory, serve_directory) -> tuple[list, str, str]:
    """A generated ML-100K of 100,000 ratings, its lines shuffled out of user order as u.data's are, served on
    127.0.0.1: the rows in file order, the archive's URL and MD5."""
    rows = low_rank_rows(n_users=1000, n_movies=400, per_user=100, seed=7)
    random.Random(0).shuffle(rows)
    assert len(rows) == ML_100K_RATINGS
    folder = tmp_path_factory.mktemp("mirror")
    with zipfile.ZipFile(folder / "ml-100k.zip", "w") as archive:
        archive.writestr("ml-100k/u.data", tab_bytes(rows))
    md5 = hashlib.md5((folder / "ml-100k.zip").read_bytes()).hexdigest()
    return rows, f"{serve_directory(folder)}/ml-100k.zip", md5


def project_with_folds(tmp_path, u_data, **split) -> Path:
    _, url, md5 = u_data
    return copy_project(tmp_path / "project", {"data": {"url": url, "md5": md5}, "split": split})


def pairs(table: pl.DataFrame) -> set[tuple[int, int]]:
    return set(table.select("userId", "movieId").iter_rows())


def test_fold_u3_tests_on_lines_40001_to_60000(tmp_path, u_data):
    rows = u_data[0]
    repo = project_with_folds(tmp_path, u_data, strategy="given", fold="u3")
    dvc(repo, "repro", "split")
    parts = {name: pl.read_parquet(repo / "data" / "split" / f"{name}.parquet") for name in ("train", "val", "test")}
    assert pairs(parts["test"]) == {row[:2] for row in rows[40_000:60_000]}
    assert pairs(parts["train"]) | pairs(parts["val"]) == {row[:2] for row in rows[:40_000] + rows[60_000:]}
    assert parts["val"].height == 15_000  # the committed val_fraction of all ratings, from the base part
    first = {name: (repo / "data" / "split" / f"{name}.parquet").read_bytes() for name in parts}
    dvc(repo, "repro", "-f", "split")
    assert first == {name: (repo / "data" / "split" / f"{name}.parquet").read_bytes() for name in parts}


def test_another_data_set_is_refused_before_anything_runs(tmp_path, u_data):
    repo = project_with_folds(tmp_path, u_data, strategy="given", fold="ua")
    (repo / "params.yaml").write_text(
        (repo / "params.yaml").read_text(encoding="utf-8").replace("dataset: ml-100k", "dataset: ml-1m", 1),
        encoding="utf-8",
    )
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    assert "error: split.strategy: got 'given' with data.dataset 'ml-1m'; only ml-100k ships its own folds" in (
        result.stdout + result.stderr
    )
    assert not (repo / "data" / "raw").exists()
