"""A raw TCP client on the reactor: exact bytes out, every byte back.

For what an HTTP client library would refuse to send or would tidy up:
garbage, a half request, a slow trickle.  Loopback only.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
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


def never_reading_socket(
    port: int, request: bytes, receive_buffer: int = 4096
) -> socket.socket:
    """A socket to C{127.0.0.1:port} that has sent C{request} and never reads.

    Its receive buffer is set small before connecting, so that the answers
    pile up on the server's side at once.  A plain non-blocking socket, off
    the reactor: nothing ever reads it.  The caller closes it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(5.0)
        # Loopback: the kernel completes the handshake and takes these few
        # KiB at once, whether or not the server has accepted yet.
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def split_response(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """The status, headers (lower-cased names) and body of one raw answer.

    For an answer read until the close: the body is everything after the
    head, as sent (no chunked decoding).
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    code = int(status_line.split(b" ")[1])
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return code, headers, body


def reset(client: Protocol) -> None:
    """Close C{client}'s connection with a reset (RST), as a client that aborts.

    A plain close sends a FIN, which nfork takes as a half-close: the client
    still gets its answer.
    """
    transport = client.transport
    assert transport is not None
    # Twisted's abort closes with SO_LINGER 0: a reset, not a FIN.
    cast(ITCPTransport, transport).abortConnection()


def half_close(client: Protocol) -> None:
    """Send a FIN after what C{client} has sent (shutdown(SHUT_WR)), still reading."""
    transport = client.transport
    assert transport is not None
    cast(ITCPTransport, transport).loseWriteConnection()


class Flood(RawClient):
    """Sends C{request}, then C{piece} every C{interval} seconds, up to C{limit}.

    An endless line, a byte stream that never ends: it stops at the first byte
    answered (so that the answer is not lost to a reset), at the close, or
    after C{limit} pieces.  C{sent} counts the pieces sent.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        request: bytes,
        piece: bytes,
        interval: float = 0.01,
        limit: int = 100,
    ) -> None:
        super().__init__(request)
        self._reactor = reactor
        self.piece = piece
        self.interval = interval
        self.limit = limit
        self.sent = 0
        self._call: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._call = self._reactor.callLater(self.interval, self._send)

    def _send(self) -> None:
        self._call = None
        if self.received or self.sent >= self.limit or self.transport is None:
            return
        self.transport.write(self.piece)
        self.sent += 1
        self._call = self._reactor.callLater(self.interval, self._send)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        super().connectionLost(reason)


def flood(
    reactor: Any, port: int, request: bytes, piece: bytes, **options: Any
) -> Deferred[Flood]:
    """A new connection to C{127.0.0.1:port} flooding as L{Flood} does."""
    client = Flood(reactor, request, piece, **options)

    async def connect() -> Flood:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        return client

    return Deferred.fromCoroutine(connect())
