"""The client socket's plumbing: immediate writes, and what is left unsent.

Twisted's C{transport.write} only buffers: the bytes go out when the reactor
next polls, after registering and unregistering the socket for writing (two
C{epoll_ctl} calls and a reactor iteration per write).  On the proxy's hot
path every request causes one such write per outbound plus the answer to the
client, and that machinery cost a fifth of the CPU.  When nothing is already
buffered, sending at once is equivalent and much cheaper.

L{unsent_bytes} tells how much output a peer has not taken yet, so that a
peer that stops reading can be told from one that reads slowly.
"""

from __future__ import annotations

import fcntl
import struct
import sys
from typing import Any

from twisted.internet.tcp import Connection

_OUTQ: int | None = None
"""The C{ioctl} that reads a socket's send queue (Linux's C{SIOCOUTQ})."""
if sys.platform.startswith("linux"):
    import termios

    _OUTQ = termios.TIOCOUTQ


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


def unsent_bytes(transport: Any) -> int | None:
    """Bytes written to C{transport} that the peer has not taken yet.

    Counts Twisted's buffer of a TCP connection (under TLS, of the TCP
    connection beneath it; the TLS layer's own few records are left out)
    and, on Linux, the socket's send queue: the kernel wakes a writer only
    once much of a large send buffer (up to 4 MiB) is free, so a client
    reading slowly but steadily makes progress there long before Twisted's
    buffer shrinks.  None when the transport keeps no such buffer that we
    know of.
    """
    if not isinstance(transport, Connection):
        # TLSMemoryBIOProtocol: the TCP connection is its transport.
        transport = getattr(transport, "transport", None)
        if not isinstance(transport, Connection):
            return None
    unsent: int = len(transport.dataBuffer) - transport.offset
    return unsent + transport._tempDataLen + _send_queue(transport)


def _send_queue(transport: Connection) -> int:
    """Bytes in the socket's send queue, not yet acknowledged (0 if unknown)."""
    if _OUTQ is None:
        return 0
    try:
        queued: int = struct.unpack(
            "i", fcntl.ioctl(transport.socket.fileno(), _OUTQ, b"\0\0\0\0")
        )[0]
    except (OSError, ValueError):
        return 0
    return queued
