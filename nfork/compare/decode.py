"""Content-Encoding removed from a body, for comparison only, with bounded output.

A body is decoded to compare what it says, not how it was compressed.  The
output is bounded: a small body that inflates past the limit (a compression
bomb) stops there and counts as cut.  Anything that cannot be decoded (an
unknown encoding, corrupt data) gives None, and the caller compares the
bytes as received.
"""

from __future__ import annotations

import zlib

import brotli
from attrs import frozen

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS


@frozen
class Decoded:
    """A decoded body: its first bytes, and whether it went on past the limit."""

    data: bytes
    cut: bool


def decode_body(body: bytes, encodings: str, limit: int) -> Decoded | None:
    """Undo the C{Content-Encoding} list C{encodings} (C{"gzip"}, C{"gzip, br"}).

    At most C{limit} bytes come out of each step.  None when an encoding is
    unknown or the data does not decode.
    """
    steps = [word.strip().lower() for word in encodings.split(",")]
    data = body
    for step in reversed(steps):
        if step in ("", "identity"):
            continue
        decoded = _decode_one(data, step, limit)
        if decoded is None or decoded.cut:
            return decoded
        data = decoded.data
    return Decoded(data, cut=False)


def _decode_one(data: bytes, encoding: str, limit: int) -> Decoded | None:
    """One encoding step; None when unknown or corrupt."""
    if encoding in ("gzip", "x-gzip"):
        return _inflate(data, _GZIP_WBITS, limit)
    if encoding == "deflate":
        # RFC 9110 says zlib-wrapped; some servers send raw deflate.
        return _inflate(data, _ZLIB_WBITS, limit) or _inflate(
            data, _RAW_DEFLATE_WBITS, limit
        )
    if encoding == "br":
        return _unbrotli(data, limit)
    return None


def _inflate(data: bytes, wbits: int, limit: int) -> Decoded | None:
    """zlib, gzip or raw deflate, stopping after C{limit} bytes of output."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        return None
    if len(out) > limit:
        return Decoded(out[:limit], cut=True)
    if not inflater.eof:
        return None
    return Decoded(out, cut=False)


def _unbrotli(data: bytes, limit: int) -> Decoded | None:
    """Brotli, stopping after C{limit} bytes of output."""
    decompressor = brotli.Decompressor()
    try:
        out: bytes = decompressor.process(data, output_buffer_limit=limit + 1)
    except brotli.error:
        return None
    if len(out) > limit:
        return Decoded(out[:limit], cut=True)
    if not decompressor.is_finished():
        return None
    return Decoded(out, cut=False)
