"""Outbound implementations and the registry that builds them from config.

The built-in HTTP(S) outbound sends request copies over the shared
L{HTTPClientPool}.  Every outbound, built-in or third-party, is built by an
L{IOutboundFactory} plugin found in C{nfork.plugins}.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.plugin import getPlugins
from zope.interface import implementer

from nfork.config import ConfigError, OutboundConfig
from nfork.httpclient import HTTPClientPool, Target
from nfork.interfaces import IOutbound, IOutboundFactory
from nfork.messages import ProxyRequest, ProxyResponse


@frozen
class OutboundContext:
    """What an outbound factory may use to build an outbound."""

    reactor: Any
    """The reactor (IReactorTCP, IReactorTime, ...)."""
    pool: HTTPClientPool
    """The process-wide pool of persistent HTTP connections."""
    inbound: str
    """Name of the inbound the outbound belongs to."""
    idle_conn: int = 64
    """Idle keep-alive connections to keep per backend host."""


@implementer(IOutbound)
class HTTPOutbound:
    """Sends request copies to an HTTP(S) backend over the shared pool."""

    gives_response = True

    def __init__(self, pool: HTTPClientPool, target: Target, idle_conn: int) -> None:
        self._pool = pool
        self.target = target
        self._idle_conn = idle_conn

    def send(
        self, request: ProxyRequest, keep_body: bool
    ) -> Deferred[ProxyResponse | None]:
        """Send the copy over a pooled connection (see L{IOutbound.send})."""
        sent: Deferred[Any] = self._pool.request(
            self.target,
            request.method,
            request.uri,
            request.headers,
            request.body,
            keep_body=keep_body,
            max_idle=self._idle_conn,
        )
        return sent

    def close(self) -> Deferred[None]:
        """Nothing to release: connections belong to the shared pool."""
        return succeed(None)


@implementer(IOutboundFactory)
@frozen
class HTTPOutboundFactory:
    """Builds L{HTTPOutbound}s for C{http://} or C{https://} addresses."""

    scheme: str
    gives_response: bool = True

    def build(self, config: OutboundConfig, context: OutboundContext) -> IOutbound:
        """Build the outbound for C{config}'s host, port and path prefix."""
        address = config.address
        target = Target(
            scheme=address.scheme,
            host=address.host,
            port=address.port,
            host_header=address.host_header,
            path_prefix=address.path_prefix.encode("utf-8"),
        )
        return HTTPOutbound(context.pool, target, context.idle_conn)


def outbound_factories() -> dict[str, IOutboundFactory]:
    """Every installed outbound factory, by scheme."""
    import nfork.plugins

    return {
        factory.scheme: factory
        for factory in getPlugins(IOutboundFactory, nfork.plugins)
    }


def factory_for(
    inbound: str, config: OutboundConfig, factories: dict[str, IOutboundFactory]
) -> IOutboundFactory:
    """The factory for C{config}'s scheme, or a ConfigError listing the known ones."""
    factory = factories.get(config.address.scheme)
    if factory is None:
        known = ", ".join(sorted(factories))
        raise ConfigError(
            f'inbound "{inbound}": key "out": outbound "{config.name}": '
            f'unknown address scheme "{config.address.scheme}" '
            f"(available: {known})",
            inbound=inbound,
            key="out",
        )
    return factory
