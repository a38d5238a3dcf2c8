"""A shadow can never hurt production; bad clients never hurt other clients.

Real loopback sockets: a healthy active backend and one misbehaving shadow
per test.  Every client request must get the active answer, fast.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from nfork.control.controller import Controller
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config
from tests.support.faults import FaultServer, refused_address
from tests.support.rawclient import raw_connect, raw_exchange, reset

REQUESTS = 20
CONCURRENCY = 5
FAST_ENOUGH = 1.5
"""Seconds: well below every fault's own delay (2 s timeout, 3 s slowness)."""


class _ProxyTestCase(TestCase):
    """A controller, a healthy active backend, and a client."""

    timeout = 30

    def setUp(self) -> None:
        self.active = RecordingService("prod")
        self.active.listen()
        self.addCleanup(self.active.close)
        self.controller = Controller(reactor, header_timeout=0.5)
        self.addCleanup(self.controller.stop)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=pool)

    @inlineCallbacks
    def start(self, shadow: str, **options: Any) -> Any:
        options = {
            "out": {"prod": self.active.address, "shadow": shadow},
            "timeout": "2s",
            **options,
        }
        inbound = yield Deferred.fromCoroutine(
            self.controller.add_inbound(inbound_config("iso", **options))
        )
        self.port = inbound.port.getHost().port
        return inbound

    @inlineCallbacks
    def timed_get(self, path: str = "/x") -> Any:
        start = cast(Any, reactor).seconds()
        response = yield self.agent.request(
            b"GET", f"http://127.0.0.1:{self.port}{path}".encode(), Headers()
        )
        body = yield readBody(response)
        return response.code, body, cast(Any, reactor).seconds() - start

    @inlineCallbacks
    def load(self) -> Any:
        """REQUESTS requests, CONCURRENCY at a time; every one answered by prod."""
        results: list[tuple[int, bytes, float]] = []

        @inlineCallbacks
        def worker() -> Any:
            for _ in range(REQUESTS // CONCURRENCY):
                result = yield self.timed_get()
                results.append(result)

        yield gatherResults([worker() for _ in range(CONCURRENCY)])
        self.assertEqual([(c, b) for c, b, _ in results], [(200, b"prod")] * REQUESTS)
        slowest = max(t for _, _, t in results)
        self.assertLess(slowest, FAST_ENOUGH)
        return results


class FaultyShadowTests(_ProxyTestCase):
    """Each kind of faulty shadow leaves the active path untouched."""

    @inlineCallbacks
    def fault(self, kind: str) -> Any:
        server = FaultServer(kind)
        address = server.listen()
        self.addCleanup(server.close)
        yield self.start(address)
        yield self.load()
        return server

    @inlineCallbacks
    def test_hanging_shadow(self) -> Any:
        server = yield self.fault("hang")
        self.assertEqual(server.requests, REQUESTS)

    @inlineCallbacks
    def test_resetting_shadow(self) -> Any:
        yield self.fault("reset")

    @inlineCallbacks
    def test_garbage_answering_shadow(self) -> Any:
        yield self.fault("garbage")

    @inlineCallbacks
    def test_huge_body_shadow(self) -> Any:
        yield self.fault("huge")

    @inlineCallbacks
    def test_refusing_shadow(self) -> Any:
        yield self.start(refused_address())
        yield self.load()
        yield deferLater(reactor, 0.05, lambda: None)
        stats = self.controller.outbound_route("iso", "shadow").stats
        self.assertEqual(stats.total_errors, REQUESTS)

    @inlineCallbacks
    def test_slow_shadow(self) -> Any:
        slow = RecordingService("slow", delay=3.0)
        slow.listen()
        self.addCleanup(slow.close)
        yield self.start(slow.address)
        yield self.load()

    @inlineCallbacks
    def test_hanging_shadow_sheds_copies_beyond_max_inflight(self) -> Any:
        server = FaultServer("hang")
        address = server.listen()
        self.addCleanup(server.close)
        yield self.start(
            "x",
            out={
                "prod": self.active.address,
                "shadow": {"addr": address, "maxInflight": 3},
            },
        )
        yield self.load()
        stats = self.controller.outbound_route("iso", "shadow").stats
        self.assertEqual(stats.total_dropped, REQUESTS - 3)
        self.assertEqual(
            self.controller.outbound_route("iso", "prod").stats.total_dropped, 0
        )


class ClientDisconnectTests(_ProxyTestCase):
    """A client that goes away cancels the active copy, not the shadows."""

    @inlineCallbacks
    def test_disconnect_cancels_active_but_not_shadow(self) -> Any:
        self.active.delay = 5.0
        shadow = RecordingService("shadow", delay=0.2)
        shadow.listen()
        self.addCleanup(shadow.close)
        yield self.start(shadow.address, timeout="10s")
        lost: Deferred[None] = Deferred()
        self.active.on_cancel = lambda: lost.callback(None)
        client = yield raw_connect(
            reactor, self.port, b"GET /bye HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        yield self.active.wait_for(1)
        reset(client)  # an abort; a FIN alone is a half-close, still answered
        yield lost  # the active backend saw its request abandoned
        yield deferLater(reactor, 0.4, lambda: None)
        route = self.controller.outbound_route("iso", "shadow")
        self.assertEqual(route.stats.total_responses, {200: 1})


class BadClientTests(_ProxyTestCase):
    """Malformed or slow clients are refused; others are served as usual."""

    @inlineCallbacks
    def check_refused(self, raw: bytes, **options: Any) -> Any:
        shadow = RecordingService("shadow")
        shadow.listen()
        self.addCleanup(shadow.close)
        yield self.start(shadow.address, **options)
        answer = yield raw_exchange(reactor, self.port, raw)
        self.assertTrue(answer == b"" or answer.split(b" ")[1].startswith(b"4"), answer)
        self.assertEqual(self.active.received, [])
        yield self.load()

    def test_garbage_bytes(self) -> Any:
        return self.check_refused(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")

    def test_invalid_chunked_body(self) -> Any:
        return self.check_refused(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nnot hex\r\n0\r\n\r\n"
        )

    def test_oversized_headers(self) -> Any:
        return self.check_refused(
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
            + b"\r\n"
        )

    def test_request_line_over_the_limit(self) -> Any:
        return self.check_refused(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")

    def test_body_over_max_body_with_content_length(self) -> Any:
        return self.check_refused(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n"
            b"Connection: close\r\n\r\n" + b"x" * 2000,
            maxBody=1000,
        )

    @inlineCallbacks
    def test_slowloris_is_cut_off_while_others_are_served(self) -> Any:
        shadow = RecordingService("shadow")
        shadow.listen()
        self.addCleanup(shadow.close)
        yield self.start(shadow.address)
        client = yield raw_connect(reactor, self.port, b"GET / HTTP/1.1\r\n")
        for _ in range(3):
            yield deferLater(reactor, 0.1, lambda: None)
            if client.transport.connected:
                client.transport.write(b"X")
        yield self.load()
        yield client.done
        self.assertIn(b"408", client.received)


class BackendRestartTests(_ProxyTestCase):
    """A backend restarting behind pooled keep-alive connections."""

    @inlineCallbacks
    def test_requests_after_a_backend_restart_succeed(self) -> Any:
        from twisted.protocols.policies import WrappingFactory
        from twisted.web import server

        shadow = RecordingService("shadow")
        shadow.listen()
        self.addCleanup(shadow.close)
        backend = RecordingService("restarting")
        wrapper = WrappingFactory(server.Site(backend))
        port = cast(Any, reactor).listenTCP(0, wrapper, interface="127.0.0.1")
        number = port.getHost().port
        backend.port = port
        self.addCleanup(backend.close)
        self.active = backend
        yield self.start(
            shadow.address,
            out={"prod": f"127.0.0.1:{number}", "shadow": shadow.address},
        )
        for _ in range(3):
            result = yield self.timed_get()
            self.assertEqual(result[:2], (200, b"restarting"))
        # Restart: the listener and every pooled connection go away at once.
        yield port.stopListening()
        for protocol in list(wrapper.protocols):
            protocol.transport.loseConnection()
        backend.port = cast(Any, reactor).listenTCP(
            number, wrapper, interface="127.0.0.1"
        )
        for _ in range(5):
            result = yield self.timed_get()
            self.assertEqual(result[:2], (200, b"restarting"))
        self.assertEqual(len(backend.received), 8)
