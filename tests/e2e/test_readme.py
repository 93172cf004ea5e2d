"""The README's commands, run as a reader would type them: a command that no longer runs fails CI.

The blocks run here are those that need no download from GroupLens and take seconds: asking the
trained model, on the end-to-end project (a generated data set of ML-100K's ids)."""

from __future__ import annotations

import re
import subprocess

from harness import PROJECT, tool_env

README = PROJECT / "README.md"


def commands_under(heading: str) -> list[str]:
    """The lines of the first bash block after the README's `heading`, comments stripped."""
    section = README.read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_commands_that_ask_the_trained_model_run(project_repo):
    commands = commands_under("## Ask the trained model")
    assert any(command.startswith("movielens recommend") for command in commands)
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command], cwd=project_repo, env=tool_env(project_repo), capture_output=True, text=True
        )
        assert result.returncode == 0, f"README: `{command}` failed:\n{result.stdout}\n{result.stderr}"
    assert (project_repo / "predicted.parquet").is_file()
