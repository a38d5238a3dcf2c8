"""Configuration errors and how their messages are worded.

Every problem is one L{ConfigError}.  Its message is built from parts: where
(the file, a position in it, the inbound, the outbound, the key) and what is
wrong (the problem).  Code that finds a problem words only the problem with
L{config_error}; the callers up the stack add where it is with
L{error_context} (or L{add_context}), so that each message shows all the
context there is, in one order, however deep the problem was found.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from attrs import define

__all__ = [
    "ConfigError",
    "add_context",
    "check_at_most",
    "config_error",
    "describe",
    "error_context",
    "plugin_error_context",
    "quote",
    "quote_all",
    "unknown_key",
]


class ConfigError(Exception):
    """A configuration problem; C{str()} is the full message for the user.

    For example C{inbound "foo": key "timeout": invalid duration "10x" (...)}.
    The attributes say what the message is about, for callers that want to
    react (the REST API picks a status code, a test checks the key).
    """

    def __init__(
        self,
        message: str,
        *,
        inbound: str | None = None,
        key: str | None = None,
        outbound: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        """The full message."""
        self.inbound = inbound
        """Name of the inbound concerned (its listen value if it has no name)."""
        self.key = key
        """The JSON key concerned, in the inbound or in the outbound object."""
        self.outbound = outbound
        """Name of the outbound concerned, if any."""
        self.path = path
        """The configuration file, when loaded from one."""
        self.problem = message
        """What is wrong, without saying where."""
        self._parts: _Parts | None = None

    def __str__(self) -> str:
        return self.message


@define
class _Parts:
    """How our own messages are built, so that context can be added on the way up.

    A L{ConfigError} made by its constructor has none: its message is kept
    as given.
    """

    position: str | None = None
    label: str | None = None
    mention_key: bool = True
    mention_outbound: bool = True


def config_error(
    problem: str,
    *,
    key: str | None = None,
    outbound: str | None = None,
    mention_key: bool = True,
    mention_outbound: bool = True,
    **context: str | None,
) -> ConfigError:
    """A L{ConfigError} for C{problem}, whose message shows where it is.

    C{context} takes the keywords of L{add_context}; callers up the stack may
    add more.  With C{mention_key} (or C{mention_outbound}) false, the key
    (or the outbound) is an attribute of the error but not written before
    the problem, which already names it.
    """
    error = ConfigError(problem, key=key, outbound=outbound)
    error._parts = _Parts(mention_key=mention_key, mention_outbound=mention_outbound)
    add_context(error, **context)
    return error


def add_context(
    error: ConfigError,
    *,
    inbound: str | None = None,
    outbound: str | None = None,
    key: str | None = None,
    path: str | None = None,
    position: str | None = None,
    label: str | None = None,
) -> None:
    """Add the context C{error} does not have yet, and rewrite its message.

    The message reads C{path: position: inbound: outbound: key: problem},
    leaving out what is unknown; C{label} replaces C{inbound "name"} where
    the inbound is better shown otherwise (C{inbound #2 (listen ":9080")}).
    An error made by the L{ConfigError} constructor keeps its message.
    """
    parts = error._parts
    if parts is None:
        return
    error.inbound = error.inbound or inbound
    error.outbound = error.outbound or outbound
    error.key = error.key or key
    error.path = error.path or path
    parts.position = parts.position or position
    parts.label = parts.label or label
    words = [word for word in (error.path, parts.position) if word is not None]
    if parts.label is not None:
        words.append(parts.label)
    elif error.inbound is not None:
        words.append(f"inbound {quote(error.inbound)}")
    if error.outbound is not None and parts.mention_outbound:
        words.append(f"outbound {quote(error.outbound)}")
    if error.key is not None and parts.mention_key:
        words.append(f"key {quote(error.key)}")
    words.append(error.problem)
    error.message = ": ".join(words)
    error.args = (error.message,)


@contextmanager
def error_context(**context: str | None) -> Iterator[None]:
    """Add context (the keywords of L{add_context}) to L{ConfigError}s raised inside."""
    try:
        yield
    except ConfigError as e:
        add_context(e, **context)
        raise


@contextmanager
def plugin_error_context(inbound: str, outbound: str) -> Iterator[None]:
    """Add the inbound and the outbound to the L{ConfigError}s a plugin raises.

    A plugin raises C{ConfigError(problem, key=key)}: its message becomes
    C{inbound "i": outbound "o": key "k": problem}, without the key when the
    problem already quotes it (C{unknown key "x" (...)}).
    """
    try:
        yield
    except ConfigError as e:
        if e._parts is None:
            mentioned = e.key is not None and quote(e.key) in e.problem
            e._parts = _Parts(mention_key=not mentioned)
        add_context(e, inbound=inbound, outbound=outbound)
        raise


def quote(text: str, limit: int = 80) -> str:
    """Quote C{text} as a JSON string for a message, shortened past C{limit}.

    Non-ASCII text is shown as is unless it has unprintable characters, which
    are escaped so that the message stays on one line and can be printed.
    """
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return json.dumps(text, ensure_ascii=not text.isprintable())


def quote_all(names: Iterable[str]) -> str:
    """Quote each of C{names} (L{quote}), separated by commas."""
    return ", ".join(quote(name) for name in names)


def describe(value: object) -> str:
    """Describe a JSON value for a message: its type, and its value if short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) > 10**30:
            return "a very large number"
        return f"the number {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {quote(value)}"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def check_at_most(value: int, maximum: int, key: str) -> None:
    """Refuse C{value} above C{maximum}, naming the bound.

    @raise ConfigError: C{must be at most 100000, got 1000000} (a number too
        long to print is "a very large number").
    """
    if value > maximum:
        given = str(value) if value < 10**30 else describe(value)
        raise config_error(f"must be at most {maximum}, got {given}", key=key)


def unknown_key(key: object, allowed: Sequence[str]) -> ConfigError:
    """The error for C{key}, not one of C{allowed}: suggests a close one, or lists them.

    The suggestion ignores case (C{"TimeoutCode"} suggests C{"timeoutCode"}).
    """
    if not isinstance(key, str):
        return config_error(f"unknown key {describe(key)}")
    problem = f"unknown key {quote(key)}"
    by_lower = {name.lower(): name for name in allowed}
    close = difflib.get_close_matches(key[:100].lower(), by_lower, n=1)
    if close:
        problem += f" (did you mean {quote(by_lower[close[0]])}?)"
    else:
        problem += f" (valid keys: {quote_all(allowed)})"
    return config_error(problem, key=key, mention_key=False)
