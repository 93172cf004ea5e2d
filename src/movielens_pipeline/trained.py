"""A trained model with its id mappings: predicted ratings and top-N movies in MovieLens ids, at any revision.

`load_trained()` reads the train stage's checkpoint and the prepared users and movies tables
(the id <-> index mappings, titles, genres), from the workspace or, through `dvc.api`, from
any git revision or experiment without checking it out. Of the training ratings (what each user
has already rated, how popular each movie is, their mean) it reads only what a question needs,
when it is asked: `predict` none, `recommend` the asked users' own. The CLI (`cli.py`) and the
evaluate stage's ranking metrics are layers over the `TrainedModel` it returns.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor

from .data import csr_index, csr_rows, days_of
from .errors import PipelineError
from .inputs import read_index, read_ratings, scan_ratings
from .models import RatingModel, load_model
from .schema import MOVIE_INDEX, MOVIES_SCHEMA, RATING_MAX, RATING_MIN, USER_INDEX

# What load_trained reads, as dvc.yaml names them (tests/unit/test_trained.py checks they are its outs).
CHECKPOINT = "models/model.ckpt"
RANKER = "models/ranker.ckpt"  # the rank stage's: what `recommend` ranks with
USERS = "data/prepared/users.parquet"
MOVIES = "data/prepared/movies.parquet"
TRAIN = "data/split/train.parquet"
# The split's other parts: what a user rated beside training, which `recommend` never suggests either.
HELD_OUT = ("data/split/val.parquet", "data/split/test.parquet")
# The ensemble pipeline's blend (ensemble/dvc.yaml), served with the same tables: `load_trained(ensemble=True)`.
ENSEMBLE_CHECKPOINT = "ensemble/model.ckpt"
# The trained model's name in dvc.yaml's `artifacts:` (DVC's model registry; its path is CHECKPOINT), and the
# ensemble's in ensemble/dvc.yaml's (DVC names an artifact of a dvc.yaml in a folder `folder:name`).
ARTIFACT = "rating-model"
RANKER_ARTIFACT = "ranking-model"
ENSEMBLE_ARTIFACT = "ensemble:ensemble-model"
MOVIE_DETAILS = {name: MOVIES_SCHEMA[name] for name in ("title", "genres")}
# (user, movie) pairs scored at once: the models gather a row per pair and table, 256 MiB of
# float32 each at dimension 64, so memory stays bounded whatever the number of users or movies.
SCORES_PER_CHUNK = 1 << 20


def predicted_ratings(model: RatingModel, users: Tensor, movies: Tensor, days: Tensor | None = None) -> np.ndarray:
    """The model's rating of each (user index, movie index[, day]), float32, on the model's device, in chunks:
    the one way ratings are predicted, by the evaluate stage and by serving (`TrainedModel.predict`)."""
    return scored(model, model.user_seen.device, users, movies, days)


def ranking_scores(model: RatingModel, users: Tensor, movies: Tensor) -> np.ndarray:
    """The model's score of each (user index, movie index) that orders its recommendations (`ranking_score`): the
    predicted rating before its output form, so no tie where predictions clip at the scale's ends (a linear model's
    best movies all predicted 5) and a score for a model whose scores are not ratings (`ease`)."""
    return scored(model.ranking_score, model.user_seen.device, users, movies, None)


def scored(score: Callable, device: torch.device, users: Tensor, movies: Tensor, days: Tensor | None) -> np.ndarray:
    """`score(users, movies, days)` of each pair on `device`, SCORES_PER_CHUNK pairs at a time, as float32."""
    values = np.empty(len(users), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(users), SCORES_PER_CHUNK):
            chunk = slice(start, start + SCORES_PER_CHUNK)
            on_device = [None if column is None else column[chunk].to(device) for column in (users, movies, days)]
            values[chunk] = score(*on_device).float().cpu().numpy()
    return values


class UnknownIdError(PipelineError):
    """A user or movie id the trained model has no index for."""


@dataclass(frozen=True)
class IdIndex:
    """MovieLens ids -> the pipeline's contiguous indices, by binary search over the sorted ids."""

    kind: str  # "user" or "movie", for messages
    sorted_ids: np.ndarray  # int64, ascending
    index_of_sorted: np.ndarray  # int64: the index of sorted_ids[i]

    @classmethod
    def of(cls, table: pl.DataFrame, id_column: str, index_column: str, kind: str) -> IdIndex:
        """The index of a prepared users or movies table."""
        ordered = table.select(id_column, index_column).sort(id_column)
        return cls(
            kind, ordered[id_column].to_numpy().astype(np.int64), ordered[index_column].to_numpy().astype(np.int64)
        )

    def indices(self, ids: np.ndarray, cold_start: bool) -> np.ndarray:
        """The index of each id, -1 where unknown; an unknown id raises UnknownIdError unless `cold_start`."""
        if not len(self.sorted_ids):
            found = np.zeros(len(ids), dtype=bool)
            position = np.zeros(len(ids), dtype=np.int64)
        else:
            position = np.searchsorted(self.sorted_ids, ids).clip(max=len(self.sorted_ids) - 1)
            found = self.sorted_ids[position] == ids
        if not cold_start and not found.all():
            unknown = list(dict.fromkeys(ids[~found].tolist()))  # distinct, in order of appearance
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            span = f"ids {self.sorted_ids[0]}-{self.sorted_ids[-1]}" if len(self.sorted_ids) else "none"
            raise UnknownIdError(
                f"{self.kind} {unknown[0]}{more} is not in the trained model ({len(self.sorted_ids):,} "
                f"{self.kind}s, {span}); --cold-start predicts for it anyway"
            )
        return np.where(found, self.index_of_sorted[position], -1)


@dataclass(frozen=True)
class TrainingRatings:
    """The training ratings, read only as far as a question needs. The split leaves them ordered by user, so one
    user's are a row group or two of the Parquet file, not all 17.5 M at ML-25M's size."""

    ratings: pl.LazyFrame
    n_users: int
    n_movies: int
    # Reads the whole file as `inputs.read_ratings`, to name its first bad row; None: read and checked already.
    check_file: Callable[[], object] | None = None

    def read(self, *columns: str, users: Tensor | None = None) -> pl.DataFrame:
        """Those columns of every training rating, or of the ratings of `users` (user indices) only."""
        ratings = self.ratings if users is None else self.ratings.filter(pl.col(USER_INDEX).is_in(users.tolist()))
        read = ratings.select(columns).collect()
        valid = {
            "rating": pl.col("rating").is_between(RATING_MIN, RATING_MAX),
            USER_INDEX: pl.col(USER_INDEX).is_between(0, self.n_users - 1),
            MOVIE_INDEX: pl.col(MOVIE_INDEX).is_between(0, self.n_movies - 1),
        }
        all_valid = pl.all_horizontal(valid[column] for column in columns).fill_null(False).all()
        if self.check_file and not read.select(all_valid).item():
            self.check_file()
        return read


@dataclass
class TrainedModel:
    """A rating model in eval mode, the ranking model that recommends, the id mappings, and the training ratings
    (read as each question needs them)."""

    model: RatingModel
    user_index: IdIndex
    movie_index: IdIndex
    movies: pl.DataFrame  # movieId, title, genres; row i is movie index i
    train: TrainingRatings
    # Reads the ranking model (the rank stage's) when a question first needs it; None: the rating model ranks.
    read_ranker: Callable[[], RatingModel] | None = None
    # Reads every rating of the split (train, val, test) when `recommend` first needs it: a recommendation skips
    # what the user rated in any part. None: training's only (what evaluation skips).
    read_every_rating: Callable[[], TrainingRatings] | None = None

    @cached_property
    def ranker(self) -> RatingModel:
        """The model whose scores order recommendations: the ranking model, else the rating model."""
        return self.model if self.read_ranker is None else self.read_ranker()

    @cached_property
    def every_rating(self) -> TrainingRatings:
        """Every rating the user made that the pipeline holds (train, val, test): what serving must not suggest."""
        return self.train if self.read_every_rating is None else self.read_every_rating()

    @property
    def n_movies(self) -> int:
        return self.movies.height

    @property
    def n_users(self) -> int:
        return len(self.user_index.sorted_ids)

    @cached_property
    def movie_ratings(self) -> Tensor:
        """Training ratings per movie index: popularity."""
        movies = self.train.read(MOVIE_INDEX)[MOVIE_INDEX].to_numpy().astype(np.int64)
        return torch.bincount(torch.from_numpy(movies), minlength=self.n_movies)

    @cached_property
    def train_mean(self) -> float:
        """The mean training rating: what a cold start is predicted."""
        mean = self.train.read("rating")["rating"].mean()
        return float("nan") if mean is None else float(mean)

    def predict(self, pairs: pl.DataFrame, cold_start: bool = False) -> pl.DataFrame:
        """`pairs` (userId, movieId, optionally timestamp) with a `predicted_rating` column, in the same order.

        A pair with a timestamp (Unix seconds) is predicted as of that time, as the evaluate stage predicts a test
        rating (`bayes_mf`'s session biases, `timesvd`'s drift); without, as the model predicts a timeless pair.
        An unknown user or movie raises UnknownIdError; with `cold_start` its pair gets the
        training-mean rating (the baseline's prediction) instead.
        """
        timed = "timestamp" in pairs.columns
        pairs = pairs.select(
            pl.col("userId").cast(pl.Int64),
            pl.col("movieId").cast(pl.Int64),
            *([pl.col("timestamp").cast(pl.Int64)] if timed else []),
        )
        users = self.user_index.indices(pairs["userId"].to_numpy(), cold_start)
        movies = self.movie_index.indices(pairs["movieId"].to_numpy(), cold_start)
        known = (users >= 0) & (movies >= 0)
        days = days_of(pairs["timestamp"].to_numpy()) if timed else None
        predicted = predicted_ratings(
            self.model, torch.from_numpy(users.clip(min=0)), torch.from_numpy(movies.clip(min=0)), days
        )
        if not known.all():
            predicted[~known] = self.train_mean
        return pairs.with_columns(predicted_rating=pl.Series(predicted, dtype=pl.Float32))

    def recommend(self, user_ids: list[int], n: int = 10, cold_start: bool = False) -> pl.DataFrame:
        """The top `n` movies for each user by the ranker's scores, never one the user rated (in any part of the
        split: training, val or test).

        Rows: userId, rank (1 = best), movieId, title, genres, predicted_rating (the rating model's). An unknown
        user raises UnknownIdError; with `cold_start` it gets the movies with the most training ratings (popularity,
        not the ranker, chose them). Each user once, in the order asked.
        """
        if n < 1:
            raise PipelineError(f"recommend: n must be at least 1, got {n}")
        asked = np.array(list(dict.fromkeys(user_ids)), dtype=np.int64)
        user_indices = self.user_index.indices(asked, cold_start)
        known = torch.from_numpy(user_indices.clip(min=0))
        scores, movie_indices = self.top_movies(known, n, skipped=self.every_rating)
        unknown = torch.from_numpy(user_indices < 0)
        if unknown.any():  # popularity reads every training rating: only for a cold start
            scores[unknown] = 0.0  # popularity's choice
            movie_indices[unknown] = self.popular_movies(n)[: movie_indices.shape[1]]
        kept = ~torch.isneginf(scores)  # a user who rated nearly everything has fewer than n left
        movie_rows = movie_indices[kept].numpy()
        known_users = torch.from_numpy(user_indices.clip(min=0)).unsqueeze(1).expand_as(movie_indices)[kept]
        predicted = predicted_ratings(self.model, known_users, movie_indices[kept])
        if unknown.any():  # the baseline's rating, as `predict` gives a cold start
            predicted[unknown.unsqueeze(1).expand_as(kept)[kept].numpy()] = self.train_mean
        return pl.concat(
            [
                pl.DataFrame(
                    {
                        "userId": np.repeat(asked, kept.sum(dim=1).numpy()),
                        "rank": torch.nonzero(kept)[:, 1].numpy() + 1,
                    },
                    schema={"userId": pl.Int64, "rank": pl.Int64},
                ),
                self.movies[movie_rows],
                pl.DataFrame({"predicted_rating": predicted}),
            ],
            how="horizontal",
        )

    def top_movies(
        self, user_indices: Tensor, n: int, by: str = "ranker", skipped: TrainingRatings | None = None
    ) -> tuple[Tensor, Tensor]:
        """For each user index: the `n` best (score, movie index) over the movies it did not rate in training
        (in `skipped`, if given), best first; score -inf where fewer than `n` are left. Scored `by` the "ranker"
        or the rating "model" (`ranking_scores`), or by "popularity", the movie's number of training ratings
        (the baseline). In chunks of users.
        """
        if by not in ("ranker", "model", "popularity"):
            raise ValueError(f"top_movies: by is 'ranker', 'model' or 'popularity', got {by!r}")
        n = min(n, self.n_movies)
        rated_start, rated_movies = self.rated_index(user_indices, skipped or self.train)
        every_movie = torch.arange(self.n_movies)
        users_per_chunk = max(1, SCORES_PER_CHUNK // self.n_movies)
        best_scores, best_movies = [torch.empty(0, n)], [torch.empty(0, n, dtype=torch.int64)]
        with torch.inference_mode():
            for start in range(0, len(user_indices), users_per_chunk):
                users = user_indices[start : start + users_per_chunk]
                if by == "popularity":
                    scores = self.popularity().repeat(len(users), 1)
                else:
                    scorer = self.ranker if by == "ranker" else self.model
                    pairs = users.repeat_interleave(self.n_movies), every_movie.repeat(len(users))
                    scores = torch.from_numpy(ranking_scores(scorer, *pairs)).view(len(users), self.n_movies)
                rows, movies = rated_pairs(rated_start, rated_movies, users)
                scores[rows, movies] = -torch.inf
                top = torch.topk(scores, n, dim=1)
                best_scores.append(top.values.float())
                best_movies.append(top.indices)
        return torch.cat(best_scores), torch.cat(best_movies)

    def rated_index(self, user_indices: Tensor, ratings: TrainingRatings) -> tuple[Tensor, Tensor]:
        """The movies those users rated in `ratings` (their rows only, read now), by user index, as CSR: user u
        rated rated_movies[rated_start[u]:rated_start[u + 1]]."""
        rated = ratings.read(USER_INDEX, MOVIE_INDEX, users=user_indices)
        rated_start, order = csr_index(torch.from_numpy(rated[USER_INDEX].to_numpy().astype(np.int64)), self.n_users)
        return rated_start, torch.from_numpy(rated[MOVIE_INDEX].to_numpy().astype(np.int64))[order]

    def popularity(self) -> Tensor:
        """Per movie index, a score that orders movies by training ratings, most first, ties by lower index."""
        tie_break = torch.arange(self.n_movies - 1, -1, -1, dtype=torch.float64)
        return self.movie_ratings.double() * self.n_movies + tie_break  # exact: whole numbers far below 2**53

    def popular_movies(self, n: int) -> Tensor:
        """The `n` movie indices with the most training ratings (ties: the lower index first)."""
        return torch.topk(self.popularity(), min(n, self.n_movies)).indices


def rated_pairs(rated_start: Tensor, rated_movies: Tensor, user_indices: Tensor) -> tuple[Tensor, Tensor]:
    """(position in `user_indices`, movie index) of every training rating of those users, from the CSR of
    `TrainedModel.rated_index`."""
    rated, _ = csr_rows(rated_start, user_indices)
    lengths = rated_start[user_indices + 1] - rated_start[user_indices]
    return torch.repeat_interleave(torch.arange(len(user_indices)), lengths), rated_movies[rated]


def load_trained(
    repo: str | Path = ".", rev: str | None = None, artifact: str | None = None, ensemble: bool = False
) -> TrainedModel:
    """The models trained in `repo`'s workspace, or at git revision, branch, tag or experiment name `rev`, or at
    the registered version of `artifact` (dvc.yaml's `artifacts:`; see `artifact_revision`): the rating model (with
    `ensemble`, the ensemble pipeline's blend, ENSEMBLE_CHECKPOINT) and the ranker (RANKER, read when a question
    first ranks), both from the same revision.

    At a revision the files come through `dvc.api` (the DVC cache, else the remote): nothing is checked out.
    """
    checkpoint = ENSEMBLE_CHECKPOINT if ensemble else CHECKPOINT
    if artifact is not None:
        if rev is not None:
            raise PipelineError(f"give a revision ({rev}) or an artifact ({artifact}), not both")
        if ensemble:
            raise PipelineError(
                f"an artifact ({artifact}) names its own model file: give it, or the ensemble, not both"
            )
        rev, path = artifact_revision(Path(repo), artifact)
        checkpoint = checkpoint if path == RANKER else path  # a ranker's version: the rating model of its commit
    read = _reader(Path(repo), rev)
    at = "" if rev is None else f" at {artifact or rev}"

    def read_model(path: str) -> RatingModel:
        model_file = read(path)
        return load_model(io.BytesIO(model_file) if isinstance(model_file, bytes) else model_file, f"{path}{at}")

    model = read_model(checkpoint)
    users = read_index(read(USERS), f"{USERS}{at}", "user")
    movies = read_index(read(MOVIES), f"{MOVIES}{at}", "movie")
    sizes = users.height, movies.height
    train = ratings_of(read(TRAIN), f"{TRAIN}{at}", sizes)

    def read_every_rating() -> TrainingRatings:
        # Read only when `recommend` asks: `predict` needs none of them.
        parts = [train, *(ratings_of(read(path), f"{path}{at}", sizes) for path in HELD_OUT)]
        every = pl.concat([part.ratings.select(USER_INDEX, MOVIE_INDEX) for part in parts])

        def check_files() -> None:  # names the first file with a bad row
            for part in parts:
                part.check_file()

        return TrainingRatings(every, *sizes, check_files)

    return trained_model(
        model,
        users=users,
        movies=movies,
        train=train,
        read_ranker=partial(read_model, RANKER),
        read_every_rating=read_every_rating,
    )


def ratings_of(source: Path | bytes, name: str, sizes: tuple[int, int]) -> TrainingRatings:
    """A ratings table of the split, scanned (read as far as a question needs), its rows checked when read."""
    return TrainingRatings(scan_ratings(source, name, *sizes), *sizes, partial(read_ratings, source, name, *sizes))


def parse_artifact(artifact: str) -> tuple[str, str | None, str | None]:
    """`name`, `name@version` or `name#stage` (the model registry's notation) as (name, version, stage)."""
    name, at, version = artifact.partition("@")
    name, hash_sign, stage = name.partition("#")
    if not name or (at and not version) or (hash_sign and not stage) or (at and hash_sign):
        raise PipelineError(
            f"artifact: got '{artifact}'; expected NAME, NAME@VERSION or NAME#STAGE, e.g. {ARTIFACT}@v1.0.0"
        )
    return name, version or None, stage or None


def artifact_revision(repo: Path, artifact: str) -> tuple[str, str]:
    """The git revision and path of `artifact`: `name` (its latest version), `name@version` or `name#stage`.

    DVC's model registry: `name` is declared in dvc.yaml's `artifacts:`, a version is the git tag
    `name@v1.2.0`, a stage the tag `name#prod#1` (`gto register` / `gto assign` write them, or `git tag`).
    """
    name, version, stage = parse_artifact(artifact)
    import dvc.api
    from dvc.exceptions import DvcException
    from dvc.scm import RevError
    from gto.exceptions import GTOException

    try:
        found = dvc.api.artifacts_show(name, version=version, stage=stage, repo=str(repo))
    except GTOException:  # GTO reads the tags through git: no repository to read
        raise PipelineError(
            f"artifact '{artifact}': {repo} is not a git repository (an artifact's versions are git tags)"
        ) from None
    except (DvcException, RevError) as error:
        # No git tag registers that version or stage (or the tagged commit's dvc.yaml does not declare `name`).
        raise PipelineError(
            f"artifact '{artifact}' not found in {repo} ({type(error).__name__}): dvc.yaml declares "
            f"`{ARTIFACT}` and `{RANKER_ARTIFACT}`, ensemble/dvc.yaml `{ENSEMBLE_ARTIFACT}`, and a version is a "
            "git tag such as "
            f"`{ARTIFACT}@v1.0.0` (`git tag -a {ARTIFACT}@v1.0.0 -m ...` or `gto register {ARTIFACT}`); list "
            f"them with `git tag -l '{name}*'`"
        ) from None
    return found["rev"], found["path"]


def trained_model(
    model: RatingModel,
    users: pl.DataFrame,
    movies: pl.DataFrame,
    train: pl.DataFrame | TrainingRatings,
    read_ranker: Callable[[], RatingModel] | None = None,
    read_every_rating: Callable[[], TrainingRatings] | None = None,
) -> TrainedModel:
    """A TrainedModel from the tables the pipeline writes: prepared users and movies, the training ratings (read
    and checked, or scanned); `read_ranker` reads the ranking model (None: `model` ranks too), `read_every_rating`
    the split's every rating (None: recommendations skip training's only)."""
    if isinstance(train, pl.DataFrame):
        train = TrainingRatings(train.lazy(), users.height, movies.height)
    return TrainedModel(
        model=model,
        user_index=IdIndex.of(users, "userId", USER_INDEX, "user"),
        movie_index=IdIndex.of(movies, "movieId", MOVIE_INDEX, "movie"),
        movies=movies.with_columns(
            # Titles and genres where the data set had a movies file; null otherwise.
            *[pl.lit(None, dtype).alias(name) for name, dtype in MOVIE_DETAILS.items() if name not in movies.columns]
        )
        .sort(MOVIE_INDEX)
        .select("movieId", *MOVIE_DETAILS),
        train=train,
        read_ranker=read_ranker,
        read_every_rating=read_every_rating,
    )


def _reader(repo: Path, rev: str | None):
    """A function from a path in the project to the file: its path in the workspace (read as far as needed), or its
    bytes at `rev`; errors say which file."""
    if rev is None:

        def read(path: str) -> Path:
            if not (repo / path).exists():
                # The ensemble's files come from its own pipeline, which `dvc repro` does not run.
                build = "dvc repro ensemble/dvc.yaml" if path.startswith("ensemble/") else "dvc repro"
                raise PipelineError(f"{repo / path} not found: run `{build}` (or `dvc pull`) first")
            return repo / path

        return read

    import dvc.api
    from dvc.exceptions import DvcException
    from dvc.scm import RevError

    def read_at_rev(path: str) -> bytes:
        try:
            return dvc.api.read(path, repo=str(repo), rev=rev, mode="rb")
        except RevError:
            raise PipelineError(
                f"no revision '{rev}' in {repo}: not a commit, branch, tag or experiment name"
            ) from None
        except (DvcException, FileNotFoundError) as error:
            raise PipelineError(
                f"{path} at revision '{rev}' is in no DVC cache or remote here ({type(error).__name__}): "
                "`dvc push` it from where it was trained, or `dvc exp pull` the experiment"
            ) from None

    return read_at_rev
