"""The comparison report as text, for a terminal or a release pipeline's log.

L{format_report} renders the JSON report of a comparison (a Comparer's or a
replay's L{nfork.compare.tally.Tally.report}): for each candidate a summary
line, then its endpoints sorted by difference rate (differing / requests)
in aligned columns, each with its top fields, differences first, and a
final verdict line.  L{has_difference} is what C{--fail-on difference}
tests: whether any field's verdict is C{difference}.

Every key of the report is optional: a missing count reads as 0, a missing
section as empty, so a report from an older or newer nfork still prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "Example",
    "difference_fields",
    "example_values",
    "format_report",
    "has_difference",
]

Example = Callable[[str, str, str], "tuple[object, object] | None"]
"""Finds one example of a field's difference: C{(candidate, endpoint,
field) -> (primary's value, candidate's value)}, or None when none is kept."""

_VALUE_WIDTH = 60
"""Characters of a value shown in an example before it is cut."""


def example_values(
    samples: Iterable[Mapping[str, Any]], field: str
) -> tuple[object, object] | None:
    """The primary's and the candidate's values of C{field} in the first
    sample (as the samples route returns them) that shows it differing."""
    for sample in samples:
        for difference in _list(sample.get("differences")):
            difference = _mapping(difference)
            if difference.get("field") == field:
                return difference.get("primary"), difference.get("candidate")
    return None


def difference_fields(
    report: Mapping[str, Any], *, top_fields: int = 5
) -> list[tuple[str, str, str]]:
    """The C{(candidate, endpoint, field)} differences L{format_report} shows
    with the same C{top_fields}: those worth an example."""
    found = []
    for name, candidate in _mapping(report.get("candidates")).items():
        for endpoint, stats in _mapping(_mapping(candidate).get("endpoints")).items():
            fields = _mapping(_mapping(stats).get("fields"))
            for field, counts in sorted(fields.items(), key=_field_order)[:top_fields]:
                if _mapping(counts).get("verdict") == "difference":
                    found.append((name, endpoint, field))
    return found


def has_difference(report: Mapping[str, Any]) -> bool:
    """Whether any field of any endpoint of any candidate is a difference."""
    for candidate in _mapping(report.get("candidates")).values():
        for endpoint in _mapping(_mapping(candidate).get("endpoints")).values():
            for field in _mapping(_mapping(endpoint).get("fields")).values():
                if _mapping(field).get("verdict") == "difference":
                    return True
    return False


def format_report(
    report: Mapping[str, Any],
    *,
    top_fields: int = 5,
    example: Example | None = None,
) -> str:
    """The report as lines of text, ending with the verdict line.

    @param top_fields: fields shown per endpoint at most (differences first,
        then by the number of requests that differ there).
    @param example: when given, called for each field shown with the verdict
        C{difference}; the values it returns are shown under the field.
    """
    lines: list[str] = []
    header = _header(report)
    if header:
        lines.append(header)
    candidates = _mapping(report.get("candidates"))
    if not candidates:
        lines.append("no candidate compared")
    for name in sorted(candidates):
        if lines:
            lines.append("")
        lines.extend(_candidate(name, _mapping(candidates[name]), top_fields, example))
    lines.append("")
    lines.append(_verdict(report))
    return "\n".join(lines) + "\n"


def _header(report: Mapping[str, Any]) -> str:
    """Which inbound, primary and baseline the report is about, if it says."""
    parts = []
    for key in ("inbound", "primary", "baseline"):
        value = report.get(key)
        if value:
            parts.append(f"{key} {value}")
    if "baseline" in report and not report.get("baseline"):
        parts.append("no baseline")
    return ", ".join(parts)


def _candidate(
    name: str,
    candidate: Mapping[str, Any],
    top_fields: int,
    example: Example | None,
) -> list[str]:
    compared = _count(candidate, "compared")
    differing = _count(candidate, "differing")
    skipped = _count(candidate, "skipped")
    endpoints = _mapping(candidate.get("endpoints"))
    flagged = sum(1 for e in endpoints.values() if _differences(_mapping(e)))
    lines = [
        f"candidate {name}: {compared} compared, {differing} differing "
        f"({_percent(differing, compared)}), {skipped} skipped, "
        f"{flagged} of {len(endpoints)} endpoints with differences"
    ]
    if not endpoints:
        return lines
    rows: list[tuple[str, ...]] = [
        ("endpoint", "requests", "differing", "rate", "truncated")
    ]
    ordered = sorted(endpoints.items(), key=_endpoint_order)
    for endpoint, stats in ordered:
        stats = _mapping(stats)
        requests = _count(stats, "requests")
        rows.append(
            (
                endpoint,
                str(requests),
                str(_count(stats, "differing")),
                _percent(_count(stats, "differing"), requests),
                str(_count(stats, "truncated")),
            )
        )
    table = _columns(rows)
    lines.append("  " + table[0])
    for (endpoint, stats), row in zip(ordered, table[1:], strict=True):
        lines.append("  " + row)
        lines.extend(_fields(name, endpoint, _mapping(stats), top_fields, example))
    return lines


def _endpoint_order(item: tuple[str, Any]) -> tuple[float, int, str]:
    """Highest difference rate first, then the busiest, then by name."""
    name, stats = item
    stats = _mapping(stats)
    requests = _count(stats, "requests")
    rate = _count(stats, "differing") / requests if requests else 0.0
    return (-rate, -requests, name)


def _fields(
    candidate: str,
    endpoint: str,
    stats: Mapping[str, Any],
    top_fields: int,
    example: Example | None,
) -> list[str]:
    fields = _mapping(stats.get("fields"))
    if not fields:
        return []
    ordered = sorted(fields.items(), key=_field_order)
    shown = ordered[:top_fields]
    rows = []
    for field, counts in shown:
        counts = _mapping(counts)
        kinds = _mapping(counts.get("kinds"))
        rows.append(
            (
                str(counts.get("verdict", "noise")),
                field,
                f"raw {_count(counts, 'raw')}",
                f"noise {_count(counts, 'noise')}",
                ", ".join(f"{kind} {kinds[kind]}" for kind in sorted(kinds)),
            )
        )
    lines = []
    for (field, counts), row in zip(shown, _columns(rows), strict=True):
        lines.append("      " + row)
        if example is not None and _mapping(counts).get("verdict") == "difference":
            found = example(candidate, endpoint, field)
            if found is not None:
                primary, other = found
                lines.append(f"          primary:   {_value(primary)}")
                lines.append(f"          candidate: {_value(other)}")
    if len(ordered) > len(shown):
        lines.append(f"      ... {len(ordered) - len(shown)} more fields")
    return lines


def _field_order(item: tuple[str, Any]) -> tuple[int, int, str]:
    """Differences first, then the field that differs most often."""
    name, counts = item
    counts = _mapping(counts)
    return (
        0 if counts.get("verdict") == "difference" else 1,
        -_count(counts, "raw"),
        name,
    )


def _verdict(report: Mapping[str, Any]) -> str:
    candidates = _mapping(report.get("candidates"))
    flagged = sorted(
        name
        for name, candidate in candidates.items()
        if any(
            _differences(_mapping(e))
            for e in _mapping(_mapping(candidate).get("endpoints")).values()
        )
    )
    if flagged:
        return f"verdict: DIFFERENCE ({', '.join(flagged)})"
    if not any(_count(_mapping(c), "compared") for c in candidates.values()):
        return "verdict: nothing compared yet"
    return "verdict: no difference"


def _differences(endpoint: Mapping[str, Any]) -> int:
    """How many of an endpoint's fields are differences."""
    return sum(
        1
        for counts in _mapping(endpoint.get("fields")).values()
        if _mapping(counts).get("verdict") == "difference"
    )


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows as lines, each column padded to its widest cell (numbers right)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            numeric = i > 0 and (cell[:1].isdigit() or cell == "-")
            cells.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    return lines


def _value(value: object) -> str:
    """A value of an example, as JSON, cut to one short line."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > _VALUE_WIDTH:
        text = text[: _VALUE_WIDTH - 3] + "..."
    return text


def _percent(part: int, whole: int) -> str:
    if not whole:
        return "-"
    return f"{100 * part / whole:.1f}%"


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
