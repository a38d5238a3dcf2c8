"""Byte sizes as a configuration writes them: C{1048576}, C{"512KiB"}, C{"1MiB"}."""

from __future__ import annotations

import re

from nfork.config.errors import quote

__all__ = ["SIZE_HINT", "parse_size"]

SIZE_HINT = 'a number of bytes, or a size such as "64KiB" or "1MiB"'
"""What a size must look like, in the words of the messages."""

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"\s*([0-9]+)\s*([A-Za-z]*)\s*")


def parse_size(value: object) -> int:
    """The number of bytes C{value} stands for.

    An integer is a number of bytes; a string is digits and an optional
    unit: C{B}, C{KiB}, C{MiB}, C{GiB} (powers of 1024) or C{KB}, C{MB},
    C{GB} (powers of 1000), case-insensitive.  Bounds are the model's.

    @raise ValueError: with a message quoting C{value}.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is not None and len(value) <= 32:
            unit = _UNITS.get(match.group(2).lower())
            if unit is not None:
                return int(match.group(1)) * unit
        raise ValueError(f"expected {SIZE_HINT}, got {quote(value)}")
    raise ValueError(f"expected {SIZE_HINT}")
