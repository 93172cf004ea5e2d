"""Data-set profiles (conf/profile/): each composes, as `dvc exp run -S profile=<name>` composes it, into params
every stage accepts; the committed params.yaml is conf/'s composition with no override, to the byte."""

from __future__ import annotations

import pytest
from harness import PROJECT

from movielens_pipeline.datasets import RELEASE_NAMES, SYNTHETIC
from movielens_pipeline.models import load_train_params
from movielens_pipeline.params import SECTIONS, check_split_fits_data, load_section, read_params_file
from movielens_pipeline.profiles import (
    PROFILE_END,
    PROFILE_START,
    compose_params,
    flat,
    profile_table,
    read_profiles,
)

CONF = PROJECT / "conf"
PROFILES = sorted(read_profiles(CONF))


def composed(tmp_path, *overrides: str) -> dict:
    """params.yaml as `dvc exp run -S <overrides>` writes it, every section validated as the stages validate it."""
    path = tmp_path / "params.yaml"
    compose_params(list(overrides), path, CONF)
    sections = {name: load_section(name, path) for name in SECTIONS}
    check_split_fits_data(sections["data"], sections["split"])
    for section in ("train", "rank"):  # every model's own settings typed, as the train stage types them
        load_train_params(path, section)
    return read_params_file(path)


def test_the_committed_params_yaml_is_confs_composition_to_the_byte(tmp_path):
    compose_params([], tmp_path / "params.yaml", CONF)
    assert (tmp_path / "params.yaml").read_bytes() == (PROJECT / "params.yaml").read_bytes(), (
        "params.yaml is not conf/'s composition: edit conf/config.yaml, then `make params`"
    )


def test_there_is_a_profile_for_every_release_and_the_twin_of_ml_25m():
    assert set(PROFILES) == {*RELEASE_NAMES, "ml-25m-twin"}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_composes_into_params_every_stage_accepts(tmp_path, profile):
    params = composed(tmp_path, f"profile={profile}")
    expected_dataset = SYNTHETIC if profile == "ml-25m-twin" else profile
    assert params["data"]["dataset"] == expected_dataset
    # What the profile sets is what the composition holds; the rest is conf/config.yaml's.
    base = read_params_file(PROJECT / "params.yaml")
    for key, value in flat(read_profiles(CONF)[profile][1]).items():
        section, *path = key.split(".")
        node = params[section]
        for name in path:
            node = node[name]
        assert node == value, key
    assert params["preprocess"] == base["preprocess"] and params["evaluate"] == base["evaluate"]
    comment = read_profiles(CONF)[profile][0]
    assert profile == "ml-100k" or "untuned" in comment.lower() or "recorded sweep" in comment


def test_the_twin_has_ml_25ms_shape(tmp_path):
    data = composed(tmp_path, "profile=ml-25m-twin")["data"]
    assert (data["synthetic_ratings"], data["synthetic_users"], data["synthetic_movies"]) == (
        25_000_095,
        162_541,
        59_047,
    )


def test_overrides_apply_over_the_profile(tmp_path):
    params = composed(tmp_path, "profile=ml-1m", "train.bayes_mf.sweeps=40", "train.seed=3")
    assert params["data"]["dataset"] == "ml-1m"
    assert (params["train"]["bayes_mf"]["sweeps"], params["train"]["seed"]) == (40, 3)


def test_the_profile_table_in_the_docs_is_what_the_profiles_say():
    text = (PROJECT / "docs" / "data.md").read_text(encoding="utf-8")
    shown = text.split(PROFILE_START, 1)[1].split(PROFILE_END, 1)[0].strip()
    assert shown == profile_table(CONF), (
        "docs/data.md's profile table is stale: python -m movielens_pipeline.profiles --docs"
    )
