"""A stage that cannot write (a full disk, or a file-size limit as `ulimit -f` sets) stops with one line naming
the file and what it was writing, and leaves the earlier outputs as they were, nothing half-written beside them."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
from pathlib import Path

import pytest
import yaml
from harness import stage_command, stage_outputs


def snapshot(repo: Path, paths: list[str]) -> dict[str, str]:
    """Every file under `paths` and beside them (partial files included), with its MD5."""
    found = {}
    for parent in {(repo / path).parent for path in paths}:
        for file in sorted(parent.rglob("*")):
            if file.is_file():
                found[str(file.relative_to(repo))] = hashlib.md5(file.read_bytes()).hexdigest()
    return found


# Each limit is below the size of a file the stage writes. Train's leaves room for DVC's state
# database (dvclive opens it; a few hundred KB) but not for the checkpoint (made larger here);
# evaluate's files are all small, so its limit stops DVC's database, which a full disk would too.
@pytest.mark.parametrize(
    ("name", "limit", "named"),
    [
        ("download", 4096, "data/raw: cannot write the download of ml-100k"),
        ("preprocess", 4096, "data/prepared/ratings.parquet: cannot write the prepared ratings"),
        ("split", 4096, "data/split/train.parquet: cannot write the train ratings"),
        ("train", 1_000_000, "models/model.ckpt: cannot write the best checkpoint"),
        ("evaluate", 1024, "eval: cannot write the stage's output"),
    ],
)
def test_a_stage_that_cannot_write_stops_with_one_line_and_keeps_the_earlier_output(project_repo, name, limit, named):
    if name == "train":  # a checkpoint of about 3.7 MB: 450 users and movies x 2,048 float32
        params = yaml.safe_load((project_repo / "params.yaml").read_text())
        params["train"] |= {"max_epochs": 1}
        params["train"]["biased_mf"] |= {"embedding_dim": 2048}
        (project_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = snapshot(project_repo, stage_outputs(project_repo, name))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = stage_command(project_repo, name)
    result = subprocess.run(
        command,
        cwd=project_repo,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith(f"error: {named}"), lines[0]
    assert lines[0].endswith("nothing was changed: free space (or raise the limit) and rerun")
    assert snapshot(project_repo, stage_outputs(project_repo, name)) == before
