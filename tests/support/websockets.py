"""Real WebSocket peers for tests (autobahn, on this process's reactor).

C{EchoBackend} is a WebSocket server that echoes every message and records
it (or, with C{read=False}, stops reading once the session is open: a
shadow that falls behind).  C{EchoClient.session} opens a session, sends
messages and collects the echoes.
"""

from __future__ import annotations

from typing import Any, cast

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort

from tests.support.waiting import Arrivals


class _EchoProtocol(WebSocketServerProtocol):
    def onOpen(self) -> None:
        backend: EchoBackend = cast(Any, self.factory).backend
        backend.sessions += 1
        backend.protocols.add(self)
        backend.requests.append(dict(self.http_headers))
        if not backend.read:
            cast(Any, self.transport).pauseProducing()

    def onClose(self, was_clean: bool, code: Any, reason: Any) -> None:
        backend: EchoBackend = cast(Any, self.factory).backend
        backend.protocols.discard(self)
        backend.closed += 1

    def onMessage(self, payload: bytes, is_binary: bool) -> None:
        backend: EchoBackend = cast(Any, self.factory).backend
        backend.received.append(payload)
        backend.arrivals.check()
        if backend.echo:
            self.sendMessage(payload, is_binary)


class EchoBackend:
    """A WebSocket server on 127.0.0.1 that echoes and records messages.

    C{deflate}: accept the permessage-deflate extension when offered.
    C{read=False}: stop reading the connection once the session is open.
    """

    def __init__(self, deflate: bool = False, read: bool = True) -> None:
        self.received: list[bytes] = []
        self.requests: list[dict[str, str]] = []
        self.sessions = 0
        self.closed = 0
        """Sessions whose connection ended."""
        self.protocols: set[Any] = set()
        """The open sessions' protocols."""
        self.read = read
        self.echo = True
        self.arrivals = Arrivals(self.received, cast(Any, reactor))
        factory: Any = WebSocketServerFactory()
        factory.protocol = _EchoProtocol
        factory.backend = self
        factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=10)
        if deflate:

            def accept(offers: list[Any]) -> Any:
                for offer in offers:
                    if isinstance(offer, PerMessageDeflateOffer):
                        return PerMessageDeflateOfferAccept(offer)
                return None

            factory.setProtocolOptions(perMessageCompressionAccept=accept)
        self._factory = factory
        self.port: IListeningPort | None = None

    @property
    def address(self) -> str:
        """C{127.0.0.1:port} of the listening server."""
        assert self.port is not None
        return f"127.0.0.1:{cast(IPv4Address, self.port.getHost()).port}"

    def listen(self) -> IListeningPort:
        """Listen on an ephemeral loopback port."""
        self.port = cast(Any, reactor).listenTCP(
            0, self._factory, interface="127.0.0.1"
        )
        return self.port

    def close(self) -> Deferred[None]:
        """Stop listening and drop the open sessions."""
        for protocol in self.protocols:
            protocol.transport.abortConnection()
        assert self.port is not None
        return cast(Deferred[None], self.port.stopListening())


class _ClientProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        client: EchoClient = cast(Any, self.factory).client
        client.protocol = self
        client.opened.callback(None)

    def onMessage(self, payload: bytes, is_binary: bool) -> None:
        client: EchoClient = cast(Any, self.factory).client
        client.echoes.append(payload)
        client.arrivals.check()

    def onClose(self, was_clean: bool, code: Any, reason: Any) -> None:
        client: EchoClient = cast(Any, self.factory).client
        if not client.opened.called:
            client.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        if not client.closed.called:
            client.closed.callback(was_clean)


class EchoClient:
    """A WebSocket client of C{ws://127.0.0.1:port/path}."""

    def __init__(self, port: int, path: str = "/chat", deflate: bool = False) -> None:
        self.echoes: list[bytes] = []
        self.arrivals = Arrivals(self.echoes, cast(Any, reactor))
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[bool] = Deferred()
        self.protocol: Any = None
        factory: Any = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}")
        factory.protocol = _ClientProtocol
        factory.client = self
        factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=10)
        if deflate:

            def accept(response: Any) -> Any:
                if isinstance(response, PerMessageDeflateResponse):
                    return PerMessageDeflateResponseAccept(response)
                return None

            factory.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer()],
                perMessageCompressionAccept=accept,
            )
        self.connector = cast(Any, reactor).connectTCP("127.0.0.1", port, factory)

    def send(self, payload: bytes) -> None:
        """Send one binary message."""
        self.protocol.sendMessage(payload, isBinary=True)

    def close(self) -> Deferred[bool]:
        """Close the session (the close handshake, then the connection)."""
        if self.protocol is not None and not self.closed.called:
            self.protocol.sendClose(1000)
        else:
            self.connector.disconnect()
        return self.closed
