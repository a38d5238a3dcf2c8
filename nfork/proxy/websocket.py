"""Counting the messages of a WebSocket byte stream (RFC 6455 framing).

A mirrored WebSocket session forwards the client's frames to a shadow as
they arrive, byte for byte; nfork only needs to know where each message
ends, to count the messages a shadow was sent or missed.  This reads the
frame headers and skips the payloads: no unmasking, no decompression, no
copy of the data, so its cost is per frame, not per byte.
"""

from __future__ import annotations

_FIN = 0x80
_OPCODE = 0x0F
_MASKED = 0x80
_LENGTH = 0x7F
_CONTROL = 0x08
"""Opcodes from 8 up (close, ping, pong) are control frames, not messages."""


class FrameCounter:
    """Counts the data messages (text or binary, however fragmented) in a stream.

    Fed the stream in pieces of any size; a message is counted when the last
    byte of its final frame has arrived.
    """

    __slots__ = ("_ends_message", "_head", "_left", "closed", "messages")

    def __init__(self) -> None:
        self.messages = 0
        """Messages completed so far."""
        self.closed = False
        """A close frame's header was seen."""
        self._head = b""
        """The start of a frame header that a piece ended inside."""
        self._left = 0
        """Payload bytes of the current frame still to come."""
        self._ends_message = False
        """The current frame is the final frame of a data message."""

    def feed(self, data: bytes) -> int:
        """Read C{data}; return how many messages it completed."""
        done = 0
        pos = 0
        end = len(data)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                self._left -= take
                pos += take
                if self._left:
                    break
                if self._ends_message:
                    done += 1
                continue
            head = self._head + data[pos : pos + 14]
            size = _header_size(head)
            if size == 0 or len(head) < size:
                taken = min(len(head), 14) - len(self._head)
                self._head = head[:14]
                pos += taken
                break
            pos += size - len(self._head)
            self._head = b""
            first = head[0]
            length = head[1] & _LENGTH
            if length == 126:
                length = int.from_bytes(head[2:4], "big")
            elif length == 127:
                length = int.from_bytes(head[2:10], "big")
            opcode = first & _OPCODE
            if opcode == 8:
                self.closed = True
            self._ends_message = bool(first & _FIN) and not opcode & _CONTROL
            if length:
                self._left = length
            elif self._ends_message:
                done += 1
        self.messages += done
        return done


def _header_size(head: bytes) -> int:
    """The size of the frame header C{head} starts with; 0 if not yet known."""
    if len(head) < 2:
        return 0
    second = head[1]
    length = second & _LENGTH
    size = 2 + (2 if length == 126 else 8 if length == 127 else 0)
    return size + 4 if second & _MASKED else size
