"""The control API: gonfork's REST routes and ours, translated to controller calls.

L{ControlAPI} is a Klein app held by an object (Klein's "non-global state"
pattern): each route reads from the L{Controller} or asks L{Changes} for a
change, and turns the outcome, or the exception, into JSON.  There is no
logic of its own here beyond HTTP: validation is the config loader's,
conflicts are the controller's, persistence is L{nfork.control.changes}'s.

Paths are matched on the raw (percent-encoded) request path and each name
is decoded on its own, so that an inbound named after its listen address
(":9080", or "unix:/run/nfork.sock" written "unix:%2Frun%2Fnfork.sock")
is matched exactly.  Every error is C{{"error": "..."}}.

Browsers are kept out (L{ControlResource}): a web page the operator opens
must not be able to change the routing (a form posted to the API, a
C{fetch} without preflight) nor, through DNS rebinding, read it.  Every
route but L{OPEN_PATHS} answers only to the API's own C{Host} names
(L{ControlHosts}); a request that changes something is refused when its
C{Origin} is another site's, or when it carries a C{Content-Type} other
than C{application/json} (a body always needs one; a bodiless POST such as
C{activate} may send none).  File sinks asked for through the API are
confined to C{--sink-dir} (L{nfork.outbounds.sinks.file.check_sink_dir}).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any, cast
from urllib.parse import quote, unquote

from attrs import define, field
from klein import Klein
from klein.resource import KleinResource
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import BaseConverter, ValidationError

from nfork.compare.runtime import UnknownCandidate
from nfork.config import (
    ConfigError,
    OutboundConfig,
    decode_json,
    parse_inbound,
    parse_outbound,
)
from nfork.config.compare import parse_compare
from nfork.config.errors import error_context, plugin_error_context
from nfork.config.errors import quote as quoted
from nfork.control.changes import Changes, PersistError
from nfork.control.controller import (
    CompareOff,
    Conflict,
    Controller,
    UnknownInbound,
    UnknownOutbound,
)
from nfork.control.dashboard import Dashboard, is_dashboard_path
from nfork.control.klog import LogRing, parse_level
from nfork.control.metrics import metrics_registry
from nfork.control.profiling import (
    DEFAULT_SECONDS,
    MAX_SECONDS,
    ProfileBusy,
    Profiler,
    heap_report,
    start_heap_tracing,
    stop_heap_tracing,
    thread_stacks,
)
from nfork.outbounds.sinks.file import (
    BlockingRunner,
    OutsideSinkDir,
    check_sink_dir,
    sink_path,
    thread_runner,
)

MAX_BODY = 1024 * 1024
"""The largest request body accepted, in bytes (larger ones get 413)."""

OPEN_PATHS = frozenset({b"/healthz", b"/metrics"})
"""Paths served without the token and whatever the C{Host}: what load
balancers and Prometheus poll."""

LOOPBACK_NAMES = frozenset({"localhost"})
"""Host names that are the control API's own (with its port), besides
loopback and bound addresses."""

_CHANGING_METHODS = frozenset({b"POST", b"PUT", b"DELETE"})
_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
"""Methods a browser's page may send freely; every other one changes
something and gets the C{Origin} and C{Content-Type} rules."""

_PPROF_INDEX = """\
nfork profiling endpoints (Python's equivalents of Go's pprof):

/debug/pprof/profile?seconds=N  CPU profile of the reactor thread for N seconds
                                (default 5, at most 60), taken while traffic
                                keeps flowing; text sorted by cumulative time,
                                or ?format=pstats for the raw pstats file
/debug/pprof/threads            the current stack of every thread
/debug/pprof/heap               top allocations, once tracemalloc runs:
                                POST starts it (it slows allocations down),
                                GET reports, DELETE stops it
/debug/klog                     the last 1000 log events (?level=warn)
"""


class BadRequest(Exception):
    """The request itself is wrong (a query parameter, a body that is not UTF-8)."""


class Forbidden(Exception):
    """The request is understood but not allowed (a file sink outside --sink-dir)."""


def split_authority(value: str) -> tuple[str, int | None] | None:
    """C{(host, port)} of a C{Host} value or an origin's C{host[:port]}.

    The host is lower-cased, without brackets (IPv6) or a final dot; the
    port is None when absent.  None for anything malformed.
    """
    port_text: str | None = None
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        if rest:
            port_text = rest[1:]
    else:
        host, colon, port_text_or_empty = value.partition(":")
        if colon:
            port_text = port_text_or_empty
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
            return None
        port: int | None = int(port_text)
        if not 0 < cast(int, port) <= 65535:
            return None
    else:
        port = None
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host or any(c in host for c in "/\\@ \t?#"):
        return None
    return host, port


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@define
class ControlHosts:
    """The C{Host} values the control API answers to, against DNS rebinding.

    A page of C{evil.example} whose name is made to resolve to the control
    API's address sends C{Host: evil.example}: only the API's own names are
    served.  They are: the names given with C{--control-allow-host}
    (C{name}: any port; C{name:port}: that one), and, with the port the API
    listens on, C{localhost}, every loopback address and the address it is
    bound to (any IP address when bound to all of them).  On a UNIX socket
    C{localhost} and loopback addresses are accepted with any port.
    """

    names: tuple[tuple[str, int | None], ...] = ()
    """Parsed C{--control-allow-host} values (L{split_authority})."""
    _port: int | None = field(default=None, init=False)
    _address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = field(
        default=None, init=False
    )
    _any_address: bool = field(default=False, init=False)
    _unix: bool = field(default=False, init=False)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ControlHosts:
        """From C{--control-allow-host} values.

        @raise ValueError: for a value that is not C{name} or C{name:port}.
        """
        parsed = []
        for name in names:
            authority = split_authority(name.strip())
            if authority is None:
                raise ValueError(f"invalid host name {name!r} (expected NAME[:PORT])")
            parsed.append(authority)
        return cls(tuple(parsed))

    def listening(self, address: object) -> None:
        """Learn the address the control API got (its port may have been 0)."""
        if isinstance(address, IPv4Address | IPv6Address):
            self._port = address.port
            ip = _ip(address.host.partition("%")[0])
            self._any_address = ip is not None and ip.is_unspecified
            self._address = ip
        elif isinstance(address, UNIXAddress):
            self._unix = True

    def allows(self, value: bytes) -> bool:
        """Whether a request with C{Host: value} is for the control API."""
        authority = split_authority(value.decode("latin-1").strip())
        if authority is None:
            return False
        host, port = authority
        for name, name_port in self.names:
            if host == name and (name_port is None or name_port == (port or 80)):
                return True
        ip = _ip(host)
        local = host in LOOPBACK_NAMES or (ip is not None and ip.is_loopback)
        if self._unix:
            return local
        if self._port is None or (port or 80) != self._port:
            return False
        return local or (ip is not None and (self._any_address or ip == self._address))


def own_origin(origin: bytes, host: bytes) -> bool:
    """Whether C{Origin: origin} is the site of C{Host: host} (same authority).

    C{null}, another scheme than http(s), another host or port: no.
    """
    scheme, sep, rest = origin.decode("latin-1").strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        return False
    theirs = split_authority(rest)
    ours = split_authority(host.decode("latin-1").strip())
    if theirs is None or ours is None:
        return False
    default = 80 if scheme == "http" else 443
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)


class _NameConverter(BaseConverter):
    """One path segment, percent-decoded: an inbound or outbound name.

    It never matches the literal "stats" or "compare", reserved names, so
    that for example C{DELETE /v1/nfork/stats} is a wrong method (405), not
    an unknown inbound, and C{PUT /v1/nfork/web/compare} never sets an
    outbound.
    """

    regex = r"(?!(?:stats|compare)\Z)[^/]+"

    def to_python(self, value: str) -> str:
        try:
            return unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise ValidationError() from None

    def to_url(self, value: Any) -> str:
        return quote(str(value), safe="")


def _json(request: IRequest, code: int, value: object) -> bytes:
    """Answer C{value} as JSON with status C{code}."""
    request.setResponseCode(code)
    body = json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n"
    return _body(request, b"application/json", body)


def _text(request: IRequest, text: str) -> bytes:
    return _body(request, b"text/plain; charset=utf-8", text.encode())


def _body(request: IRequest, content_type: bytes, body: bytes) -> bytes:
    """Answer C{body} with its length: no chunked encoding for small answers."""
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Content-Length", str(len(body)).encode())
    return body


def _format_address(address: object) -> str:
    """C{host:port} for a TCP address, the path for a UNIX socket."""
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress) and address.name is not None:
        name = address.name
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return str(address)


def _path(request: IRequest) -> str:
    return cast(bytes, request.path).decode("latin-1")


def _query(request: IRequest, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    return cast(bytes, values[-1]).decode("utf-8", errors="replace")


def _read_json(request: IRequest) -> object:
    """The request body, decoded as strictly as the configuration file."""
    content = request.content
    data = content.read() if content is not None else b""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("invalid JSON: the request body is not UTF-8 text") from None
    return decode_json(text)


class ControlAPI:
    """The control API of one controller; L{resource} is what a Site serves."""

    app = Klein()
    app.url_map.converters["name"] = _NameConverter
    # An empty segment ("/v1/nfork//stats") matches no route: a 404, no redirect.
    app.url_map.merge_slashes = False

    _log = Logger()

    def __init__(
        self,
        controller: Controller,
        reactor: Any,
        *,
        changes: Changes | None = None,
        log_ring: LogRing | None = None,
        token: str | None = None,
        ready: Callable[[], bool] = lambda: True,
        hosts: ControlHosts | None = None,
        sink_dir: str | None = None,
        workers: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        """
        @param changes: applies (and persists) changes; default: not persisted.
        @param log_ring: the recent log events served by C{/debug/klog}.
        @param token: if given, every route but L{OPEN_PATHS} requires
            C{Authorization: Bearer <token>}.
        @param ready: whether every configured inbound listens (C{/healthz}).
        @param hosts: the C{Host} values served (every route but
            L{OPEN_PATHS}); None: any (an API embedded behind other checks).
        @param sink_dir: the directory C{file://} sinks given in a request
            must be in; None: such sinks are refused.
        @param workers: each worker process's figures (C{/debug/workers});
            None: a single process.
        """
        self._controller = controller
        self._changes = changes if changes is not None else Changes(controller)
        self._log_ring = log_ring if log_ring is not None else LogRing()
        self._token = token
        self._ready = ready
        self._hosts = hosts
        self._sink_dir = sink_dir
        self._workers = workers
        self._run: BlockingRunner = thread_runner(reactor)
        self.profiler = Profiler(reactor)
        self.registry = metrics_registry(controller)

    def resource(self) -> Resource:
        """The resource to serve: browser rules, token, body limit, then routes."""
        return ControlResource(self.app.resource(), self._token, self._hosts)

    async def _check_sinks(
        self, inbound: str, outbounds: Iterable[OutboundConfig]
    ) -> None:
        """Refuse a C{file://} sink outside C{--sink-dir} (L{Forbidden}).

        Only the API's callers are confined: the config file's sinks are the
        operator's, and so are those of a reload.
        """
        for outbound in outbounds:
            if outbound.address.scheme != "file":
                continue
            where = f"inbound {quoted(inbound)}: outbound {quoted(outbound.name)}"
            with plugin_error_context(inbound, outbound.name):
                path = sink_path(outbound)  # a malformed address is a 400
            if self._sink_dir is None:
                raise Forbidden(
                    f"{where}: file sinks created through the control API must be "
                    "inside the directory given with --sink-dir, which is not set"
                )
            try:
                await self._run(check_sink_dir, path, self._sink_dir)
            except OutsideSinkDir as e:
                raise Forbidden(f"{where}: {e} (--sink-dir)") from None

    # -- gonfork's routes -------------------------------------------------

    @app.route("/v1/nfork", methods=["GET"])
    def list_inbounds(self, request: IRequest) -> bytes:
        """Every inbound, as the configuration file has them."""
        return _json(request, 200, [c.to_json() for c in self._controller.configs()])

    @app.route("/v1/nfork", methods=["POST"])
    async def add_inbound(self, request: IRequest) -> bytes:
        """Start the inbound in the body; it listens before the answer."""
        config = parse_inbound(_read_json(request))
        await self._check_sinks(config.name, config.outbounds)
        added = await self._changes.add_inbound(config)
        request.setHeader(
            b"Location", f"/v1/nfork/{quote(added.name, safe='')}".encode()
        )
        self._audit(request, 201)
        return _json(request, 201, added.to_json())

    @app.route("/v1/nfork/stats", methods=["GET"])
    def all_stats(self, request: IRequest) -> bytes:
        """C{{inbound: {outbound: stats}}}."""
        return _json(request, 200, self._controller.stats())

    @app.route("/v1/nfork/<name:inbound>", methods=["GET"])
    def get_inbound(self, request: IRequest, inbound: str) -> bytes:
        """One inbound."""
        return _json(request, 200, self._controller.inbound(inbound).config.to_json())

    @app.route("/v1/nfork/<name:inbound>", methods=["DELETE"])
    async def remove_inbound(self, request: IRequest, inbound: str) -> bytes:
        """Stop an inbound; its port is closed before the answer."""
        removed = await self._changes.remove_inbound(inbound)
        self._audit(request, 200)
        return _json(request, 200, removed.to_json())

    @app.route("/v1/nfork/<name:inbound>/stats", methods=["GET"])
    def inbound_stats(self, request: IRequest, inbound: str) -> bytes:
        """C{{outbound: stats}} of one inbound."""
        return _json(request, 200, self._controller.inbound_stats(inbound))

    # -- comparison ---------------------------------------------------------

    @app.route("/v1/nfork/<name:inbound>/compare", methods=["GET"])
    def compare_report(self, request: IRequest, inbound: str) -> bytes:
        """The comparison's figures per candidate, endpoint and field."""
        return _json(request, 200, self._controller.compare_report(inbound))

    @app.route("/v1/nfork/<name:inbound>/compare", methods=["DELETE"])
    def reset_compare(self, request: IRequest, inbound: str) -> bytes:
        """Forget the comparison's counters and samples; the empty report."""
        report = self._controller.reset_compare(inbound)
        self._audit(request, 200)
        return _json(request, 200, report)

    @app.route("/v1/nfork/<name:inbound>/compare", methods=["PUT"])
    async def set_compare(self, request: IRequest, inbound: str) -> bytes:
        """Replace the compare settings (the body's object; C{null}: none)."""
        self._controller.inbound(inbound)  # an unknown inbound is a 404 first
        body = _read_json(request)
        with error_context(inbound=inbound):
            compare = None if body is None else parse_compare(body)
        updated = await self._changes.set_compare(inbound, compare)
        self._audit(request, 200)
        return _json(request, 200, updated.to_json())

    @app.route(
        "/v1/nfork/<name:inbound>/compare/<name:candidate>/samples", methods=["GET"]
    )
    def compare_samples(self, request: IRequest, inbound: str, candidate: str) -> bytes:
        """The examples kept of one field differing on one endpoint."""
        endpoint = _query(request, "endpoint")
        field_path = _query(request, "field")
        if endpoint is None or field_path is None:
            raise BadRequest(
                "the query needs endpoint and field, e.g. "
                "?endpoint=GET%20/users/:id&field=$.name (names as in GET "
                f"/v1/nfork/{inbound}/compare)"
            )
        samples = self._controller.compare_samples(
            inbound, candidate, endpoint, field_path
        )
        return _json(request, 200, samples)

    @app.route("/v1/nfork/<name:inbound>/<name:outbound>", methods=["PUT"])
    async def put_outbound(
        self, request: IRequest, inbound: str, outbound: str
    ) -> bytes:
        """Add or replace an outbound: 201 when added, 200 when replaced."""
        self._controller.inbound(inbound)  # an unknown inbound is a 404 first
        config = parse_outbound(inbound, outbound, _read_json(request))
        await self._check_sinks(inbound, [config])
        updated, added = await self._changes.put_outbound(inbound, config)
        code = 201 if added else 200
        self._audit(request, code)
        return _json(request, code, updated.to_json())

    @app.route("/v1/nfork/<name:inbound>/<name:outbound>", methods=["DELETE"])
    async def remove_outbound(
        self, request: IRequest, inbound: str, outbound: str
    ) -> bytes:
        """Remove an outbound (not the active one)."""
        updated = await self._changes.remove_outbound(inbound, outbound)
        self._audit(request, 200)
        return _json(request, 200, updated.to_json())

    @app.route("/v1/nfork/<name:inbound>/<name:outbound>/stats", methods=["GET"])
    def outbound_stats(self, request: IRequest, inbound: str, outbound: str) -> bytes:
        """One outbound's stats."""
        route = self._controller.outbound_route(inbound, outbound)
        return _json(request, 200, route.stats.snapshot())

    @app.route("/v1/nfork/<name:inbound>/<name:outbound>/activate", methods=["POST"])
    async def activate(self, request: IRequest, inbound: str, outbound: str) -> bytes:
        """Make an outbound the active one, for the next request on."""
        updated = await self._changes.activate(inbound, outbound)
        self._audit(request, 200)
        return _json(request, 200, updated.to_json())

    # -- debugging --------------------------------------------------------

    @app.route("/debug/workers", methods=["GET"])
    def workers(self, request: IRequest) -> bytes:
        """Each worker process: index, pid, alive, restarts, requests received."""
        workers = self._workers() if self._workers is not None else []
        return _json(request, 200, {"workers": workers})

    @app.route("/debug/klog", methods=["GET"])
    def klog(self, request: IRequest) -> bytes:
        """The recent log events, newest last; C{?level=warn} and above."""
        level_name = _query(request, "level")
        if level_name is None:
            return _json(request, 200, self._log_ring.events())
        try:
            level = parse_level(level_name)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        return _json(request, 200, self._log_ring.events(level))

    @app.route("/debug/pprof", methods=["GET"])
    @app.route("/debug/pprof/", methods=["GET"])
    def pprof_index(self, request: IRequest) -> bytes:
        """What the profiling endpoints are."""
        return _text(request, _PPROF_INDEX)

    @app.route("/debug/pprof/profile", methods=["GET"])
    async def pprof_profile(self, request: IRequest) -> bytes:
        """A CPU profile of N seconds, taken while traffic keeps flowing."""
        seconds_text = _query(request, "seconds")
        seconds = DEFAULT_SECONDS
        if seconds_text is not None:
            try:
                seconds = float(seconds_text)
            except ValueError:
                seconds = -1.0
            if not 0 < seconds <= MAX_SECONDS:
                raise BadRequest(
                    f"invalid seconds {seconds_text!r} (expected a number "
                    f"greater than 0 and at most {MAX_SECONDS:g})"
                )
        form = _query(request, "format") or "text"
        if form not in ("text", "pstats"):
            raise BadRequest(f'invalid format {form!r} (expected "text" or "pstats")')
        profile = await self.profiler.profile(seconds)
        if form == "pstats":
            request.setHeader(
                b"Content-Disposition", b'attachment; filename="nfork.pstats"'
            )
            return _body(request, b"application/octet-stream", profile.pstats_file())
        return _text(request, profile.text())

    @app.route("/debug/pprof/threads", methods=["GET"])
    def pprof_threads(self, request: IRequest) -> bytes:
        """The stack of every thread."""
        return _text(request, thread_stacks())

    @app.route("/debug/pprof/heap", methods=["GET"])
    def pprof_heap(self, request: IRequest) -> bytes:
        """Top allocations, if tracing; changes nothing (POST starts tracing)."""
        return _text(request, heap_report())

    @app.route("/debug/pprof/heap", methods=["POST"])
    def pprof_heap_start(self, request: IRequest) -> bytes:
        """Start tracing allocations, for the GETs that follow."""
        started = start_heap_tracing()
        self._audit(request, 200)
        return _text(
            request,
            "tracemalloc started: GET /debug/pprof/heap reports the top "
            "allocations from now on; DELETE stops it\n"
            if started
            else "tracemalloc was already running\n",
        )

    @app.route("/debug/pprof/heap", methods=["DELETE"])
    def pprof_heap_stop(self, request: IRequest) -> bytes:
        """Stop tracing allocations (tracing slows allocations down)."""
        was = stop_heap_tracing()
        self._audit(request, 200)
        return _text(
            request,
            "tracemalloc stopped\n" if was else "tracemalloc was not running\n",
        )

    # -- monitoring -------------------------------------------------------

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """Prometheus text format, read from the stats now."""
        text = generate_latest(self.registry)
        return _body(request, CONTENT_TYPE_LATEST.encode(), text)

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """200 once every configured inbound listens, else 503."""
        if not self._ready():
            return _json(
                request,
                503,
                {"error": "not ready: the configured inbounds are not all listening"},
            )
        listening = {
            config.name: _format_address(
                self._controller.inbound(config.name).port.getHost()
            )
            for config in self._controller.configs()
        }
        return _json(request, 200, {"status": "ok", "inbounds": listening})

    # -- errors -----------------------------------------------------------

    @app.handle_errors(ConfigError, BadRequest)
    def _bad_request(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, 400, str(failure.value))

    @app.handle_errors(Forbidden)
    def _forbidden(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, 403, str(failure.value))

    @app.handle_errors(UnknownInbound, UnknownOutbound, CompareOff, UnknownCandidate)
    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, 404, str(failure.value))

    @app.handle_errors(Conflict, ProfileBusy)
    def _conflict(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, 409, str(failure.value))

    @app.handle_errors(PersistError)
    def _persist_error(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, 500, str(failure.value))

    @app.handle_errors(HTTPException)
    def _routing_error(self, request: IRequest, failure: Failure) -> bytes:
        error = cast(HTTPException, failure.value)
        code = error.code or 500
        method = cast(bytes, request.method).decode("latin-1")
        if isinstance(error, MethodNotAllowed):
            allowed = ", ".join(sorted(error.valid_methods or ()))
            request.setHeader(b"Allow", allowed.encode())
            message = (
                f"method {method} not allowed on {_path(request)} (allowed: {allowed})"
            )
        elif code == 404:
            message = f"no such route: {method} {_path(request)}"
        else:
            message = error.description or http.RESPONSES.get(code, b"").decode()
            for name, value in error.get_response().headers.items():
                if name.lower() not in ("content-type", "content-length"):
                    request.setHeader(name.encode(), value.encode())
        return self._error(request, code, message)

    @app.handle_errors(Exception)
    def _internal_error(self, request: IRequest, failure: Failure) -> bytes:
        self._log.failure(
            "control API: {method} {path} failed",
            failure,
            method=cast(bytes, request.method).decode("latin-1"),
            path=_path(request),
        )
        return self._error(request, 500, f"internal error: {failure.getErrorMessage()}")

    def _error(self, request: IRequest, code: int, message: str) -> bytes:
        self._audit(request, code, message)
        return _json(request, code, {"error": message})

    def _audit(self, request: IRequest, code: int, error: str = "") -> None:
        """Log a change asked through the API (the controller logs its details)."""
        if request.method not in _CHANGING_METHODS:
            return
        self._log.info(
            "control API: {method} {path} from {client}: {code}{error}",
            method=cast(bytes, request.method).decode("latin-1"),
            path=_path(request),
            client=_format_address(request.getClientAddress()),
            code=code,
            error=f" {error}" if error else "",
        )


class ControlResource(Resource):
    """Browser rules, token and body size; then the raw path goes to Klein.

    The dashboard's files (C{/ui/}) are served without the token, under
    the C{Host} rule: the page asks for the token and sends it with every
    API call it makes.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        routes: KleinResource,
        token: str | None,
        hosts: ControlHosts | None = None,
        dashboard: Dashboard | None = None,
    ) -> None:
        super().__init__()
        self._routes = routes
        self._expected = None if token is None else f"Bearer {token}".encode()
        self._hosts = hosts
        self._dashboard = dashboard if dashboard is not None else Dashboard()

    def render(self, request: IRequest) -> Any:
        """Refuse a browser's request (403), a missing token (401) or a large
        body (413); else route."""
        path: bytes = request.path
        refusal = self._browser_refusal(request, path)
        if refusal is not None:
            self._refused(request, path, refusal)
            return _json(request, 403, {"error": refusal})
        if is_dashboard_path(path):
            return self._dashboard.render(request)
        if (
            self._expected is not None
            and path not in OPEN_PATHS
            and not self._authorized(request)
        ):
            self._refused(request, path, "missing or wrong token")
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="nfork"')
            return _json(
                request,
                401,
                {"error": "missing or wrong token (Authorization: Bearer ...)"},
            )
        if _body_size(request) > MAX_BODY:
            request.content = BytesIO()
            return _json(
                request,
                413,
                {"error": f"request body larger than {MAX_BODY} bytes"},
            )
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return _json(request, 400, {"error": "the request path is not UTF-8"})
        # Route on the raw path: Klein joins postpath with "/", and twisted.web
        # has already decoded each segment, so "%2F" in a name would split it.
        request.prepath = []
        request.postpath = path[1:].split(b"/")
        return self._routes.render(request)

    def _browser_refusal(self, request: IRequest, path: bytes) -> str | None:
        """Why a browser could have sent this request (a 403), or None.

        Against DNS rebinding, the C{Host} must be one of the API's names
        (L{OPEN_PATHS} excepted).  Against cross-site requests, a change
        must not come from another site's page (C{Origin}) nor be a form or
        a plain-text C{fetch} (C{Content-Type}).
        """
        headers = request.requestHeaders
        hosts = headers.getRawHeaders(b"host") or []
        if (
            self._hosts is not None
            and path not in OPEN_PATHS
            and (len(hosts) != 1 or not self._hosts.allows(hosts[0]))
        ):
            shown = hosts[0].decode("latin-1")[:100] if hosts else ""
            return (
                f"Host {quoted(shown)} is not a name of the control API "
                "(add it with --control-allow-host)"
            )
        if request.method in _SAFE_METHODS:
            return None
        origins = headers.getRawHeaders(b"origin") or []
        if origins and not (
            len(origins) == 1 and len(hosts) == 1 and own_origin(origins[0], hosts[0])
        ):
            shown = origins[0].decode("latin-1")[:100]
            return (
                f"Origin {quoted(shown)} is another site: changes are refused "
                "from web pages"
            )
        types = headers.getRawHeaders(b"content-type") or []
        if types:
            media = types[0].partition(b";")[0].strip().lower()
            if len(types) != 1 or media != b"application/json":
                shown = types[0].decode("latin-1")[:100]
                return (
                    f"Content-Type {quoted(shown)} refused: a change is sent as "
                    "application/json"
                )
        elif _body_size(request):
            return "a request body needs Content-Type: application/json"
        return None

    def _refused(self, request: IRequest, path: bytes, reason: str) -> None:
        self._log.warn(
            "control API: refused {method} {path} from {client}: {reason}",
            method=cast(bytes, request.method).decode("latin-1"),
            path=path.decode("latin-1"),
            client=_format_address(request.getClientAddress()),
            reason=reason,
        )

    def _authorized(self, request: IRequest) -> bool:
        given = request.requestHeaders.getRawHeaders(b"authorization") or []
        if len(given) != 1:
            return False
        scheme, _, token = given[0].strip().partition(b" ")
        assert self._expected is not None
        return (
            hmac.compare_digest(b"Bearer " + token.strip(), self._expected)
            and scheme.lower() == b"bearer"
        )


def _body_size(request: IRequest) -> int:
    """Bytes of the request's body; past L{MAX_BODY}, more than it."""
    if getattr(request, "body_too_large", False):
        return MAX_BODY + 1
    content = request.content
    if content is None:
        return 0
    size = int(content.seek(0, 2))
    content.seek(0)
    return size


class ControlRequest(server.Request):
    """A control API request: the body is kept in memory, up to L{MAX_BODY}."""

    body_too_large = False

    def gotLength(self, length: int | None) -> None:
        """Keep the body in memory, refusing early what is known to be too big."""
        if length is not None and length > MAX_BODY:
            self.body_too_large = True
        self.content = self._body = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        """Store body bytes until the limit is passed, then drop them."""
        if self.body_too_large:
            return
        if self._body.tell() + len(data) > MAX_BODY:
            self.body_too_large = True
            self.content = self._body = BytesIO()
            return
        self._body.write(data)


class ControlSite(server.Site):
    """The twisted.web site of the control API: no access log.

    Prometheus and health checks poll it; the changes are logged by the
    API itself, with their parameters.
    """

    requestFactory = ControlRequest
    noisy = False

    def log(self, request: http.Request) -> None:
        """Skip the access log."""
