"""The real pipeline at the seed's scale: wall time and peak RSS per stage, training speed and time to accuracy.

    .venv/bin/python bench/scale.py                        # 25 M synthetic ratings in ML-25M's shape
    .venv/bin/python bench/scale.py --source archive       # the same ratings as a generated ml-25m.zip (data.url)
    .venv/bin/python bench/scale.py --ratings 2000000      # smaller, for a quick look
    .venv/bin/python bench/scale.py --models als bayes_mf --set train.bayes_mf.sweeps=32 train.bayes_mf.burn_in=8
    .venv/bin/python bench/scale.py --set data.synthetic_exposure=1.0   # users rate what they like: ranking means more
    .venv/bin/python bench/scale.py --profile ml-25m-twin  # params.yaml as `dvc exp run -S profile=ml-25m-twin` has it

Copies the project (its git-tracked files) into a scratch folder, makes it a git repository,
changes only `data.*` in params.yaml (with `--profile`, composes params.yaml from conf/ with that
profile as `dvc exp run -S profile=<name>` does, `--set` on top as further `-S`), and runs
`dvc repro -s <stage>` for each stage in turn, each a child process whose peak RSS (DVC's and the
stage's, the larger) comes from wait4.
`--source archive` writes the generated ratings in ml-25m's exact layout (ratings.csv and
movies.csv, zipped under ml-25m/), so the download's checks and extraction and the CSV
parsing are timed too. Prints a markdown table and the run's metrics, the ranker's NDCG against
popularity's among them. With several `--models`, the data stages and the ranker run once and train
and evaluate once per model (`--set` changes params.yaml's keys first, as `dvc exp run -S` would).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import polars as pl
import yaml

from movielens_pipeline.profiles import compose_params

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ("check_params", "download", "preprocess", "split", "train", "rank", "evaluate")
# ML-25M's shape: 25,000,095 ratings by 162,541 users on 59,047 rated movies.
ML_25M_USERS, ML_25M_MOVIES = 162_541, 59_047


def copy_project(target: Path, data_params: dict) -> Path:
    """The project's tracked files (less its outputs) in a new git repository, `data_params` set."""
    files = subprocess.run(["git", "ls-files"], cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        if (PROJECT / name).is_file() and not name.startswith(("dvclive/", "eval/")) and name != "dvc.lock":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, target / name)
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["data"].update(data_params)
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "scale bench"]):
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *command], cwd=target)
    return target


def write_ml_25m_archive(folder: Path, synthetic: dict) -> tuple[Path, str]:
    """Generated ratings and movies as ml-25m.zip in the release's layout; returns the archive and its MD5."""
    sys.path.insert(0, str(PROJECT / "src"))
    from movielens_pipeline.params import parse_section, read_params_file
    from movielens_pipeline.synthetic import generate

    params = parse_section("data", {**read_params_file(PROJECT / "params.yaml")["data"], **synthetic})
    ratings, movies, _ = generate(params)
    staging = folder / "ml-25m"
    staging.mkdir(parents=True)
    ratings.select("userId", "movieId", "rating", "timestamp").write_csv(staging / "ratings.csv", float_precision=1)
    movies.with_columns(pl.col("genres").list.join("|")).write_csv(staging / "movies.csv")
    archive = folder / "ml-25m.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as bundle:
        for name in ("ratings.csv", "movies.csv"):
            bundle.write(staging / name, f"ml-25m/{name}")
    shutil.rmtree(staging)
    with archive.open("rb") as handle:
        return archive, hashlib.file_digest(handle, "md5").hexdigest()


def run_stage(repo: Path, stage: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of `dvc repro -s stage`, the stage's process included."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    started = time.perf_counter()
    process = subprocess.Popen([str(BIN / "dvc"), "repro", "-s", stage], cwd=repo, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"dvc repro -s {stage} failed with status {process.returncode}")
    return seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("synthetic", "archive"), default="synthetic")
    parser.add_argument("--ratings", type=int, default=25_000_000)
    parser.add_argument("--users", type=int, default=ML_25M_USERS)
    parser.add_argument("--movies", type=int, default=ML_25M_MOVIES)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    parser.add_argument("--models", nargs="+", help="train.model values, each trained and evaluated in turn")
    parser.add_argument(
        "--profile", help="compose params.yaml from conf/ with this profile (its data set, not --ratings)"
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="params, e.g. train.als.embedding_dim=32"
    )
    args = parser.parse_args()
    synthetic = {"synthetic_ratings": args.ratings, "synthetic_users": args.users, "synthetic_movies": args.movies}
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        data_params = {"dataset": "synthetic", **synthetic}
        if args.source == "archive":
            started = time.perf_counter()
            # In a child: a process forked by this one would start with its peak RSS (ru_maxrss is inherited).
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                archive, md5 = pool.submit(write_ml_25m_archive, root / "mirror", synthetic).result()
            print(
                f"wrote {archive} ({archive.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s"
            )
            data_params = {"dataset": "ml-25m", "url": str(archive), "md5": md5}
        if args.profile:
            repo = copy_project(root / "project", {})
            compose_params([f"profile={args.profile}", *args.set], repo / "params.yaml", repo / "conf")
            identity = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
            subprocess.run(["git", *identity, "commit", "-q", "-am", f"profile {args.profile}"], cwd=repo, check=True)
        else:
            repo = copy_project(root / "project", data_params)
            set_params(repo, args.set)
        data_timings = {stage: run_stage(repo, stage) for stage in STAGES[:4]}
        data_timings["rank"] = run_stage(repo, "rank")  # the ranker trains once, whatever the rating models
        for model in args.models or [None]:
            if model is not None:
                set_params(repo, [f"train.model={model}"])
            timings = data_timings | {stage: run_stage(repo, stage) for stage in ("train", "evaluate")}
            report(repo, timings, args)


def set_params(repo: Path, assignments: list[str]) -> None:
    """Set `section.key[.key]=value` in the copy's params.yaml (values as YAML)."""
    params = assigned(yaml.safe_load((repo / "params.yaml").read_text()), assignments)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assigned(params: dict, assignments: list[str]) -> dict:
    """`params` (params.yaml's sections) with each `section.key[.key]=value` set in place, values as YAML."""
    for assignment in assignments:
        path, value = assignment.split("=", 1)
        *parents, key = path.split(".")
        owner = params
        for parent in parents:
            owner = owner[parent]
        owner[key] = yaml.safe_load(value)
    return params


def report(repo: Path, timings: dict[str, tuple[float, float]], args: argparse.Namespace) -> None:
    """The markdown table of the stages and the model's training and test figures."""
    metrics = json.loads((repo / "eval" / "metrics.json").read_text())
    training = json.loads((repo / "dvclive" / "train" / "metrics.json").read_text())
    timings_file = repo / "dvclive" / "train" / "timings.json"  # the wall-clock figures, kept out of metrics.json
    if timings_file.exists():
        training |= json.loads(timings_file.read_text())
    logged = yaml.safe_load((repo / "dvclive" / "train" / "params.yaml").read_text())
    used = logged[logged["model"]]  # the model's settings, `auto` resolved
    ratings = json.loads((repo / "data" / "prepared" / "dataset.json").read_text())["ratings"]
    print(f"\n`{logged['model']}`, {args.profile or args.source}, {ratings:,} ratings, {os.cpu_count()} CPUs\n")
    print("| stage | wall time | peak RSS |\n|---|---|---|")
    for stage, (seconds, gib) in timings.items():
        print(f"| {stage} | {seconds:.0f} s | {gib:.2f} GiB |")
    print(f"| all | {sum(seconds for seconds, _ in timings.values()) / 60:.1f} min | |")
    floor = metrics.get("noise_floor", {}).get("rmse")
    settings = ", ".join(f"{key} {value}" for key, value in used.items())
    print(
        f"\ntraining ({settings}): {training['epochs']} epochs (best {training['best_epoch']}), "
        f"{training['ratings_per_second'] / 1e6:.2f} M ratings/s, {training['train_seconds']:.0f} s in all, "
        f"{training['seconds_to_1pct_of_best_val']:.0f} s to within 1 % of the best val RMSE"
    )
    ratio = f" ({metrics['test']['rmse'] / floor:.3f}x the noise floor {floor:.4f})" if floor else ""
    print(
        f"test RMSE {metrics['test']['rmse']:.4f}{ratio}, training-mean baseline {metrics['baseline']['rmse']:.4f}",
        flush=True,
    )
    ranker = json.loads((repo / "dvclive" / "rank" / "metrics.json").read_text())
    ranker_timings = repo / "dvclive" / "rank" / "timings.json"
    if ranker_timings.exists():
        ranker |= json.loads(ranker_timings.read_text())
    ranker_params = yaml.safe_load((repo / "dvclive" / "rank" / "params.yaml").read_text())
    ndcg = next(key for key in metrics["ranker"] if key.startswith("ndcg@"))
    ours, popular = metrics["ranker"][ndcg], metrics["popularity"][ndcg]
    name = ranker_params["model"]
    settings = ", ".join(f"{key} {value}" for key, value in ranker_params[name].items())
    seconds = ranker.get("train_seconds", float("nan"))
    print(
        f"ranker `{name}` ({settings}): {ranker['epochs']} sweeps or epochs, {seconds:.0f} s; test {ndcg} "
        f"{ours:.4f}, popularity {popular:.4f} ({ours / popular:.2f}x), {metrics['ranking']['users']} users",
        flush=True,
    )


if __name__ == "__main__":
    main()
