"""The request copy an inbound hands to its outbounds, and what comes back."""

from __future__ import annotations

from attrs import frozen

Headers = tuple[tuple[bytes, bytes], ...]
"""Raw header lines in arrival order; names keep their original case."""


@frozen
class ProxyRequest:
    """One client request, ready to be copied to every outbound.

    The headers are already cleaned for forwarding: hop-by-hop headers and
    C{Host} removed, C{X-Nfork} and C{X-Forwarded-*} added.  Each outbound
    adds its own C{Host} and C{Content-Length}.
    """

    method: bytes
    uri: bytes
    """Path and query string exactly as the client sent them."""
    headers: Headers
    body: bytes
    client: str = ""
    """The client's address, for sinks that record traffic."""
    received: float = 0.0
    """Reactor time at which the request was received."""


class CopyDropped(Exception):
    """An outbound shed a copy on purpose (a full buffer, too many in flight).

    The copy is counted as C{dropped} in the outbound's stats, not as an error.
    """


@frozen
class ProxyResponse:
    """An outbound's answer.

    C{headers} are as the backend sent them (hop-by-hop ones included); the
    inbound filters them before answering the client.  C{body} is empty when
    the caller asked for the body to be discarded.
    """

    code: int
    phrase: bytes
    headers: Headers
    body: bytes
