"""The lean HTTP/1.1 server each inbound listens with.

twisted.web's server (line parsing, C{Request} objects, header objects,
C{notifyFinish}) cost a quarter of the proxy's CPU per request.  This
protocol parses requests with C{httptools}' llhttp binding, hands each one to
the inbound's fork object (L{InboundFork.fork}) and is itself the
L{Responder} that writes the answer in one write.

Requests on a connection are answered in order: while one is being answered,
further complete requests are queued and reading stops.  Header names and
values are passed on as received (case, order, repeated headers).  Bad
requests are answered with a 4xx and the connection is closed.
"""

from __future__ import annotations

import resource
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from zope.interface import implementer

from nfork.config import InboundConfig
from nfork.proxy.fork import InboundFork, StreamControl
from nfork.proxy.messages import UploadWriter
from nfork.proxy.target import BadTarget, checked_target, needs_check
from nfork.proxy.transport import unsent_bytes, write_now
from nfork.proxy.upgrade import Tunnel, announces_body, is_h2c, plain_head

HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a request's line and headers, once started."""

IDLE_TIMEOUT = 60.0
"""Seconds an idle client connection (keep-alive or silent) is kept open."""

MAX_HEAD_SIZE = 16384
"""Bytes allowed for a request line, headers and trailers (twisted.web's
limit too); a request target alone longer than this is answered 414."""

MAX_HEADERS = 500
"""Header lines allowed in one request (twisted.web's limit too)."""

DESCRIPTOR_RESERVE = 64
"""File descriptors kept aside for the process itself (listening sockets, the
control API, log and sink files) when sizing the default C{maxConnections}."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)
_NO_BODY_CODES = frozenset((204, 304))


class _Refused(Exception):
    """A request is refused while it is being parsed."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _Pending:
    """A parsed request waiting for its turn, or a refusal to send in order."""

    __slots__ = (
        "body",
        "close",
        "code",
        "headers",
        "method",
        "upgrade",
        "upload",
        "uri",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        uri: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        version: bytes,
        close: bool,
        code: int = 0,
    ) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        self.version = version
        self.close = close
        self.code = code
        """Non-zero for a refusal: C{uri} is then the text to answer."""
        self.upgrade = False
        """An upgrade request (WebSocket): C{body} is what the client sent
        after it, for the upgraded protocol."""
        self.upload: _Upload | None = None
        """A body over C{mirrorBody}, streamed to the active outbound."""


class _Upload:
    """A request body over C{mirrorBody}, read from the client as it arrives.

    The client's connection is read only while the outbound's connection
    takes the body (L{RequestUpload}): until L{start}, and while the
    outbound's output buffer is full, reading is paused, so at most one read
    is held here.
    """

    __slots__ = ("_done", "_pending", "_protocol", "_stopped", "_writer", "length")

    def __init__(
        self, protocol: InboundProtocol, length: int | None, received: bytes
    ) -> None:
        self._protocol = protocol
        self.length = length
        self._pending: list[bytes] = [received] if received else []
        self._writer: UploadWriter | None = None
        self._done = False
        self._stopped = False
        self.pause()

    def start(self, writer: UploadWriter) -> None:
        """The outbound's connection is ready: send what came, then the rest."""
        if self._stopped:
            return
        self._writer = writer
        pending, self._pending = self._pending, []
        for data in pending:
            writer.write(data)
        if self._done:
            writer.finish()
        else:
            self.resume()

    def data(self, data: bytes) -> None:
        """A piece of the body arrived from the client."""
        if self._stopped:
            return
        if self._writer is None:
            self._pending.append(data)
        else:
            self._writer.write(data)

    def finish(self) -> None:
        """The client's body is complete."""
        self._done = True
        if self._writer is not None and not self._stopped:
            self._writer.finish()

    def pause(self) -> None:
        """Stop reading the client."""
        protocol = self._protocol
        if not protocol.gone:
            cast(IPushProducer, protocol.transport).pauseProducing()

    def resume(self) -> None:
        """Read the client again (unless its connection is paused for its answers)."""
        protocol = self._protocol
        if not (protocol.gone or protocol._paused):
            cast(IPushProducer, protocol.transport).resumeProducing()

    def stop(self) -> None:
        """The outbound wants no more: what still comes is dropped."""
        self._stopped = True
        self._pending = []
        self.resume()


@implementer(IPushProducer, IHalfCloseableProtocol)
class InboundProtocol(Protocol):
    """One client connection of an inbound; the L{Responder} of its requests.

    It is also the push producer of its own answers (registered with the
    transport): while more than the transport's buffer (64 KiB) waits to be
    sent, reading stops and no further request is started, and a client that
    takes none of it for C{writeTimeout} is cut off.
    """

    def __init__(
        self,
        fork: InboundFork,
        clock: IReactorTime,
        header_timeout: float,
        idle_timeout: float,
    ) -> None:
        self._fork = fork
        self._clock = clock
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._parser = HttpRequestParser(self)
        self._client_ip = ""
        self._secure = False
        self._trusted = False
        """The client is in a C{trustForwarded} network of L{_trust_config}."""
        self._trust_config: InboundConfig | None = None
        self.gone = False
        """The connection is closed or closing: nothing more is written."""
        self.method = b""
        """The method of the request being answered."""
        self._version = b"HTTP/1.1"
        self._close = False
        """Close the connection after the answer being prepared."""
        self._busy = False
        self._paused = False
        self._broken = False
        """A refusal is on its way: the rest of the input is ignored."""
        self._queue: deque[_Pending] = deque()
        self._cancel: Callable[[], object] | None = None
        self._upgrade_head: _Pending | None = None
        """An upgrade request just parsed, until its rest is known (L{_feed})."""
        self._tunnel: Tunnel | None = None
        """After a 101: the relay that owns the connection."""
        self._stream: StreamControl | None = None
        """The body being streamed to the client, paused while it cannot take it."""
        self._chunked = False
        """The streamed body is sent in chunks (its length is unknown)."""
        self._continue_pending = False
        self._header_deadline: IDelayedCall | None = None
        self._body_deadline: IDelayedCall | None = None
        self._write_deadline: IDelayedCall | None = None
        self._write_mark: int | None = None
        """Unsent bytes when the write deadline was set: less means progress."""
        self._output_full = False
        """The transport holds more than its buffer: wait until it drains."""
        self._closing = False
        """Close once the request being received or answered is answered."""
        self.server: InboundServerFactory | None = None
        """The factory that counts this connection among its inbound's."""
        self._idle_call: IDelayedCall | None = None
        self._last_active = 0.0
        # The request being parsed.
        self._in_head = False
        self._head_bytes = 0
        self._head_raw = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_body = False
        # One buffer, not a list of the parser's pieces: a body sent in tiny
        # chunks would otherwise cost ~22 times its size.
        self._body: bytes | bytearray = b""
        self._body_size = 0
        self._expect_continue = False
        self._length = -1
        """The request's C{Content-Length}, or -1."""
        self._mirror_body = 0
        """The request's body streams once larger than this (C{mirrorBody})."""
        self._upload: _Upload | None = None
        """The body being received streams to the active outbound."""
        self._upload_next: _Pending | None = None
        """A request whose body streams, waiting for the answers before it."""
        self._url: bytes | bytearray = b""
        self._target = b""
        """The request target to forward, in origin form."""
        self._host = -1
        """The index of the C{Host} header in C{_headers}, or -1."""
        self._http_version = ""
        self._in_trailers = False
        """A chunk-size line was read and no data after it yet: the trailer
        section after the last chunk (or, briefly, a chunk's data to come)."""
        self._section_fresh = False
        """The head or trailers being read began during the current read."""
        self._head_exact = False
        """The head being read began at the first byte of a read."""
        self._completed_in_read = False
        """A request ended during the current read."""
        self._read_closed = False
        """The client half-closed: no more requests come on this connection."""

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        """Note who the client is and start the idle timeout."""
        transport = self.transport
        assert transport is not None
        self._client_ip = getattr(transport.getPeer(), "host", "")
        self._secure = ISSLTransport.providedBy(transport)
        self._last_active = self._clock.seconds()
        self._idle_call = self._clock.callLater(self._idle_timeout, self._idle_check)
        cast(IConsumer, transport).registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        """Parse what arrived; complete requests are forked or queued."""
        if self._tunnel is not None:
            self._tunnel.client_data(data)
            return
        if self._broken or self.gone:
            return
        self._last_active = self._clock.seconds()
        self._section_fresh = self._completed_in_read = False
        try:
            self._feed(data)
        except HttpParserCallbackError as e:
            refused = e.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.code, refused.text)
            else:
                self._refuse(400, "nfork: bad request\n")
            return
        except HttpParserError:
            if self._in_head and self._parser.get_method() == b"PRI":
                # The HTTP/2 connection preface ("PRI * HTTP/2.0").
                self._refuse(505, "nfork: HTTP/2 is not supported, only HTTP/1.1\n")
            else:
                self._refuse(400, "nfork: bad request\n")
            return
        if self._in_head or self._in_trailers:
            self._head_unfinished(data)
        if (
            self._in_body
            and self._body_deadline is None
            and not (self._paused or self._broken)
        ):
            # Only a body that spans reads gets a deadline (trailers included).
            self._start_body_deadline()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Cancel the active copy of an unanswered request and every timer."""
        if self._tunnel is not None:
            self._tunnel.client_lost()
        self.gone = True
        self._queue.clear()
        self._stop_header_deadline()
        self._stop_body_deadline()
        self._stop_write_deadline()
        if self.server is not None:
            self.server.forget(self)
        _cancel(self._idle_call)
        self._idle_call = None
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def readConnectionLost(self) -> None:
        """The client half-closed (a FIN): answer its requests, then close.

        A request it had not finished sending when its input ended is dropped.
        """
        if self._tunnel is not None:
            self._tunnel.client_lost()
            return
        if self._read_closed or self.gone:
            return
        self._read_closed = self._broken = True
        self._continue_pending = False
        self._stop_header_deadline()
        self._stop_body_deadline()
        if self._queue:
            self._queue[-1].close = True
        elif self._busy:
            self._close = True
        else:
            self._close_now()

    def writeConnectionLost(self) -> None:
        """nfork never half-closes its side of a connection."""

    # -- parser callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = self._section_fresh = True
        self._head_exact = not self._completed_in_read
        self._head_bytes = 0
        self._head_raw = 0
        self._url = b""
        self._host = -1
        self._headers = []
        self._body = b""
        self._body_size = 0
        self._expect_continue = False
        self._length = -1

    def on_url(self, url: bytes) -> None:
        # One growing buffer: a target sent a byte at a time costs linear time.
        received = self._url
        if not received:
            self._url = url
        elif type(received) is bytearray:
            received += url
        else:
            self._url = bytearray(received) + url
        if len(self._url) > MAX_HEAD_SIZE:
            raise _Refused(414, "nfork: request target too long\n")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            # A trailer field: counted against the head's limit, never forwarded.
            self._head_bytes += len(name) + len(value) + 4
            if self._head_bytes + len(self._url) > MAX_HEAD_SIZE:
                raise _Refused(431, "nfork: request trailers too large\n")
            return
        headers = self._headers
        headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes + len(self._url) > MAX_HEAD_SIZE:
            raise _Refused(431, "nfork: request headers too large\n")
        if len(headers) > MAX_HEADERS:
            raise _Refused(431, "nfork: too many request headers\n")
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            max_body = self._fork.max_body
            if value.isdigit():
                self._length = int(value)
                if max_body is not None and self._length > max_body:
                    raise _Refused(413, "")
        elif (
            size == 6 and name.lower() == b"expect" and value.lower() == b"100-continue"
        ):
            self._expect_continue = True
        elif size == 4 and name.lower() == b"host":
            if self._host >= 0:
                raise _Refused(400, "nfork: more than one Host header\n")
            self._host = len(headers) - 1

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        self._stop_header_deadline()
        parser = self._parser
        version = self._http_version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Refused(
                505, f"nfork: HTTP/{version} is not supported, only HTTP/1.1\n"
            )
        method = parser.get_method()
        if method == b"CONNECT":
            raise _Refused(405, "nfork: CONNECT is not supported\n")
        if self._host < 0 and version == "1.1":
            raise _Refused(400, "nfork: missing Host header\n")
        url = self._url
        if isinstance(url, bytearray):
            url = bytes(url)
        self._target = url
        if needs_check(url):
            self._check_target(url, method)
        if self._expect_continue and version == "1.1":
            if self._busy or self._queue:
                # Answered once the requests before it are.
                self._continue_pending = True
                self._pause()
            else:
                self._write(_CONTINUE)
        self._mirror_body = mirror_body = self._fork.routing.config.mirror_body
        if self._length > mirror_body:
            self._begin_upload(self._length)

    def _begin_upload(self, length: int | None) -> None:
        """Stream the body being received to the active outbound only."""
        body = self._body
        self._body = b""
        upload = self._upload = _Upload(
            self, length, body if type(body) is bytes else bytes(body)
        )
        parser = self._parser
        request = _Pending(
            parser.get_method(),
            self._target,
            self._headers,
            b"",
            b"HTTP/1.1" if self._http_version == "1.1" else b"HTTP/1.0",
            not parser.should_keep_alive(),
        )
        request.upload = upload
        if self._busy or self._queue:
            self._upload_next = request
            self._pause()
        else:
            self._start(request)

    def on_chunk_header(self) -> None:
        self._in_trailers = self._section_fresh = True

    def on_body(self, body: bytes) -> None:
        if self._in_trailers:
            self._in_trailers = False
            self._stop_header_deadline()
        self._body_size += len(body)
        max_body = self._fork.max_body
        if max_body is not None and self._body_size > max_body:
            if self._upload is not None:
                # The request is under way: only cutting it is left.
                self._upload.stop()
                self.stream_abort()
                return
            raise _Refused(413, "")
        if self._upload is not None:
            self._upload.data(body)
            return
        received = self._body
        if not received:
            self._body = body
        elif type(received) is bytearray:
            received += body
        else:
            self._body = bytearray(received) + body
        if self._body_size > self._mirror_body and not self._parser.should_upgrade():
            # A chunked body grew past mirrorBody.
            self._begin_upload(None)

    def on_message_complete(self) -> None:
        self._completed_in_read = True
        if self._in_trailers:
            self._in_trailers = False
            self._stop_header_deadline()
        self._in_body = False
        if self._body_deadline is not None:
            self._stop_body_deadline()
        upload = self._upload
        if upload is not None:
            self._upload = None
            upload.finish()
            return
        if self._broken:
            return
        parser = self._parser
        version = self._http_version
        request = _Pending(
            parser.get_method(),
            self._target,
            self._headers,
            self._body if type(self._body) is bytes else bytes(self._body),
            b"HTTP/1.1" if version == "1.1" else b"HTTP/1.0",
            # HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
            # "Connection: keep-alive" (llhttp applies both rules).
            not parser.should_keep_alive(),
        )
        if parser.should_upgrade():
            # Started, or parsed again (h2c), once its rest is known: L{_feed}.
            self._upgrade_head = request
            return
        self._continue_pending = False
        if self._busy or self._queue:
            self._queue.append(request)
            self._pause()
        else:
            self._start(request)

    # -- answering -----------------------------------------------------------

    def _start(self, request: _Pending) -> None:
        self._busy = True
        self.method = request.method
        self._version = request.version
        self._close = request.close or self._closing
        if request.code == 413:
            self._fork.refuse_too_large(self)
            return
        if request.code:
            self.fail(request.code, request.uri.decode())
            return
        fork = self._fork
        config = fork.routing.config
        if config is not self._trust_config:
            # Once per connection, and again only if the inbound changed.
            self._trust_config = config
            self._trusted = config.trusts_forwarded(self._client_ip)
        if request.upgrade:
            fork.upgrade(
                request.method,
                request.uri,
                request.headers,
                request.body,
                self._client_ip,
                self._secure,
                self._trusted,
                self,
            )
            return
        fork.fork(
            fork.proxy_request(
                request.method,
                request.uri,
                request.headers,
                request.body,
                self._client_ip,
                self._secure,
                self._trusted,
                request.upload,
            ),
            self,
        )

    def _feed(self, data: bytes) -> None:
        """Parse C{data}; an upgrade request in it is started, or parsed again.

        An h2c upgrade is ignored (RFC 9113 section 3.1): its head is parsed
        again without C{Upgrade}, as a plain request, with what followed it.
        Any other upgrade request goes to the active outbound (L{InboundFork.upgrade})
        with what followed it, and nothing more is parsed on this connection.
        """
        while True:
            try:
                self._parser.feed_data(data)
                return
            except HttpParserUpgrade as e:
                rest = data[e.args[0] :]
            head, self._upgrade_head = self._upgrade_head, None
            self._parser = HttpRequestParser(self)
            if head is None:
                self._broken = True
                return
            if is_h2c(head.headers):
                data = plain_head(head.method, head.uri, head.version, head.headers)
                data += rest
                continue
            self._broken = True
            if announces_body(head.headers):
                self._refuse(400, "nfork: an upgrade request with a body\n")
                return
            head.upgrade = True
            head.body = rest
            head.close = True
            self._pause()
            if self._busy or self._queue:
                self._queue.append(head)
            else:
                self._start(head)
            return

    def take_over(self, head: bytes, tunnel: Tunnel) -> ITransport:
        """The active outbound switched protocols: write its 101 C{head}, and
        hand the connection to C{tunnel} (which resumes reading it)."""
        self._cancel = None
        self._busy = False
        self._tunnel = tunnel
        self._stop_header_deadline()
        self._stop_body_deadline()
        self._stop_write_deadline()
        _cancel(self._idle_call)
        self._idle_call = None
        transport = self.transport
        assert transport is not None
        cast(IConsumer, transport).unregisterProducer()
        write_now(transport, head)
        if self._closing:
            # The inbound stopped while the upgrade was under way: the
            # session ends at once, as those already open did.
            self._clock.callLater(0, self._close_now)
        return transport

    def on_gone(self, cancel: Callable[[], object]) -> None:
        """Cancel the active copy if the client goes away before its answer."""
        self._cancel = cancel

    def respond(
        self,
        code: int,
        phrase: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        length: bytes | None,
    ) -> None:
        """Write the whole answer in one write, then serve the next request."""
        if self.gone or not self._busy:
            return
        self._cancel = None
        parts = [
            self._version,
            b" %d " % code,
            phrase or RESPONSES.get(code, b"Unknown"),
            b"\r\n",
        ]
        extend = parts.extend
        for name, value in headers:
            extend((name, b": ", value, b"\r\n"))
        if length is not None:
            extend((b"Content-Length: ", length, b"\r\n"))
        if self._close:
            parts.append(b"Connection: close\r\n")
        elif self._version == b"HTTP/1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if body and self.method != b"HEAD" and code not in _NO_BODY_CODES:
            parts.append(body)
        write_now(self.transport, b"".join(parts))
        if self._write_deadline is not None:
            # Output was already waiting: progress is counted from here.
            self._write_mark = unsent_bytes(self.transport)
        self._answered()

    def respond_stream(
        self,
        code: int,
        phrase: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        length: bytes | None,
        first: bytes,
        control: StreamControl,
    ) -> None:
        """Write the head (and C{first}) now; the body follows as it comes.

        A body of unknown length is chunked to an HTTP/1.1 client, and ends
        with the connection for an HTTP/1.0 one.  While more than the
        transport's buffer waits to be sent, C{control} is paused.
        """
        if self.gone or not self._busy:
            control.cancel()
            return
        self._cancel = control.cancel
        self._stream = control
        parts = [
            self._version,
            b" %d " % code,
            phrase or RESPONSES.get(code, b"Unknown"),
            b"\r\n",
        ]
        extend = parts.extend
        for name, value in headers:
            extend((name, b": ", value, b"\r\n"))
        self._chunked = False
        if length is not None:
            extend((b"Content-Length: ", length, b"\r\n"))
        elif self._version == b"HTTP/1.1":
            self._chunked = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            self._close = True
        if self._close:
            parts.append(b"Connection: close\r\n")
        elif self._version == b"HTTP/1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if first:
            if self._chunked:
                extend((b"%x\r\n" % len(first), first, b"\r\n"))
            else:
                parts.append(first)
        self._stream_write(b"".join(parts))
        if self._output_full:
            control.pause()

    def stream_data(self, data: bytes) -> None:
        """Write a piece of the streamed body."""
        if self._stream is None or self.gone:
            return
        if self._chunked:
            data = b"".join((b"%x\r\n" % len(data), data, b"\r\n"))
        self._stream_write(data)

    def stream_end(self) -> None:
        """The streamed body is complete: end it, serve the next request."""
        if self._stream is None:
            return
        self._stream = None
        self._cancel = None
        if self.gone:
            return
        if self._chunked:
            self._stream_write(b"0\r\n\r\n")
        self._answered()

    def stream_abort(self) -> None:
        """The streamed body was cut: abort the connection (no clean end)."""
        self._stream = None
        self._cancel = None
        if not self.gone:
            self.gone = True
            self._broken = True
            assert self.transport is not None
            cast(Any, self.transport).abortConnection()

    def _stream_write(self, data: bytes) -> None:
        write_now(self.transport, data)
        if self._write_deadline is not None:
            # Output was already waiting: progress is counted from here.
            self._write_mark = unsent_bytes(self.transport)

    def fail(self, code: int, text: str) -> None:
        """Answer with a short plain-text error."""
        body = text.encode("utf-8")
        self.respond(
            code,
            RESPONSES.get(code, b"Unknown"),
            ((b"Content-Type", b"text/plain; charset=utf-8"),),
            body,
            b"%d" % len(body),
        )

    def drop(self) -> None:
        """The answer was cancelled: close the connection without one."""
        self._cancel = None
        self._close_now()

    def _answered(self) -> None:
        self._busy = False
        upload = self._upload
        if upload is not None:
            # Answered before the whole body came: drop the rest, and close.
            self._upload = None
            upload.stop()
            self._close = True
        if self._close:
            self._close_now()
            return
        self._last_active = self._clock.seconds()
        if not self._output_full:
            self._next()

    def _next(self) -> None:
        """Start the next queued request, or read again."""
        if self._queue:
            self._start(self._queue.popleft())
            return
        if self._continue_pending:
            self._continue_pending = False
            self._write(_CONTINUE)
        if self._upload_next is not None:
            request, self._upload_next = self._upload_next, None
            # Its upload reads the client again once the outbound takes it.
            self._paused = False
            self._start(request)
            return
        if self._paused:
            self._paused = False
            assert self.transport is not None
            cast(IPushProducer, self.transport).resumeProducing()
            if (self._in_head or self._in_trailers) and self._header_deadline is None:
                self._header_deadline = self._clock.callLater(
                    self._header_timeout, self._headers_too_slow
                )
            if self._in_body and self._body_deadline is None:
                self._start_body_deadline()

    # -- the transport's producer: answers waiting to be sent --------------------

    def pauseProducing(self) -> None:
        """The client is not taking its answers: stop reading, start no request."""
        self._output_full = True
        self._pause()
        self._start_write_deadline()
        if self._stream is not None:
            self._stream.pause()

    def resumeProducing(self) -> None:
        """Everything written has been sent: carry on."""
        self._output_full = False
        self._stop_write_deadline()
        if self._stream is not None:
            self._stream.resume()
        if not (self._busy or self.gone):
            self._next()

    def stopProducing(self) -> None:
        """The connection is lost; L{connectionLost} cleans up."""

    def close_after_answer(self) -> None:
        """Close now if idle, else once the request under way is answered."""
        if self.gone:
            return
        if not (self._busy or self._queue or self._in_head or self._in_body):
            self._close_now()
            return
        self._closing = True
        if self._busy:
            self._close = True

    # -- refusals and timeouts -------------------------------------------------

    def _unfinished_line(self, data: bytes) -> int:
        """The length of the section's line that C{data} ends inside.

        The part after the read's last line end: inside trailers, or after a
        header line, all of it is the section's.  In a head with no header
        line yet, a part that ends with the target received so far is the
        request line, whose target L{on_url} counts.
        """
        line = len(data) - data.rfind(b"\n") - 1
        if line and self._in_head and not self._headers:
            url = self._url
            if url and data.endswith(bytes(url[-min(line, len(url)) :])):
                return 0
        return line

    def _http_09(self, data: bytes) -> bool:
        """Whether the head being read has an HTTP/0.9 request line (no version).

        llhttp says "0.9" once a header line follows such a line, and "0.0"
        right after it (a line end with no version yet); a version left from
        the connection's previous request hides the latter case, which the
        head deadline then ends.
        """
        version = self._parser.get_http_version()
        return version == "0.9" or (
            version == "0.0" and bool(self._url) and data.endswith(b"\n")
        )

    def _check_target(self, url: bytes, method: bytes) -> None:
        """Refuse a target that is not forwarded; put an absolute one in origin form."""
        try:
            target, authority = checked_target(url, method)
        except BadTarget as e:
            raise _Refused(400, f"{e}\n") from None
        self._target = target
        if authority is not None:
            # RFC 9112 section 7.2: the target's authority replaces Host.
            headers = self._headers
            if self._host >= 0:
                headers[self._host] = (headers[self._host][0], authority)
            else:
                self._host = len(headers)
                headers.append((b"Host", authority))

    def _head_unfinished(self, data: bytes) -> None:
        """A read (C{data}) ended inside a head or trailers: bound them.

        Every byte of a read that began inside the section counts, and every
        byte of the read a head began with when it began at the read's first
        byte.  A section that began after other bytes of its read (a pipelined
        request, the trailers after the last chunk) has its complete lines
        counted as they are parsed (L{on_url}, L{on_header}); here its
        unfinished last line is.
        """
        if not self._section_fresh or (self._in_head and self._head_exact):
            self._head_raw += len(data)
        else:
            self._head_raw += self._unfinished_line(data)
        if self._head_raw > MAX_HEAD_SIZE:
            if self._in_head and len(self._url) + 64 >= self._head_raw:
                self._refuse(414, "nfork: request target too long\n")
            elif self._in_head:
                self._refuse(431, "nfork: request headers too large\n")
            else:
                self._refuse(431, "nfork: request trailers too large\n")
        elif self._in_head and self._http_09(data):
            self._refuse(505, "nfork: HTTP/0.9 is not supported, only HTTP/1.1\n")
        elif self._header_deadline is None and not self._paused:
            self._header_deadline = self._clock.callLater(
                self._header_timeout, self._headers_too_slow
            )

    def _refuse(self, code: int, text: str) -> None:
        """Answer C{code} after the requests before, then close; read no more."""
        self._broken = True
        self._continue_pending = False
        self._stop_header_deadline()
        refusal = _Pending(b"", text.encode(), [], b"", b"HTTP/1.1", True, code)
        if self._busy or self._queue:
            self._queue.append(refusal)
            self._pause()
        else:
            self._start(refusal)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._busy or self._queue:
            self._refuse(408, "nfork: request headers too slow\n")
        else:
            self._write(_TIMED_OUT)
            self._close_now()

    def _idle_check(self) -> None:
        self._idle_call = None
        if self.gone:
            return
        delay = self._idle_timeout
        if not (self._busy or self._in_head or self._queue):
            idle = self._clock.seconds() - self._last_active
            if idle >= delay:
                self._close_now()
                return
            delay -= idle
        self._idle_call = self._clock.callLater(delay, self._idle_check)

    def _start_body_deadline(self) -> None:
        self._body_deadline = self._clock.callLater(
            self._fork.routing.config.request_body_timeout, self._body_too_slow
        )

    def _body_too_slow(self) -> None:
        self._body_deadline = None
        if self._broken or self.gone:
            return
        if self._busy or self._queue:
            self._refuse(408, "nfork: request body too slow\n")
        else:
            self._broken = True
            self._write(_TIMED_OUT)
            self._close_now()

    def _stop_body_deadline(self) -> None:
        _cancel(self._body_deadline)
        self._body_deadline = None

    def _start_write_deadline(self) -> None:
        if self._write_deadline is None:
            self._write_mark = unsent_bytes(self.transport)
            self._write_deadline = self._clock.callLater(
                self._fork.routing.config.write_timeout, self._write_check
            )

    def _write_check(self) -> None:
        """Cut off a client that took none of its output since the last check."""
        self._write_deadline = None
        unsent = unsent_bytes(self.transport)
        if unsent == 0:
            return
        mark = self._write_mark
        if unsent is not None and mark is not None and unsent < mark:
            self._start_write_deadline()
            return
        self.gone = True
        self._broken = True
        assert self.transport is not None
        cast(Any, self.transport).abortConnection()

    def _stop_write_deadline(self) -> None:
        _cancel(self._write_deadline)
        self._write_deadline = None

    def _stop_header_deadline(self) -> None:
        _cancel(self._header_deadline)
        self._header_deadline = None

    # -- transport -------------------------------------------------------------

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._stop_header_deadline()
            self._stop_body_deadline()
            assert self.transport is not None
            cast(IPushProducer, self.transport).pauseProducing()

    def _write(self, data: bytes) -> None:
        if not self.gone:
            assert self.transport is not None
            self.transport.write(data)

    def _close_now(self) -> None:
        if not self.gone:
            self.gone = True
            self._broken = True
            transport = self.transport
            assert transport is not None
            # A registered producer would hold the close until it resumed.
            cast(IConsumer, transport).unregisterProducer()
            transport.loseConnection()
            if unsent_bytes(transport) != 0:
                # The close waits for the output: not for ever.
                self._start_write_deadline()


def default_max_connections() -> int:
    """The C{maxConnections} of an inbound that sets none.

    Half of the file descriptors this process may open (the soft
    C{RLIMIT_NOFILE}) once L{DESCRIPTOR_RESERVE} are set aside: the other
    half is for the outbound connections the clients' requests need.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, (soft - DESCRIPTOR_RESERVE) // 2)


def _cancel(call: IDelayedCall | None) -> None:
    """Cancel a timer, if there is one and it is pending."""
    if call is not None and call.active():
        call.cancel()


class InboundServerFactory(Factory):
    """Builds an L{InboundProtocol} for every client of one inbound.

    It knows its open connections: beyond the inbound's C{maxConnections}, a
    new connection is closed as soon as it is accepted (and counted in
    C{refused}), and L{close_connections} closes them all, each after the
    request it is answering.
    """

    noisy = False
    _log = Logger()

    def __init__(
        self,
        fork: InboundFork,
        clock: IReactorTime,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.fork = fork
        self._clock = clock
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.connections: set[InboundProtocol] = set()
        """The open client connections."""
        self.refused = 0
        """Connections closed at once because C{maxConnections} were open."""
        self.worker_connections = 0
        """Client connections open in worker processes, for a parent that
        listens through them (L{nfork.workers.merge})."""
        self._default_limit = default_max_connections()
        self._closing = False
        self._closed_waiters: list[Deferred[None]] = []
        self._warned = float("-inf")

    @property
    def open_connections(self) -> int:
        """Client connections open now, in this process and its workers."""
        return len(self.connections) + self.worker_connections

    @property
    def max_connections(self) -> int:
        """Client connections allowed open at once."""
        limit = self.fork.routing.config.max_connections
        return self._default_limit if limit is None else limit

    def buildProtocol(self, addr: Any) -> InboundProtocol | None:
        """A protocol for one client connection; None closes it (too many)."""
        if self._closing:
            return None
        if len(self.connections) >= self.max_connections:
            self.refused += 1
            now = self._clock.seconds()
            if now - self._warned >= 60:
                self._warned = now
                self._log.warn(
                    "inbound {inbound}: {limit} client connections open "
                    "(maxConnections), closing new ones; {refused} so far",
                    inbound=self.fork.routing.config.name,
                    limit=self.max_connections,
                    refused=self.refused,
                )
            return None
        protocol = InboundProtocol(
            self.fork, self._clock, self.header_timeout, self.idle_timeout
        )
        protocol.factory = self
        protocol.server = self
        self.connections.add(protocol)
        return protocol

    def forget(self, protocol: InboundProtocol) -> None:
        """C{protocol}'s connection is closed."""
        self.connections.discard(protocol)
        if not self.connections and self._closed_waiters:
            waiters, self._closed_waiters = self._closed_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def when_closed(self) -> Deferred[None]:
        """Fires once no client connection is open."""
        d: Deferred[None] = Deferred()
        if self.connections:
            self._closed_waiters.append(d)
        else:
            d.callback(None)
        return d

    def close_connections(self) -> None:
        """Close idle connections now and the others after their answer.

        For an inbound that stops listening: nothing keeps using its routing.
        """
        self._closing = True
        for protocol in list(self.connections):
            protocol.close_after_answer()
