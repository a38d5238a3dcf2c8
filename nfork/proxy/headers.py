"""Header rewriting between the client and the outbounds.

A proxy must drop hop-by-hop headers (RFC 9110 section 7.6.1) in both
directions and otherwise pass headers through untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

from nfork.proxy.messages import Headers

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Header names (lower case) that concern one connection only."""

_RECOMPUTED = frozenset({b"host", b"content-length", b"expect"})
"""Request headers each outbound sets itself (C{Expect} was already answered)."""

_FORWARDED = frozenset({b"x-nfork", b"x-forwarded-proto", b"x-forwarded-host"})
"""Request headers nfork replaces with its own values."""


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Names listed in C{Connection} headers, which are hop-by-hop too."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def _is_hop_by_hop(lower_name: bytes, listed: frozenset[bytes]) -> bool:
    return (
        lower_name in HOP_BY_HOP
        or lower_name.startswith(b"proxy-")
        or lower_name in listed
    )


def outbound_request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    client_ip: str,
    scheme: bytes,
) -> Headers:
    """The headers every outbound receives for a client request.

    Hop-by-hop headers, C{Host}, C{Content-Length} and C{Expect} are
    removed; C{X-Nfork: true} is added; the client address is appended to
    C{X-Forwarded-For}; C{X-Forwarded-Proto} and C{X-Forwarded-Host} are set
    from the client's request.
    """
    raw = list(headers)
    listed = _connection_tokens(raw)
    kept: list[tuple[bytes, bytes]] = []
    forwarded_for: list[bytes] = []
    host = b""
    for name, value in raw:
        lower = name.lower()
        if lower == b"host":
            host = value
        elif lower == b"x-forwarded-for":
            forwarded_for.append(value)
        elif not (
            lower in _RECOMPUTED or lower in _FORWARDED or _is_hop_by_hop(lower, listed)
        ):
            kept.append((name, value))
    if client_ip:
        forwarded_for.append(client_ip.encode("ascii", "replace"))
    kept.append((b"X-Nfork", b"true"))
    if forwarded_for:
        kept.append((b"X-Forwarded-For", b", ".join(forwarded_for)))
    kept.append((b"X-Forwarded-Proto", scheme))
    if host:
        kept.append((b"X-Forwarded-Host", host))
    return tuple(kept)


def client_response_headers(headers: Headers) -> Headers:
    """The active outbound's response headers as the client receives them.

    Hop-by-hop headers and C{Content-Length} are removed: the inbound sets
    the length of the body it actually sends.
    """
    listed = _connection_tokens(headers)
    return tuple(
        (name, value)
        for name, value in headers
        if not (
            (lower := name.lower()) == b"content-length"
            or _is_hop_by_hop(lower, listed)
        )
    )


def header_value(headers: Headers, lower_name: bytes) -> bytes | None:
    """The first value of a header, by lower-case name, or None."""
    for name, value in headers:
        if name.lower() == lower_name:
            return value
    return None
