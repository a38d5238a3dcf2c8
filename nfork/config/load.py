"""Loading the configuration: JSON text to models, and models back to JSON.

The loader checks what only JSON can get wrong (syntax, the type of each
value, unknown, duplicate and missing keys) and converts the values (listen
addresses, outbound addresses, durations); the models of
L{nfork.config.model} then check the values themselves.  Every problem is one
L{ConfigError} naming the file, the inbound, the outbound and the key.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from nfork.config.addresses import (
    OutboundAddress,
    listen_key,
    listen_to_endpoint,
    parse_outbound_address,
)
from nfork.config.compare import parse_compare
from nfork.config.durations import parse_duration
from nfork.config.errors import (
    config_error,
    describe,
    error_context,
    quote,
    quote_all,
    unknown_key,
)
from nfork.config.model import (
    DEFAULT_BODY_IDLE_TIMEOUT,
    DEFAULT_ERROR_CODE,
    DEFAULT_IDLE_CONN,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_MIRROR_BODY,
    DEFAULT_REQUEST_BODY_TIMEOUT,
    DEFAULT_STATS_WINDOW,
    DEFAULT_TIMEOUT,
    DEFAULT_TIMEOUT_CODE,
    DEFAULT_WRITE_TIMEOUT,
    OUTBOUND_KEYS,
    SAMPLE_RANGE,
    WEBSOCKET_MODES,
    InboundConfig,
    IPNetwork,
    OutboundConfig,
    valid_name,
)
from nfork.config.sizes import parse_size

__all__ = [
    "check_unique",
    "decode_json",
    "dump_config",
    "load_config",
    "load_config_file",
    "parse_inbound",
    "parse_outbound",
]

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
    "mirrorBody",
    "statsWindow",
    "requestBodyTimeout",
    "writeTimeout",
    "bodyTimeout",
    "idleTimeout",
    "maxConnections",
    "trustForwarded",
    "compare",
)
_INBOUND_REQUIRED = ("listen", "out", "active")
_OUTBOUND_REQUIRED = ("addr",)

_Default = TypeVar("_Default")

_DURATION_HINT = 'a Go duration such as "100ms" or "1.5s"'


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
    raise config_error(f"invalid JSON: {name} is not a JSON value")


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
        raise config_error(
            f"key {quote(key)} appears more than once", key=key, mention_key=False
        )
    for key in obj:
        if key not in allowed and not (others_allowed and isinstance(key, str)):
            raise unknown_key(key, allowed)
    for key in required:
        if key not in obj:
            raise config_error(
                f"missing required key {quote(key)}", key=key, mention_key=False
            )


def _string(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise config_error(f"expected a string, got {describe(value)}", key=key)
    return value


def _duration(obj: dict[str, Any], key: str, default: _Default) -> float | _Default:
    """The duration at C{key}, in seconds; the model checks it is long enough."""
    if key not in obj:
        return default
    value = obj[key]
    if not isinstance(value, str):
        raise config_error(
            f"expected {_DURATION_HINT} (a string), got {describe(value)}", key=key
        )
    try:
        return parse_duration(value)
    except ValueError as e:
        raise config_error(str(e), key=key) from None


def _integer(obj: dict[str, Any], key: str, default: int) -> int:
    if key not in obj:
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise config_error(f"expected an integer, got {describe(value)}", key=key)
    result: int = value
    return result


def _size(obj: dict[str, Any], key: str, default: int) -> int:
    """A byte size: an integer, or a string such as C{"1MiB"}."""
    if key not in obj:
        return default
    try:
        return parse_size(obj[key])
    except ValueError as e:
        if isinstance(obj[key], str):
            raise config_error(str(e), key=key) from None
        raise config_error(f"{e}, got {describe(obj[key])}", key=key) from None


def _networks(obj: dict[str, Any], key: str) -> tuple[IPNetwork, ...]:
    """The IP networks (CIDR strings, or single addresses) listed at C{key}."""
    if key not in obj:
        return ()
    value = obj[key]
    with error_context(key=key):
        if not isinstance(value, list):
            raise config_error(
                'expected an array of client networks such as ["10.0.0.0/8", '
                f'"::1/128"], got {describe(value)}'
            )
        networks: list[IPNetwork] = []
        for text in value:
            if not isinstance(text, str):
                raise config_error(
                    "expected networks in CIDR notation (strings), got "
                    f"{describe(text)}"
                )
            try:
                networks.append(ipaddress.ip_network(text.strip()))
            except ValueError as e:
                raise config_error(_network_problem(text, e)) from None
        return tuple(networks)


def _network_problem(text: str, error: ValueError) -> str:
    """Why C{text} is not a network, with the network meant when host bits are set."""
    if "has host bits set" in str(error):
        meant = ipaddress.ip_network(text.strip(), strict=False)
        return (
            f"{quote(text)} has bits set beyond its prefix length; "
            f"did you mean {quote(str(meant))}?"
        )
    return f'{quote(text)} is not an IP network in CIDR notation (such as "10.0.0.0/8")'


def _address(text: object, key: str | None) -> OutboundAddress:
    if not isinstance(text, str):
        raise config_error(f"expected an address string, got {describe(text)}", key=key)
    try:
        return parse_outbound_address(text)
    except ValueError as e:
        raise config_error(str(e), key=key) from None


def parse_outbound(inbound_name: str, name: str, value: object) -> OutboundConfig:
    """Read one C{out} entry: an address string (gonfork) or an object.

    The object form has the keys C{addr} (required), C{sample}, C{methods},
    C{timeout}, C{maxInflight} and C{websocket}; any other key goes into
    L{OutboundConfig.options}, for the plugin of the address's scheme to
    check (an http(s) outbound takes only its TLS options).  Whether it fits its inbound
    (e.g. as the active outbound) is checked by L{InboundConfig}.

    @raise ConfigError: naming the inbound, the outbound and the problem.
    """
    with error_context(inbound=inbound_name, outbound=name):
        if not isinstance(name, str):
            raise config_error(f"an outbound name must be a string, not {type(name)}")
        if isinstance(value, str):
            return OutboundConfig(name, _address(value, None))
        if not isinstance(value, dict):
            raise config_error(
                'expected an address string or an object with "addr", got '
                f"{describe(value)}"
            )
        # Other keys are options for the address's plugin, which the model
        # refuses for http(s); without an address they can only be typos.
        _check_keys(
            value, OUTBOUND_KEYS, _OUTBOUND_REQUIRED, others_allowed="addr" in value
        )
        return OutboundConfig(
            name,
            _address(value["addr"], "addr"),
            sample=_sample(value),
            methods=_methods(value["methods"]) if "methods" in value else None,
            timeout=_duration(value, "timeout", None),
            max_inflight=_integer(value, "maxInflight", DEFAULT_MAX_INFLIGHT),
            websocket=_websocket(value),
            options={k: v for k, v in value.items() if k not in OUTBOUND_KEYS},
        )


def _websocket(obj: dict[str, Any]) -> str:
    """The string at C{websocket} (C{"skip"} when absent); the model checks it."""
    value = obj.get("websocket", "skip")
    if not isinstance(value, str):
        raise config_error(
            f"expected {quote_all(WEBSOCKET_MODES)}, got {describe(value)}",
            key="websocket",
        )
    return value


def _sample(obj: dict[str, Any]) -> float | None:
    """The number at C{sample}, as given; the model checks its range."""
    if "sample" not in obj:
        return None
    value = obj["sample"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise config_error(
            f"expected {SAMPLE_RANGE}, got {describe(value)}", key="sample"
        )
    return value


def _methods(value: object) -> tuple[str, ...]:
    """HTTP method names, upper-cased, each once; the model checks them."""
    with error_context(key="methods"):
        if not isinstance(value, list | tuple):
            raise config_error(
                f'expected an array of HTTP methods such as ["GET", "HEAD"], got '
                f"{describe(value)}"
            )
        methods: list[str] = []
        for method in value:
            if not isinstance(method, str):
                raise config_error(
                    f"expected HTTP method names (strings), got {describe(method)}"
                )
            if method.upper() not in methods:
                methods.append(method.upper())
        return tuple(methods)


def _inbound_label(obj: object, index: int) -> tuple[str, str | None]:
    """How to show an inbound in messages, and its name, before checking it."""
    if not isinstance(obj, dict):
        return f"inbound #{index + 1}", None
    name, listen = obj.get("name"), obj.get("listen")
    if isinstance(name, str) and name != listen and valid_name(name):
        return f"inbound {quote(name)}", name
    if isinstance(listen, str):
        return f"inbound #{index + 1} (listen {quote(listen)})", listen
    return f"inbound #{index + 1}", None


def parse_inbound(obj: object, *, index: int = 0) -> InboundConfig:
    """Check one inbound object (an element of the file's array, or a POST body).

    C{index} is its position in the file's array, used in messages when the
    inbound has no name.

    @raise ConfigError: naming the inbound, the key and the problem.
    """
    label, display_name = _inbound_label(obj, index)
    with error_context(inbound=display_name, label=label):
        if not isinstance(obj, dict):
            raise config_error(f"expected an inbound object, got {describe(obj)}")
        _check_keys(obj, _INBOUND_KEYS, _INBOUND_REQUIRED)
        listen = _string(obj, "listen")
        try:
            endpoint = listen_to_endpoint(listen)
        except ValueError as e:
            raise config_error(str(e), key="listen") from None
        name, name_given = listen, False
        if "name" in obj:
            given = _string(obj, "name")
            # gonfork: an empty name means "the listen address"; a name equal
            # to it is what we write back for such an inbound.
            if given not in ("", listen):
                name, name_given = given, True
        out = obj["out"]
        if not isinstance(out, dict):
            raise config_error(
                f"expected an object mapping outbound names to addresses, got "
                f"{describe(out)}",
                key="out",
            )
        if isinstance(out, _JSONObject) and out.duplicates:
            raise config_error(
                f"outbound {quote(out.duplicates[0])} appears more than once",
                key="out",
            )
        outbounds = []
        for outbound_name, value in out.items():
            if not isinstance(outbound_name, str):
                raise config_error(
                    f"outbound names must be strings, got {describe(outbound_name)}",
                    key="out",
                )
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
            max_body=_size(obj, "maxBody", 0) if "maxBody" in obj else None,
            mirror_body=_size(obj, "mirrorBody", DEFAULT_MIRROR_BODY),
            stats_window=_duration(obj, "statsWindow", DEFAULT_STATS_WINDOW),
            request_body_timeout=_duration(
                obj, "requestBodyTimeout", DEFAULT_REQUEST_BODY_TIMEOUT
            ),
            write_timeout=_duration(obj, "writeTimeout", DEFAULT_WRITE_TIMEOUT),
            body_timeout=_duration(obj, "bodyTimeout", None),
            idle_timeout=_duration(obj, "idleTimeout", DEFAULT_BODY_IDLE_TIMEOUT),
            max_connections=(
                _integer(obj, "maxConnections", 0) if "maxConnections" in obj else None
            ),
            trust_forwarded=_networks(obj, "trustForwarded"),
            name_given=name_given,
            compare=(
                parse_compare(obj["compare"])
                if obj.get("compare") is not None
                else None
            ),
        )


def _check_unique(
    inbounds: Sequence[InboundConfig], labels: Sequence[str] | None
) -> None:
    by_key: dict[tuple[object, ...], int] = {}
    by_name: dict[str, int] = {}

    def show(position: int) -> str:
        if labels is None:
            return f"inbound {quote(inbounds[position].name)}"
        return f"inbound #{position + 1}"

    for position, inbound in enumerate(inbounds):
        label = labels[position] if labels is not None else None
        with error_context(inbound=inbound.name, label=label):
            key = listen_key(inbound.listen)
            other = by_key.get(key)
            if other is not None:
                raise config_error(
                    f"{quote(inbound.listen)} is the same address as the listen "
                    f"address {quote(inbounds[other].listen)} of {show(other)}",
                    key="listen",
                )
            by_key[key] = position
            other = by_name.get(inbound.name)
            if other is not None:
                raise config_error(
                    f"the name {quote(inbound.name)} is already used by "
                    f"{show(other)} (listen {quote(inbounds[other].listen)})",
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
        position = f"line {e.lineno} column {e.colno}"
        raise config_error(problem, position=position) from None
    except RecursionError:
        raise config_error("invalid JSON: nested too deeply") from None
    except ValueError:
        # json.loads' only other complaint: an integer with thousands of digits.
        raise config_error("invalid JSON: a number has too many digits") from None
    return data


def load_config(text: str) -> tuple[InboundConfig, ...]:
    """Parse and check a whole configuration: a JSON array of inbound objects.

    @raise ConfigError: for the first problem found, and only ConfigError.
    """
    data = decode_json(text)
    if not isinstance(data, list):
        raise config_error(
            "the configuration must be a JSON array of inbound objects "
            f"([{{...}}, ...]), got {describe(data)}"
        )
    inbounds = tuple(parse_inbound(obj, index=i) for i, obj in enumerate(data))
    labels = [_inbound_label(obj, i)[0] for i, obj in enumerate(data)]
    _check_unique(inbounds, labels)
    return inbounds


def load_config_file(path: str) -> tuple[InboundConfig, ...]:
    """Read, parse and check the configuration file at C{path}.

    @raise ConfigError: whose message starts with C{path}.
    """
    with error_context(path=path):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise config_error(
                f"cannot read the configuration file: {e.strerror or e}"
            ) from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise config_error(
                f"the configuration file is not UTF-8 text (byte {e.start})"
            ) from None
        return load_config(text)


def dump_config(inbounds: Iterable[InboundConfig]) -> str:
    """The configuration file for C{inbounds}: indented JSON, loadable again."""
    return (
        json.dumps([i.to_json() for i in inbounds], indent=2, ensure_ascii=False) + "\n"
    )
