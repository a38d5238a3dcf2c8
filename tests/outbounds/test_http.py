"""Tests of the HTTP outbound's share of the pool: its idleConn allowance."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from nfork.config import InboundConfig
from nfork.control.controller import Controller
from nfork.outbounds.api import IOutboundFactory
from nfork.outbounds.http import HTTPOutbound, HTTPOutboundFactory
from nfork.proxy.client import HTTPClientPool, Target
from tests.support.configs import inbound_json, load_inbounds

BACKEND = Target("http", "127.0.0.2", 8080, b"backend:8080")
"""The memory reactor never connects: no traffic leaves the test."""


def inbounds(*idle_conns: tuple[str, int]) -> tuple[InboundConfig, ...]:
    """Inbounds C{(name, idleConn)}, each forking to the same two backends."""
    return load_inbounds(
        *(
            inbound_json(
                name,
                f"127.0.0.1:{9080 + i}",
                out={"prod": "127.0.0.2:8080", "shadow": "127.0.0.3:8080"},
                idleConn=idle_conn,
            )
            for i, (name, idle_conn) in enumerate(idle_conns)
        )
    )


class OutboundAllowanceTests(SynchronousTestCase):
    """An HTTP outbound asks the pool for its idleConn while it lives."""

    def test_building_registers_and_closing_withdraws(self) -> None:
        pool = HTTPClientPool(MemoryReactorClock())
        outbound = HTTPOutbound(pool, BACKEND, 16)
        self.assertEqual(pool.idle_limit(BACKEND), 16)
        self.successResultOf(outbound.close())
        self.assertEqual(pool.idle_limit(BACKEND), 0)


class SharedHostTests(SynchronousTestCase):
    """Inbounds sharing a backend: the largest idleConn of those running."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = HTTPClientPool(self.reactor)
        factories: dict[str, IOutboundFactory] = {"http": HTTPOutboundFactory("http")}
        self.controller = Controller(self.reactor, self.pool, factories=factories)

    def done(self, change: Coroutine[Any, Any, object]) -> None:
        """Run a controller change that completes at once."""
        self.successResultOf(Deferred.fromCoroutine(change))

    def test_an_inbound_with_a_large_idle_conn_is_not_starved(self) -> None:
        small, large = inbounds(("small", 8), ("large", 1024))
        self.done(self.controller.add_inbound(small))
        self.done(self.controller.add_inbound(large))
        self.assertEqual(self.pool.idle_limit(BACKEND), 1024)
        # Whichever inbound starts or changes last.
        self.done(self.controller.update_inbound(inbounds(("small", 9))[0]))
        self.assertEqual(self.pool.idle_limit(BACKEND), 1024)

    def test_the_limit_shrinks_when_the_largest_goes(self) -> None:
        small, large = inbounds(("small", 8), ("large", 1024))
        self.done(self.controller.add_inbound(small))
        self.done(self.controller.add_inbound(large))
        self.done(self.controller.remove_inbound("large"))
        self.assertEqual(self.pool.idle_limit(BACKEND), 8)
        self.done(self.controller.update_inbound(inbounds(("small", 4))[0]))
        self.assertEqual(self.pool.idle_limit(BACKEND), 4)
        self.done(self.controller.remove_inbound("small"))
        self.assertEqual(self.pool.idle_limit(BACKEND), 0)
