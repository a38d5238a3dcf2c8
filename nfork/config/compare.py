"""An inbound's C{compare} settings: which answers are compared, and how.

L{CompareConfig} is the model (it checks its values however it is built);
L{parse_compare} reads it from the JSON object of an inbound's C{compare}
key and L{CompareConfig.to_json} writes it back.  Errors name the key as
C{compare.<key>} (C{inbound "web": key "compare.samples": ...}): the
inbound is added by the caller (L{nfork.config.errors.error_context}).
Whether the outbounds named exist, and give answers, is checked with the
inbound (L{nfork.config.model.InboundConfig}, L{nfork.outbounds.registry}).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import field, frozen

from nfork.compare.endpoints import compile_pattern
from nfork.compare.paths import compile_ignore
from nfork.config.errors import (
    check_at_most,
    config_error,
    describe,
    quote,
    unknown_key,
)
from nfork.config.sizes import parse_size

__all__ = [
    "COMPARE_KEYS",
    "DEFAULT_ABSOLUTE",
    "DEFAULT_COMPARE_MAX_BODY",
    "DEFAULT_IGNORE_HEADERS",
    "DEFAULT_QUEUE",
    "DEFAULT_RELATIVE",
    "DEFAULT_SAMPLES",
    "MAX_COMPARE_BODY",
    "MAX_QUEUE",
    "MAX_SAMPLES",
    "CompareConfig",
    "parse_compare",
]

DEFAULT_IGNORE_HEADERS: tuple[str, ...] = (
    # Set by the server for each answer: the time, the server's name and
    # version, caching and freshness stamps.
    "Date",
    "Server",
    "Age",
    "Expires",
    "Last-Modified",
    "ETag",
    "Via",
    "X-Powered-By",
    # How the answer travelled, not what it says (the body is compared).
    "Connection",
    "Keep-Alive",
    "Transfer-Encoding",
    "Content-Length",
    # Per-request identifiers and tracing.
    "X-Request-Id",
    "X-Correlation-Id",
    "X-Trace-Id",
    "Traceparent",
    "Tracestate",
    "X-B3-TraceId",
    "X-B3-SpanId",
    "X-Amzn-Trace-Id",
    # Timings and caches in front of the server.
    "X-Runtime",
    "X-Response-Time",
    "Server-Timing",
    "X-Served-By",
    "X-Cache",
    "X-Cache-Hits",
    "X-Timer",
)
"""Headers left out of the comparison unless C{ignoreHeaders} is given
(which then replaces this list): they differ from one answer to the next,
or from one instance to another, whatever the code."""

DEFAULT_COMPARE_MAX_BODY = 1024 * 1024
"""Bytes of each compared answer's body kept (1 MiB); longer bodies are
compared by their SHA-256 and counted C{truncated}."""
MAX_COMPARE_BODY = 64 * 1024 * 1024
"""The largest C{compare.maxBody} (64 MiB)."""
DEFAULT_SAMPLES = 20
"""Example requests kept per candidate, endpoint and field."""
MAX_SAMPLES = 1000
DEFAULT_RELATIVE = 20.0
"""Diffy's relative threshold, in percent."""
DEFAULT_ABSOLUTE = 0.03
"""Diffy's absolute threshold, in percent."""
DEFAULT_QUEUE = 256
"""Comparisons waiting before new requests are skipped (C{compare_skipped})."""
MAX_QUEUE = 100_000

COMPARE_KEYS = (
    "candidates",
    "baseline",
    "ignoreHeaders",
    "ignore",
    "endpoints",
    "maxBody",
    "samples",
    "relative",
    "absolute",
    "queue",
)
"""The keys of the C{compare} object."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name is an RFC 7230 token."""


def _key(name: str) -> str:
    """How a key of the C{compare} object is named in messages."""
    return f"compare.{name}"


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _optional_strings(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@frozen
class CompareConfig:
    """How an inbound compares its outbounds' answers with the active one's.

    The active outbound is the I{primary}; each I{candidate}'s answers are
    compared with its answers, and the I{baseline}'s differences from it
    are the noise a candidate's difference must stand out from.
    """

    candidates: tuple[str, ...] | None = field(
        default=None, converter=_optional_strings
    )
    """Outbounds compared with the primary; None: every shadow but the
    baseline and the sinks."""
    baseline: str | None = None
    """An outbound running the primary's code, whose differences are noise."""
    ignore_headers: tuple[str, ...] = field(
        default=DEFAULT_IGNORE_HEADERS, converter=_strings
    )
    """Header names (any case) left out of the comparison."""
    ignore: tuple[str, ...] = field(default=(), converter=_strings)
    """JSON field paths left out of the comparison (C{$.meta.generatedAt})."""
    endpoints: tuple[str, ...] = field(default=(), converter=_strings)
    """Endpoint patterns (C{GET /users/:id}), tried before automatic templating."""
    max_body: int = DEFAULT_COMPARE_MAX_BODY
    """Bytes of each answer's body kept for the comparison."""
    samples: int = DEFAULT_SAMPLES
    """Example requests kept per candidate, endpoint and field (0: none)."""
    relative: float = DEFAULT_RELATIVE
    """Diffy's relative threshold, in percent."""
    absolute: float = DEFAULT_ABSOLUTE
    """Diffy's absolute threshold, in percent."""
    queue: int = DEFAULT_QUEUE
    """Comparisons waiting before new requests are skipped."""

    def __attrs_post_init__(self) -> None:
        if self.candidates is not None:
            if not self.candidates:
                raise config_error(
                    "must name at least one outbound (leave the key out to "
                    "compare every shadow but the baseline and the sinks)",
                    key=_key("candidates"),
                )
            seen: set[str] = set()
            for name in self.candidates:
                _check_string(name, "outbound names", _key("candidates"))
                if name in seen:
                    raise config_error(
                        f"{quote(name)} is listed more than once",
                        key=_key("candidates"),
                    )
                seen.add(name)
        if self.baseline is not None:
            _check_string(self.baseline, "an outbound name", _key("baseline"))
            if self.candidates is not None and self.baseline in self.candidates:
                raise config_error(
                    f"the baseline {quote(self.baseline)} cannot also be a "
                    "candidate (compare.candidates)",
                    key=_key("baseline"),
                )
        for name in self.ignore_headers:
            _check_string(name, "header names", _key("ignoreHeaders"))
            if not _TOKEN.fullmatch(name):
                raise config_error(
                    f"invalid header name {quote(name)}", key=_key("ignoreHeaders")
                )
        for path in self.ignore:
            _check_string(path, "field paths", _key("ignore"))
            try:
                compile_ignore(path)
            except ValueError as e:
                raise config_error(str(e), key=_key("ignore")) from None
        for pattern in self.endpoints:
            _check_string(pattern, "endpoint patterns", _key("endpoints"))
            try:
                compile_pattern(pattern)
            except ValueError as e:
                raise config_error(str(e), key=_key("endpoints")) from None
        _check_integer(self.max_body, 1, MAX_COMPARE_BODY, _key("maxBody"))
        _check_integer(self.samples, 0, MAX_SAMPLES, _key("samples"))
        _check_integer(self.queue, 1, MAX_QUEUE, _key("queue"))
        for name, value in (("relative", self.relative), ("absolute", self.absolute)):
            _check_percent(value, _key(name))
            # The JSON number 20 is the percentage 20.0.
            object.__setattr__(self, name, float(value))

    def to_json(self, *, full: bool = False) -> dict[str, Any]:
        """The JSON object for the C{compare} key, as in the configuration file.

        Keys at their default are left out (so a file keeps following
        nfork's defaults), unless C{full}: then every key is written, with
        C{null} for C{candidates} and C{baseline} when not set.
        """
        result: dict[str, Any] = {}
        if full or self.candidates is not None:
            result["candidates"] = (
                None if self.candidates is None else list(self.candidates)
            )
        if full or self.baseline is not None:
            result["baseline"] = self.baseline
        for key, value, default in (
            ("ignoreHeaders", list(self.ignore_headers), list(DEFAULT_IGNORE_HEADERS)),
            ("ignore", list(self.ignore), []),
            ("endpoints", list(self.endpoints), []),
            ("maxBody", self.max_body, DEFAULT_COMPARE_MAX_BODY),
            ("samples", self.samples, DEFAULT_SAMPLES),
            ("relative", self.relative, DEFAULT_RELATIVE),
            ("absolute", self.absolute, DEFAULT_ABSOLUTE),
            ("queue", self.queue, DEFAULT_QUEUE),
        ):
            if full or value != default:
                result[key] = value
        return result

    def named_outbounds(self) -> tuple[tuple[str, str], ...]:
        """C{(key, outbound)} for each outbound named: the candidates, the baseline."""
        named = [(_key("candidates"), name) for name in self.candidates or ()]
        if self.baseline is not None:
            named.append((_key("baseline"), self.baseline))
        return tuple(named)


def _check_string(value: object, what: str, key: str) -> None:
    if not isinstance(value, str):
        raise config_error(f"expected {what} (strings), got {describe(value)}", key=key)
    if not value:
        raise config_error(f"expected {what}, got an empty string", key=key)


def _check_integer(value: object, low: int, high: int, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise config_error(f"expected an integer, got {describe(value)}", key=key)
    if value < low:
        raise config_error(f"must be at least {low}, got {value}", key=key)
    check_at_most(value, high, key)


def _check_percent(value: object, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise config_error(
            f"expected a percentage from 0 to 100, got {describe(value)}", key=key
        )
    if not (math.isfinite(value) and 0 <= value <= 100):
        raise config_error(
            f"expected a percentage from 0 to 100, got {describe(value)}", key=key
        )


def parse_compare(value: object) -> CompareConfig:
    """Read an inbound's C{compare} object (or a REST request's body).

    Checks what only JSON can get wrong (types, unknown and duplicate keys);
    the model checks the values.  C{maxBody} is a size (L{parse_size}).

    @raise ConfigError: naming the key (C{compare.<key>}); the caller adds
        the inbound.
    """
    if not isinstance(value, Mapping):
        raise config_error(
            f"expected an object of compare settings, got {describe(value)}",
            key="compare",
        )
    duplicates = getattr(value, "duplicates", ())
    if duplicates:
        raise config_error(
            f"key {quote(duplicates[0])} appears more than once", key="compare"
        )
    for key in value:
        if key not in COMPARE_KEYS:
            raise config_error(unknown_key(key, COMPARE_KEYS).problem, key="compare")
    options: dict[str, Any] = {}
    if "candidates" in value and value["candidates"] is not None:
        options["candidates"] = _string_list(value, "candidates", "outbound names")
    if "baseline" in value and value["baseline"] is not None:
        options["baseline"] = _string(value, "baseline")
    for key, attribute, what in (
        ("ignoreHeaders", "ignore_headers", "header names"),
        ("ignore", "ignore", 'field paths such as "$.meta.generatedAt"'),
        ("endpoints", "endpoints", 'endpoint patterns such as "GET /users/:id"'),
    ):
        if key in value:
            options[attribute] = _string_list(value, key, what)
    if "maxBody" in value:
        try:
            options["max_body"] = parse_size(value["maxBody"])
        except ValueError as e:
            problem = str(e)
            if not isinstance(value["maxBody"], str):
                problem += f", got {describe(value['maxBody'])}"
            raise config_error(problem, key=_key("maxBody")) from None
    for key, attribute, hint in (
        ("samples", "samples", "an integer"),
        ("queue", "queue", "an integer"),
    ):
        if key in value:
            options[attribute] = _integer(value, key, hint)
    for key in ("relative", "absolute"):
        if key in value:
            options[key] = _percent(value, key)
    return CompareConfig(**options)


def _string(obj: Mapping[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise config_error(
            f"expected an outbound name (a string), got {describe(value)}",
            key=_key(key),
        )
    return value


def _string_list(obj: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    value = obj[key]
    if not isinstance(value, list | tuple):
        raise config_error(
            f"expected an array of {what}, got {describe(value)}", key=_key(key)
        )
    for item in value:
        if not isinstance(item, str):
            raise config_error(
                f"expected an array of {what} (strings), got {describe(item)} in it",
                key=_key(key),
            )
    return tuple(value)


def _integer(obj: Mapping[str, Any], key: str, hint: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise config_error(f"expected {hint}, got {describe(value)}", key=_key(key))
    result: int = value
    return result


def _percent(obj: Mapping[str, Any], key: str) -> float:
    value = obj[key]
    _check_percent(value, _key(key))
    result: float = value
    return result
