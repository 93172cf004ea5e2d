"""Time and peak memory of generating the synthetic data set (default: ML-25M's shape, 25 M ratings).

Each run happens in a fresh subprocess, so its peak resident memory (the kernel's
ru_maxrss of that child) is the generator's own and not this script's:

    PYTHONPATH=src python bench/synthetic_generation.py --ratings 25000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# ML-25M's shape: 25,000,095 ratings by 162,541 users on 62,423 movies.
ML_25M_USERS = 162_541
ML_25M_MOVIES = 62_423
TARGET_SECONDS = 60
TARGET_PEAK_GIB = 4


def child(args: argparse.Namespace) -> None:
    """Generate and write the data set, as the download stage does; print seconds and the row count."""
    from movielens_pipeline.params import parse_section, read_params_file
    from movielens_pipeline.synthetic import write_synthetic

    params = parse_section(
        "data",
        {
            **read_params_file()["data"],
            "dataset": "synthetic",
            "synthetic_ratings": args.ratings,
            "synthetic_users": args.users,
            "synthetic_movies": args.movies,
            "synthetic_rank": args.rank,
            "synthetic_seed": args.seed,
        },
    )
    started = time.perf_counter()
    summary = write_synthetic(params, Path(args.out) / "synthetic")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "ratings": summary["ratings"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, default=25_000_000)
    parser.add_argument("--users", type=int, default=ML_25M_USERS)
    parser.add_argument("--movies", type=int, default=ML_25M_MOVIES)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="synthetic-bench-") as out:
        command = [sys.executable, __file__, "--child", "--out", out]
        command += ["--ratings", str(args.ratings), "--users", str(args.users), "--movies", str(args.movies)]
        command += ["--rank", str(args.rank), "--seed", str(args.seed)]
        wall_started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - wall_started
        if result.returncode != 0:
            sys.exit(f"generation failed:\n{result.stderr}")
        # ru_maxrss of finished children, in KiB on Linux: the child's peak resident memory.
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        size_mib = sum(path.stat().st_size for path in Path(out).rglob("*") if path.is_file()) / 2**20
    report = {
        "ratings": measured["ratings"],
        "users": args.users,
        "movies": args.movies,
        "rank": args.rank,
        "generate_and_write_seconds": round(measured["seconds"], 2),
        "process_wall_seconds": round(wall, 2),
        "peak_rss_gib": round(peak_gib, 3),
        "written_mib": round(size_mib, 1),
        "within_targets": measured["seconds"] < TARGET_SECONDS and peak_gib < TARGET_PEAK_GIB,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
