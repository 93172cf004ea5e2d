"""`dvc plots show` writes a page that headless Chromium draws with no network: every declared plot, offline."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from harness import dvc
from images import png_pixels

WINDOW = (1400, 1800)  # wide enough for two plots side by side, tall enough for all five
RENDER_BUDGET_MS = 20_000  # Chromium's virtual time for scripts to run before the screenshot


def declared_titles(repo: Path) -> list[str]:
    return [next(iter(plot)) for plot in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    message = "Chromium not found: `apt-get install chromium` (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def headless(page: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium on `page` with every host name unresolvable, so a page that needs the network stays blank."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # tests and CI run as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--virtual-time-budget={RENDER_BUDGET_MS}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_plots_show_page_draws_every_declared_plot_offline(project_repo, plots_template, tmp_path):
    repo = project_repo
    dvc(repo, "plots", "show")
    page = repo / "dvc_plots/index.html"
    html = page.read_text()
    titles = declared_titles(repo)
    assert len(titles) == 5
    for title in titles:
        assert f'"text": "{title}"' in html, title
    assert "cdn.jsdelivr" not in html and "<script src=" not in html

    dom = headless(page, "--dump-dom").stdout
    # vega-embed marks each chart it has drawn; a failed script leaves only the empty divs.
    assert dom.count('class="vega-embed') == len(titles), dom[-2000:]
    assert "<canvas" in dom

    screenshot = tmp_path / "plots.png"
    headless(page, f"--screenshot={screenshot}")
    pixels = [row[i : i + 3] for row in png_pixels(screenshot.read_bytes()) for i in range(0, len(row), 3)]
    drawn = sum(pixel != b"\xff\xff\xff" for pixel in pixels) / len(pixels)
    assert drawn > 0.02, f"{screenshot}: only {drawn:.1%} of the page is not white"
    assert len(set(pixels)) > 50, f"{screenshot}: too few colours for five charts"
