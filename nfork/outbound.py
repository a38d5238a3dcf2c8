"""Outbound implementations and the registry that builds them from config.

The built-in HTTP(S) outbound sends request copies over the shared
L{HTTPClientPool}.  Every outbound, built-in or third-party, is built by an
L{IOutboundFactory} plugin found in C{nfork.plugins}; the checks here
(unknown scheme, a sink as active, the factory's own validation) run both at
startup and whenever the controller builds outbounds.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.plugin import getPlugins
from zope.interface import implementer

from nfork.config import OUTBOUND_KEYS, ConfigError, InboundConfig, OutboundConfig
from nfork.httpclient import HTTPClientPool, Target
from nfork.interfaces import IOutbound, IOutboundFactory, IOutboundValidator
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
    inbound: str, config: OutboundConfig, factories: Mapping[str, IOutboundFactory]
) -> IOutboundFactory:
    """The factory for C{config}'s scheme, once C{config} is found valid for it.

    The factory's L{IOutboundValidator.validate} checks the options; a factory
    without it takes none.

    @raise ConfigError: for an unknown scheme (listing the known ones), or
        the factory's own complaint, with the inbound and outbound added.
    """
    factory = factories.get(config.address.scheme)
    if factory is None:
        known = ", ".join(sorted(factories))
        raise ConfigError(
            f'inbound "{inbound}": outbound "{config.name}": key "addr": '
            f'unknown address scheme "{config.address.scheme}" '
            f"(available: {known})",
            inbound=inbound,
            outbound=config.name,
            key="addr",
        )
    try:
        if IOutboundValidator.providedBy(factory):
            IOutboundValidator(factory).validate(config)
        else:
            check_option_names(config, ())
    except ConfigError as e:
        where = f'inbound "{inbound}": outbound "{config.name}": '
        if e.key is not None and f'"{e.key}"' not in e.problem:
            where += f'key "{e.key}": '
        raise ConfigError(
            where + e.problem, inbound=inbound, outbound=config.name, key=e.key
        ) from None
    return factory


def check_inbound(
    config: InboundConfig, factories: Mapping[str, IOutboundFactory]
) -> dict[str, IOutboundFactory]:
    """Check that every outbound of C{config} can be built; their factories.

    Every scheme must have a factory, which validates its outbound, and the
    active outbound must give HTTP responses (a sink cannot be active).

    @raise ConfigError: for the first problem found.
    """
    chosen: dict[str, IOutboundFactory] = {}
    for out in config.outbounds:
        factory = factory_for(config.name, out, factories)
        if out.name == config.active and not factory.gives_response:
            raise ConfigError(
                f'inbound "{config.name}": key "active": outbound '
                f'"{out.name}" ({out.address.scheme}://) gives no HTTP '
                "response and cannot be active",
                inbound=config.name,
                outbound=out.name,
                key="active",
            )
        chosen[out.name] = factory
    return chosen


def check_inbounds(
    inbounds: Iterable[InboundConfig],
    factories: Mapping[str, IOutboundFactory] | None = None,
) -> None:
    """L{check_inbound} for each of C{inbounds}, as at startup: builds nothing.

    @param factories: by scheme; by default the installed plugins.
    @raise ConfigError: for the first problem found.
    """
    if factories is None:
        factories = outbound_factories()
    for config in inbounds:
        check_inbound(config, factories)


# -- helpers for factories checking their options --------------------------


def check_option_names(config: OutboundConfig, known: Iterable[str]) -> None:
    """Refuse an option of C{config} not in C{known}, suggesting a close name.

    The suggestion considers nfork's own keys too, so that C{"sampel"} on a
    sink is reported as a typo of C{"sample"}.

    @raise ConfigError: naming the unknown key.
    """
    names = [*OUTBOUND_KEYS, *known]
    for key in config.options:
        if key in names:
            continue
        by_lower = {name.lower(): name for name in names}
        close = difflib.get_close_matches(key[:100].lower(), by_lower, n=1)
        if close:
            hint = f'did you mean "{by_lower[close[0]]}"?'
        else:
            hint = "valid keys: " + ", ".join(f'"{name}"' for name in names)
        raise ConfigError(f'unknown key "{key}" ({hint})', key=key)


def integer_option(
    config: OutboundConfig, key: str, default: int, *, minimum: int = 0
) -> int:
    """The integer option C{key} of C{config}, or C{default} when absent.

    @raise ConfigError: if it is not an integer of at least C{minimum}.
    """
    value = config.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"expected an integer of at least {minimum}, got {json.dumps(value)}",
            key=key,
        )
    return value


def string_option(config: OutboundConfig, key: str, default: str) -> str:
    """The string option C{key} of C{config}, or C{default} when absent.

    @raise ConfigError: if it is not a string.
    """
    value = config.options.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {json.dumps(value)}", key=key)
    return value
