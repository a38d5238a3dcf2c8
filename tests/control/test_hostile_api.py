"""Hostile callers of the control API, as raw bytes over real loopback sockets.

Issue 12, points 14-18: a browser's page (a rebound DNS name, a cross-site
form or fetch), file sinks pointed anywhere, absurd config values, a GET that
used to start tracemalloc, a token file open to others, and the startup
warning missing from /debug/klog.  During each attack, a normal API call and
a normal request through the inbound are answered within a second.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from nfork.app.tap import ControlService, Options, makeService
from nfork.control.api import ControlAPI, ControlHosts, ControlSite
from nfork.control.controller import Controller
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config, inbound_json, write_config
from tests.support.files import temp_dir
from tests.support.process import TWISTD
from tests.support.rawclient import raw_exchange, split_response
from tests.support.waiting import eventually

FAST = 1.0
"""Seconds within which a normal call is answered during an attack."""


def http(
    method: str,
    path: str,
    host: str | None,
    *headers: str,
    body: bytes = b"",
) -> bytes:
    """One HTTP/1.1 request as raw bytes, closing the connection after it."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += ["Connection: close", *headers]
    if body or method in ("POST", "PUT", "DELETE"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_body(value: object) -> bytes:
    return json.dumps(value).encode()


JSON = "Content-Type: application/json"


class HostileControlAPITests(TestCase):
    """A controller with an inbound "web" (prod active, staging), and its API."""

    timeout = 30

    def setUp(self) -> None:
        self.prod = RecordingService("prod")
        self.staging = RecordingService("staging")
        for backend in (self.prod, self.staging):
            backend.listen()
            self.addCleanup(backend.close)
        self.top = temp_dir(self)
        self.sinks = self.top / "sinks"
        self.sinks.mkdir()
        self.controller = Controller(reactor)
        self.addCleanup(self.controller.stop)

    @inlineCallbacks
    def start(self, sink_dir: bool = True, names: tuple[str, ...] = ()) -> Any:
        config = inbound_config(
            "web", out={"prod": self.prod.address, "staging": self.staging.address}
        )
        inbound = yield Deferred.fromCoroutine(self.controller.add_inbound(config))
        self.inbound_port = inbound.port.getHost().port
        hosts = ControlHosts.from_names(names)
        api = ControlAPI(
            self.controller,
            reactor,
            hosts=hosts,
            sink_dir=str(self.sinks) if sink_dir else None,
        )
        service = ControlService(
            reactor,
            "127.0.0.1:0",
            ControlSite(api.resource()),
            token_required=False,
            hosts=hosts,
        )
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        assert service.port is not None
        self.port = cast(IPv4Address, service.port.getHost()).port
        self.host = f"127.0.0.1:{self.port}"

    @inlineCallbacks
    def exchange(self, port: int, request: bytes) -> Any:
        raw = yield raw_exchange(reactor, port, request)
        code, headers, body = split_response(raw)
        if headers.get(b"content-type") == b"application/json":
            return code, json.loads(body)
        return code, body

    @inlineCallbacks
    def attack(self, request: bytes) -> Any:
        """Send C{request}; meanwhile, normal calls are answered in time."""
        answer = self.exchange(self.port, request)
        yield self.assert_responsive()
        result = yield answer
        return result

    @inlineCallbacks
    def assert_responsive(self) -> Any:
        clock = cast(Any, reactor)
        start = clock.seconds()
        code, inbounds = yield self.exchange(
            self.port, http("GET", "/v1/nfork", self.host)
        )
        self.assertEqual(code, 200)
        self.assertEqual([i["name"] for i in inbounds], ["web"])
        code, body = yield self.exchange(
            self.inbound_port, http("GET", "/normal", "app")
        )
        self.assertEqual(code, 200)
        self.assertIn(body, (b"prod", b"staging"))  # whichever is active
        self.assertLess(clock.seconds() - start, FAST)

    def routing(self) -> dict[str, Any]:
        (config,) = self.controller.configs()
        return config.to_json()

    def assert_refused(self, answer: tuple[int, Any], *words: str) -> None:
        code, body = answer
        self.assertEqual(code, 403, body)
        self.assertEqual(set(body), {"error"})
        for word in words:
            self.assertIn(word, body["error"])

    # -- 14: browsers and DNS rebinding ----------------------------------

    @inlineCallbacks
    def test_a_rebound_name_can_neither_read_nor_change_anything(self) -> Any:
        yield self.start()
        before = self.routing()
        evil = f"evil.example:{self.port}"
        for request in (
            http("GET", "/v1/nfork", evil),
            http("GET", "/v1/nfork/stats", evil),
            http("GET", "/debug/klog", evil),
            http("GET", "/debug/pprof/threads", evil),
            http("POST", "/v1/nfork/web/staging/activate", evil),
            http("DELETE", "/v1/nfork/web", evil),
            http("GET", "/v1/nfork", None),
            http("GET", "/v1/nfork", f"127.0.0.1:{self.port + 1}"),
            http("GET", "/v1/nfork", "localhost"),
            http("GET", "/v1/nfork", f"{self.host}@evil.example"),
        ):
            answer = yield self.attack(request)
            self.assert_refused(answer, "--control-allow-host")
        self.assertEqual(self.routing(), before)
        # What load balancers and Prometheus poll answers whatever the Host.
        code, health = yield self.attack(http("GET", "/healthz", evil))
        self.assertEqual((code, health["status"]), (200, "ok"))
        code, _ = yield self.attack(http("GET", "/metrics", evil))
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_a_cross_site_form_or_fetch_cannot_change_the_routing(self) -> Any:
        yield self.start()
        before = self.routing()
        activate = "/v1/nfork/web/staging/activate"
        origin = "Origin: http://evil.example"
        for request, words in (
            # A form posted without a body, even where no Origin is sent.
            (
                http(
                    "POST",
                    activate,
                    self.host,
                    "Content-Type: application/x-www-form-urlencoded",
                ),
                "application/json",
            ),
            (
                http("POST", activate, self.host, "Content-Type: multipart/form-data"),
                "application/json",
            ),
            # fetch(url, {method: "POST", mode: "no-cors"}): a simple request.
            (http("POST", activate, self.host, origin), "another site"),
            (http("POST", activate, self.host, "Origin: null"), "another site"),
            (
                http("POST", activate, self.host, f"Origin: http://{self.host}.evil"),
                "another site",
            ),
            # A JSON body sent as text/plain, or without a type.
            (
                http(
                    "PUT",
                    "/v1/nfork/web/thief",
                    self.host,
                    "Content-Type: text/plain;charset=UTF-8",
                    body=json_body("127.0.0.1:9"),
                ),
                "application/json",
            ),
            (
                http("PUT", "/v1/nfork/web/thief", self.host, body=json_body("h:9")),
                "needs Content-Type: application/json",
            ),
            (
                http(
                    "PUT",
                    "/v1/nfork/web/thief",
                    self.host,
                    JSON,
                    origin,
                    body=json_body("h:9"),
                ),
                "another site",
            ),
            (http("DELETE", "/v1/nfork/web", self.host, origin), "another site"),
            (
                http(
                    "POST", "/debug/pprof/heap", self.host, "Content-Type: text/plain"
                ),
                "application/json",
            ),
        ):
            answer = yield self.attack(request)
            self.assert_refused(answer, words)
        self.assertEqual(self.routing(), before)

    @inlineCallbacks
    def test_the_apis_own_callers_still_get_through(self) -> Any:
        yield self.start(names=("nfork.internal", "proxy.example:8443"))
        # curl -X POST .../activate: no body, no type, no Origin.
        code, body = yield self.attack(
            http("POST", "/v1/nfork/web/staging/activate", self.host)
        )
        self.assertEqual((code, body["active"]), (200, "staging"))
        # The API's own page, as a browser on it sends a change.
        code, body = yield self.attack(
            http(
                "PUT",
                "/v1/nfork/web/extra",
                f"localhost:{self.port}",
                "Content-Type: Application/JSON; charset=utf-8",
                f"Origin: http://localhost:{self.port}",
                body=json_body(self.prod.address),
            )
        )
        self.assertEqual(code, 201, body)
        for host in (
            f"[::1]:{self.port}",
            f"LOCALHOST.:{self.port}",
            "nfork.internal",
            "nfork.internal:80",
            "proxy.example:8443",
        ):
            code, _ = yield self.attack(http("GET", "/v1/nfork", host))
            self.assertEqual(code, 200, host)
        answer = yield self.attack(http("GET", "/v1/nfork", "proxy.example:443"))
        self.assert_refused(answer)
        # Behind a TLS proxy that keeps the Host: the https page is its own.
        code, _ = yield self.attack(
            http(
                "POST",
                "/v1/nfork/web/prod/activate",
                "nfork.internal",
                "Origin: https://nfork.internal",
            )
        )
        self.assertEqual(code, 200)

    # -- 15: file sinks asked for through the API ----------------------

    @inlineCallbacks
    def test_without_a_sink_dir_the_api_creates_no_file_sink(self) -> Any:
        yield self.start(sink_dir=False)
        target = self.top / "anywhere.jsonl"
        for body in (
            f"file://{target}",
            {"addr": f"file://{target}", "maxBytes": 1, "backups": 0},
        ):
            answer = yield self.attack(
                http("PUT", "/v1/nfork/web/rec", self.host, JSON, body=json_body(body))
            )
            self.assert_refused(answer, 'outbound "rec"', "--sink-dir")
        inbound = inbound_json(
            "other",
            out={"prod": self.prod.address, "rec": f"file://{target}"},
        )
        answer = yield self.attack(
            http("POST", "/v1/nfork", self.host, JSON, body=json_body(inbound))
        )
        self.assert_refused(answer, 'inbound "other"', "--sink-dir")
        self.assertEqual([c.name for c in self.controller.configs()], ["web"])
        self.assertFalse(target.exists())

    @inlineCallbacks
    def test_api_file_sinks_cannot_leave_the_sink_dir(self) -> Any:
        yield self.start()
        precious = self.top / "precious"
        precious.write_text("keep me")
        (self.sinks / "link.jsonl").symlink_to(precious)
        (self.sinks / "up").symlink_to(self.top)
        for path, words in (
            (precious, "not inside"),
            (f"{self.sinks}/../precious", "'..'"),
            (f"{self.sinks}/%2E%2E/precious", "'..'"),
            (self.sinks / "link.jsonl", "symbolic link"),
            (self.sinks / "up" / "precious", "symbolic link"),
            ("/etc/passwd", "not inside"),
        ):
            # With backups 0, a rotation would delete the file at every line.
            body = {"addr": f"file://{path}", "maxBytes": 1, "backups": 0}
            answer = yield self.attack(
                http("PUT", "/v1/nfork/web/rec", self.host, JSON, body=json_body(body))
            )
            self.assert_refused(answer, words)
        for _ in range(3):
            yield self.exchange(self.inbound_port, http("GET", "/x", "app"))
        self.assertEqual(precious.read_text(), "keep me")
        self.assertEqual(sorted(os.listdir(self.sinks)), ["link.jsonl", "up"])
        self.assertNotIn("rec", json.dumps(self.routing()["out"]))

    @inlineCallbacks
    def test_an_api_file_sink_records_into_a_private_file(self) -> Any:
        yield self.start()
        path = self.sinks / "rec.jsonl"
        old = os.umask(0o000)  # a lax umask: the file is private all the same
        self.addCleanup(os.umask, old)
        code, body = yield self.attack(
            http(
                "PUT",
                "/v1/nfork/web/rec",
                self.host,
                JSON,
                body=json_body(f"file://{path}"),
            )
        )
        self.assertEqual(code, 201, body)
        yield self.exchange(self.inbound_port, http("GET", "/recorded", "app"))
        code, _ = yield self.attack(http("DELETE", "/v1/nfork/web/rec", self.host))
        self.assertEqual(code, 200)
        yield eventually(reactor, lambda: path.exists() and path.stat().st_size > 0)
        self.assertEqual(path.stat().st_mode & 0o777, 0o600)
        self.assertIn(b"/recorded", path.read_bytes())

    # -- 16: bounds ------------------------------------------------------

    @inlineCallbacks
    def test_absurd_values_are_refused_naming_the_bound(self) -> Any:
        yield self.start()
        for request, message in (
            (
                http(
                    "PUT",
                    "/v1/nfork/web/shadow",
                    self.host,
                    JSON,
                    body=json_body({"addr": "h:1", "maxInflight": 1_000_000}),
                ),
                'key "maxInflight": must be at most 100000, got 1000000',
            ),
            (
                http(
                    "PUT",
                    "/v1/nfork/web/rec",
                    self.host,
                    JSON,
                    body=json_body(
                        {"addr": f"file://{self.sinks}/r.jsonl", "backups": 10**6}
                    ),
                ),
                'key "backups": must be at most 1000, got 1000000',
            ),
            (
                http(
                    "POST",
                    "/v1/nfork",
                    self.host,
                    JSON,
                    body=json_body(inbound_json("x", timeoutCode=204)),
                ),
                'key "timeoutCode": must be an HTTP error status from 400 to 599',
            ),
            (
                http(
                    "POST",
                    "/v1/nfork",
                    self.host,
                    JSON,
                    body=json_body(inbound_json("x", maxBody=2**40)),
                ),
                'key "maxBody": must be at most 1073741824',
            ),
        ):
            code, body = yield self.attack(request)
            self.assertEqual(code, 400, body)
            self.assertIn(message, body["error"])
        self.assertEqual([c.name for c in self.controller.configs()], ["web"])

    # -- 17: GET /debug/pprof/heap --------------------------------------

    @inlineCallbacks
    def test_getting_the_heap_report_starts_nothing(self) -> Any:
        yield self.start()
        was_tracing = tracemalloc.is_tracing()
        tracemalloc.stop()
        self.addCleanup(tracemalloc.start if was_tracing else tracemalloc.stop)
        for _ in range(2):
            code, body = yield self.attack(http("GET", "/debug/pprof/heap", self.host))
            self.assertEqual(code, 200)
            self.assertIn(b"POST /debug/pprof/heap starts it", body)
            self.assertFalse(tracemalloc.is_tracing())
        answer = yield self.attack(
            http("POST", "/debug/pprof/heap", self.host, "Origin: http://evil.example")
        )
        self.assert_refused(answer)
        self.assertFalse(tracemalloc.is_tracing())
        code, body = yield self.attack(http("POST", "/debug/pprof/heap", self.host))
        self.assertEqual(code, 200)
        self.assertTrue(tracemalloc.is_tracing())
        code, body = yield self.attack(http("GET", "/debug/pprof/heap", self.host))
        self.assertIn(b"top", body)
        code, body = yield self.attack(http("DELETE", "/debug/pprof/heap", self.host))
        self.assertEqual(body, b"tracemalloc stopped\n")
        self.assertFalse(tracemalloc.is_tracing())


class StartupWarningTests(TestCase):
    """18: the warning logged while the control API starts is in /debug/klog."""

    timeout = 20

    @inlineCallbacks
    def test_the_exposed_control_api_warning_is_served_by_klog(self) -> Any:
        config = write_config(
            temp_dir(self) / "nfork.json",
            inbound_json("web", "127.0.0.1:9080", out={"prod": "127.0.0.1:8080"}),
        )
        options = Options()
        # ":9090" is every interface: on a memory reactor, nothing is bound.
        options.parseOptions(["--config", str(config), "--control", ":9090"])
        thresholds = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *thresholds)
        memory = MemoryReactorClock()
        root = makeService(options, memory)
        root.privilegedStartService()
        root.startService()
        self.addCleanup(root.stopService)
        # Serve the very site makeService built over a real loopback socket.
        [site] = [factory for port, factory, _, _ in memory.tcpServers if port == 9090]
        listening = cast(Any, reactor).listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        raw = yield raw_exchange(
            reactor,
            listening.getHost().port,
            http("GET", "/debug/klog?level=warn", "127.0.0.1:9090"),
        )
        code, _, body = split_response(raw)
        self.assertEqual(code, 200)
        texts = [event["text"] for event in json.loads(body)]
        self.assertTrue(
            any("beyond loopback, without a token" in text for text in texts), texts
        )


# -- 17: the token file, with the real twistd ------------------------------


def run_twistd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = write_config(
        tmp_path / "nfork.json",
        inbound_json("web", "127.0.0.1:0", out={"prod": "127.0.0.1:1"}),
    )
    return subprocess.run(
        [TWISTD, "--nodaemon", "--pidfile=", "nfork", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )


def test_twistd_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a-long-enough-secret-token\n")
    token.chmod(0o644)
    result = run_twistd(
        tmp_path, "--control", "127.0.0.1:0", "--control-token-file", str(token)
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"chmod 600 {token}" in output
    assert "a-long-enough-secret-token" not in output
    token.chmod(0o600)
    token.write_text("short\n")
    result = run_twistd(
        tmp_path, "--control", "127.0.0.1:0", "--control-token-file", str(token)
    )
    assert result.returncode != 0
    assert "at least 16 are required" in result.stdout + result.stderr
