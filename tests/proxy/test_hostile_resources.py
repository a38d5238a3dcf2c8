"""Clients that hold an inbound's resources: connections, body time, output, memory.

Real loopback sockets to an inbound started by a L{Controller} on the real
reactor, raw bytes from the attacker, and after each attack a normal
request through the same inbound, which must be answered within a second.
"""

from __future__ import annotations

import gc
import resource
import tracemalloc
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from nfork.control.controller import Controller, RunningInbound
from nfork.control.metrics import StatsCollector
from nfork.proxy.server import InboundProtocol, InboundServerFactory
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config
from tests.support.rawclient import (
    RawClient,
    never_reading_socket,
    raw_connect,
    raw_exchange,
)

ANSWER_WITHIN = 1.0
"""Seconds a normal request may take during an attack."""
MIB = 1024 * 1024
NORMAL = b"GET /normal HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
PARTIAL_HEAD = b"GET /slow HTTP/1.1\r\nHost: x\r\n"
"""A request head that never ends: a slowloris connection."""

_reactor = cast(Any, reactor)


def pause(seconds: float) -> Deferred[None]:
    """Let the reactor run for C{seconds}."""
    return deferLater(_reactor, seconds, lambda: None)


async def until(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = ""
) -> None:
    """Wait on the reactor until C{condition} holds; fail after C{timeout}s."""
    deadline = _reactor.seconds() + timeout
    while not condition():
        if _reactor.seconds() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what or condition}")
        await pause(0.01)


def traced_bytes() -> int:
    """Bytes currently allocated by Python, as tracemalloc sees them."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


class _InboundTestCase(TestCase):
    """An inbound in front of a healthy backend, on real loopback sockets."""

    timeout = 60
    header_timeout = 5.0

    def setUp(self) -> None:
        self.active = RecordingService("prod")
        self.active.listen()
        self.addCleanup(self.active.close)
        self.controller = Controller(_reactor, header_timeout=self.header_timeout)
        self.addCleanup(self.controller.stop)

    async def start(self, **options: Any) -> RunningInbound:
        """Start the inbound C{res} with C{options} (config keys)."""
        self.inbound = await self.controller.add_inbound(
            inbound_config("res", out={"prod": self.active.address}, **options)
        )
        self.port: int = cast(Any, self.inbound.port.getHost()).port
        return self.inbound

    @property
    def server(self) -> InboundServerFactory:
        return self.inbound.factory

    async def assert_served(self) -> bytes:
        """A normal request is answered by the backend within a second."""
        start = _reactor.seconds()
        answer = await raw_exchange(_reactor, self.port, NORMAL)
        elapsed = _reactor.seconds() - start
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertLess(elapsed, ANSWER_WITHIN)
        return answer

    async def connect_many(self, count: int, request: bytes) -> list[RawClient]:
        """C{count} connections that sent C{request}, opened in small batches.

        The listen backlog is 50: a bigger burst would wait for SYN retries.
        """
        clients: list[RawClient] = []
        while len(clients) < count:
            batch = min(40, count - len(clients))
            clients += await gatherResults(
                [raw_connect(_reactor, self.port, request) for _ in range(batch)]
            )
        return clients

    async def close_all(self, clients: list[RawClient]) -> None:
        """Abort the clients and wait until the inbound has seen them go."""
        for client in clients:
            assert client.transport is not None
            cast(Any, client.transport).abortConnection()
        await gatherResults([client.done for client in clients])
        await until(lambda: not self.server.connections, what="connections closed")


class BodyDeadlineTests(_InboundTestCase):
    """A request body must arrive whole within C{requestBodyTimeout}."""

    async def test_body_trickle_is_cut_off_with_408(self) -> None:
        await self.start(requestBodyTimeout="500ms")
        start = _reactor.seconds()
        client = await raw_connect(
            _reactor,
            self.port,
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx",
        )
        for i in range(30):
            await pause(0.1)
            if client.done.called:
                break
            assert client.transport is not None
            client.transport.write(b"x")
            if i == 1:
                await self.assert_served()
        answer = await client.done
        elapsed = _reactor.seconds() - start
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        self.assertTrue(0.4 < elapsed < 1.5, elapsed)
        self.assertEqual([r for r in self.active.received if "/up" in r], [])

    async def test_chunked_body_trickle_is_cut_off_with_408(self) -> None:
        await self.start(requestBodyTimeout="500ms")
        client = await raw_connect(
            _reactor,
            self.port,
            b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        for _ in range(30):
            await pause(0.1)
            if client.done.called:
                break
            assert client.transport is not None
            client.transport.write(b"1\r\nx\r\n")
        answer = await client.done
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        await self.assert_served()
        self.assertEqual([r for r in self.active.received if "/up" in r], [])

    async def test_a_body_in_several_reads_within_the_deadline_is_served(
        self,
    ) -> None:
        await self.start(requestBodyTimeout="2s")
        client = await raw_connect(
            _reactor,
            self.port,
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
            b"Connection: close\r\n\r\nabc",
        )
        await pause(0.3)
        assert client.transport is not None
        client.transport.write(b"def")
        answer = await client.done
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertIn("POST /up abcdef", self.active.received)


class SlowlorisTests(_InboundTestCase):
    """Thousands of unfinished heads do not keep a normal client out."""

    header_timeout = 30.0
    """Longer than the test: the slowloris connections all stay open."""
    SLOWLORIS = 3000

    def raise_descriptor_limit(self, needed: int) -> None:
        """Raise the soft descriptor limit to C{needed} (both ends are ours)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft >= needed:
            return
        if hard != resource.RLIM_INFINITY and hard < needed:
            self.skipTest(f"needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))

    async def test_3000_slowloris_connections_do_not_stop_a_normal_client(
        self,
    ) -> None:
        # Each connection is two descriptors here: the client's and nfork's.
        self.raise_descriptor_limit(2 * self.SLOWLORIS + 500)
        await self.start()
        self.assertGreater(self.server.max_connections, self.SLOWLORIS)
        clients = await self.connect_many(self.SLOWLORIS, PARTIAL_HEAD)
        await until(
            lambda: len(self.server.connections) >= self.SLOWLORIS,
            what="every slowloris connection accepted",
        )
        await self.assert_served()
        await self.assert_served()
        self.assertEqual(len(self.server.connections), self.SLOWLORIS)
        self.assertEqual(self.server.refused, 0)
        await self.close_all(clients)


class MaxConnectionsTests(_InboundTestCase):
    """Beyond C{maxConnections}, new connections are closed at once and counted."""

    header_timeout = 1.0

    async def test_connections_beyond_the_limit_are_closed_and_counted(
        self,
    ) -> None:
        await self.start(maxConnections=20)
        holders = await self.connect_many(20, PARTIAL_HEAD)
        await until(lambda: len(self.server.connections) == 20)
        start = _reactor.seconds()
        extra = await self.connect_many(5, NORMAL)
        answers = await gatherResults([client.done for client in extra])
        self.assertEqual(answers, [b""] * 5)
        self.assertLess(_reactor.seconds() - start, ANSWER_WITHIN)
        self.assertEqual(self.server.refused, 5)
        self.assertEqual(len(self.server.connections), 20)
        self.assertEqual(self.active.received, [])
        metrics = {
            metric.name: metric.samples
            for metric in StatsCollector(self.controller).collect()
        }
        refused = metrics["nfork_inbound_connections_refused"]
        self.assertEqual(
            [(s.name, s.labels, s.value) for s in refused if s.name.endswith("total")],
            [("nfork_inbound_connections_refused_total", {"inbound": "res"}, 5.0)],
        )
        self.assertEqual(
            [(s.labels, s.value) for s in metrics["nfork_inbound_connections"]],
            [({"inbound": "res"}, 20.0)],
        )
        # The holders are cut off by the head deadline; new clients get in.
        held = await gatherResults([client.done for client in holders])
        self.assertTrue(all(a.startswith(b"HTTP/1.1 408 ") for a in held))
        await self.assert_served()
        self.assertEqual(self.server.refused, 5)


class NonReaderTests(_InboundTestCase):
    """A client that never reads its answers holds a bounded amount of memory."""

    PIPELINED = 200

    def setUp(self) -> None:
        super().setUp()
        self.active.body = b"a" * MIB

    def protocols(self) -> list[InboundProtocol]:
        return list(self.server.connections)

    async def test_200_pipelined_1mib_answers_never_read_keep_memory_bounded(
        self,
    ) -> None:
        await self.start(writeTimeout="2s")
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = traced_bytes()
        sock = never_reading_socket(
            self.port, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * self.PIPELINED
        )
        self.addCleanup(sock.close)
        await until(
            lambda: any(p._output_full for p in self.protocols()),
            what="nfork holds the client's unread output",
        )
        await pause(0.5)
        held = traced_bytes() - before
        # nfork stopped starting the client's requests: only the first few
        # answers left (the kernel's buffers took part of them).
        started = len(self.active.received)
        self.assertLess(started, 10)
        self.assertLess(held, 4 * MIB, f"{held / MIB:.1f} MiB held")
        answer = await self.assert_served()
        self.assertTrue(answer.endswith(b"a" * MIB))
        self.assertEqual(len(self.active.received), started + 1)
        # The write timeout: no progress for 2 s cuts the client off.
        await until(
            lambda: not self.server.connections, timeout=5.0, what="non-reader cut"
        )
        self.assertLess(len(self.active.received), 12)

    async def test_a_slow_reader_that_makes_progress_is_not_cut_off(self) -> None:
        # The answer streams: more than loopback's socket buffers (up to 4 MiB
        # to send) must be left for nfork to hold and pause on.
        size = 8 * MIB
        self.active.body = b"b" * size
        await self.start(writeTimeout="500ms")
        sock = never_reading_socket(
            self.port,
            b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            receive_buffer=64 * 1024,
        )
        self.addCleanup(sock.close)
        await until(lambda: any(p._output_full for p in self.protocols()))
        start = _reactor.seconds()
        received = 0
        for _ in range(1000):
            # At most 64 KiB every 20 ms: longer than writeTimeout in all.
            await pause(0.02)
            try:
                data = sock.recv(64 * 1024)
            except BlockingIOError:
                continue
            if not data:
                break
            received += len(data)
        self.assertGreater(_reactor.seconds() - start, 1.0)
        self.assertGreater(received, size)


class BodyMemoryTests(_InboundTestCase):
    """A body sent in tiny chunks costs about its size, not 22 times it."""

    async def test_two_byte_chunks_are_held_in_one_buffer(self) -> None:
        size = 256 * 1024
        await self.start()
        head = (
            b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
        )
        request = head + b"2\r\nab\r\n" * (size // 2)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = traced_bytes()
        client = await raw_connect(_reactor, self.port, request)
        await until(
            lambda: any(p._body_size >= size for p in self.server.connections),
            what="the whole body received",
        )
        held = traced_bytes() - before
        await self.assert_served()
        assert client.transport is not None
        client.transport.write(b"0\r\n\r\n")
        answer = await client.done
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertIn("POST /chunks " + "ab" * (size // 2), self.active.received)
        self.assertLess(held, 2 * size, f"{held} bytes held for a {size}-byte body")


class RemovedInboundTests(_InboundTestCase):
    """An inbound removed or restarted closes its client connections."""

    async def keep_alive_connections(self) -> tuple[RawClient, RawClient]:
        """An idle keep-alive connection, and one waiting for its answer."""
        idle = await raw_connect(
            _reactor, self.port, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await until(lambda: idle.received.endswith(b"prod"), what="first answer")
        self.active.delay = 0.5
        busy = await raw_connect(
            _reactor, self.port, b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await self.active.wait_for(2)
        return idle, busy

    async def check_closed(self, idle: RawClient, busy: RawClient) -> None:
        start = _reactor.seconds()
        await idle.done
        self.assertLess(_reactor.seconds() - start, 0.3)
        self.assertFalse(busy.done.called)
        answer = await busy.done
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertTrue(answer.endswith(b"prod"))

    async def test_removing_an_inbound_closes_its_connections_after_answers(
        self,
    ) -> None:
        await self.start()
        idle, busy = await self.keep_alive_connections()
        await self.controller.remove_inbound("res")
        await self.check_closed(idle, busy)
        await until(lambda: not self.server.connections)

    async def test_a_new_listen_address_closes_the_old_connections(self) -> None:
        await self.start()
        old = self.server
        idle, busy = await self.keep_alive_connections()
        # Another endpoint for the same address: the inbound is restarted.
        await self.controller.update_inbound(
            inbound_config(
                "res",
                listen="tcp:0:interface=127.0.0.1:backlog=60",
                out={"prod": self.active.address},
            )
        )
        await self.check_closed(idle, busy)
        await until(lambda: not old.connections)
        self.inbound = self.controller.inbound("res")
        self.port = cast(Any, self.inbound.port.getHost()).port
        self.active.delay = 0.0
        await self.assert_served()
