"""Build the HTML template `dvc plots show` fills, with Vega inlined so the page renders offline.

DVC's own page loads Vega from a CDN, which is blank wherever that CDN is unreachable. This
fetches pinned releases from the npm registry once, at set-up (`npm pack`, so npm's registry
and proxy settings apply), checks each tarball against its pinned SHA-512 and inlines the
browser builds into one self-contained template. Usage: python scripts/offline_plots_template.py OUT
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# name, version, npm "integrity" of the tarball, browser build inside it. All BSD-3-Clause.
# The majors DVC's own page uses (vega 5, vega-lite 5, vega-embed 6), so its specs render as upstream.
PACKAGES = (
    (
        "vega",
        "5.33.1",
        "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
        "package/build/vega.min.js",
    ),
    (
        "vega-lite",
        "5.23.0",
        "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
        "package/build/vega-lite.min.js",
    ),
    (
        "vega-embed",
        "6.29.0",
        "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
        "package/build/vega-embed.min.js",
    ),
)

# DVC replaces {refresh_tag} and {plot_divs}; without a {scripts} placeholder it adds no CDN tags.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>MovieLens pipeline plots</title>
{scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
        .notice {{ background: #fff3cd; padding: 0.5em 1em; }}
    </style>
</head>
<body>
{notice}
    {{plot_divs}}
</body>
</html>
"""

# Only when npm is missing: a page that works online, and says how to make it work offline.
CDN_NOTICE = (
    '    <p class="notice">npm was not found at set-up, so this page loads Vega from a CDN and stays '
    "blank offline. Install npm and run <code>make plots-template</code>.</p>"
)


def pack(workdir: Path, name: str, version: str, integrity: str) -> Path:
    """Download `name@version` with `npm pack` into `workdir` and check it against `integrity`."""
    subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--silent", "--pack-destination", str(workdir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tarball = workdir / f"{name}-{version}.tgz"
    algorithm, expected = integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if actual != expected:
        sys.exit(f"error: {tarball.name}: {algorithm} {actual} does not match the pinned {expected}")
    return tarball


def inline_script(tarball: Path, member: str) -> str:
    with tarfile.open(tarball) as archive:
        source = archive.extractfile(member).read().decode("utf-8")
    # A literal "</script" inside the code would end the element early.
    return "<script>\n" + source.replace("</script", "<\\/script") + "\n</script>"


def build(out: Path) -> None:
    if shutil.which("npm") is None:
        cdn = "\n".join(
            f'    <script src="https://cdn.jsdelivr.net/npm/{name}@{version}"></script>'
            for name, version, _, _ in PACKAGES
        )
        page = PAGE.format(scripts=cdn, notice=CDN_NOTICE)
        print("warning: npm not found: the plots page will load Vega from a CDN", file=sys.stderr)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            scripts = [
                inline_script(pack(Path(workdir), name, version, integrity), member)
                for name, version, integrity, member in PACKAGES
            ]
        page = PAGE.format(scripts="\n".join(scripts), notice="")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial")
    staging.write_text(page, encoding="utf-8")
    os.replace(staging, out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    build(Path(sys.argv[1]))
