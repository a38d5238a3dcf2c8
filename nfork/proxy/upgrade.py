"""Upgrades: WebSocket (and other) sessions relayed to the active outbound.

An upgrade request (C{Connection: Upgrade}, C{Upgrade: websocket}) goes to
the active outbound over a dedicated connection, not a pooled one.  When it
answers C{101 Switching Protocols}, the client's connection and that one are
joined: bytes flow both ways as they arrive, each side the producer of the
other (a side that does not read pauses the other), until either side closes
or nothing flows for the inbound's idle timeout.  Any other answer is
relayed as a normal answer and both connections are closed.

Shadows do not get upgrade requests (each counts one C{skipped}, reason
C{upgrade}), except WebSocket handshakes for an outbound with
C{"websocket": "mirror"}: it gets its own session, the client's handshake
and then every byte the client sends, as it sends it.  What the shadow
sends back is read and dropped.  A shadow that takes its bytes slower than
the client sends them is cut off once L{MIRROR_BUFFER} bytes wait for it,
and never slows the client's session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from nfork.proxy.client import Target, client_tls
from nfork.proxy.headers import client_response_headers, header_value
from nfork.proxy.messages import Headers, ProxyRequest
from nfork.proxy.transport import unsent_bytes
from nfork.proxy.websocket import FrameCounter

if TYPE_CHECKING:
    from nfork.proxy.fork import OutboundRoute, Routing

__all__ = [
    "MAX_ANSWER_BODY",
    "MAX_ANSWER_HEAD",
    "MIRROR_BUFFER",
    "UpgradeResponder",
    "is_h2c",
    "start_upgrade",
]

MAX_ANSWER_HEAD = 65536
"""Bytes allowed for a backend's answer head to an upgrade request."""

MAX_ANSWER_BODY = 1024 * 1024
"""Bytes allowed for the body of an answer other than 101 to an upgrade
request; it is relayed whole (such answers are short refusals)."""

MIRROR_BUFFER = 1024 * 1024
"""Bytes of the client's that may wait for a mirrored shadow (unsent to its
socket, or held until its handshake is answered) before it is cut off."""

_log = Logger()


class UpgradeResponder(Protocol):
    """The client connection of an upgrade request (the inbound's server)."""

    @property
    def gone(self) -> bool:
        """Whether the client went away or was already answered."""

    def respond(
        self,
        code: int,
        phrase: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        length: bytes | None,
    ) -> None:
        """Answer as a normal request (the connection is then closed)."""

    def fail(self, code: int, text: str) -> None:
        """Answer with a short plain-text error."""

    def drop(self) -> None:
        """Close the connection without an answer."""

    def on_gone(self, cancel: Callable[[], object]) -> None:
        """Call C{cancel} if the client goes away before it is answered."""

    def take_over(self, head: bytes, tunnel: Tunnel) -> ITransport:
        """Write the 101 C{head}; from then on the connection is C{tunnel}'s.

        Its bytes go to L{Tunnel.client_data}, its end to L{Tunnel.client_lost};
        the returned transport is the client's.
        """


def is_h2c(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether every protocol the request's C{Upgrade} offers is HTTP/2.

    Such an upgrade is ignored (RFC 9113 section 3.1 allows it): the request
    is answered as plain HTTP/1.1.
    """
    tokens = _upgrade_tokens(headers)
    return bool(tokens) and all(t in (b"h2c", b"http/2.0", b"h2") for t in tokens)


def _upgrade_tokens(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    tokens: list[bytes] = []
    for name, value in headers:
        if name.lower() == b"upgrade":
            tokens.extend(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def _is_websocket(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return b"websocket" in _upgrade_tokens(headers)


def _extensions(headers: Headers) -> bytes:
    """The negotiated C{Sec-WebSocket-Extensions}, spaces and case removed."""
    values = [v for n, v in headers if n.lower() == b"sec-websocket-extensions"]
    return b",".join(values).replace(b" ", b"").replace(b"\t", b"").lower()


def start_upgrade(
    reactor: IReactorTime,
    routing: Routing,
    request: ProxyRequest,
    early: bytes,
    responder: UpgradeResponder,
    idle_timeout: float,
    wants_copy: Callable[[OutboundRoute, ProxyRequest], bool],
) -> None:
    """Send the upgrade C{request} to the active outbound; mirror or skip shadows.

    C{early} is what the client sent after the request before its answer.
    C{wants_copy} says whether a mirroring shadow takes this session (its
    C{methods} and C{sample}).
    """
    websocket = _is_websocket(request.headers)
    mirrors: list[_Mirror] = []
    for shadow in routing.shadows:
        target = _target_of(shadow)
        if (
            websocket
            and target is not None
            and shadow.config.websocket == "mirror"
            and IReactorTCP.providedBy(reactor)
        ):
            if wants_copy(shadow, request):
                mirrors.append(
                    _Mirror(reactor, shadow, target, request, routing.config.timeout)
                )
        else:
            shadow.stats.record_skipped("upgrade")
    _Exchange(reactor, routing, request, early, responder, idle_timeout, mirrors)


def _target_of(route: OutboundRoute) -> Target | None:
    """The backend of an HTTP outbound; None for outbounds of other kinds."""
    target = getattr(route.outbound, "target", None)
    return target if isinstance(target, Target) else None


def _request_head(request: ProxyRequest, target: Target) -> bytes:
    parts = [
        request.method,
        b" ",
        target.path_prefix + request.uri,
        b" HTTP/1.1\r\nHost: ",
        target.host_header,
        b"\r\n",
    ]
    for name, value in request.headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _Peer(Protocol):
    """What a L{_Handshake} tells the session it belongs to."""

    def connected(self, connection: _Handshake) -> None:
        """The TCP (and TLS) connection is up."""

    def switched(self, answer: _Answer, rest: bytes) -> None:
        """The backend answered 101; C{rest} came after its head."""

    def answered(self, answer: _Answer) -> None:
        """The backend answered something else, whole."""

    def failed(self, reason: str) -> None:
        """No answer: the connection failed, or the answer was malformed."""

    def peer_data(self, data: bytes) -> None:
        """Bytes from the backend after the switch."""

    def peer_lost(self) -> None:
        """The backend's connection ended after the switch."""


class _Answer:
    """The backend's answer to the upgrade request."""

    __slots__ = ("body", "code", "headers", "phrase")

    def __init__(self) -> None:
        self.code = 0
        self.phrase = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()


class _Handshake(TwistedProtocol):
    """A dedicated backend connection: the upgrade request, its answer, then bytes."""

    def __init__(self, peer: _Peer, head: bytes) -> None:
        self._peer = peer
        self._head = head
        self._parser = HttpResponseParser(self)
        self._answer = _Answer()
        self._head_size = 0
        self._in_head = True
        self._close_delimited = False
        self.switched = False
        self.done = False
        """The answer was reported (or the exchange failed)."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._head)
        self._peer.connected(self)

    def dataReceived(self, data: bytes) -> None:
        if self.switched:
            self._peer.peer_data(data)
            return
        if self.done:
            return
        if self._in_head:
            self._head_size += len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as e:
            self.switched = self.done = True
            self._peer.switched(self._answer, data[e.args[0] :])
            return
        except HttpParserError as e:
            self._fail(f"malformed answer: {e}")
            return
        if self.done:
            return
        if self._in_head and self._head_size > MAX_ANSWER_HEAD:
            self._fail("answer head too large")
        elif len(self._answer.body) > MAX_ANSWER_BODY:
            self._fail("answer body too large")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.switched:
            self._peer.peer_lost()
        elif not self.done:
            if self._close_delimited:
                self.done = True
                self._peer.answered(self._answer)
            else:
                self.done = True
                self._peer.failed(f"connection lost: {reason.getErrorMessage()}")

    def _fail(self, reason: str) -> None:
        self.done = True
        self._peer.failed(reason)
        self.abort()

    def abort(self) -> None:
        """Close the connection at once."""
        if self.transport is not None:
            cast(Any, self.transport).abortConnection()

    # -- parser callbacks --------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._answer.phrase += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._answer.headers.append((name, value))

    def on_headers_complete(self) -> None:
        code = self._parser.get_status_code()
        answer = self._answer
        answer.code = code
        if 100 <= code < 200 and code != 101:
            return
        self._in_head = False
        headers = tuple(answer.headers)
        self._close_delimited = (
            code != 101
            and header_value(headers, b"content-length") is None
            and header_value(headers, b"transfer-encoding") is None
            and code not in (204, 304)
        )

    def on_body(self, body: bytes) -> None:
        self._answer.body += body

    def on_message_complete(self) -> None:
        answer = self._answer
        if 100 <= answer.code < 200 and answer.code != 101:
            # An interim answer: the real one follows.
            self._answer = _Answer()
            self._head_size = 0
            return
        if answer.code == 101:
            # httptools reports the switch as HttpParserUpgrade, right after.
            return
        self.done = True
        self._peer.answered(answer)
        self.abort()


class _Connector(ClientFactory):
    """Connects one L{_Handshake}; a failed connection fails its peer."""

    noisy = False

    def __init__(self, handshake: _Handshake, peer: _Peer) -> None:
        self._handshake = handshake
        self._peer = peer

    def buildProtocol(self, addr: Any) -> _Handshake:
        return self._handshake

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self._handshake.done:
            self._handshake.done = True
            self._peer.failed(f"connection failed: {reason.getErrorMessage()}")


def _connect(
    reactor: IReactorTime, target: Target, handshake: _Handshake, peer: _Peer
) -> Any:
    factory: Any = _Connector(handshake, peer)
    if target.scheme == "https":
        factory = TLSMemoryBIOFactory(client_tls(target), True, factory, reactor)
    return cast(IReactorTCP, reactor).connectTCP(
        target.host, target.port, factory, timeout=30
    )


def _switch_head(answer: _Answer) -> bytes:
    """The 101 as the client receives it: C{Upgrade} and C{Connection} kept."""
    parts = [b"HTTP/1.1 101 ", bytes(answer.phrase) or b"Switching Protocols", b"\r\n"]
    for name, value in answer.headers:
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding", b"keep-alive") or (
            lower.startswith(b"proxy-")
        ):
            continue
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class Tunnel:
    """The relay between a client and the active outbound after a 101."""

    def __init__(
        self,
        clock: IReactorTime,
        backend: _Handshake,
        idle_timeout: float,
        mirrors: list[_Mirror],
    ) -> None:
        self._clock = clock
        self._backend = backend
        self._client: ITransport | None = None
        self._idle_timeout = idle_timeout
        self._last_active = clock.seconds()
        self._idle_call: IDelayedCall | None = None
        self._mirrors = mirrors
        self._counter = FrameCounter() if mirrors else None
        self.closed = False

    def join(self, client: ITransport, backend_first: bytes, early: bytes) -> None:
        """Start relaying: each transport is the producer of the other's input."""
        self._client = client
        backend = self._backend.transport
        assert backend is not None
        cast(IConsumer, client).registerProducer(cast(IPushProducer, backend), True)
        cast(IConsumer, backend).registerProducer(cast(IPushProducer, client), True)
        cast(IPushProducer, client).resumeProducing()
        self._idle_call = self._clock.callLater(self._idle_timeout, self._idle_check)
        if backend_first:
            client.write(backend_first)
        if early:
            self.client_data(early)

    def client_data(self, data: bytes) -> None:
        """Bytes from the client: to the backend, and to the mirrors."""
        if self.closed:
            return
        self._last_active = self._clock.seconds()
        backend = self._backend.transport
        assert backend is not None
        backend.write(data)
        counter = self._counter
        if counter is not None:
            messages = counter.feed(data)
            for mirror in self._mirrors:
                mirror.send(data, messages)

    def backend_data(self, data: bytes) -> None:
        """Bytes from the active outbound: to the client."""
        if self.closed or self._client is None:
            return
        self._last_active = self._clock.seconds()
        self._client.write(data)

    def client_lost(self) -> None:
        """The client closed: close the backend (after what it was sent)."""
        self.close()

    def close(self) -> None:
        """End the session: both connections are closed once flushed."""
        if self.closed:
            return
        self.closed = True
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        for transport in (self._client, self._backend.transport):
            if transport is not None:
                # A registered producer would hold the close until it resumed.
                cast(IConsumer, transport).unregisterProducer()
                transport.loseConnection()
        for mirror in self._mirrors:
            mirror.close()

    def _idle_check(self) -> None:
        self._idle_call = None
        if self.closed:
            return
        idle = self._clock.seconds() - self._last_active
        if idle >= self._idle_timeout:
            self.close()
            return
        self._idle_call = self._clock.callLater(
            self._idle_timeout - idle, self._idle_check
        )


class _Exchange:
    """The active outbound's side of an upgrade: its answer, then the tunnel."""

    def __init__(
        self,
        reactor: IReactorTime,
        routing: Routing,
        request: ProxyRequest,
        early: bytes,
        responder: UpgradeResponder,
        idle_timeout: float,
        mirrors: list[_Mirror],
    ) -> None:
        self._reactor = reactor
        self._routing = routing
        self._route = routing.active
        self._responder = responder
        self._early = early
        self._idle_timeout = idle_timeout
        self._mirrors = mirrors
        self._start = reactor.seconds()
        self._tunnel: Tunnel | None = None
        self._over = False
        target = _target_of(self._route)
        if target is None or not IReactorTCP.providedBy(reactor):
            self._over = True
            for mirror in mirrors:
                mirror.close()
            responder.fail(
                routing.config.error_code,
                f'nfork: active outbound "{self._route.name}" takes no upgrades\n',
            )
            return
        self._timeout = self._route.config.timeout or routing.config.timeout
        self._deadline: IDelayedCall | None = reactor.callLater(
            self._timeout, self._timed_out
        )
        self._handshake = _Handshake(self, _request_head(request, target))
        self._connector = _connect(reactor, target, self._handshake, self)
        responder.on_gone(self._cancel)

    def _finish(self) -> bool:
        """End the wait for the answer; False if it had already ended."""
        if self._over:
            return False
        self._over = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        return True

    def _end_mirrors(self) -> None:
        for mirror in self._mirrors:
            mirror.close()

    def _cancel(self) -> None:
        """The client went away before the answer."""
        if self._finish():
            self._end_mirrors()
            self._handshake.done = True
            self._handshake.abort()
            self._connector.disconnect()

    def _timed_out(self) -> None:
        self._deadline = None
        if not self._finish():
            return
        self._end_mirrors()
        self._handshake.done = True
        self._handshake.abort()
        self._connector.disconnect()
        route = self._route
        route.timed_out()
        route.stats.record_timeout(self._reactor.seconds() - self._start)
        self._responder.fail(
            self._routing.config.timeout_code,
            f'nfork: outbound "{route.name}" timed out after {self._timeout:g}s\n',
        )

    # -- _Peer -----------------------------------------------------------------

    def connected(self, connection: _Handshake) -> None:
        if self._over:
            connection.abort()

    def switched(self, answer: _Answer, rest: bytes) -> None:
        if not self._finish():
            self._handshake.abort()
            return
        route = self._route
        route.answered()
        route.stats.record_response(101, self._reactor.seconds() - self._start)
        responder = self._responder
        if responder.gone:
            self._handshake.abort()
            self._end_mirrors()
            return
        tunnel = self._tunnel = Tunnel(
            self._reactor, self._handshake, self._idle_timeout, self._mirrors
        )
        extensions = _extensions(tuple(answer.headers))
        for mirror in self._mirrors:
            mirror.active_switched(extensions)
        client = responder.take_over(_switch_head(answer), tunnel)
        tunnel.join(client, rest, self._early)

    def answered(self, answer: _Answer) -> None:
        if not self._finish():
            return
        self._end_mirrors()
        route = self._route
        route.answered()
        route.stats.record_response(answer.code, self._reactor.seconds() - self._start)
        if self._responder.gone:
            return
        headers = client_response_headers(tuple(answer.headers))
        body = bytes(answer.body)
        length = None if answer.code in (204, 304) else b"%d" % len(body)
        self._responder.respond(
            answer.code, bytes(answer.phrase), headers, body, length
        )

    def failed(self, reason: str) -> None:
        if not self._finish():
            return
        self._end_mirrors()
        route = self._route
        route.stats.record_error(self._reactor.seconds() - self._start)
        config = self._routing.config
        _log.warn(
            "inbound {inbound}: active outbound {outbound} ({address}) failed "
            "an upgrade, answered {code}: {reason}",
            inbound=config.name,
            outbound=route.name,
            address=route.config.address.raw,
            code=config.error_code,
            reason=reason,
        )
        if not self._responder.gone:
            self._responder.fail(
                config.error_code, f'nfork: active outbound "{route.name}" failed\n'
            )

    def peer_data(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.backend_data(data)

    def peer_lost(self) -> None:
        if self._tunnel is not None:
            self._tunnel.close()


class _Mirror:
    """A shadow's own WebSocket session, fed the client's bytes.

    Its stats count the handshake's answer (a C{101} like any status), an
    error or a timeout of the handshake, C{skipped} with reason
    C{websocket_extensions} when it negotiated other extensions than the
    active outbound (its frames could not be read the same way), and
    C{dropped}: once when it is cut off for falling behind, and once more
    for each client message that it missed after that.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        route: OutboundRoute,
        target: Target,
        request: ProxyRequest,
        inbound_timeout: float,
    ) -> None:
        self._reactor = reactor
        self._route = route
        self._start = reactor.seconds()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._pending_messages = 0
        self._state = "handshake"
        """handshake -> (open | cut | closed); cut and closed are final."""
        self._own_extensions: bytes | None = None
        self._active_extensions: bytes | None = None
        self.sent_messages = 0
        """Client messages written to the shadow's connection."""
        self._deadline: IDelayedCall | None = reactor.callLater(
            route.config.timeout or inbound_timeout, self._timed_out
        )
        self._handshake = _Handshake(self, _request_head(request, target))
        self._connector = _connect(reactor, target, self._handshake, self)

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self._state != "handshake" or self._own_extensions is not None:
            return
        self._state = "closed"
        self._route.timed_out()
        self._route.stats.record_timeout(self._reactor.seconds() - self._start)
        self._abort()

    def _abort(self) -> None:
        self._handshake.done = True
        self._handshake.abort()
        self._connector.disconnect()
        self._pending = []

    def send(self, data: bytes, messages: int) -> None:
        """The client sent C{data}, completing C{messages} messages."""
        state = self._state
        if state == "open":
            transport = self._handshake.transport
            assert transport is not None
            transport.write(data)
            self.sent_messages += messages
            unsent = unsent_bytes(transport)
            if unsent is not None and unsent > MIRROR_BUFFER:
                self._cut()
        elif state == "handshake":
            self._pending.append(data)
            self._pending_size += len(data)
            self._pending_messages += messages
            if self._pending_size > MIRROR_BUFFER:
                self._cut()
        elif state == "cut":
            for _ in range(messages):
                self._route.stats.record_dropped()

    def _cut(self) -> None:
        """The shadow fell behind: cut it off, count it dropped."""
        self._state = "cut"
        self._stop_deadline()
        self._route.stats.record_dropped()
        self._abort()

    def close(self) -> None:
        """The client's session ended: close once what was sent is flushed."""
        if self._state in ("cut", "closed"):
            return
        self._state = "closed"
        self._stop_deadline()
        transport = self._handshake.transport
        if self._handshake.switched and transport is not None:
            transport.loseConnection()
        else:
            self._abort()

    def active_switched(self, extensions: bytes) -> None:
        """The active outbound accepted the session with C{extensions}."""
        self._active_extensions = extensions
        self._open_if_ready()

    def _open_if_ready(self) -> None:
        if self._state != "handshake":
            return
        own, active = self._own_extensions, self._active_extensions
        if own is None or active is None:
            return
        if own != active:
            self._state = "closed"
            self._route.stats.record_skipped("websocket_extensions")
            self._abort()
            return
        self._state = "open"
        pending, self._pending = self._pending, []
        self._pending_size = 0
        transport = self._handshake.transport
        assert transport is not None
        if pending:
            transport.write(b"".join(pending))
            self.sent_messages += self._pending_messages
            unsent = unsent_bytes(transport)
            if unsent is not None and unsent > MIRROR_BUFFER:
                self._cut()

    # -- _Peer -----------------------------------------------------------------

    def connected(self, connection: _Handshake) -> None:
        if self._state != "handshake":
            connection.abort()

    def switched(self, answer: _Answer, rest: bytes) -> None:
        self._stop_deadline()
        if self._state != "handshake":
            self._handshake.abort()
            return
        self._route.answered()
        self._route.stats.record_response(101, self._reactor.seconds() - self._start)
        self._own_extensions = _extensions(tuple(answer.headers))
        self._open_if_ready()

    def answered(self, answer: _Answer) -> None:
        self._stop_deadline()
        if self._state != "handshake":
            return
        self._state = "closed"
        self._route.answered()
        self._route.stats.record_response(
            answer.code, self._reactor.seconds() - self._start
        )
        self._pending = []

    def failed(self, reason: str) -> None:
        self._stop_deadline()
        if self._state != "handshake":
            return
        self._state = "closed"
        self._route.stats.record_error(self._reactor.seconds() - self._start)
        self._pending = []

    def peer_data(self, data: bytes) -> None:
        """The shadow's messages are read and dropped."""

    def peer_lost(self) -> None:
        if self._state == "open":
            self._state = "closed"


def announces_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's headers announce a body (a length other than 0)."""
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding" or (
            lower == b"content-length" and value.strip() != b"0"
        ):
            return True
    return False


def plain_head(
    method: bytes, uri: bytes, version: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """An h2c upgrade request's head again, without C{Upgrade} (or C{Expect},
    already answered), to be parsed as a plain HTTP/1.1 request."""
    parts = [method, b" ", uri, b" ", version, b"\r\n"]
    for name, value in headers:
        if name.lower() not in (b"upgrade", b"expect"):
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
