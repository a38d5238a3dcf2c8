"""An nfork outbound plugin: one syslog message (RFC 5424) over UDP per request.

A complete example of a custom outbound, explained step by step in
docs/plugins.md.  To install it, put this file in a directory named
C{nfork/plugins/} (without an C{__init__.py}) on Python's path, or ship it
in your own distribution as C{nfork/plugins/syslog_sink.py}.  Then:

    "out": {
      "prod": "localhost:8080",
      "audit": {"addr": "syslog://127.0.0.1:514", "facility": 16, "appName": "shop"}
    }

Each request copy becomes a message such as (inbound "foo", facility 16)

    <134>1 2025-01-31T12:00:00.123456Z - shop - foo - POST /orders
    client=192.0.2.7 bytes=42

on one line.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from nfork.outbounds.api import (
    ConfigError,
    IOutbound,
    IOutboundFactory,
    IOutboundValidator,
    OutboundConfig,
    OutboundContext,
    ProxyRequest,
    ProxyResponse,
    check_option_names,
    integer_option,
    string_option,
)

DEFAULT_PORT = 514
DEFAULT_FACILITY = 16
"""local0."""
SEVERITY_INFO = 6
MAX_MESSAGE = 2048
"""Bytes every syslog receiver over UDP accepts (RFC 5426)."""
_APP_NAME = re.compile(r"[!-~]{1,48}")
"""RFC 5424 APP-NAME: 1 to 48 printable ASCII characters, no space."""


class SyslogProtocol(DatagramProtocol):
    """A UDP socket "connected" to one syslog server."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def startProtocol(self) -> None:
        """Fix the destination once: every write goes there."""
        assert self.transport is not None
        self.transport.connect(self.host, self.port)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Syslog servers do not answer."""

    def connectionRefused(self) -> None:
        """Nothing listens (an ICMP error): syslog over UDP is best effort."""

    def send(self, message: bytes) -> None:
        """Send one datagram."""
        assert self.transport is not None
        self.transport.write(message, None)


@implementer(IOutbound)
class SyslogOutbound:
    """Turns every request copy into a syslog message."""

    gives_response = False
    """A sink: it cannot be the active outbound."""

    def __init__(
        self,
        *,
        reactor: Any,
        host: str,
        port: int,
        facility: int,
        app_name: str,
        inbound: str,
    ) -> None:
        self._priority = facility * 8 + SEVERITY_INFO
        self._app_name = app_name
        self._msgid = re.sub(r"[^!-~]", "_", inbound)[:32] or "-"
        self._protocol = SyslogProtocol(host, port)
        interface = "::" if ":" in host else "0.0.0.0"
        self._port = reactor.listenUDP(0, self._protocol, interface=interface)

    def send(
        self, request: ProxyRequest, keep_body: bool
    ) -> Deferred[ProxyResponse | None]:
        """Send the message now; None means "accepted", as for every sink."""
        try:
            self._protocol.send(self.format(request))
        except OSError as e:  # e.g. the socket buffer is full: an error
            return fail(e)
        return succeed(None)

    def format(self, request: ProxyRequest) -> bytes:
        """The RFC 5424 message for C{request}, cut to L{MAX_MESSAGE} bytes."""
        time = datetime.fromtimestamp(request.received, tz=timezone.utc)
        timestamp = time.isoformat(timespec="microseconds").replace("+00:00", "Z")
        header = (
            f"<{self._priority}>1 {timestamp} - {self._app_name} - {self._msgid} - "
        )
        text = (
            f"{request.method.decode('latin-1')} {request.uri.decode('latin-1')} "
            f"client={request.client or '-'} bytes={len(request.body)}"
        )
        return (header + text).encode("utf-8")[:MAX_MESSAGE]

    def close(self) -> Deferred[None]:
        """Close the socket."""
        return maybeDeferred(self._port.stopListening)


@implementer(IOutboundFactory, IOutboundValidator)
@frozen
class SyslogOutboundFactory:
    """Builds L{SyslogOutbound}s for C{syslog://ip[:port]} addresses."""

    scheme: str = "syslog"
    gives_response: bool = False

    def validate(self, config: OutboundConfig) -> None:
        """Refuse what would fail later: a host name, a path, bad options."""
        address = config.address
        try:
            ipaddress.ip_address(address.host)
        except ValueError:
            raise ConfigError(
                f'expected "syslog://ip[:port]", got "{address.raw}" (UDP needs '
                "an IP address)",
                key="addr",
            ) from None
        if address.path_prefix not in ("", "/"):
            raise ConfigError(
                f'a syslog address has no path: "{address.raw}"', key="addr"
            )
        check_option_names(config, ("facility", "appName"))
        facility = integer_option(config, "facility", DEFAULT_FACILITY)
        if facility > 23:
            raise ConfigError(
                f"expected a syslog facility from 0 to 23, got {facility}",
                key="facility",
            )
        app_name = string_option(config, "appName", "nfork")
        if not _APP_NAME.fullmatch(app_name):
            raise ConfigError(
                "expected 1 to 48 printable ASCII characters without spaces",
                key="appName",
            )

    def build(self, config: OutboundConfig, context: OutboundContext) -> IOutbound:
        """Open the UDP socket; validate() has checked everything."""
        address = config.address
        return SyslogOutbound(
            reactor=context.reactor,
            host=address.host,
            port=address.port or DEFAULT_PORT,
            facility=integer_option(config, "facility", DEFAULT_FACILITY),
            app_name=string_option(config, "appName", "nfork"),
            inbound=context.inbound,
        )


syslog = SyslogOutboundFactory()
"""The plugin itself: twisted.plugin finds module-level IOutboundFactory providers."""
