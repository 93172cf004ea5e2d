"""presets.py: a preset by name or file becomes checked `dvc exp run -S` arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from movielens_pipeline.params import ParamsError
from movielens_pipeline.presets import load_preset, preset_path, set_param_args

PROJECT = Path(__file__).resolve().parents[2]
PRESETS = PROJECT / "presets"


def test_seed_preset_is_ml_25m_top_50_movies():
    preset = load_preset(preset_path("seed-ml-25m-top50", PRESETS), PROJECT / "params.yaml")
    assert preset == {"data": {"dataset": "ml-25m"}, "preprocess": {"top_n_movies": 50}}
    assert set_param_args(preset) == ["-S", "data.dataset=ml-25m", "-S", "preprocess.top_n_movies=50"]


@pytest.mark.parametrize("path", sorted(PRESETS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_preset_is_valid(path):
    assert load_preset(path, PROJECT / "params.yaml")


def test_command_line_prints_the_arguments_from_the_project_root():
    result = subprocess.run(
        [sys.executable, "-m", "movielens_pipeline.presets", "seed-ml-25m-top50"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "-S data.dataset=ml-25m -S preprocess.top_n_movies=50\n"


def test_a_preset_file_given_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  dataset: synthetic\n  synthetic_noise: 0.3\n  url: null\n", encoding="utf-8")
    args = set_param_args(load_preset(preset_path(str(path)), PROJECT / "params.yaml"))
    assert args == ["-S", "data.dataset=synthetic", "-S", "data.synthetic_noise=0.3", "-S", "data.url=null"]


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(
        ParamsError, match=r"no such preset \(available in .*presets: autorec, bpr, genre_mlp, seed-ml-25m-top50, svdpp"
    ):
        load_preset(preset_path("nope", PRESETS), PROJECT / "params.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("preprocess:\n  top_n_movie: 50\n", r"preprocess\.top_n_movie: unknown key"),
        ("preprocess:\n  top_n_movies: 0\n", r"preprocess\.top_n_movies: got 0; expected null or an integer >= 1"),
        ("trian:\n  seed: 1\n", r"unknown section 'trian'"),
        ("- data\n", r"expected sections mapping keys to values"),
    ],
)
def test_a_bad_preset_names_the_file_and_the_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError, match=rf"^{path}: .*{expected}"):
        load_preset(path, PROJECT / "params.yaml")
