"""The embedded demo: three loopback backends and an inbound forking to them."""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from nfork.config import InboundConfig, load_config

DEMO_LISTEN = "127.0.0.1:9080"
DEMO_BACKENDS = {"prod": 9081, "staging": 9082, "logging": 9083}


class DemoBackend(Resource):
    """A backend that answers with its own name and logs what it received.

    C{/users/<id>} answers JSON, with a fresh C{requestId} each time (noise
    the comparison ignores); staging's names the user C{fullName} instead
    of C{name}: the regression the demo's comparison finds.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render(self, request: server.Request) -> bytes:
        """Log the request copy and answer with the backend's name."""
        body = request.content.read() if request.content is not None else b""
        self._log.info(
            "[{backend}] received {method} {uri} ({size} bytes body, X-Nfork: {nfork})",
            backend=self.name,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            size=len(body),
            nfork=(request.getHeader(b"x-nfork") or b"-").decode("latin-1"),
        )
        parts = request.path.decode("latin-1").strip("/").split("/")
        if len(parts) == 2 and parts[0] == "users" and parts[1].isdigit():
            key = "fullName" if self.name == "staging" else "name"
            user = {"id": int(parts[1]), key: f"user {parts[1]}"}
            user["requestId"] = str(uuid.uuid4())
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps(user).encode() + b"\n"
        request.setHeader(b"Content-Type", b"text/plain")
        request.setHeader(b"X-Backend", self.name.encode())
        return f"hello from {self.name}\n".encode()


def demo_config() -> tuple[InboundConfig, ...]:
    """The demo's inbound: 127.0.0.1:9080 forking to the three backends,
    comparing staging's answers with prod's."""
    out = ", ".join(
        f'"{name}": "127.0.0.1:{port}"' for name, port in DEMO_BACKENDS.items()
    )
    return load_config(
        f'[{{"name": "demo", "listen": "{DEMO_LISTEN}", "out": {{{out}}}, '
        f'"active": "prod", "timeout": "1s", '
        f'"compare": {{"candidates": ["staging"], "ignore": ["$.requestId"]}}}}]'
    )


def demo_backends(reactor: Any) -> MultiService:
    """A service running the three demo backends on loopback."""
    backends = MultiService()
    for name, port in DEMO_BACKENDS.items():
        site = server.Site(DemoBackend(name))
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        endpoint = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
        service = StreamServerEndpointService(endpoint, site)
        service._raiseSynchronously = True
        service.setServiceParent(backends)
    return backends


def demo_instructions(control: str | None, token_file: str | None = None) -> str:
    """What to try once the demo runs.

    With a control API token, its commands read the token from C{token_file}
    (the token itself is never logged).
    """
    lines = [
        "nfork demo is running: inbound 'demo' on http://127.0.0.1:9080 forks every "
        "request to prod (active), staging and logging.",
        "Try:",
        "  curl -i http://127.0.0.1:9080/hello            # answered by prod",
        "  curl -i -X POST -d 'x=1' http://127.0.0.1:9080/orders",
        "  curl http://127.0.0.1:9080/users/42         # JSON: staging's differs",
    ]
    if control:
        base = f"http://{control}"
        auth = token = ""
        if token_file:
            auth = f'-H "Authorization: Bearer $(cat {shlex.quote(token_file)})" '
            token = f" --token-file {shlex.quote(token_file)}"
        lines += [
            f"  curl {auth}{base}/v1/nfork                 # the configuration",
            f"  curl {auth}{base}/v1/nfork/stats           # per-outbound stats",
            f"  curl -X POST {auth}{base}/v1/nfork/demo/staging/activate"
            "   # staging answers now",
            f"  curl {base}/metrics                  # Prometheus metrics",
            f"  open {base}/ui/ in a browser        # the dashboard",
            f"  .venv/bin/nfork ctl --control {base}{token} stats   "
            "# the stats as a table",
            f"  .venv/bin/nfork compare --control {base}{token} demo   "
            "# how staging's answers differ from prod's",
        ]
    lines.append("Each backend logs what it received below. Stop with Ctrl-C.")
    return "\n".join(lines)
