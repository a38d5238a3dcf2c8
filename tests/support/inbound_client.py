"""A treq client whose requests reach an inbound through its real server, in memory.

The fork logic is tested the way production serves it: each request is sent
by twisted.web's client over an in-memory connection (L{twisted.test.iosim})
to a new L{InboundProtocol} of the inbound's L{InboundServerFactory}, which
hands it to the L{InboundFork} under test.  No socket, no real reactor.
Modelled on L{treq.testing.RequestTraversalAgent}, which does the same for a
twisted.web resource.
"""

from __future__ import annotations

import treq
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IConsumer, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.web.client import URI, Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from nfork.proxy.fork import InboundFork
from nfork.proxy.server import InboundServerFactory

CLIENT_ADDRESS = IPv4Address("TCP", "127.0.0.1", 31337)
"""Where the in-memory client connects from (C{X-Forwarded-For} names it)."""


@implementer(IAgentEndpointFactory)
class _EndpointFactory:
    """Endpoints on the agent's memory reactor: connecting only records it."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self._reactor = reactor

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return TCP4ClientEndpoint(self._reactor, "127.0.0.1", uri.port)


@implementer(IAgent)
class InboundAgent:
    """An L{IAgent} whose requests are served by one inbound's real server.

    Every request gets a connection of its own (the agent does not keep
    connections alive).  The request is delivered at once; the answer, once
    the fork gave it, reaches the client when L{flush} moves the bytes.
    """

    def __init__(self, fork: InboundFork) -> None:
        self.reactor = MemoryReactorClock()
        """The client's and the server's connection timers run here, apart
        from the test's clock, which then holds only the fork's deadlines."""
        self._agent = Agent.usingEndpointFactory(
            self.reactor, _EndpointFactory(self.reactor)
        )
        self.server = InboundServerFactory(fork, self.reactor)
        self._pumps: list[IOPump] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        """Send the request over a new in-memory connection to the inbound."""
        response: Deferred[IResponse] = self._agent.request(
            method, uri, headers, bodyProducer
        )
        if response.called:
            # The agent failed before connecting (a bad URI...).
            return response
        _, port, client_factory, _, _ = self.reactor.tcpClients.pop()
        self.reactor.connectors.pop()
        server_address = IPv4Address("TCP", "127.0.0.1", port)
        server = self.server.buildProtocol(CLIENT_ADDRESS)
        client = client_factory.buildProtocol(server_address)
        self._pumps.append(
            connect(
                server,
                FakeTransport(
                    server,
                    isServer=True,
                    hostAddress=server_address,
                    peerAddress=CLIENT_ADDRESS,
                ),
                client,
                FakeTransport(
                    client,
                    isServer=False,
                    hostAddress=CLIENT_ADDRESS,
                    peerAddress=server_address,
                ),
                clock=self.reactor,
            )
        )
        return response

    def flush(self) -> None:
        """Move bytes both ways until every connection is quiet."""
        pumps, self._pumps = self._pumps, []
        for pump in pumps:
            pump.flush()
            if not (pump.clientIO.disconnected and pump.serverIO.disconnected):
                self._pumps.append(pump)


@implementer(IBodyProducer)
class _BodyProducer:
    """Writes a whole request body at once (treq's default needs a reactor)."""

    def __init__(self, body: bytes | str) -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.length = len(self.body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Never called: the body is written in one go."""

    def resumeProducing(self) -> None:
        """Never called: the body is written in one go."""

    def stopProducing(self) -> None:
        """Never called: the body is written in one go."""


class InboundClient(HTTPClient):
    """treq's client, sending to one inbound's real server in memory.

    C{request}, C{get}, C{post}... as treq's L{HTTPClient}, plus C{content}
    (treq's) and L{flush}, as L{treq.testing.StubTreq} offers them.
    """

    def __init__(self, fork: InboundFork) -> None:
        self.agent = InboundAgent(fork)
        super().__init__(self.agent, data_to_body_producer=_BodyProducer)
        self.flush = self.agent.flush

    @staticmethod
    def content(response: IResponse) -> Deferred[bytes]:
        """The whole body of C{response} (L{treq.content})."""
        body: Deferred[bytes] = treq.content(response)
        return body
