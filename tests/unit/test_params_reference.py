"""docs/params.md is generated from the schema and params.yaml: it must be what the generator writes today."""

from __future__ import annotations

from harness import PROJECT

from movielens_pipeline.params import SECTIONS
from movielens_pipeline.params_reference import main, render


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


def test_check_mode_fails_on_a_stale_file(tmp_path, monkeypatch, capsys):
    # In process: a subprocess would spend seconds importing torch (the models type their own settings).
    (tmp_path / "docs").mkdir()
    (tmp_path / "params.yaml").write_bytes((PROJECT / "params.yaml").read_bytes())
    (tmp_path / "docs" / "params.md").write_text("# out of date\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["--check"]) == 1 and "docs/params.md is stale" in capsys.readouterr().err
    assert main([]) == 0
    assert main(["--check"]) == 0
