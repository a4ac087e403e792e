"""A loopback HTTP server for download tests and benchmarks: no network, every misbehaviour on demand.

:class:`LoopbackServer` serves in-memory files from 127.0.0.1 (a free port) in a background thread.
Per path it can drop the connection after N bytes (the next request is served in full unless more
drops are queued), answer with an error status first (503, 404...), redirect, and throttle. Range
requests (``bytes=N-``) are honoured with 206, or ignored (200 with the whole file) when
``honour_range`` is False. Every request is recorded (:class:`Served`: path, Range header, status,
bytes sent) so tests check what went over the wire, not just the result.

Run as a script it serves one generated file in its own process (the benchmark's server, so that it
does not share the client's interpreter) and prints ``{"url": ..., "sha256": ..., "size": ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import json
import random
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass

WRITE_BYTES = 1 << 18


@dataclass
class Served:
    path: str
    range: str | None
    status: int
    bytes_sent: int = 0


class LoopbackServer:
    """Files served over HTTP on 127.0.0.1; a context manager that starts and stops it."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.honour_range = True
        self.drops: dict[str, list[int]] = {}  # path -> byte counts: each request takes one and drops after it
        self.errors: dict[str, list[int]] = {}  # path -> statuses to answer before serving the file
        self.redirects: dict[str, str] = {}  # path -> Location
        self.seconds_per_write = 0.0  # throttling: a pause after each WRITE_BYTES
        self.requests: list[Served] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path`` ("/name.pth"); returns its URL."""
        self.files[path] = data
        return self.url(path)

    def url(self, path: str) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def served(self, path: str) -> list[Served]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> LoopbackServer:
        handler = type("Handler", (_Handler,), {"loopback": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the handler asks -------------------------------------------------------------------

    def _take(self, queue: dict[str, list[int]], path: str) -> int | None:
        with self._lock:
            pending = queue.get(path)
            return pending.pop(0) if pending else None

    def _record(self, served: Served) -> None:
        with self._lock:
            self.requests.append(served)


class _Handler(http.server.BaseHTTPRequestHandler):
    loopback: LoopbackServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass  # quiet test output

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        lb = self.loopback
        served = Served(self.path, self.headers.get("Range"), 200)
        lb._record(served)
        error = lb._take(lb.errors, self.path)
        if self.path in lb.redirects:
            served.status = 302
            self.send_response(302)
            self.send_header("Location", lb.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = lb.files.get(self.path)
        if error is not None or data is None:
            served.status = error or 404
            self.send_error(served.status)
            return
        start = self._range_start(served, len(data))
        if start is None:
            return
        self._send_body(served, memoryview(data), start)

    def _range_start(self, served: Served, size: int) -> int | None:
        """The first byte to send (0, or where a honoured Range asks); None when a 416 was sent."""
        found = re.fullmatch(r"bytes=(\d+)-", served.range or "")
        if not (found and self.loopback.honour_range):
            return 0
        start = int(found.group(1))
        if start >= size:
            served.status = 416
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        served.status = 206
        return start

    def _send_body(self, served: Served, data: memoryview, start: int) -> None:
        lb = self.loopback
        self.send_response(served.status)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Type", "application/octet-stream")
        if lb.honour_range:
            self.send_header("Accept-Ranges", "bytes")
        if served.status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        drop = lb._take(lb.drops, self.path)
        end = len(data) if drop is None else min(len(data), start + drop)
        try:
            for at in range(start, end, WRITE_BYTES):
                chunk = data[at : min(end, at + WRITE_BYTES)]
                self.wfile.write(chunk)
                served.bytes_sent += len(chunk)
                if lb.seconds_per_write:
                    time.sleep(lb.seconds_per_write)
        except (BrokenPipeError, ConnectionResetError):
            return
        if drop is not None:  # hang up mid-body: the client sees fewer bytes than Content-Length
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have hung up first
                self.connection.shutdown(socket.SHUT_RDWR)


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Reproducible incompressible content (a weights file's bytes look like this to a transfer)."""
    rng, block = random.Random(seed), 1 << 26  # randbytes takes at most 256 MiB at a time
    return b"".join(rng.randbytes(min(block, size - at)) for at in range(0, size, block))


def main(argv: list[str] | None = None) -> None:
    """Serve one generated file until stdin closes (so the parent's exit stops it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, required=True, help="bytes to serve")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = random_bytes(args.size, args.seed)
    with LoopbackServer() as server:
        url = server.add("/bench.bin", data)
        print(json.dumps({"url": url, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
