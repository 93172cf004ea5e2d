"""A trained model with its id mappings: predicted ratings and top-N movies in MovieLens ids, at any revision.

`load_trained()` reads the train stage's checkpoint, the prepared users and movies tables
(the id <-> index mappings, titles, genres) and the training ratings (what each user has
already rated, how popular each movie is), from the workspace or, through `dvc.api`, from
any git revision or experiment without checking it out. The CLI (`cli.py`) and the
evaluate stage's ranking metrics are layers over the `TrainedModel` it returns.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor

from .errors import PipelineError
from .models import RatingModel, load_model
from .schema import MOVIE_INDEX, MOVIES_SCHEMA, USER_INDEX

# What load_trained reads, as dvc.yaml names them (tests/unit/test_trained.py checks they are its outs).
CHECKPOINT = "models/model.ckpt"
USERS = "data/prepared/users.parquet"
MOVIES = "data/prepared/movies.parquet"
TRAIN = "data/split/train.parquet"
MOVIE_DETAILS = {name: MOVIES_SCHEMA[name] for name in ("title", "genres")}
# Scores held at once while ranking (users x movies): 16 MiB of float32, whatever the catalogue's size.
SCORES_PER_CHUNK = 1 << 22


class UnknownIdError(PipelineError):
    """A user or movie id the trained model has no index for."""


@dataclass
class TrainedModel:
    """A model in eval mode, the id mappings, and each user's training movies (CSR, by user index)."""

    model: RatingModel
    users: pl.DataFrame  # userId, userIdMapped
    movies: pl.DataFrame  # movieId, movieIdMapped, title, genres; sorted by movieIdMapped
    rated_start: Tensor  # user index u rated rated_movies[rated_start[u]:rated_start[u + 1]] in training
    rated_movies: Tensor
    movie_ratings: Tensor  # training ratings per movie index: popularity
    train_mean: float

    @property
    def n_movies(self) -> int:
        return self.movies.height

    def predict(self, pairs: pl.DataFrame, cold_start: bool = False) -> pl.DataFrame:
        """`pairs` (userId, movieId) with a `predicted_rating` column, in the same order.

        An unknown user or movie raises UnknownIdError; with `cold_start` its pair gets the
        training-mean rating (the baseline's prediction) instead.
        """
        pairs = pairs.select(pl.col("userId").cast(pl.Int64), pl.col("movieId").cast(pl.Int64))
        indexed = self._index(pairs, "userId", self.users, USER_INDEX, cold_start)
        indexed = self._index(indexed, "movieId", self.movies, MOVIE_INDEX, cold_start)
        known = indexed[USER_INDEX].is_not_null() & indexed[MOVIE_INDEX].is_not_null()
        users = torch.from_numpy(indexed[USER_INDEX].fill_null(0).to_numpy().astype(np.int64))
        movies = torch.from_numpy(indexed[MOVIE_INDEX].fill_null(0).to_numpy().astype(np.int64))
        predicted = np.empty(len(users), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(users), SCORES_PER_CHUNK):
                chunk = slice(start, start + SCORES_PER_CHUNK)
                predicted[chunk] = self.model(users[chunk], movies[chunk]).numpy()
        predicted[~known.to_numpy()] = self.train_mean
        return pairs.with_columns(predicted_rating=pl.Series(predicted, dtype=pl.Float32))

    def recommend(self, user_ids: list[int], n: int = 10, cold_start: bool = False) -> pl.DataFrame:
        """The top `n` movies for each user by predicted rating, never one the user rated in training.

        Rows: userId, rank (1 = best), movieId, title, genres, predicted_rating. An unknown user
        raises UnknownIdError; with `cold_start` it gets the movies with the most training ratings
        (predicted_rating null: popularity, not the model, chose them).
        """
        if n < 1:
            raise PipelineError(f"recommend: n must be at least 1, got {n}")
        asked = pl.DataFrame({"userId": pl.Series(user_ids, dtype=pl.Int64)})
        indexed = self._index(asked, "userId", self.users, USER_INDEX, cold_start)
        known = indexed.filter(pl.col(USER_INDEX).is_not_null())
        user_indices = torch.from_numpy(known[USER_INDEX].to_numpy().astype(np.int64))
        scores, movie_indices = self.top_movies(user_indices, n)
        tables = [
            pl.DataFrame(
                {
                    "userId": np.repeat(known["userId"].to_numpy(), movie_indices.shape[1]),
                    "rank": np.tile(np.arange(1, movie_indices.shape[1] + 1), len(known)),
                    MOVIE_INDEX: movie_indices.reshape(-1).numpy().astype(np.uint32),
                    "predicted_rating": scores.reshape(-1).numpy(),
                },
                schema_overrides={"rank": pl.Int64, "predicted_rating": pl.Float32},
            ).filter(pl.col("predicted_rating").is_finite())  # a user who rated nearly everything has fewer
        ]
        unknown = indexed.filter(pl.col(USER_INDEX).is_null())["userId"].unique(maintain_order=True)
        if len(unknown):
            popular = self.popular_movies(n)
            tables.append(
                pl.DataFrame(
                    {
                        "userId": np.repeat(unknown.to_numpy(), len(popular)),
                        "rank": np.tile(np.arange(1, len(popular) + 1), len(unknown)),
                        MOVIE_INDEX: np.tile(popular.numpy().astype(np.uint32), len(unknown)),
                        "predicted_rating": None,
                    },
                    schema_overrides={"rank": pl.Int64, "predicted_rating": pl.Float32},
                )
            )
        recommended = pl.concat(tables)
        order = asked.unique(maintain_order=True).with_row_index("asked")
        return (
            recommended.join(order, on="userId")
            .sort("asked", "rank")
            .join(self.movies.select(MOVIE_INDEX, "movieId", "title", "genres"), on=MOVIE_INDEX, how="left")
            .select("userId", "rank", "movieId", "title", "genres", "predicted_rating")
        )

    def top_movies(self, user_indices: Tensor, n: int, by_popularity: bool = False) -> tuple[Tensor, Tensor]:
        """For each user index: the `n` best (score, movie index) over the movies it did not rate in training,
        best first; score -inf where fewer than `n` are left. The score is the predicted rating, or with
        `by_popularity` the movie's number of training ratings (the popularity baseline). Scored in chunks of users.
        """
        n = min(n, self.n_movies)
        every_movie = torch.arange(self.n_movies)
        users_per_chunk = max(1, SCORES_PER_CHUNK // self.n_movies)
        best_scores, best_movies = [torch.empty(0, n)], [torch.empty(0, n, dtype=torch.int64)]
        with torch.inference_mode():
            for start in range(0, len(user_indices), users_per_chunk):
                users = user_indices[start : start + users_per_chunk]
                if by_popularity:
                    scores = self.popularity().repeat(len(users), 1)
                else:
                    scores = self.model(users.repeat_interleave(self.n_movies), every_movie.repeat(len(users)))
                    scores = scores.view(len(users), self.n_movies)
                rows, movies = self.rated_pairs(users)
                scores[rows, movies] = -torch.inf
                top = torch.topk(scores, n, dim=1)
                best_scores.append(top.values)
                best_movies.append(top.indices)
        return torch.cat(best_scores), torch.cat(best_movies)

    def rated_pairs(self, user_indices: Tensor) -> tuple[Tensor, Tensor]:
        """(position in `user_indices`, movie index) of every training rating of those users."""
        starts, ends = self.rated_start[user_indices], self.rated_start[user_indices + 1]
        lengths = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(user_indices)), lengths)
        within = torch.arange(int(lengths.sum())) - (torch.cumsum(lengths, 0) - lengths).repeat_interleave(lengths)
        return rows, self.rated_movies[starts.repeat_interleave(lengths) + within]

    def popularity(self) -> Tensor:
        """Per movie index, a score that orders movies by training ratings, most first, ties by lower index."""
        tie_break = torch.arange(self.n_movies - 1, -1, -1, dtype=torch.float64)
        return self.movie_ratings.double() * self.n_movies + tie_break  # exact: whole numbers far below 2**53

    def popular_movies(self, n: int) -> Tensor:
        """The `n` movie indices with the most training ratings (ties: the lower index first)."""
        return torch.topk(self.popularity(), min(n, self.n_movies)).indices

    @staticmethod
    def _index(
        table: pl.DataFrame, id_column: str, mapping: pl.DataFrame, index: str, cold_start: bool
    ) -> pl.DataFrame:
        """`table` with the index of each id (null where unknown); unknown ids raise unless `cold_start`."""
        indexed = table.join(mapping.select(id_column, index), on=id_column, how="left", maintain_order="left")
        unknown = indexed.filter(pl.col(index).is_null())[id_column].unique(maintain_order=True)
        if len(unknown) and not cold_start:
            kind = "user" if id_column == "userId" else "movie"
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise UnknownIdError(
                f"{kind} {unknown[0]}{more} is not in the trained model ({mapping.height:,} {kind}s, "
                f"ids {mapping[id_column].min()}-{mapping[id_column].max()}); --cold-start predicts for it anyway"
            )
        return indexed


def load_trained(repo: str | Path = ".", rev: str | None = None) -> TrainedModel:
    """The model trained in `repo`'s workspace, or at git revision, branch, tag or experiment name `rev`.

    At a revision the files come through `dvc.api` (the DVC cache, else the remote): nothing is checked out.
    """
    read = _reader(Path(repo), rev)
    return trained_model(
        load_model(io.BytesIO(read(CHECKPOINT))),
        users=pl.read_parquet(io.BytesIO(read(USERS))),
        movies=pl.read_parquet(io.BytesIO(read(MOVIES))),
        train=pl.read_parquet(io.BytesIO(read(TRAIN)), columns=[USER_INDEX, MOVIE_INDEX, "rating"]),
    )


def trained_model(model: RatingModel, users: pl.DataFrame, movies: pl.DataFrame, train: pl.DataFrame) -> TrainedModel:
    """A TrainedModel from the tables the pipeline writes: prepared users and movies, the training ratings."""
    by_user = train.select(USER_INDEX, MOVIE_INDEX).sort(USER_INDEX, MOVIE_INDEX)
    user_indices = torch.from_numpy(by_user[USER_INDEX].to_numpy().astype(np.int64))
    rated_start = torch.zeros(users.height + 1, dtype=torch.int64)
    rated_start[1:] = torch.cumsum(torch.bincount(user_indices, minlength=users.height), 0)
    rated_movies = torch.from_numpy(by_user[MOVIE_INDEX].to_numpy().astype(np.int64))
    return TrainedModel(
        model=model,
        users=users.select("userId", USER_INDEX),
        movies=movies.with_columns(
            # Titles and genres where the data set had a movies file; null otherwise.
            *[pl.lit(None, dtype).alias(name) for name, dtype in MOVIE_DETAILS.items() if name not in movies.columns]
        )
        .select("movieId", MOVIE_INDEX, *MOVIE_DETAILS)
        .sort(MOVIE_INDEX),
        rated_start=rated_start,
        rated_movies=rated_movies,
        movie_ratings=torch.bincount(rated_movies, minlength=movies.height),
        train_mean=float(train["rating"].mean()) if train.height else float("nan"),
    )


def _reader(repo: Path, rev: str | None):
    """A function from a path in the project to its bytes, in the workspace or at `rev`; errors say which file."""
    if rev is None:

        def read(path: str) -> bytes:
            try:
                return (repo / path).read_bytes()
            except FileNotFoundError:
                raise PipelineError(f"{repo / path} not found: run `dvc repro` (or `dvc pull`) first") from None

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
