"""A raw TCP client on the reactor: exact bytes out, every byte back.

For what an HTTP client library would refuse to send or would tidy up:
garbage, a half request, a slow trickle.  Loopback only.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure


class RawClient(Protocol):
    """Sends C{request} on connect; collects what arrives until the close."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.done: Deferred[bytes] = Deferred()
        """Fires with every byte received once the connection is closed."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.received)


def raw_connect(reactor: IReactorTCP, port: int, request: bytes) -> Deferred[RawClient]:
    """A new connection to C{127.0.0.1:port} that has sent C{request}."""
    client = RawClient(request)

    async def connect() -> RawClient:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        return client

    return Deferred.fromCoroutine(connect())


def raw_exchange(reactor: IReactorTCP, port: int, request: bytes) -> Deferred[bytes]:
    """Send C{request} as is over a new connection; every byte received back."""

    async def exchange() -> bytes:
        client = await raw_connect(reactor, port, request)
        return await client.done

    return Deferred.fromCoroutine(exchange())
