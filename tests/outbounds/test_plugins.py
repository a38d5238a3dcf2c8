"""Outbound plugins end to end: the docs example installed as a plugin, the
built-in sinks behind a real inbound, and twistd's checks at startup."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

import nfork.plugins
from nfork.config import ConfigError
from nfork.control.controller import Controller
from nfork.outbounds.api import IOutbound, IOutboundFactory, IOutboundValidator
from nfork.outbounds.registry import factory_for, outbound_factories
from tests.support.backends import (
    DatagramCollector,
    LineCollector,
    RecordingService,
    ThreadedBackend,
)
from tests.support.configs import inbound_config, inbound_json, write_config
from tests.support.files import recorded_lines, temp_dir
from tests.support.process import TWISTD, TwistdProcess

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "syslog_sink.py"


def install_example(case: Any) -> ModuleType:
    """Install docs/examples/syslog_sink.py as a plugin, as a distribution would:
    a module in a C{nfork/plugins/} directory; uninstalled after the test."""
    plugins = temp_dir(case) / "nfork" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(EXAMPLE, plugins / "syslog_sink.py")
    # nfork.plugins extends its __path__ with such directories found on
    # sys.path when it is imported; it is imported already, so add it here.
    nfork.plugins.__path__.append(str(plugins))

    def uninstall() -> None:
        nfork.plugins.__path__.remove(str(plugins))
        sys.modules.pop("nfork.plugins.syslog_sink", None)

    case.addCleanup(uninstall)
    return importlib.import_module("nfork.plugins.syslog_sink")


class ProxyTestCase(TestCase):
    """A controller on the real reactor, a prod service and an HTTP client."""

    timeout = 20

    def setUp(self) -> None:
        self.prod = RecordingService("prod")
        self.prod.listen()
        self.addCleanup(self.prod.close)
        self.controller = Controller(reactor)
        self.stopped = False
        self.addCleanup(self.stop)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    def stop(self) -> Deferred[None]:
        if self.stopped:
            return succeed(None)
        self.stopped = True
        return Deferred.fromCoroutine(self.controller.stop())

    @inlineCallbacks
    def start(self, out: dict[str, Any]) -> Any:
        running = yield Deferred.fromCoroutine(
            self.controller.add_inbound(inbound_config("shop", out=out))
        )
        self.port = running.port.getHost().port

    @inlineCallbacks
    def send(self, method: str, path: str, request_id: str = "") -> Any:
        headers = Headers(
            {b"X-Request-Id": [request_id.encode()]} if request_id else {}
        )
        response = yield treq.request(
            method,
            f"http://127.0.0.1:{self.port}{path}".encode(),
            data=b"body" if method in ("POST", "PUT") else None,
            headers=headers,
            pool=self.pool,
        )
        yield treq.content(response)
        self.assertEqual(response.code, 200)


class ExamplePluginTests(ProxyTestCase):
    """docs/examples/syslog_sink.py: imported, installed, used end to end."""

    def setUp(self) -> None:
        # Installed before the controller, which lists the plugins once.
        self.example = install_example(self)
        super().setUp()

    def test_the_example_provides_the_interfaces(self) -> None:
        example = self.example
        verifyObject(IOutboundFactory, example.syslog)
        verifyObject(IOutboundValidator, example.syslog)
        factories = outbound_factories()
        self.assertEqual(sorted(factories), ["file", "http", "https", "syslog", "tcp"])
        self.assertIs(type(factories["syslog"]), type(example.syslog))

    def test_the_example_validates_its_options(self) -> None:
        factories = outbound_factories()
        config = inbound_config(
            "shop",
            out={"prod": "h:1", "log": {"addr": "syslog://h:514", "facility": 30}},
        )
        with pytest.raises(ConfigError) as caught:
            factory_for("shop", config.outbounds[1], factories)
        self.assertIn('key "addr": expected "syslog://ip[:port]"', str(caught.value))
        config = inbound_config(
            "shop",
            out={"prod": "h:1", "log": {"addr": "syslog://10.0.0.1", "facility": 30}},
        )
        with pytest.raises(ConfigError) as caught:
            factory_for("shop", config.outbounds[1], factories)
        self.assertIn('key "facility": expected a syslog facility', str(caught.value))

    @inlineCallbacks
    def test_a_real_inbound_sends_copies_to_the_example(self) -> Any:
        server = DatagramCollector()
        udp = cast(Any, reactor).listenUDP(0, server, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        yield self.start(
            {
                "prod": self.prod.address,
                "audit": {
                    "addr": f"syslog://127.0.0.1:{udp.getHost().port}",
                    "appName": "shop-audit",
                    "facility": 16,
                    "methods": ["POST"],
                },
            }
        )
        route = self.controller.outbound_route("shop", "audit")
        verifyObject(IOutbound, route.outbound)
        yield self.send("GET", "/not/audited")
        yield self.send("POST", "/orders?id=7")
        yield server.wait_for(1)
        (message,) = server.received
        self.assertRegex(
            message.decode(),
            r"^<134>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z - shop-audit - shop - "
            r"POST /orders\?id=7 client=127\.0\.0\.1 bytes=4$",
        )
        stats = self.controller.inbound_stats("shop")["audit"]["total"]
        self.assertEqual(cast(dict[str, Any], stats)["requests"], 1)


def _sampled(request_id: str, sample: float) -> bool:
    """Whether the inbound copies a request with this id to a sampled outbound."""
    return zlib.crc32(request_id.encode()) / 2**32 < sample


def _ids(count: int, sampled: bool) -> list[str]:
    return [
        i for i in (f"req-{n}" for n in range(1000)) if _sampled(i, 0.5) == sampled
    ][:count]


class BuiltInSinkTests(ProxyTestCase):
    """file:// and tcp:// behind a real inbound, with methods and sample."""

    @inlineCallbacks
    def test_sinks_record_the_copies_their_filters_let_through(self) -> Any:
        path = temp_dir(self) / "traffic.jsonl"
        collector = LineCollector()
        listening = cast(Any, reactor).listenTCP(0, collector, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        yield self.start(
            {
                "prod": self.prod.address,
                "rec": {"addr": f"file://{path}", "methods": ["POST", "PUT"]},
                "ship": {
                    "addr": f"tcp://127.0.0.1:{listening.getHost().port}",
                    "sample": 0.5,
                },
            }
        )
        yes, no = _ids(3, True), _ids(2, False)
        requests = [
            ("GET", "/a", yes[0]),
            ("POST", "/b", no[0]),
            ("PUT", "/c", yes[1]),
            ("DELETE", "/d", no[1]),
            ("POST", "/e", yes[2]),
        ]
        for method, uri, request_id in requests:
            yield self.send(method, uri, request_id)
        yield collector.wait_for(3)
        shipped = [json.loads(line) for line in collector.lines]
        self.assertEqual([r["uri"] for r in shipped], ["/a", "/c", "/e"])
        stats = self.controller.inbound_stats("shop")
        totals = {name: cast(dict[str, Any], s["total"]) for name, s in stats.items()}
        self.assertEqual(
            {name: (t["requests"], t["errors"]) for name, t in totals.items()},
            {"prod": (5, 0), "rec": (3, 0), "ship": (3, 0)},
        )
        # Stopping closes the file sink, which writes out its buffer.
        yield self.stop()
        recorded = [json.loads(line) for line in path.read_bytes().splitlines()]
        self.assertEqual(
            [(r["method"], r["uri"]) for r in recorded],
            [("POST", "/b"), ("PUT", "/c"), ("POST", "/e")],
        )
        self.assertEqual({r["inbound"] for r in recorded}, {"shop"})
        self.assertEqual({r["body"] for r in recorded}, {"body"})
        headers = dict(map(tuple, recorded[0]["headers"]))
        self.assertEqual(headers["X-Request-Id"], no[0])


def test_plugins_are_found_in_nfork_plugins_directories_on_sys_path(
    tmp_path: Path,
) -> None:
    plugins = tmp_path / "nfork" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(EXAMPLE, plugins / "syslog_sink.py")
    code = (
        "from nfork.outbounds.registry import outbound_factories; "
        "print(' '.join(sorted(outbound_factories())))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=str(tmp_path),
        check=True,
    )
    assert result.stdout.split() == ["file", "http", "https", "syslog", "tcp"]


# -- twistd ------------------------------------------------------------------


def _config(tmp_path: Path, out: dict[str, Any], active: str = "prod") -> Path:
    """A config file with one inbound, e2e, forking to C{out}."""
    return write_config(
        tmp_path / "nfork.json", inbound_json("e2e", out=out, active=active)
    )


@pytest.mark.parametrize(
    ("out", "active", "expected"),
    [
        (
            {"prod": "127.0.0.1:1", "log": "kafka://broker:9092"},
            "prod",
            'unknown address scheme "kafka" (available: file, http, https, tcp)',
        ),
        (
            {"prod": "127.0.0.1:1", "rec": "file:///tmp/x.jsonl"},
            "rec",
            "gives no HTTP response and cannot be active",
        ),
        (
            {"prod": "127.0.0.1:1", "rec": {"addr": "file:///x", "maxbytes": 1}},
            "prod",
            'unknown key "maxbytes" (did you mean "maxBytes"?)',
        ),
    ],
)
def test_twistd_refuses_outbounds_it_cannot_build(
    tmp_path: Path, out: dict[str, Any], active: str, expected: str
) -> None:
    config = _config(tmp_path, out, active)
    result = subprocess.run(
        [TWISTD, "--nodaemon", "--pidfile=", "nfork", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert expected in output
    assert 'inbound "e2e"' in output
    assert "Traceback" not in output


@pytest.fixture
def backend(threaded_backend: Callable[..., ThreadedBackend]) -> ThreadedBackend:
    """Answers every request with 200 "ok"."""
    return threaded_backend(body="ok")


def test_twistd_writes_the_recording_out_on_sigterm(
    tmp_path: Path, backend: ThreadedBackend
) -> None:
    recording = tmp_path / "traffic.jsonl"
    config = _config(
        tmp_path,
        {
            "prod": backend.address,
            "rec": f"file://{recording}",
        },
    )
    with TwistdProcess(
        "--config", str(config), "--control", "none", cwd=str(tmp_path)
    ) as twistd:
        port = twistd.listening_port("e2e")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/orders", data=b"\xff\xfebinary", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.read() == b"ok"
        code = twistd.terminate()
        output = twistd.output()
    assert code == 0, output
    assert "Traceback" not in output
    (record,) = [json.loads(line) for line in recorded_lines(recording)]
    assert (record["method"], record["uri"], record["body_base64"]) == (
        "POST",
        "/orders",
        True,
    )
