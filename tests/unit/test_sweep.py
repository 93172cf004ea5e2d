"""sweep.py: a sweep in `dvc exp run --queue -S` form becomes one checked experiment per combination, expanded by
DVC's own sweeper (comma lists, `range()`, `choice()`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from harness import PROJECT

from movielens_pipeline.errors import PipelineError
from movielens_pipeline.params import read_params_file
from movielens_pipeline.sweep import check, combinations, experiment_name, matrix, overrides_of


def test_every_combination_in_order():
    found = combinations("train.biased_mf.embedding_dim=16,32,64 train.biased_mf.weight_decay=0.01,0.05")
    assert len(found) == 6
    assert found[0] == ["train.biased_mf.embedding_dim=16", "train.biased_mf.weight_decay=0.01"]
    assert found[-1] == ["train.biased_mf.embedding_dim=64", "train.biased_mf.weight_decay=0.05"]
    assert experiment_name(found[1]) == "embedding_dim-16-weight_decay-0.05"


def test_range_and_choice_are_expanded_as_dvc_expands_them():
    # The example: `dvc exp run --queue -S 'train.embedding_dim=range(8,17,8)'` queues 8 and 16.
    assert combinations("train.biased_mf.embedding_dim=range(8,17,8)") == [
        ["train.biased_mf.embedding_dim=8"],
        ["train.biased_mf.embedding_dim=16"],
    ]
    found = combinations(["train.model=choice(biases, biased_mf)", "train.seed=range(2)", "train.patience=5"])
    assert found == [
        ["train.model=biases", "train.seed=0", "train.patience=5"],
        ["train.model=biases", "train.seed=1", "train.patience=5"],
        ["train.model=biased_mf", "train.seed=0", "train.patience=5"],
        ["train.model=biased_mf", "train.seed=1", "train.patience=5"],
    ]
    assert len(combinations("train.biased_mf.embedding_dim=range(8,64,8)")) == 7  # the issue's: 8, 16, ..., 56


def test_the_combinations_are_the_ones_dvc_exp_run_queues():
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps

    sweep = ["train.biased_mf.embedding_dim=range(8,25,8)", "train.biased_mf.weight_decay=choice(0.01,0.1)"]
    queued = get_hydra_sweeps(to_path_overrides(sweep))  # what `dvc exp run --queue -S ... -S ...` iterates over
    assert combinations(sweep) == [combination["params.yaml"] for combination in queued]


def test_a_sweep_on_one_line_splits_on_spaces_outside_brackets_and_quotes():
    assert overrides_of(" train.model=choice(biases, biased_mf)  train.seed=0,1 ") == [
        "train.model=choice(biases, biased_mf)",
        "train.seed=0,1",
    ]
    assert overrides_of("data.url='a b' train.seed=[1, 2]") == ["data.url='a b'", "train.seed=[1, 2]"]
    assert overrides_of("") == []


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("", "give at least one"),
        ("train.embedding_dim", "Error parsing override 'train.embedding_dim'"),
        ("train.biased_mf.embedding_dim=range(8", "sweep: "),
        ("train.svdpp.embedding_dim=16 train.svdpp.embedding_dim=32", "train.svdpp.embedding_dim is given twice"),
        ("train.svdpp.embedding_dim=glob(*)", "Glob override"),
        ("train.biased_mf.weight_decay=interval(0,1)", "INTERVAL_SWEEP"),
        ("other.yaml:train.seed=1,2", "other.yaml: this project's params are in params.yaml only"),
    ],
)
def test_malformed_sweeps_are_refused(sweep, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        combinations(sweep)


@pytest.mark.parametrize(
    ("combination", "message"),
    [
        (["train.biased_mf.embeding_dim=8"], "train.biased_mf.embeding_dim: unknown key"),
        (["+train.biased_mf.embeding_dim=8"], "train.biased_mf.embeding_dim: unknown key"),
        (["trian.embedding_dim=8"], "unknown section 'trian'"),
        (["embedding_dim=16"], "unknown section 'embedding_dim'"),
        (["train=16"], "sets a whole section"),
        (["train.biased_mf.embedding_dim=0"], "train.biased_mf.embedding_dim: got 0"),
        (["train.biased_mf.dropout=0.1"], "train.biased_mf.dropout: unknown key"),
        (["train.model=svdp"], "train.model: got 'svdp'"),
        (["~train.patience"], "train.patience: missing"),
    ],
)
def test_a_combination_the_schema_refuses_names_the_key(combination, message):
    with pytest.raises(PipelineError, match=message):
        check(combination, read_params_file(PROJECT / "params.yaml"))


def test_values_are_typed_as_dvc_writes_them():
    document = read_params_file(PROJECT / "params.yaml")
    check(["train.biased_mf.learning_rate=1e-3", "train.biased_mf.batch_size=auto", "train.refit=true"], document)
    with pytest.raises(PipelineError, match="train.biased_mf.batch_size"):
        check(["train.biased_mf.batch_size=2.5"], document)


def test_every_combination_is_checked_before_the_matrix_is_printed(monkeypatch):
    monkeypatch.chdir(PROJECT)
    with pytest.raises(PipelineError, match="train.biased_mf.embedding_dim: got 0"):
        matrix("train.biased_mf.embedding_dim=range(0,17,8)")  # 8 and 16 are fine, 0 is not
    with pytest.raises(PipelineError, match="cannot pass through the workflow's unquoted -S arguments"):
        matrix(["train.model='biased mf',biases"])


def test_the_command_prints_the_workflows_matrix():
    result = subprocess.run(
        [sys.executable, "-m", "movielens_pipeline.sweep", "train.model=choice(biases, biased_mf)"],
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
