"""What each MovieLens release is: where it lives, its checksums and its ratings layout."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelMirror:
    """A copy of a release's ratings inside a wheel on PyPI, fetched with pip."""

    requirement: str
    sha256: str  # of the .whl file
    member: str  # path of the ratings file inside the wheel
    header_lines: int  # lines to drop so that the bytes equal the release's own file


@dataclass(frozen=True)
class RatingsLayout:
    """How a release writes its ratings file."""

    separator: str
    has_header: bool
    # Extracted ratings larger than this are refused (a zip bomb, or the wrong member).
    max_bytes: int


@dataclass(frozen=True)
class Release:
    """One GroupLens rating release."""

    name: str
    archive_url: str
    archive_md5: str
    ratings_member: str  # path inside the archive
    ratings_file: str  # file name written to data/raw/<name>/
    ratings_sha256: str | None  # pinned content of the ratings file, where known
    layout: RatingsLayout
    mirror: WheelMirror | None = None


GROUPLENS = "https://files.grouplens.org/datasets/movielens"

RELEASES = {
    "ml-100k": Release(
        name="ml-100k",
        archive_url=f"{GROUPLENS}/ml-100k.zip",
        archive_md5="0e33842e24a9c977be4e0107933c0723",
        ratings_member="ml-100k/u.data",
        ratings_file="u.data",
        # u.data as published: 100,000 lines, 1,979,173 bytes. The wheel's copy minus its
        # header line has exactly these bytes, so both sources give one DVC cache entry.
        ratings_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        layout=RatingsLayout(separator="\t", has_header=False, max_bytes=64 * 2**20),
        mirror=WheelMirror(
            requirement="recbole==1.2.1",
            sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            member="recbole/dataset_example/ml-100k/ml-100k.inter",
            header_lines=1,
        ),
    ),
}
