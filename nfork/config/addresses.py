"""Listen addresses and outbound addresses: gonfork's forms and ours.

An inbound's C{listen} is either gonfork's C{host:port} (":9080",
"127.0.0.1:9080", "[::1]:9080") or a Twisted server endpoint description
("tcp:9080:interface=127.0.0.1", "unix:/run/nfork.sock").  An outbound's
address is C{host:port} (plain HTTP) or a URL C{scheme://host[:port][/path]}.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from attrs import frozen
from twisted.internet.endpoints import serverFromString

from nfork.config.errors import quote

__all__ = [
    "OutboundAddress",
    "listen_key",
    "listen_to_endpoint",
    "parse_outbound_address",
]

_PORT = re.compile(r"[0-9]{1,5}")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]:([^:]*)")
_HOST_PORT = re.compile(r"([^:\[\]]*):([^:]*)")
_ENDPOINT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_+.-]*")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# RFC 3986 path characters (pchar and "/").
_HTTP_PATH = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@%]*)*")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TCP_TYPES = {"tcp": "0.0.0.0", "ssl": "0.0.0.0", "tcp6": "::"}
"""Endpoint types that bind a TCP port, with the address they bind by default."""


def _port(text: str, what: str) -> int:
    """Parse a decimal port number 0-65535."""
    if not _PORT.fullmatch(text):
        if text == "":
            raise ValueError(f"missing port number in {what}")
        raise ValueError(f"invalid port {quote(text)} in {what}")
    port = int(text)
    if port > 65535:
        raise ValueError(f"port {port} out of range 0-65535 in {what}")
    return port


def _escape(value: str) -> str:
    """Escape a value for a Twisted endpoint description."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _split_description(description: str) -> tuple[list[str], dict[str, str]]:
    """Split an endpoint description as Twisted does: C{a:b:k=v} with C{\\} escapes."""
    parts: list[list[str]] = [[""]]
    escaped = False
    for char in description:
        if escaped:
            parts[-1][-1] += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append([""])
        elif char == "=" and len(parts[-1]) == 1:
            parts[-1].append("")
        else:
            parts[-1][-1] += char
    if escaped:
        raise ValueError(
            f"invalid listen address {quote(description)} (ends with a lone backslash)"
        )
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in parts:
        if len(part) == 1:
            args.append(part[0])
        else:
            kwargs[part[0]] = part[1]
    return args, kwargs


@frozen
class _Listen:
    """What a listen value means: its endpoint description and its identity."""

    endpoint: str
    key: tuple[object, ...]


def _tcp_key(interface: str, port: int) -> tuple[object, ...]:
    if port == 0:
        # An ephemeral port is a fresh port every time: a unique object makes
        # sure no two keys are ever equal.
        return ("tcp", interface, 0, object())
    return ("tcp", interface, port)


def _canonical_ip(text: str) -> str:
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text


def _gonfork_listen(listen: str) -> _Listen | None:
    """Interpret gonfork's C{host:port}, or return None if C{listen} is not one."""
    bracketed = _BRACKETED.fullmatch(listen)
    if bracketed:
        host, port_text = bracketed.groups()
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"invalid IPv6 address {quote(host)} in listen address {quote(listen)}"
            ) from None
        port = _port(port_text, f"listen address {quote(listen)}")
        endpoint = f"tcp6:{port}:interface={_escape(host)}"
        return _Listen(endpoint, _tcp_key(address.compressed, port))
    plain = _HOST_PORT.fullmatch(listen)
    if not plain:
        return None
    host, port_text = plain.groups()
    if host == "localhost":
        host = "127.0.0.1"
    elif host != "":
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if _ENDPOINT_TYPE.fullmatch(host) and "." not in host:
                return None  # perhaps a Twisted endpoint type, as in "tcp:9080"
            raise ValueError(
                f"invalid listen address {quote(listen)} (the host must be "
                'an IP address or "localhost", not a host name)'
            ) from None
    port = _port(port_text, f"listen address {quote(listen)}")
    if host == "":
        return _Listen(f"tcp:{port}", _tcp_key("0.0.0.0", port))
    return _Listen(f"tcp:{port}:interface={host}", _tcp_key(host, port))


def _twisted_listen(listen: str) -> _Listen:
    """Check a Twisted server endpoint description and compute its key."""
    endpoint_type = listen.split(":", 1)[0]
    if ":" not in listen or not _ENDPOINT_TYPE.fullmatch(endpoint_type):
        raise ValueError(
            f'invalid listen address {quote(listen)} (expected ":port", '
            '"ip:port", "[ipv6]:port" or a Twisted endpoint description such '
            'as "tcp:9080:interface=127.0.0.1")'
        )
    args, kwargs = _split_description(listen)
    kind = args[0].lower()
    if kind in _TCP_TYPES:
        port_text = args[1] if len(args) > 1 else kwargs.get("port", "")
        port = _port(port_text, f"listen address {quote(listen)}")
        interface = kwargs.get("interface", "") or _TCP_TYPES[kind]
        if interface == "localhost":
            interface = "127.0.0.1"
        key = _tcp_key(_canonical_ip(interface), port)
    elif kind == "unix":
        path = args[1] if len(args) > 1 else kwargs.get("address", "")
        if path == "":
            raise ValueError(f"missing socket path in listen address {quote(listen)}")
        key = ("unix", os.path.abspath(path))
    else:
        key = (kind, listen)
    dummy_reactor: Any = object()
    try:
        serverFromString(dummy_reactor, listen)
    except Exception as e:
        if str(e).startswith("Unknown endpoint type"):
            raise ValueError(
                f"invalid listen address {quote(listen)} (unknown endpoint "
                f"type {quote(endpoint_type)}; a host must be an IP address "
                'or "localhost")'
            ) from None
        reason = " ".join(str(e).split())  # keep the message on one line
        raise ValueError(
            f"invalid listen address {quote(listen)} (Twisted rejects this "
            f"endpoint description: {type(e).__name__}: {reason})"
        ) from None
    return _Listen(listen, key)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _listen(listen: str) -> _Listen:
    if not isinstance(listen, str):
        raise TypeError(f"a listen address must be a string, not {type(listen)}")
    if listen == "":
        raise ValueError('empty listen address (expected e.g. ":9080")')
    if _CONTROL.search(listen):
        raise ValueError(
            f"invalid listen address {quote(listen)} (contains spaces or "
            "control characters)"
        )
    if _PORT.fullmatch(listen):
        raise ValueError(
            f'invalid listen address {quote(listen)} (did you mean ":{listen}"?)'
        )
    if _is_ipv6(listen.rpartition(":")[0]):
        raise ValueError(
            f"invalid listen address {quote(listen)} (write IPv6 addresses in "
            'brackets, as in "[::1]:9080")'
        )
    return _gonfork_listen(listen) or _twisted_listen(listen)


def listen_to_endpoint(listen: str) -> str:
    """Convert a C{listen} value into a Twisted server endpoint description.

    ":9080" gives "tcp:9080", "127.0.0.1:9080" gives
    "tcp:9080:interface=127.0.0.1", "[::1]:9080" gives
    "tcp6:9080:interface=\\:\\:1", and "localhost" stands for 127.0.0.1.
    A value already in Twisted's syntax is returned unchanged once
    C{serverFromString} accepts it.  Port 0 (any free port) is allowed.

    @raise ValueError: with a message naming the problem.
    """
    return _listen(listen).endpoint


def listen_key(listen: str) -> tuple[object, ...]:
    """A key identifying the address C{listen} binds, to detect two inbounds on it.

    Two values that bind the same address give equal keys (":9080" and
    "tcp:9080"; "127.0.0.1:9080" and "tcp:9080:interface=127.0.0.1").  A key
    for port 0 is never equal to any other key, not even one computed from
    the same value, since each listener gets its own free port.

    @raise ValueError: as L{listen_to_endpoint}.
    """
    return _listen(listen).key


@frozen
class OutboundAddress:
    """Where an outbound sends its copies, parsed from gonfork's address string."""

    scheme: str
    """Lower-case URL scheme: "http", "https", or one handled by a plugin."""
    host: str
    """Host name or IP address; IPv6 addresses without brackets."""
    port: int
    """The port; the scheme's default when absent (0 for unknown schemes)."""
    path_prefix: str
    """Prepended to every request path: "" or e.g. "/api" (no trailing slash).
    For other schemes than HTTP(S) it is the URL's path as given."""
    raw: str
    """The address exactly as written in the configuration."""

    @property
    def host_header(self) -> bytes:
        """The C{Host} header the backend expects: host, and port unless default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == _DEFAULT_PORTS.get(self.scheme, 0):
            return host.encode("ascii")
        return f"{host}:{self.port}".encode("ascii")


def _destination_port(port_text: str, text: str) -> int:
    port = _port(port_text, f"address {quote(text)}")
    if port == 0:
        raise ValueError(f"port 0 is not a valid destination in address {quote(text)}")
    return port


def _check_host(host: str, text: str) -> str:
    """Validate a host (IPv6 in brackets) and return it without brackets."""
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"unclosed '[' in address {quote(text)}")
        inner = host[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(
                f"invalid IPv6 address {quote(inner)} in address {quote(text)}"
            ) from None
        return inner
    if ":" in host:
        raise ValueError(
            f"invalid address {quote(text)} (write IPv6 addresses in "
            'brackets, as in "[::1]:8080")'
        )
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(f"invalid host {quote(host)} in address {quote(text)}")
    return host


def _split_host_port(hostport: str, text: str) -> tuple[str, str | None]:
    """Split C{host[:port]}, where host may be a bracketed IPv6 address."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1:
            raise ValueError(f"unclosed '[' in address {quote(text)}")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest == "":
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {quote(rest)} in address {quote(text)}")
        return host, rest[1:]
    if hostport.count(":") > 1:
        raise ValueError(
            f"invalid address {quote(text)} (write IPv6 addresses in "
            'brackets, as in "[::1]:8080")'
        )
    host, colon, port = hostport.partition(":")
    return host, (port if colon else None)


def _parse_url(text: str) -> OutboundAddress:
    scheme, _, rest = text.partition("://")
    if not _SCHEME.fullmatch(scheme):
        raise ValueError(f"invalid scheme {quote(scheme)} in address {quote(text)}")
    scheme = scheme.lower()
    http = scheme in _DEFAULT_PORTS
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    path = tail.split("?", 1)[0].split("#", 1)[0]
    if "@" in authority:
        raise ValueError(
            f"invalid address {quote(text)} (user names and passwords are "
            "not supported in addresses)"
        )
    host_text, port_text = _split_host_port(authority, text)
    if host_text == "":
        if http:
            raise ValueError(f"missing host in address {quote(text)}")
        host = ""
    else:
        host = _check_host(host_text, text)
    if port_text is None:
        port = _DEFAULT_PORTS.get(scheme, 0)
    else:
        port = _destination_port(port_text, text)
    if http:
        if path != tail:
            raise ValueError(
                f"invalid address {quote(text)} (an outbound address cannot "
                "have a query string or a fragment)"
            )
        if not _HTTP_PATH.fullmatch(path):
            raise ValueError(f"invalid path {quote(path)} in address {quote(text)}")
        path = path.rstrip("/")
    return OutboundAddress(scheme, host, port, path, text)


def parse_outbound_address(text: str) -> OutboundAddress:
    """Parse an outbound address: "host:port" (plain HTTP) or "scheme://...".

    "localhost:8080" and "[::1]:8080" are HTTP; "http://h:1/prefix/" sends
    to C{/prefix/...}; "https://h" uses port 443.  Other schemes
    ("file:///var/log/x.jsonl", "tcp://127.0.0.1:5000") are kept for the
    plugins that handle them, with the URL's path in C{path_prefix}.

    @raise ValueError: with a message naming the problem.
    """
    if not isinstance(text, str):
        raise TypeError(f"an address must be a string, not {type(text)}")
    if text == "":
        raise ValueError('empty address (expected "host:port" or a URL)')
    if not text.isascii() or _CONTROL.search(text):
        raise ValueError(
            f"invalid address {quote(text)} (contains spaces, control "
            "characters or non-ASCII characters)"
        )
    if "://" in text:
        return _parse_url(text)
    if "/" in text or "?" in text or "#" in text or "@" in text:
        raise ValueError(
            f'invalid address {quote(text)} (expected "host:port" or '
            '"scheme://host[:port][/path]")'
        )
    host_text, port_text = _split_host_port(text, text)
    if host_text == "":
        raise ValueError(f"missing host in address {quote(text)}")
    host = _check_host(host_text, text)
    if port_text is None:
        raise ValueError(
            f'missing port in address {quote(text)} (expected "host:port" or '
            f'"http://{text}")'
        )
    port = _destination_port(port_text, text)
    return OutboundAddress("http", host, port, "", text)
