"""The aligned tables C{nfork ctl} prints: inbounds and their stats.

Each function takes the control API's JSON as it comes (lists and objects
of C{GET /v1/nfork} and C{GET /v1/nfork/stats}) and returns text; nothing
here talks to the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nfork.config.durations import parse_duration
from nfork.config.model import DEFAULT_STATS_WINDOW

__all__ = [
    "STATS_HEADERS",
    "format_table",
    "inbounds_table",
    "stats_table",
    "window_seconds",
]

NO_VALUE = "-"
"""A cell with nothing to show (no latency in an empty window, no options)."""


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: frozenset[int]
) -> str:
    """Rows under their headers, columns two spaces apart.

    Columns whose index is in C{numeric} are aligned right, the others left;
    trailing spaces are stripped.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)]) + "\n"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _outbound_label(name: str, inbound: Mapping[str, Any]) -> str:
    """The outbound's name, marked when it is the inbound's active one."""
    return f"{name} (active)" if inbound.get("active") == name else name


def _address_and_options(outbound: object) -> tuple[str, str]:
    """An outbound's address and its other settings (C{key=value}, sorted)."""
    if isinstance(outbound, str):
        return outbound, NO_VALUE
    settings = dict(_mapping(outbound))
    address = str(settings.pop("addr", NO_VALUE))
    options = " ".join(
        f"{key}={_compact(value)}" for key, value in sorted(settings.items())
    )
    return address, options or NO_VALUE


def _compact(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def inbounds_table(inbounds: Sequence[Mapping[str, Any]]) -> str:
    """One row per outbound of every inbound: where it listens, where it sends."""
    if not inbounds:
        return "no inbound\n"
    rows = []
    for inbound in inbounds:
        name = str(inbound.get("name", ""))
        listen = str(inbound.get("listen", ""))
        outbounds = _mapping(inbound.get("out"))
        for outbound in sorted(outbounds, key=lambda o: o != inbound.get("active")):
            address, options = _address_and_options(outbounds[outbound])
            rows.append(
                [name, listen, _outbound_label(outbound, inbound), address, options]
            )
    return format_table(
        ["INBOUND", "LISTEN", "OUTBOUND", "ADDRESS", "OPTIONS"], rows, frozenset()
    )


def window_seconds(inbound: Mapping[str, Any]) -> float:
    """The length of the inbound's stats window (C{statsWindow}), in seconds."""
    text = inbound.get("statsWindow")
    if isinstance(text, str):
        try:
            return parse_duration(text)
        except ValueError:
            pass
    return DEFAULT_STATS_WINDOW


def _counts(value: object) -> str:
    """C{{"200": 7, "503": 1}} as C{200:7 503:1}; C{0} when empty."""
    counts = _mapping(value)
    if not counts:
        return "0"
    return " ".join(f"{key}:{count}" for key, count in counts.items())


def _latency(window: Mapping[str, Any], key: str) -> str:
    if not window.get("requests"):
        return NO_VALUE
    return str(_mapping(window.get("latency")).get(key, NO_VALUE))


STATS_HEADERS = [
    "INBOUND",
    "OUTBOUND",
    "REQUESTS",
    "RATE/S",
    "P50",
    "P99",
    "CODES",
    "ERRORS",
    "TIMEOUTS",
    "DROPPED",
    "SKIPPED",
]
"""The stats table's columns: counts since the outbound was created, the
rate and latencies of the last complete window."""


def stats_table(
    inbounds: Sequence[Mapping[str, Any]],
    stats: Mapping[str, Mapping[str, Any]],
) -> str:
    """One row per outbound: its totals, and its last window's rate and latency.

    @param inbounds: the inbounds as C{GET /v1/nfork} gives them (for the
        active outbound and the window's length), in the order to show.
    @param stats: C{{inbound: {outbound: stats}}}, as C{GET /v1/nfork/stats}.
    """
    rows = []
    for inbound in inbounds:
        name = str(inbound.get("name", ""))
        window = window_seconds(inbound)
        outbounds = _mapping(stats.get(name))
        for outbound in sorted(outbounds, key=lambda o: o != inbound.get("active")):
            figures = _mapping(outbounds[outbound])
            total = _mapping(figures.get("total"))
            rate = float(figures.get("requests") or 0) / window
            rows.append(
                [
                    name,
                    _outbound_label(outbound, inbound),
                    str(total.get("requests", 0)),
                    f"{rate:.1f}",
                    _latency(figures, "p50"),
                    _latency(figures, "p99"),
                    _counts(total.get("responses")),
                    str(total.get("errors", 0)),
                    str(total.get("timeouts", 0)),
                    str(total.get("dropped", 0)),
                    _counts(total.get("skipped")),
                ]
            )
    if not rows:
        return "no inbound\n"
    numeric = frozenset({2, 3, 4, 5, 7, 8, 9})
    return format_table(STATS_HEADERS, rows, numeric)
