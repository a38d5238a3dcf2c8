"""Tests of the HTTP outbound: its share of the pool (idleConn), its TLS options."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from nfork.config import ConfigError, InboundConfig, OutboundConfig, parse_outbound
from nfork.control.controller import Controller
from nfork.outbounds.api import IOutboundFactory, IOutboundValidator, OutboundContext
from nfork.outbounds.http import HTTPOutbound, HTTPOutboundFactory, tls_settings
from nfork.outbounds.registry import factory_for
from nfork.proxy.client import HTTPClientPool, Target, TLSSettings
from tests.support.configs import inbound_config, inbound_json, load_inbounds
from tests.support.tls import CertificateAuthority

BACKEND = Target("http", "127.0.0.2", 8080, b"backend:8080")
"""The memory reactor never connects: no traffic leaves the test."""


def inbounds(*idle_conns: tuple[str, int]) -> tuple[InboundConfig, ...]:
    """Inbounds C{(name, idleConn)}, each forking to the same two backends."""
    return load_inbounds(
        *(
            inbound_json(
                name,
                f"127.0.0.1:{9080 + i}",
                out={"prod": "127.0.0.2:8080", "shadow": "127.0.0.3:8080"},
                idleConn=idle_conn,
            )
            for i, (name, idle_conn) in enumerate(idle_conns)
        )
    )


class OutboundAllowanceTests(SynchronousTestCase):
    """An HTTP outbound asks the pool for its idleConn while it lives."""

    def test_building_registers_and_closing_withdraws(self) -> None:
        pool = HTTPClientPool(MemoryReactorClock())
        outbound = HTTPOutbound(pool, BACKEND, 16)
        self.assertEqual(pool.idle_limit(BACKEND), 16)
        self.successResultOf(outbound.close())
        self.assertEqual(pool.idle_limit(BACKEND), 0)


class SharedHostTests(SynchronousTestCase):
    """Inbounds sharing a backend: the largest idleConn of those running."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = HTTPClientPool(self.reactor)
        factories: dict[str, IOutboundFactory] = {"http": HTTPOutboundFactory("http")}
        self.controller = Controller(self.reactor, self.pool, factories=factories)

    def done(self, change: Coroutine[Any, Any, object]) -> None:
        """Run a controller change that completes at once."""
        self.successResultOf(Deferred.fromCoroutine(change))

    def test_an_inbound_with_a_large_idle_conn_is_not_starved(self) -> None:
        small, large = inbounds(("small", 8), ("large", 1024))
        self.done(self.controller.add_inbound(small))
        self.done(self.controller.add_inbound(large))
        self.assertEqual(self.pool.idle_limit(BACKEND), 1024)
        # Whichever inbound starts or changes last.
        self.done(self.controller.update_inbound(inbounds(("small", 9))[0]))
        self.assertEqual(self.pool.idle_limit(BACKEND), 1024)

    def test_the_limit_shrinks_when_the_largest_goes(self) -> None:
        small, large = inbounds(("small", 8), ("large", 1024))
        self.done(self.controller.add_inbound(small))
        self.done(self.controller.add_inbound(large))
        self.done(self.controller.remove_inbound("large"))
        self.assertEqual(self.pool.idle_limit(BACKEND), 8)
        self.done(self.controller.update_inbound(inbounds(("small", 4))[0]))
        self.assertEqual(self.pool.idle_limit(BACKEND), 4)
        self.done(self.controller.remove_inbound("small"))
        self.assertEqual(self.pool.idle_limit(BACKEND), 0)


# -- TLS options ---------------------------------------------------------------


def https_outbound(**options: Any) -> OutboundConfig:
    """An https outbound with C{options}, as a config file gives it."""
    return parse_outbound("foo", "prod", {"addr": "https://backend.test", **options})


def validation_error(addr: str = "https://backend.test", **options: Any) -> ConfigError:
    """The error loading and checking an outbound with C{options} gives."""
    with pytest.raises(ConfigError) as caught:
        config = parse_outbound("foo", "prod", {"addr": addr, **options})
        factory_for("foo", config, {"http": HTTP, "https": HTTPS})
    return caught.value


HTTP = HTTPOutboundFactory("http")
HTTPS = HTTPOutboundFactory("https")


def test_the_factory_validates_its_options() -> None:
    verifyObject(IOutboundFactory, HTTPS)
    verifyObject(IOutboundValidator, HTTPS)


def test_without_options_https_verifies_with_the_platform_trust() -> None:
    assert tls_settings(https_outbound()) == TLSSettings()
    factory_for("foo", https_outbound(), {"https": HTTPS})


def test_tls_options_are_read(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    (tmp_path / "ca.pem").write_bytes(ca.cert)
    key, cert = ca.issue("nfork", client=True).write(tmp_path, "client")
    config = https_outbound(
        caFile=str(tmp_path / "ca.pem"),
        serverName="api.internal",
        clientCert=str(cert),
        clientKey=str(key),
    )
    factory_for("foo", config, {"https": HTTPS})
    outbound = HTTPS.build(config, context(MemoryReactorClock()))
    assert isinstance(outbound, HTTPOutbound)
    assert outbound.target.tls == TLSSettings(
        ca_file=str(tmp_path / "ca.pem"),
        server_name="api.internal",
        client_cert=str(cert),
        client_key=str(key),
    )


@pytest.mark.parametrize(
    ("options", "key", "problem"),
    [
        ({"cafile": "/x"}, "cafile", 'unknown key "cafile" (did you mean "caFile"?)'),
        ({"caFile": 3}, "caFile", "expected a file path (a non-empty string), got 3"),
        ({"caFile": ""}, "caFile", "expected a file path"),
        ({"serverName": "a b"}, "serverName", 'invalid host name "a b"'),
        ({"insecure": "yes"}, "insecure", 'expected true or false, got "yes"'),
        (
            {"clientKey": "/k.pem"},
            "clientKey",
            'a client key needs its certificate: set "clientCert" too',
        ),
        (
            {"caFile": "/ca.pem", "insecure": True},
            "caFile",
            'remove one of "caFile" and "insecure"',
        ),
        (
            {"caFile": "/nonexistent/ca.pem"},
            "caFile",
            'cannot read "/nonexistent/ca.pem": No such file or directory',
        ),
    ],
)
def test_bad_tls_options_are_refused_naming_the_key(
    options: dict[str, Any], key: str, problem: str
) -> None:
    error = validation_error(**options)
    assert error.key == key
    assert str(error).startswith('inbound "foo": outbound "prod": ')
    assert problem in str(error)


def test_tls_options_on_a_plain_http_outbound_are_refused() -> None:
    error = validation_error("backend:80", insecure=True)
    assert (error.key, error.problem) == (
        "insecure",
        "TLS options are for https:// outbounds only, not http://",
    )


def test_files_that_are_not_what_they_should_be_are_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    _, cert = ca.issue("nfork", client=True).write(tmp_path, "client")
    other_key, _ = ca.issue("other", client=True).write(tmp_path, "other")
    for options, key_name, problem in (
        ({"caFile": str(junk)}, "caFile", "holds no valid PEM CA certificate"),
        ({"clientCert": str(junk)}, "clientCert", "holds no valid PEM certificate"),
        (
            {"clientCert": str(cert), "clientKey": str(junk)},
            "clientKey",
            "holds no valid PEM private key",
        ),
        (
            {"clientCert": str(cert)},
            "clientKey",
            "holds no valid PEM private key",
        ),
        (
            {"clientCert": str(cert), "clientKey": str(other_key)},
            "clientKey",
            "the private key does not match the client certificate",
        ),
        ({"caFile": str(tmp_path)}, "caFile", "cannot read"),
    ):
        error = validation_error(**options)
        assert (error.key, problem in error.problem) == (key_name, True), error


def test_insecure_is_logged_loudly_when_built() -> None:
    config = https_outbound(insecure=True)
    factory_for("foo", config, {"https": HTTPS})
    with capturedLogs() as events:
        outbound = HTTPS.build(config, context(MemoryReactorClock()))
    assert isinstance(outbound, HTTPOutbound)
    assert outbound.target.tls.insecure
    (warning,) = [e for e in events if e["log_level"] == LogLevel.warn]
    text = formatEvent(warning)
    assert "outbound prod" in text and "verification is OFF" in text
    assert warning["inbound"] == "foo"


def test_tls_options_are_written_back_as_given() -> None:
    config = inbound_config(
        out={"prod": {"addr": "https://b.test", "serverName": "api.test"}}
    )
    assert config.to_json()["out"]["prod"] == {
        "addr": "https://b.test",
        "serverName": "api.test",
    }


def context(reactor: Any) -> OutboundContext:
    return OutboundContext(reactor, HTTPClientPool(reactor), "foo")
