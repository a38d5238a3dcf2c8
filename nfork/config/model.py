"""The configuration's attrs models: inbounds, outbounds, their defaults and checks.

The models check their values when they are built, whoever builds them: the
loader (L{nfork.config.load}), the REST API, a reload, a test.  A model that
exists is valid.  Turning JSON into models is L{nfork.config.load}'s job.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from attrs import evolve, field, frozen

from nfork.config.addresses import OutboundAddress
from nfork.config.compare import CompareConfig
from nfork.config.durations import format_duration
from nfork.config.errors import (
    check_at_most,
    config_error,
    describe,
    error_context,
    quote,
    quote_all,
    unknown_key,
)

__all__ = [
    "DEFAULT_BODY_IDLE_TIMEOUT",
    "DEFAULT_ERROR_CODE",
    "DEFAULT_IDLE_CONN",
    "DEFAULT_MAX_INFLIGHT",
    "DEFAULT_MIRROR_BODY",
    "DEFAULT_REQUEST_BODY_TIMEOUT",
    "DEFAULT_STATS_WINDOW",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMEOUT_CODE",
    "DEFAULT_WRITE_TIMEOUT",
    "ERROR_STATUS_RANGE",
    "HTTP_OPTION_KEYS",
    "MAX_BODY_LIMIT",
    "MAX_CONNECTIONS_LIMIT",
    "MAX_IDLE_CONN",
    "MAX_INFLIGHT_LIMIT",
    "OUTBOUND_KEYS",
    "SAMPLE_RANGE",
    "WEBSOCKET_MODES",
    "IPNetwork",
    "InboundConfig",
    "OutboundConfig",
    "OutboundOptions",
    "valid_name",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
"""A C{trustForwarded} network."""

DEFAULT_TIMEOUT = 1.0
DEFAULT_TIMEOUT_CODE = 503
DEFAULT_ERROR_CODE = 502
DEFAULT_IDLE_CONN = 64
DEFAULT_MIRROR_BODY = 10 * 1024 * 1024
"""Request bodies up to this many bytes are buffered and copied to every
outbound; larger ones stream to the active outbound only."""
DEFAULT_STATS_WINDOW = 1.0
DEFAULT_MAX_INFLIGHT = 1000
DEFAULT_REQUEST_BODY_TIMEOUT = 60.0
"""Seconds a client has to send a whole request body, once its head is in."""
DEFAULT_WRITE_TIMEOUT = 60.0
"""Seconds a client may leave its unsent answers unread before it is cut off."""
DEFAULT_BODY_IDLE_TIMEOUT = 60.0
"""Seconds of silence after which a streamed answer's body is cut
(C{idleTimeout})."""
MAX_CONNECTIONS_LIMIT = 1_000_000
"""The largest C{maxConnections}: each client connection is a descriptor."""

MAX_IDLE_CONN = 10_000
"""The largest C{idleConn}: idle sockets kept per backend host."""
MAX_BODY_LIMIT = 1024 * 1024 * 1024
"""The largest C{maxBody} (1 GiB): a request body is held in memory."""
MAX_INFLIGHT_LIMIT = 100_000
"""The largest C{maxInflight}: each copy in flight holds its request."""
ERROR_STATUS_RANGE = (400, 599)
"""C{timeoutCode} and C{errorCode}: an error status, which may carry a body
(a 1xx, 204 or 304 with a body is a malformed answer)."""

OUTBOUND_KEYS = ("addr", "sample", "methods", "timeout", "maxInflight", "websocket")
"""The keys of an outbound object nfork handles itself; plugins take the others."""
_HTTP_SCHEMES = ("http", "https")
"""Schemes whose outbounds take only the keys above and L{HTTP_OPTION_KEYS}:
any other key is a typo."""
HTTP_OPTION_KEYS = ("caFile", "serverName", "clientCert", "clientKey", "insecure")
"""The options of the built-in HTTP(S) outbound (TLS, for C{https}), whose
values its factory checks (L{nfork.outbounds.http})."""

SAMPLE_RANGE = "a number greater than 0 and at most 1"
"""What an outbound's C{sample} must be, in the words of the messages."""

WEBSOCKET_MODES = ("skip", "mirror")
"""An outbound's C{websocket}: what a shadow does with WebSocket sessions."""


_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_RESERVED_NAMES = frozenset({"stats", "compare"})
"""Names that would clash with the REST API's paths."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP method is an RFC 7230 token."""


def valid_name(name: str) -> bool:
    """Whether C{name} may name an inbound or an outbound."""
    return name not in _RESERVED_NAMES and _NAME.fullmatch(name) is not None


def _check_name(name: str, what: str, key: str) -> None:
    """Check a name given explicitly to an inbound or an outbound.

    The message names the key where the name is given, not the outbound by
    that name: it has just been found wrong.
    """
    if name in _RESERVED_NAMES:
        raise config_error(
            f"the {what} name {quote(name)} is reserved (used by the REST API)",
            key=key,
            mention_outbound=False,
        )
    if not _NAME.fullmatch(name):
        raise config_error(
            f"invalid {what} name {quote(name)} (names may contain only "
            'letters, digits, "_", "." and "-")',
            key=key,
            mention_outbound=False,
        )


def _check_duration(value: float, key: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise config_error(
            f"must be a duration greater than zero, got {quote(_format(value))}",
            key=key,
        )


def _check_positive(value: int, key: str, maximum: int) -> None:
    if value <= 0:
        raise config_error(f"must be a positive integer, got {value}", key=key)
    check_at_most(value, maximum, key)


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
    """Fraction (0, 1] of the requests copied to this outbound; None: all.
    An integer is stored as a float (the JSON C{1} is C{1.0})."""
    methods: tuple[str, ...] | None = None
    """Only requests with these (upper-case) methods are copied; None: all."""
    timeout: float | None = None
    """Seconds; overrides the inbound's timeout for this outbound."""
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    """Copies in flight beyond this many are dropped (and counted)."""
    websocket: str = "skip"
    """As a shadow: C{"mirror"} gets its own WebSocket session for each of
    the client's (its messages copied); C{"skip"} counts them skipped."""
    options: OutboundOptions = field(factory=OutboundOptions, converter=_to_options)
    """Keys of the object form other than the ones above, for the plugin of a
    scheme other than http(s) (e.g. a sink's C{maxBytes}); checked by it."""

    def __attrs_post_init__(self) -> None:
        with error_context(outbound=self.name):
            # A bad name is a bad key of the inbound's "out", shown as such.
            _check_name(self.name, "outbound", key="out")
            for key in self.options:
                if key in OUTBOUND_KEYS:
                    raise config_error(
                        f"{quote(key)} is one of nfork's own keys, not an option",
                        key=key,
                        mention_key=False,
                    )
                if self.address.scheme in _HTTP_SCHEMES and key not in HTTP_OPTION_KEYS:
                    raise unknown_key(key, (*OUTBOUND_KEYS, *HTTP_OPTION_KEYS))
            if self.sample is not None:
                if not 0 < self.sample <= 1:
                    raise config_error(
                        f"expected {SAMPLE_RANGE}, got {describe(self.sample)}",
                        key="sample",
                    )
                # The JSON number 1 is the fraction 1.0; checked first, as
                # given (a huge integer has no float).  Frozen: set it the
                # way attrs documents for __attrs_post_init__.
                object.__setattr__(self, "sample", float(self.sample))
            if self.methods is not None:
                if not self.methods:
                    raise config_error("must list at least one method", key="methods")
                for method in self.methods:
                    if not (_TOKEN.fullmatch(method) and method == method.upper()):
                        raise config_error(
                            f"invalid HTTP method {quote(method)}", key="methods"
                        )
            if self.timeout is not None:
                _check_duration(self.timeout, "timeout")
            _check_positive(self.max_inflight, "maxInflight", MAX_INFLIGHT_LIMIT)
            if self.websocket not in WEBSOCKET_MODES:
                raise config_error(
                    f"expected {quote_all(WEBSOCKET_MODES)}, got "
                    f"{describe(self.websocket)}",
                    key="websocket",
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
        if self.websocket != "skip":
            options["websocket"] = self.websocket
        options.update(copy.deepcopy(dict(self.options)))
        if not options:
            return self.address.raw
        return {"addr": self.address.raw, **options}


def _to_networks(networks: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    return tuple(networks)


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
    max_body: int | None = None
    """Largest request body accepted, in bytes; None: no limit."""
    mirror_body: int = DEFAULT_MIRROR_BODY
    """Largest request body buffered and copied to every outbound; a larger
    one streams to the active outbound only."""
    stats_window: float = DEFAULT_STATS_WINDOW
    """Seconds per stats window."""
    request_body_timeout: float = DEFAULT_REQUEST_BODY_TIMEOUT
    """Seconds a client has to send a request's whole body after its head."""
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    """Seconds a client may read none of its pending answers before it is cut off."""
    body_timeout: float | None = None
    """Seconds an outbound has to send an answer's whole body once its head
    is in; None: no limit."""
    idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT
    """Seconds of silence from an outbound after which its answer's body is cut."""
    max_connections: int | None = None
    """Client connections open at once; None: sized from the descriptor limit
    (L{nfork.proxy.server.default_max_connections})."""
    trust_forwarded: tuple[IPNetwork, ...] = field(default=(), converter=_to_networks)
    """Client networks whose C{X-Forwarded-*} and C{Forwarded} headers are
    kept and extended; others' are replaced (C{Forwarded} removed)."""
    name_given: bool = True
    """False when the name defaults to C{listen}."""
    compare: CompareConfig | None = None
    """How the shadows' answers are compared with the active one's; None:
    they are not."""

    def __attrs_post_init__(self) -> None:
        with error_context(inbound=self.name):
            if self.name_given:
                _check_name(self.name, "inbound", key="name")
            elif self.name != self.listen:
                raise config_error(
                    "an inbound without a name given is named after its listen "
                    f"address {quote(self.listen)}",
                    key="name",
                )
            if not self.outbounds:
                raise config_error("must name at least one outbound", key="out")
            seen: set[str] = set()
            for outbound in self.outbounds:
                if outbound.name in seen:
                    raise config_error(
                        f"duplicate outbound name {quote(outbound.name)}", key="out"
                    )
                seen.add(outbound.name)
            active = self.outbound(self.active)
            if active is None:
                raise config_error(
                    f'no outbound named {quote(self.active)} in "out" '
                    f"(outbounds: {quote_all(o.name for o in self.outbounds)})",
                    key="active",
                )
            for option, value in (
                ("sample", active.sample),
                ("methods", active.methods),
            ):
                if value is not None:
                    raise config_error(
                        f"the active outbound {quote(active.name)} always receives "
                        f"all traffic; remove {quote(option)}",
                        outbound=active.name,
                        key=option,
                        mention_key=False,
                    )
            _check_duration(self.timeout, "timeout")
            for key, code in (
                ("timeoutCode", self.timeout_code),
                ("errorCode", self.error_code),
            ):
                low, high = ERROR_STATUS_RANGE
                if not low <= code <= high:
                    raise config_error(
                        f"must be an HTTP error status from {low} to {high}, "
                        f"got {code}",
                        key=key,
                    )
            for key, count, maximum in (
                ("idleConn", self.idle_conn, MAX_IDLE_CONN),
                ("mirrorBody", self.mirror_body, MAX_BODY_LIMIT),
            ):
                _check_positive(count, key, maximum)
            if self.max_body is not None:
                _check_positive(self.max_body, "maxBody", MAX_BODY_LIMIT)
            _check_duration(self.stats_window, "statsWindow")
            _check_duration(self.request_body_timeout, "requestBodyTimeout")
            _check_duration(self.write_timeout, "writeTimeout")
            if self.body_timeout is not None:
                _check_duration(self.body_timeout, "bodyTimeout")
            _check_duration(self.idle_timeout, "idleTimeout")
            if self.max_connections is not None:
                _check_positive(
                    self.max_connections, "maxConnections", MAX_CONNECTIONS_LIMIT
                )
            for network in self.trust_forwarded:
                if not isinstance(network, IPNetwork):
                    raise config_error(
                        f"expected IP networks, got {describe(network)}",
                        key="trustForwarded",
                    )
            if self.compare is not None:
                for key, name in self.compare.named_outbounds():
                    if self.outbound(name) is None:
                        raise config_error(
                            f"no outbound named {quote(name)} (outbounds: "
                            f"{quote_all(o.name for o in self.outbounds)})",
                            key=key,
                        )

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
            raise config_error(
                f"no outbound named {quote(name)} (outbounds: "
                f"{quote_all(o.name for o in self.outbounds)})",
                inbound=self.name,
                key="out",
            )
        if name == self.active:
            raise config_error(
                f"cannot remove the active outbound {quote(name)}; make another "
                "outbound active first",
                inbound=self.name,
                outbound=name,
            )
        for key, named in self.compare.named_outbounds() if self.compare else ():
            if named == name:
                raise config_error(
                    f"outbound {quote(name)} is named in {key}; change compare first",
                    inbound=self.name,
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
        if self.max_body is not None:
            result["maxBody"] = self.max_body
        if self.mirror_body != DEFAULT_MIRROR_BODY:
            result["mirrorBody"] = self.mirror_body
        if self.stats_window != DEFAULT_STATS_WINDOW:
            result["statsWindow"] = format_duration(self.stats_window)
        if self.request_body_timeout != DEFAULT_REQUEST_BODY_TIMEOUT:
            result["requestBodyTimeout"] = format_duration(self.request_body_timeout)
        if self.body_timeout is not None:
            result["bodyTimeout"] = format_duration(self.body_timeout)
        if self.idle_timeout != DEFAULT_BODY_IDLE_TIMEOUT:
            result["idleTimeout"] = format_duration(self.idle_timeout)
        if self.write_timeout != DEFAULT_WRITE_TIMEOUT:
            result["writeTimeout"] = format_duration(self.write_timeout)
        if self.max_connections is not None:
            result["maxConnections"] = self.max_connections
        if self.trust_forwarded:
            result["trustForwarded"] = [str(n) for n in self.trust_forwarded]
        if self.compare is not None:
            result["compare"] = self.compare.to_json()
        return result

    def trusts_forwarded(self, client_ip: str) -> bool:
        """Whether the client at C{client_ip} is in a C{trustForwarded} network.

        An IPv4 client seen on an IPv6 socket (C{::ffff:10.0.0.1}) is matched
        as its IPv4 address.
        """
        if not self.trust_forwarded or not client_ip:
            return False
        try:
            address = ipaddress.ip_address(client_ip.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.trust_forwarded)
