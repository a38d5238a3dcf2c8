"""The differences between two captured answers: status, headers and body fields.

JSON bodies are compared field by field: objects as dicts (key order does not
matter), arrays by index.  Each document is parsed once, equal subtrees are
skipped with one C-level C{==}, and only unequal ones are walked, so the
cost follows the differences, not the document's size.

JSON has a single number type: C{1} and C{1.0} are the same value.  A
number is never equal to a boolean (C{1} against C{true} is a C{type}
difference), which Python's C{1 == True} would hide: L{same_json} keeps
C{==} exact.  Bodies are parsed with orjson, about three times as fast as
the standard parser, since parsing is most of a comparison's cost.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import orjson
from attrs import define, field, frozen

from nfork.compare.decode import decode_body
from nfork.compare.paths import IgnoreSet, Progress, format_key
from nfork.proxy.messages import CapturedAnswer

MAX_DIFFERENCES = 200
"""Differences reported per pair of answers; past this the walk stops."""


@frozen
class Difference:
    """One field on which two answers differ; values are JSON-ready."""

    field: str
    """C{status}, C{header.<name>}, C{body} or a JSON path such as C{$.a[2]}."""
    kind: str
    """C{status}, C{value}, C{type}, C{missing}, C{extra}, C{length},
    C{body} or C{truncated}."""
    primary: object
    other: object


class CompareRules:
    """What to compare: headers to ignore, ignored JSON fields, the body limit.

    It also remembers the last primary answer it prepared, since each
    primary is compared with the candidate and then with the baseline.
    """

    def __init__(
        self, ignore_headers: Iterable[str], ignore: Iterable[str], max_body: int
    ) -> None:
        """Compile the rules (C{ValueError} for an invalid ignore rule)."""
        self.ignore_headers = frozenset(name.lower() for name in ignore_headers)
        self.ignore = IgnoreSet.compile(ignore)
        self.max_body = max_body
        self._last: tuple[CapturedAnswer, Prepared] | None = None

    def prepare(self, answer: CapturedAnswer) -> Prepared:
        """The answer with its headers gathered and its body decoded and parsed.

        The last primary's result is kept, so a primary compared twice is
        parsed once.
        """
        last = self._last
        if last is not None and last[0] is answer:
            return last[1]
        prepared = _prepare(answer, self)
        self._last = (answer, prepared)
        return prepared


def _parse(data: bytes) -> Any:
    """The JSON document in C{data} (orjson: about 3x the standard parser).

    Integers over 64 bits are read as floating-point numbers, as a
    JavaScript client reads them.  orjson refuses what is not strict JSON
    (NaN, lone surrogates, documents nested over 1024 levels): the standard
    parser then tries, and a body neither can parse is compared as bytes.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8"))


@frozen
class BodyBytes:
    """A body compared as bytes (not JSON, or JSON that did not parse)."""

    data: bytes


@frozen
class BodyJSON:
    """A parsed JSON body."""

    document: Any = field(eq=False)
    """Compared with L{same_json}, not C{==} (which equates 1 and true)."""
    length: int = field(eq=False)
    """Bytes of the decoded body, for the summary of a C{body} difference."""


@frozen
class BodyCut:
    """A body kept only in part (or inflating past the limit): compared by digest."""

    length: int
    sha256: str


@frozen
class Prepared:
    """An answer ready to compare."""

    status: int | str
    """The status code, or the error word when there was no answer."""
    failed: bool
    headers: dict[str, list[str]]
    body: BodyBytes | BodyJSON | BodyCut
    encoding: list[str] | None
    content_type: list[str] | None


@define
class _Walk:
    """The differences found so far in one comparison."""

    rules: IgnoreSet
    found: list[Difference] = field(factory=list)

    def add(self, where: str, kind: str, primary: object, other: object) -> bool:
        """Record a difference; False once the list is full."""
        if len(self.found) >= MAX_DIFFERENCES:
            return False
        self.found.append(Difference(where, kind, primary, other))
        return True


def diff_answers(
    primary: CapturedAnswer, other: CapturedAnswer, rules: CompareRules
) -> list[Difference]:
    """The differences of C{other} from C{primary}, under C{rules}.

    A failed answer on either side gives only the C{status} difference.
    Never raises on what a backend sent.
    """
    mine = rules.prepare(primary)
    theirs = _prepare(other, rules, like=(primary, mine))
    if mine.failed or theirs.failed:
        if mine.status == theirs.status:
            return []
        return [Difference("status", "status", mine.status, theirs.status)]
    walk = _Walk(rules.ignore)
    if mine.status != theirs.status:
        walk.add("status", "status", mine.status, theirs.status)
    if mine.headers != theirs.headers:
        _diff_headers(mine.headers, theirs.headers, walk)
    try:
        _diff_bodies(mine.body, theirs.body, walk)
    except RecursionError:
        # A document nested deeper than the walk can follow: say it differs.
        walk.add("body", "body", _summary(mine.body), _summary(theirs.body))
    return walk.found


def _prepare(
    answer: CapturedAnswer,
    rules: CompareRules,
    like: tuple[CapturedAnswer, Prepared] | None = None,
) -> Prepared:
    """Gather headers by lower-case name and decode and parse the body.

    With C{like} (the primary and its prepared form), a body identical to
    the primary's, sent with the same encoding and type, is not parsed again.
    """
    if answer.error is not None or answer.code == 0:
        return Prepared(answer.error or "error", True, {}, BodyBytes(b""), None, None)
    headers: dict[str, list[str]] = {}
    for raw_name, raw_value in answer.headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        values = headers.get(name)
        if values is None:
            headers[name] = [value]
        else:
            values.append(value)
    encoding = headers.get("content-encoding")
    content_type = headers.get("content-type")
    for ignored in rules.ignore_headers.intersection(headers):
        del headers[ignored]
    if (
        like is not None
        and answer.body == like[0].body
        and not answer.truncated
        and not like[0].truncated
        and encoding == like[1].encoding
        and content_type == like[1].content_type
    ):
        body = like[1].body
    else:
        body = _body(answer, encoding, content_type, rules)
    return Prepared(answer.code, False, headers, body, encoding, content_type)


def _body(
    answer: CapturedAnswer,
    encoding: list[str] | None,
    content_type: list[str] | None,
    rules: CompareRules,
) -> BodyBytes | BodyJSON | BodyCut:
    """The body as compared: decoded, then JSON when it is JSON."""
    if answer.truncated:
        digest = answer.digest or hashlib.sha256(answer.body).digest()
        return BodyCut(answer.length, digest.hex())
    data = answer.body
    if encoding:
        decoded = decode_body(data, ", ".join(encoding), rules.max_body)
        if decoded is not None:
            if decoded.cut:
                return BodyCut(answer.length, hashlib.sha256(data).hexdigest())
            data = decoded.data
    if _looks_json(data, content_type):
        try:
            return BodyJSON(_parse(data), len(data))
        except (ValueError, RecursionError):
            pass
    return BodyBytes(data)


def _looks_json(data: bytes, content_type: list[str] | None) -> bool:
    """JSON by its Content-Type, or by a body that starts like an object or array."""
    if content_type:
        media = content_type[0].split(";", 1)[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            return True
    start = data[:64].lstrip()[:1]
    return start in (b"{", b"[")


def _diff_headers(
    mine: dict[str, list[str]], theirs: dict[str, list[str]], walk: _Walk
) -> None:
    """Headers present on one side only, or with other values."""
    for name, values in mine.items():
        other = theirs.get(name)
        where = "header." + name
        if other is None:
            walk.add(where, "missing", _header_value(values), None)
        elif other != values:
            walk.add(where, "value", _header_value(values), _header_value(other))
    for name, values in theirs.items():
        if name not in mine:
            walk.add("header." + name, "extra", None, _header_value(values))


def _header_value(values: list[str]) -> str | list[str]:
    """One value as a string, several as a list in arrival order."""
    return values[0] if len(values) == 1 else values


def _diff_bodies(
    mine: BodyBytes | BodyJSON | BodyCut,
    theirs: BodyBytes | BodyJSON | BodyCut,
    walk: _Walk,
) -> None:
    """Compare two bodies according to what each turned out to be."""
    if isinstance(mine, BodyJSON) and isinstance(theirs, BodyJSON):
        if same_json(mine.document, theirs.document):
            return
    elif mine == theirs:
        return
    progress = walk.rules.start()
    if progress is None:
        return
    if isinstance(mine, BodyJSON) and isinstance(theirs, BodyJSON):
        _diff_json(mine.document, theirs.document, "$", progress, walk)
    elif isinstance(mine, BodyCut) or isinstance(theirs, BodyCut):
        walk.add("body", "truncated", _summary(mine), _summary(theirs))
    else:
        walk.add("body", "body", _summary(mine), _summary(theirs))


def _summary(body: BodyBytes | BodyJSON | BodyCut) -> dict[str, object]:
    """A short description of a body for a C{body} or C{truncated} difference."""
    if isinstance(body, BodyCut):
        return {"length": body.length, "sha256": body.sha256, "truncated": True}
    if isinstance(body, BodyJSON):
        return {"length": body.length, "json": True}
    return {"length": len(body.data), "sha256": hashlib.sha256(body.data).hexdigest()}


def _diff_json(a: Any, b: Any, where: str, progress: Progress, walk: _Walk) -> bool:
    """Walk two unequal JSON values; False once the difference list is full."""
    kind_a, kind_b = _type(a), _type(b)
    if kind_a != kind_b:
        return walk.add(where, "type", kind_a, kind_b)
    if kind_a == "object":
        return _diff_objects(a, b, where, progress, walk)
    if kind_a == "array":
        return _diff_arrays(a, b, where, progress, walk)
    return walk.add(where, "value", a, b)


def _diff_objects(
    a: dict[str, Any], b: dict[str, Any], where: str, progress: Progress, walk: _Walk
) -> bool:
    ignore = walk.rules
    for key, value in a.items():
        other = b.get(key, _ABSENT)
        if other is not _ABSENT and same_json(value, other):
            continue
        below = ignore.descend(progress, key)
        if below is None:
            continue
        path = where + format_key(key)
        if other is _ABSENT:
            if not walk.add(path, "missing", value, None):
                return False
        elif not _diff_json(value, other, path, below, walk):
            return False
    for key, value in b.items():
        if key in a:
            continue
        if ignore.descend(progress, key) is None:
            continue
        if not walk.add(where + format_key(key), "extra", None, value):
            return False
    return True


def _diff_arrays(
    a: list[Any], b: list[Any], where: str, progress: Progress, walk: _Walk
) -> bool:
    ignore = walk.rules
    if len(a) != len(b) and not walk.add(where, "length", len(a), len(b)):
        return False
    for index, (value, other) in enumerate(zip(a, b, strict=False)):
        if same_json(value, other):
            continue
        below = ignore.descend(progress, index)
        if below is None:
            continue
        if not _diff_json(value, other, f"{where}[{index}]", below, walk):
            return False
    shorter = min(len(a), len(b))
    for index in range(shorter, max(len(a), len(b))):
        if ignore.descend(progress, index) is None:
            continue
        if index < len(a):
            added = walk.add(f"{where}[{index}]", "missing", a[index], None)
        else:
            added = walk.add(f"{where}[{index}]", "extra", None, b[index])
        if not added:
            return False
    return True


_ABSENT = object()


def same_json(a: Any, b: Any) -> bool:
    """Whether two parsed JSON values are the same, as JSON sees them.

    C{==} does almost all of it, in C, but Python's C{1 == True} would hide
    a number turned boolean: a boolean is never equal to a number, and two
    containers equal under C{==} are checked once more by their
    serialization (a fast C call, only for containers found equal), which
    tells C{true} from C{1}.  When the serializations differ for another
    reason (key order, C{1} against C{1.0}), the walk finds no difference.
    """
    if a.__class__ is not b.__class__:
        if a.__class__ is bool or b.__class__ is bool:
            return False
        return bool(a == b)  # 1 and 1.0: one JSON number
    if a != b:
        return False
    if a.__class__ is dict or a.__class__ is list:
        try:
            return orjson.dumps(a) == orjson.dumps(b)
        except TypeError:
            # What only the standard parser read (a lone surrogate, a huge
            # integer) only the standard serializer writes.
            return json.dumps(a) == json.dumps(b)
    return True


def _type(value: Any) -> str:
    """The JSON type word of a parsed value."""
    if value is True or value is False:
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return "array"
