"""Request targets as the outbounds receive them: origin form, never above the root.

The lean server (L{nfork.proxy.server}) checks each request's target once its
head is complete.  An origin-form target (C{/path?query}) is passed on byte
for byte; only the rare others are looked at closely: an absolute-form target
(C{http://host/path}, RFC 9112 section 3.2.2) becomes its origin form, and a
path whose dot-segments climb above the root (C{/../admin}, also written
C{%2e%2e}, C{..;} or with backslashes) is refused, because an outbound's path
prefix (C{http://backend/api}) would not contain it.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(rb"/|\\|%2f|%5c")
"""What a backend may take as a path separator, in a lower-cased path."""

_SCHEMES = (b"http", b"https")


class BadTarget(ValueError):
    """A request target nfork does not forward (answered 400)."""


def needs_check(target: bytes) -> bool:
    """Whether C{target} is anything but a plain origin-form path.

    Two substring searches for the usual request: an origin-form target with
    no dot-segment that could climb (C{..} or an encoded dot) is forwarded as
    is without further work.
    """
    return target[:1] != b"/" or b".." in target or b"%2e" in target or b"%2E" in target


def checked_target(target: bytes, method: bytes) -> tuple[bytes, bytes | None]:
    """The origin-form target to forward, and the authority of an absolute one.

    C{/path?q} is returned unchanged (with no authority); C{http://a/path?q}
    as C{/path?q} with C{a}; C{*} only for C{OPTIONS}.

    @raise BadTarget: for another form or scheme, a userinfo or empty host,
        or a path whose dot-segments climb above the root.
    """
    authority: bytes | None = None
    if target == b"*":
        if method != b"OPTIONS":
            raise BadTarget("nfork: the request target * is only for OPTIONS")
        return target, None
    if target[:1] != b"/":
        target, authority = _origin_form(target)
    if climbs_above_root(target):
        raise BadTarget("nfork: the request path climbs above the root (..)")
    return target, authority


def _origin_form(target: bytes) -> tuple[bytes, bytes]:
    """Split an absolute-form target into its origin form and its authority."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise BadTarget("nfork: unsupported request target (origin or http(s) URL)")
    end = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority, path = rest[:end], rest[end:]
    if not authority or b"@" in authority:
        raise BadTarget("nfork: the request target's URL has no valid host")
    if path[:1] != b"/":
        path = b"/" + path
    return path, authority


def climbs_above_root(target: bytes) -> bool:
    """Whether a path's dot-segments would take it above the root.

    Conservative, so that no backend's normalization can climb: the query is
    ignored; C{%2e} counts as a dot, C{\\}, C{%2f} and C{%5c} as separators,
    and a segment's C{;parameters} are ignored (C{..;} is C{..}); empty and
    C{.} segments do not count as a level (C{//..} climbs).
    """
    path = target.partition(b"?")[0].partition(b"#")[0]
    lowered = path.lower().replace(b"%2e", b".")
    if b".." not in lowered:
        return False
    depth = 0
    for segment in _SEPARATORS.split(lowered):
        segment = segment.partition(b";")[0]
        if segment == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif segment and segment != b".":
            depth += 1
    return False
