"""The same params give the same bytes whatever the CPU's vector extensions and core count.

Each stage pins torch's CPU kernels, MKL's code path and, where its params set none, its thread count
(stages/_checkout.py); train.threads and rank.threads are numbers in the committed params, not "this machine's
cores". This runs the train and rank stages with what another machine brings in its environment (other
kernels, another MKL path, another default thread count) and compares what they write: the committed default
models, on enough ratings (42,000 for training) that torch splits their long sums among threads.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from harness import copy_project, dvc, stage_command, tool_env

PARAMS = {
    "data": {"dataset": "synthetic", "synthetic_ratings": 60_000, "synthetic_users": 1000, "synthetic_movies": 600},
    "train": {"bayes_mf": {"embedding_dim": 8, "sweeps": 12, "burn_in": 6, "chains": 2}},
}
# What another machine's environment might say: no vector kernels for torch, or AVX-512 ones with MKL's AVX-512
# path; one thread, or three.
MACHINES = [
    {},
    {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512", "OMP_NUM_THREADS": "3"},
]
OUTPUTS = {
    "train": ["models/model.ckpt", "dvclive/train/metrics.json", "dvclive/train/plots/metrics/val/loss.tsv"],
    "rank": ["models/ranker.ckpt", "dvclive/rank/metrics.json"],
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("same-bytes") / "project", PARAMS)
    dvc(repo, "repro", "split")
    return repo


def run_on(repo: Path, stage: str, environment: dict[str, str]) -> dict[str, bytes]:
    """Run `stage` as a machine whose environment says `environment` would; the bytes of what it writes."""
    result = subprocess.run(
        stage_command(repo, stage), cwd=repo, env=tool_env(repo, **environment), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return {path: (repo / path).read_bytes() for path in OUTPUTS[stage]}


@pytest.mark.parametrize("stage", ["train", "rank"])
def test_a_stage_writes_the_same_bytes_on_every_machine(repo, stage):
    section = yaml.safe_load((repo / "params.yaml").read_text())[stage]
    assert section["model"] == {"train": "bayes_mf", "rank": "ease"}[stage]  # the committed defaults
    assert section["threads"] > 0
    first, *others = (run_on(repo, stage, environment) for environment in MACHINES)
    for environment, written in zip(MACHINES[1:], others, strict=True):
        for path in OUTPUTS[stage]:
            assert written[path] == first[path], f"{path} differs with {environment}"
