"""A real twistd nfork with its control API, for tests that act as its users.

L{running_nfork} writes the config (and the token file), starts twistd with
C{--control 127.0.0.1:0}, waits for the control API and every inbound to
listen, and stops it on exit, checking that it exited cleanly.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attrs import frozen

from tests.support.configs import write_config
from tests.support.process import TwistdProcess


@frozen
class RunningNfork:
    """Where a running nfork's control API and inbounds are."""

    control: str
    """The control API's URL, C{http://127.0.0.1:PORT}."""
    ports: Mapping[str, int]
    """The port each inbound of the config listens on, by name."""
    token: str | None = None
    token_file: str | None = None

    def api(self, path: str) -> Any:
        """The JSON of C{GET path} on the control API (with the token)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(self.control + path, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def metrics(self) -> str:
        """The text of C{GET /metrics}."""
        with urllib.request.urlopen(self.control + "/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    def send(self, inbound: str, path: str, data: bytes | None = None) -> bytes:
        """The body of the answer to a request through C{inbound}."""
        url = f"http://127.0.0.1:{self.ports[inbound]}{path}"
        with urllib.request.urlopen(url, data=data, timeout=10) as answer:
            return bytes(answer.read())


@contextmanager
def running_nfork(
    directory: Path, *inbounds: Mapping[str, Any], token: str | None = None
) -> Iterator[RunningNfork]:
    """twistd nfork serving C{inbounds} (config JSON objects) until the block ends.

    With C{token}, the control API requires it (C{--control-token-file}).
    The block's end stops twistd and asserts it exited with 0 and without a
    traceback.
    """
    config = write_config(directory / "nfork.json", *inbounds)
    args = ["--config", str(config), "--control", "127.0.0.1:0"]
    token_file = None
    if token is not None:
        path = directory / "token"
        path.write_text(token + "\n")
        path.chmod(0o600)
        token_file = str(path)
        args += ["--control-token-file", token_file]
    with TwistdProcess(*args, cwd=str(directory)) as twistd:
        match = twistd.wait_for_line(r"control API listening on .*port=(\d+)")
        ports: dict[str, int] = {}
        while len(ports) < len(inbounds):  # one line per inbound, in any order
            listening = twistd.wait_for_line(r"inbound (\S+) listening on .*port=(\d+)")
            ports[listening.group(1)] = int(listening.group(2))
        yield RunningNfork(
            f"http://127.0.0.1:{match.group(1)}", ports, token, token_file
        )
        assert twistd.terminate() == 0
        assert "Traceback" not in twistd.output()
