"""Upgrades through nfork: WebSocket sessions relayed, mirrored or skipped; h2c.

Real sockets on 127.0.0.1: autobahn's WebSocket server as the backends and
its client as the client, nfork's controller on the test's reactor.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nfork.control.controller import Controller
from nfork.proxy.headers import outbound_request_headers
from nfork.proxy.upgrade import MIRROR_BUFFER, Tunnel, _Handshake, is_h2c
from nfork.proxy.websocket import FrameCounter
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config
from tests.support.faults import ScriptedBackend, answer
from tests.support.rawclient import raw_exchange, split_response
from tests.support.waiting import eventually
from tests.support.websockets import EchoBackend, EchoClient

MESSAGES = 1000


def _frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """One RFC 6455 frame, masked with a zero key when C{mask}."""
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head = bytes((first, bit | size))
    elif size < 65536:
        head = bytes((first, bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + size.to_bytes(8, "big")
    # A zero mask key leaves the payload as it is.
    return head + (b"\0\0\0\0" if mask else b"") + payload


class FrameCounterTests(SynchronousTestCase):
    """Messages are counted however the stream is cut into reads."""

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["text", "binary", "fragmented", "ping", "pong"]),
                st.sampled_from([0, 1, 125, 126, 127, 65535, 65536]),
                st.booleans(),
            ),
            max_size=12,
        ),
        st.lists(st.integers(1, 70000), min_size=1, max_size=20),
    )
    def test_messages_counted_across_any_split(
        self, frames: list[tuple[str, int, bool]], cuts: list[int]
    ) -> None:
        stream = b""
        messages = 0
        for kind, size, mask in frames:
            payload = b"x" * size
            if kind == "fragmented":
                stream += _frame(1, payload, fin=False, mask=mask)
                stream += _frame(9, b"ping", mask=mask)  # control frames interleave
                stream += _frame(0, payload, fin=True, mask=mask)
                messages += 1
            elif kind in ("text", "binary"):
                stream += _frame(1 if kind == "text" else 2, payload, mask=mask)
                messages += 1
            else:
                stream += _frame(9 if kind == "ping" else 10, payload[:125], mask=mask)
        counter = FrameCounter()
        total = 0
        pos = 0
        for cut in cuts * (len(stream) // sum(cuts) + 1):
            if pos >= len(stream):
                break
            total += counter.feed(stream[pos : pos + cut])
            pos += cut
        self.assertEqual((total, counter.messages), (messages, messages))

    def test_close_frame_is_seen(self) -> None:
        counter = FrameCounter()
        counter.feed(_frame(8, b"\x03\xe8"))
        self.assertTrue(counter.closed)
        self.assertEqual(counter.messages, 0)


class HeaderTests(SynchronousTestCase):
    """Which upgrade requests are relayed, and the headers they carry."""

    def test_h2c_only_upgrades_are_ignored(self) -> None:
        self.assertTrue(is_h2c([(b"Upgrade", b"h2c")]))
        self.assertTrue(is_h2c([(b"upgrade", b"H2C, HTTP/2.0")]))
        self.assertFalse(is_h2c([(b"Upgrade", b"websocket")]))
        self.assertFalse(is_h2c([(b"Upgrade", b"h2c, websocket")]))
        self.assertFalse(is_h2c([]))

    def test_upgrade_request_keeps_upgrade_and_connection(self) -> None:
        headers = outbound_request_headers(
            [
                (b"Host", b"shop"),
                (b"Connection", b"Upgrade, X-Private"),
                (b"Upgrade", b"websocket"),
                (b"X-Private", b"1"),
                (b"Sec-WebSocket-Key", b"k"),
            ],
            "10.0.0.1",
            b"http",
            upgrade=True,
        )
        names = [name.lower() for name, _ in headers]
        self.assertIn((b"Upgrade", b"websocket"), headers)
        self.assertIn((b"Connection", b"Upgrade"), headers)
        self.assertIn((b"Sec-WebSocket-Key", b"k"), headers)
        self.assertNotIn(b"x-private", names)
        self.assertEqual(names.count(b"connection"), 1)

    def test_plain_request_still_drops_upgrade(self) -> None:
        headers = outbound_request_headers(
            [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
            "10.0.0.1",
            b"http",
        )
        names = [name.lower() for name, _ in headers]
        self.assertNotIn(b"upgrade", names)
        self.assertNotIn(b"connection", names)


class _Peer:
    """Records what a backend connection reports after the switch."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lost = False

    def connected(self, connection: Any) -> None:
        pass

    def peer_data(self, data: bytes) -> None:
        self.data.append(data)

    def peer_lost(self) -> None:
        self.lost = True


class TunnelTests(SynchronousTestCase):
    """The relay after a 101, on in-memory transports and a Clock."""

    def tunnel(self, idle: float = 5.0) -> tuple[Tunnel, StringTransport, Clock]:
        clock = Clock()
        backend = _Handshake(cast(Any, _Peer()), b"GET / HTTP/1.1\r\n\r\n")
        backend.makeConnection(StringTransport())
        tunnel = Tunnel(clock, backend, idle, [])
        self.backend = cast(StringTransport, backend.transport)
        client = StringTransport()
        tunnel.join(client, b"server-first", b"client-early")
        return tunnel, client, clock

    def test_bytes_flow_both_ways_from_the_first(self) -> None:
        tunnel, client, _ = self.tunnel()
        self.assertEqual(client.value(), b"server-first")
        self.assertTrue(self.backend.value().endswith(b"client-early"))
        tunnel.client_data(b"ping")
        tunnel.backend_data(b"pong")
        self.assertTrue(self.backend.value().endswith(b"ping"))
        self.assertTrue(client.value().endswith(b"pong"))

    def test_each_side_is_the_producer_of_the_other(self) -> None:
        _, client, _ = self.tunnel()
        self.assertIs(client.producer, self.backend)
        self.assertIs(self.backend.producer, client)
        self.assertTrue(client.streaming and self.backend.streaming)

    def test_idle_session_is_closed_after_the_idle_timeout(self) -> None:
        tunnel, client, clock = self.tunnel(idle=5.0)
        clock.advance(4)
        tunnel.client_data(b"still here")
        clock.advance(4)
        self.assertFalse(tunnel.closed)
        clock.advance(1.5)
        self.assertTrue(tunnel.closed)
        self.assertTrue(client.disconnecting and self.backend.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_client_close_closes_the_backend(self) -> None:
        tunnel, _, clock = self.tunnel()
        tunnel.client_lost()
        self.assertTrue(self.backend.disconnecting)
        self.assertIsNone(self.backend.producer)
        self.assertEqual(clock.getDelayedCalls(), [])


class WebSocketTests(TestCase):
    """WebSocket sessions through a real inbound, to real WebSocket servers."""

    timeout = 60

    def setUp(self) -> None:
        self.controller = Controller(reactor)
        self.addCleanup(self.controller.stop)

    def backend(self, **options: Any) -> EchoBackend:
        backend = EchoBackend(**options)
        backend.listen()
        self.addCleanup(backend.close)
        return backend

    @inlineCallbacks
    def inbound(self, out: dict[str, Any], **extra: Any) -> Any:
        config = inbound_config("ws", out=out, active="prod", **extra)
        yield Deferred.fromCoroutine(self.controller.add_inbound(config))
        return self.controller.inbound("ws").port.getHost().port  # type: ignore[attr-defined]

    def stats(self, outbound: str) -> dict[str, Any]:
        """The outbound's totals since the inbound started."""
        snapshot: Any = self.controller.inbound_stats("ws")[outbound]
        totals: dict[str, Any] = snapshot["total"]
        return totals

    def client(self, port: int, **options: Any) -> EchoClient:
        client = EchoClient(port, **options)
        self.addCleanup(client.connector.disconnect)
        return client

    @inlineCallbacks
    def test_echo_session_of_1000_messages_in_order(self) -> Any:
        prod = self.backend()
        staging = RecordingService("staging")
        staging.listen()
        self.addCleanup(staging.close)
        port = yield self.inbound({"prod": prod.address, "staging": staging.address})
        client = self.client(port)
        yield client.opened
        sent = [
            b"message %d " % i + os.urandom(random.randrange(200))
            for i in range(MESSAGES)
        ]
        for payload in sent:
            client.send(payload)
        yield client.arrivals.wait_for(MESSAGES)
        self.assertEqual(client.echoes, sent)
        self.assertEqual(prod.received, sent)
        headers = prod.requests[0]
        self.assertEqual(headers["x-nfork"], "true")
        self.assertEqual(headers["upgrade"].lower(), "websocket")
        clean = yield client.close()
        self.assertTrue(clean)
        yield eventually(reactor, lambda: prod.closed == 1)
        # The shadow without "websocket": "mirror" never saw the handshake.
        self.assertEqual(staging.received, [])
        yield eventually(
            reactor, lambda: self.stats("staging")["skipped"] == {"upgrade": 1}
        )
        self.assertEqual(self.stats("prod")["responses"], {"101": 1})

    @inlineCallbacks
    def test_mirrored_shadow_receives_every_client_message(self) -> Any:
        prod = self.backend()
        mirror = self.backend()
        mirror.echo = False
        port = yield self.inbound(
            {
                "prod": prod.address,
                "mirror": {"addr": mirror.address, "websocket": "mirror"},
            }
        )
        client = self.client(port)
        yield client.opened
        sent = [b"%d" % i for i in range(MESSAGES)]
        for payload in sent:
            client.send(payload)
        yield client.arrivals.wait_for(MESSAGES)
        yield mirror.arrivals.wait_for(MESSAGES)
        self.assertEqual(mirror.received, sent)
        self.assertEqual(client.echoes, sent)
        self.assertEqual(mirror.sessions, 1)
        yield client.close()
        stats = self.stats("mirror")
        self.assertEqual((stats["responses"], stats["dropped"]), ({"101": 1}, 0))

    @inlineCallbacks
    def test_mirrored_session_with_permessage_deflate(self) -> Any:
        prod = self.backend(deflate=True)
        same = self.backend(deflate=True)
        plain = self.backend()
        port = yield self.inbound(
            {
                "prod": prod.address,
                "same": {"addr": same.address, "websocket": "mirror"},
                "plain": {"addr": plain.address, "websocket": "mirror"},
            }
        )
        client = self.client(port, deflate=True)
        yield client.opened
        sent = [b"compressible " * 20 + b"%d" % i for i in range(100)]
        for payload in sent:
            client.send(payload)
        yield client.arrivals.wait_for(len(sent))
        yield same.arrivals.wait_for(len(sent))
        self.assertEqual(same.received, sent)
        # A shadow that negotiated other extensions cannot read the frames.
        self.assertEqual(plain.received, [])
        yield eventually(
            reactor,
            lambda: self.stats("plain")["skipped"] == {"websocket_extensions": 1},
        )
        yield client.close()

    @inlineCallbacks
    def test_stalled_mirror_is_cut_and_does_not_slow_the_session(self) -> Any:
        prod = self.backend()
        stalled = self.backend(read=False)
        port = yield self.inbound(
            {
                "prod": prod.address,
                "stalled": {"addr": stalled.address, "websocket": "mirror"},
            }
        )
        client = self.client(port)
        yield client.opened
        yield eventually(reactor, lambda: stalled.sessions == 1)
        payload = os.urandom(64 * 1024)
        count = 400  # 25 MiB: far more than the socket buffers and MIRROR_BUFFER
        started = time.monotonic()
        for _ in range(count):
            client.send(payload)
        yield client.arrivals.wait_for(count, timeout=30)
        elapsed = time.monotonic() - started
        self.assertEqual(len(client.echoes), count)
        # Loopback moves 25 MiB each way in about 0.2 s; a session held to
        # the stalled shadow's pace would never finish.
        self.assertLess(elapsed, 5.0)
        stats = self.stats("stalled")
        self.assertGreaterEqual(stats["dropped"], 1)
        self.assertLess(len(stalled.received), count)
        self.assertGreater(count * len(payload), MIRROR_BUFFER)
        yield client.close()

    @inlineCallbacks
    def test_silent_session_is_closed_after_idle_timeout(self) -> Any:
        prod = self.backend()
        port = yield self.inbound({"prod": prod.address}, idleTimeout="300ms")
        client = self.client(port)
        yield client.opened
        client.send(b"one")
        yield client.arrivals.wait_for(1)
        started = time.monotonic()
        yield client.closed.addTimeout(5, reactor)
        self.assertGreater(time.monotonic() - started, 0.25)
        yield eventually(reactor, lambda: prod.closed == 1)

    @inlineCallbacks
    def test_removing_the_inbound_closes_its_sessions(self) -> Any:
        prod = self.backend()
        port = yield self.inbound({"prod": prod.address})
        client = self.client(port)
        yield client.opened
        yield Deferred.fromCoroutine(self.controller.remove_inbound("ws"))
        yield client.closed.addTimeout(5, reactor)
        yield eventually(reactor, lambda: prod.closed == 1)

    @inlineCallbacks
    def test_frames_sent_with_the_handshake_reach_the_backend(self) -> Any:
        prod = self.backend()
        port = yield self.inbound({"prod": prod.address})
        hello = _frame(2, b"hello")
        goodbye = _frame(8, b"\x03\xe8")
        raw = yield raw_exchange(
            reactor,
            port,
            b"GET /chat HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" + hello + goodbye,
        )
        head, _, frames = raw.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertIn(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", head)
        # The echo (an unmasked binary frame), then the server's close frame.
        self.assertTrue(frames.startswith(b"\x82\x05hello"), frames)
        self.assertEqual(prod.received, [b"hello"])

    @inlineCallbacks
    def test_non_101_answer_is_relayed(self) -> Any:
        forbidden = answer(b"no websockets here", b"X-Why: policy").replace(
            b"200 OK", b"403 Forbidden"
        )
        refusing = ScriptedBackend(lambda protocol, *_: protocol.write(forbidden))
        address = refusing.listen()
        self.addCleanup(refusing.close)
        port = yield self.inbound({"prod": address})
        raw = yield raw_exchange(
            reactor,
            port,
            b"GET /chat HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        code, headers, body = split_response(raw)
        self.assertEqual((code, body), (403, b"no websockets here"))
        self.assertEqual(headers[b"x-why"], b"policy")
        self.assertEqual(headers[b"connection"], b"close")

    @inlineCallbacks
    def test_h2c_upgrade_is_answered_as_http_1_1(self) -> Any:
        prod = RecordingService("prod")
        prod.listen()
        self.addCleanup(prod.close)
        port = yield self.inbound({"prod": prod.address})
        request = (
            b"POST /h2 HTTP/1.1\r\nHost: shop\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
            b"Content-Length: 4\r\n\r\nbody"
            b"GET /next HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n"
        )
        raw = yield raw_exchange(reactor, port, request)
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw[:80])
        self.assertEqual(raw.count(b"HTTP/1.1 200 "), 2)
        self.assertNotIn(b"101", raw.split(b"\r\n", 1)[0])
        self.assertEqual(prod.received, ["POST /h2 body", "GET /next "])
        for headers in prod.headers:
            self.assertNotIn(b"Upgrade", headers)
            self.assertNotIn(b"Http2-Settings", headers)
