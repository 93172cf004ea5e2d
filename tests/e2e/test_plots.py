"""`dvc plots show` writes a page that headless Chromium draws with no network: every declared plot, offline;
and `dvc plots diff` of two revisions compares them: shared series drawn once, series named for people."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from harness import dvc, git
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
    assert len(titles) == 6
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


def marks(svg: str, kind: str) -> list[str]:
    """The aria-labels of the marks of one kind (`bar`, `point`, `tick`, ...) in a chart vl-convert drew."""
    found = re.findall(r'<path aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="([^"]*)"', svg)
    return [html.unescape(label) for label, role in found if role == kind]


def legend_labels(svg: str) -> list[str]:
    groups = re.findall(r'class="mark-text role-legend-label".*?</g>', svg, flags=re.S)
    return [html.unescape(text) for group in groups for text in re.findall(r"<text[^>]*>([^<]*)</text>", group)]


def test_plots_diff_draws_shared_series_once_and_names_series_for_people(project_repo):
    """Two revisions, the second a one-value model (global_mean: 100 % of its predictions in one half star)."""
    import vl_convert  # the report's renderer, the same Vega-Lite as the page

    repo = project_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["model"] = "global_mean"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "global_mean")
    diff = json.loads(dvc(repo, "plots", "diff", "HEAD~1", "HEAD", "--json").stdout)["data"]
    charts = {
        title: vl_convert.vegalite_to_svg(next(r["content"] for r in renderers if r["type"] == "vega"))
        for title, renderers in diff.items()
    }
    loss, shares, _, rmse, ndcg, _ = (charts[title] for title in declared_titles(repo))
    revisions = ["HEAD~1", "HEAD"]

    assert {"train", "validation"} <= set(legend_labels(loss)), legend_labels(loss)
    assert not [label for label in legend_labels(loss) if ".tsv" in label]

    # The test ratings' shares: one bar per half star (not one per revision); predictions as lines with points.
    actual = marks(shares, "bar")
    assert len(actual) == 10 and all("test ratings: actual" in label for label in actual), actual
    predicted = marks(shares, "point")
    assert len(predicted) == 10 * len(revisions) and all("rev: HEAD" in label for label in predicted), predicted
    histogram = json.loads((repo / "eval/plots/custom/rating_histogram.json").read_text())
    assert max(row["share"] for row in histogram if row["series"] == "predicted") == 1.0  # the spike
    # A square-root axis: the spike does not flatten the test ratings (on a linear axis the tallest bar
    # would be its share of the height, here its square root).
    heights = [float(h) for h in re.findall(r'aria-roledescription="bar" d="M[^h]*h[^v]*v([0-9.]+)', shares)]
    tallest = max(row["share"] for row in histogram if row["series"] == "actual")
    assert max(heights) / 300 == pytest.approx(tallest**0.5, abs=0.01)

    # By user activity: dots per revision, no bars from zero; NDCG's popularity baseline drawn once per bucket.
    for chart in (rmse, ndcg):
        assert not marks(chart, "bar")
        assert set(legend_labels(chart)) >= set(revisions)
    rows = json.loads((repo / "eval/plots/custom/ndcg_by_user_activity.json").read_text())
    filled = [row for row in rows if row["series"] == "popularity" and row["ndcg"] is not None]
    baseline = marks(ndcg, "tick")
    assert len(baseline) == len(filled) > 0 and all("baseline: popularity" in label for label in baseline), baseline
    assert "popularity" in legend_labels(ndcg)
    assert len(marks(ndcg, "point")) == len(revisions) * len(filled)
    buckets = json.loads((repo / "eval/plots/custom/rmse_by_user_activity.json").read_text())
    assert len(marks(rmse, "point")) == len(revisions) * len([row for row in buckets if row["rmse"] is not None])

    # One colour per revision, the same in every chart: DVC's colour anchor in every template.
    for plot in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]:
        template = next(iter(plot.values())).get("template", "linear")
        if (repo / ".dvc/plots" / f"{template}.json").is_file():
            assert "<DVC_METRIC_COLOR>" in (repo / ".dvc/plots" / f"{template}.json").read_text(), template
