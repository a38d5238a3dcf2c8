"""The fork object of one inbound: copies every request to every outbound.

The inbound's server (L{nfork.proxy.server}) reads each request whole and
hands it to the inbound's L{InboundFork}, which sends a copy to every outbound
at once and answers with the active outbound's response as soon as it
arrives; shadow responses are only measured.  The routing (which outbounds,
which one is active) is an immutable snapshot swapped by the controller, so
each request is handled entirely with the configuration it started with.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

from attrs import define, evolve, field, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from nfork.compare.capture import RECORDED_ANSWER_LIMIT, AnswerCapture
from nfork.config import InboundConfig, OutboundConfig
from nfork.outbounds.api import IOutbound, IStreamingOutbound
from nfork.proxy.deadlines import Deadline, Deadlines
from nfork.proxy.headers import (
    client_response_headers,
    header_value,
    outbound_request_headers,
)
from nfork.proxy.messages import (
    AnswerStream,
    CapturedAnswer,
    CopyDropped,
    ProxyRequest,
    ProxyResponse,
    RequestUpload,
)
from nfork.proxy.stats import OutboundStats
from nfork.proxy.upgrade import UpgradeResponder, start_upgrade

if TYPE_CHECKING:
    from nfork.compare.runtime import Comparer, ComparisonJob

_log = Logger()
"""For the failures of active outbounds, whose details clients never see."""


class OutboundTimeout(Exception):
    """An outbound did not answer within its timeout."""


_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
"""Methods every outbound sends with a C{Content-Length}, even 0."""


@define(eq=False)
class OutboundRoute:
    """One outbound of a running inbound: config, implementation, stats."""

    config: OutboundConfig
    outbound: IOutbound
    stats: OutboundStats
    inflight: int = 0
    """Copies sent and not yet finished."""
    streams: bool = field(init=False)
    """The outbound provides L{IStreamingOutbound}: answers stream, head first."""
    limit: int = field(init=False)
    """How many copies may be pending before new ones are dropped.

    Starts at C{maxInflight}.  Each timeout halves it, each answer in time
    raises it by one (up to C{maxInflight} again): a shadow that stopped
    answering soon holds one copy at a time instead of C{maxInflight}
    connections that all wait for their timeout.
    """

    @streams.default
    def _provides_streaming(self) -> bool:
        return IStreamingOutbound.providedBy(self.outbound)

    @limit.default
    def _full_limit(self) -> int:
        return self.config.max_inflight

    def timed_out(self) -> None:
        """A copy timed out: halve the limit."""
        self.limit = max(1, self.limit // 2)

    def answered(self) -> None:
        """A copy completed in time: raise the limit by one."""
        if self.limit < self.config.max_inflight:
            self.limit += 1

    @property
    def name(self) -> str:
        """The outbound's name."""
        return self.config.name


@frozen
class Routing:
    """What one request is forked to: an immutable snapshot."""

    config: InboundConfig
    active: OutboundRoute
    shadows: tuple[OutboundRoute, ...]
    comparer: Comparer | None = None
    """Compares the candidates' answers with the active's (C{compare})."""
    recorders: frozenset[str] = field(init=False)
    """Shadows that record the active's answer with each request: their
    copy is sent once that answer is in (sinks with C{"answers": true})."""

    @recorders.default
    def _answer_recorders(self) -> frozenset[str]:
        return frozenset(
            route.name
            for route in self.shadows
            if getattr(route.outbound, "records_answers", False)
        )

    @property
    def routes(self) -> tuple[OutboundRoute, ...]:
        """Every outbound, the active one first."""
        return (self.active, *self.shadows)


class Responder(Protocol):
    """Where the answer to one forked request goes.

    The lean server's L{nfork.proxy.server.InboundProtocol} implements it for
    the requests of its connection: the fork never sees the connection.
    """

    @property
    def gone(self) -> bool:
        """Whether the client went away or was already answered."""

    @property
    def method(self) -> bytes:
        """The request's method (a C{HEAD} answer carries no body)."""

    def respond(
        self,
        code: int,
        phrase: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        length: bytes | None,
    ) -> None:
        """Answer with C{headers} as given, then C{Content-Length: length}.

        An empty C{phrase} stands for the standard reason phrase of C{code}.
        """

    def respond_stream(
        self,
        code: int,
        phrase: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        length: bytes | None,
        first: bytes,
        control: StreamControl,
    ) -> None:
        """Send the head and C{first}; the body follows with L{stream_data}.

        C{length} is the body's C{Content-Length}, or None when it is
        unknown (the server then chunks it or closes after it).  While the
        client cannot take more, the server pauses C{control}; it cancels
        it if the client goes away.
        """

    def stream_data(self, data: bytes) -> None:
        """Send the next piece of the streamed body."""

    def stream_end(self) -> None:
        """The streamed body is complete."""

    def stream_abort(self) -> None:
        """The streamed body was cut: close the connection without ending it."""

    def fail(self, code: int, text: str) -> None:
        """Answer with a short plain-text error."""

    def drop(self) -> None:
        """End the exchange without an answer (the copy was cancelled)."""

    def on_gone(self, cancel: Callable[[], object]) -> None:
        """Call C{cancel} if the client goes away before it is answered."""


class StreamControl(Protocol):
    """What a responder may do to the streamed body it is sending."""

    def pause(self) -> None:
        """Stop reading the outbound: the client takes no more for now."""

    def resume(self) -> None:
        """Read the outbound again."""

    def cancel(self) -> None:
        """Abandon the body (the client went away)."""


class InboundFork:
    """Forks every request of one inbound to the outbounds of its routing.

    One per inbound, shared by all of its client connections; the controller
    swaps in a new L{routing} when the inbound's configuration changes.
    """

    def __init__(self, routing: Routing, clock: IReactorTime) -> None:
        self.routing = routing
        self._clock = clock
        self._deadlines = Deadlines(clock)
        self._random = random.random
        self.pending = 0
        """Copies sent by this inbound and not yet finished."""
        self._idle_waiters: list[Deferred[None]] = []

    def when_idle(self) -> Deferred[None]:
        """Fires once no copy sent by this inbound is pending."""
        d: Deferred[None] = Deferred()
        if self.pending:
            self._idle_waiters.append(d)
        else:
            d.callback(None)
        return d

    @property
    def max_body(self) -> int | None:
        """The largest request body accepted, in bytes; None: no limit."""
        return self.routing.config.max_body

    def refuse_too_large(self, responder: Responder) -> None:
        """Answer 413: the request body is larger than C{maxBody}."""
        responder.fail(413, f"nfork: request body larger than {self.max_body} bytes\n")

    def proxy_request(
        self,
        method: bytes,
        uri: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        client_ip: str,
        secure: bool,
        trusted: bool = False,
        upload: RequestUpload | None = None,
    ) -> ProxyRequest:
        """The copy of a client request that every outbound receives.

        C{uri} is in origin form (the server turned an absolute-form target
        into it); C{trusted} says the client is in a C{trustForwarded} network
        (C{InboundConfig.trusts_forwarded}), so its C{X-Forwarded-*} headers are kept.
        C{upload} is a body over C{mirrorBody}, streamed to the active only.
        """
        zero_length = False
        if not body and method not in _BODY_METHODS:
            # Forward a Content-Length: 0 the client sent (only it can say).
            for name, _ in headers:
                if len(name) == 14 and name.lower() == b"content-length":
                    zero_length = True
                    break
        return ProxyRequest(
            method=method,
            uri=uri,
            headers=outbound_request_headers(
                headers, client_ip, b"https" if secure else b"http", trusted
            ),
            body=body,
            client=client_ip,
            received=self._clock.seconds(),
            zero_length=zero_length,
            upload=upload,
        )

    def fork(self, request: ProxyRequest, responder: Responder) -> None:
        """Copy C{request} to the outbounds; answer C{responder} from the active."""
        routing = self.routing
        timeout = routing.config.timeout
        upload = request.upload
        if upload is None:
            if routing.comparer is not None or routing.recorders:
                self._fork_capturing(routing, request, responder, timeout)
                return
            for shadow in routing.shadows:
                if self._wants_copy(shadow, request):
                    self._dispatch(shadow, request, False, timeout).addErrback(_ignore)
        else:
            for shadow in routing.shadows:
                if self._selects(shadow, request):
                    shadow.stats.record_skipped("body_too_large")
            if not routing.active.streams:
                upload.stop()
                responder.fail(
                    413,
                    f"nfork: request body larger than mirrorBody "
                    f"({routing.config.mirror_body} bytes), which the active "
                    f"outbound cannot stream\n",
                )
                return
        self._answer_client(routing, request, responder, timeout, None)

    def _answer_client(
        self,
        routing: Routing,
        request: ProxyRequest,
        responder: Responder,
        timeout: float,
        capture: AnswerCapture | None,
    ) -> None:
        """Send the active copy; its answer goes to C{responder}."""
        response = self._dispatch(
            routing.active, request, True, timeout, responder, capture
        )
        responder.on_gone(response.cancel)
        response.addCallbacks(
            _answer,
            _answer_failure,
            callbackArgs=(responder,),
            errbackArgs=(responder, routing),
        )

    def _fork_capturing(
        self,
        routing: Routing,
        request: ProxyRequest,
        responder: Responder,
        timeout: float,
    ) -> None:
        """Fork a request whose answers are compared or recorded.

        The copies to the comparison's candidates and baseline keep their
        answers for its job; sinks that record answers get their copy once
        the active's answer is in (L{Routing.recorders}).
        """
        comparer = routing.comparer
        job: ComparisonJob | None = None
        roles: frozenset[str] = frozenset()
        if comparer is not None:
            job = comparer.begin(request)
            if job is not None:
                roles = comparer.roles()
        recorders = routing.recorders
        late: list[OutboundRoute] = []
        for shadow in routing.shadows:
            if not self._selects(shadow, request):
                continue
            name = shadow.name
            if name in recorders:
                late.append(shadow)
            elif not self._admits(shadow):
                if job is not None and name in roles:
                    job.dropped(name)
            else:
                capture = (
                    None if job is None or name not in roles else job.capture(name)
                )
                self._dispatch(
                    shadow, request, capture is not None, timeout, None, capture
                ).addErrback(_ignore)
        primary = None if job is None else job.capture(routing.active.name)
        if late:
            if primary is None:
                primary = AnswerCapture(RECORDED_ANSWER_LIMIT)
            primary.then(partial(self._record_answer, late, request, timeout))
        self._answer_client(routing, request, responder, timeout, primary)
        if job is not None:
            job.seal()

    def _record_answer(
        self,
        recorders: list[OutboundRoute],
        request: ProxyRequest,
        timeout: float,
        answer: CapturedAnswer,
    ) -> None:
        """Send the sinks that record answers their copy, with the answer."""
        recorded = evolve(request, answer=answer)
        for route in recorders:
            if self._admits(route):
                self._dispatch(route, recorded, False, timeout).addErrback(_ignore)

    def upgrade(
        self,
        method: bytes,
        uri: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        early: bytes,
        client_ip: str,
        secure: bool,
        trusted: bool,
        responder: UpgradeResponder,
    ) -> None:
        """Relay an upgrade request (WebSocket) to the active outbound.

        See L{nfork.proxy.upgrade}: C{early} is what the client sent after
        the request; shadows mirror the session or count it skipped.  A
        session silent both ways for the inbound's C{idleTimeout} is closed.
        """
        request = ProxyRequest(
            method=method,
            uri=uri,
            headers=outbound_request_headers(
                headers, client_ip, b"https" if secure else b"http", trusted, True
            ),
            body=b"",
            client=client_ip,
            received=self._clock.seconds(),
        )
        routing = self.routing
        start_upgrade(
            self._clock,
            routing,
            request,
            early,
            responder,
            routing.config.idle_timeout,
            self._wants_copy,
        )

    def _selects(self, route: OutboundRoute, request: ProxyRequest) -> bool:
        """Whether a shadow's C{methods} and C{sample} take this request."""
        config = route.config
        if config.methods is not None and request.method.decode() not in config.methods:
            return False
        return not (
            config.sample is not None
            and _sample_point(request, self._random) >= config.sample
        )

    def _wants_copy(self, route: OutboundRoute, request: ProxyRequest) -> bool:
        """Whether a shadow takes this request (its C{methods} and C{sample})."""
        if not self._selects(route, request):
            return False
        if route.inflight >= route.limit:
            route.stats.record_dropped()
            return False
        return True

    def _admits(self, route: OutboundRoute) -> bool:
        """Whether a shadow has room for one more copy; a dropped one is counted."""
        if route.inflight >= route.limit:
            route.stats.record_dropped()
            return False
        return True

    def _dispatch(
        self,
        route: OutboundRoute,
        request: ProxyRequest,
        keep_body: bool,
        inbound_timeout: float,
        responder: Responder | None = None,
        capture: AnswerCapture | None = None,
    ) -> Deferred[ProxyResponse | None]:
        """Send one copy under its timeout and record its outcome in the stats.

        C{inbound_timeout} comes from the routing snapshot the request started
        with; the outbound's own C{timeout}, if any, wins over it.  The
        timeout bounds the wait for the answer's head; a streamed body is
        then relayed to C{responder} (the active copy's) or dropped, under
        the inbound's C{bodyTimeout} and C{idleTimeout}, and its copy is
        finished (stats, in flight) at the body's end.  C{capture}, when
        given, keeps the answer (or why there is none) for a comparison.
        """
        clock = self._clock
        timeout = route.config.timeout or inbound_timeout
        start = clock.seconds()
        route.inflight += 1
        self.pending += 1
        if route.streams:
            sent = cast(IStreamingOutbound, route.outbound).send_streaming(
                request, keep_body
            )
        else:
            sent = route.outbound.send(request, keep_body)
        expiry = _Expiry(sent)
        expiry.deadline = self._deadlines.add(timeout, expiry.expire)

        def record(
            result: ProxyResponse | Failure | None,
        ) -> ProxyResponse | Failure | None:
            expiry.deadline.cancel()
            if (
                result is not None
                and not isinstance(result, Failure)
                and result.stream is not None
            ):
                route.answered()
                if capture is not None:
                    capture.head(result)
                _BodyRelay(self, route, result, start, responder, capture).start(result)
                return result
            self._finished(route)
            latency = clock.seconds() - start
            if isinstance(result, Failure):
                if capture is not None:
                    capture.failed(
                        "timeout"
                        if expiry.expired
                        else "dropped"
                        if result.check(CopyDropped)
                        else "error"
                    )
                if expiry.expired:
                    route.timed_out()
                    route.stats.record_timeout(latency)
                    return Failure(
                        OutboundTimeout(
                            f'outbound "{route.name}" timed out after {timeout:g}s'
                        )
                    )
                if result.check(CopyDropped):
                    route.stats.record_dropped()
                else:
                    route.stats.record_error(latency)
                return result
            route.answered()
            if result is None:
                route.stats.record_delivered(latency)
                if capture is not None:
                    capture.failed("error")
            else:
                route.stats.record_response(result.code, latency)
                if capture is not None:
                    capture.whole(result)
            return result

        return sent.addBoth(record)

    def _finished(self, route: OutboundRoute) -> None:
        """A copy to C{route} is over: it no longer counts as in flight."""
        route.inflight -= 1
        self.pending -= 1
        if not self.pending and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)


class _BodyRelay:
    """Takes a streamed answer's body to the client, or drops it (a shadow).

    The copy's figures are recorded at the body's end: the total time, and
    the time to the first byte (when the head came).  C{bodyTimeout} bounds
    the whole body and C{idleTimeout} the silence between its pieces (not
    counted while the client holds the relay paused); either cuts the body,
    counted as a timeout.
    """

    __slots__ = (
        "_body_call",
        "_capture",
        "_code",
        "_fork",
        "_idle_call",
        "_last",
        "_paused",
        "_responder",
        "_route",
        "_start",
        "_stream",
        "_ttfb",
        "done",
    )

    def __init__(
        self,
        fork: InboundFork,
        route: OutboundRoute,
        response: ProxyResponse,
        start: float,
        responder: Responder | None,
        capture: AnswerCapture | None = None,
    ) -> None:
        clock = fork._clock
        self._capture = capture
        self._fork = fork
        self._route = route
        self._code = response.code
        self._start = start
        self._last = now = clock.seconds()
        self._ttfb = now - start
        self._responder = responder
        self._stream: AnswerStream | None = None
        self._paused = False
        self.done = False
        config = fork.routing.config
        body_timeout = config.body_timeout
        self._body_call: IDelayedCall | None = (
            None
            if body_timeout is None
            else clock.callLater(body_timeout, self._cut, "bodyTimeout")
        )
        self._idle_call: IDelayedCall | None = clock.callLater(
            config.idle_timeout, self._idle_check
        )

    def start(self, response: ProxyResponse) -> None:
        """Send the active copy's head to the client; take the body."""
        stream = self._stream = response.stream
        assert stream is not None
        responder = self._responder
        if responder is not None:
            if responder.gone:
                self.cancel()
                return
            responder.respond_stream(
                response.code,
                response.phrase,
                client_response_headers(response.headers),
                header_value(response.headers, b"content-length"),
                response.body,
                self,
            )
        if not self.done:
            stream.start(self)

    # AnswerReceiver

    def body(self, data: bytes) -> None:
        """Relay a piece to the client; a shadow's is dropped as it comes."""
        self._last = self._fork._clock.seconds()
        if self._capture is not None:
            self._capture.data(data)
        responder = self._responder
        if responder is not None:
            responder.stream_data(data)

    def end(self) -> None:
        """The body is complete: record the copy, end the client's answer."""
        if self._finish():
            return
        now = self._fork._clock.seconds()
        self._route.stats.record_response(self._code, now - self._start, self._ttfb)
        if self._capture is not None:
            self._capture.end()
        if self._responder is not None:
            self._responder.stream_end()

    def fail(self, reason: Failure) -> None:
        """The outbound's connection was lost mid-body."""
        if self._finish():
            return
        now = self._fork._clock.seconds()
        self._route.stats.record_error(now - self._start)
        if self._capture is not None:
            self._capture.failed("error")
        if self._responder is not None:
            _log.warn(
                "inbound {inbound}: active outbound {outbound} failed during "
                "the answer's body, connection to the client cut: {reason}",
                inbound=self._fork.routing.config.name,
                outbound=self._route.name,
                reason=reason.getErrorMessage(),
            )
            self._responder.stream_abort()

    # StreamControl, for the responder

    def pause(self) -> None:
        """The client takes no more for now: stop reading the outbound."""
        self._paused = True
        if self._stream is not None:
            self._stream.pause()

    def resume(self) -> None:
        """The client took its output: read on."""
        self._paused = False
        self._last = self._fork._clock.seconds()
        if self._stream is not None:
            self._stream.resume()

    def cancel(self) -> None:
        """The client went away: abandon the body."""
        if self._finish():
            return
        now = self._fork._clock.seconds()
        self._route.stats.record_error(now - self._start)
        if self._capture is not None:
            self._capture.failed("error")
        if self._stream is not None:
            self._stream.cancel()

    # timers

    def _idle_check(self) -> None:
        self._idle_call = None
        if self.done:
            return
        clock = self._fork._clock
        idle_timeout = self._fork.routing.config.idle_timeout
        if self._paused:
            self._last = clock.seconds()
        silence = clock.seconds() - self._last
        if silence >= idle_timeout:
            self._cut("idleTimeout")
        else:
            self._idle_call = clock.callLater(idle_timeout - silence, self._idle_check)

    def _cut(self, key: str) -> None:
        """A body timeout passed: abandon the body, count a timeout."""
        if self._body_call is not None and key == "bodyTimeout":
            self._body_call = None
        if self._finish():
            return
        now = self._fork._clock.seconds()
        self._route.timed_out()
        self._route.stats.record_timeout(now - self._start)
        if self._capture is not None:
            self._capture.failed("timeout")
        if self._stream is not None:
            self._stream.cancel()
        if self._responder is not None:
            _log.warn(
                "inbound {inbound}: active outbound {outbound}'s answer body "
                "cut after {key}, connection to the client cut",
                inbound=self._fork.routing.config.name,
                outbound=self._route.name,
                key=key,
            )
            self._responder.stream_abort()

    def _finish(self) -> bool:
        """Mark the copy finished; True if it already was."""
        if self.done:
            return True
        self.done = True
        for call in (self._body_call, self._idle_call):
            if call is not None and call.active():
                call.cancel()
        self._body_call = self._idle_call = None
        self._fork._finished(self._route)
        return False


class _Expiry:
    """Cancels a pending copy when its timeout passes, remembering why."""

    __slots__ = ("deadline", "deferred", "expired")

    deadline: Deadline

    def __init__(self, deferred: Deferred[ProxyResponse | None]) -> None:
        self.deferred = deferred
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.deferred.cancel()


def _sample_point(request: ProxyRequest, fallback: Any) -> float:
    """A number in [0, 1) for sampling: stable per C{X-Request-Id}."""
    request_id = header_value(request.headers, b"x-request-id")
    if request_id is None:
        return float(fallback())
    return zlib.crc32(request_id) / 2**32


def _ignore(failure: Failure) -> None:
    """Shadow outcomes are in the stats; nobody waits for them."""


def _answer(response: ProxyResponse, responder: Responder) -> None:
    """Send the active outbound's response to the client."""
    if response.stream is not None:
        # Its head went out when it came (_BodyRelay.start).
        return
    if responder.gone:
        return
    body = response.body
    length: bytes | None
    if body or not (responder.method == b"HEAD" or response.code in (204, 304)):
        length = b"%d" % len(body)
    elif response.code == 204:
        length = None
    else:
        # HEAD and 304 answers describe a body they do not carry.
        length = header_value(response.headers, b"content-length")
    headers = client_response_headers(response.headers)
    responder.respond(response.code, response.phrase, headers, body, length)


def _answer_failure(failure: Failure, responder: Responder, routing: Routing) -> None:
    """Answer the client when the active outbound timed out or failed."""
    if responder.gone:
        return
    config = routing.config
    if failure.check(OutboundTimeout):
        responder.fail(config.timeout_code, f"nfork: {failure.value}\n")
    elif failure.check(CancelledError):
        responder.drop()
    else:
        # The reason may name the backend's address or quote OpenSSL or the
        # parser: it goes to the log (and /debug/klog), never to the client.
        active = routing.active
        _log.warn(
            "inbound {inbound}: active outbound {outbound} ({address}) failed, "
            "answered {code}: {reason}",
            inbound=config.name,
            outbound=active.name,
            address=active.config.address.raw,
            code=config.error_code,
            reason=failure.getErrorMessage() or repr(failure.value),
        )
        responder.fail(
            config.error_code, f'nfork: active outbound "{active.name}" failed\n'
        )
