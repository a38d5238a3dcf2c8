"""Writing to a TCP transport without waiting for the next reactor turn.

Twisted's C{transport.write} only buffers: the bytes go out when the reactor
next polls, after registering and unregistering the socket for writing (two
C{epoll_ctl} calls and a reactor iteration per write).  On the proxy's hot
path every request causes one such write per outbound plus the answer to the
client, and that machinery cost a fifth of the CPU.  When nothing is already
buffered, sending at once is equivalent and much cheaper.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Connection


def write_now(transport: Any, data: bytes) -> None:
    """Send C{data} now if the transport is a plain idle TCP socket.

    Falls back to C{transport.write} for anything else (TLS, a transport with
    bytes already queued, a closing one, a socket that would block), so the
    ordering and error handling stay Twisted's.
    """
    # Exactly a TCP connection: wrappers (TLSMemoryBIOProtocol) forward
    # attribute lookups to the socket underneath and must not be bypassed.
    if (
        not isinstance(transport, Connection)
        or transport.TLS
        or not transport.connected
        or transport.disconnecting
        or transport._tempDataBuffer
        or len(transport.dataBuffer) != transport.offset
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError:
        # Would block, or the connection broke: Twisted's path reports both.
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])
