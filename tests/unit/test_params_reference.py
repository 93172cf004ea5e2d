"""docs/params.md is generated from the schema and params.yaml: it must be what the generator writes today."""

from __future__ import annotations

import subprocess
import sys

from harness import PROJECT

from movielens_pipeline.params import SECTIONS
from movielens_pipeline.params_reference import render


def test_the_committed_reference_is_what_the_generator_writes():
    committed = (PROJECT / "docs" / "params.md").read_text(encoding="utf-8")
    assert committed == render(PROJECT / "params.yaml"), "stale: run python -m movielens_pipeline.params_reference"


def test_every_key_of_every_section_has_a_row_and_a_description():
    text = render(PROJECT / "params.yaml")
    for name, section in SECTIONS.items():
        assert f"## `{name}`" in text
        for key, field in section.model_fields.items():
            assert field.description, f"{name}.{key} has no description"
            assert f"| `{key}` |" in text


def test_check_mode_fails_on_a_stale_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "params.yaml").write_bytes((PROJECT / "params.yaml").read_bytes())
    (tmp_path / "docs" / "params.md").write_text("# out of date\n", encoding="utf-8")
    command = [sys.executable, "-m", "movielens_pipeline.params_reference", "--check"]
    stale = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert stale.returncode == 1 and "docs/params.md is stale" in stale.stderr
    subprocess.run(command[:-1], cwd=tmp_path, check=True)
    assert subprocess.run(command, cwd=tmp_path).returncode == 0
