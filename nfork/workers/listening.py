"""Listening sockets shared by the worker processes (C{SO_REUSEPORT}).

Every worker listens on the same address with C{SO_REUSEPORT}, and the
kernel spreads the new connections over them.  The parent only reserves each
inbound's address: a socket bound (not listening) with C{SO_REUSEPORT}
resolves port 0 and fails early on an address already in use, yet takes no
connection.
"""

from __future__ import annotations

import socket
from typing import Any

from attrs import define
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory

from nfork.config import InboundConfig

LISTEN_BACKLOG = 511
"""As the single process's inbounds (nginx's default)."""


def tcp_address(reactor: Any, config: InboundConfig) -> tuple[str, int]:
    """The C{(interface, port)} an inbound listens on; TCP only.

    @raise CannotListenError: the inbound listens on something else than
        TCP (a UNIX socket, TLS), which worker processes cannot share.
    """
    endpoint = serverFromString(reactor, config.endpoint)
    if not isinstance(endpoint, TCP4ServerEndpoint):
        raise CannotListenError(
            None,
            None,
            f"with --workers, an inbound must listen on TCP, not {config.listen!r}",
        )
    interface: str = endpoint._interface
    port: int = endpoint._port
    return interface or "0.0.0.0", port


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bound_socket(host: str, port: int) -> socket.socket:
    """A socket with C{SO_REUSEPORT} bound to C{host:port}."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise CannotListenError(host, port, e) from e
    return sock


@define(eq=False)
class ReservedPort:
    """An inbound's address held by the parent: bound, not listening."""

    sock: socket.socket | None

    def getHost(self) -> IPv4Address | IPv6Address:
        """The address bound, with the port resolved."""
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        if self.sock.family == socket.AF_INET6:
            return IPv6Address("TCP", host, port)
        return IPv4Address("TCP", host, port)

    def stopListening(self) -> None:
        """Give the address back."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


async def reserve_port(
    reactor: Any, config: InboundConfig, factory: IProtocolFactory
) -> ReservedPort:
    """The parent's listener: reserve the inbound's address (see the module).

    @raise CannotListenError: as for listening.
    """
    host, port = tcp_address(reactor, config)
    return ReservedPort(_bound_socket(host, port))


def listen_reuseport(
    reactor: Any, host: str, port: int, factory: IProtocolFactory
) -> IListeningPort:
    """Listen on C{host:port} with C{SO_REUSEPORT}, alongside the other workers."""
    sock = _bound_socket(host, port)
    try:
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        listening: IListeningPort = reactor.adoptStreamPort(
            sock.fileno(), sock.family, factory
        )
    finally:
        # The reactor holds its own duplicate of the descriptor.
        sock.close()
    return listening
