"""Content-Encoding decoding for comparison: bounded, never raising."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from nfork.compare.decode import Decoded, decode_body

TEXT = b'{"name": "nfork", "items": [1, 2, 3]}' * 10


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("gzip", gzip.compress(TEXT)),
        ("x-gzip", gzip.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)),
        ("deflate", _raw_deflate(TEXT)),
        ("br", brotli.compress(TEXT)),
        ("BR", brotli.compress(TEXT)),
        ("identity", TEXT),
        ("", TEXT),
        ("gzip, br", brotli.compress(gzip.compress(TEXT))),
    ],
)
def test_known_encodings_decode(encoding, encoded):
    assert decode_body(encoded, encoding, 1 << 20) == Decoded(TEXT, cut=False)


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(TEXT)[:-12]),
        ("deflate", b"\xff\xfe garbage"),
        ("br", b"\x00garbage brotli"),
        ("br", brotli.compress(TEXT)[:5]),
        ("compress", TEXT),
        ("zstd", TEXT),
    ],
)
def test_unknown_or_corrupt_bodies_give_none(encoding, encoded):
    assert decode_body(encoded, encoding, 1 << 20) is None


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress)],
)
def test_a_bomb_stops_at_the_limit_and_counts_as_cut(encoding, compress):
    bomb = compress(b"\0" * (4 << 20))
    assert len(bomb) < 20_000
    decoded = decode_body(bomb, encoding, 4096)
    assert decoded == Decoded(b"\0" * 4096, cut=True)


def test_output_exactly_at_the_limit_is_not_cut():
    assert decode_body(gzip.compress(TEXT), "gzip", len(TEXT)) == Decoded(TEXT, False)
