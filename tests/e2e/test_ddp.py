"""Data-parallel training with Lightning's DDP on CPU processes (gloo on 127.0.0.1), through the real dvc."""

from __future__ import annotations

import json
import socket
import subprocess

import yaml
from harness import dvc, stage_command, tool_env

from movielens_pipeline.models import load_model


def test_two_processes_train_one_model_as_well_as_one_process(project_repo):
    # DDP trains dense tables with one Adam (the CPU's one-process default is sparse rows and RowAdam,
    # another optimiser): the one-process run to compare with is DDP's own, on one device.
    repo = project_repo
    dvc(repo, "exp", "run", "-S", "train.devices=1", "-S", "train.strategy=ddp", "--name", "ddp-1")
    one_process = json.loads((repo / "eval/metrics.json").read_text())["test"]["rmse"]

    result = dvc(repo, "exp", "run", "-S", "train.devices=2", "-S", "train.strategy=ddp", "--name", "ddp-2")
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    two_processes = json.loads((repo / "eval/metrics.json").read_text())["test"]["rmse"]
    print(f"test RMSE: one process {one_process:.6f}, two processes {two_processes:.6f}")
    assert abs(two_processes - one_process) / one_process < 0.01

    # The first process alone wrote the outputs: one checkpoint that loads, one curve row per epoch.
    load_model(repo / "models/model.ckpt")
    assert yaml.safe_load((repo / "dvclive/train/params.yaml").read_text())["sparse_tables"] is False  # dense: DDP
    summary = json.loads((repo / "dvclive/train/metrics.json").read_text())
    curve = (repo / "dvclive/train/plots/metrics/val/loss.tsv").read_text().strip().splitlines()
    assert len(curve) == summary["epochs"] + 1
    left = sorted(path.name for path in (repo / "models").iterdir())
    assert left == [".gitignore", "model.ckpt", "ranker.ckpt"]  # no scratch left
    assert result.stdout.count("best epoch") == 1


def test_two_nodes_started_separately_train_one_model(project_repo, tmp_path):
    # As a cluster starts them: the same command on each "node", told its rank and where node 0 listens.
    repo = project_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"] |= {"num_nodes": 2, "devices": 1, "strategy": "ddp"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "models/model.ckpt").unlink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Each node's output goes to a file: read from pipes one after the other, a node whose pipe
    # filled up would wait on the reader, and the other node on it.
    logs = [tmp_path / f"node-{rank}.log" for rank in (0, 1)]
    nodes = []
    for rank, log in enumerate(logs):
        with log.open("w") as output:
            env = tool_env(repo, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank))
            nodes.append(
                subprocess.Popen(
                    stage_command(repo, "train"), cwd=repo, env=env, stdout=output, stderr=subprocess.STDOUT
                )
            )
    try:
        for node in nodes:
            node.wait(timeout=300)
    finally:
        for node in nodes:
            node.kill()
    outputs = [log.read_text() for log in logs]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "MEMBER: 2/2" in outputs[0] + outputs[1]
    assert "best epoch" in outputs[0] and "best epoch" not in outputs[1]  # node 0 alone wrote the outputs
    load_model(repo / "models/model.ckpt")
    assert yaml.safe_load((repo / "dvclive/train/params.yaml").read_text())["sparse_tables"] is False
    summary = json.loads((repo / "dvclive/train/metrics.json").read_text())
    mean_baseline = json.loads((repo / "eval/metrics.json").read_text())["baseline"]["rmse"] ** 2
    assert summary["best_val_mse"] < 0.9 * mean_baseline  # it learned
