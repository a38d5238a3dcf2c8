"""Header rewriting between the client and the outbounds.

A proxy must drop hop-by-hop headers (RFC 9110 section 7.6.1) in both
directions and otherwise pass headers through untouched.  The
C{X-Forwarded-*} and C{Forwarded} headers describe the hops a request took:
nfork keeps the client's only when the inbound trusts the client
(C{trustForwarded}), and otherwise says itself who the client is.
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

_FORWARDED = frozenset(
    {b"x-nfork", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)
"""Request headers nfork replaces or removes, unless the client is trusted
(then all but C{X-Nfork} are kept)."""

_TOKEN_BYTES = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
"""The bytes of an RFC 9110 token: a C{Forwarded} value made only of these
needs no quotes."""


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
    trusted: bool = False,
    upgrade: bool = False,
) -> Headers:
    """The headers every outbound receives for a client request.

    Hop-by-hop headers, C{Host}, C{Content-Length} and C{Expect} are
    removed; C{X-Nfork: true} is added; the client address is appended to
    C{X-Forwarded-For}.  From a C{trusted} client (one of the inbound's
    C{trustForwarded} networks) C{X-Forwarded-Proto}, C{X-Forwarded-Host}
    and C{Forwarded} are kept, the first two set from the client's request
    only when absent, and C{Forwarded} extended with the client's hop; from
    any other client the first two are set from its request and
    C{Forwarded} is removed.  For an C{upgrade} request (a WebSocket
    handshake) C{Upgrade} is kept and C{Connection: Upgrade} sent.
    """
    raw = list(headers)
    listed = _connection_tokens(raw)
    kept: list[tuple[bytes, bytes]] = []
    forwarded_for: list[bytes] = []
    host = b""
    present: set[bytes] = set()
    for name, value in raw:
        lower = name.lower()
        if lower == b"host":
            host = value
        elif lower == b"x-forwarded-for":
            forwarded_for.append(value)
        elif lower in _FORWARDED:
            if trusted and lower != b"x-nfork" and not _is_hop_by_hop(lower, listed):
                kept.append((name, value))
                present.add(lower)
        elif (upgrade and lower == b"upgrade") or not (
            lower in _RECOMPUTED or _is_hop_by_hop(lower, listed)
        ):
            kept.append((name, value))
    if upgrade:
        kept.append((b"Connection", b"Upgrade"))
    client = client_ip.encode("ascii", "replace")
    if client:
        forwarded_for.append(client)
    kept.append((b"X-Nfork", b"true"))
    if forwarded_for:
        kept.append((b"X-Forwarded-For", b", ".join(forwarded_for)))
    if present:
        if b"x-forwarded-proto" not in present:
            kept.append((b"X-Forwarded-Proto", scheme))
        if host and b"x-forwarded-host" not in present:
            kept.append((b"X-Forwarded-Host", host))
        if b"forwarded" in present:
            kept.append((b"Forwarded", forwarded_element(client, host, scheme)))
        return tuple(kept)
    kept.append((b"X-Forwarded-Proto", scheme))
    if host:
        kept.append((b"X-Forwarded-Host", host))
    return tuple(kept)


def forwarded_element(client: bytes, host: bytes, scheme: bytes) -> bytes:
    """The RFC 7239 C{Forwarded} element for the hop from C{client} to nfork."""
    if not client:
        node = b"unknown"
    elif b":" in client:
        node = b'"[' + client + b']"'
    else:
        node = client
    element = b"for=" + node
    if host:
        element += b";host=" + _forwarded_value(host)
    return element + b";proto=" + scheme


def _forwarded_value(value: bytes) -> bytes:
    """A token as is, anything else as a quoted string (RFC 7239 section 4)."""
    if _TOKEN_BYTES.issuperset(value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


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
