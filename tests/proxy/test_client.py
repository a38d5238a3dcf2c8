"""Tests for L{nfork.proxy.client}: the pooled, byte-transparent HTTP/1.1 client."""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Any

from OpenSSL.SSL import Error as TLSError
from service_identity import VerificationError
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from nfork.proxy.client import (
    MAX_RESPONSE_HEAD,
    SURPLUS_IDLE_TIMEOUT,
    HTTPClientPool,
    IncompleteResponseError,
    PoolClosedError,
    ResponseError,
    Target,
    TLSSettings,
)
from nfork.proxy.messages import ProxyResponse
from tests.support.files import temp_dir
from tests.support.tls import CertificateAuthority, server_tls_options

TARGET = Target("http", "10.0.0.2", 8080, b"backend:8080")

TLS_REFUSED = (TLSError, VerificationError)
"""How a refused certificate fails a request: OpenSSL's verdict on the chain,
service_identity's on the name."""

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET2 = b"GET /2 HTTP/1.1\r\nHost: backend:8080\r\n\r\n"


class RecordingTransport(StringTransport):
    """A StringTransport that counts writes and records TCP_NODELAY."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.nodelay: bool | None = None

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


class PoolTestCase(SynchronousTestCase):
    """A pool on a memory reactor, and helpers to play the backend."""

    keep_idle: int | None = 64
    """The idle allowance for L{TARGET} a new pool gets, as an outbound's."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = self.new_pool()

    def new_pool(self) -> HTTPClientPool:
        """A pool on the memory reactor, keeping C{keep_idle} for L{TARGET}."""
        pool = HTTPClientPool(self.reactor)
        if self.keep_idle is not None:
            pool.allow_idle(TARGET, self.keep_idle)
        return pool

    def connect(self, index: int = -1) -> tuple[Any, RecordingTransport]:
        """Complete the connection attempt number C{index}."""
        factory = self.reactor.tcpClients[index][2]
        protocol: Any = factory.buildProtocol(None)
        transport = RecordingTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def get(self, uri: bytes = b"/", **kwargs: Any) -> Deferred[ProxyResponse]:
        return self.pool.request(TARGET, b"GET", uri, (), b"", **kwargs)

    def roundtrip(self, response: bytes, method: bytes = b"GET") -> ProxyResponse:
        """One request on a new connection, answered with C{response}."""
        d = self.pool.request(TARGET, method, b"/", (), b"")
        protocol, _ = self.connect()
        protocol.dataReceived(response)
        return self.successResultOf(d)


class SerializationTests(PoolTestCase):
    """Requests reach the backend byte for byte as given."""

    def sent(self, target: Target, method: bytes, headers: Any, body: bytes) -> bytes:
        self.pool.request(target, method, b"/x?y=1", headers, body)
        _, transport = self.connect()
        self.assertEqual(transport.writes, 1)
        data: bytes = transport.value()
        return data

    def test_get_headers_in_order_and_case(self) -> None:
        headers = (
            (b"X-Mixed-Case", b"a"),
            (b"cookie", b"c=1"),
            (b"X-Mixed-Case", b"b"),
            (b"Accept-Encoding", b"gzip"),
        )
        self.assertEqual(
            self.sent(TARGET, b"GET", headers, b""),
            b"GET /x?y=1 HTTP/1.1\r\nHost: backend:8080\r\n"
            b"X-Mixed-Case: a\r\ncookie: c=1\r\nX-Mixed-Case: b\r\n"
            b"Accept-Encoding: gzip\r\n\r\n",
        )

    def test_post_body_gets_content_length(self) -> None:
        body = bytes(range(256))
        self.assertEqual(
            self.sent(TARGET, b"POST", ((b"Content-Type", b"x/y"),), body),
            b"POST /x?y=1 HTTP/1.1\r\nHost: backend:8080\r\nContent-Type: x/y\r\n"
            b"Content-Length: 256\r\n\r\n" + body,
        )

    def test_empty_body_methods_get_content_length_zero(self) -> None:
        for method in (b"POST", b"PUT", b"PATCH"):
            self.assertEqual(
                self.sent(TARGET, method, (), b""),
                method + b" /x?y=1 HTTP/1.1\r\nHost: backend:8080\r\n"
                b"Content-Length: 0\r\n\r\n",
            )

    def test_bodyless_methods_get_no_content_length(self) -> None:
        for method in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            self.assertEqual(
                self.sent(TARGET, method, (), b""),
                method + b" /x?y=1 HTTP/1.1\r\nHost: backend:8080\r\n\r\n",
            )

    def test_get_with_body_gets_content_length(self) -> None:
        self.assertEqual(
            self.sent(TARGET, b"GET", (), b"q"),
            b"GET /x?y=1 HTTP/1.1\r\nHost: backend:8080\r\nContent-Length: 1\r\n\r\nq",
        )

    def test_path_prefix_is_prepended_to_the_raw_uri(self) -> None:
        target = Target("http", "10.0.0.2", 8080, b"b", path_prefix=b"/api")
        self.pool.request(target, b"GET", b"/%7Ex/../y?a=%20&b", (), b"")
        _, transport = self.connect()
        self.assertEqual(
            transport.value(), b"GET /api/%7Ex/../y?a=%20&b HTTP/1.1\r\nHost: b\r\n\r\n"
        )

    def test_connects_to_target_with_nodelay(self) -> None:
        self.get()
        self.assertEqual(self.reactor.tcpClients[0][:2], ("10.0.0.2", 8080))
        _, transport = self.connect()
        self.assertIs(transport.nodelay, True)

    def test_targets_differing_in_host_header_share_connections(self) -> None:
        other = Target("http", "10.0.0.2", 8080, b"other", path_prefix=b"/p")
        d = self.get()
        protocol, transport = self.connect()
        protocol.dataReceived(OK)
        self.successResultOf(d)
        transport.clear()
        self.pool.request(other, b"GET", b"/", (), b"")
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(transport.value(), b"GET /p/ HTTP/1.1\r\nHost: other\r\n\r\n")

    def test_target_scheme_is_validated(self) -> None:
        self.assertRaises(ValueError, Target, "ftp", "h", 21, b"h")


class ParsingTests(PoolTestCase):
    """Responses come back as the backend sent them."""

    def test_content_length(self) -> None:
        response = self.roundtrip(
            b"HTTP/1.1 201 Created Just Now\r\nContent-Length: 5\r\n"
            b"x-Custom: a b  c\r\n\r\nhello"
        )
        self.assertEqual(
            response,
            ProxyResponse(
                201,
                b"Created Just Now",
                ((b"Content-Length", b"5"), (b"x-Custom", b"a b  c")),
                b"hello",
            ),
        )

    def test_every_split_point(self) -> None:
        """Names, values, phrase and body split across reads are reassembled."""
        chunked = (
            b"HTTP/1.1 200 Fine Thanks\r\nTransfer-Encoding: chunked\r\n"
            b"X-Long-Header-Name: a long header value\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nTrailer: t\r\n\r\n"
        )
        sized = (
            b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 12\r\n"
            b"X-Long-Header-Name: a long header value\r\n\r\nhello world!"
        )
        for raw, framing in (
            (chunked, (b"Transfer-Encoding", b"chunked")),
            (sized, (b"Content-Length", b"12")),
        ):
            expected = ProxyResponse(
                200,
                b"Fine Thanks",
                (framing, (b"X-Long-Header-Name", b"a long header value")),
                b"hello world!",
            )
            pieces = [[raw[:i], raw[i:]] for i in range(1, len(raw))]
            pieces.append([raw[i : i + 1] for i in range(len(raw))])
            for split in pieces:
                d = self.get()
                protocol, _ = self.connect()
                for piece in split:
                    self.assertNoResult(d)
                    protocol.dataReceived(piece)
                self.assertEqual(self.successResultOf(d), expected)
                self.assertEqual(self.pool.idle_count(TARGET), 1)
                self.pool.close()
                protocol.connectionLost(Failure(ConnectionDone()))
                self.pool = self.new_pool()

    def test_close_delimited(self) -> None:
        d = self.get()
        protocol, _transport = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\npart one, ")
        protocol.dataReceived(b"part two")
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.successResultOf(d),
            ProxyResponse(200, b"OK", ((b"X", b"y"),), b"part one, part two"),
        )
        self.assertEqual(self.pool.idle_count(TARGET), 0)

    def test_close_delimited_cut_by_reset_fails(self) -> None:
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\npart")
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, IncompleteResponseError)

    def test_truncated_content_length_fails(self) -> None:
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
        protocol.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(d, IncompleteResponseError)
        self.assertIsInstance(failure.value.reason.value, ConnectionDone)

    def test_truncated_chunked_fails(self) -> None:
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n"
        )
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, IncompleteResponseError)

    def test_head_with_content_length_has_no_body(self) -> None:
        d = self.pool.request(TARGET, b"HEAD", b"/", (), b"")
        protocol, transport = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        self.assertEqual(
            self.successResultOf(d),
            ProxyResponse(200, b"OK", ((b"Content-Length", b"1234"),), b""),
        )
        # A backend that wrongly sent the body later would answer the next
        # request with it: the connection is not reused.
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.pool.idle_count(TARGET), 0)
        self.get()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_head_with_chunked_has_no_body(self) -> None:
        response = self.roundtrip(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"HEAD"
        )
        self.assertEqual(response.body, b"")
        self.assertEqual(self.pool.idle_count(TARGET), 0)

    def test_bytes_after_head_response_close_the_connection(self) -> None:
        d = self.pool.request(TARGET, b"HEAD", b"/", (), b"")
        protocol, transport = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual(self.successResultOf(d).body, b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.pool.idle_count(TARGET), 0)

    def test_no_body_statuses(self) -> None:
        for status in (b"204 No Content", b"304 Not Modified"):
            d = self.get()
            protocol, _ = self.connect()
            protocol.dataReceived(b"HTTP/1.1 " + status + b"\r\nETag: x\r\n\r\n")
            response = self.successResultOf(d)
            self.assertEqual((response.code, response.body), (int(status[:3]), b""))
            self.assertEqual(self.pool.idle_count(TARGET), 1)
            # Reused, and the next response parses.
            d = self.get()
            protocol.dataReceived(OK)
            self.assertEqual(self.successResultOf(d).body, b"ok")
            self.pool.close()
            protocol.connectionLost(Failure(ConnectionDone()))
            self.pool = self.new_pool()

    def test_interim_responses_are_skipped(self) -> None:
        interim = (
            b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
        )
        final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok"
        self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(OK)
        for data in ([interim + final], [interim, final]):
            d = self.get()
            for piece in data:
                protocol.dataReceived(piece)
            self.assertEqual(
                self.successResultOf(d),
                ProxyResponse(
                    200,
                    b"OK",
                    ((b"Content-Length", b"2"), (b"X-Final", b"1")),
                    b"ok",
                ),
            )

    def test_switching_protocols_fails(self) -> None:
        d = self.get()
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        failure = self.failureResultOf(d, ResponseError)
        self.assertIn("101", str(failure.value))
        self.assertTrue(transport.disconnected)

    def test_repeated_headers_kept_in_order(self) -> None:
        response = self.roundtrip(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\n"
            b"Set-Cookie: b=2; Path=/\r\nset-cookie: c=3\r\n\r\n"
        )
        self.assertEqual(
            response.headers,
            (
                (b"Set-Cookie", b"a=1"),
                (b"Content-Length", b"0"),
                (b"Set-Cookie", b"b=2; Path=/"),
                (b"set-cookie", b"c=3"),
            ),
        )

    def test_content_encoding_passed_through(self) -> None:
        body = gzip.compress(b"compressed " * 100)
        response = self.roundtrip(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            % len(body)
            + body
        )
        self.assertEqual(response.body, body)
        self.assertIn((b"Content-Encoding", b"gzip"), response.headers)

    def test_keep_body_false_reads_and_drops_the_body(self) -> None:
        d = self.get(keep_body=False)
        protocol, _ = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbo")
        self.assertNoResult(d)
        protocol.dataReceived(b"dy")
        self.assertEqual(self.successResultOf(d).body, b"")
        self.assertEqual(self.pool.idle_count(TARGET), 1)

    def test_garbage_fails_and_closes(self) -> None:
        d = self.get()
        protocol, transport = self.connect()
        protocol.dataReceived(b"SSH-2.0-OpenSSH_9.6\r\n")
        failure = self.failureResultOf(d, ResponseError)
        self.assertNotIsInstance(failure.value, IncompleteResponseError)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(self.pool.busy_count(TARGET), 0)

    def test_bad_chunk_fails(self) -> None:
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        self.failureResultOf(d, ResponseError)

    def test_bytes_after_complete_response_close_the_connection(self) -> None:
        d = self.get()
        protocol, transport = self.connect()
        protocol.dataReceived(OK + b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(self.successResultOf(d).body, b"ok")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.pool.idle_count(TARGET), 0)


class HostileResponseTests(PoolTestCase):
    """What a broken or hostile backend sends fails its request, at linear cost."""

    def assert_fails(self, *pieces: bytes, problem: str) -> None:
        d = self.get()
        protocol, transport = self.connect()
        for piece in pieces:
            protocol.dataReceived(piece)
        failure = self.failureResultOf(d, ResponseError)
        self.assertIn(problem, str(failure.value))
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(self.pool.busy_count(TARGET), 0)

    def test_a_head_over_the_limit_fails(self) -> None:
        self.assert_fails(
            b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * MAX_RESPONSE_HEAD,
            problem=f"larger than {MAX_RESPONSE_HEAD} bytes",
        )

    def test_a_head_over_the_limit_in_tiny_reads_fails(self) -> None:
        """A trickle: held and fed in batches, never joined per byte."""
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        reads = 0
        while not d.called and reads < 2 * MAX_RESPONSE_HEAD:
            protocol.dataReceived(b"ab")
            reads += 1
        self.failureResultOf(d, ResponseError)
        self.assertLess(reads * 2, MAX_RESPONSE_HEAD + 16)

    def test_many_headers_under_the_limit_are_fine(self) -> None:
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(500))
        response = self.roundtrip(
            b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 2\r\n\r\nok"
        )
        self.assertEqual((len(response.headers), response.body), (501, b"ok"))

    def test_a_head_split_at_every_line_end_still_parses(self) -> None:
        d = self.get()
        protocol, _ = self.connect()
        for line in (b"HTTP/1.1 200 OK\r", b"\nContent-Length: 2\r\n", b"\r", b"\nok"):
            protocol.dataReceived(line)
        self.assertEqual(self.successResultOf(d).body, b"ok")

    def test_garbage_after_a_partial_head_fails_once_the_head_ends(self) -> None:
        self.assert_fails(
            b"HTTP/1.1 200 OK\r\n",
            b"\x00\xffnot a header\r\n\r\n",
            problem="invalid HTTP response",
        )

    def test_transfer_encodings_other_than_chunked_fail(self) -> None:
        for value in (b"gzip", b"chunked, gzip", b"gzip, chunked", b"identity"):
            self.assert_fails(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + value + b"\r\n\r\nbody",
                problem="unsupported Transfer-Encoding",
            )

    def test_transfer_encoding_in_two_headers_fails(self) -> None:
        self.assert_fails(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            problem="unsupported Transfer-Encoding",
        )

    def test_transfer_encoding_with_content_length_fails(self) -> None:
        d = self.get()
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n0\r\n\r\n"
        )
        self.failureResultOf(d, ResponseError)
        self.assertTrue(transport.disconnected)

    def test_chunked_in_any_case_is_accepted(self) -> None:
        response = self.roundtrip(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n"
        )
        self.assertEqual(response.body, b"ok")

    def test_invalid_status_codes_fail(self) -> None:
        for status in (b"000", b"099", b"600", b"999"):
            self.assert_fails(
                b"HTTP/1.1 " + status + b" X\r\nContent-Length: 0\r\n\r\n",
                problem="invalid",
            )

    def test_bodyless_answers_announcing_a_body_are_not_reused(self) -> None:
        for head in (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
        ):
            d = self.get()
            protocol, transport = self.connect()
            protocol.dataReceived(head)
            self.successResultOf(d)
            self.assertTrue(transport.disconnecting, head)
            self.assertEqual(self.pool.idle_count(TARGET), 0)


class RequestBodyTests(PoolTestCase):
    """A long body is written as the caller's object, not copied per request."""

    def test_a_long_body_is_written_after_the_head_uncopied(self) -> None:
        body = b"x" * (1024 * 1024)
        for _ in range(3):
            self.pool.request(TARGET, b"POST", b"/", (), body)
        for index in range(3):
            protocol, transport = self.connect(index)
            self.assertEqual(transport.writes, 2)
            self.assertEqual(
                transport.value(),
                b"POST / HTTP/1.1\r\nHost: backend:8080\r\n"
                b"Content-Length: 1048576\r\n\r\n" + body,
            )
            self.assertIs(protocol._request.payload, body)

    def test_a_short_body_goes_with_the_head_in_one_write(self) -> None:
        self.pool.request(TARGET, b"POST", b"/", (), b"short")
        _, transport = self.connect()
        self.assertEqual(transport.writes, 1)

    def test_a_retried_long_body_is_sent_whole_again(self) -> None:
        body = b"y" * (100 * 1024)
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(OK)
        self.successResultOf(d)
        d = self.pool.request(TARGET, b"PUT", b"/", (), body)
        protocol.connectionLost(Failure(ConnectionDone()))
        protocol2, transport2 = self.connect()
        self.assertTrue(transport2.value().endswith(b"\r\n\r\n" + body))
        protocol2.dataReceived(OK)
        self.assertEqual(self.successResultOf(d).body, b"ok")


class ReuseTests(PoolTestCase):
    """Connections are kept alive and reused."""

    def test_keep_alive_reuse(self) -> None:
        d = self.get(b"/1")
        protocol, transport = self.connect()
        protocol.dataReceived(OK)
        self.successResultOf(d)
        self.assertEqual(
            (self.pool.idle_count(TARGET), self.pool.busy_count(TARGET)), (1, 0)
        )
        transport.clear()
        d = self.get(b"/2")
        self.assertEqual(
            (self.pool.idle_count(TARGET), self.pool.busy_count(TARGET)), (0, 1)
        )
        self.assertEqual(
            transport.value(), b"GET /2 HTTP/1.1\r\nHost: backend:8080\r\n\r\n"
        )
        protocol.dataReceived(OK)
        self.successResultOf(d)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.pool.connections_opened, 1)

    def test_callback_can_reuse_the_connection_at_once(self) -> None:
        d = self.get(b"/1")
        protocol, transport = self.connect()
        second: list[Deferred[ProxyResponse]] = []
        d.addCallback(lambda _: second.append(self.get(b"/2")))
        protocol.dataReceived(OK)
        self.assertTrue(
            transport.value().endswith(b"GET /2 HTTP/1.1\r\nHost: backend:8080\r\n\r\n")
        )
        protocol.dataReceived(OK)
        self.assertEqual(self.successResultOf(second[0]).body, b"ok")
        self.assertEqual(self.pool.connections_opened, 1)

    def test_idle_connections_are_lifo(self) -> None:
        d1, d2 = self.get(), self.get()
        (p1, t1), (p2, t2) = self.connect(0), self.connect(1)
        self.assertEqual(self.pool.busy_count(TARGET), 2)
        p1.dataReceived(OK)
        p2.dataReceived(OK)
        self.successResultOf(gatherResults([d1, d2]))
        t1.clear()
        t2.clear()
        self.get()
        self.assertEqual((t1.value(), bool(t2.value())), (b"", True))

    def test_connection_close_is_not_reused(self) -> None:
        d = self.get()
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertEqual(self.successResultOf(d).body, b"ok")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.pool.idle_count(TARGET), 0)
        self.get()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_http10_is_not_reused(self) -> None:
        self.roundtrip(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(self.pool.idle_count(TARGET), 0)

    def test_idle_connection_closed_by_server_is_forgotten(self) -> None:
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(OK)
        self.successResultOf(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.pool.idle_count(TARGET), 0)
        self.get()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_unexpected_bytes_on_idle_connection_close_it(self) -> None:
        d = self.get()
        protocol, transport = self.connect()
        protocol.dataReceived(OK)
        self.successResultOf(d)
        protocol.dataReceived(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.pool.idle_count(TARGET), 0)


class IdleAllowanceTests(PoolTestCase):
    """A host keeps as many idle connections as its largest allowance."""

    keep_idle = None

    def finish(self, *targets: Target) -> list[Any]:
        """One request per target, all in flight at once on new connections,
        then answered: their connections."""
        ds = [self.pool.request(target, b"GET", b"/", (), b"") for target in targets]
        count = len(targets)
        connections = [self.connect(i - count) for i in range(count)]
        for protocol, _ in connections:
            protocol.dataReceived(OK)
        self.successResultOf(gatherResults(ds))
        return connections

    def test_a_host_keeps_as_many_idle_as_its_allowance(self) -> None:
        allowance = self.pool.allow_idle(TARGET, 2)
        connections = self.finish(TARGET, TARGET, TARGET)
        self.assertEqual(self.pool.idle_count(TARGET), 2)
        self.assertEqual(
            [transport.disconnecting for _, transport in connections],
            [False, False, True],
        )
        # Withdrawn: the next connection released is closed.
        allowance.withdraw()
        d = self.get()
        connections[1][0].dataReceived(OK)
        self.successResultOf(d)
        self.assertTrue(connections[1][1].disconnecting)
        self.assertEqual(self.pool.idle_count(TARGET), 1)

    def test_without_allowance_a_connection_is_closed_after_its_response(
        self,
    ) -> None:
        ((_, transport),) = self.finish(TARGET)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.pool.idle_count(TARGET), 0)

    def test_the_largest_allowance_of_a_shared_host_wins(self) -> None:
        # Two inbounds' outbounds to one backend, with idleConn 8 and 1024:
        # the host keeps 1024 whichever outbound's requests come last.
        other = Target("http", "10.0.0.2", 8080, b"other:8080", path_prefix=b"/o")
        small = self.pool.allow_idle(other, 8)
        self.pool.allow_idle(TARGET, 1024)
        self.assertEqual(self.pool.idle_limit(other), 1024)
        self.finish(*[TARGET, other] * 10)
        self.assertEqual(self.pool.idle_count(other), 20)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        # Registering or withdrawing the smaller one changes nothing.
        small.withdraw()
        self.pool.allow_idle(other, 1)
        self.assertEqual(self.pool.idle_limit(TARGET), 1024)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_withdrawing_the_largest_trims_to_the_next_when_unused(self) -> None:
        self.pool.allow_idle(TARGET, 2)
        large = self.pool.allow_idle(TARGET, 5)
        connections = self.finish(*[TARGET] * 5)
        self.assertEqual(self.pool.idle_count(TARGET), 5)
        large.withdraw()
        self.assertEqual(self.pool.idle_limit(TARGET), 2)
        # The first check only notes how many stayed idle since it started.
        self.reactor.advance(SURPLUS_IDLE_TIMEOUT)
        self.assertEqual(self.pool.idle_count(TARGET), 5)
        # A whole period unused: the surplus goes, least recently used first.
        self.reactor.advance(SURPLUS_IDLE_TIMEOUT)
        self.assertEqual(self.pool.idle_count(TARGET), 2)
        self.assertEqual(
            [transport.disconnecting for _, transport in connections],
            [True, True, True, False, False],
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_withdrawing_the_last_allowance_closes_idle_connections(self) -> None:
        allowance = self.pool.allow_idle(TARGET, 3)
        connections = self.finish(TARGET, TARGET, TARGET)
        allowance.withdraw()
        allowance.withdraw()  # twice: nothing more
        self.assertEqual(self.pool.idle_limit(TARGET), 0)
        self.reactor.advance(SURPLUS_IDLE_TIMEOUT)
        self.reactor.advance(SURPLUS_IDLE_TIMEOUT)
        self.assertEqual(self.pool.idle_count(TARGET), 0)
        self.assertTrue(all(transport.disconnecting for _, transport in connections))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_equal_allowances_are_counted_apart(self) -> None:
        first = self.pool.allow_idle(TARGET, 4)
        self.pool.allow_idle(TARGET, 4)
        first.withdraw()
        self.assertEqual(self.pool.idle_limit(TARGET), 4)

    def test_under_load_as_many_idle_as_busy_are_kept_then_trimmed(self) -> None:
        # Six requests in flight at once (a slow shadow): when they finish,
        # keeping only the allowance of 2 would mean new connections for the
        # next ones.
        self.pool.allow_idle(TARGET, 2)
        ds = [self.get() for _ in range(6)]
        connections = [self.connect(i) for i in range(6)]
        for protocol, _ in connections:
            protocol.dataReceived(OK)
        self.successResultOf(gatherResults(ds))
        self.assertEqual(self.pool.idle_count(TARGET), 3)
        # The first check only notes how many stayed idle since it started.
        self.reactor.advance(SURPLUS_IDLE_TIMEOUT)
        self.assertEqual(self.pool.idle_count(TARGET), 3)
        # A whole period unused: the surplus goes, least recently used first.
        self.reactor.advance(SURPLUS_IDLE_TIMEOUT)
        self.assertEqual(self.pool.idle_count(TARGET), 2)
        self.assertTrue(connections[0][1].disconnecting)
        self.assertFalse(connections[2][1].disconnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(len(self.reactor.tcpClients), 6)


class RetryTests(PoolTestCase):
    """A reused connection found dead is replaced once."""

    def reused(
        self, method: bytes = b"PUT"
    ) -> tuple[Protocol, Deferred[ProxyResponse]]:
        """A connection that served one request, carrying a second."""
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(OK)
        self.successResultOf(d)
        return protocol, self.pool.request(TARGET, method, b"/p", (), b"body")

    def test_stale_connection_is_retried_on_a_new_one(self) -> None:
        protocol, d = self.reused()
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertNoResult(d)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        protocol2, transport2 = self.connect()
        self.assertEqual(
            transport2.value(),
            b"PUT /p HTTP/1.1\r\nHost: backend:8080\r\nContent-Length: 4\r\n\r\nbody",
        )
        protocol2.dataReceived(OK)
        self.assertEqual(self.successResultOf(d).body, b"ok")
        self.assertEqual(self.pool.connections_opened, 2)

    def test_idempotent_methods_are_retried(self) -> None:
        for method in (b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"):
            self.reactor = MemoryReactorClock()
            self.pool = self.new_pool()
            protocol, d = self.reused(method)
            protocol.connectionLost(Failure(ConnectionDone()))
            self.assertNoResult(d)
            self.assertEqual(len(self.reactor.tcpClients), 2, method)

    def test_non_idempotent_methods_are_never_sent_twice(self) -> None:
        for method in (b"POST", b"PATCH", b"CONNECT", b"LOCK", b"PROPPATCH"):
            self.reactor = MemoryReactorClock()
            self.pool = self.new_pool()
            protocol, d = self.reused(method)
            protocol.connectionLost(Failure(ConnectionDone()))
            failure = self.failureResultOf(d, IncompleteResponseError)
            self.assertIsInstance(failure.value.reason.value, ConnectionDone)
            self.assertEqual(len(self.reactor.tcpClients), 1, method)

    def test_retry_is_not_retried(self) -> None:
        protocol, d = self.reused()
        protocol.connectionLost(Failure(ConnectionDone()))
        protocol2, _ = self.connect()
        protocol2.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, IncompleteResponseError)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_lost_after_response_bytes_is_not_retried(self) -> None:
        protocol, d = self.reused()
        protocol.dataReceived(b"HTTP/1.1 200")
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, IncompleteResponseError)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_fresh_connection_lost_fails(self) -> None:
        d = self.get()
        protocol, _ = self.connect()
        protocol.connectionLost(Failure(ConnectionLost()))
        failure = self.failureResultOf(d, IncompleteResponseError)
        self.assertIsInstance(failure.value.reason.value, ConnectionLost)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.pool.busy_count(TARGET), 0)

    def test_connection_refused_passes_through(self) -> None:
        d = self.get()
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(
            self.reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(self.pool.busy_count(TARGET), 0)


class CancelTests(PoolTestCase):
    """Cancelling a request abandons its connection."""

    def test_cancel_aborts_the_connection(self) -> None:
        d = self.get()
        protocol, transport = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npar")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(transport.disconnected)
        protocol.dataReceived(b"tial")
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(
            (self.pool.idle_count(TARGET), self.pool.busy_count(TARGET)), (0, 0)
        )
        self.get()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_cancel_on_reused_connection_is_not_retried(self) -> None:
        d = self.get()
        protocol, _transport = self.connect()
        protocol.dataReceived(OK)
        d = self.get()
        d.cancel()
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_cancel_while_connecting_stops_connecting(self) -> None:
        d = self.get()
        self.assertEqual(self.pool.busy_count(TARGET), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(self.pool.busy_count(TARGET), 0)
        # Should the attempt connect anyway, the connection is dropped.
        protocol, transport = self.connect()
        self.assertEqual((transport.value(), transport.disconnected), (b"", True))
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(self.pool.busy_count(TARGET), 0)


class CloseTests(PoolTestCase):
    """close() releases every connection."""

    def test_close_with_nothing_open(self) -> None:
        self.assertIsNone(self.successResultOf(self.pool.close()))

    def test_close(self) -> None:
        d_idle = self.get()
        d_busy = self.get()
        d_connecting = self.get()
        idle, idle_transport = self.connect(0)
        busy, busy_transport = self.connect(1)
        idle.dataReceived(OK)
        self.successResultOf(d_idle)

        closed = self.pool.close()
        self.failureResultOf(d_connecting, PoolClosedError)
        self.assertTrue(self.reactor.connectors[2].stoppedConnecting)
        self.assertTrue(idle_transport.disconnecting)
        self.assertFalse(idle_transport.disconnected)
        self.assertTrue(busy_transport.disconnected)
        self.failureResultOf(self.get(), PoolClosedError)

        idle.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(closed)
        self.assertNoResult(d_busy)
        busy.connectionLost(Failure(ConnectionAborted()))
        self.failureResultOf(d_busy, IncompleteResponseError)
        self.assertIsNone(self.successResultOf(closed))

    def test_close_does_not_retry(self) -> None:
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(OK)
        d = self.get()
        closed = self.pool.close()
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.failureResultOf(d, IncompleteResponseError)
        self.successResultOf(closed)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_response_completed_after_close_is_not_pooled(self) -> None:
        d = self.get()
        protocol, _transport = self.connect()
        closed = self.pool.close()
        # The abort has not taken effect yet when the response arrives.
        protocol.dataReceived(OK)
        self.assertEqual(self.pool.idle_count(TARGET), 0)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.successResultOf(closed)
        self.assertTrue(d.called)


class TLSUnitTests(PoolTestCase):
    """https targets are wrapped in TLS, with settings cached per host."""

    def test_tls_settings_built_once_per_host(self) -> None:
        calls: list[Target] = []

        def creator(target: Target) -> Any:
            calls.append(target)
            return optionsForClientTLS(target.host)

        pool = HTTPClientPool(self.reactor, tls_context_factory=creator)
        target = Target("https", "example.com", 443, b"example.com")
        pool.request(target, b"GET", b"/", (), b"")
        pool.request(target, b"GET", b"/", (), b"")
        self.assertEqual(calls, [target])
        self.assertIsInstance(self.reactor.tcpClients[0][2], TLSMemoryBIOFactory)
        self.assertEqual(self.reactor.tcpClients[0][:2], ("example.com", 443))

    def test_different_tls_settings_never_share_connections(self) -> None:
        plain = Target("https", "example.com", 443, b"example.com")
        insecure = Target(
            "https", "example.com", 443, b"example.com", tls=TLSSettings(insecure=True)
        )
        self.pool.allow_idle(plain, 4)
        self.assertEqual(
            (self.pool.idle_limit(plain), self.pool.idle_limit(insecure)), (4, 0)
        )


# Integration tests: real sockets on 127.0.0.1.

BIG = random.Random(0).randbytes(5 * 1024 * 1024)


class Backend(Resource):
    """GET /big: 5 MiB; POST: echo; anything else: the URI."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        if request.uri == b"/big":
            request.setHeader(b"content-type", b"application/octet-stream")
            return BIG
        return request.uri

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        data: bytes = request.content.read()
        return data


class TrackingFactory(WrappingFactory):
    """Keeps the server-side connections, to close them and wait for them."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._waiting: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def all_closed(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d


class DropsSecondRequest(Protocol):
    """Answers the first request on a connection; closes on the second."""

    def connectionMade(self) -> None:
        self.seen = 0

    def dataReceived(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n\r\n")):
            self.seen += 1
            if self.seen == 2 and self.factory.connections == 1:
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            self.transport.write(OK)  # type: ignore[union-attr]


class DropsSecondRequestFactory(Factory):
    protocol = DropsSecondRequest

    def __init__(self) -> None:
        self.connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


class IntegrationTests(TestCase):
    """The pool against twisted.web over real sockets."""

    def setUp(self) -> None:
        self.reactor: IReactorTCP = global_reactor
        self.pools: list[HTTPClientPool] = []
        self.servers: list[TrackingFactory] = []
        self.pool = self.new_pool()
        self.site = TrackingFactory(Site(Backend()))
        self.target = self.listen(self.site, "http")

    def new_pool(self, **kwargs: Any) -> HTTPClientPool:
        pool = HTTPClientPool(self.reactor, **kwargs)
        self.pools.append(pool)
        return pool

    def listen(self, factory: Any, scheme: str, tls: Any = None) -> Target:
        """Serve C{factory} on a new port (in TLS with C{tls}); its target.

        The pools made so far keep idle connections to it, as outbounds ask.
        """
        server = TrackingFactory(factory)
        self.servers.append(server)
        listening: Any = server
        if tls is not None:
            listening = TLSMemoryBIOFactory(tls, False, server)
        port = self.reactor.listenTCP(0, listening, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port  # type: ignore[attr-defined]
        target = Target(scheme, "127.0.0.1", number, b"localhost:%d" % number)
        for pool in self.pools:
            pool.allow_idle(target, 64)
        return target

    async def tearDown(self) -> None:  # type: ignore[override]
        """Close the clients, then wait for the servers to see it."""
        for pool in self.pools:
            await pool.close()
        for server in self.servers:
            await server.all_closed()

    async def test_big_bodies_roundtrip(self) -> None:
        response = await self.pool.request(self.target, b"GET", b"/big", (), b"")
        self.assertEqual((response.code, len(response.body)), (200, len(BIG)))
        self.assertTrue(response.body == BIG)
        response = await self.pool.request(self.target, b"POST", b"/", (), BIG[::-1])
        self.assertTrue(response.body == BIG[::-1])
        self.assertEqual(self.pool.connections_opened, 1)

    async def test_keep_alive_over_sequential_requests(self) -> None:
        for i in range(20):
            response = await self.pool.request(self.target, b"GET", b"/%d" % i, (), b"")
            self.assertEqual(response.body, b"/%d" % i)
        self.assertEqual(self.pool.connections_opened, 1)
        self.assertEqual(self.pool.idle_count(self.target), 1)

    async def test_server_closing_idle_connection(self) -> None:
        await self.pool.request(self.target, b"GET", b"/", (), b"")
        for protocol in list(self.servers[0].protocols):
            protocol.transport.loseConnection()
        # Whether the client notices the close before or after sending.
        response = await self.pool.request(self.target, b"GET", b"/again", (), b"")
        self.assertEqual(response.body, b"/again")
        self.assertEqual(self.pool.connections_opened, 2)

    async def test_stale_connection_is_retried(self) -> None:
        backend = DropsSecondRequestFactory()
        target = self.listen(backend, "http")
        await self.pool.request(target, b"GET", b"/", (), b"")
        response = await self.pool.request(target, b"PUT", b"/", (), b"body")
        self.assertEqual(response.body, b"ok")
        self.assertEqual(backend.connections, 2)

    async def test_a_post_on_a_stale_connection_is_not_sent_again(self) -> None:
        backend = DropsSecondRequestFactory()
        target = self.listen(backend, "http")
        await self.pool.request(target, b"GET", b"/", (), b"")
        with self.assertRaises(IncompleteResponseError):
            await self.pool.request(target, b"POST", b"/", (), b"body")
        self.assertEqual(backend.connections, 1)

    async def test_connection_refused(self) -> None:
        port = self.reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
        number = port.getHost().port  # type: ignore[attr-defined]
        await maybeDeferred(port.stopListening)
        target = Target("http", "127.0.0.1", number, b"x")
        with self.assertRaises(ConnectionRefusedError):
            await self.pool.request(target, b"GET", b"/", (), b"")

    def https(
        self, settings: TLSSettings | None = None, *names: str, **options: Any
    ) -> Target:
        """A TLS backend with a certificate from a test CA for C{names}
        (by default 127.0.0.1), and its target with C{settings} (by default
        trusting that CA)."""
        directory = temp_dir(self)
        self.ca = CertificateAuthority()
        ca_file = directory / "ca.pem"
        ca_file.write_bytes(self.ca.cert)
        self.ca_file = str(ca_file)
        server = self.ca.issue(*(names or ("127.0.0.1",)))
        target = self.listen(
            Site(Backend()), "https", server_tls_options(server, **options)
        )
        tls = settings if settings is not None else TLSSettings(ca_file=self.ca_file)
        return Target("https", target.host, target.port, target.host_header, tls=tls)

    async def request(self, target: Target, body: bytes = b"") -> ProxyResponse:
        """A POST of C{body} to C{target} with the pool, keeping idle connections."""
        self.pool.allow_idle(target, 64)
        return await self.pool.request(target, b"POST", b"/", (), body)

    async def test_https(self) -> None:
        target = self.https()
        for _ in range(3):
            response = await self.request(target, b"secret")
            self.assertEqual(response.body, b"secret")
        self.assertEqual(self.pool.connections_opened, 1)

    async def test_https_certificate_from_another_ca_is_refused(self) -> None:
        self.https()
        other = CertificateAuthority()
        path = Path(self.ca_file).with_name("other.pem")
        path.write_bytes(other.cert)
        target = self.https(TLSSettings(ca_file=str(path)))
        with self.assertRaises(TLS_REFUSED):
            await self.request(target)

    async def test_https_platform_trust_refuses_a_private_ca(self) -> None:
        target = self.https(TLSSettings())
        with self.assertRaises(TLS_REFUSED):
            await self.request(target)

    async def test_https_server_name_is_sent_and_checked(self) -> None:
        target = self.https(None, "backend.test")
        # The certificate is not for 127.0.0.1: refused...
        with self.assertRaises(TLS_REFUSED):
            await self.request(target)
        # ...but it is for the name given as serverName.
        named = Target(
            "https",
            target.host,
            target.port,
            target.host_header,
            tls=TLSSettings(ca_file=self.ca_file, server_name="backend.test"),
        )
        response = await self.request(named, b"named")
        self.assertEqual(response.body, b"named")
        wrong = Target(
            "https",
            target.host,
            target.port,
            target.host_header,
            tls=TLSSettings(ca_file=self.ca_file, server_name="other.test"),
        )
        with self.assertRaises(TLS_REFUSED):
            await self.request(wrong)

    async def test_https_insecure_accepts_any_certificate(self) -> None:
        target = self.https(TLSSettings(insecure=True), "elsewhere.test")
        response = await self.request(target, b"unverified")
        self.assertEqual(response.body, b"unverified")

    async def test_https_client_certificate(self) -> None:
        target = self.https(None, "127.0.0.1", require_client_from=None)
        # A backend that requires a client certificate from its CA.
        directory = Path(self.ca_file).parent
        server = self.ca.issue("127.0.0.1")
        required = self.listen(
            Site(Backend()),
            "https",
            server_tls_options(server, require_client_from=self.ca),
        )
        key, cert = self.ca.issue("nfork", client=True).write(directory, "client")
        without = Target(
            "https",
            required.host,
            required.port,
            required.host_header,
            tls=target.tls,
        )
        with self.assertRaises((*TLS_REFUSED, ConnectionLost)):
            await self.request(without)
        with_cert = Target(
            "https",
            required.host,
            required.port,
            required.host_header,
            tls=TLSSettings(
                ca_file=self.ca_file, client_cert=str(cert), client_key=str(key)
            ),
        )
        response = await self.request(with_cert, b"mutual")
        self.assertEqual(response.body, b"mutual")
        # One file holding the key and the certificate does too.
        both = directory / "both.pem"
        both.write_bytes(key.read_bytes() + cert.read_bytes())
        combined = Target(
            "https",
            required.host,
            required.port,
            required.host_header,
            tls=TLSSettings(ca_file=self.ca_file, client_cert=str(both)),
        )
        response = await self.request(combined, b"combined")
        self.assertEqual(response.body, b"combined")


class _Collector:
    """An AnswerReceiver that keeps what it is given."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.ended = False
        self.failure: Failure | None = None

    def body(self, data: bytes) -> None:
        self.pieces.append(data)

    def end(self) -> None:
        self.ended = True

    def fail(self, reason: Failure) -> None:
        self.failure = reason


class StreamingTests(PoolTestCase):
    """With C{stream}, an answer whose body is incomplete comes head first."""

    def test_complete_answer_comes_whole_without_a_stream(self) -> None:
        d = self.get(stream=True)
        protocol, _ = self.connect()
        protocol.dataReceived(OK)
        response = self.successResultOf(d)
        self.assertIsNone(response.stream)
        self.assertEqual(response.body, b"ok")

    def test_head_comes_first_then_pieces_as_they_arrive(self) -> None:
        d = self.get(stream=True)
        protocol, _ = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        response = self.successResultOf(d)
        self.assertEqual((response.code, response.body), (200, b"ab"))
        stream = response.stream
        assert stream is not None
        collector = _Collector()
        stream.start(collector)
        protocol.dataReceived(b"cd")
        self.assertEqual((collector.pieces, collector.ended), ([b"cd"], False))
        protocol.dataReceived(b"ef")
        self.assertEqual((collector.pieces, collector.ended), ([b"cd", b"ef"], True))
        # The connection went back to the pool.
        self.assertEqual(self.pool.idle_count(TARGET), 1)

    def test_chunked_pieces_are_decoded(self) -> None:
        d = self.get(stream=True)
        protocol, _ = self.connect()
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        response = self.successResultOf(d)
        assert response.stream is not None
        collector = _Collector()
        response.stream.start(collector)
        protocol.dataReceived(b"2\r\nde\r\n0\r\n\r\n")
        self.assertEqual(response.body + b"".join(collector.pieces), b"abcde")
        self.assertTrue(collector.ended)

    def test_pause_stops_reading_the_backend(self) -> None:
        d = self.get(stream=True)
        protocol, transport = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        stream = self.successResultOf(d).stream
        assert stream is not None
        stream.start(_Collector())
        stream.pause()
        self.assertEqual(transport.producerState, "paused")
        stream.resume()
        self.assertEqual(transport.producerState, "producing")

    def test_connection_paused_at_the_end_is_resumed_before_reuse(self) -> None:
        d = self.get(stream=True)
        protocol, transport = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        stream = self.successResultOf(d).stream
        assert stream is not None
        stream.start(_Collector())
        stream.pause()
        protocol.dataReceived(b"abcd")
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.pool.idle_count(TARGET), 1)

    def test_lost_connection_mid_body_fails_the_stream(self) -> None:
        d = self.get(stream=True)
        protocol, _ = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab")
        stream = self.successResultOf(d).stream
        assert stream is not None
        collector = _Collector()
        stream.start(collector)
        protocol.connectionLost(Failure(ConnectionDone()))
        assert collector.failure is not None
        collector.failure.trap(IncompleteResponseError)

    def test_close_delimited_body_ends_with_the_connection(self) -> None:
        d = self.get(stream=True)
        protocol, _ = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nab")
        stream = self.successResultOf(d).stream
        assert stream is not None
        collector = _Collector()
        stream.start(collector)
        protocol.dataReceived(b"cd")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(collector.pieces, [b"cd"])
        self.assertTrue(collector.ended)

    def test_cancel_aborts_the_connection(self) -> None:
        d = self.get(stream=True)
        protocol, transport = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab")
        stream = self.successResultOf(d).stream
        assert stream is not None
        collector = _Collector()
        stream.start(collector)
        stream.cancel()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(collector.failure)
        self.assertFalse(collector.ended)

    def test_dropped_body_is_never_kept(self) -> None:
        d = self.get(stream=True, keep_body=False)
        protocol, _ = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        response = self.successResultOf(d)
        self.assertEqual(response.body, b"")
        assert response.stream is not None
        collector = _Collector()
        response.stream.start(collector)
        protocol.dataReceived(b"cdef")
        # Passed through, never kept: the head's piece was dropped.
        self.assertEqual((collector.pieces, collector.ended), ([b"cdef"], True))

    def test_zero_length_is_sent_when_asked(self) -> None:
        self.pool.request(TARGET, b"DELETE", b"/", (), b"", zero_length=True)
        _, transport = self.connect()
        self.assertEqual(
            transport.value(),
            b"DELETE / HTTP/1.1\r\nHost: backend:8080\r\nContent-Length: 0\r\n\r\n",
        )


class _FakeUpload:
    """A RequestUpload the test feeds."""

    def __init__(self, length: int | None) -> None:
        self.length = length
        self.writer: Any = None
        self.paused = False
        self.stopped = False

    def start(self, writer: Any) -> None:
        self.writer = writer

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def stop(self) -> None:
        self.stopped = True


class UploadTests(PoolTestCase):
    """A request body streamed after the head (over C{mirrorBody})."""

    def post(self, upload: _FakeUpload) -> Deferred[ProxyResponse]:
        return self.pool.request(TARGET, b"POST", b"/up", (), b"", upload=upload)

    def test_length_known_body_follows_the_head(self) -> None:
        upload = _FakeUpload(6)
        d = self.post(upload)
        protocol, transport = self.connect()
        self.assertEqual(
            transport.value(),
            b"POST /up HTTP/1.1\r\nHost: backend:8080\r\nContent-Length: 6\r\n\r\n",
        )
        upload.writer.write(b"abc")
        upload.writer.write(b"def")
        upload.writer.finish()
        self.assertTrue(transport.value().endswith(b"\r\n\r\nabcdef"))
        protocol.dataReceived(OK)
        self.assertEqual(self.successResultOf(d).body, b"ok")
        self.assertEqual(self.pool.idle_count(TARGET), 1)

    def test_unknown_length_is_chunked(self) -> None:
        upload = _FakeUpload(None)
        self.post(upload)
        _, transport = self.connect()
        upload.writer.write(b"abc")
        upload.writer.finish()
        self.assertTrue(
            transport.value().endswith(
                b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )
        )

    def test_full_backend_pauses_the_client(self) -> None:
        upload = _FakeUpload(6)
        self.post(upload)
        _, transport = self.connect()
        producer = transport.producer
        assert producer is not None
        producer.pauseProducing()
        self.assertTrue(upload.paused)
        producer.resumeProducing()
        self.assertFalse(upload.paused)

    def test_answer_before_the_whole_body_stops_it_and_closes(self) -> None:
        upload = _FakeUpload(100)
        d = self.post(upload)
        protocol, transport = self.connect()
        upload.writer.write(b"abc")
        protocol.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d).code, 413)
        self.assertTrue(upload.stopped)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.pool.idle_count(TARGET), 0)

    def test_streamed_request_is_never_retried(self) -> None:
        d = self.get()
        protocol, _ = self.connect()
        protocol.dataReceived(OK)
        self.successResultOf(d)
        upload = _FakeUpload(3)
        d = self.pool.request(TARGET, b"PUT", b"/up", (), b"", upload=upload)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, IncompleteResponseError)
        self.assertEqual(len(self.reactor.tcpClients), 1)
