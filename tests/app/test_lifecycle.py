"""End-to-end lifecycle of the real twistd process: SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import signal
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import ThreadedBackend
from tests.support.configs import inbound_json, write_config
from tests.support.process import TwistdProcess


@pytest.fixture
def backend(threaded_backend: Callable[..., ThreadedBackend]) -> ThreadedBackend:
    """Answers 200 "done PATH" (after C{backend.delay} seconds, 0 at first)."""
    return threaded_backend(body="done {path}")


def inbound(name: str, backend: ThreadedBackend) -> dict[str, Any]:
    """An inbound forking to C{backend} alone, with a 5 s timeout."""
    return inbound_json(name, out={"prod": backend.address}, timeout="5s")


def get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.read()


def test_sighup_applies_the_file_and_refuses_an_invalid_one(
    tmp_path: Path, backend: ThreadedBackend
) -> None:
    config = tmp_path / "nfork.json"
    write_config(config, inbound("a", backend))
    with TwistdProcess(
        "--config", str(config), "--control", "none", cwd=str(tmp_path)
    ) as twistd:
        port_a = twistd.listening_port("a")
        write_config(config, inbound("a", backend), inbound("b", backend))
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
    tmp_path: Path, backend: ThreadedBackend
) -> None:
    backend.delay = 1.0
    config = tmp_path / "nfork.json"
    write_config(config, inbound("slow", backend))
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
        assert backend.arrived.wait(10)
        twistd.process.send_signal(signal.SIGTERM)
        client.join(10)
        code = twistd.process.wait(15)
        output = twistd.output()
    assert results == [(200, b"done /in-flight")], output
    assert code == 0, output
    assert "draining" in output
