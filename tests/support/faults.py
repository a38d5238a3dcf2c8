"""Misbehaving backends: what a shadow can do wrong, over real sockets."""

from __future__ import annotations

import socket
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

HUGE_BODY_SIZE = 32 * 1024 * 1024


def refused_address() -> str:
    """A loopback address where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


class _FaultProtocol(Protocol):
    """Reads a request, then misbehaves as its factory's C{kind} says."""

    factory: FaultServer
    answered = False

    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)

    def dataReceived(self, data: bytes) -> None:
        if self.answered or b"\r\n\r\n" not in data:
            return
        self.answered = True
        self.factory.requests += 1
        transport: Any = self.transport
        kind = self.factory.kind
        if kind == "hang":
            return
        if kind == "reset":
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            transport.abortConnection()
        elif kind == "garbage":
            transport.write(b"\x00\xff\xfeNOT HTTP AT ALL\r\n\r\n\x00")
            transport.loseConnection()
        elif kind == "huge":
            transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                % len(self.factory.huge_body)
            )
            transport.write(self.factory.huge_body)
            self.answered = False


class FaultServer(Factory):
    """A loopback server whose every connection misbehaves the same way.

    Kinds: C{hang} (reads, never answers), C{reset} (half an answer, then
    RST), C{garbage} (bytes that are not HTTP), C{huge} (a 32 MiB body).
    """

    protocol = _FaultProtocol  # type: ignore[assignment]

    def __init__(self, kind: str, huge_size: int = HUGE_BODY_SIZE) -> None:
        self.kind = kind
        self.requests = 0
        self.connections: list[_FaultProtocol] = []
        self.port: IListeningPort | None = None
        self.huge_body = b"x" * huge_size if kind == "huge" else b""

    def listen(self) -> str:
        """Listen on an ephemeral loopback port; returns C{127.0.0.1:port}."""
        self.port = cast(Any, reactor).listenTCP(0, self, interface="127.0.0.1")
        assert self.port is not None
        return f"127.0.0.1:{cast(IPv4Address, self.port.getHost()).port}"

    def close(self) -> Deferred[Any]:
        """Abort every connection and stop listening."""
        for connection in list(self.connections):
            cast(Any, connection.transport).abortConnection()
        assert self.port is not None
        return DeferredList([Deferred.fromCoroutine(_stop(self.port))])


async def _stop(port: IListeningPort) -> None:
    stopped = port.stopListening()
    if stopped is not None:
        await stopped


class _ScriptedProtocol(Protocol):
    """Reads requests (head and C{Content-Length} body); answers per its script."""

    factory: ScriptedBackend

    def connectionMade(self) -> None:
        self.buffer = b""
        self.served = 0
        """Requests answered on this connection."""
        self.factory.connections.append(self)
        self.factory.opened += 1

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)
        for call in list(self.factory.calls):
            if call.active() and call.args and call.args[0] is self:
                call.cancel()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            method, target = head.split(b" ")[:2]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if self.factory.answer_early and length:
                # Answer at once and never read the body.
                self.buffer = b""
                self.factory.requests.append((method, target))
                self.factory.script(self, method, target)
                cast(Any, self.transport).pauseProducing()
                return
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.factory.requests.append((method, target))
            self.factory.script(self, method, target)
            self.served += 1

    def write(self, data: bytes) -> None:
        """Write C{data}, if still connected."""
        if self.transport is not None and self.connected:
            self.transport.write(data)

    def later(self, delay: float, data: bytes) -> None:
        """Write C{data} in C{delay} seconds, unless the connection is gone."""
        self.factory.calls.append(
            cast(Any, reactor).callLater(delay, self.write_later, self, data)
        )

    @staticmethod
    def write_later(protocol: _ScriptedProtocol, data: bytes) -> None:
        protocol.write(data)


def answer(body: bytes, *headers: bytes) -> bytes:
    """A complete HTTP/1.1 answer 200 with C{body}."""
    extra = b"".join(header + b"\r\n" for header in headers)
    return b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (
        extra,
        len(body),
        body,
    )


class ScriptedBackend(Factory):
    """A loopback backend that answers each request as C{script} says.

    C{script(protocol, method, target)} writes the answer (or not) with
    C{protocol.write} / C{protocol.later}; C{protocol.served} counts the
    requests already answered on that connection.  C{requests} records
    every C{(method, target)} received, C{opened} the connections.  With
    C{answer_early}, a request with a body is answered as soon as its head
    arrives and the connection stops reading.
    """

    protocol = _ScriptedProtocol  # type: ignore[assignment]

    def __init__(self, script: Any, answer_early: bool = False) -> None:
        self.script = script
        self.answer_early = answer_early
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections: list[_ScriptedProtocol] = []
        self.calls: list[Any] = []
        self.opened = 0
        self.port: IListeningPort | None = None

    def listen(self) -> str:
        """Listen on an ephemeral loopback port; returns C{127.0.0.1:port}."""
        self.port = cast(Any, reactor).listenTCP(0, self, interface="127.0.0.1")
        assert self.port is not None
        return f"127.0.0.1:{cast(IPv4Address, self.port.getHost()).port}"

    def close(self) -> Deferred[Any]:
        """Cancel pending writes, abort every connection and stop listening."""
        for call in self.calls:
            if call.active():
                call.cancel()
        for connection in list(self.connections):
            cast(Any, connection.transport).abortConnection()
        assert self.port is not None
        return DeferredList([Deferred.fromCoroutine(_stop(self.port))])


class EndlessHead(Protocol):
    """A backend that answers every request with a head that never ends.

    It writes C{chunk}-sized pieces of one header value each reactor turn,
    up to C{limit} bytes; C{sent} is what it wrote before the client closed.
    """

    def __init__(self, limit: int = 16 * 1024 * 1024, chunk: int = 16 * 1024) -> None:
        self.limit = limit
        self.chunk = chunk
        self.sent = 0
        self.closed: Deferred[None] = Deferred()
        self._call: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self._call is None and b"\r\n\r\n" in data:
            cast(Any, self.transport).write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
            self._more()

    def _more(self) -> None:
        self._call = None
        if self.sent >= self.limit or not self.connected:
            return
        cast(Any, self.transport).write(b"a" * self.chunk)
        self.sent += self.chunk
        self._call = cast(Any, reactor).callLater(0.001, self._more)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.closed.callback(None)
