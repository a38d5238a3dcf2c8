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
