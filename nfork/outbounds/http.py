"""The built-in HTTP(S) outbound: request copies over the shared connection pool."""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from nfork.config import OutboundConfig
from nfork.outbounds.api import IOutbound, IOutboundFactory, OutboundContext
from nfork.proxy.client import HTTPClientPool, Target
from nfork.proxy.messages import ProxyRequest, ProxyResponse


@implementer(IOutbound)
class HTTPOutbound:
    """Sends request copies to an HTTP(S) backend over the shared pool.

    While it lives, it asks the pool to keep its inbound's C{idleConn} idle
    connections to the backend; the pool keeps the largest such allowance
    among the outbounds sharing the backend.
    """

    gives_response = True

    def __init__(self, pool: HTTPClientPool, target: Target, idle_conn: int) -> None:
        self._pool = pool
        self.target = target
        self.idle_allowance = pool.allow_idle(target, idle_conn)
        """Its allowance of idle connections, withdrawn by L{close}."""

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
        )
        return sent

    def close(self) -> Deferred[None]:
        """Withdraw the idle allowance; the connections belong to the pool."""
        self.idle_allowance.withdraw()
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
