"""The configuration: attrs models of inbounds and outbounds, JSON load/dump, checks.

The file format is gonfork's C{nfork.json}, a JSON array of inbound objects,
with a few keys of our own.  Every problem is reported as one L{ConfigError}
whose message names the inbound, the key and what is wrong with it.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from attrs import define, evolve, field, frozen

from nfork.config.addresses import (
    OutboundAddress,
    listen_key,
    listen_to_endpoint,
    parse_outbound_address,
)
from nfork.config.durations import format_duration, parse_duration

__all__ = [
    "DEFAULT_ERROR_CODE",
    "DEFAULT_IDLE_CONN",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_INFLIGHT",
    "DEFAULT_STATS_WINDOW",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMEOUT_CODE",
    "OUTBOUND_KEYS",
    "ConfigError",
    "InboundConfig",
    "OutboundConfig",
    "OutboundOptions",
    "check_unique",
    "decode_json",
    "dump_config",
    "load_config",
    "load_config_file",
    "parse_inbound",
    "parse_outbound",
]

DEFAULT_TIMEOUT = 1.0
DEFAULT_TIMEOUT_CODE = 503
DEFAULT_ERROR_CODE = 502
DEFAULT_IDLE_CONN = 64
DEFAULT_MAX_BODY = 10 * 1024 * 1024
DEFAULT_STATS_WINDOW = 1.0
DEFAULT_MAX_INFLIGHT = 1000

_INBOUND_KEYS = (
    "name",
    "listen",
    "out",
    "active",
    "timeout",
    "timeoutCode",
    "errorCode",
    "idleConn",
    "maxBody",
    "statsWindow",
)
_INBOUND_REQUIRED = ("listen", "out", "active")
_OUTBOUND_KEYS = ("addr", "sample", "methods", "timeout", "maxInflight")
_OUTBOUND_REQUIRED = ("addr",)
OUTBOUND_KEYS = _OUTBOUND_KEYS
"""The keys of an outbound object nfork handles itself; plugins take the others."""
_HTTP_SCHEMES = ("http", "https")
"""Schemes whose outbounds take only the keys above: any other key is a typo."""

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_RESERVED_NAMES = frozenset({"stats"})
"""Names that would clash with the REST API's paths."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP method is an RFC 7230 token."""

_DURATION_HINT = 'a Go duration such as "100ms" or "1.5s"'


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
    """How our own messages are built, so that context can be added on the way up."""

    position: str | None = None
    label: str | None = None
    mention_key: bool = True


def _error(
    problem: str,
    *,
    key: str | None = None,
    outbound: str | None = None,
    mention_key: bool = True,
    **context: str | None,
) -> ConfigError:
    """A ConfigError for C{problem}, whose message will show its context."""
    error = ConfigError(problem, key=key, outbound=outbound)
    error._parts = _Parts(mention_key=mention_key)
    _fill(error, **context)
    return error


def _fill(
    error: ConfigError,
    *,
    inbound: str | None = None,
    outbound: str | None = None,
    key: str | None = None,
    path: str | None = None,
    position: str | None = None,
    label: str | None = None,
) -> None:
    """Add the context C{error} does not have yet, and rewrite its message."""
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
        words.append(f"inbound {_quote(error.inbound)}")
    if error.outbound is not None:
        words.append(f"outbound {_quote(error.outbound)}")
    if error.key is not None and parts.mention_key:
        words.append(f"key {_quote(error.key)}")
    words.append(error.problem)
    error.message = ": ".join(words)
    error.args = (error.message,)


@contextmanager
def _context(**context: str | None) -> Iterator[None]:
    """Add context to the L{ConfigError}s raised inside."""
    try:
        yield
    except ConfigError as e:
        _fill(e, **context)
        raise


def _quote(text: str) -> str:
    """Quote C{text} as a JSON string for a message, shortened if huge.

    Non-ASCII text is shown as is unless it has unprintable characters, which
    are escaped so that the message stays on one line and can be printed.
    """
    if len(text) > 80:
        text = text[:77] + "..."
    return json.dumps(text, ensure_ascii=not text.isprintable())


def _quote_all(names: Iterable[str]) -> str:
    return ", ".join(_quote(name) for name in names)


def _describe(value: object) -> str:
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
        return f"the string {_quote(value)}"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_name(name: str, what: str) -> None:
    """Check a name given explicitly to an inbound or an outbound."""
    if name in _RESERVED_NAMES:
        raise _error(
            f"the {what} name {_quote(name)} is reserved (used by the REST API)"
        )
    if not _NAME.fullmatch(name):
        raise _error(
            f"invalid {what} name {_quote(name)} (names may contain only "
            'letters, digits, "_", "." and "-")'
        )


def _check_duration(value: float, key: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise _error(
            f"must be a duration greater than zero, got {_quote(_format(value))}",
            key=key,
        )


def _format(seconds: float) -> str:
    try:
        return format_duration(seconds)
    except ValueError:
        return repr(seconds)


class OutboundOptions(Mapping[str, Any]):
    """The extra keys of an outbound object, for the plugin of its scheme.

    A read-only mapping of JSON values, equal to any mapping with the same
    items.  nfork does not interpret them: the outbound's factory checks them
    (L{nfork.outbounds.api.IOutboundFactory.validate}).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        # A deep copy: nobody can change a configuration through the caller's
        # dict, nor through nested lists.
        self._items: dict[str, Any] = copy.deepcopy(dict(items or {}))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        # Values may be lists: hash the keys only (equal mappings have them).
        return hash(frozenset(self._items))

    def __repr__(self) -> str:
        return f"OutboundOptions({self._items!r})"


def _to_options(value: Mapping[str, Any] | None) -> OutboundOptions:
    if isinstance(value, OutboundOptions):
        return value
    return OutboundOptions(value)


@frozen
class OutboundConfig:
    """One outbound of an inbound: where its copies go, and which ones."""

    name: str
    address: OutboundAddress
    sample: float | None = None
    """Fraction (0, 1] of the requests copied to this outbound; None: all."""
    methods: tuple[str, ...] | None = None
    """Only requests with these (upper-case) methods are copied; None: all."""
    timeout: float | None = None
    """Seconds; overrides the inbound's timeout for this outbound."""
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    """Copies in flight beyond this many are dropped (and counted)."""
    options: OutboundOptions = field(factory=OutboundOptions, converter=_to_options)
    """Keys of the object form other than the ones above, for the plugin of a
    scheme other than http(s) (e.g. a sink's C{maxBytes}); checked by it."""

    def __attrs_post_init__(self) -> None:
        with _context(outbound=self.name):
            _check_name(self.name, "outbound")
            for key in self.options:
                if key in _OUTBOUND_KEYS or self.address.scheme in _HTTP_SCHEMES:
                    raise _error(
                        f"unknown key {_quote(key)} (valid keys: "
                        f"{_quote_all(_OUTBOUND_KEYS)})",
                        key=key,
                        mention_key=False,
                    )
            if self.sample is not None and not (0 < self.sample <= 1):
                raise _error(
                    "must be a number greater than 0 and at most 1, got "
                    f"{_describe(self.sample)}",
                    key="sample",
                )
            if self.methods is not None:
                if not self.methods:
                    raise _error("must list at least one method", key="methods")
                for method in self.methods:
                    if not (_TOKEN.fullmatch(method) and method == method.upper()):
                        raise _error(
                            f"invalid HTTP method {_quote(method)}", key="methods"
                        )
            if self.timeout is not None:
                _check_duration(self.timeout, "timeout")
            if self.max_inflight <= 0:
                raise _error(
                    f"must be a positive integer, got {_describe(self.max_inflight)}",
                    key="maxInflight",
                )

    def to_json(self) -> str | dict[str, Any]:
        """The JSON value for C{out}: the address alone unless an option is set."""
        options: dict[str, Any] = {}
        if self.sample is not None:
            options["sample"] = self.sample
        if self.methods is not None:
            options["methods"] = list(self.methods)
        if self.timeout is not None:
            options["timeout"] = format_duration(self.timeout)
        if self.max_inflight != DEFAULT_MAX_INFLIGHT:
            options["maxInflight"] = self.max_inflight
        options.update(copy.deepcopy(dict(self.options)))
        if not options:
            return self.address.raw
        return {"addr": self.address.raw, **options}


@frozen
class InboundConfig:
    """One inbound endpoint: where it listens and the outbounds it copies to."""

    name: str
    listen: str
    """The listen value as written in the configuration."""
    endpoint: str
    """The Twisted server endpoint description for C{listen}."""
    outbounds: tuple[OutboundConfig, ...]
    """In the order of the configuration file."""
    active: str
    """Name of the outbound whose response is sent to the client."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds an outbound has to answer."""
    timeout_code: int = DEFAULT_TIMEOUT_CODE
    """Status sent to the client when the active outbound times out."""
    error_code: int = DEFAULT_ERROR_CODE
    """Status sent to the client when the active outbound fails otherwise."""
    idle_conn: int = DEFAULT_IDLE_CONN
    """Idle keep-alive connections kept per outbound."""
    max_body: int = DEFAULT_MAX_BODY
    """Largest request body accepted, in bytes."""
    stats_window: float = DEFAULT_STATS_WINDOW
    """Seconds per stats window."""
    name_given: bool = True
    """False when the name defaults to C{listen}."""

    def __attrs_post_init__(self) -> None:
        with _context(inbound=self.name):
            if self.name_given:
                with _context(key="name"):
                    _check_name(self.name, "inbound")
            elif self.name != self.listen:
                raise _error(
                    "an inbound without a name given is named after its listen "
                    f"address {_quote(self.listen)}",
                    key="name",
                )
            if not self.outbounds:
                raise _error("must name at least one outbound", key="out")
            seen: set[str] = set()
            for outbound in self.outbounds:
                if outbound.name in seen:
                    raise _error(
                        f"duplicate outbound name {_quote(outbound.name)}", key="out"
                    )
                seen.add(outbound.name)
            active = self.outbound(self.active)
            if active is None:
                raise _error(
                    f'no outbound named {_quote(self.active)} in "out" '
                    f"(outbounds: {_quote_all(o.name for o in self.outbounds)})",
                    key="active",
                )
            for option, value in (
                ("sample", active.sample),
                ("methods", active.methods),
            ):
                if value is not None:
                    raise _error(
                        f"the active outbound {_quote(active.name)} always receives "
                        f"all traffic; remove {_quote(option)}",
                        outbound=active.name,
                        key=option,
                        mention_key=False,
                    )
            _check_duration(self.timeout, "timeout")
            for key, code in (
                ("timeoutCode", self.timeout_code),
                ("errorCode", self.error_code),
            ):
                if not 100 <= code <= 599:
                    raise _error(
                        f"must be an HTTP status code from 100 to 599, got {code}",
                        key=key,
                    )
            for key, count in (
                ("idleConn", self.idle_conn),
                ("maxBody", self.max_body),
            ):
                if count <= 0:
                    raise _error(f"must be a positive integer, got {count}", key=key)
            _check_duration(self.stats_window, "statsWindow")

    def outbound(self, name: str) -> OutboundConfig | None:
        """The outbound called C{name}, or None."""
        for outbound in self.outbounds:
            if outbound.name == name:
                return outbound
        return None

    @property
    def active_outbound(self) -> OutboundConfig:
        """The outbound whose response goes back to the client."""
        active = self.outbound(self.active)
        assert active is not None  # checked at construction
        return active

    def with_outbound(self, outbound: OutboundConfig) -> InboundConfig:
        """A copy with C{outbound} added, or replacing the one of the same name.

        @raise ConfigError: if the result is not valid (e.g. the active
            outbound replaced by a sampled one).
        """
        replaced = False
        outbounds: list[OutboundConfig] = []
        for current in self.outbounds:
            if current.name == outbound.name:
                outbounds.append(outbound)
                replaced = True
            else:
                outbounds.append(current)
        if not replaced:
            outbounds.append(outbound)
        return evolve(self, outbounds=tuple(outbounds))

    def without_outbound(self, name: str) -> InboundConfig:
        """A copy without the outbound C{name}.

        @raise ConfigError: if there is no such outbound, or it is the active one.
        """
        if self.outbound(name) is None:
            raise _error(
                f"no outbound named {_quote(name)} (outbounds: "
                f"{_quote_all(o.name for o in self.outbounds)})",
                inbound=self.name,
                key="out",
            )
        if name == self.active:
            raise _error(
                f"cannot remove the active outbound {_quote(name)}; make another "
                "outbound active first",
                inbound=self.name,
                outbound=name,
            )
        return evolve(
            self, outbounds=tuple(o for o in self.outbounds if o.name != name)
        )

    def with_active(self, name: str) -> InboundConfig:
        """A copy whose active outbound is C{name}.

        @raise ConfigError: if there is no such outbound, or it is sampled or
            filtered by method.
        """
        return evolve(self, active=name)

    def to_json(self) -> dict[str, Any]:
        """The JSON object for this inbound, as in the configuration file.

        gonfork's keys are always written; ours only when not at their default.
        """
        result: dict[str, Any] = {
            "name": self.name,
            "listen": self.listen,
            "out": {o.name: o.to_json() for o in self.outbounds},
            "active": self.active,
            "timeout": format_duration(self.timeout),
            "timeoutCode": self.timeout_code,
            "idleConn": self.idle_conn,
        }
        if self.error_code != DEFAULT_ERROR_CODE:
            result["errorCode"] = self.error_code
        if self.max_body != DEFAULT_MAX_BODY:
            result["maxBody"] = self.max_body
        if self.stats_window != DEFAULT_STATS_WINDOW:
            result["statsWindow"] = format_duration(self.stats_window)
        return result


class _JSONObject(dict[str, Any]):
    """A decoded JSON object that remembers the keys it had more than once."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _JSONObject:
    result = _JSONObject(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicates: list[str] = []
        for key, _ in pairs:
            if key in seen and key not in duplicates:
                duplicates.append(key)
            seen.add(key)
        result.duplicates = tuple(duplicates)
    return result


def _reject_constant(name: str) -> None:
    raise _error(f"invalid JSON: {name} is not a JSON value")


def _check_keys(
    obj: dict[Any, Any],
    allowed: Sequence[str],
    required: Sequence[str],
    *,
    others_allowed: bool = False,
) -> None:
    """Refuse duplicate and unknown keys (with a suggestion), require some.

    With C{others_allowed}, keys not in C{allowed} are accepted (they must be
    strings): someone else checks them.
    """
    if isinstance(obj, _JSONObject) and obj.duplicates:
        key = obj.duplicates[0]
        raise _error(
            f"key {_quote(key)} appears more than once", key=key, mention_key=False
        )
    for key in obj:
        if key not in allowed:
            if not isinstance(key, str):
                raise _error(f"unknown key {_describe(key)}")
            if others_allowed:
                continue
            problem = f"unknown key {_quote(key)}"
            by_lower = {name.lower(): name for name in allowed}
            close = difflib.get_close_matches(key[:100].lower(), by_lower, n=1)
            if close:
                problem += f" (did you mean {_quote(by_lower[close[0]])}?)"
            else:
                problem += f" (valid keys: {_quote_all(allowed)})"
            raise _error(problem, key=key, mention_key=False)
    for key in required:
        if key not in obj:
            raise _error(
                f"missing required key {_quote(key)}", key=key, mention_key=False
            )


def _string(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise _error(f"expected a string, got {_describe(value)}", key=key)
    return value


def _duration(obj: dict[str, Any], key: str, default: float) -> float:
    if key not in obj:
        return default
    value = obj[key]
    if not isinstance(value, str):
        raise _error(
            f"expected {_DURATION_HINT} (a string), got {_describe(value)}", key=key
        )
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise _error(str(e), key=key) from None
    if seconds <= 0:
        raise _error(
            f"must be a duration greater than zero, got {_quote(value)}", key=key
        )
    return seconds


def _integer(obj: dict[str, Any], key: str, default: int) -> int:
    if key not in obj:
        return default
    value = obj[key]
    if not _is_int(value):
        raise _error(f"expected an integer, got {_describe(value)}", key=key)
    result: int = value
    return result


def _address(text: object, key: str | None) -> OutboundAddress:
    if not isinstance(text, str):
        raise _error(f"expected an address string, got {_describe(text)}", key=key)
    try:
        return parse_outbound_address(text)
    except ValueError as e:
        raise _error(str(e), key=key) from None


def parse_outbound(inbound_name: str, name: str, value: object) -> OutboundConfig:
    """Check one C{out} entry: an address string (gonfork) or an object.

    The object form has the keys C{addr} (required), C{sample}, C{methods},
    C{timeout} and C{maxInflight}; for schemes other than http(s), any other
    key goes into L{OutboundConfig.options}, for the scheme's plugin to check.
    Whether it fits its inbound (e.g. as the active outbound) is checked by
    L{InboundConfig}.

    @raise ConfigError: naming the inbound, the outbound and the problem.
    """
    with _context(inbound=inbound_name, outbound=name):
        if not isinstance(name, str):
            raise _error(f"an outbound name must be a string, not {type(name)}")
        _check_name(name, "outbound")
        if isinstance(value, str):
            return OutboundConfig(name, _address(value, None))
        if not isinstance(value, dict):
            raise _error(
                'expected an address string or an object with "addr", got '
                f"{_describe(value)}"
            )
        _check_keys(
            value,
            _OUTBOUND_KEYS,
            _OUTBOUND_REQUIRED,
            others_allowed=_plugin_address(value.get("addr")),
        )
        address = _address(value["addr"], "addr")
        sample: float | None = None
        if "sample" in value:
            raw_sample = value["sample"]
            if not (_is_number(raw_sample) and 0 < raw_sample <= 1):
                raise _error(
                    "expected a number greater than 0 and at most 1, got "
                    f"{_describe(raw_sample)}",
                    key="sample",
                )
            sample = float(raw_sample)
        methods: tuple[str, ...] | None = None
        if "methods" in value:
            methods = _methods(value["methods"])
        timeout = _duration(value, "timeout", 0.0) if "timeout" in value else None
        max_inflight = _integer(value, "maxInflight", DEFAULT_MAX_INFLIGHT)
        if max_inflight <= 0:
            raise _error(
                f"must be a positive integer, got {max_inflight}", key="maxInflight"
            )
        return OutboundConfig(
            name,
            address,
            sample=sample,
            methods=methods,
            timeout=timeout,
            max_inflight=max_inflight,
            options={k: v for k, v in value.items() if k not in _OUTBOUND_KEYS},
        )


def _plugin_address(addr: object) -> bool:
    """Whether C{addr} is a URL of a scheme other than http(s), as a plugin's."""
    if not isinstance(addr, str) or "://" not in addr:
        return False
    return addr.partition("://")[0].lower() not in _HTTP_SCHEMES


def _methods(value: object) -> tuple[str, ...]:
    with _context(key="methods"):
        if not isinstance(value, list | tuple):
            raise _error(
                f'expected an array of HTTP methods such as ["GET", "HEAD"], got '
                f"{_describe(value)}"
            )
        if not value:
            raise _error("must list at least one method")
        methods: list[str] = []
        for method in value:
            if not isinstance(method, str):
                raise _error(
                    f"expected HTTP method names (strings), got {_describe(method)}"
                )
            if not _TOKEN.fullmatch(method):
                raise _error(f"invalid HTTP method {_quote(method)}")
            if method.upper() not in methods:
                methods.append(method.upper())
        return tuple(methods)


def _inbound_label(obj: object, index: int) -> tuple[str, str | None]:
    """How to show an inbound in messages, and its name, before checking it."""
    if not isinstance(obj, dict):
        return f"inbound #{index + 1}", None
    name, listen = obj.get("name"), obj.get("listen")
    if (
        isinstance(name, str)
        and name != listen
        and _NAME.fullmatch(name)
        and name not in _RESERVED_NAMES
    ):
        return f"inbound {_quote(name)}", name
    if isinstance(listen, str):
        return f"inbound #{index + 1} (listen {_quote(listen)})", listen
    return f"inbound #{index + 1}", None


def parse_inbound(obj: object, *, index: int = 0) -> InboundConfig:
    """Check one inbound object (an element of the file's array, or a POST body).

    C{index} is its position in the file's array, used in messages when the
    inbound has no name.

    @raise ConfigError: naming the inbound, the key and the problem.
    """
    label, display_name = _inbound_label(obj, index)
    with _context(inbound=display_name, label=label):
        if not isinstance(obj, dict):
            raise _error(f"expected an inbound object, got {_describe(obj)}")
        _check_keys(obj, _INBOUND_KEYS, _INBOUND_REQUIRED)
        listen = _string(obj, "listen")
        try:
            endpoint = listen_to_endpoint(listen)
        except ValueError as e:
            raise _error(str(e), key="listen") from None
        name, name_given = listen, False
        if "name" in obj:
            given = _string(obj, "name")
            # gonfork: an empty name means "the listen address"; a name equal
            # to it is what we write back for such an inbound.
            if given not in ("", listen):
                name, name_given = given, True
        out = obj["out"]
        if not isinstance(out, dict):
            raise _error(
                f"expected an object mapping outbound names to addresses, got "
                f"{_describe(out)}",
                key="out",
            )
        if isinstance(out, _JSONObject) and out.duplicates:
            raise _error(
                f"outbound {_quote(out.duplicates[0])} appears more than once",
                key="out",
            )
        if not out:
            raise _error("must name at least one outbound", key="out")
        outbounds = []
        for outbound_name, value in out.items():
            if not isinstance(outbound_name, str):
                raise _error(
                    f"outbound names must be strings, got {_describe(outbound_name)}",
                    key="out",
                )
            with _context(key="out"):
                _check_name(outbound_name, "outbound")
            outbounds.append(parse_outbound(name, outbound_name, value))
        active = _string(obj, "active")
        return InboundConfig(
            name=name,
            listen=listen,
            endpoint=endpoint,
            outbounds=tuple(outbounds),
            active=active,
            timeout=_duration(obj, "timeout", DEFAULT_TIMEOUT),
            timeout_code=_integer(obj, "timeoutCode", DEFAULT_TIMEOUT_CODE),
            error_code=_integer(obj, "errorCode", DEFAULT_ERROR_CODE),
            idle_conn=_integer(obj, "idleConn", DEFAULT_IDLE_CONN),
            max_body=_integer(obj, "maxBody", DEFAULT_MAX_BODY),
            stats_window=_duration(obj, "statsWindow", DEFAULT_STATS_WINDOW),
            name_given=name_given,
        )


def _check_unique(
    inbounds: Sequence[InboundConfig], labels: Sequence[str] | None
) -> None:
    by_key: dict[tuple[object, ...], int] = {}
    by_name: dict[str, int] = {}

    def show(position: int) -> str:
        if labels is None:
            return f"inbound {_quote(inbounds[position].name)}"
        return f"inbound #{position + 1}"

    for position, inbound in enumerate(inbounds):
        label = labels[position] if labels is not None else None
        with _context(inbound=inbound.name, label=label):
            key = listen_key(inbound.listen)
            other = by_key.get(key)
            if other is not None:
                raise _error(
                    f"{_quote(inbound.listen)} is the same address as the listen "
                    f"address {_quote(inbounds[other].listen)} of {show(other)}",
                    key="listen",
                )
            by_key[key] = position
            other = by_name.get(inbound.name)
            if other is not None:
                raise _error(
                    f"the name {_quote(inbound.name)} is already used by "
                    f"{show(other)} (listen {_quote(inbounds[other].listen)})",
                    key="name",
                )
            by_name[inbound.name] = position


def check_unique(inbounds: Sequence[InboundConfig]) -> None:
    """Refuse two inbounds with the same name or on the same listen address.

    The later of the two is the one reported.

    @raise ConfigError: naming the inbound and the key ("name" or "listen").
    """
    _check_unique(inbounds, None)


def decode_json(text: str) -> object:
    """Decode JSON strictly, for the configuration file and REST request bodies.

    Unlike C{json.loads}, refuses C{NaN} and C{Infinity} and remembers keys
    that appear twice in an object, so that L{parse_inbound} and
    L{parse_outbound} can refuse them.

    @raise ConfigError: with the line and column of a syntax error.
    """
    try:
        data: object = json.loads(
            text, object_pairs_hook=_object_pairs, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as e:
        problem = f"invalid JSON: {e.msg}"
        before = e.doc[: e.pos].rstrip()
        if before.endswith(",") and e.doc[e.pos : e.pos + 1] in ("]", "}"):
            problem += " (JSON does not allow a comma before a closing bracket)"
        raise _error(problem, position=f"line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise _error("invalid JSON: nested too deeply") from None
    except ValueError:
        # json.loads' only other complaint: an integer with thousands of digits.
        raise _error("invalid JSON: a number has too many digits") from None
    return data


def load_config(text: str) -> tuple[InboundConfig, ...]:
    """Parse and check a whole configuration: a JSON array of inbound objects.

    @raise ConfigError: for the first problem found, and only ConfigError.
    """
    data = decode_json(text)
    if not isinstance(data, list):
        raise _error(
            "the configuration must be a JSON array of inbound objects "
            f"([{{...}}, ...]), got {_describe(data)}"
        )
    inbounds = tuple(parse_inbound(obj, index=i) for i, obj in enumerate(data))
    labels = [_inbound_label(obj, i)[0] for i, obj in enumerate(data)]
    _check_unique(inbounds, labels)
    return inbounds


def load_config_file(path: str) -> tuple[InboundConfig, ...]:
    """Read, parse and check the configuration file at C{path}.

    @raise ConfigError: whose message starts with C{path}.
    """
    with _context(path=path):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise _error(
                f"cannot read the configuration file: {e.strerror or e}"
            ) from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise _error(
                f"the configuration file is not UTF-8 text (byte {e.start})"
            ) from None
        return load_config(text)


def dump_config(inbounds: Iterable[InboundConfig]) -> str:
    """The configuration file for C{inbounds}: indented JSON, loadable again."""
    return (
        json.dumps([i.to_json() for i in inbounds], indent=2, ensure_ascii=False) + "\n"
    )
