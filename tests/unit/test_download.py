"""download.py on generated archives and wheels: local paths, file:// and a local HTTP server; no internet."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import make_rows, make_wheel, make_zip, md5_of, sha256_of, tab_bytes
from harness import project_params

from movielens_pipeline import download as download_module
from movielens_pipeline.download import (
    ArchiveSource,
    DownloadError,
    HttpSettings,
    WheelSource,
    download,
    sources_for,
)
from movielens_pipeline.params import DataParams
from movielens_pipeline.releases import RELEASES, Release, WheelMirror

RELEASE = RELEASES["ml-100k"]
MEMBER = RELEASE.ratings_member  # ml-100k/u.data
RATINGS = tab_bytes(make_rows(40, seed=1))
WHEEL_MEMBER = "fakepkg/ml-100k.inter"
WHEEL_HEADER = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
NO_RETRY = HttpSettings(timeout_seconds=5.0, retries=0, backoff_seconds=0.0)


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def archive(tmp_path) -> Path:
    """A zip laid out like ml-100k.zip, with generated ratings as its u.data."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    return make_zip(folder / "ml-100k.zip", {"ml-100k/README": b"fixture\n", MEMBER: RATINGS})


@pytest.fixture
def out_dir(tmp_path) -> Path:
    return tmp_path / "data" / "raw" / "ml-100k"


@pytest.fixture
def http_server(archive, serve_directory) -> str:
    """Serve the archive's folder on 127.0.0.1; returns the base URL."""
    return serve_directory(archive.parent)


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """Start a one-shot TCP server whose `respond(connection)` plays a misbehaving web server."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []
    release = threading.Event()

    def start(respond: Callable[[socket.socket], None]) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                respond(connection)
                release.wait(10)  # hold the connection open until the test is done

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}/ml-100k.zip"

    yield start
    release.set()
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(5)


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/ml-100k.zip"


@pytest.fixture
def fake_wheel(tmp_path) -> Path:
    """A wheel holding the ratings with one header line in front, like recbole's ml-100k.inter."""
    return make_wheel(tmp_path / "wheelhouse", "fakepkg", "1.0", {WHEEL_MEMBER: WHEEL_HEADER + RATINGS})


def wheel_source(wheel: Path, sha256: str | None = None, requirement: str = "fakepkg==1.0") -> WheelSource:
    mirror = WheelMirror(
        requirement=requirement, sha256=sha256 or sha256_of(wheel), member=WHEEL_MEMBER, header_lines=1
    )
    pip_options = ("--no-index", "--find-links", str(wheel.parent), "--disable-pip-version-check")
    return WheelSource(mirror, pip_options=pip_options)


@dataclasses.dataclass
class FileSource:
    """A source that hands over fixed bytes, or fails with a DownloadError."""

    data: bytes | None
    name: str = "fixed bytes"

    def describe(self) -> str:
        return self.name

    def fetch(self, release: Release, workdir: Path) -> list[Path]:
        if self.data is None:
            raise DownloadError("this source is down")
        path = workdir / release.ratings_file
        path.write_bytes(self.data)
        return [path]


def pin_ratings(monkeypatch, sha256: str | None = sha256_of(RATINGS), **changes) -> Release:
    """Replace the ml-100k release for one test: pin `sha256` as its content, apply `changes`."""
    release = dataclasses.replace(RELEASE, ratings_sha256=sha256, **changes)
    monkeypatch.setitem(RELEASES, "ml-100k", release)
    return release


def assert_nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists()
    assert sorted(path.name for path in out_dir.parent.glob(".ml-100k.*")) == []


def failure_message(params: DataParams, out_dir: Path, **kwargs) -> str:
    with pytest.raises(DownloadError) as raised:
        download(params, out_dir, **kwargs)
    return str(raised.value)


# --- archive sources ------------------------------------------------------------------


def assert_downloaded(out_dir: Path, written: Path) -> None:
    assert written == out_dir / "u.data"
    assert sorted(path.name for path in out_dir.iterdir()) == ["manifest.json", "u.data"]
    assert written.read_bytes() == RATINGS
    assert sorted(path.name for path in out_dir.parent.glob(".ml-100k.*")) == []


def test_download_from_a_local_path(archive, out_dir, capsys):
    written = download(project_params("data", url=str(archive), md5=md5_of(archive)), out_dir)
    assert_downloaded(out_dir, written)
    assert f"ml-100k: u.data from {archive}" in capsys.readouterr().out


def test_download_from_a_file_url(archive, out_dir):
    written = download(project_params("data", url=archive.as_uri(), md5=md5_of(archive)), out_dir)
    assert_downloaded(out_dir, written)


def test_download_from_a_local_http_server(archive, out_dir, http_server):
    written = download(project_params("data", url=f"{http_server}/ml-100k.zip", md5=md5_of(archive)), out_dir)
    assert_downloaded(out_dir, written)


def test_download_accepts_an_upper_case_md5(archive, out_dir):
    written = download(project_params("data", url=str(archive), md5=md5_of(archive).upper()), out_dir)
    assert written.read_bytes() == RATINGS


def test_download_replaces_an_earlier_output_and_clears_stale_scratch(archive, out_dir):
    out_dir.mkdir(parents=True)
    (out_dir / "u.data").write_bytes(b"old\n")
    (out_dir / "extra.txt").write_bytes(b"old\n")
    # Scratch of an earlier run that was killed before it could clean up.
    (out_dir.parent / ".ml-100k.fetch-killed" / "source-0").mkdir(parents=True)
    (out_dir.parent / ".ml-100k.fetch-killed" / "source-0" / "ml-100k.zip").write_bytes(b"partial")
    written = download(project_params("data", url=str(archive), md5=md5_of(archive)), out_dir)
    assert_downloaded(out_dir, written)


def test_wrong_md5_names_both_sums(archive, out_dir):
    wrong = "0" * 32
    message = failure_message(project_params("data", url=str(archive), md5=wrong), out_dir)
    assert f"MD5 mismatch for {archive}: got {md5_of(archive)}, expected {wrong}" in message
    assert_nothing_written(out_dir)


def test_failure_keeps_an_earlier_output(archive, out_dir):
    out_dir.mkdir(parents=True)
    (out_dir / "u.data").write_bytes(b"old\n")
    failure_message(project_params("data", url=str(archive), md5="0" * 32), out_dir)
    assert sorted(path.name for path in out_dir.iterdir()) == ["u.data"]
    assert (out_dir / "u.data").read_bytes() == b"old\n"
    assert sorted(path.name for path in out_dir.parent.glob(".ml-100k.*")) == []


def test_http_404_is_reported(archive, out_dir, http_server):
    url = f"{http_server}/missing/ml-100k.zip"
    message = failure_message(project_params("data", url=url, md5=md5_of(archive)), out_dir)
    assert f"{url}: HTTP 404" in message
    assert_nothing_written(out_dir)


def test_missing_local_file_is_reported(tmp_path, out_dir):
    path = tmp_path / "nowhere" / "ml-100k.zip"
    message = failure_message(project_params("data", url=str(path), md5="0" * 32), out_dir)
    assert f"no such file: {path}" in message
    assert_nothing_written(out_dir)


def test_missing_member_is_reported(tmp_path, out_dir):
    archive = make_zip(tmp_path / "ml-100k.zip", {"ml-100k/u.item": RATINGS})
    message = failure_message(project_params("data", url=str(archive), md5=md5_of(archive)), out_dir)
    assert "ml-100k.zip has no member ml-100k/u.data" in message
    assert_nothing_written(out_dir)


def test_file_that_is_not_a_zip_is_reported(tmp_path, out_dir):
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(b"<html>a captive portal page</html>\n")
    message = failure_message(project_params("data", url=str(archive), md5=md5_of(archive)), out_dir)
    assert "is not a zip file" in message
    assert_nothing_written(out_dir)


def test_member_larger_than_max_bytes_is_refused(archive, out_dir, monkeypatch):
    pin_ratings(monkeypatch, layout=dataclasses.replace(RELEASE.layout, max_bytes=len(RATINGS) - 1))
    source = ArchiveSource(str(archive), md5_of(archive), NO_RETRY, check_published_md5=False)
    message = failure_message(project_params("data"), out_dir, sources=[source])
    assert f"member ml-100k/u.data would expand to {len(RATINGS)} bytes, more than the {len(RATINGS) - 1}" in message
    assert_nothing_written(out_dir)


def test_member_of_exactly_max_bytes_is_accepted(archive, out_dir, monkeypatch):
    pin_ratings(monkeypatch, layout=dataclasses.replace(RELEASE.layout, max_bytes=len(RATINGS)))
    source = ArchiveSource(str(archive), md5_of(archive), NO_RETRY, check_published_md5=False)
    assert download(project_params("data"), out_dir, sources=[source]).read_bytes() == RATINGS


def test_connection_refused_is_reported(out_dir, closed_port_url):
    message = failure_message(project_params("data", url=closed_port_url, md5="0" * 32), out_dir)
    assert f"{closed_port_url}: cannot connect" in message
    assert "refused" in message.lower()
    assert_nothing_written(out_dir)


def test_malformed_url_is_reported_not_raised_raw(out_dir):
    message = failure_message(project_params("data", url="http://127.0.0.1:port/ml-100k.zip", md5="0" * 32), out_dir)
    assert "InvalidURL: nonnumeric port: 'port'" in message
    assert_nothing_written(out_dir)


def test_answer_that_is_not_http_is_reported(out_dir, raw_server):
    url = raw_server(lambda connection: connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n"))
    message = failure_message(project_params("data", url=url, md5="0" * 32, retries=0), out_dir)
    assert f"{url}: BadStatusLine" in message
    assert_nothing_written(out_dir)


def test_transfer_cut_short_is_reported(out_dir, raw_server):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n100\r\nPK"

    def respond(connection: socket.socket) -> None:
        connection.sendall(chunked)
        connection.shutdown(socket.SHUT_WR)

    url = raw_server(respond)
    message = failure_message(project_params("data", url=url, md5="0" * 32, retries=0), out_dir)
    assert f"{url}: the transfer broke off after 2 bytes: IncompleteRead" in message  # the "PK" that came
    assert_nothing_written(out_dir)


def test_server_that_never_answers_times_out(out_dir, raw_server):
    url = raw_server(lambda connection: None)
    message = failure_message(project_params("data", url=url, md5="0" * 32, timeout_seconds=0.2, retries=0), out_dir)
    assert f"{url}: no answer within 0.2 s" in message
    assert_nothing_written(out_dir)


def test_transfer_that_stalls_times_out(out_dir, raw_server):
    headers = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    url = raw_server(lambda connection: connection.sendall(headers + b"PK" * 10))
    message = failure_message(project_params("data", url=url, md5="0" * 32, timeout_seconds=0.2, retries=0), out_dir)
    assert f"{url}: the connection stalled mid-transfer" in message
    assert_nothing_written(out_dir)


def test_every_source_failing_lists_each_source_and_the_data_url_hint(tmp_path, out_dir, closed_port_url):
    missing = tmp_path / "ml-100k.zip"
    sources = [
        ArchiveSource(str(missing), "0" * 32, NO_RETRY),
        ArchiveSource(closed_port_url, "0" * 32, NO_RETRY),
        FileSource(None, name="the third source"),
    ]
    message = failure_message(project_params("data"), out_dir, sources=sources)
    assert message.startswith("could not download ml-100k; every source failed:\n")
    assert f"  - {missing}: no such file" in message
    assert f"  - {closed_port_url}: cannot connect" in message
    assert "  - the third source: this source is down" in message
    assert "set data.url in params.yaml to a local copy of ml-100k.zip" in message
    assert_nothing_written(out_dir)


def test_later_source_is_used_when_an_earlier_one_fails(out_dir, monkeypatch, capsys):
    pin_ratings(monkeypatch)
    sources = [FileSource(None, name="first"), FileSource(RATINGS, name="second")]
    assert download(project_params("data"), out_dir, sources=sources).read_bytes() == RATINGS
    assert "ml-100k: u.data from second" in capsys.readouterr().out


# --- the pinned content of the genuine release ----------------------------------------


def test_pinned_content_rejects_other_bytes_when_md5_is_not_given(out_dir):
    message = failure_message(project_params("data"), out_dir, sources=[FileSource(RATINGS, name="impostor")])
    expected = RELEASE.ratings_sha256
    assert f"impostor: SHA-256 mismatch for u.data: got {sha256_of(RATINGS)}, expected {expected}" in message
    assert_nothing_written(out_dir)


def test_pinned_content_accepts_matching_bytes(out_dir, monkeypatch):
    pin_ratings(monkeypatch)
    assert download(project_params("data"), out_dir, sources=[FileSource(RATINGS)]).read_bytes() == RATINGS


def test_own_md5_disables_the_pinned_content_check(out_dir):
    params = project_params("data", url="vouched-for.zip", md5="0" * 32)
    assert download(params, out_dir, sources=[FileSource(RATINGS)]).read_bytes() == RATINGS


def test_archive_at_url_without_md5_must_match_the_release(archive, out_dir):
    # With data.url but no md5 the release's published archive sum applies.
    message = failure_message(project_params("data", url=str(archive)), out_dir)
    assert f"expected {RELEASE.archive_md5}" in message
    assert_nothing_written(out_dir)


# --- the wheel mirror, served by pip from a local folder --------------------------------


def test_wheel_source_drops_the_header_and_passes_the_pinned_check(fake_wheel, out_dir, monkeypatch):
    pin_ratings(monkeypatch)
    written = download(project_params("data"), out_dir, sources=[wheel_source(fake_wheel)])
    assert written.read_bytes() == RATINGS
    assert sorted(path.name for path in out_dir.parent.glob(".ml-100k.*")) == []


def test_wheel_source_wrong_sha256_names_both_sums(fake_wheel, tmp_path):
    wrong = "f" * 64
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(DownloadError) as raised:
        wheel_source(fake_wheel, sha256=wrong).fetch(RELEASE, workdir)
    assert str(raised.value) == (
        f"SHA-256 mismatch for fakepkg-1.0-py3-none-any.whl: got {sha256_of(fake_wheel)}, expected {wrong}"
    )
    assert not (workdir / "u.data").exists()


def test_wheel_source_missing_requirement_reports_pip_failure(fake_wheel, out_dir):
    source = wheel_source(fake_wheel, requirement="fakepkg==2.0")
    message = failure_message(project_params("data", url="unused", md5="0" * 32), out_dir, sources=[source])
    assert "pip download fakepkg==2.0 (member fakepkg/ml-100k.inter): pip exited with status 1" in message
    assert "fakepkg==2.0" in message.split("status 1", 1)[1]
    assert_nothing_written(out_dir)


# --- which sources are tried --------------------------------------------------------------


def test_sources_without_url_are_grouplens_then_the_wheel():
    sources = sources_for(RELEASE, project_params("data", timeout_seconds=7.0, retries=2, backoff_seconds=0.5))
    settings = HttpSettings(7.0, 2, 0.5)
    assert sources == [ArchiveSource(RELEASE.archive_url, RELEASE.archive_md5, settings), WheelSource(RELEASE.mirror)]


def test_url_replaces_every_other_source():
    # Without md5 the release's sums apply (pinned and published); with it, the user's alone.
    expected = [ArchiveSource("here.zip", RELEASE.archive_md5, HttpSettings())]
    assert sources_for(RELEASE, project_params("data", url="here.zip")) == expected
    params = project_params("data", url="here.zip", md5="a" * 32)
    expected = [ArchiveSource("here.zip", "a" * 32, HttpSettings(), check_published_md5=False)]
    assert sources_for(RELEASE, params) == expected


def test_the_module_uses_the_shared_release_table():
    # pin_ratings patches RELEASES in place; download() must read that same dict.
    assert download_module.RELEASES is RELEASES
