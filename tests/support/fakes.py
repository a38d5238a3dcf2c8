"""Test doubles shared by the unit tests."""

from __future__ import annotations

from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from nfork.outbounds.api import IOutbound, IOutboundFactory, OutboundContext
from nfork.proxy.messages import ProxyRequest, ProxyResponse


@define
class SentCopy:
    """One request copy an outbound received, and the means to answer it."""

    request: ProxyRequest
    keep_body: bool
    deferred: Deferred[ProxyResponse | None]
    cancelled: bool = False

    def answer(
        self,
        code: int = 200,
        body: bytes = b"",
        headers: tuple[tuple[bytes, bytes], ...] = (),
        phrase: bytes = b"OK",
    ) -> None:
        """Fire the copy's Deferred with a response."""
        self.deferred.callback(ProxyResponse(code, phrase, headers, body))

    def fail(self, error: Exception) -> None:
        """Fail the copy's Deferred."""
        self.deferred.errback(error)


@implementer(IOutbound)
@define
class FakeOutbound:
    """An outbound whose copies stay pending until the test answers them."""

    gives_response: bool = True
    sent: list[SentCopy] = field(factory=list)
    closed: bool = False

    def send(
        self, request: ProxyRequest, keep_body: bool
    ) -> Deferred[ProxyResponse | None]:
        """Record the copy; the test decides when and how it completes."""

        def cancel(d: Deferred[ProxyResponse | None]) -> None:
            copy.cancelled = True

        copy = SentCopy(request, keep_body, Deferred(cancel))
        self.sent.append(copy)
        return copy.deferred

    def close(self) -> Deferred[None]:
        """Remember that the outbound was closed."""
        self.closed = True
        return succeed(None)

    @property
    def last(self) -> SentCopy:
        """The newest copy received."""
        return self.sent[-1]


@implementer(IOutboundFactory)
@frozen
class FakeFactory:
    """Builds FakeOutbounds and remembers them by name."""

    scheme: str
    built: dict[str, FakeOutbound]
    gives_response: bool = True

    def build(self, config: Any, context: OutboundContext) -> IOutbound:
        """A new FakeOutbound, kept in C{built} under the outbound's name."""
        outbound = FakeOutbound(gives_response=self.gives_response)
        self.built[config.name] = outbound
        return outbound
