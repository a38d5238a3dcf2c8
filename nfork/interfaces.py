"""Extension points of nfork, as zope.interface declarations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

from nfork.messages import ProxyRequest, ProxyResponse

if TYPE_CHECKING:
    from nfork.config import OutboundConfig
    from nfork.outbound import OutboundContext


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
        (L{nfork.messages.CopyDropped} when the outbound shed it on purpose,
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
        L{nfork.outbound.check_option_names}).

        @raise nfork.config.ConfigError: C{ConfigError(problem, key=key)}
            naming the key at fault (C{"addr"} for the address); nfork adds
            the inbound and the outbound to the message.
        """
