"""A real HTTP server on 127.0.0.1 that serves files and misbehaves on cue, for download tests.

Each path has a queue of faults, one consumed per request; when the queue is empty the
file is served properly (with an ETag, and Range requests honoured so a client can resume).
"""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import struct
import threading
import urllib.parse

# What a request can meet, besides "ok".
FAULTS = (
    "500",  # HTTP 500 Internal Server Error
    "503",  # HTTP 503 Service Unavailable
    "404",  # HTTP 404 Not Found, although the file exists
    "reset",  # headers and half the body, then a TCP reset
    "truncate",  # headers announcing the whole body, half of it, then a clean close
    "slow",  # nothing at all for `delay` seconds (long past the client's timeout) or until the server closes
    "stall",  # headers and half the body, then nothing, as long as "slow"
    "no-range",  # the whole file with 200, ignoring a Range header
)


def etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


class FaultyServer:
    """Serve byte strings at paths on 127.0.0.1; `fail(path, *faults)` queues misbehaviour."""

    def __init__(self, delay: float = 30.0) -> None:
        self.delay = delay
        # Set at close: a request held by "slow" or "stall" ends then, so closing never waits out `delay`.
        self.closing = threading.Event()
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header) of each request
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for the next poll.
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def fail(self, path: str, *faults: str) -> None:
        unknown = set(faults) - set(FAULTS)
        assert not unknown, f"unknown faults {unknown}"
        self.faults.setdefault(path, []).extend(faults)

    def requests_for(self, path: str) -> list[str | None]:
        """The Range header (or None) of each request made for `path`, in order."""
        return [range_header for requested, range_header in self.requests if requested == path]

    def next_fault(self, path: str, range_header: str | None) -> str:
        with self._lock:
            self.requests.append((path, range_header))
            queue = self.faults.get(path, [])
            return queue.pop(0) if queue else "ok"

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()


def _handler_for(state: FaultyServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = urllib.parse.urlparse(self.path).path
            fault = state.next_fault(path, self.headers.get("Range"))
            data = state.files.get(path)
            try:
                if fault in ("500", "503"):
                    self.send_error(int(fault))
                elif fault == "404" or data is None:
                    self.send_error(404)
                elif fault == "slow":
                    state.closing.wait(state.delay)  # the client gives up first
                else:
                    self._send(data, fault)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up first, as a timed-out client does

        def _send(self, data: bytes, fault: str) -> None:
            start = self._resume_offset(data) if fault != "no-range" else 0
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag(data))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if fault not in ("reset", "truncate", "stall"):
                self.wfile.write(body)
                return
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if fault == "reset":
                # Linger 0 makes close() send a RST instead of a FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            elif fault == "stall":
                state.closing.wait(state.delay)

        def _resume_offset(self, data: bytes) -> int:
            found = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if found is None or self.headers.get("If-Range") != etag(data):
                return 0
            offset = int(found.group(1))
            return offset if offset < len(data) else 0

    return Handler
