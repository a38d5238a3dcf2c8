"""Unit tests of the controller over a memory reactor and fake outbounds."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from nfork.config import ConfigError, InboundConfig, parse_outbound
from nfork.control.controller import (
    LISTEN_BACKLOG,
    Conflict,
    Controller,
    UnknownInbound,
    UnknownOutbound,
    with_backlog,
)
from nfork.outbounds.api import IOutboundFactory
from nfork.proxy.client import HTTPClientPool
from tests.support.configs import inbound_config
from tests.support.fakes import FakeFactory, FakeOutbound


class ControllerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.built: dict[str, FakeOutbound] = {}
        factories: dict[str, IOutboundFactory] = {
            "http": FakeFactory("http", self.built),
            "sink": FakeFactory("sink", self.built, gives_response=False),
        }
        self.controller = Controller(
            self.reactor, HTTPClientPool(self.reactor), factories=factories
        )

    def add(self, inbound: InboundConfig) -> Any:
        return self.successResultOf(
            Deferred.fromCoroutine(self.controller.add_inbound(inbound))
        )

    def test_add_inbound_listens_and_lists_it(self) -> None:
        self.add(inbound_config())
        self.assertEqual(len(self.reactor.tcpServers), 1)
        self.assertEqual([c.name for c in self.controller.configs()], ["foo"])
        self.assertEqual(set(self.built), {"prod", "staging"})

    def test_a_failed_build_closes_the_outbounds_it_built(self) -> None:
        working = FakeFactory("http", self.built)

        @implementer(IOutboundFactory)
        class StagingFails:
            scheme = "http"
            gives_response = True

            def build(self, config: Any, context: Any) -> Any:
                if config.name == "staging":
                    raise OSError("cannot open the sink")
                return working.build(config, context)

        self.controller.factories["http"] = StagingFails()
        d = Deferred.fromCoroutine(self.controller.add_inbound(inbound_config()))
        self.failureResultOf(d, OSError)
        self.assertTrue(self.built["prod"].closed)
        self.assertEqual(self.controller.configs(), ())

    def test_duplicate_name_is_a_conflict(self) -> None:
        self.add(inbound_config())
        d = Deferred.fromCoroutine(
            self.controller.add_inbound(inbound_config(listen=":9999"))
        )
        self.assertIn("already exists", str(self.failureResultOf(d, Conflict).value))

    def test_same_listen_address_is_a_conflict(self) -> None:
        self.add(inbound_config(listen="127.0.0.1:9080"))
        d = Deferred.fromCoroutine(
            self.controller.add_inbound(inbound_config("bar", listen="127.0.0.1:9080"))
        )
        self.assertIn('"foo"', str(self.failureResultOf(d, Conflict).value))

    def test_unknown_names_raise_lookup_errors(self) -> None:
        self.add(inbound_config())
        self.assertRaises(UnknownInbound, self.controller.activate, "nope", "prod")
        self.assertRaises(UnknownOutbound, self.controller.activate, "foo", "nope")
        self.assertRaises(UnknownOutbound, self.controller.remove_outbound, "foo", "x")

    def test_removing_the_active_outbound_is_refused(self) -> None:
        self.add(inbound_config())
        self.assertRaises(Conflict, self.controller.remove_outbound, "foo", "prod")
        self.assertEqual(len(self.controller.configs()[0].outbounds), 2)

    def test_activate_swaps_routing_for_the_next_request_only(self) -> None:
        running = self.add(inbound_config())
        before = running.routing
        self.controller.activate("foo", "staging")
        after = running.routing
        self.assertEqual(before.active.name, "prod")
        self.assertEqual(after.active.name, "staging")
        # The outbounds themselves (and their stats) are the same objects.
        self.assertIs(before.active, after.shadows[0])

    def test_put_outbound_keeps_stats_of_unchanged_outbounds(self) -> None:
        running = self.add(inbound_config())
        staging = running.routing.shadows[0]
        self.controller.put_outbound("foo", parse_outbound("foo", "new", "h:1"))
        self.assertIs(running.routing.shadows[0], staging)
        self.assertEqual(
            [r.name for r in running.routing.routes], ["prod", "staging", "new"]
        )
        self.controller.put_outbound("foo", parse_outbound("foo", "staging", "h:2"))
        self.assertIsNot(running.routing.shadows[0], staging)
        self.assertTrue(self.built["new"].closed is False)

    def test_removed_outbound_is_closed(self) -> None:
        self.add(inbound_config())
        staging = self.built["staging"]
        self.controller.remove_outbound("foo", "staging")
        self.assertTrue(staging.closed)

    def test_sink_cannot_be_active(self) -> None:
        bad = inbound_config(out={"prod": "sink://x:1"})
        d = Deferred.fromCoroutine(self.controller.add_inbound(bad))
        self.assertIn(
            "cannot be active", str(self.failureResultOf(d, ConfigError).value)
        )
        self.assertEqual(self.reactor.tcpServers, [])

    def test_remove_inbound_stops_listening(self) -> None:
        running = self.add(inbound_config())
        closed = _watch_port(running)
        self.successResultOf(
            Deferred.fromCoroutine(self.controller.remove_inbound("foo"))
        )
        self.assertEqual(closed, [True])
        self.assertEqual(self.controller.configs(), ())

    def test_update_inbound_in_place_keeps_unchanged_stats(self) -> None:
        running = self.add(inbound_config())
        staging = running.routing.shadows[0]
        self.successResultOf(
            Deferred.fromCoroutine(
                self.controller.update_inbound(inbound_config(timeout="5s"))
            )
        )
        self.assertIs(self.controller.inbound("foo"), running)
        self.assertIs(running.routing.shadows[0], staging)
        self.assertEqual(running.config.timeout, 5.0)

    def test_a_new_listen_address_restarts_the_inbound_keeping_stats(self) -> None:
        running = self.add(inbound_config())
        prod, staging = running.routing.active.stats, running.routing.shadows[0].stats
        changed = inbound_config(
            listen="127.0.0.1:1",
            out={"prod": "127.0.0.1:8080", "staging": "127.0.0.1:9999"},
        )
        self.successResultOf(
            Deferred.fromCoroutine(self.controller.update_inbound(changed))
        )
        restarted = self.controller.inbound("foo")
        self.assertIsNot(restarted, running)
        self.assertIs(restarted.routing.active.stats, prod)
        # staging's address changed: its stats start over.
        self.assertIsNot(restarted.routing.shadows[0].stats, staging)

    def test_stats_from_an_earlier_routing_continue(self) -> None:
        running = self.add(inbound_config())
        earlier = running.routing
        self.successResultOf(
            Deferred.fromCoroutine(self.controller.remove_inbound("foo"))
        )
        back = self.successResultOf(
            Deferred.fromCoroutine(
                self.controller.add_inbound(inbound_config(), stats_from=earlier)
            )
        )
        self.assertIs(back.routing.active.stats, earlier.active.stats)
        self.assertIs(back.routing.shadows[0].stats, earlier.shadows[0].stats)
        # Fresh outbounds all the same: the old ones were closed.
        self.assertIsNot(back.routing.active.outbound, earlier.active.outbound)
        other_window = inbound_config(statsWindow="5s")
        self.successResultOf(
            Deferred.fromCoroutine(
                self.controller.update_inbound(other_window, stats_from=earlier)
            )
        )
        self.assertIsNot(
            self.controller.inbound("foo").routing.active.stats, earlier.active.stats
        )

    def test_stop_waits_for_copies_in_flight_up_to_the_drain_timeout(self) -> None:
        running = self.add(inbound_config())
        closed = _watch_port(running)
        running.fork._dispatch(
            running.routing.active, _request(), True, running.config.timeout
        )
        stopped = Deferred.fromCoroutine(self.controller.stop(drain_timeout=10))
        self.assertNoResult(stopped)
        self.assertEqual(closed, [True])
        self.built["prod"].last.answer(200)
        self.successResultOf(stopped)

    def test_stop_gives_up_after_the_drain_timeout(self) -> None:
        running = self.add(inbound_config(timeout="1m"))
        running.fork._dispatch(
            running.routing.active, _request(), True, running.config.timeout
        )
        stopped = Deferred.fromCoroutine(self.controller.stop(drain_timeout=2))
        self.reactor.advance(1.9)
        self.assertNoResult(stopped)
        self.reactor.advance(0.2)
        self.successResultOf(stopped)

    def connect(self, running: Any) -> tuple[Any, StringTransport]:
        """A client connection to C{running}'s server, in memory."""
        protocol = running.factory.buildProtocol(IPv4Address("TCP", "10.0.0.7", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_remove_inbound_closes_client_connections_after_their_answer(
        self,
    ) -> None:
        running = self.add(inbound_config(timeout="1m"))
        idle, idle_transport = self.connect(running)
        busy, busy_transport = self.connect(running)
        busy.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.successResultOf(
            Deferred.fromCoroutine(self.controller.remove_inbound("foo"))
        )
        self.assertTrue(idle_transport.disconnecting)
        self.assertFalse(busy_transport.disconnecting)
        self.built["prod"].last.answer(200, b"last")
        self.assertIn(b"\r\nConnection: close\r\n", busy_transport.value())
        self.assertTrue(busy_transport.disconnecting)
        # The outbounds close once the last connection has.
        self.built["staging"].last.answer(200)
        self.assertFalse(self.built["prod"].closed)
        idle.connectionLost(Failure(ConnectionDone()))
        busy.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.built["prod"].closed)

    def test_a_removed_inbound_accepts_no_new_connection(self) -> None:
        running = self.add(inbound_config())
        self.successResultOf(
            Deferred.fromCoroutine(self.controller.remove_inbound("foo"))
        )
        address = IPv4Address("TCP", "10.0.0.7", 1)
        self.assertIsNone(running.factory.buildProtocol(address))


def _request() -> Any:
    from nfork.proxy.messages import ProxyRequest

    return ProxyRequest(b"GET", b"/", (), b"")


def _watch_port(running: Any) -> list[bool]:
    """Record calls to the (fake) listening port's stopListening."""
    closed: list[bool] = []
    running.port.stopListening = lambda: closed.append(True)
    return closed


def test_listening_sockets_get_a_backlog_for_bursts_of_connections() -> None:
    assert with_backlog("tcp:9080:interface=127.0.0.1") == (
        f"tcp:9080:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"
    )
    assert with_backlog("unix:/run/nfork.sock").endswith(f":backlog={LISTEN_BACKLOG}")
    # The operator's own backlog, and endpoint types that take none, are kept.
    assert with_backlog("tcp:9080:backlog=5") == "tcp:9080:backlog=5"
    assert with_backlog("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"


def test_an_inbound_listens_with_the_backlog() -> None:
    reactor = MemoryReactorClock()
    factories: dict[str, IOutboundFactory] = {"http": FakeFactory("http", {})}
    controller = Controller(reactor, HTTPClientPool(reactor), factories=factories)
    Deferred.fromCoroutine(controller.add_inbound(inbound_config()))
    ((_port, _factory, backlog, _interface),) = reactor.tcpServers
    assert backlog == LISTEN_BACKLOG
