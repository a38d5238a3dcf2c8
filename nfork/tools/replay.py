"""C{nfork replay}: send the requests of a C{file://} recording to a target.

The requests go out at the recorded pace scaled by a speed factor, or at a
fixed rate, with at most C{concurrency} of them in flight: when that many
are pending, the next one waits for a slot (and the replay falls behind the
schedule rather than piling up requests).  Each request carries the
recorded method, path and query, headers and body; the target's URL gives
the scheme, host, port and an optional path prefix.

With a L{ReplayComparison} (C{--compare}), each record that carries the
answer recorded with it (a sink with C{"answers": true}) has the target's
answer kept (up to C{maxBody}, with a digest of the rest) and compared with
the recorded one; see L{nfork.tools.replay_compare}.

Requests are sent with a plain L{twisted.web.client.Agent} rather than
treq's high-level client, which would add an C{Accept-Encoding} header and
send back the cookies the target sets: a replay sends what was recorded.
Bodies are read with treq.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import treq
from attrs import define, field, frozen
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredSemaphore,
    succeed,
)
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer
from zope.interface import implementer

from nfork.compare.capture import AnswerCapture
from nfork.config.durations import format_duration
from nfork.outbounds.sinks.records import RecordedRequest, RecordError, decode_record
from nfork.proxy.headers import HOP_BY_HOP
from nfork.proxy.messages import CapturedAnswer, ProxyResponse
from nfork.proxy.stats import PERCENTILES, LatencyHistogram

if TYPE_CHECKING:
    from nfork.config.compare import CompareConfig
    from nfork.tools.replay_compare import ReplayComparison

__all__ = [
    "Progress",
    "Replay",
    "ReplayOptions",
    "ReplaySummary",
    "count_records",
    "read_records",
    "replay_main",
    "target_url",
]

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""
DIFFERENCE = 1
"""Exit status with C{--compare --fail-on difference} when a field differs."""

_NOT_REPLAYED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
"""Headers the client side sets itself (lower case); C{Proxy-*} ones too."""

_UNSAFE = re.compile(rb"[^\x21-\x7e]")
"""Bytes that cannot appear as such in a request target."""


def target_url(text: str) -> bytes:
    """Check the C{--to} URL and return it without a trailing slash.

    @raise ValueError: unless it is C{http(s)://host[:port][/prefix]}.
    """
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(
            f"the target URL cannot have a query, a fragment or a user: {text!r}"
        )
    try:
        parts.port  # noqa: B018 - checks the port number
        return text.rstrip("/").encode("ascii")
    except (ValueError, UnicodeEncodeError) as e:
        raise ValueError(f"invalid target URL {text!r}: {e}") from None


def request_target(uri: bytes) -> bytes:
    """The path and query to request for a recorded URI, safely encoded."""
    if uri.startswith((b"http://", b"https://")):
        # An absolute URI, as sent to a proxy: keep its path and query.
        rest = uri.split(b"//", 1)[1]
        slash = rest.find(b"/")
        uri = rest[slash:] if slash != -1 else b"/"
    elif not uri.startswith(b"/"):
        uri = b"/" + uri
    return _UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], uri)


def replay_headers(recorded: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The recorded headers minus those the client sets itself."""
    pairs = list(recorded)
    listed = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    headers = Headers()
    for name, value in pairs:
        lower = name.lower()
        if lower in _NOT_REPLAYED or lower in listed or lower.startswith(b"proxy-"):
            continue
        headers.addRawHeader(name, value)
    return headers


@implementer(IBodyProducer)
class _Body:
    """A request body already in memory, written in one go."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def read_records(paths: Sequence[str]) -> Iterator[RecordedRequest | RecordError]:
    """The records of the files, in order; a line that is not one as an error.

    Lines are split on C{\\n} only: a record never contains one.
    """
    for path in paths:
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    yield decode_record(line)
                except RecordError as e:
                    yield RecordError(f"{path}:{number}: {e}")


def count_records(paths: Sequence[str]) -> int:
    """How many non-blank lines the files have (for the progress bar)."""
    total = 0
    for path in paths:
        with open(path, "rb") as lines:
            total += sum(1 for line in lines if line.strip())
    return total


@define
class ReplaySummary:
    """What a replay did, so far or in the end."""

    total: int | None = None
    """Records in the files (lines, if some are not records), when known."""
    sent: int = 0
    """Requests sent (the ones cancelled by Ctrl-C included)."""
    responses: dict[int, int] = field(factory=dict)
    """Responses by status code."""
    errors: dict[str, int] = field(factory=dict)
    """Requests that got no response, by kind of error."""
    cancelled: int = 0
    """Requests abandoned in flight on Ctrl-C."""
    skipped: int = 0
    """Lines of the files that are not records."""
    interrupted: bool = False
    elapsed: float = 0.0
    """Seconds from the first request to the end."""
    latency: LatencyHistogram = field(factory=LatencyHistogram)
    """From sending to the end of the response body, for the responses."""

    @property
    def answered(self) -> int:
        """Requests that got a response."""
        return sum(self.responses.values())

    @property
    def failed(self) -> int:
        """Requests that got no response (not counting the cancelled ones)."""
        return sum(self.errors.values())

    def progress(self) -> str:
        """One line: how far the replay is."""
        done = self.answered + self.failed
        count = f"{self.sent}" if self.total is None else f"{self.sent}/{self.total}"
        return f"{count} sent, {done} done, {self.failed} errors, {self.elapsed:.1f}s"

    def format(self) -> str:
        """The final summary, a few lines of text."""
        how = "interrupted" if self.interrupted else "done"
        lines = [
            f"replay {how}: {self.sent} requests sent in {self.elapsed:.2f}s",
            "responses: "
            + (
                ", ".join(f"{code}: {n}" for code, n in sorted(self.responses.items()))
                or "none"
            ),
            f"errors: {self.failed}"
            + (
                " ("
                + ", ".join(f"{kind}: {n}" for kind, n in sorted(self.errors.items()))
                + ")"
                if self.errors
                else ""
            ),
        ]
        if self.cancelled:
            lines.append(f"cancelled: {self.cancelled} (in flight at Ctrl-C)")
        if self.skipped:
            lines.append(f"skipped: {self.skipped} lines that are not records")
        values = self.latency.percentiles([p for _, p in PERCENTILES])
        lines.append(
            "latency: "
            + " ".join(
                f"{name} {_duration(value)}"
                for (name, _), value in zip(PERCENTILES, values, strict=True)
            )
            + f" max {_duration(self.latency.max)}"
        )
        return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    return format_duration(round(seconds, 6))


class Replay:
    """Sends recorded requests to a target, paced, with bounded concurrency."""

    def __init__(
        self,
        records: Iterable[RecordedRequest | RecordError],
        target: bytes,
        *,
        agent: IAgent,
        clock: IReactorTime,
        speed: float = 1.0,
        rate: float | None = None,
        concurrency: int = 10,
        timeout: float = 30.0,
        total: int | None = None,
        comparison: ReplayComparison | None = None,
    ) -> None:
        """
        @param target: C{http(s)://host[:port][/prefix]}, no trailing slash.
        @param speed: the recorded pace is multiplied by this (2.0: twice as
            fast); ignored when C{rate} is given.
        @param rate: requests per second, ignoring the recorded times.
        @param comparison: when given, the target's answers to records that
            carry an answer are compared with those.
        """
        if speed <= 0 or (rate is not None and rate <= 0) or concurrency < 1:
            raise ValueError("speed, rate and concurrency must be positive")
        self._records = records
        self._target = target
        self._agent = agent
        self._clock = clock
        self._speed = speed
        self._rate = rate
        self._timeout = timeout
        self._slots = DeferredSemaphore(concurrency)
        self._inflight: set[Deferred[_Outcome]] = set()
        self._cancelled: set[Deferred[_Outcome]] = set()
        """Requests in flight at L{interrupt}, whatever their failure says."""
        self._timed_out: set[Deferred[_Outcome]] = set()
        self._comparison = comparison
        self._waiting: Deferred[Any] | None = None
        self._stopping = False
        self._start = 0.0
        self.summary = ReplaySummary(total=total)

    def run(self) -> Deferred[ReplaySummary]:
        """Replay everything; fires with the summary (after L{interrupt} too)."""
        return Deferred.fromCoroutine(self._run())

    def interrupt(self) -> None:
        """Stop now: send nothing more, cancel the requests in flight."""
        if self._stopping:
            return
        self._stopping = True
        self.summary.interrupted = True
        if self._waiting is not None:
            self._waiting.cancel()
        self._cancelled.update(self._inflight)
        for pending in list(self._inflight):
            pending.cancel()

    async def _run(self) -> ReplaySummary:
        clock = self._clock
        self._start = clock.seconds()
        first: float | None = None
        records = iter(self._records)
        try:
            for record in records:
                if self._stopping:
                    break
                if isinstance(record, RecordError):
                    self.summary.skipped += 1
                    continue
                if self._rate is not None:
                    due = self._start + self.summary.sent / self._rate
                else:
                    if first is None:
                        first = record.epoch
                    due = self._start + max(0.0, record.epoch - first) / self._speed
                delay = due - clock.seconds()
                if delay > 0:
                    await self._wait(deferLater(clock, delay))
                await self._wait(self._slots.acquire())
                if self._stopping:
                    break
                self._send(record)
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()
        if self._inflight:
            await DeferredList(list(self._inflight), consumeErrors=True)
        self.summary.elapsed = clock.seconds() - self._start
        return self.summary

    async def _wait(self, waiting: Deferred[Any]) -> None:
        """Wait for C{waiting}, unless interrupted meanwhile."""
        self._waiting = waiting
        try:
            await waiting
        except CancelledError:
            if not self._stopping:
                raise
        finally:
            self._waiting = None

    def _send(self, record: RecordedRequest) -> None:
        """Send one request in a slot; record its outcome when it ends."""
        self.summary.sent += 1
        started = self._clock.seconds()
        exchange = Deferred.fromCoroutine(self._exchange(record))
        self._inflight.add(exchange)
        expiry = self._clock.callLater(self._timeout, self._expire, exchange)
        exchange.addBoth(self._done, exchange, started, expiry, record)

    def _expire(self, exchange: Deferred[_Outcome]) -> None:
        # Cancelling fails the request with whatever the agent makes of it
        # (ResponseNeverReceived...): remember why it was cancelled.
        self._timed_out.add(exchange)
        exchange.cancel()

    async def _exchange(self, record: RecordedRequest) -> _Outcome:
        response = await self._agent.request(
            record.method,
            self._target + request_target(record.uri),
            replay_headers(record.headers),
            _Body(record.body) if record.body else None,
        )
        code: int = response.code
        if self._comparison is None or record.answer is None:
            await treq.collect(response, _discard)
            return code, None
        capture = AnswerCapture(self._comparison.settings.max_body)
        capture.head(
            ProxyResponse(
                code=code,
                phrase=response.phrase,
                headers=tuple(
                    (name, value)
                    for name, values in response.headers.getAllRawHeaders()
                    for value in values
                ),
                body=b"",
            )
        )
        await treq.collect(response, capture.data)
        capture.end()
        return code, capture.answer

    def _done(
        self,
        result: _Outcome | Failure,
        exchange: Deferred[_Outcome],
        started: float,
        expiry: IDelayedCall,
        record: RecordedRequest,
    ) -> None:
        if expiry.active():
            expiry.cancel()
        self._inflight.discard(exchange)
        self._slots.release()
        summary = self.summary
        now = self._clock.seconds()
        summary.elapsed = now - self._start
        answer: CapturedAnswer | None = None
        if isinstance(result, Failure):
            if exchange in self._cancelled:
                summary.cancelled += 1
            else:
                timed_out = exchange in self._timed_out
                kind = "TimeoutError" if timed_out else type(result.value).__name__
                summary.errors[kind] = summary.errors.get(kind, 0) + 1
                answer = CapturedAnswer(
                    code=0,
                    headers=(),
                    body=b"",
                    error="timeout" if timed_out else "error",
                )
        else:
            code, answer = result
            summary.responses[code] = summary.responses.get(code, 0) + 1
            summary.latency.record(now - started)
        if self._comparison is not None and exchange not in self._cancelled:
            if record.answer is None:
                self._comparison.without_answer += 1
            elif answer is not None:
                self._comparison.compare(record, answer)
        self._cancelled.discard(exchange)
        self._timed_out.discard(exchange)


_Outcome = tuple[int, CapturedAnswer | None]
"""A response's status, and its answer when it is to be compared."""


def _discard(data: bytes) -> None:
    """The body of a response: read, not kept."""


class Progress:
    """Shows how far a replay is on a terminal, or as lines in a log."""

    BAR_WIDTH = 30

    def __init__(
        self,
        summary: ReplaySummary,
        stream: TextIO,
        clock: IReactorTime,
        *,
        tty: bool,
        interval: float | None = None,
    ) -> None:
        """
        @param tty: redraw one line with a bar (5 times a second) rather
            than write a new line (every 5 seconds) each time.
        """
        self._summary = summary
        self._stream = stream
        self._tty = tty
        self._loop = LoopingCall(self.show)
        self._loop.clock = clock
        self._interval = interval or (0.2 if tty else 5.0)

    def start(self) -> None:
        """Show the progress now and then every interval."""
        self._loop.start(self._interval, now=True)

    def line(self) -> str:
        """The text shown."""
        summary = self._summary
        text = summary.progress()
        if not self._tty or not summary.total:
            return text
        done = summary.answered + summary.failed + summary.cancelled
        filled = min(self.BAR_WIDTH, self.BAR_WIDTH * done // summary.total)
        percent = min(100, 100 * done // summary.total)
        bar = "#" * filled + "-" * (self.BAR_WIDTH - filled)
        return f"[{bar}] {percent:3d}% {text}"

    def show(self) -> None:
        """Draw the progress once."""
        if self._tty:
            self._stream.write("\r\x1b[K" + self.line())
        else:
            self._stream.write(f"replay: {self.line()}\n")
        self._stream.flush()

    def stop(self) -> None:
        """Draw the final state and stop."""
        if self._loop.running:
            self._loop.stop()
        self.show()
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


@frozen
class ReplayOptions:
    """What C{nfork replay} was asked to do."""

    files: tuple[str, ...]
    target: bytes
    speed: float = 1.0
    rate: float | None = None
    concurrency: int = 10
    timeout: float = 30.0
    compare: CompareConfig | None = None
    """Compare the target's answers with the recorded ones, so."""
    fail_on_difference: bool = False
    """Exit with L{DIFFERENCE} when the comparison reports a difference."""


async def replay_main(
    reactor: Any,
    options: ReplayOptions,
    *,
    agent: IAgent | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> None:
    """Run a replay on C{reactor}, for L{twisted.internet.task.react}.

    Ctrl-C (the reactor shutting down) cancels what is in flight and still
    prints the summary; the exit status is then L{INTERRUPTED}.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    pool: HTTPConnectionPool | None = None
    if agent is None:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = options.concurrency
        agent = Agent(reactor, pool=pool)
    total = count_records(options.files)
    comparison = None
    if options.compare is not None:
        from nfork.tools.replay_compare import ReplayComparison

        comparison = ReplayComparison(options.compare, options.target.decode())
    replay = Replay(
        read_records(options.files),
        options.target,
        agent=agent,
        clock=reactor,
        speed=options.speed,
        rate=options.rate,
        concurrency=options.concurrency,
        timeout=options.timeout,
        total=total,
        comparison=comparison,
    )
    pace = (
        f"{options.rate:g} requests/s"
        if options.rate is not None
        else f"speed x{options.speed:g}"
    )
    stderr.write(
        f"replaying {total} requests from {', '.join(options.files)} to "
        f"{options.target.decode()} ({pace}, concurrency {options.concurrency})\n"
    )
    finished: Deferred[None] = Deferred()

    def on_shutdown() -> Deferred[None]:
        # Ctrl-C: the reactor waits for this before it stops.
        replay.interrupt()
        return finished

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    isatty = getattr(stderr, "isatty", None)
    progress = Progress(replay.summary, stderr, reactor, tty=bool(isatty and isatty()))
    progress.start()
    try:
        summary = await replay.run()
    finally:
        progress.stop()
        if pool is not None:
            await pool.closeCachedConnections()
    stdout.write(summary.format())
    if comparison is not None:
        stdout.write("\n" + comparison.format())
    stdout.flush()
    finished.callback(None)
    if summary.interrupted:
        raise SystemExit(INTERRUPTED)
    if (
        options.fail_on_difference
        and comparison is not None
        and comparison.has_difference()
    ):
        raise SystemExit(DIFFERENCE)
