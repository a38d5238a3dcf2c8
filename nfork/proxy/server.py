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

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES

from nfork.proxy.fork import InboundFork
from nfork.proxy.transport import write_now

HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a request's line and headers, once started."""

IDLE_TIMEOUT = 60.0
"""Seconds an idle client connection (keep-alive or silent) is kept open."""

MAX_HEAD_SIZE = 16384
"""Bytes allowed for a request line plus headers (twisted.web's limit too)."""

MAX_HEADERS = 500
"""Header lines allowed in one request (twisted.web's limit too)."""

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

    __slots__ = ("body", "close", "code", "headers", "method", "uri", "version")

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


class InboundProtocol(Protocol):
    """One client connection of an inbound; the L{Responder} of its requests."""

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
        self._continue_pending = False
        self._header_deadline: IDelayedCall | None = None
        self._idle_call: IDelayedCall | None = None
        self._last_active = 0.0
        # The request being parsed.
        self._in_head = False
        self._head_bytes = 0
        self._head_raw = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._expect_continue = False

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        """Note who the client is and start the idle timeout."""
        transport = self.transport
        assert transport is not None
        self._client_ip = getattr(transport.getPeer(), "host", "")
        self._secure = ISSLTransport.providedBy(transport)
        self._last_active = self._clock.seconds()
        self._idle_call = self._clock.callLater(self._idle_timeout, self._idle_check)

    def dataReceived(self, data: bytes) -> None:
        """Parse what arrived; complete requests are forked or queued."""
        if self._broken or self.gone:
            return
        self._last_active = self._clock.seconds()
        if self._in_head:
            # Head bytes after its first chunk; guards a line that never ends.
            self._head_raw += len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserCallbackError as e:
            refused = e.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.code, refused.text)
            else:
                self._refuse(400, "nfork: bad request\n")
            return
        except HttpParserUpgrade:
            # The request before the upgrade is answered; nothing after it.
            if self._queue:
                self._queue[-1].close = True
            elif self._busy:
                self._close = True
            else:
                self._close_now()
            self._broken = True
            return
        except HttpParserError:
            self._refuse(400, "nfork: bad request\n")
            return
        if self._in_head:
            if self._head_raw > MAX_HEAD_SIZE:
                self._refuse(431, "nfork: request headers too large\n")
            elif self._header_deadline is None and not self._paused:
                self._header_deadline = self._clock.callLater(
                    self._header_timeout, self._headers_too_slow
                )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Cancel the active copy of an unanswered request and every timer."""
        self.gone = True
        self._queue.clear()
        self._stop_header_deadline()
        if self._idle_call is not None:
            if self._idle_call.active():
                self._idle_call.cancel()
            self._idle_call = None
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    # -- parser callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_raw = 0
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0
        self._expect_continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_HEAD_SIZE:
            raise _Refused(431, "nfork: request line too long\n")

    def on_header(self, name: bytes, value: bytes) -> None:
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
            if value.isdigit() and int(value) > max_body:
                raise _Refused(413, "")
        elif (
            size == 6 and name.lower() == b"expect" and value.lower() == b"100-continue"
        ):
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_header_deadline()
        if self._expect_continue and self._parser.get_http_version() == "1.1":
            if self._busy or self._queue:
                # Answered once the requests before it are.
                self._continue_pending = True
                self._pause()
            else:
                self._write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._fork.max_body:
            raise _Refused(413, "")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._broken:
            return
        parser = self._parser
        version = parser.get_http_version()
        request = _Pending(
            parser.get_method(),
            self._url,
            self._headers,
            b"".join(self._body),
            b"HTTP/1.1" if version == "1.1" else b"HTTP/1.0",
            # HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
            # "Connection: keep-alive" (llhttp applies both rules).
            not parser.should_keep_alive(),
        )
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
        self._close = request.close
        if request.code == 413:
            self._fork.refuse_too_large(self)
            return
        if request.code:
            self.fail(request.code, request.uri.decode())
            return
        fork = self._fork
        fork.fork(
            fork.proxy_request(
                request.method,
                request.uri,
                request.headers,
                request.body,
                self._client_ip,
                self._secure,
            ),
            self,
        )

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
        self._answered()

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
        if self._close:
            self._close_now()
            return
        self._last_active = self._clock.seconds()
        if self._queue:
            self._start(self._queue.popleft())
            return
        if self._continue_pending:
            self._continue_pending = False
            self._write(_CONTINUE)
        if self._paused:
            self._paused = False
            assert self.transport is not None
            cast(IPushProducer, self.transport).resumeProducing()
            if self._in_head and self._header_deadline is None:
                self._header_deadline = self._clock.callLater(
                    self._header_timeout, self._headers_too_slow
                )

    # -- refusals and timeouts -------------------------------------------------

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

    def _stop_header_deadline(self) -> None:
        deadline = self._header_deadline
        if deadline is not None:
            self._header_deadline = None
            if deadline.active():
                deadline.cancel()

    # -- transport -------------------------------------------------------------

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._stop_header_deadline()
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
            assert self.transport is not None
            self.transport.loseConnection()


class InboundServerFactory(Factory):
    """Builds an L{InboundProtocol} for every client of one inbound."""

    noisy = False

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

    def buildProtocol(self, addr: Any) -> InboundProtocol:
        """A protocol for one client connection."""
        protocol = InboundProtocol(
            self.fork, self._clock, self.header_timeout, self.idle_timeout
        )
        protocol.factory = self
        return protocol
