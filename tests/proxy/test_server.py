"""Tests for the lean inbound HTTP/1.1 server, without sockets."""

from __future__ import annotations

import resource
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from nfork.proxy.fork import InboundFork
from nfork.proxy.server import (
    DESCRIPTOR_RESERVE,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_HEAD_SIZE,
    InboundProtocol,
    InboundServerFactory,
    default_max_connections,
)
from tests.support.fakes import FakeOutbound
from tests.support.forks import Harness, fork_config

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


class _Connection:
    """One client connection to an inbound served by the lean server."""

    def __init__(self, fork: InboundFork, clock: Clock) -> None:
        factory = InboundServerFactory(fork, clock)
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.7", 5000))
        assert protocol is not None
        self.protocol: InboundProtocol = protocol
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "10.0.0.7", 5000)
        )
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    @property
    def paused(self) -> bool:
        return bool(self.transport.producerState == "paused")


class LeanServerTests(SynchronousTestCase):
    """Requests are parsed, forked and answered in order on one connection."""

    def setUp(self) -> None:
        self.h = Harness(fork_config(maxBody=100))
        self.prod: FakeOutbound = self.h["prod"]
        self.c = _Connection(self.h.fork, self.h.clock)

    def test_keep_alive_serves_several_requests(self) -> None:
        for i in range(3):
            self.c.send(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            self.prod.last.answer(200, b"body%d" % i)
            self.assertEqual(
                self.c.received(),
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbody%d" % i,
            )
        self.assertFalse(self.c.closed)
        self.assertEqual([s.request.uri for s in self.prod.sent], [b"/0", b"/1", b"/2"])

    def test_pipelined_requests_are_answered_in_order(self) -> None:
        self.c.send(GET.replace(b"/a", b"/1") + GET.replace(b"/a", b"/2"))
        self.assertEqual(len(self.prod.sent), 1)
        self.assertTrue(self.c.paused)
        self.prod.last.answer(200, b"one")
        self.assertEqual(len(self.prod.sent), 2)
        self.prod.last.answer(200, b"two")
        answers = self.c.received()
        self.assertLess(answers.index(b"one"), answers.index(b"two"))
        self.assertFalse(self.c.paused)

    def test_answer_without_reason_phrase_gets_the_standard_one(self) -> None:
        self.c.send(GET)
        self.prod.last.answer(404, b"", phrase=b"")
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 404 Not Found\r\n"))

    def test_chunked_body_arrives_whole(self) -> None:
        self.c.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        self.c.send(b"6\r\n world\r\n0\r\n\r\n")
        self.assertEqual(self.prod.last.request.body, b"hello world")

    def test_expect_100_continue_is_answered(self) -> None:
        self.c.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        self.assertEqual(self.c.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.c.send(b"ok")
        self.assertEqual(self.prod.last.request.body, b"ok")
        self.assertNotIn(b"Expect", dict(self.prod.last.request.headers))

    def test_content_length_over_max_body_is_refused_before_the_body(self) -> None:
        self.c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
        answer = self.c.received()
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertIn(b"larger than 100 bytes", answer)
        self.assertTrue(self.c.closed)
        self.assertEqual(self.prod.sent, [])

    def test_streamed_body_over_max_body_is_refused(self) -> None:
        self.c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.c.send(b"64\r\n" + b"x" * 100 + b"\r\n")
        self.assertEqual(self.c.received(), b"")
        self.c.send(b"1\r\ny\r\n")
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(self.c.closed)
        self.assertEqual(self.prod.sent, [])

    def test_slow_headers_get_408(self) -> None:
        self.c.send(b"GET / HTTP/1.1\r\n")
        self.h.clock.advance(HEADER_TIMEOUT - 1)
        self.c.send(b"X-Slow: 1\r\n")
        self.assertFalse(self.c.closed)
        self.h.clock.advance(1)
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(self.c.closed)

    def test_idle_connection_is_closed(self) -> None:
        self.h = Harness(fork_config(timeout="1000s"))
        self.prod = self.h["prod"]
        self.c = _Connection(self.h.fork, self.h.clock)
        self.c.send(GET)
        self.h.clock.advance(IDLE_TIMEOUT * 2)
        self.assertFalse(self.c.closed, "a request being answered is not idle")
        self.prod.last.answer()
        self.h.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(self.c.closed)
        self.h.clock.advance(1)
        self.assertTrue(self.c.closed)

    def test_garbage_gets_400_and_close(self) -> None:
        self.c.send(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 400 "))
        self.assertTrue(self.c.closed)

    def test_raw_non_ascii_request_target_gets_400(self) -> None:
        self.c.send("GET /caf\u00e9 HTTP/1.1\r\n\r\n".encode())
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 400 "))
        self.assertEqual(self.prod.sent, [])

    def test_oversized_headers_get_431(self) -> None:
        self.c.send(b"GET / HTTP/1.1\r\n")
        self.c.send(b"X-Big: " + b"v" * 20_000)
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 431 "))
        self.assertTrue(self.c.closed)

    def test_refusal_waits_for_the_answer_before_it(self) -> None:
        self.c.send(GET + b"BAD\x00 request\r\n\r\n")
        self.assertEqual(self.c.received(), b"")
        self.prod.last.answer(200, b"first")
        answers = self.c.received()
        self.assertLess(answers.index(b"first"), answers.index(b" 400 "))
        self.assertTrue(self.c.closed)

    def test_http_1_0_is_answered_and_closed(self) -> None:
        self.c.send(b"GET / HTTP/1.0\r\n\r\n")
        self.prod.last.answer(200, b"hi")
        self.assertEqual(
            self.c.received(),
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        self.assertTrue(self.c.closed)

    def test_http_1_0_keep_alive_keeps_the_connection(self) -> None:
        self.c.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.prod.last.answer(200, b"hi")
        self.assertEqual(
            self.c.received(),
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi",
        )
        self.assertFalse(self.c.closed)
        self.c.send(b"GET /2 HTTP/1.0\r\n\r\n")
        self.assertEqual(self.prod.last.request.uri, b"/2")
        self.prod.last.answer(200, b"bye")
        self.assertTrue(self.c.received().endswith(b"Connection: close\r\n\r\nbye"))
        self.assertTrue(self.c.closed)

    def test_connection_close_is_honoured(self) -> None:
        self.c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.prod.last.answer(200, b"hi")
        self.assertIn(b"\r\nConnection: close\r\n", self.c.received())
        self.assertTrue(self.c.closed)

    def test_header_case_order_and_repeats_are_kept(self) -> None:
        self.c.send(b"GET / HTTP/1.1\r\nhost: x\r\nX-b: 1\r\nx-A: 2\r\nX-b: 3\r\n\r\n")
        headers = self.prod.last.request.headers
        self.assertEqual(
            [h for h in headers if h[0].lower() in (b"x-a", b"x-b")],
            [(b"X-b", b"1"), (b"x-A", b"2"), (b"X-b", b"3")],
        )
        self.assertIn((b"X-Forwarded-For", b"10.0.0.7"), headers)
        self.assertIn((b"X-Forwarded-Proto", b"http"), headers)

    def test_head_answer_carries_no_body(self) -> None:
        self.c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.prod.last.answer(200, b"", headers=((b"Content-Length", b"42"),))
        self.assertEqual(
            self.c.received(), b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"
        )

    def test_disconnect_cancels_the_active_copy_not_the_shadows(self) -> None:
        self.c.send(GET)
        self.c.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.prod.last.cancelled)
        self.assertFalse(self.h["staging"].last.cancelled)
        self.assertEqual(self.c.received(), b"")

    def test_active_timeout_answers_timeout_code(self) -> None:
        self.c.send(GET)
        self.h.clock.advance(1)
        answer: Any = self.c.received()
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
        self.assertIn(b"timed out", answer)
        self.assertFalse(self.c.closed)


class ClientResourceTests(SynchronousTestCase):
    """What one connection may hold: body time, unsent output, its memory."""

    def setUp(self) -> None:
        self.h = Harness(fork_config(timeout="1000s", requestBodyTimeout="5s"))
        self.prod: FakeOutbound = self.h["prod"]
        self.c = _Connection(self.h.fork, self.h.clock)

    def test_a_body_must_arrive_whole_within_the_body_timeout(self) -> None:
        self.c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx")
        self.h.clock.advance(4)
        self.c.send(b"x")  # progress does not extend the deadline
        self.h.clock.advance(0.9)
        self.assertFalse(self.c.closed)
        self.h.clock.advance(0.1)
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(self.c.closed)
        self.assertEqual(self.prod.sent, [])

    def test_a_body_in_the_head_s_read_sets_no_timer(self) -> None:
        self.c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(self.prod.last.request.body, b"ok")
        self.assertIsNone(self.c.protocol._body_deadline)

    def test_a_body_in_tiny_chunks_is_one_bytes_object(self) -> None:
        self.c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(50):
            self.c.send(b"1\r\n%d\r\n" % (i % 10))
        self.c.send(b"0\r\n\r\n")
        body = self.prod.last.request.body
        self.assertIs(type(body), bytes)
        self.assertEqual(body, b"0123456789" * 5)

    def test_unsent_output_holds_the_next_pipelined_request(self) -> None:
        self.c.send(GET.replace(b"/a", b"/1") + GET.replace(b"/a", b"/2"))
        # The transport finds its buffer full while the first answer is written.
        self.c.protocol.pauseProducing()
        self.prod.last.answer(200, b"one")
        self.assertEqual(len(self.prod.sent), 1)
        self.assertTrue(self.c.paused)
        self.c.protocol.resumeProducing()
        self.assertEqual([s.request.uri for s in self.prod.sent], [b"/1", b"/2"])

    def test_output_not_drained_within_the_write_timeout_aborts(self) -> None:
        self.c.send(GET)
        self.c.protocol.pauseProducing()
        self.prod.last.answer(200, b"one")
        self.h.clock.advance(59)
        self.assertFalse(self.c.transport.disconnected)
        self.h.clock.advance(1)
        self.assertTrue(self.c.transport.disconnected)

    def test_output_drained_in_time_is_not_aborted(self) -> None:
        self.c.send(GET)
        self.c.protocol.pauseProducing()
        self.prod.last.answer(200, b"one")
        self.c.protocol.resumeProducing()
        self.h.clock.advance(120)
        self.assertFalse(self.c.transport.disconnected)

    def test_close_after_answer_closes_an_idle_connection_at_once(self) -> None:
        self.c.send(GET)
        self.prod.last.answer(200, b"one")
        self.c.protocol.close_after_answer()
        self.assertTrue(self.c.closed)

    def test_close_after_answer_lets_the_request_under_way_finish(self) -> None:
        self.c.send(GET)
        self.c.protocol.close_after_answer()
        self.assertFalse(self.c.closed)
        self.prod.last.answer(200, b"last")
        answer = self.c.received()
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertTrue(answer.endswith(b"last"))
        self.assertTrue(self.c.closed)

    def test_close_after_answer_waits_for_a_request_being_received(self) -> None:
        self.c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        self.c.protocol.close_after_answer()
        self.assertFalse(self.c.closed)
        self.c.send(b"\r\n")
        self.prod.last.answer(200, b"last")
        self.assertIn(b"\r\nConnection: close\r\n", self.c.received())
        self.assertTrue(self.c.closed)


class ConnectionLimitTests(SynchronousTestCase):
    """The server factory counts its connections and refuses beyond the limit."""

    def test_beyond_max_connections_no_protocol_is_built(self) -> None:
        h = Harness(fork_config(maxConnections=2))
        factory = InboundServerFactory(h.fork, h.clock)
        address = IPv4Address("TCP", "10.0.0.7", 5000)
        first, second = factory.buildProtocol(address), factory.buildProtocol(address)
        self.assertIsNone(factory.buildProtocol(address))
        self.assertEqual(factory.refused, 1)
        assert first is not None and second is not None
        first.makeConnection(StringTransport())
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(address))
        self.assertEqual(factory.refused, 1)

    def test_the_default_limit_is_half_the_descriptors_after_a_reserve(self) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        h = Harness(fork_config())
        factory = InboundServerFactory(h.fork, h.clock)
        self.assertEqual(factory.max_connections, default_max_connections())
        if soft != resource.RLIM_INFINITY:
            self.assertEqual(
                default_max_connections(), max(1, (soft - DESCRIPTOR_RESERVE) // 2)
            )


class RequestHeadTests(SynchronousTestCase):
    """Every byte of a head or trailers is counted; trailers never forwarded."""

    def setUp(self) -> None:
        self.h = Harness(fork_config())
        self.prod: FakeOutbound = self.h["prod"]
        self.c = _Connection(self.h.fork, self.h.clock)

    def test_a_head_sent_a_byte_at_a_time_is_refused_at_the_limit(self) -> None:
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX: "
        self.c.send(head)
        sent = len(head)
        for _ in range(MAX_HEAD_SIZE):
            self.c.send(b"a")
            sent += 1
            if self.c.closed:
                break
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 431 "))
        self.assertLessEqual(sent, MAX_HEAD_SIZE + len(head))

    def test_a_pipelined_head_counts_its_unfinished_line(self) -> None:
        self.c.send(GET + b"GET /2 HTTP/1.1\r\nHost: x\r\nX: " + b"a" * MAX_HEAD_SIZE)
        self.prod.last.answer(200, b"first")
        answers = self.c.received()
        self.assertIn(b"first", answers)
        self.assertIn(b"HTTP/1.1 431 ", answers)
        self.assertEqual(len(self.prod.sent), 1)

    def test_trailers_after_the_body_count_and_are_dropped(self) -> None:
        self.c.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\nHost: evil\r\nAuthorization: Bearer x\r\n\r\n"
        )
        request = self.prod.last.request
        self.assertEqual(request.body, b"ok")
        names = [name.lower() for name, _ in request.headers]
        self.assertNotIn(b"authorization", names)
        self.assertIn((b"X-Forwarded-Host", b"x"), request.headers)

    def test_an_unfinished_trailer_in_the_bodys_read_is_counted(self) -> None:
        self.c.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\nX: " + b"a" * MAX_HEAD_SIZE
        )
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 431 "))
        self.assertEqual(self.prod.sent, [])

    def test_trailers_have_the_head_deadline(self) -> None:
        self.c.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\nX: 1\r\n"
        )
        self.h.clock.advance(HEADER_TIMEOUT)
        self.assertTrue(self.c.received().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(self.c.closed)

    def test_a_chunk_size_line_alone_does_not_count_as_trailers(self) -> None:
        self.c.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\n"
        )
        self.c.send(b"b" * 0x4000 + b"\r\n0\r\n\r\n")
        self.assertEqual(len(self.prod.last.request.body), 0x4000)

    def test_a_half_closed_client_gets_its_answer_then_the_close(self) -> None:
        self.c.send(GET)
        self.c.protocol.readConnectionLost()
        self.assertFalse(self.c.closed)
        self.assertFalse(self.prod.last.cancelled)
        self.prod.last.answer(200, b"hi")
        self.assertTrue(self.c.received().endswith(b"Connection: close\r\n\r\nhi"))
        self.assertTrue(self.c.closed)

    def test_a_half_close_when_idle_closes(self) -> None:
        self.c.protocol.readConnectionLost()
        self.assertTrue(self.c.closed)
