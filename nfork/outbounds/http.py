"""The built-in HTTP(S) outbound: request copies over the shared connection pool.

An C{https://} outbound takes TLS options (C{caFile}, C{serverName},
C{clientCert}, C{clientKey}, C{insecure}); its factory checks them, files
included, before anything is built.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from nfork.config import OutboundConfig
from nfork.config.errors import config_error
from nfork.config.model import HTTP_OPTION_KEYS
from nfork.outbounds.api import (
    IOutbound,
    IOutboundFactory,
    IOutboundValidator,
    IStreamingOutbound,
    OutboundContext,
    check_option_names,
)
from nfork.proxy.client import (
    HTTPClientPool,
    Target,
    TLSSettings,
    TLSSettingsError,
    check_tls_settings,
)
from nfork.proxy.messages import ProxyRequest, ProxyResponse

__all__ = ["HTTPOutbound", "HTTPOutboundFactory", "tls_settings"]

_KEYS = {
    "ca_file": "caFile",
    "server_name": "serverName",
    "client_cert": "clientCert",
    "client_key": "clientKey",
}
"""L{TLSSettings} fields and the options that set them."""


@implementer(IStreamingOutbound)
class HTTPOutbound:
    """Sends request copies to an HTTP(S) backend over the shared pool.

    While it lives, it asks the pool to keep its inbound's C{idleConn} idle
    connections to the backend; the pool keeps the largest such allowance
    among the outbounds sharing the backend.
    """

    gives_response = True

    def __init__(self, pool: HTTPClientPool, target: Target, idle_conn: int) -> None:
        self._pool = pool
        self.target = target
        self.idle_allowance = pool.allow_idle(target, idle_conn)
        """Its allowance of idle connections, withdrawn by L{close}."""

    def send(
        self, request: ProxyRequest, keep_body: bool
    ) -> Deferred[ProxyResponse | None]:
        """Send the copy over a pooled connection (see L{IOutbound.send})."""
        return self._send(request, keep_body, stream=False)

    def send_streaming(
        self, request: ProxyRequest, keep_body: bool
    ) -> Deferred[ProxyResponse | None]:
        """Send the copy; fire at the answer's head (see L{IStreamingOutbound})."""
        return self._send(request, keep_body, stream=True)

    def _send(
        self, request: ProxyRequest, keep_body: bool, stream: bool
    ) -> Deferred[ProxyResponse | None]:
        """The pool's request for C{request}; a streamed one may carry an upload."""
        sent: Deferred[Any] = self._pool.request(
            self.target,
            request.method,
            request.uri,
            request.headers,
            request.body,
            keep_body=keep_body,
            stream=stream,
            zero_length=request.zero_length,
            upload=request.upload if stream else None,
        )
        return sent

    def close(self) -> Deferred[None]:
        """Withdraw the idle allowance; the connections belong to the pool."""
        self.idle_allowance.withdraw()
        return succeed(None)


def tls_settings(config: OutboundConfig) -> TLSSettings:
    """The TLS settings of C{config}'s options, their types and combinations checked.

    The files are not read here (see L{HTTPOutboundFactory.validate}).

    @raise nfork.config.ConfigError: naming the option at fault.
    """
    options = config.options
    given = [key for key in HTTP_OPTION_KEYS if key in options]
    if given and config.address.scheme != "https":
        raise config_error(
            f"TLS options are for https:// outbounds only, not "
            f"{config.address.scheme}://",
            key=given[0],
        )
    values: dict[str, str | None] = {}
    for field, key in _KEYS.items():
        value = options.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            what = "a host name" if key == "serverName" else "a file path"
            raise config_error(
                f"expected {what} (a non-empty string), got {json.dumps(value)}",
                key=key,
            )
        values[field] = value
    insecure = options.get("insecure", False)
    if not isinstance(insecure, bool):
        raise config_error(
            f"expected true or false, got {json.dumps(insecure)}", key="insecure"
        )
    server_name = values["server_name"]
    if server_name is not None:
        try:
            server_name.encode("idna")
        except UnicodeError:
            raise config_error(
                f"invalid host name {json.dumps(server_name)}", key="serverName"
            ) from None
        if any(c in server_name for c in " /:@[]"):
            raise config_error(
                f"invalid host name {json.dumps(server_name)}", key="serverName"
            )
    if values["client_key"] is not None and values["client_cert"] is None:
        raise config_error(
            'a client key needs its certificate: set "clientCert" too',
            key="clientKey",
        )
    if insecure and values["ca_file"] is not None:
        raise config_error(
            "no certificate is verified with insecure: true; remove one of "
            '"caFile" and "insecure"',
            key="caFile",
        )
    return TLSSettings(insecure=insecure, **values)


@implementer(IOutboundFactory, IOutboundValidator)
@frozen
class HTTPOutboundFactory:
    """Builds L{HTTPOutbound}s for C{http://} or C{https://} addresses.

    Options, for C{https} only: C{caFile} (PEM CA certificates to trust
    instead of the platform's), C{serverName} (the name sent as SNI and
    checked in the certificate), C{clientCert} and C{clientKey} (PEM files
    of a client certificate and its key; the key may be in the certificate's
    file) and C{insecure} (C{true}: no verification; logged as a warning).
    """

    scheme: str
    gives_response: bool = True

    _log = Logger()

    def validate(self, config: OutboundConfig) -> None:
        """Check the options, and that their files can be read and used."""
        check_option_names(config, HTTP_OPTION_KEYS)
        settings = tls_settings(config)
        try:
            check_tls_settings(settings)
        except TLSSettingsError as e:
            raise config_error(str(e), key=_KEYS[e.field]) from None

    def build(self, config: OutboundConfig, context: OutboundContext) -> IOutbound:
        """Build the outbound for C{config}'s host, port, path prefix and TLS."""
        address = config.address
        settings = tls_settings(config)
        if settings.insecure:
            self._log.warn(
                "inbound {inbound}: outbound {outbound}: TLS certificate "
                "verification is OFF (insecure: true): anyone on the path to "
                "{address} can read and change the copies sent there",
                inbound=context.inbound,
                outbound=config.name,
                address=address.raw,
            )
        target = Target(
            scheme=address.scheme,
            host=address.host,
            port=address.port,
            host_header=address.host_header,
            path_prefix=address.path_prefix.encode("utf-8"),
            tls=settings,
        )
        return HTTPOutbound(context.pool, target, context.idle_conn)
