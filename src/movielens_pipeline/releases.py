"""What each MovieLens release is: where it lives, its checksums and its files' layouts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import write_json
from .datasets import RELEASE_NAMES
from .errors import PipelineError

GROUPLENS = "https://files.grouplens.org/datasets/movielens"

# How a release writes its movies table (parsed by preprocess.read_movies).
U_ITEM = "u.item"  # ml-100k: pipe-separated, ISO-8859-1, title with year, 19 genre flags
MOVIES_DAT = "movies.dat"  # ml-1m, ml-10m: MovieID::Title::Genres, ISO-8859-1
MOVIES_CSV = "movies.csv"  # ml-20m and later: movieId,title,genres, UTF-8, quoted titles
RECBOLE_ITEM = "recbole.item"  # the recbole wheel's ml-100k.item: tab-separated, title and year apart
PARQUET = "parquet"  # the synthetic twin writes both tables as Parquet

MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class WheelMirror:
    """A copy of a release's files inside a wheel on PyPI, fetched with pip."""

    requirement: str
    sha256: str  # of the .whl file
    member: str  # path of the ratings file inside the wheel
    header_lines: int  # lines to drop so that the bytes equal the release's own file
    movies_member: str | None = None  # path of the movies file inside the wheel, copied as is
    movies_format: str = RECBOLE_ITEM


@dataclass(frozen=True)
class RatingsLayout:
    """How a release writes its ratings file."""

    name: str  # the ratings format a manifest names
    separator: str
    has_header: bool
    # Any extracted member larger than this is refused (a zip bomb, or the wrong member).
    max_bytes: int


@dataclass(frozen=True)
class Release:
    """One GroupLens rating release."""

    name: str
    archive_url: str
    # Published MD5 of the archive, pinned where known; None: the `.md5` beside the archive decides.
    archive_md5: str | None
    folder: str  # top folder inside the archive (ml-10m's differs from its name)
    ratings_file: str  # file name inside `folder`, and the name written to data/raw/
    movies_file: str
    movies_format: str
    ratings_sha256: str | None  # pinned content of the ratings file, where known
    layout: RatingsLayout
    mirror: WheelMirror | None = None

    @property
    def ratings_member(self) -> str:
        return f"{self.folder}/{self.ratings_file}"

    @property
    def movies_member(self) -> str:
        return f"{self.folder}/{self.movies_file}"


TAB = RatingsLayout(name="tab", separator="\t", has_header=False, max_bytes=64 * MIB)
DOUBLE_COLON = RatingsLayout(name="double-colon", separator="::", has_header=False, max_bytes=GIB)
CSV = RatingsLayout(name="csv", separator=",", has_header=True, max_bytes=2 * GIB)
# ml-latest keeps growing (about 0.9 GB of ratings.csv in 2023): leave it room.
CSV_GROWING = RatingsLayout(name="csv", separator=",", has_header=True, max_bytes=8 * GIB)
# Text ratings formats by the name a manifest gives them (the size caps matter to download only).
RATINGS_LAYOUTS = {layout.name: layout for layout in (TAB, DOUBLE_COLON, CSV)}


def _csv_release(name: str, md5: str | None, layout: RatingsLayout = CSV) -> Release:
    return Release(
        name=name,
        archive_url=f"{GROUPLENS}/{name}.zip",
        archive_md5=md5,
        folder=name,
        ratings_file="ratings.csv",
        movies_file="movies.csv",
        movies_format=MOVIES_CSV,
        ratings_sha256=None,
        layout=layout,
    )


def _dat_release(name: str, md5: str, folder: str) -> Release:
    return Release(
        name=name,
        archive_url=f"{GROUPLENS}/{name}.zip",
        archive_md5=md5,
        folder=folder,
        ratings_file="ratings.dat",
        movies_file="movies.dat",
        movies_format=MOVIES_DAT,
        ratings_sha256=None,
        layout=DOUBLE_COLON,
    )


RELEASES = {
    "ml-100k": Release(
        name="ml-100k",
        archive_url=f"{GROUPLENS}/ml-100k.zip",
        archive_md5="0e33842e24a9c977be4e0107933c0723",
        folder="ml-100k",
        ratings_file="u.data",
        movies_file="u.item",
        movies_format=U_ITEM,
        # u.data as published: 100,000 lines, 1,979,173 bytes. The wheel's copy minus its
        # header line has exactly these bytes, so both sources give the same ratings.
        ratings_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        layout=TAB,
        mirror=WheelMirror(
            requirement="recbole==1.2.1",
            sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            member="recbole/dataset_example/ml-100k/ml-100k.inter",
            header_lines=1,
            movies_member="recbole/dataset_example/ml-100k/ml-100k.item",
        ),
    ),
    "ml-1m": _dat_release("ml-1m", "c4d9eecfca2ab87c1945afe126590906", folder="ml-1m"),
    # The archive's top folder is not named after the release.
    "ml-10m": _dat_release("ml-10m", "ce571fd55effeba0271552578f2648bd", folder="ml-10M100K"),
    "ml-20m": _csv_release("ml-20m", "cd245b17a1ae2cc31bb14903e1204af3"),
    "ml-25m": _csv_release("ml-25m", "6b51fb2759a8657d3bfcbfc42b592ada"),
    # Not pinned here: the `.md5` GroupLens publishes beside the archive decides.
    "ml-32m": _csv_release("ml-32m", None),
    "ml-latest-small": _csv_release("ml-latest-small", None),
    "ml-latest": _csv_release("ml-latest", None, layout=CSV_GROWING),
}

if tuple(RELEASES) != RELEASE_NAMES:  # datasets.py names them for the params schema
    raise ImportError(f"releases.RELEASES {tuple(RELEASES)} and datasets.RELEASE_NAMES {RELEASE_NAMES} differ")


MANIFEST_FILE = "manifest.json"


class ManifestError(PipelineError):
    """A raw data folder without a readable manifest."""


@dataclass(frozen=True)
class Manifest:
    """What the data/raw/ folder holds, written by the download stage beside the files.

    Preprocess reads the files through it alone, so whether they came from a GroupLens
    release or the synthetic generator is decided once, in the download stage.
    """

    dataset: str
    ratings_file: str
    ratings_format: str  # a RATINGS_LAYOUTS name, or PARQUET
    movies_file: str | None  # None: the source has no movies table
    movies_format: str | None  # U_ITEM, MOVIES_DAT, MOVIES_CSV, RECBOLE_ITEM or PARQUET

    def write(self, folder: Path) -> None:
        write_json(dict(sorted(asdict(self).items())), Path(folder) / MANIFEST_FILE, "the data set's manifest")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST_FILE
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ManifestError(f"{path}: not found; the download stage writes it (dvc repro download)") from None
        except (OSError, ValueError, TypeError) as error:
            raise ManifestError(f"{path}: not a manifest the download stage wrote: {error}") from None
