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
        (L{nfork.messages.CopyDropped} when the outbound shed it on purpose).
        Cancelling the Deferred abandons the request (and its connection).
        With C{keep_body} false the response body is read to the end and
        dropped, and the response carries an empty body.
        """

    def close() -> Deferred[None]:
        """Release every resource (connections, files); fires when done."""


class IOutboundFactory(IPlugin):
    """Builds outbounds for one URL scheme; found with twisted.plugin.

    Providers live in the C{nfork.plugins} package (any distribution may
    install a module there) and are listed by C{getPlugins(IOutboundFactory,
    nfork.plugins)}.
    """

    scheme = Attribute("The URL scheme this factory handles, e.g. 'http'.")
    gives_response = Attribute(
        "Whether the outbounds it builds answer with HTTP responses "
        "(False for sinks, which cannot be active)."
    )

    def build(config: OutboundConfig, context: OutboundContext) -> IOutbound:
        """Build the outbound described by C{config}.

        C{config.address.scheme} is this factory's scheme; C{context} holds
        the reactor and the shared connection pool the outbound may use.
        """
