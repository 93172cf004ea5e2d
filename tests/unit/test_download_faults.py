"""Downloads from a real HTTP server on 127.0.0.1 that fails on cue: retries, resume, integrity, safe extraction.

Every case ends either in the release's exact files after retrying, or in a clear error,
and in both cases nothing partial is left under data/.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import pytest
from fakes import make_release_zip, make_zip, md5_of, release_members, release_rows
from harness import project_params

from movielens_pipeline.download import DownloadError, download
from movielens_pipeline.releases import MOVIES_CSV, RELEASES, Manifest

NAME = "ml-latest-small"  # no pinned sum: the published .md5 decides
PATH = f"/datasets/movielens/{NAME}.zip"
ROWS = release_rows(NAME)
MEMBERS = release_members(NAME, ROWS)
RATINGS = MEMBERS[f"{NAME}/ratings.csv"]
MOVIES = MEMBERS[f"{NAME}/movies.csv"]
# The client's timeout: long enough that a healthy answer from 127.0.0.1 always comes within it, however busy the
# machine (so every request count below is exact); the server's "slow" and "stall" faults outlast it (30 s).
TIMEOUT = 1.0
FAST = {"timeout_seconds": TIMEOUT, "backoff_seconds": 0.0}


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def out_dir(data_dir) -> Path:
    return data_dir / "raw" / NAME


@pytest.fixture
def archive(tmp_path) -> Path:
    return make_release_zip(tmp_path / "mirror", NAME, ROWS)


@pytest.fixture
def served(archive, faulty_server, monkeypatch) -> str:
    """Serve the archive and its .md5 like GroupLens; point the release at the server. Returns the URL."""
    url = faulty_server.serve(PATH, archive.read_bytes())
    faulty_server.serve(PATH + ".md5", (archive.parent / f"{NAME}.zip.md5").read_bytes())
    monkeypatch.setitem(RELEASES, NAME, dataclasses.replace(RELEASES[NAME], archive_url=url))
    return url


def files_under(folder: Path) -> list[str]:
    """Every file and folder under `folder`, hidden ones included, as relative paths."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


def assert_release_written(data_dir: Path, out_dir: Path) -> None:
    files = ["manifest.json", "movies.csv", "ratings.csv"]
    assert files_under(data_dir) == ["raw", f"raw/{NAME}", *(f"raw/{NAME}/{name}" for name in files)]
    assert (out_dir / "ratings.csv").read_bytes() == RATINGS
    assert (out_dir / "movies.csv").read_bytes() == MOVIES
    assert Manifest.read(out_dir) == Manifest(NAME, "ratings.csv", "csv", "movies.csv", MOVIES_CSV)


def assert_nothing_partial(data_dir: Path) -> None:
    assert files_under(data_dir) in ([], ["raw"])


@pytest.fixture
def fails(out_dir):
    """Run the download with these params, expect a DownloadError and return its message."""

    def run(**params) -> str:
        with pytest.raises(DownloadError) as raised:
            download(project_params("data", dataset=NAME, **params), out_dir)
        return str(raised.value)

    return run


# --- transient failures: retried, then success ---------------------------------------------


@pytest.mark.parametrize("fault", ["500", "503", "reset", "truncate", "slow", "stall"])
def test_one_transient_failure_is_retried_and_the_download_succeeds(fault, served, faulty_server, data_dir, out_dir):
    faulty_server.fail(PATH, fault)
    download(project_params("data", dataset=NAME, retries=2, **FAST), out_dir)
    assert_release_written(data_dir, out_dir)
    assert len(faulty_server.requests_for(PATH)) == 2


def test_truncated_body_is_resumed_with_a_range_request(served, faulty_server, archive, data_dir, out_dir):
    faulty_server.fail(PATH, "truncate")
    download(project_params("data", dataset=NAME, retries=1, **FAST), out_dir)
    assert_release_written(data_dir, out_dir)
    half = len(archive.read_bytes()) // 2
    assert faulty_server.requests_for(PATH) == [None, f"bytes={half}-"]


def test_server_ignoring_the_range_restarts_from_the_start(served, faulty_server, data_dir, out_dir):
    faulty_server.fail(PATH, "truncate", "no-range")
    download(project_params("data", dataset=NAME, retries=1, **FAST), out_dir)
    assert_release_written(data_dir, out_dir)
    assert len(faulty_server.requests_for(PATH)) == 2


def test_several_failures_in_a_row_within_the_retries_still_succeed(served, faulty_server, data_dir, out_dir):
    faulty_server.fail(PATH, "500", "reset", "truncate", "503")
    download(project_params("data", dataset=NAME, retries=4, **FAST), out_dir)
    assert_release_written(data_dir, out_dir)


def test_failures_beyond_the_retries_list_every_attempt(served, faulty_server, data_dir, fails):
    faulty_server.fail(PATH, "503", "500", "503")
    message = fails(retries=2, **FAST)
    assert f"{served}: gave up after 3 attempts (1: HTTP 503 Service Unavailable; 2: HTTP 500" in message
    assert "set data.url in params.yaml to a local copy of ml-latest-small.zip" in message
    assert len(faulty_server.requests_for(PATH)) == 3
    assert_nothing_partial(data_dir)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("slow", f"no answer within {TIMEOUT} s"),
        ("stall", "the connection stalled mid-transfer"),
        ("truncate", "the transfer broke off after"),
        ("reset", "the transfer broke off"),
        ("500", "HTTP 500 Internal Server Error"),
    ],
)
def test_transient_failure_without_retries_is_a_clear_error(fault, expected, served, faulty_server, data_dir, fails):
    faulty_server.fail(PATH, fault)
    message = fails(retries=0, **FAST)
    assert f"  - {served}: {expected}" in message
    assert_nothing_partial(data_dir)


def test_retries_wait_with_exponential_back_off(served, faulty_server, out_dir, monkeypatch):
    waits = []
    monkeypatch.setattr("movielens_pipeline.download.time.sleep", waits.append)
    faulty_server.fail(PATH, "500", "500", "500")
    download(project_params("data", dataset=NAME, retries=3, timeout_seconds=TIMEOUT, backoff_seconds=0.5), out_dir)
    assert waits == [0.5, 1.0, 2.0]


# --- permanent failures: no retry -------------------------------------------------------------


def test_404_is_not_retried(served, faulty_server, data_dir, fails):
    faulty_server.fail(PATH, "404")
    message = fails(retries=3, **FAST)
    assert f"  - {served}: HTTP 404 Not Found" in message
    assert len(faulty_server.requests_for(PATH)) == 1
    assert_nothing_partial(data_dir)


def test_wrong_archive_md5_names_both_sums(served, faulty_server, archive, data_dir, fails):
    faulty_server.serve(PATH + ".md5", f"MD5 ({NAME}.zip) = {'ab' * 16}\n".encode())
    message = fails(retries=3, **FAST)
    assert f"MD5 mismatch for {served}: got {md5_of(archive)}, expected {'ab' * 16}" in message
    assert len(faulty_server.requests_for(PATH)) == 1  # a mismatch is not retried
    assert_nothing_partial(data_dir)


def test_published_md5_that_disagrees_with_the_pinned_one_names_both(
    served, faulty_server, archive, monkeypatch, fails
):
    pinned = "cd" * 16
    monkeypatch.setitem(RELEASES, NAME, dataclasses.replace(RELEASES[NAME], archive_md5=pinned))
    message = fails(**FAST)
    assert f"the published MD5 ({served}.md5) is {md5_of(archive)} but the expected one is {pinned}" in message
    assert "set data.md5" in message


def test_pinned_md5_alone_verifies_when_no_md5_file_is_published(served, faulty_server, archive, monkeypatch, out_dir):
    monkeypatch.setitem(RELEASES, NAME, dataclasses.replace(RELEASES[NAME], archive_md5=md5_of(archive)))
    faulty_server.files.pop(PATH + ".md5")
    download(project_params("data", dataset=NAME, **FAST), out_dir)
    assert (out_dir / "ratings.csv").read_bytes() == RATINGS


def test_no_pinned_and_no_published_md5_refuses_and_says_to_set_data_md5(served, faulty_server, data_dir, fails):
    faulty_server.files.pop(PATH + ".md5")
    message = fails(**FAST)
    assert f"cannot verify the archive: {served}.md5: HTTP 404 Not Found, and no sum is pinned for it" in message
    assert "set data.md5 to the archive's MD5" in message
    assert len(faulty_server.requests_for(PATH)) == 0  # nothing is fetched that cannot be checked
    assert_nothing_partial(data_dir)


@pytest.mark.parametrize("style", ["MD5 ({name}) = {md5}\n", "{md5}  {name}\n", "{md5}\n"])
def test_md5_files_in_bsd_gnu_or_bare_style_are_read(style, served, faulty_server, archive, out_dir):
    faulty_server.serve(PATH + ".md5", style.format(name=f"{NAME}.zip", md5=md5_of(archive).upper()).encode())
    download(project_params("data", dataset=NAME, **FAST), out_dir)
    assert (out_dir / "ratings.csv").read_bytes() == RATINGS


def test_url_override_with_own_md5_skips_the_published_md5(faulty_server, archive, data_dir, out_dir):
    url = faulty_server.serve("/mirror/any-name.zip", archive.read_bytes())
    download(project_params("data", dataset=NAME, url=url, md5=md5_of(archive), **FAST), out_dir)
    assert_release_written(data_dir, out_dir)
    assert faulty_server.requests_for("/mirror/any-name.zip.md5") == []


def test_url_override_to_a_local_mirror_uses_its_md5_file(archive, data_dir, out_dir):
    download(project_params("data", dataset=NAME, url=str(archive)), out_dir)
    assert_release_written(data_dir, out_dir)


# --- extraction -------------------------------------------------------------------------------


def serve_members(faulty_server, monkeypatch, members: dict[str, bytes], tmp_path: Path, **release_changes) -> None:
    archive = make_zip(tmp_path / f"{NAME}.zip", members)
    url = faulty_server.serve(PATH, archive.read_bytes())
    faulty_server.serve(PATH + ".md5", f"{md5_of(archive)}  {NAME}.zip\n".encode())
    release = dataclasses.replace(RELEASES[NAME], archive_url=url, **release_changes)
    monkeypatch.setitem(RELEASES, NAME, release)


@pytest.mark.parametrize("evil", ["../../evil.sh", f"{NAME}/../../evil.sh", "/etc/evil", "C:/evil.bat", "a\\..\\..\\x"])
def test_zip_slip_member_refuses_the_archive(evil, faulty_server, monkeypatch, tmp_path, data_dir, fails):
    serve_members(faulty_server, monkeypatch, {**MEMBERS, evil: b"#!/bin/sh\n"}, tmp_path)
    message = fails(**FAST)
    assert f"member {evil!r} would land outside the target folder (zip slip)" in message
    assert_nothing_partial(data_dir)
    assert not (tmp_path / "evil.sh").exists()


def test_member_larger_than_the_cap_is_refused(faulty_server, monkeypatch, tmp_path, data_dir, fails):
    small = dataclasses.replace(RELEASES[NAME].layout, max_bytes=len(RATINGS) - 1)
    serve_members(faulty_server, monkeypatch, MEMBERS, tmp_path, layout=small)
    message = fails(**FAST)
    assert (
        f"member {NAME}/ratings.csv would expand to {len(RATINGS)} bytes, more than the {len(RATINGS) - 1}" in message
    )
    assert_nothing_partial(data_dir)


def test_highly_compressed_bomb_is_refused_before_it_is_written(faulty_server, monkeypatch, tmp_path, data_dir, fails):
    bomb = {**MEMBERS, f"{NAME}/ratings.csv": b"1,1,4.0,1\n" + b"\0" * (8 << 20)}  # 8 MiB, deflates to ~8 KiB
    cap = dataclasses.replace(RELEASES[NAME].layout, max_bytes=1 << 20)
    serve_members(faulty_server, monkeypatch, bomb, tmp_path, layout=cap)
    assert (tmp_path / f"{NAME}.zip").stat().st_size < 64 << 10
    assert "more than the 1048576 allowed (zip bomb" in fails(**FAST)
    assert_nothing_partial(data_dir)


def test_only_the_needed_members_are_extracted(served, archive, data_dir, out_dir):
    download(project_params("data", dataset=NAME, **FAST), out_dir)
    with zipfile.ZipFile(archive) as bundle:
        assert f"{NAME}/links.csv" in bundle.namelist()
    assert_release_written(data_dir, out_dir)  # links.csv and README.txt stay in the archive


def test_archive_without_a_movies_file_gives_ratings_only(faulty_server, monkeypatch, tmp_path, out_dir, capsys):
    members = {name: data for name, data in MEMBERS.items() if not name.endswith("movies.csv")}
    serve_members(faulty_server, monkeypatch, members, tmp_path)
    download(project_params("data", dataset=NAME, **FAST), out_dir)
    assert sorted(path.name for path in out_dir.iterdir()) == ["manifest.json", "ratings.csv"]
    assert "has no movies file; titles and genres will be null" in capsys.readouterr().out


def test_no_progress_bar_when_not_on_a_terminal(served, out_dir, capsys):
    download(project_params("data", dataset=NAME, **FAST), out_dir)
    assert capsys.readouterr().err == ""
