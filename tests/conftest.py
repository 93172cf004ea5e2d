"""Fixtures for every test: HTTP servers on 127.0.0.1, static and fault-injecting (tests never reach beyond
loopback). The end-to-end fixtures are in e2e/conftest.py.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faulty_http import FaultyServer


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
    server = FaultyServer(delay=0.6)
    yield server
    server.close()
