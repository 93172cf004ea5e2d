"""Fixtures for every test: HTTP servers on 127.0.0.1, static and fault-injecting (tests never reach beyond
loopback). The end-to-end fixtures are in e2e/conftest.py.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faulty_http import FaultyServer


def pytest_configure(config: pytest.Config) -> None:
    """Under `pytest -n N` (pytest-xdist, as `make test` runs it), each worker process keeps to one CPU of its own.

    Every process a worker starts inherits the CPU, and torch then sizes its thread pool to it (as the train
    stage's `threads: 0` does): N workers never run more busy threads than N CPUs, where each worker's torch
    would otherwise start one per CPU and they would all wait on each other.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ..., set by pytest-xdist in its workers
    if worker and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[int(worker.removeprefix("gw")) % len(cpus)]})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup` (`make test`): the unit tests of one file go to one worker, as they share
    module-scoped data that two workers would each build; the end-to-end tests, each seconds to minutes of
    work on a project of its own, go out one by one, so that both workers finish at about the same time."""
    for item in items:
        if "e2e" not in item.path.parts:
            item.add_marker(pytest.mark.xdist_group(item.path.name))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def serve_directory() -> Iterator[Callable[[Path], str]]:
    """Serve folders over HTTP on 127.0.0.1; calling it with a folder returns the base URL."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def faulty_server() -> Iterator[FaultyServer]:
    """A fault-injecting HTTP server on 127.0.0.1 (see faulty_http.py)."""
    server = FaultyServer()
    yield server
    server.close()
