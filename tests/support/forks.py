"""An inbound fork over fake outbounds and a Clock, reached through its real server."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from nfork.compare.runtime import build_comparer
from nfork.config import InboundConfig
from nfork.proxy.fork import InboundFork, OutboundRoute, Routing
from nfork.proxy.stats import OutboundStats
from tests.support.configs import inbound_config
from tests.support.fakes import FakeOutbound
from tests.support.inbound_client import InboundClient

THREE_BACKENDS = {
    "prod": "127.0.0.1:8080",
    "staging": "127.0.0.1:8081",
    "logging": "127.0.0.1:8082",
}
"""prod (active), staging and logging; nothing listens: the outbounds are fakes."""


def fork_config(**overrides: Any) -> InboundConfig:
    """One inbound forking to L{THREE_BACKENDS} with a 100 ms timeout."""
    return inbound_config(**{"out": THREE_BACKENDS, "timeout": "100ms", **overrides})


class Harness:
    """An inbound fork over fake outbounds and a Clock, and a client to it."""

    def __init__(
        self, config: InboundConfig, outbounds: dict[str, FakeOutbound] | None = None
    ) -> None:
        self.clock = Clock()
        self.outbounds = {out.name: FakeOutbound() for out in config.outbounds}
        self.outbounds.update(outbounds or {})
        routes = {
            out.name: OutboundRoute(
                out, self.outbounds[out.name], OutboundStats(self.clock)
            )
            for out in config.outbounds
        }
        self.routes = routes
        routing = Routing(
            config,
            routes[config.active],
            tuple(r for n, r in routes.items() if n != config.active),
            build_comparer(config, routes, None, self.clock),
        )
        self.fork = InboundFork(routing, self.clock)
        # Any: treq types C{headers} as an invariant dict of bytes | str.
        self.stub: Any = InboundClient(self.fork)

    def __getitem__(self, name: str) -> FakeOutbound:
        return self.outbounds[name]
