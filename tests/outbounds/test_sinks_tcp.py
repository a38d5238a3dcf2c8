"""The tcp:// sink: buffering, reconnection, overflow; then real loopback sockets."""

from __future__ import annotations

import json
from typing import Any, cast

import attrs
import pytest
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransportWithDisconnection,
)
from twisted.logger import (
    ILogObserver,
    LogLevel,
    capturedLogs,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from nfork.config import ConfigError, parse_outbound
from nfork.outbounds.api import IOutbound, IOutboundFactory, IOutboundValidator
from nfork.outbounds.registry import factory_for
from nfork.outbounds.sinks import SinkClosed
from nfork.outbounds.sinks.records import decode_record
from nfork.outbounds.sinks.tcp import TCPSink, TCPSinkFactory
from nfork.proxy.messages import CapturedAnswer, CopyDropped, ProxyRequest
from tests.support.backends import LineCollector


def request(n: int) -> ProxyRequest:
    return ProxyRequest(b"GET", b"/%d" % n, (), b"", "127.0.0.1", 1000.0 + n)


def uris(data: bytes) -> list[str]:
    return [json.loads(line)["uri"] for line in data.splitlines()]


@implementer(IStreamClientEndpoint)
@define
class FakeEndpoint:
    """Connection attempts stay pending until the test decides their fate."""

    attempts: list[tuple[IProtocolFactory, Deferred[Any]]] = field(factory=list)

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((factory, d))
        return d

    def accept(self) -> tuple[Any, StringTransportWithDisconnection]:
        factory, d = self.attempts.pop()
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5170))
        assert protocol is not None
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        d.callback(protocol)
        return protocol, transport

    def refuse(self) -> None:
        _, d = self.attempts.pop()
        d.errback(ConnectionRefusedError())


class TCPSinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.sink = TCPSink(
            name="ship",
            inbound="foo",
            endpoint=self.endpoint,
            clock=self.clock,
            buffer_lines=3,
            retry_policy=lambda attempt: 1.0,
        )

    def tearDown(self) -> None:
        self.successResultOf(self.sink.close())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_provides_its_interfaces(self) -> None:
        verifyObject(IOutbound, self.sink)
        verifyObject(IOutboundFactory, TCPSinkFactory())
        verifyObject(IOutboundValidator, TCPSinkFactory())

    def test_lines_go_straight_to_the_connection(self) -> None:
        _, transport = self.endpoint.accept()
        self.assertIsNone(self.successResultOf(self.sink.send(request(1), False)))
        self.sink.send(request(2), False)
        self.assertEqual(uris(transport.value()), ["/1", "/2"])
        record = json.loads(transport.value().splitlines()[0])
        self.assertEqual((record["inbound"], record["outbound"]), ("foo", "ship"))

    def test_lines_wait_while_disconnected_and_go_on_connect(self) -> None:
        self.endpoint.refuse()
        self.successResultOf(self.sink.send(request(1), False))
        self.successResultOf(self.sink.send(request(2), False))
        self.assertEqual(self.sink.buffered, 2)
        self.clock.advance(1.0)  # the retry
        _, transport = self.endpoint.accept()
        self.assertEqual(uris(transport.value()), ["/1", "/2"])
        self.assertEqual(self.sink.buffered, 0)

    def test_lines_beyond_the_buffer_are_dropped(self) -> None:
        for n in range(3):
            self.successResultOf(self.sink.send(request(n), False))
        self.failureResultOf(self.sink.send(request(3), False), CopyDropped)
        _, transport = self.endpoint.accept()
        self.assertEqual(uris(transport.value()), ["/0", "/1", "/2"])
        self.successResultOf(self.sink.send(request(4), False))

    def test_a_lost_connection_buffers_until_the_next_one(self) -> None:
        protocol, transport = self.endpoint.accept()
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(self.sink.connected)
        self.assertEqual(
            [e["log_level"] for e in events if "tcp sink" in e["log_format"]],
            [LogLevel.warn],
        )
        self.sink.send(request(1), False)
        self.clock.advance(1.0)
        _, transport = self.endpoint.accept()
        self.assertEqual(uris(transport.value()), ["/1"])

    def test_a_slow_collector_pauses_writes_into_the_buffer(self) -> None:
        _protocol, transport = self.endpoint.accept()
        producer: Any = transport.producer
        self.assertIsNotNone(producer)
        producer.pauseProducing()
        self.sink.send(request(1), False)
        self.assertEqual(transport.value(), b"")
        producer.resumeProducing()
        self.assertEqual(uris(transport.value()), ["/1"])

    def test_close_hands_over_the_buffer_and_disconnects(self) -> None:
        _protocol, transport = self.endpoint.accept()
        cast(Any, transport.producer).pauseProducing()
        self.sink.send(request(1), False)
        self.successResultOf(self.sink.close())
        self.assertEqual(uris(transport.value()), ["/1"])
        self.assertFalse(transport.connected)
        self.assertIsNone(transport.producer)
        self.failureResultOf(self.sink.send(request(2), False), SinkClosed)

    def test_lines_buffered_at_close_without_a_connection_are_lost(self) -> None:
        self.sink.send(request(1), False)
        with capturedLogs() as events:
            self.successResultOf(self.sink.close())
        self.assertEqual(self.sink.lost, 1)
        self.assertTrue(any(e.get("lost") == 1 for e in events))


class FactoryTests(SynchronousTestCase):
    def check(self, value: object) -> None:
        config = parse_outbound("foo", "ship", value)
        factory_for("foo", config, {"tcp": TCPSinkFactory()})

    def test_valid(self) -> None:
        self.check("tcp://127.0.0.1:5170")
        self.check({"addr": "tcp://[::1]:5170/", "bufferLines": 1})
        self.check({"addr": "tcp://collector.internal:5170", "sample": 0.5})

    def test_invalid(self) -> None:
        for value, expected in [
            ("tcp://collector", 'key "addr": expected "tcp://host:port"'),
            ("tcp://:5170", 'key "addr"'),
            ("tcp://h:1/path", 'key "addr"'),
            ("tcp://h:1?x", 'key "addr"'),
            ({"addr": "tcp://h:1", "bufferLines": 0}, 'key "bufferLines"'),
            ({"addr": "tcp://h:1", "maxBytes": 10}, 'unknown key "maxBytes"'),
        ]:
            with pytest.raises(ConfigError) as caught:
                self.check(value)
            self.assertIn(expected, str(caught.value))


class LoopbackTests(TestCase):
    """A real collector on 127.0.0.1."""

    timeout = 10

    def listen(self, collector: LineCollector, port: int = 0) -> Any:
        listening = cast(Any, reactor).listenTCP(port, collector, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        return listening

    @inlineCallbacks
    def test_lines_arrive_at_the_collector(self) -> Any:
        collector = LineCollector()
        port = self.listen(collector).getHost().port
        config = parse_outbound("foo", "ship", f"tcp://127.0.0.1:{port}")
        context: Any = type("Context", (), {"reactor": reactor, "inbound": "foo"})()
        sink = TCPSinkFactory().build(config, context)
        self.addCleanup(sink.close)
        for n in range(3):
            sink.send(request(n), False)
        yield collector.wait_for(3)
        self.assertEqual(uris(b"\n".join(collector.lines)), ["/0", "/1", "/2"])

    @inlineCallbacks
    def test_lines_sent_while_the_collector_is_down_arrive_when_it_is_back(
        self,
    ) -> Any:
        first = LineCollector()
        listening = self.listen(first)
        port = listening.getHost().port
        sink = TCPSink(
            name="ship",
            inbound="foo",
            endpoint=HostnameEndpoint(reactor, "127.0.0.1", port),
            clock=cast(Any, reactor),
            retry_policy=lambda attempt: 0.05,
        )
        self.addCleanup(sink.close)
        sink.send(request(0), False)
        yield first.wait_for(1)
        # The collector goes away: its port closes, its connection drops.
        lost: Deferred[None] = Deferred()

        @implementer(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            if "connection to" in event.get("log_format", "") and not lost.called:
                lost.callback(None)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        yield listening.stopListening()
        cast(Any, first.connections[0].transport).loseConnection()
        yield lost
        self.assertFalse(sink.connected)
        for n in range(1, 4):
            sink.send(request(n), False)
        self.assertEqual(sink.buffered, 3)
        second = LineCollector()
        self.listen(second, port)
        yield second.wait_for(3)
        self.assertEqual(uris(b"\n".join(second.lines)), ["/1", "/2", "/3"])


class AnswerRecordingTests(SynchronousTestCase):
    """C{"answers": true} on a tcp:// sink."""

    def test_the_option_is_checked_and_sets_records_answers(self) -> None:
        reactor = MemoryReactorClock()
        context: Any = type("Context", (), {"reactor": reactor, "inbound": "foo"})()
        for options, expected in (({}, False), ({"answers": True}, True)):
            config = parse_outbound(
                "foo", "ship", {"addr": "tcp://127.0.0.1:5170", **options}
            )
            factory_for("foo", config, {"tcp": TCPSinkFactory()})
            sink = TCPSinkFactory().build(config, context)
            assert isinstance(sink, TCPSink)
            self.assertIs(sink.records_answers, expected)
            self.successResultOf(sink.close())
        config = parse_outbound(
            "foo", "ship", {"addr": "tcp://127.0.0.1:5170", "answers": "true"}
        )
        with pytest.raises(ConfigError) as caught:
            factory_for("foo", config, {"tcp": TCPSinkFactory()})
        self.assertIn('key "answers": expected true or false', str(caught.value))

    def test_the_answer_is_shipped_with_the_request(self) -> None:
        endpoint = FakeEndpoint()
        sink = TCPSink(
            name="ship",
            inbound="foo",
            endpoint=endpoint,
            clock=Clock(),
            records_answers=True,
        )
        self.addCleanup(sink.close)
        answer = CapturedAnswer(code=0, headers=(), body=b"", error="timeout")
        # One record buffered while connecting, one written at once.
        sink.send(attrs.evolve(request(0), answer=answer), False)
        _, transport = endpoint.accept()
        sink.send(attrs.evolve(request(1), answer=answer), False)
        records = [decode_record(line) for line in transport.value().splitlines()]
        self.assertEqual([r.uri for r in records], [b"/0", b"/1"])
        self.assertEqual([r.answer for r in records], [answer, answer])
