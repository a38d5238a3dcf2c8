"""The C{tcp://host:port} sink: JSON lines shipped over a persistent connection.

For a log collector such as Vector, Fluent Bit or Logstash listening for
newline-delimited JSON.  The connection is kept by a
L{twisted.application.internet.ClientService}, which reconnects with an
exponential backoff.  Lines go straight to the connection while it is up
and accepts data; otherwise (disconnected, or the collector reads too
slowly and the connection pauses us) they wait in a buffer of at most
C{bufferLines} lines, written out as soon as the connection is back.

What a copy counts as in the outbound's stats: C{delivered} when its line
was written to the connection or buffered; C{dropped} when the buffer was
full.  Lines written to a connection that breaks before the collector read
them are lost without notice, as with any TCP log shipping without
acknowledgements; lines still buffered when the sink closes are logged as
lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from nfork.outbounds.api import (
    ConfigError,
    CopyDropped,
    IOutbound,
    IOutboundFactory,
    IOutboundValidator,
    OutboundConfig,
    OutboundContext,
    ProxyRequest,
    ProxyResponse,
    check_option_names,
    integer_option,
)
from nfork.outbounds.sinks import SinkClosed
from nfork.outbounds.sinks.records import ANSWERS_OPTION, answers_option, encode_record

__all__ = ["DEFAULT_BUFFER_LINES", "TCPSink", "TCPSinkFactory"]

DEFAULT_BUFFER_LINES = 10_000
"""Lines kept while the collector cannot take them; beyond, copies are dropped."""
CONNECT_TIMEOUT = 10.0
"""Seconds a connection attempt may take."""
CLOSE_TIMEOUT = 5.0
"""Seconds the connection has, at close, to hand the collector what it holds."""


@implementer(IPushProducer)
class _Shipper(Protocol):
    """One connection to the collector; it pauses us when it cannot keep up."""

    def __init__(self, sink: TCPSink) -> None:
        self._sink = sink

    def connectionMade(self) -> None:
        """Ask the transport to pause us when its buffer fills; start shipping."""
        transport: Any = self.transport  # a TCP transport: IConsumer too
        transport.registerProducer(self, True)
        self._sink._connected(self)

    def write(self, line: bytes) -> None:
        """Hand one line to the connection."""
        assert self.transport is not None
        self.transport.write(line)

    def dataReceived(self, data: bytes) -> None:
        """Ignore what the collector says: the protocol is one-way."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell the sink, which buffers until the next connection."""
        self._sink._disconnected(self, reason)

    def pauseProducing(self) -> None:
        """The collector reads too slowly: buffer lines instead."""
        self._sink._paused = True

    def resumeProducing(self) -> None:
        """The collector caught up: write the buffered lines."""
        self._sink._paused = False
        self._sink._drain()

    def stopProducing(self) -> None:
        """The connection is going away; connectionLost follows."""


class _ShipperFactory(Factory):
    noisy = False

    def __init__(self, sink: TCPSink) -> None:
        self._sink = sink

    def buildProtocol(self, addr: IAddress | None) -> _Shipper:
        return _Shipper(self._sink)


@implementer(IOutbound)
class TCPSink:
    """Ships a JSON record of every copy to a collector (see the module doc)."""

    gives_response = False
    _log = Logger()

    def __init__(
        self,
        *,
        name: str,
        inbound: str,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        destination: str = "",
        buffer_lines: int = DEFAULT_BUFFER_LINES,
        retry_policy: Callable[[int], float] | None = None,
        records_answers: bool = False,
    ) -> None:
        self.name = name
        self.records_answers = records_answers
        """Whether records carry the active outbound's answer (C{"answers"})."""
        self.inbound = inbound
        self.destination = destination or str(endpoint)
        self._clock = clock
        self._buffer_lines = buffer_lines
        self._buffer: deque[bytes] = deque()
        self._protocol: _Shipper | None = None
        self._paused = False
        self._closed = False
        self.lost = 0
        """Lines still buffered when the sink was closed."""
        self._service = ClientService(
            endpoint,
            _ShipperFactory(self),
            retryPolicy=retry_policy or backoffPolicy(maxDelay=30.0),
            clock=clock,
        )
        self._service.startService()

    @property
    def connected(self) -> bool:
        """Whether a connection to the collector is up."""
        return self._protocol is not None

    @property
    def buffered(self) -> int:
        """Lines waiting for the connection."""
        return len(self._buffer)

    def send(
        self, request: ProxyRequest, keep_body: bool
    ) -> Deferred[ProxyResponse | None]:
        """Write the copy's record, or buffer it; fires at once."""
        if self._closed:
            return fail(SinkClosed(f"tcp sink {self.name} is closed"))
        protocol = self._protocol
        if protocol is not None and not self._paused and not self._buffer:
            protocol.write(encode_record(request, self.inbound, self.name))
            return succeed(None)
        if len(self._buffer) >= self._buffer_lines:
            return fail(
                CopyDropped(
                    f"{len(self._buffer)} lines already waiting for {self.destination}"
                )
            )
        self._buffer.append(encode_record(request, self.inbound, self.name))
        return succeed(None)

    def _connected(self, protocol: _Shipper) -> None:
        self._protocol = protocol
        self._paused = False
        self._log.info(
            "tcp sink {name}: connected to {destination}; "
            "{buffered} buffered lines to send",
            name=self.name,
            destination=self.destination,
            buffered=len(self._buffer),
        )
        self._drain()

    def _drain(self) -> None:
        """Write buffered lines until the connection pauses us."""
        protocol = self._protocol
        buffer = self._buffer
        while buffer and protocol is not None and not self._paused:
            protocol.write(buffer.popleft())

    def _disconnected(self, protocol: _Shipper, reason: Failure) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._paused = False
        if not self._closed:
            self._log.warn(
                "tcp sink {name}: connection to {destination} lost ({reason}); "
                "buffering up to {limit} lines until it is back",
                name=self.name,
                destination=self.destination,
                reason=reason.getErrorMessage(),
                limit=self._buffer_lines,
            )

    def close(self) -> Deferred[None]:
        """Hand the collector what is buffered, disconnect, stop reconnecting."""
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        protocol = self._protocol
        abort: IDelayedCall | None = None
        if protocol is not None:
            transport: Any = protocol.transport
            # Everything still buffered goes to the transport, which writes it
            # out before closing; without a producer, it is free to close.
            while self._buffer:
                transport.write(self._buffer.popleft())
            transport.unregisterProducer()
            transport.loseConnection()
            abort = self._clock.callLater(CLOSE_TIMEOUT, transport.abortConnection)
        await self._service.stopService()
        if abort is not None and abort.active():
            abort.cancel()
        if self._buffer:
            self.lost = len(self._buffer)
            self._buffer.clear()
            self._log.warn(
                "tcp sink {name}: {lost} lines lost: {destination} unreachable",
                name=self.name,
                lost=self.lost,
                destination=self.destination,
            )


@implementer(IOutboundFactory, IOutboundValidator)
@frozen
class TCPSinkFactory:
    """Builds L{TCPSink}s for C{tcp://host:port} addresses.

    Options: C{bufferLines}, the lines kept while the collector cannot take
    them (default 10000), and C{answers} (true: record the active outbound's
    answer with each request; default false).
    """

    scheme: str = "tcp"
    gives_response: bool = False

    def validate(self, config: OutboundConfig) -> None:
        """Check the address (host and port, nothing else) and the options."""
        address = config.address
        raw = address.raw
        if (
            not address.host
            or not address.port
            or address.path_prefix not in ("", "/")
            or "?" in raw
            or "#" in raw
        ):
            raise ConfigError(f'expected "tcp://host:port", got "{raw}"', key="addr")
        check_option_names(config, ("bufferLines", ANSWERS_OPTION))
        integer_option(config, "bufferLines", DEFAULT_BUFFER_LINES, minimum=1)
        answers_option(config)

    def build(self, config: OutboundConfig, context: OutboundContext) -> IOutbound:
        """A sink connected (and reconnecting) to the collector."""
        address = config.address
        endpoint = HostnameEndpoint(
            context.reactor, address.host, address.port, timeout=CONNECT_TIMEOUT
        )
        return TCPSink(
            name=config.name,
            inbound=context.inbound,
            endpoint=endpoint,
            clock=context.reactor,
            destination=f"{address.host}:{address.port}",
            buffer_lines=integer_option(config, "bufferLines", DEFAULT_BUFFER_LINES),
            records_answers=answers_option(config),
        )
