"""The canonical tables every stage after download reads: their columns, types and the rating scale."""

from __future__ import annotations

import polars as pl

# MovieLens's scale: half stars from 0.5 to 5 (ML-100K and ML-1M use whole stars 1-5 within it).
RATING_MIN, RATING_MAX = 0.5, 5.0

# data/prepared/ratings.parquet: these, then the contiguous indices below (uint32, from 0), then SOURCE_ROW.
RATINGS_SCHEMA = {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float32, "timestamp": pl.Int64}
USER_INDEX, MOVIE_INDEX = "userIdMapped", "movieIdMapped"
# Each rating's record number in the release's ratings file (from 0, a header not counted): the order a
# release's own folds are defined by (split.strategy `given`). The split parts leave it out.
SOURCE_ROW = "source_row"
# Movies as every release's movies file is normalised to (genres: a list, never a placeholder).
MOVIES_SCHEMA = {"movieId": pl.Int64, "title": pl.String, "genres": pl.List(pl.String)}
