"""The registry of outbound factories: installed plugins, found by scheme.

Every outbound, built-in or third-party, is built by an L{IOutboundFactory}
plugin found in C{nfork.plugins}; the checks here (unknown scheme, a sink as
active, the factory's own validation) run both at startup and whenever the
controller builds outbounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from twisted.plugin import getPlugins

from nfork.config import InboundConfig, OutboundConfig
from nfork.config.errors import config_error, plugin_error_context, quote
from nfork.outbounds.api import (
    IOutboundFactory,
    IOutboundValidator,
    check_option_names,
)


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
        raise config_error(
            f"unknown address scheme {quote(config.address.scheme)} "
            f"(available: {', '.join(sorted(factories))})",
            inbound=inbound,
            outbound=config.name,
            key="addr",
        )
    with plugin_error_context(inbound, config.name):
        if IOutboundValidator.providedBy(factory):
            IOutboundValidator(factory).validate(config)
        else:
            check_option_names(config, ())
    return factory


def check_inbound(
    config: InboundConfig, factories: Mapping[str, IOutboundFactory]
) -> dict[str, IOutboundFactory]:
    """Check that every outbound of C{config} can be built; their factories.

    Every scheme must have a factory, which validates its outbound, and the
    active outbound and those named in C{compare} (candidates, baseline)
    must give HTTP responses (a sink cannot be active nor compared).

    @raise ConfigError: for the first problem found.
    """
    chosen: dict[str, IOutboundFactory] = {}
    for out in config.outbounds:
        factory = factory_for(config.name, out, factories)
        if out.name == config.active and not factory.gives_response:
            raise config_error(
                f"outbound {quote(out.name)} ({out.address.scheme}://) gives no "
                "HTTP response and cannot be active",
                inbound=config.name,
                outbound=out.name,
                mention_outbound=False,
                key="active",
            )
        chosen[out.name] = factory
    for key, name in config.compare.named_outbounds() if config.compare else ():
        named = config.outbound(name)
        if named is not None and not chosen[name].gives_response:
            raise config_error(
                f"outbound {quote(name)} ({named.address.scheme}://) gives no "
                "HTTP response and cannot be compared",
                inbound=config.name,
                key=key,
            )
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
