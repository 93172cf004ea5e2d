"""The pull-request report, made locally: params and metrics diffs against a revision, and the plots as images.

`python -m movielens_pipeline.report main` (or `make report REV=main`) writes report/report.md and
report/plots/*.png, and prints the markdown: what the CI comment on a pull request will say.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import PipelineError, run_stage

# The first line of the comment; CI finds its earlier comment by it and edits that one.
MARKER = "<!-- movielens-pipeline-dvc-report -->"
DEFAULT_OUT = Path("report")
PLOT_SCALE = 1.5  # PNG pixels per Vega-Lite pixel: sharp on high-density screens, still small files


def run_dvc(*args: str) -> str:
    """stdout of `dvc ARGS` run by this Python (so the venv's dvc, activated or not); failures raise."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"dvc {' '.join(args)} failed:\n{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def slug(title: str) -> str:
    """A file name for a plot title: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_plots(rev: str, folder: Path) -> list[tuple[str, str]]:
    """Each declared plot, workspace overlaid on `rev`, as folder/<slug>.png; returns (title, file name) pairs."""
    import vl_convert  # imported here: only the report needs it, and it is large

    plots = json.loads(run_dvc("plots", "diff", rev, "--json"))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for title, renderers in plots.get("data", {}).items():
        for renderer in renderers:
            if renderer.get("type") != "vega":
                continue
            name = f"{slug(title)}.png"
            (folder / name).write_bytes(vl_convert.vegalite_to_png(renderer["content"], scale=PLOT_SCALE))
            written.append((title, name))
    return written


def sorted_table(markdown: str, key: Callable[[str], Any] | None = None) -> str:
    """A markdown table with its rows sorted (by `key` of each row's line): dvc lists metrics files in no fixed
    order, the comment should not."""
    lines = markdown.strip().splitlines()
    return "\n".join(lines[:2] + sorted(lines[2:], key=key))


def metrics_table(markdown: str) -> str:
    """`dvc metrics diff --md` with the test metrics first (eval/metrics.json's `test.*`), then the rest of the
    evaluation, then training's; by path and name within each."""

    def key(line: str) -> tuple:
        path, metric = ([cell.strip() for cell in line.strip().strip("|").split("|")] + ["", ""])[:2]
        return (not metric.startswith("test."), not path.startswith("eval/"), path, metric, line)

    return sorted_table(markdown, key)


def section(heading: str, markdown: str, when_empty: str) -> str:
    return f"### {heading}\n\n{markdown.strip() or when_empty}\n"


def build_report(rev: str, out: Path, image_url: str | None = None) -> str:
    """Write out/report.md and out/plots/*.png comparing the workspace with `rev`; return the markdown.

    Images are linked as `image_url/<name>.png`, or relative to report.md when `image_url` is None.
    """
    params = sorted_table(run_dvc("params", "diff", rev, "--md"))
    metrics = metrics_table(run_dvc("metrics", "diff", rev, "--md"))
    images = render_plots(rev, out / "plots")
    prefix = (image_url or "plots").rstrip("/")
    figures = "\n\n".join(f"![{title}]({prefix}/{name})" for title, name in images)
    report = "\n".join(
        [
            MARKER,
            f"## DVC report: workspace vs `{rev}`\n",
            section("Params", params, f"No params differ from `{rev}`."),
            section("Metrics", metrics, f"No metrics differ from `{rev}`."),
            section("Plots", figures, "No plots declared."),
        ]
    )
    (out / "report.md").write_text(report, encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", nargs="?", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for report.md and plots/")
    parser.add_argument("--image-url", help="URL the plot images will be published under (CI); default: relative")
    args = parser.parse_args(argv)
    print(build_report(args.rev, args.out, args.image_url))


if __name__ == "__main__":
    run_stage(main)
