"""Endpoint names: which requests are counted together.

A request is named by the first configured pattern it matches
(C{GET /users/:id}, C{* /static/*}), or else by its method and path with
id-like segments replaced by a placeholder (C{GET /users/:int}), so that
C{/users/123} and C{/users/456} count as one endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote

from attrs import frozen

MAX_PATH = 256
"""Characters of a templated path kept; longer paths are cut and end in C{...}."""
MAX_SEGMENTS = 16
"""Path segments kept; further segments are replaced by C{/...}."""

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_PARAM = re.compile(r":[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[0-9]+\Z")
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_HEX = re.compile(r"[0-9a-fA-F]{16,}\Z")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,}={0,2}\Z")
_DIGIT = re.compile(r"[0-9]")
_LETTER = re.compile(r"[A-Za-z]")


@frozen
class EndpointPattern:
    """A compiled C{METHOD /path} pattern; its name is the pattern as written."""

    text: str
    method: str | None
    """None when the pattern's method is C{*} (any method)."""
    segments: tuple[str | None, ...]
    """Literal segments (percent-decoded), None for a C{:name} segment."""
    rest: bool
    """The pattern ends in C{*}: any remaining segments, possibly none."""

    def matches(self, method: str, segments: Sequence[str]) -> bool:
        """Whether a request with this method and (decoded) path segments matches."""
        if self.method is not None and self.method != method:
            return False
        if len(segments) < len(self.segments) or (
            not self.rest and len(segments) != len(self.segments)
        ):
            return False
        return all(
            want is None or want == got
            for want, got in zip(self.segments, segments, strict=False)
        )


def compile_pattern(text: str) -> EndpointPattern:
    """Compile an endpoint pattern such as C{GET /users/:id} or C{* /static/*}.

    @raise ValueError: the pattern is invalid, with a message saying why.
    """
    parts = text.split(" ")
    if len(parts) != 2:
        raise ValueError(
            f"endpoint pattern {text!r} must be a method, one space and a path, "
            f"like 'GET /users/:id'"
        )
    method, path = parts
    if not _METHOD.match(method):
        raise ValueError(
            f"endpoint pattern {text!r}: {method!r} is not an HTTP method or '*'"
        )
    if not path.startswith("/"):
        raise ValueError(f"endpoint pattern {text!r}: the path must start with '/'")
    if "?" in path:
        raise ValueError(
            f"endpoint pattern {text!r}: the query string is not part of an endpoint"
        )
    raw = _split(path)
    rest = bool(raw) and raw[-1] == "*"
    if rest:
        raw = raw[:-1]
    segments: list[str | None] = []
    for segment in raw:
        if segment == "*":
            raise ValueError(
                f"endpoint pattern {text!r}: '*' may only be the last segment"
            )
        if segment.startswith(":"):
            if not _PARAM.match(segment):
                raise ValueError(
                    f"endpoint pattern {text!r}: {segment!r} needs a name "
                    f"of letters, digits and '_' after ':'"
                )
            segments.append(None)
        else:
            segments.append(unquote(segment))
    return EndpointPattern(
        text=text,
        method=None if method == "*" else method,
        segments=tuple(segments),
        rest=rest,
    )


def _split(path: str) -> list[str]:
    """A path's segments: C{/a/b/} gives C{["a", "b", ""]}, C{/} gives C{[""]}."""
    return path[1:].split("/")


def template_segment(segment: str) -> str:
    """The placeholder for an id-like segment, or the segment itself."""
    if _INT.match(segment):
        return ":int"
    if len(segment) < 16:
        return segment
    if _UUID.match(segment):
        return ":uuid"
    if _HEX.match(segment):
        return ":hex"
    if _TOKEN.match(segment) and _DIGIT.search(segment) and _LETTER.search(segment):
        return ":token"
    return segment


class EndpointNamer:
    """Names requests by endpoint: configured patterns first, then templating."""

    def __init__(self, patterns: Sequence[str]) -> None:
        """Compile the patterns (L{compile_pattern}'s C{ValueError} if invalid)."""
        self._patterns = tuple(compile_pattern(text) for text in patterns)

    def name(self, method: bytes, target: bytes) -> str:
        """The endpoint of a request: C{"GET /users/:id"}, C{"GET /users/:int"}."""
        verb = method.decode("latin-1")
        path = target.split(b"?", 1)[0].split(b"#", 1)[0]
        text = path.decode("utf-8", "backslashreplace")
        if not text.startswith("/"):
            # OPTIONS * and the like: nothing to template.
            return f"{verb} {text[:MAX_PATH]}"
        segments = _split(text)
        if self._patterns:
            decoded = [unquote(segment) for segment in segments]
            for pattern in self._patterns:
                if pattern.matches(verb, decoded):
                    return pattern.text
        templated = [template_segment(s) for s in segments[:MAX_SEGMENTS]]
        if len(segments) > MAX_SEGMENTS:
            templated.append("...")
        name = "/" + "/".join(templated)
        if len(name) > MAX_PATH:
            name = name[: MAX_PATH - 3] + "..."
        return f"{verb} {name}"
