"""Go-style duration strings ("100ms", "1.5s", "1m30s"), as gonfork wrote them.

Values are handled as integer nanoseconds internally, like Go's
C{time.Duration}, so that parsing and formatting never pick up float noise;
the public functions speak float seconds, the unit of the reactor clock.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from nfork.config.errors import quote

__all__ = ["format_duration", "parse_duration"]

_NS_PER_SECOND = 1_000_000_000
_MAX_NS = 2**63 - 1
"""The largest Go C{time.Duration}, about 292 years."""

_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, what Go's String() writes
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": _NS_PER_SECOND,
    "m": 60 * _NS_PER_SECOND,
    "h": 3600 * _NS_PER_SECOND,
}

# One "number unit" component, as Go's time.ParseDuration scans it: digits,
# an optional fraction, then every following character that is neither a
# digit nor a dot is the unit.
_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")

_OUT_OF_RANGE = "out of range, the maximum is about 292 years"
_HINT = 'expected a Go duration such as "100ms" or "1.5s"'
_QUOTED = 60
"""Quoted text in duration messages is cut shorter than elsewhere (they end
with a hint)."""


def _invalid(text: str, why: str) -> ValueError:
    return ValueError(f"invalid duration {quote(text, limit=_QUOTED)} ({why}; {_HINT})")


def _fraction_ns(digits: str, scale: int) -> int:
    """Nanoseconds in C{0.digits} of a unit, computed exactly as Go computes them.

    Go keeps the digits that fit in an int64, then multiplies in float64 and
    truncates; doing the same gives the very same durations as gonfork
    ("0.3333333333333333333h" is 20m0s, not 19m59.999999999s).
    """
    value = 0
    divisor = 1.0
    for digit in digits:
        if value > _MAX_NS // 10 or value * 10 + int(digit) > 2**63:
            break
        value = value * 10 + int(digit)
        divisor *= 10
    return int(float(value) * (float(scale) / divisor))


def _parse_ns(text: str) -> int:
    """Parse a Go duration string into a non-negative count of nanoseconds."""
    if not isinstance(text, str):
        raise TypeError(f"a duration must be a string, not {type(text).__name__}")
    if text == "":
        raise _invalid(text, "empty string")
    body = text
    if body[0] == "-":
        raise _invalid(text, "negative durations are not allowed")
    if body[0] == "+":
        body = body[1:]
    if body == "0":
        return 0
    if body == "":
        raise _invalid(text, "no number")
    total = 0
    position = 0
    while position < len(body):
        match = _COMPONENT.match(body, position)
        # The pattern can match the empty string, never fails to match.
        assert match is not None
        whole, fraction, unit = match.groups()
        if whole == "" and not fraction:
            if unit:
                raise _invalid(text, f"no number before {quote(unit, limit=_QUOTED)}")
            raise _invalid(text, "expected a number")
        if unit == "":
            # Go accepts a number without unit only for a bare "0".
            raise _invalid(
                text, f"missing unit after {quote(match.group(0), limit=_QUOTED)}"
            )
        scale = _UNITS.get(unit)
        if scale is None:
            raise _invalid(text, f"unknown unit {quote(unit, limit=_QUOTED)}")
        whole = whole.lstrip("0")
        if len(whole) > 20:
            raise _invalid(text, _OUT_OF_RANGE)
        total += int(whole or "0") * scale + _fraction_ns(fraction or "", scale)
        if total > _MAX_NS:
            raise _invalid(text, _OUT_OF_RANGE)
        position = match.end()
    return total


def parse_duration(text: str) -> float:
    """Parse a Go duration string ("250us", "1.5s", "1m30s") into seconds.

    Accepts what Go's C{time.ParseDuration} accepts, except negative
    durations: units C{ns}, C{us} (or C{µs}/C{μs}), C{ms}, C{s}, C{m} and
    C{h}, decimal fractions, several components ("1h15m"), and a bare "0".

    @raise ValueError: with a message naming the problem.
    """
    return _parse_ns(text) / _NS_PER_SECOND


def _with_fraction(value: int, digits: int) -> str:
    """Write C{value / 10**digits} with no trailing zeros ("1.5", "2")."""
    whole, fraction = divmod(value, 10**digits)
    decimals = f"{fraction:0{digits}d}".rstrip("0")
    return f"{whole}.{decimals}" if decimals else str(whole)


def _format_ns(ns: int) -> str:
    """Write nanoseconds as Go's C{time.Duration.String()} does."""
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u == 0:
        return "0s"
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_with_fraction(u, 3)}\u00b5s"
    if u < _NS_PER_SECOND:
        return f"{sign}{_with_fraction(u, 6)}ms"
    seconds_ns = u % (60 * _NS_PER_SECOND)
    minutes = u // (60 * _NS_PER_SECOND)
    seconds = f"{_with_fraction(seconds_ns, 9)}s"
    if minutes == 0:
        return f"{sign}{seconds}"
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{hours}h{minutes}m{seconds}"


def format_duration(seconds: float) -> str:
    """Write seconds as Go's C{time.Duration.String()}: "1.5s", "250µs", "2h0m0s".

    The value is rounded to the nearest nanosecond and clamped to the range
    of a Go duration (about 292 years).  Negative values get a
    leading "-" as in Go (a clock stepping back must not break the stats),
    although L{parse_duration} refuses them.

    @raise ValueError: for NaN and infinities.
    """
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    ns = round(Fraction(seconds) * _NS_PER_SECOND)
    return _format_ns(max(-_MAX_NS, min(ns, _MAX_NS)))
