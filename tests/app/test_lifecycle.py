"""End-to-end lifecycle of the real twistd process: SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import TwistdProcess


class _SlowBackend(BaseHTTPRequestHandler):
    """Answers 200 after C{delay} seconds (in its own thread, not a reactor)."""

    delay = 0.0
    arrived = threading.Event()

    def do_GET(self) -> None:
        type(self).arrived.set()
        time.sleep(self.delay)  # the test's backend thread, not nfork
        body = b"done " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[ThreadingHTTPServer]:
    _SlowBackend.delay = 0.0
    _SlowBackend.arrived = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowBackend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def inbound(name: str, backend: ThreadingHTTPServer, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "listen": "127.0.0.1:0",
        "out": {"prod": f"127.0.0.1:{backend.server_address[1]}"},
        "active": "prod",
        "timeout": "5s",
        **extra,
    }


def get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.read()


def test_sighup_applies_the_file_and_refuses_an_invalid_one(
    tmp_path: Path, backend: ThreadingHTTPServer
) -> None:
    config = tmp_path / "nfork.json"
    config.write_text(json.dumps([inbound("a", backend)]))
    with TwistdProcess(
        "--config", str(config), "--control", "none", cwd=str(tmp_path)
    ) as twistd:
        port_a = twistd.listening_port("a")
        config.write_text(json.dumps([inbound("a", backend), inbound("b", backend)]))
        twistd.process.send_signal(signal.SIGHUP)
        port_b = twistd.listening_port("b")
        assert get(port_b, "/via-b") == (200, b"done /via-b")

        config.write_text('[{"name": "a", "listen": "127.0.0.1:0", "out": {}}]')
        twistd.process.send_signal(signal.SIGHUP)
        twistd.wait_for_line("is invalid, nothing changed")
        assert get(port_a, "/still-a") == (200, b"done /still-a")
        assert get(port_b, "/still-b") == (200, b"done /still-b")
        assert twistd.terminate() == 0


def test_sigterm_lets_requests_in_flight_finish(
    tmp_path: Path, backend: ThreadingHTTPServer
) -> None:
    _SlowBackend.delay = 1.0
    config = tmp_path / "nfork.json"
    config.write_text(json.dumps([inbound("slow", backend)]))
    with TwistdProcess(
        "--config",
        str(config),
        "--control",
        "none",
        "--drain-timeout",
        "5s",
        cwd=str(tmp_path),
    ) as twistd:
        port = twistd.listening_port("slow")
        results: list[Any] = []
        client = threading.Thread(
            target=lambda: results.append(get(port, "/in-flight")), daemon=True
        )
        client.start()
        assert _SlowBackend.arrived.wait(10)
        twistd.process.send_signal(signal.SIGTERM)
        client.join(10)
        code = twistd.process.wait(15)
        output = twistd.output()
    assert results == [(200, b"done /in-flight")], output
    assert code == 0, output
    assert "draining" in output
