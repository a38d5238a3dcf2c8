"""A backend for streaming tests, run in its own process (its memory is its own).

L{running_stream_backend} starts it for a test.

C{python -m tests.support.stream_backend} listens on 127.0.0.1 (an
ephemeral port, printed as C{listening on PORT}) and serves:

- C{GET /zeros?n=N&id=X}: N zero bytes with C{Content-Length}, written as
  fast as the peer takes them; how many were written so far is kept under X;
- C{GET /chunked?n=N&id=X}: the same, chunked (64 KiB chunks);
- C{GET /written?id=X}: how many bytes the transfer X has written so far;
- C{GET /sse?hold=S}: a chunked C{text/event-stream} whose first event is sent
  at once, the second S seconds later;
- any method on C{/head}: the request line and headers as received, as the
  body (C{Content-Length: 0} included when the client sent it);
- C{POST}/C{PUT} on C{/upload}: reads the body (with C{Content-Length}) and
  answers C{LENGTH SHA256 FRAMING} (C{chunked} or C{length}).
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

_PIECE = b"\0" * (256 * 1024)
_written: dict[str, int] = {}
_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _params(self) -> tuple[str, dict[str, str]]:
        path, _, query = self.path.partition("?")
        return path, {k: v[0] for k, v in parse_qs(query).items()}

    def _answer(self, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path, params = self._params()
        if path in ("/zeros", "/chunked"):
            self._zeros(int(params["n"]), params.get("id", ""), path == "/chunked")
        elif path == "/written":
            with _lock:
                self._answer(b"%d" % _written.get(params.get("id", ""), 0))
        elif path == "/sse":
            self._sse(float(params.get("hold", "2")))
        elif path == "/head":
            self._head()
        else:
            self.send_error(404)

    do_DELETE = do_GET
    do_HEAD = do_GET

    def do_POST(self) -> None:
        path, _ = self._params()
        if path == "/head":
            self._head()
            return
        digest = hashlib.sha256()
        size = 0
        for data in self._body():
            digest.update(data)
            size += len(data)
        framing = "chunked" if self.headers.get("Transfer-Encoding") else "length"
        self._answer(
            b"%d %s %s" % (size, digest.hexdigest().encode(), framing.encode())
        )

    def _body(self) -> Iterator[bytes]:
        """The request body's pieces, chunked or with a Content-Length."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if not size:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length", "0"))
        while remaining:
            data = self.rfile.read(min(remaining, 1 << 20))
            if not data:
                return
            remaining -= len(data)
            yield data

    do_PUT = do_POST

    def _head(self) -> None:
        length = int(self.headers.get("Content-Length", "0") or "0")
        if length:
            self.rfile.read(length)
        lines = [self.requestline, *(f"{k}: {v}" for k, v in self.headers.items())]
        self._answer(("\r\n".join(lines) + "\r\n").encode())

    def _zeros(self, size: int, transfer: str, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        sent = 0
        while sent < size:
            piece = _PIECE[: min(len(_PIECE), size - sent)]
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
            sent += len(piece)
            with _lock:
                _written[transfer] = sent
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _sse(self, hold: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in (b"data: first\n\n", b"data: second\n\n"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            time.sleep(hold)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    # Ends when the test closes our stdin.
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()


@contextlib.contextmanager
def running_stream_backend() -> Iterator[str]:
    """This backend in a process of its own, for the test's duration: its address."""
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "tests.support.stream_backend"],
        cwd=Path(__file__).parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("listening on "), f"the backend said {line!r}"
        yield f"127.0.0.1:{int(line.split()[-1])}"
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
