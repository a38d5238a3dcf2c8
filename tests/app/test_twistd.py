"""End-to-end: the real twistd command, as users run it."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.backends import ThreadedBackend
from tests.support.configs import inbound_json, write_config
from tests.support.process import TWISTD, TwistdProcess


@pytest.fixture
def backend(threaded_backend: Callable[..., ThreadedBackend]) -> ThreadedBackend:
    """Answers 200 with its path; remembers what it received."""
    return threaded_backend(body="backend saw {path}")


def test_twistd_lists_the_nfork_plugin() -> None:
    result = subprocess.run(
        [TWISTD, "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "nfork" in result.stdout
    result = subprocess.run(
        [TWISTD, "nfork", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--config=" in result.stdout
    assert "--demo" in result.stdout


def test_twistd_proxies_traffic_and_exits_cleanly_on_sigterm(
    tmp_path: Path, backend: ThreadedBackend
) -> None:
    config = write_config(
        tmp_path / "nfork.json",
        inbound_json("e2e", out={"prod": backend.address, "copy": backend.address}),
    )
    # An ephemeral control port: the default 127.0.0.1:9090 may be taken.
    with TwistdProcess(
        "--config", str(config), "--control", "127.0.0.1:0", cwd=str(tmp_path)
    ) as twistd:
        port = twistd.listening_port("e2e")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/hello?x=1", timeout=10
        ) as r:
            assert r.status == 200
            assert r.read() == b"backend saw /hello?x=1"
        code = twistd.terminate()
        output = twistd.output()
    assert code == 0, output
    assert "Traceback" not in output
    # The active copy and the shadow copy both arrived, marked by nfork.
    assert sorted(backend.received) == ["GET /hello?x=1 true"] * 2


def test_twistd_refuses_an_invalid_config(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.json",
        inbound_json("foo", ":9080", out={"a": "h:1"}, active="a", timeout="10x"),
    )
    result = subprocess.run(
        [TWISTD, "--nodaemon", "--pidfile=", "nfork", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert 'inbound "foo"' in output
    assert '"timeout"' in output
    assert "10x" in output
    assert "Traceback" not in output


def test_twistd_exits_cleanly_when_an_inbound_cannot_listen(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "nfork.json",
            inbound_json(
                "busy", f"127.0.0.1:{port}", out={"a": "127.0.0.1:1"}, active="a"
            ),
        )
        result = subprocess.run(
            [
                TWISTD,
                "--nodaemon",
                "--pidfile=",
                "nfork",
                "--config",
                str(config),
                "--control",
                "none",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(tmp_path),
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "cannot start inbound busy" in output
    assert "Address already in use" in output
    assert "Traceback" not in output
