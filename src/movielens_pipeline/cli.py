"""`movielens predict` and `movielens recommend`: the trained model from the shell, in MovieLens ids.

    movielens predict 1:50 1:172                    # predicted ratings of (user, movie) pairs
    movielens predict --pairs pairs.csv --out predicted.parquet   # with a timestamp column: as of that time
    movielens recommend 42 -n 10                    # user 42's top 10 by the ranker, never a movie they rated
    movielens recommend --users users.csv --rev my-experiment
    movielens recommend 42 --artifact rating-model@v1.0.0   # a registered model version (dvc.yaml's artifacts)
    movielens predict 1:50 --ensemble --rev main     # the ensemble pipeline's blend (ensemble/dvc.yaml)

A thin layer over `trained.load_trained` and `TrainedModel`: arguments in, a table out (CSV on
stdout, or the file `--out` names, CSV or Parquet by its suffix).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import polars as pl

from .atomic import atomic_path, writing
from .errors import PipelineError, run_stage

TABLE_SUFFIXES = (".csv", ".parquet")
MAX_ID = 2**63 - 1  # the ids' type in every table (Int64)


def main(argv: list[str] | None = None) -> None:
    """The `movielens` command."""
    args = parser().parse_args(argv)
    run_stage(lambda: args.run(args))


def parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per use, the same model options on each."""
    model_options = argparse.ArgumentParser(add_help=False)
    model_options.add_argument("--repo", type=Path, default=Path("."), help="the project (default: here)")
    which = model_options.add_mutually_exclusive_group()
    which.add_argument(
        "--rev", help="git commit, branch, tag or experiment name whose model to use (default: the workspace's)"
    )
    which.add_argument(
        "--artifact",
        metavar="NAME[@VERSION|#STAGE]",
        help="a registered model version (dvc.yaml's artifacts, git tags as `dvc artifacts get` reads them), "
        "e.g. rating-model (the latest version), rating-model@v1.0.0, rating-model#prod",
    )
    model_options.add_argument(
        "--ensemble",
        action="store_true",
        help="the ensemble pipeline's blend (ensemble/dvc.yaml) instead of the train stage's model",
    )
    model_options.add_argument(
        "--cold-start",
        action="store_true",
        help="answer for unknown ids instead of refusing them: the training mean (predict), popular movies (recommend)",
    )
    model_options.add_argument("--out", type=Path, help="write the table here (.csv or .parquet) instead of stdout")

    top = argparse.ArgumentParser(prog="movielens", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = top.add_subparsers(required=True, metavar="COMMAND")
    predict = commands.add_parser("predict", parents=[model_options], help="predicted ratings of (user, movie) pairs")
    predict.add_argument("pairs", nargs="*", metavar="USER:MOVIE", help="pairs of MovieLens ids, e.g. 1:50")
    predict.add_argument(
        "--pairs",
        dest="pairs_file",
        type=Path,
        help="a CSV or Parquet file with userId, movieId, and optionally timestamp (Unix seconds of each rating)",
    )
    predict.set_defaults(run=run_predict)
    recommend = commands.add_parser("recommend", parents=[model_options], help="the top N movies for users")
    recommend.add_argument("users", nargs="*", metavar="USER", help="MovieLens user ids")
    recommend.add_argument("--users", dest="users_file", type=Path, help="a CSV or Parquet file with a userId column")
    recommend.add_argument("-n", type=int, default=10, help="movies per user (default: 10)")
    recommend.set_defaults(run=run_recommend)
    return top


def run_predict(args: argparse.Namespace) -> None:
    check_output(args.out)
    if not args.pairs and args.pairs_file is None:
        raise PipelineError("predict: give USER:MOVIE pairs, or a file of them with --pairs")
    from_file = read_table(args.pairs_file, ("userId", "movieId"), optional=("timestamp",))
    if args.pairs and from_file and "timestamp" in from_file[0].columns:
        raise PipelineError(
            f"predict: {args.pairs_file} has times and USER:MOVIE pairs have none; give the pairs in it"
        )
    pairs = pl.concat(([pairs_from_arguments(args.pairs)] if args.pairs else []) + from_file)
    from .trained import load_trained  # torch and Lightning load only once the arguments are good

    trained = load_trained(args.repo, args.rev, args.artifact, args.ensemble)
    write_table(trained.predict(pairs, cold_start=args.cold_start), args.out)


def run_recommend(args: argparse.Namespace) -> None:
    check_output(args.out)
    for user in args.users:
        if not is_id(user):
            raise PipelineError(f"recommend: user '{user}': expected a whole number from 0 to {MAX_ID}")
    users = [int(user) for user in args.users]
    users += [user for table in read_table(args.users_file, ("userId",)) for user in table["userId"]]
    if not users:
        raise PipelineError("recommend: give user ids, or a file of them with --users")
    from .trained import load_trained

    trained = load_trained(args.repo, args.rev, args.artifact, args.ensemble)
    write_table(trained.recommend(users, args.n, cold_start=args.cold_start), args.out)


def pairs_from_arguments(pairs: list[str]) -> pl.DataFrame:
    """`USER:MOVIE` arguments as a (userId, movieId) table."""
    users, movies = [], []
    for pair in pairs:
        user, _, movie = pair.partition(":")
        if not (is_id(user) and is_id(movie)):
            raise PipelineError(
                f"predict: '{pair}' is not a pair of ids USER:MOVIE, e.g. 1:50 (each a whole number from 0 to {MAX_ID})"
            )
        users.append(int(user))
        movies.append(int(movie))
    return pl.DataFrame({"userId": users, "movieId": movies}, schema={"userId": pl.Int64, "movieId": pl.Int64})


def is_id(text: str) -> bool:
    """Whether a command-line argument is an id: plain ASCII digits (not '²' or '٣', which `int` takes), at most
    MAX_ID (a larger one fits no table)."""
    return text.isascii() and text.isdigit() and int(text) <= MAX_ID


def read_table(path: Path | None, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[pl.DataFrame]:
    """The whole-number columns of a CSV (with a header) or Parquet file, as Int64: `columns`, and those of
    `optional` it has; none without a path."""
    if path is None:
        return []
    if path.suffix not in TABLE_SUFFIXES:
        raise PipelineError(f"{path}: expected a .csv or .parquet file")
    try:
        table = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file") from None
    except (pl.exceptions.PolarsError, OSError) as error:
        raise PipelineError(f"{path}: not readable as {path.suffix[1:]}: {error}") from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise PipelineError(f"{path}: expected columns {', '.join(columns)}; missing {', '.join(missing)}")
    columns += tuple(column for column in optional if column in table.columns)
    for column in columns:
        values = table[column]
        if values.null_count():
            row = int(values.is_null().arg_max()) + 1
            raise PipelineError(f"{path}: row {row}: {column} is empty; expected {expected(column)}")
    try:
        ids = table.select(pl.col(column).cast(pl.Int64) for column in columns)
    except pl.exceptions.InvalidOperationError:
        raise PipelineError(f"{path}: the columns {', '.join(columns)} must hold whole numbers") from None
    for column in columns:
        # A cast truncates 1.9 to 1: refuse numbers that are not whole (Parquet floats; CSV text fails the cast).
        changed = table[column].cast(pl.Float64, strict=False) != ids[column].cast(pl.Float64)
        if changed.any():
            row = int(changed.arg_max()) + 1
            raise PipelineError(
                f"{path}: row {row}: {column} is {table[column][row - 1]!r}; expected {expected(column)}"
            )
    return [ids]


def expected(column: str) -> str:
    """What a column of an input table must hold, for messages."""
    return "whole Unix seconds" if column == "timestamp" else "a whole-number id"


def check_output(out: Path | None) -> None:
    """Refuse, before any work, an `--out` of another kind, or one that cannot be written: a folder, a path
    under a file or a missing folder, a folder this user may not write."""
    if out is None:
        return
    if out.suffix not in TABLE_SUFFIXES:
        raise PipelineError(f"{out}: expected a .csv or .parquet file to write")
    if out.is_dir():
        raise PipelineError(f"{out}: is a folder; expected the path of a file to write")
    if not out.parent.is_dir():
        raise PipelineError(f"{out}: {out.parent} is not an existing folder")
    if not os.access(out.parent, os.W_OK):
        raise PipelineError(f"{out}: the folder {out.parent} is not writable")


def write_table(table: pl.DataFrame, out: Path | None) -> None:
    """CSV on stdout, or the file `out` (CSV or Parquet by suffix, whole or not at all); CSV joins genres with '|'."""
    if "genres" in table.columns and (out is None or out.suffix == ".csv"):
        table = table.with_columns(pl.col("genres").list.join("|"))
    if out is None:
        sys.stdout.write(table.write_csv())
        return
    try:
        with atomic_path(out) as staging, writing(out, "the table"):
            table.write_parquet(staging) if out.suffix == ".parquet" else table.write_csv(staging)
    except OSError as error:  # a read-only file system, say: what check_output cannot see
        raise PipelineError(f"{out}: cannot be written: {error.strerror or error}") from None
    rows = f"{table.height:,} row" + ("" if table.height == 1 else "s")
    print(f"wrote {rows} to {out}", file=sys.stderr)  # stdout stays for tables


if __name__ == "__main__":
    main()
