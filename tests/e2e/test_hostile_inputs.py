"""Inputs a hostile or careless user could give, run through the real `dvc repro` and stage commands.

Each must end with one line naming the input and what was expected, and change nothing it should not.
"""

from __future__ import annotations

import pytest
from harness import copy_project, dvc


@pytest.mark.parametrize("dataset", ["x;touch pwned", "x$(touch pwned)", "x`touch pwned`"])
def test_a_dataset_name_never_reaches_a_shell(tmp_path, dataset):
    repo = copy_project(tmp_path / "project", {"data": {"dataset": dataset}})
    result = dvc(repo, "repro", "download", check=False)
    assert result.returncode != 0
    assert "data.dataset: got" in result.stderr + result.stdout
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize("dataset", ["../../../victim", "../../docs"])
def test_a_dataset_name_never_deletes_a_folder(tmp_path, dataset):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    repo = copy_project(tmp_path / "project", {"data": {"dataset": dataset}})
    docs = sorted(path.name for path in (repo / "docs").iterdir())
    result = dvc(repo, "repro", "download", check=False)
    assert result.returncode != 0
    assert "data.dataset: got" in result.stderr + result.stdout
    assert (victim / "keep.txt").read_text() == "mine"
    assert sorted(path.name for path in (repo / "docs").iterdir()) == docs
