"""sweep.py: a sweep in `dvc exp run --queue -S` form becomes one checked experiment per combination."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from harness import PROJECT

from movielens_pipeline.errors import PipelineError
from movielens_pipeline.params import read_params_file
from movielens_pipeline.sweep import check, combinations, experiment_name


def test_every_combination_in_order():
    found = combinations("train.biased_mf.embedding_dim=16,32,64 train.biased_mf.weight_decay=0.01,0.05")
    assert len(found) == 6
    assert found[0] == {"train.biased_mf.embedding_dim": "16", "train.biased_mf.weight_decay": "0.01"}
    assert found[-1] == {"train.biased_mf.embedding_dim": "64", "train.biased_mf.weight_decay": "0.05"}
    assert experiment_name(found[1]) == "embedding_dim-16-weight_decay-0.05"


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("", "give at least one"),
        ("train.embedding_dim", "is not section.key=value"),
        ("embedding_dim=16", "is not section.key=value"),
        ("train.svdpp.embedding_dim=16 train.svdpp.embedding_dim=32", "train.svdpp.embedding_dim is given twice"),
    ],
)
def test_malformed_sweeps_are_refused(sweep, message):
    with pytest.raises(PipelineError, match=message):
        combinations(sweep)


@pytest.mark.parametrize(
    ("combination", "message"),
    [
        ({"train.biased_mf.embeding_dim": "8"}, "train.biased_mf.embeding_dim: unknown key"),
        ({"trian.embedding_dim": "8"}, "unknown section 'trian'"),
        ({"train.biased_mf.embedding_dim": "0"}, "train.biased_mf.embedding_dim: got 0"),
        ({"train.biased_mf.dropout": "0.1"}, "train.biased_mf.dropout: unknown key"),
        ({"train.model": "svdp"}, "train.model: got 'svdp'"),
    ],
)
def test_a_combination_the_schema_refuses_names_the_key(combination, message):
    with pytest.raises(PipelineError, match=message):
        check(combination, read_params_file(PROJECT / "params.yaml"))


def test_the_command_prints_the_workflows_matrix():
    result = subprocess.run(
        [sys.executable, "-m", "movielens_pipeline.sweep", "train.model=biases,biased_mf"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == {
        "include": [
            {"name": "model-biases", "set_args": "-S train.model=biases"},
            {"name": "model-biased_mf", "set_args": "-S train.model=biased_mf"},
        ]
    }
