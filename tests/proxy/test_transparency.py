"""The proxy is transparent: bytes in, the same bytes out (real sockets).

Apart from the documented headers, what a backend receives and what the
client receives are exactly what was sent: no added Accept-Encoding, no
decompression, no cookie jar, no redirect following, no re-encoding.
"""

from __future__ import annotations

import gzip
import os
from io import BytesIO
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from twisted.web.server import Request
from zope.interface import implementer

from nfork.control.controller import Controller
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config
from tests.support.rawclient import raw_exchange

GZIPPED = gzip.compress(b"compressed payload " * 50)
BINARY = os.urandom(3 * 1024 * 1024) + bytes(range(256))


class ScriptedBackend(RecordingService):
    """Answers per path with bodies and headers that a careless proxy would alter."""

    def __init__(self) -> None:
        super().__init__("backend")
        self.bodies: list[bytes] = []
        self.uris: list[bytes] = []

    def render(self, request: Request) -> Any:
        body = request.content.read() if request.content else b""
        self.bodies.append(body)
        self.uris.append(request.uri)
        self.headers.append(
            {k: list(v) for k, v in request.requestHeaders.getAllRawHeaders()}
        )
        self.received.append(request.uri.decode("ascii"))
        self._wake()
        request.responseHeaders.removeHeader(b"Content-Type")
        path = request.path
        if path == b"/gzip":
            request.setHeader(b"Content-Encoding", b"gzip")
            request.setHeader(b"Content-Type", b"text/plain")
            return GZIPPED
        if path == b"/login":
            request.responseHeaders.setRawHeaders(
                b"Set-Cookie", [b"session=secret-a; Path=/", b"theme=dark"]
            )
            return b"logged in"
        if path == b"/redirect":
            request.setResponseCode(302)
            request.setHeader(b"Location", b"/elsewhere?a=%20b")
            return b""
        if path == b"/head":
            request.setHeader(b"Content-Length", b"1234")
            return b""
        if path == b"/echo":
            request.setHeader(b"X-Echo", b"yes")
            return body
        return b"ok"


class TransparencyTests(TestCase):
    """Bodies, headers, cookies, redirects and odd requests pass intact."""

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.backend = ScriptedBackend()
        self.shadow = ScriptedBackend()
        for backend in (self.backend, self.shadow):
            backend.listen()
            self.addCleanup(backend.close)
        self.controller = Controller(reactor)
        self.addCleanup(self.controller.stop)
        config = inbound_config(
            "t",
            out={"prod": self.backend.address, "shadow": self.shadow.address},
            timeout="5s",
        )
        inbound = yield Deferred.fromCoroutine(self.controller.add_inbound(config))
        self.base = f"http://127.0.0.1:{inbound.port.getHost().port}".encode()
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        # A plain Agent: no cookie jar, no decompression, no redirects.
        self.agent = Agent(reactor, pool=pool)

    @inlineCallbacks
    def fetch(
        self,
        method: bytes,
        path: bytes,
        headers: dict[bytes, list[bytes]] | None = None,
        body: bytes | None = None,
        chunked: bool = False,
    ) -> Any:
        producer = None
        if body is not None:
            producer = (
                _ChunkedBody(body) if chunked else FileBodyProducer(BytesIO(body))
            )
        response: IResponse = yield self.agent.request(
            method, self.base + path, Headers(headers or {}), producer
        )
        content = yield readBody(response)
        return response, content

    @inlineCallbacks
    def test_gzip_body_is_not_decoded_and_no_accept_encoding_is_added(self) -> Any:
        response, content = yield self.fetch(b"GET", b"/gzip")
        self.assertEqual(content, GZIPPED)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Encoding"), [b"gzip"])
        self.assertNotIn(b"Accept-Encoding", self.backend.headers[-1])

    @inlineCallbacks
    def test_set_cookie_of_one_client_never_reaches_another(self) -> Any:
        response, _ = yield self.fetch(b"GET", b"/login")
        self.assertEqual(
            response.headers.getRawHeaders(b"Set-Cookie"),
            [b"session=secret-a; Path=/", b"theme=dark"],
        )
        yield self.fetch(b"GET", b"/other-client")
        self.assertNotIn(b"Cookie", self.backend.headers[-1])
        yield self.fetch(b"GET", b"/with-cookie", {b"Cookie": [b"mine=1"]})
        self.assertEqual(self.backend.headers[-1][b"Cookie"], [b"mine=1"])

    @inlineCallbacks
    def test_redirect_is_passed_through(self) -> Any:
        response, _ = yield self.fetch(b"GET", b"/redirect")
        self.assertEqual(response.code, 302)
        self.assertEqual(
            response.headers.getRawHeaders(b"Location"), [b"/elsewhere?a=%20b"]
        )
        self.assertEqual(self.backend.uris, [b"/redirect"])

    @inlineCallbacks
    def test_head_keeps_the_backend_length_and_sends_no_body(self) -> Any:
        port = int(self.base.rsplit(b":", 1)[1])
        answer = yield raw_exchange(
            reactor,
            port,
            b"HEAD /head HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), answer)
        self.assertIn(b"\r\nContent-Length: 1234", head)
        self.assertEqual(body, b"")
        self.assertEqual(self.backend.headers[-1].get(b"Content-Length"), None)

    @inlineCallbacks
    def test_empty_post_body(self) -> Any:
        response, content = yield self.fetch(b"POST", b"/echo", body=b"")
        self.assertEqual((response.code, content), (200, b""))
        self.assertEqual(self.backend.bodies[-1], b"")

    @inlineCallbacks
    def test_chunked_request_body_arrives_whole(self) -> Any:
        body = b"chunk " * 10_000
        _, content = yield self.fetch(b"PUT", b"/echo", body=body, chunked=True)
        self.assertEqual(content, body)
        self.assertEqual(self.backend.bodies[-1], body)
        self.assertNotIn(b"Transfer-Encoding", self.backend.headers[-1])
        self.assertEqual(
            self.backend.headers[-1][b"Content-Length"], [str(len(body)).encode()]
        )

    @inlineCallbacks
    def test_large_binary_body_both_ways_and_to_the_shadow(self) -> Any:
        response, content = yield self.fetch(b"POST", b"/echo", body=BINARY)
        self.assertEqual(response.code, 200)
        self.assertEqual(len(content), len(BINARY))
        self.assertEqual(content, BINARY)
        self.assertEqual(self.backend.bodies[-1], BINARY)
        yield self.shadow.wait_for(1)
        self.assertEqual(self.shadow.bodies, [BINARY])

    @inlineCallbacks
    def test_non_ascii_path_and_query_are_not_reencoded(self) -> Any:
        # UTF-8 percent-encoded, with odd but valid escapes and a raw "~".
        path = b"/caf%C3%A9/%7euser/~x?q=%C3%BC&x=%2F&y=a+b"
        response, _ = yield self.fetch(b"GET", path)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.backend.uris[-1], path)

    @inlineCallbacks
    def test_raw_non_ascii_request_line_is_refused_and_serving_continues(
        self,
    ) -> Any:
        # RFC 9112 allows only visible ASCII in the request-target.
        port = int(self.base.rsplit(b":", 1)[1])
        answer = yield raw_exchange(
            reactor, port, "GET /caf\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)
        self.assertEqual(self.backend.uris, [])
        response, _ = yield self.fetch(b"GET", b"/still-serving")
        self.assertEqual(response.code, 200)

    @inlineCallbacks
    def test_repeated_request_headers_keep_every_value(self) -> Any:
        yield self.fetch(b"GET", b"/", {b"X-Multi": [b"one", b"two"]})
        self.assertEqual(self.backend.headers[-1][b"X-Multi"], [b"one", b"two"])


@implementer(IBodyProducer)
class _ChunkedBody:
    """A body of unknown length: the client sends it chunked."""

    length = UNKNOWN_LENGTH

    def __init__(self, data: bytes) -> None:
        self._data = data

    def startProducing(self, consumer: Any) -> Deferred[None]:
        for start in range(0, len(self._data), 4096):
            consumer.write(self._data[start : start + 4096])
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass
