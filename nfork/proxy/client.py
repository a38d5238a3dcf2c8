"""The outbound HTTP/1.1 client: pooled persistent connections, byte-transparent.

This is the proxy's hot path.  L{twisted.web.client.Agent} (and treq on top of
it) measured at a fraction of the throughput of a minimal client protocol, and
treq adds cookie handling and decompression, which would break transparency.
So this module speaks HTTP/1.1 itself: requests are serialized in one
C{b"".join} and one C{write}, responses are parsed by C{httptools}' llhttp
binding, and connections are kept in a per-destination LIFO pool.

Idle connections are kept per backend (scheme, host, port), which the
outbounds of several inbounds may share: each outbound registers how many it
wants kept (L{HTTPClientPool.allow_idle}, its inbound's C{idleConn}) and the
host keeps the largest of the allowances standing, so a small C{idleConn}
never starves another inbound that needs many.

Transparency: the backend receives the request line, a C{Host} header, the
caller's headers in order and case, and C{Content-Length}, nothing else; the
caller gets the status, reason phrase, headers (in order, repeated ones kept)
and body as the backend sent them.  The one exception is chunked transfer
coding: the body is handed over de-chunked (trailers dropped), so the caller
must drop C{Transfer-Encoding} and set C{Content-Length} when forwarding it.
Content codings (gzip, ...) are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from attrs import define, field, frozen
from attrs.validators import in_
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from OpenSSL.SSL import Error as TLSError
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, NotConnectingError, UserError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IOpenSSLClientConnectionCreator,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from nfork.proxy.messages import Headers, ProxyResponse
from nfork.proxy.transport import write_now

__all__ = [
    "HTTPClientPool",
    "IdleAllowance",
    "IncompleteResponseError",
    "PoolClosedError",
    "ResponseError",
    "TLSContextFactory",
    "Target",
]

TLSContextFactory = Callable[[str], IOpenSSLClientConnectionCreator]
"""Builds the TLS settings for connections to one host name or IP address."""

_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
"""Methods that get C{Content-Length: 0} even with an empty body."""


SURPLUS_IDLE_TIMEOUT = 10.0
"""Seconds after which idle connections above a host's largest idle
allowance that were not needed are closed."""


class ResponseError(Exception):
    """The backend's response was malformed or not HTTP/1.x as we support it."""


class PoolClosedError(UserError):
    """The pool was closed before the request could get a connection."""

    def __init__(self) -> None:
        super().__init__(string="HTTP client pool closed")


class IncompleteResponseError(ResponseError):
    """The connection was lost before the complete response had arrived."""

    def __init__(self, reason: Failure) -> None:
        super().__init__(
            f"connection lost before the complete response: {reason.value}"
        )
        self.reason = reason
        """Why the connection was lost (C{ConnectionDone}, C{ConnectionLost}...)."""


@frozen
class Target:
    """Where to send requests: a backend address plus how to address it."""

    scheme: str = field(validator=in_(("http", "https")))
    """C{"http"} or C{"https"}."""
    host: str
    """IP address (IPv6 without brackets) or host name to connect to."""
    port: int
    host_header: bytes
    """Value of the C{Host} header, e.g. C{b"localhost:8080"}."""
    path_prefix: bytes = b""
    """Prepended to every request URI: C{b"/api" + b"/x?y" -> b"/api/x?y"}."""
    pool_key: tuple[str, str, int] = field(init=False, eq=False, repr=False)
    """What connections are pooled by: targets that differ only in C{Host}
    header or path prefix share connections."""

    @pool_key.default
    def _pool_key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


class _Request:
    """One request and the response being parsed for it.

    Plain class with slots: one of these is built per request, so it stays
    as cheap as possible.
    """

    __slots__ = (
        "body",
        "cancelled",
        "code",
        "connector",
        "data",
        "deferred",
        "head",
        "headers",
        "host",
        "keep_body",
        "phrase",
        "protocol",
        "received",
        "reused",
    )

    def __init__(self, host: _Host, data: bytes, head: bool, keep_body: bool) -> None:
        self.host = host
        self.data = data
        """The serialized request, kept for a retry."""
        self.head = head
        self.keep_body = keep_body
        self.deferred: Deferred[ProxyResponse] = Deferred(self._cancel)
        self.protocol: _HTTPClientProtocol | None = None
        """The connection the request was written to, once it was."""
        self.connector: IConnector | None = None
        """The connection attempt made for this request, while it lasts."""
        self.reused = False
        """Sent on a connection taken from the idle list."""
        self.received = False
        """At least one response byte arrived."""
        self.cancelled = False
        self.code = 0
        """Final status code; 0 until the final response's headers are parsed."""
        self.phrase = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def _cancel(self, deferred: Deferred[ProxyResponse]) -> None:
        """Abandon the request: its connection or connection attempt goes."""
        self.cancelled = True
        protocol = self.protocol
        if protocol is not None:
            protocol.abandon(self)
        else:
            self.host.stop_connecting(self)

    def deliver(self) -> None:
        """Fire the Deferred with the response parsed so far."""
        self.deferred.callback(
            ProxyResponse(
                self.code, self.phrase, tuple(self.headers), b"".join(self.body)
            )
        )

    def is_close_delimited(self) -> bool:
        """Whether the response body ends with the connection (RFC 9112 6.3 #8)."""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True


class _TrailingData(Exception):
    """Bytes followed a complete response before any request asked for them."""


class _HTTPClientProtocol(Protocol):
    """One persistent HTTP/1.1 connection, carrying one request at a time."""

    _log = Logger()

    def __init__(self, host: _Host, request: _Request) -> None:
        self._host = host
        self._request: _Request | None = request
        """The request in flight, if any."""
        self._parser = HttpResponseParser(self)
        self._finished = False
        """The parser has seen the end of the current response."""
        self._keep_alive = False
        self._idle = False
        self._dead = False
        """Closing or closed: never to be reused."""

    # Connection events

    def connectionMade(self) -> None:
        """Set TCP_NODELAY (requests are written whole) and send the request."""
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            nodelay(True)
        host = self._host
        host.pool.connections_opened += 1
        host.connections.add(self)
        request = self._request
        assert request is not None
        host.connecting.discard(request)
        request.connector = None
        if request.cancelled or host.pool.closed:
            # The attempt was abandoned but connected anyway.
            self._request = None
            self._abort()
            if not request.deferred.called:
                request.deferred.errback(PoolClosedError())
            return
        request.protocol = self
        write_now(self.transport, request.data)

    def send(self, request: _Request) -> None:
        """Send a request on this idle connection."""
        self._idle = False
        self._request = request
        request.protocol = self
        request.reused = True
        write_now(self.transport, request.data)

    def dataReceived(self, data: bytes) -> None:
        """Parse response bytes; hand the response over once complete."""
        request = self._request
        if request is None:
            self._log.debug(
                "closing connection to {host}:{port}: bytes received with no "
                "request pending",
                host=self._host.host,
                port=self._host.port,
            )
            self._abort()
            return
        request.received = True
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as e:
            if not self._finished:
                self._request = None
                self._abort()
                cause = e.__context__
                if not isinstance(cause, ResponseError):
                    cause = ResponseError(
                        f"invalid HTTP response from "
                        f"{self._host.host}:{self._host.port}: {e!r}"
                    )
                request.deferred.errback(cause)
                return
            # A complete response followed by junk: deliver it, drop the
            # connection.
            self._keep_alive = False
        if self._finished:
            self._finished = False
            self._request = None
            request.protocol = None
            self._release(request)
            # Last: the callbacks may already reuse this connection.
            request.deliver()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget the connection; finish, retry or fail its request."""
        self._dead = True
        host = self._host
        host.connections.discard(self)
        if self._idle:
            self._idle = False
            host.idle.remove(self)
        request = self._request
        self._request = None
        if request is not None and not request.cancelled:
            if (
                request.code
                and not request.head
                and isinstance(reason.value, ConnectionDone)
                and request.is_close_delimited()
            ):
                request.protocol = None
                request.deliver()
            elif request.reused and not request.received:
                host.pool._retry(request, reason)
            elif isinstance(reason.value, TLSError):
                request.deferred.errback(reason)
            else:
                request.deferred.errback(IncompleteResponseError(reason))
        host.pool._check_closed()

    # Pool management

    def _release(self, request: _Request) -> None:
        """After a complete response: back to the idle list, or close."""
        host = self._host
        if self._keep_alive and not self._dead and not host.pool.closed:
            idle = host.idle
            max_idle = host.max_idle
            # Under load keep as many idle as are busy: they will be needed
            # again at once; the surplus over max_idle is trimmed when unused.
            busy = len(host.connections) - len(idle) - 1
            if len(idle) < max_idle or len(idle) < busy:
                if len(idle) >= max_idle:
                    host.pool._watch_surplus()
                if request.head:
                    # llhttp does not know the response to HEAD has no body
                    # and still waits for it: start over with a fresh parser.
                    self._parser = HttpResponseParser(self)
                self._idle = True
                idle.append(self)
                return
        self._dead = True
        self.transport.loseConnection()  # type: ignore[union-attr]

    def retire(self) -> None:
        """Close this connection, already taken off the idle list."""
        self._idle = False
        self.close()

    def abandon(self, request: _Request) -> None:
        """The request was cancelled: drop the connection with it."""
        if self._request is request:
            self._request = None
            self._abort()

    def close(self) -> None:
        """Close an idle connection gracefully, abort a busy one."""
        if self._request is None:
            if not self._dead:
                self._dead = True
                self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self._abort()

    def _abort(self) -> None:
        """Close the connection now; it will never be reused."""
        if self._idle:
            self._idle = False
            self._host.idle.remove(self)
        if not self._dead:
            self._dead = True
            self.transport.abortConnection()  # type: ignore[union-attr]

    # httptools callbacks; they only run inside feed_data, with a request.

    def on_message_begin(self) -> None:
        """A response starts; one after a complete response is unexpected."""
        if self._finished:
            raise _TrailingData()

    def on_status(self, data: bytes) -> None:
        """Collect the reason phrase, which may come in pieces."""
        self._request.phrase += data  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect a header; httptools joins names and values split across reads."""
        request = self._request
        if not request.code:  # type: ignore[union-attr]
            # Chunked trailers (code already set) are dropped.
            request.headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        """Skip interim responses; finish responses to HEAD right here."""
        request = self._request
        assert request is not None
        code = self._parser.get_status_code()
        if code < 200:
            if code == 101:
                raise ResponseError("101 Switching Protocols is not supported")
            # 100 Continue, 103 Early Hints...: wait for the final response.
            request.phrase = b""
            request.headers.clear()
            return
        request.code = code
        if request.head:
            self._finished = True
            self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        """Collect (or drop) a piece of the decoded body."""
        if self._finished:
            raise _TrailingData()
        request = self._request
        if request.keep_body:  # type: ignore[union-attr]
            request.body.append(data)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        """The final response is complete (interim ones are skipped)."""
        if self._finished or not self._request.code:  # type: ignore[union-attr]
            return
        self._finished = True
        self._keep_alive = self._parser.should_keep_alive()


class _ConnectionFactory(ClientFactory):
    """Builds the connection for one connection attempt made for a request."""

    noisy = False

    def __init__(self, host: _Host, request: _Request) -> None:
        self._host = host
        self._request = request

    def buildProtocol(self, addr: IAddress | None) -> _HTTPClientProtocol:
        """The connection that will send the request."""
        return _HTTPClientProtocol(self._host, self._request)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """Fail the request with the reason (refused, DNS lookup, timeout...)."""
        request = self._request
        self._host.connecting.discard(request)
        request.connector = None
        if not request.cancelled and not request.deferred.called:
            request.deferred.errback(reason)
        self._host.pool._check_closed()


class _Host:
    """The connections to one (scheme, host, port)."""

    __slots__ = (
        "allowances",
        "connecting",
        "connections",
        "host",
        "idle",
        "idle_low_water",
        "max_idle",
        "pool",
        "port",
        "tls",
    )

    def __init__(
        self,
        pool: HTTPClientPool,
        host: str,
        port: int,
        tls: IOpenSSLClientConnectionCreator | None,
    ) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.tls = tls
        self.idle: list[_HTTPClientProtocol] = []
        """Connections waiting for a request, most recently used last."""
        self.connections: set[_HTTPClientProtocol] = set()
        """Every open connection, idle or busy."""
        self.connecting: set[_Request] = set()
        """Requests waiting for a new connection."""
        self.allowances: list[int] = []
        """The counts of the idle allowances standing for this host."""
        self.max_idle = 0
        """Idle connections kept for good: the largest allowance, or none."""
        self.idle_low_water = 0
        """The fewest idle connections seen since the last surplus check."""

    def take_idle(self) -> _HTTPClientProtocol:
        """The most recently used idle connection (there must be one)."""
        connection = self.idle.pop()
        if len(self.idle) < self.idle_low_water:
            self.idle_low_water = len(self.idle)
        return connection

    def trim_surplus(self) -> bool:
        """Close idle connections above C{max_idle} unused since the last check.

        Returns whether a surplus remains to be watched.
        """
        unused = max(min(len(self.idle) - self.max_idle, self.idle_low_water), 0)
        retired, self.idle[:unused] = self.idle[:unused], []
        for connection in retired:
            connection.retire()
        self.idle_low_water = len(self.idle)
        return len(self.idle) > self.max_idle

    def allow(self, count: int) -> None:
        """Register an allowance of C{count} idle connections."""
        self.allowances.append(count)
        self.max_idle = max(self.max_idle, count)

    def withdraw(self, count: int) -> None:
        """Withdraw an allowance; a surplus it leaves is trimmed when unused."""
        self.allowances.remove(count)
        self.max_idle = max(self.allowances, default=0)
        if len(self.idle) > self.max_idle:
            self.pool._watch_surplus()

    def stop_connecting(self, request: _Request) -> None:
        """Abandon the connection attempt made for C{request}, if any."""
        self.connecting.discard(request)
        connector = request.connector
        request.connector = None
        if connector is not None:
            with suppress(NotConnectingError):
                connector.stopConnecting()
        self.pool._check_closed()


@define(eq=False)
class IdleAllowance:
    """Idle connections to one host that a user of the pool asks to keep.

    Standing from L{HTTPClientPool.allow_idle} until L{withdraw}.
    """

    _host: _Host
    count: int
    """How many idle connections to keep."""
    withdrawn: bool = False

    def withdraw(self) -> None:
        """Take the allowance back (again: nothing); the host may keep fewer."""
        if not self.withdrawn:
            self.withdrawn = True
            self._host.withdraw(self.count)


class HTTPClientPool:
    """One shared pool of persistent HTTP/1.1 connections, keyed by Target.

    Connections are pooled by (scheme, host, port).  A request takes the most
    recently used idle connection, or opens a new one: the number of busy
    connections is not bounded here, callers bound their concurrency.  How
    many connections stay open when idle is up to the L{allow_idle}
    allowances standing for the host.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        *,
        tls_context_factory: TLSContextFactory | None = None,
        connect_timeout: float = 30,
    ) -> None:
        """
        @param reactor: Provides L{IReactorTCP} and L{IReactorTime}.
        @param tls_context_factory: Builds the TLS settings for C{https}
            targets from the target's host; by default
            L{optionsForClientTLS}, which verifies the certificate against the
            platform's trust store.
        @param connect_timeout: Seconds to wait for a TCP connection.
        """
        self._reactor = reactor
        self._clock = IReactorTime(reactor)
        self._tls_context_factory: TLSContextFactory = (
            tls_context_factory or optionsForClientTLS
        )
        self._connect_timeout = connect_timeout
        self._hosts: dict[tuple[str, str, int], _Host] = {}
        self._close_waiters: list[Deferred[None]] = []
        self.closed = False
        """C{close} was called: no new request or connection."""
        self.connections_opened = 0
        """How many connections were ever established."""
        self._surplus_check: LoopingCall | None = None

    def request(
        self,
        target: Target,
        method: bytes,
        uri: bytes,
        headers: Headers,
        body: bytes,
        *,
        keep_body: bool = True,
    ) -> Deferred[ProxyResponse]:
        """Send one request to C{target} and fire with the complete response.

        C{headers} are sent in order, exactly as given, after C{Host}; they
        must not contain C{Host}, C{Content-Length} or hop-by-hop headers.
        With C{keep_body} false the response body is read and dropped.  After
        the response, the connection goes back to the idle list unless that
        already holds as many connections to the same host as the largest
        L{allow_idle} allowance for it (and fewer are busy).

        A request sent on a reused connection that is lost before any response
        byte arrives is retried once on a new connection, whatever its method:
        this is the backend closing an idle keep-alive connection (or
        restarting) just as the request was sent, so the request never reached
        the application.

        Fails with L{ResponseError} (L{IncompleteResponseError} when the
        connection was lost) or with the connection error
        (C{ConnectionRefusedError}, C{ConnectError}, C{DNSLookupError}, an
        C{OpenSSL.SSL.Error}...).  Cancelling aborts the connection.
        """
        if self.closed:
            return fail(PoolClosedError())
        host = self._hosts.get(target.pool_key)
        if host is None:
            host = self._add_host(target)
        parts = [method, b" ", target.path_prefix, uri, b" HTTP/1.1\r\nHost: "]
        parts.append(target.host_header)
        extend = parts.extend
        for name, value in headers:
            extend((b"\r\n", name, b": ", value))
        if body or method in _BODY_METHODS:
            parts.append(b"\r\nContent-Length: %d\r\n\r\n" % len(body))
            parts.append(body)
        else:
            parts.append(b"\r\n\r\n")
        request = _Request(host, b"".join(parts), method == b"HEAD", keep_body)
        if host.idle:
            host.take_idle().send(request)
        else:
            self._connect(host, request)
        return request.deferred

    def allow_idle(self, target: Target, count: int) -> IdleAllowance:
        """Keep up to C{count} idle connections to C{target}'s host.

        Until the allowance is withdrawn, connections to C{target}'s (scheme,
        host, port) go back to the idle list after their response while it
        holds fewer than the largest allowance standing for that host.  With
        none, a connection stays open only while as many others are busy;
        idle connections over the largest allowance (one was withdrawn, or
        under load) are closed once unused for L{SURPLUS_IDLE_TIMEOUT}.
        """
        host = self._hosts.get(target.pool_key)
        if host is None:
            host = self._add_host(target)
        host.allow(count)
        return IdleAllowance(host, count)

    def idle_limit(self, target: Target) -> int:
        """Idle connections kept for C{target}'s host: its largest allowance."""
        host = self._hosts.get(target.pool_key)
        return 0 if host is None else host.max_idle

    def idle_count(self, target: Target) -> int:
        """Idle connections to C{target}'s (scheme, host, port)."""
        host = self._hosts.get(target.pool_key)
        return 0 if host is None else len(host.idle)

    def busy_count(self, target: Target) -> int:
        """Connections (or connection attempts) to C{target} carrying a request."""
        host = self._hosts.get(target.pool_key)
        if host is None:
            return 0
        return len(host.connections) - len(host.idle) + len(host.connecting)

    def close(self) -> Deferred[None]:
        """Close every connection; fires once all of them are closed.

        Idle connections are closed gracefully, busy ones aborted: their
        requests fail with L{IncompleteResponseError}.  Requests still waiting
        for a connection fail with L{PoolClosedError}.
        """
        self.closed = True
        if self._surplus_check is not None:
            self._surplus_check.stop()
            self._surplus_check = None
        for host in self._hosts.values():
            for request in list(host.connecting):
                host.connecting.discard(request)
                if not request.deferred.called:
                    request.deferred.errback(PoolClosedError())
                host.stop_connecting(request)
            for protocol in list(host.connections):
                protocol.close()
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        self._check_closed()
        return waiter

    def _watch_surplus(self) -> None:
        """Check every L{SURPLUS_IDLE_TIMEOUT} for idle connections to close."""
        if self._surplus_check is None:
            check = self._surplus_check = LoopingCall(self._trim_surplus)
            check.clock = self._clock
            check.start(SURPLUS_IDLE_TIMEOUT, now=False)

    def _trim_surplus(self) -> None:
        remaining = [host.trim_surplus() for host in self._hosts.values()]
        if not any(remaining) and self._surplus_check is not None:
            self._surplus_check.stop()
            self._surplus_check = None

    def _retry(self, request: _Request, reason: Failure) -> None:
        """Send C{request} again on a new connection (see L{request})."""
        if self.closed:
            request.deferred.errback(IncompleteResponseError(reason))
            return
        request.reused = False
        request.protocol = None
        self._connect(request.host, request)

    def _check_closed(self) -> None:
        """Fire the C{close} Deferreds once nothing is left open."""
        if not self._close_waiters:
            return
        for host in self._hosts.values():
            if host.connections or host.connecting:
                return
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _add_host(self, target: Target) -> _Host:
        """Set up the pool for a new (scheme, host, port)."""
        tls = None
        if target.scheme == "https":
            tls = self._tls_context_factory(target.host)
        host = self._hosts[target.pool_key] = _Host(self, target.host, target.port, tls)
        return host

    def _connect(self, host: _Host, request: _Request) -> None:
        """Open a new connection that will carry C{request}."""
        factory: ClientFactory[Any] = _ConnectionFactory(host, request)
        if host.tls is not None:
            factory = TLSMemoryBIOFactory(host.tls, True, factory, self._clock)
        host.connecting.add(request)
        connector = self._reactor.connectTCP(
            host.host, host.port, factory, timeout=self._connect_timeout
        )
        if request in host.connecting:
            request.connector = connector
