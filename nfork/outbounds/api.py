"""The extension point: what an outbound plugin implements and may use.

The zope.interface declarations (L{IOutbound}, L{IOutboundFactory},
L{IOutboundValidator}), the L{OutboundContext} a factory builds with, the
helpers that check a plugin's options, and the messages an outbound receives
and answers with.  A third-party plugin needs nothing else from nfork.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

from nfork.config import OUTBOUND_KEYS, ConfigError, OutboundConfig
from nfork.config.errors import check_at_most, config_error, unknown_key
from nfork.proxy.client import HTTPClientPool
from nfork.proxy.messages import (
    AnswerReceiver,
    AnswerStream,
    CopyDropped,
    ProxyRequest,
    ProxyResponse,
)

__all__ = [
    "AnswerReceiver",
    "AnswerStream",
    "ConfigError",
    "CopyDropped",
    "IOutbound",
    "IOutboundFactory",
    "IOutboundValidator",
    "IStreamingOutbound",
    "OutboundConfig",
    "OutboundContext",
    "ProxyRequest",
    "ProxyResponse",
    "check_option_names",
    "integer_option",
    "string_option",
]


class IOutbound(Interface):
    """A destination for copies of inbound requests."""

    gives_response = Attribute(
        "True when send() fires with a real HTTP response that may be "
        "forwarded to a client; False for sinks, which can never be active."
    )

    def send(request: ProxyRequest, keep_body: bool) -> Deferred[ProxyResponse | None]:
        """Send one request copy.

        Fires with the response, or with None for a sink that accepted the
        copy, or fails with the reason the request could not be completed
        (L{nfork.proxy.messages.CopyDropped} when the outbound shed it on purpose,
        counted as C{dropped}; any other failure is counted as an error).
        Cancelling the Deferred abandons the request (and its connection).
        With C{keep_body} false the response body is read to the end and
        dropped, and the response carries an empty body.

        Called on the reactor thread for every copy: it must not block.  A
        sink fires at once; what happens to a copy after that (a later
        write) is its own business and does not reach the stats.
        """

    def close() -> Deferred[None]:
        """Release every resource (connections, files); fires when done.

        Called when the outbound is removed or replaced, and when nfork
        stops (which waits for the Deferred); a sink writes out what it
        buffered.  Copies still pending may be abandoned.
        """


class IStreamingOutbound(IOutbound):
    """Optional for an L{IOutbound}: answers that stream, head first.

    nfork calls L{send_streaming} instead of L{IOutbound.send} on outbounds
    that provide it (the built-in HTTP outbound does), so that the client
    gets the active outbound's status and headers as soon as they arrive and
    its body as it arrives, and C{timeout} bounds the time to the first
    byte.  Outbounds that do not provide it are answered whole, as before.
    """

    def send_streaming(
        request: ProxyRequest, keep_body: bool
    ) -> Deferred[ProxyResponse | None]:
        """Send one request copy; fire once the answer's head is in.

        As L{IOutbound.send}, except that an answer whose body is not
        complete with its head fires with a L{ProxyResponse} whose C{body}
        holds what came with the head and whose C{stream}
        (L{AnswerStream}) delivers the rest once started: every piece to
        L{AnswerReceiver.body}, then L{AnswerReceiver.end} or
        L{AnswerReceiver.fail}.  The stream may be paused (stop reading the
        backend: the client is slower), resumed and cancelled (abandon the
        answer and its connection).  With C{keep_body} false the C{body} of
        the response is empty and the pieces delivered, if any, are dropped
        (they tell that the body is moving).  A complete answer fires whole,
        with no stream.
        """


class IOutboundFactory(IPlugin):
    """Builds outbounds for one URL scheme; found with twisted.plugin.

    Providers live in the C{nfork.plugins} package (any distribution may
    install a module there) and are listed by C{getPlugins(IOutboundFactory,
    nfork.plugins)}.  A factory whose outbounds take options also provides
    L{IOutboundValidator}.  See C{docs/plugins.md}.
    """

    scheme = Attribute("The URL scheme this factory handles, e.g. 'http'.")
    gives_response = Attribute(
        "Whether the outbounds it builds answer with HTTP responses "
        "(False for sinks, which cannot be active)."
    )

    def build(config: OutboundConfig, context: OutboundContext) -> IOutbound:
        """Build the outbound described by C{config}, already validated.

        C{config.address.scheme} is this factory's scheme; C{context} holds
        the reactor, the shared connection pool and the inbound's name.
        Start what the outbound needs (connections, timers) here; its
        L{IOutbound.close} stops it.
        """


class IOutboundValidator(Interface):
    """Optional for an L{IOutboundFactory}: checks an outbound before building.

    A factory that also provides this interface takes options: the keys of
    the outbound object that nfork itself does not know, in
    C{config.options}.  For a factory that does not, any option is refused
    as an unknown key.
    """

    def validate(config: OutboundConfig) -> None:
        """Check C{config}'s address and options, without building anything.

        Called when a configuration is loaded (C{twistd nfork} refuses to
        start) and before every L{IOutboundFactory.build}.  Refuse the
        options this factory does not take (see
        L{nfork.outbounds.registry.check_option_names}).

        @raise nfork.config.ConfigError: C{ConfigError(problem, key=key)}
            naming the key at fault (C{"addr"} for the address); nfork adds
            the inbound and the outbound to the message.
        """


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
    """The inbound's C{idleConn}: idle keep-alive connections to keep per
    backend host.  The HTTP outbound registers it with the pool
    (L{HTTPClientPool.allow_idle}), which keeps the largest standing."""


# -- helpers for factories checking their options --------------------------


def check_option_names(config: OutboundConfig, known: Iterable[str]) -> None:
    """Refuse an option of C{config} not in C{known}, suggesting a close name.

    The suggestion considers nfork's own keys too, so that C{"sampel"} on a
    sink is reported as a typo of C{"sample"}.

    @raise ConfigError: naming the unknown key.
    """
    names = [*OUTBOUND_KEYS, *known]
    for key in config.options:
        if key not in names:
            raise unknown_key(key, names)


def integer_option(
    config: OutboundConfig,
    key: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    """The integer option C{key} of C{config}, or C{default} when absent.

    @raise ConfigError: if it is not an integer of at least C{minimum}, or
        is above C{maximum} (the message names the bound).
    """
    value = config.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise config_error(
            f"expected an integer of at least {minimum}, got {json.dumps(value)}",
            key=key,
        )
    if maximum is not None:
        check_at_most(value, maximum, key)
    return value


def string_option(config: OutboundConfig, key: str, default: str) -> str:
    """The string option C{key} of C{config}, or C{default} when absent.

    @raise ConfigError: if it is not a string.
    """
    value = config.options.get(key, default)
    if not isinstance(value, str):
        raise config_error(f"expected a string, got {json.dumps(value)}", key=key)
    return value
