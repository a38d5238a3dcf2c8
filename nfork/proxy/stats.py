"""Per-outbound statistics: counters and latency percentiles per time window.

Every request copy sent to an outbound ends in one call here, on the
per-request path, so recording is O(1): a few integer increments and one
bucket index computed from the latency.  Nothing is sorted, logged or
allocated per request (beyond Python's own integers), and the memory of one
L{OutboundStats} is fixed whatever the traffic: three L{LatencyHistogram}s of
L{BUCKET_COUNT} integers each, and response-code maps of at most 901 keys.

Like gonfork, the figures served are those of the last complete window
(1 second by default); nfork adds the totals since the outbound was created.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from itertools import accumulate
from math import ceil, floor, inf, isfinite, log2
from operator import add
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

from nfork.config.durations import format_duration

BUCKETS_PER_OCTAVE = 64
"""Buckets per power of two: each is 2**(1/64), 1.09%, wider than the last."""

OCTAVES = 32
"""Powers of two covered from 1µs: up to 2**32µs, about 71.6 minutes."""

BUCKET_COUNT = 2 + OCTAVES * BUCKETS_PER_OCTAVE
"""Buckets of every L{LatencyHistogram}: below 1µs, the octaves, beyond."""

_LAST = BUCKET_COUNT - 1
_TOP_MICROS = 2.0**OCTAVES
"""Durations from this many microseconds on go into the last bucket."""

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))
"""The percentiles a snapshot reports, with their JSON names."""

LATENCY_DIGITS = 6
"""Latencies in a snapshot are rounded to 10**-6 seconds: the microsecond."""

_FOREVER = 1e18
"""Seconds beyond Go's longest duration (about 292 years)."""

_OTHER_CODE = 0
"""Key under which response codes outside 100-999 are counted."""


def _representative(index: int) -> float:
    """The value, in seconds, a percentile falling in bucket C{index} reports.

    The geometric middle of the bucket, within 2**(1/128) (0.55%) of any
    value the bucket holds.  Bucket 0 holds everything below 1µs and reports
    0; the last one holds everything beyond the range and reports infinity:
    the caller clamps both to the exact minimum and maximum.
    """
    if index == 0:
        return 0.0
    if index == _LAST:
        return inf
    return float(2.0 ** ((index - 0.5) / BUCKETS_PER_OCTAVE)) / 1e6


_REPRESENTATIVES = tuple(_representative(i) for i in range(BUCKET_COUNT))
_ZEROS = (0,) * BUCKET_COUNT


def _rank(p: float, count: int) -> int:
    """The 1-based nearest rank of percentile C{p} among C{count} values."""
    return max(1, ceil(p * count / 100))


@define
class LatencyHistogram:
    """A fixed-size histogram of durations in seconds, with logarithmic buckets.

    Bucket 0 counts durations below 1µs (negative ones included).  From 1µs
    to 2**32µs (about 71.6 minutes), bucket M{k} counts durations in
    [2**((k-1)/64), 2**(k/64)) µs: each bucket is 1.09% wider than the
    previous one, so percentiles are within 1.09% of the exact ones.  The
    last bucket counts longer durations; percentiles falling there report
    the maximum.  The bucket list is allocated once and never grows.
    """

    max: float = field(default=0.0, init=False)
    """The exact largest duration recorded (0.0 when empty)."""
    count: int = field(default=0, init=False)
    """How many durations were recorded."""
    _min: float = field(default=inf, init=False, repr=False)
    """The exact smallest duration recorded: percentiles never go below it."""
    _buckets: list[int] = field(init=False, repr=False, factory=lambda: list(_ZEROS))

    @property
    def buckets(self) -> Sequence[int]:
        """The bucket counts, L{BUCKET_COUNT} of them (read only)."""
        return self._buckets

    def record(self, seconds: float) -> None:
        """Count one duration: O(1), one logarithm and a few comparisons."""
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        if seconds < self._min:
            self._min = seconds
        micros = seconds * 1e6
        if 1.0 <= micros < _TOP_MICROS:
            # log2(micros) is in [0, 32): floor(64 * log2) is in [0, 2048).
            self._buckets[floor(log2(micros) * 64.0) + 1] += 1
        elif micros < 1.0:
            self._buckets[0] += 1
        else:
            # Beyond the range, infinite or not a number.
            self._buckets[_LAST] += 1

    def percentile(self, p: float) -> float:
        """The C{p}th percentile (nearest rank), in seconds; 0.0 when empty.

        Within 1.09% of the exact value for durations from 1µs to 2**32µs,
        less than 1µs off below, and never outside the exact minimum and
        maximum recorded: C{percentile(0)} is the minimum and
        C{percentile(100)} is L{max}.
        """
        return self.percentiles((p,))[0]

    def percentiles(self, ps: Sequence[float]) -> list[float]:
        """L{percentile} for each of C{ps}, in one pass over the buckets."""
        for p in ps:
            if not 0.0 <= p <= 100.0:
                raise ValueError(f"percentile must be within [0, 100], not {p!r}")
        count = self.count
        if count == 0:
            return [0.0] * len(ps)
        cumulative = list(accumulate(self._buckets))
        result = []
        for p in ps:
            rank = _rank(p, count)
            if rank >= count:
                result.append(self.max)
            elif rank == 1:
                result.append(self._min)
            else:
                value = _REPRESENTATIVES[bisect_left(cumulative, rank)]
                # The extremes are exact; clamping to them keeps the estimate
                # in the same bucket as the exact percentile.
                result.append(min(max(value, self._min), self.max))
        return result

    def merge(self, other: LatencyHistogram) -> None:
        """Add every duration counted in C{other} to this histogram."""
        if other.count == 0:
            return
        self._buckets[:] = map(add, self._buckets, other._buckets)
        self.count += other.count
        if other.max > self.max:
            self.max = other.max
        if other._min < self._min:
            self._min = other._min

    def export(self) -> dict[str, object]:
        """The raw histogram, JSON-ready: only the non-zero buckets are listed.

        L{add_export} adds it to another histogram, as L{merge} would.
        """
        return {
            "count": self.count,
            "max": _float_json(self.max),
            "min": _float_json(self._min),
            "buckets": [[i, n] for i, n in enumerate(self._buckets) if n],
        }

    def add_export(self, exported: Mapping[str, Any]) -> None:
        """Add the durations of an L{export}ed histogram to this one."""
        count = int(exported["count"])
        if count == 0:
            return
        buckets = self._buckets
        for index, n in exported["buckets"]:
            buckets[index] += n
        self.count += count
        other_max = _float_load(exported["max"])
        if other_max > self.max:
            self.max = other_max
        other_min = _float_load(exported["min"])
        if other_min < self._min:
            self._min = other_min

    def clear(self) -> None:
        """Forget every duration, keeping the bucket list for reuse."""
        if self.count:
            self._buckets[:] = _ZEROS
            self.count = 0
        self.max = 0.0
        self._min = inf


@define
class _Figures:
    """What happened to one outbound during some stretch of time."""

    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    dropped: int = 0
    responses: dict[int, int] = field(factory=dict)
    latency: LatencyHistogram = field(factory=LatencyHistogram)
    ttfb: LatencyHistogram = field(factory=LatencyHistogram)
    """Time from sending a copy to its answer's head (responses only)."""
    skipped: dict[str, int] = field(factory=dict)
    """Requests this outbound did not get, by reason (C{body_too_large}...)."""

    def count_response(self, code: int) -> None:
        """Count one response with status C{code}."""
        responses = self.responses
        try:
            responses[code] += 1
        except KeyError:
            # First of its code in this window: the only time the code is
            # checked, so that odd backends cannot grow the map without bound.
            if not 100 <= code <= 999:
                code = _OTHER_CODE
            responses[code] = responses.get(code, 0) + 1

    def merge(self, other: _Figures) -> None:
        """Add C{other}'s figures to these."""
        self.requests += other.requests
        self.errors += other.errors
        self.timeouts += other.timeouts
        self.dropped += other.dropped
        responses = self.responses
        for code, n in other.responses.items():
            responses[code] = responses.get(code, 0) + n
        self.latency.merge(other.latency)
        self.ttfb.merge(other.ttfb)
        if other.skipped:
            skipped = self.skipped
            for reason, n in other.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + n

    def export(self) -> dict[str, object]:
        """The raw figures, JSON-ready (histograms as buckets, not percentiles)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "dropped": self.dropped,
            "responses": {str(code): n for code, n in self.responses.items()},
            "latency": self.latency.export(),
            "ttfb": self.ttfb.export(),
            "skipped": dict(self.skipped),
        }

    def add_export(self, exported: Mapping[str, Any]) -> None:
        """Add the figures of an L{export} to these, as L{merge} would."""
        self.requests += int(exported["requests"])
        self.errors += int(exported["errors"])
        self.timeouts += int(exported["timeouts"])
        self.dropped += int(exported["dropped"])
        responses = self.responses
        for code, n in exported["responses"].items():
            key = int(code)
            responses[key] = responses.get(key, 0) + n
        self.latency.add_export(exported["latency"])
        self.ttfb.add_export(exported["ttfb"])
        skipped = self.skipped
        for reason, n in exported["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n

    def clear(self) -> None:
        """Reset to zero, keeping the containers for reuse."""
        self.requests = self.errors = self.timeouts = self.dropped = 0
        self.responses.clear()
        self.latency.clear()
        self.ttfb.clear()
        self.skipped.clear()

    def to_json(self) -> dict[str, object]:
        """The JSON-ready form served by the stats API."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "dropped": self.dropped,
            "skipped": dict(sorted(self.skipped.items())),
            "latency": _latency_json(self.latency),
            "ttfb": _latency_json(self.ttfb),
            "responses": {str(code): n for code, n in sorted(self.responses.items())},
        }


def _latency_json(latency: LatencyHistogram) -> dict[str, str]:
    """The percentiles and maximum of C{latency}, as Go duration strings."""
    values = latency.percentiles([p for _, p in PERCENTILES])
    return {
        **{
            name: _format_latency(value)
            for (name, _), value in zip(PERCENTILES, values, strict=True)
        },
        "pmx": _format_latency(latency.max),
    }


def _format_latency(seconds: float) -> str:
    """A latency as a Go duration string, rounded to the microsecond."""
    # An infinite latency, however it was measured, must not break the stats:
    # format_duration clamps this to Go's largest duration.
    seconds = max(-_FOREVER, min(seconds, _FOREVER))
    return format_duration(round(seconds, LATENCY_DIGITS))


def _float_json(value: float) -> float | str:
    """C{value} for JSON: infinities and NaN, which JSON lacks, as text."""
    return value if isfinite(value) else str(value)


def _float_load(value: float | str) -> float:
    """The float L{_float_json} gave."""
    return float(value)


def _check_window(instance: object, attribute: object, value: float) -> None:
    """Reject windows that are not a positive, finite number of seconds."""
    if not (isfinite(value) and value > 0):
        raise ValueError(f"window must be a positive number of seconds: {value!r}")


@define
class OutboundStats:
    """What happened to the request copies sent to one outbound.

    Time is cut into consecutive windows of C{window} seconds, aligned on
    multiples of C{window} of C{clock.seconds()}.  L{snapshot} serves the
    figures of the last complete window and the totals since creation.
    Windows turn over lazily, when something is recorded or read, so no
    timer is needed.

    Every request copy ends in exactly one C{record_*} call: a response,
    an error or a timeout (all three are C{requests} and have a latency), or
    a drop (the copy was never sent: counted in C{dropped} only).
    """

    _clock: IReactorTime
    window: float = field(default=1.0, converter=float, validator=_check_window)
    """Length of a window, in seconds."""
    _current: _Figures = field(init=False, factory=_Figures)
    _last: _Figures = field(init=False, factory=_Figures)
    _total: _Figures = field(init=False, factory=_Figures)
    """Every window before the current one."""
    _index: int = field(init=False, default=0)
    """The current window is [_index * window, (_index + 1) * window)."""
    _start: float = field(init=False, default=0.0)
    _end: float = field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        """Open the window the clock is in; there is no complete one yet."""
        self._enter(self._clock.seconds())

    def _enter(self, now: float) -> int:
        """Make the window containing C{now} current; return its index."""
        window = self.window
        index = floor(now / window)
        # The division may round across a boundary: make start <= now < end.
        if index * window > now:
            index -= 1
        elif (index + 1) * window <= now:
            index += 1
        self._index = index
        self._start = index * window
        self._end = (index + 1) * window
        return index

    def _rotate(self, now: float) -> None:
        """Close the current window because C{now} is outside it."""
        previous = self._index
        current = self._current
        self._total.merge(current)
        if self._enter(now) == previous + 1:
            self._last, self._current = current, self._last
        else:
            # Whole windows went by with nothing recorded (or the clock went
            # back): the last complete window saw no traffic.
            self._last.clear()
        self._current.clear()

    def _now(self) -> _Figures:
        """The figures of the window the clock is in now."""
        now = self._clock.seconds()
        if not self._start <= now < self._end:
            self._rotate(now)
        return self._current

    def record_response(
        self, code: int, latency: float, ttfb: float | None = None
    ) -> None:
        """Count a response with status C{code}, C{latency} seconds after sending.

        C{ttfb} is when its head arrived (a streamed answer); by default the
        answer came whole, at C{latency}.
        """
        figures = self._now()
        figures.requests += 1
        figures.count_response(code)
        figures.latency.record(latency)
        figures.ttfb.record(latency if ttfb is None else ttfb)

    def record_delivered(self, latency: float) -> None:
        """Count a copy a sink accepted (no HTTP response), after C{latency} s."""
        figures = self._now()
        figures.requests += 1
        figures.latency.record(latency)

    def record_error(self, latency: float) -> None:
        """Count a request that failed (no response) after C{latency} seconds."""
        figures = self._now()
        figures.requests += 1
        figures.errors += 1
        figures.latency.record(latency)

    def record_timeout(self, latency: float) -> None:
        """Count a request abandoned after C{latency} seconds without an answer."""
        figures = self._now()
        figures.requests += 1
        figures.timeouts += 1
        figures.latency.record(latency)

    def record_dropped(self) -> None:
        """Count a copy shed without being sent, because too many were in flight."""
        self._now().dropped += 1

    def record_skipped(self, reason: str) -> None:
        """Count a request this outbound did not get, for C{reason}.

        C{"body_too_large"}: its body was over C{mirrorBody} and went to the
        active outbound only; C{"upgrade"}: an upgrade request.  Not a copy:
        not counted in C{requests}.
        """
        skipped = self._now().skipped
        skipped[reason] = skipped.get(reason, 0) + 1

    def snapshot(self) -> dict[str, object]:
        """The last complete window's figures, with the totals under C{"total"}.

        JSON-ready; see C{docs/stats.md} for the meaning of every figure.
        """
        current = self._now()
        result = self._last.to_json()
        total = _Figures()
        total.merge(self._total)
        total.merge(current)
        result["total"] = total.to_json()
        return result

    def export(self) -> dict[str, object]:
        """The raw state, JSON-ready, for L{load_sum} in another process.

        The window, the index of the current window (windows are aligned on
        multiples of C{window} of the clock, so processes sharing a clock
        share windows), and the current window's, the last complete
        window's and the earlier windows' figures.  Called about once a
        second by a worker process, never per request.
        """
        current = self._now()
        return {
            "window": self.window,
            "index": self._index,
            "current": current.export(),
            "last": self._last.export(),
            "total": self._total.export(),
        }

    def load_sum(self, exports: Sequence[Mapping[str, Any]]) -> None:
        """Replace these stats with the sum of C{exports} (from L{export}).

        Histograms are merged bucket by bucket, so the percentiles served
        are those of all the durations together.  The windows are placed
        against this object's clock: an export whose current window has
        closed since counts it as the last complete window (or, older, in
        the totals), as its own stats would when next read.

        @raise ValueError: an export's window differs from L{window}.
        """
        for exported in exports:
            if float(exported["window"]) != self.window:
                raise ValueError(
                    f"cannot add stats of {exported['window']!r}-second windows "
                    f"to stats of {self.window!r}-second windows"
                )
        current, last, total = self._current, self._last, self._total
        current.clear()
        last.clear()
        total.clear()
        index = self._enter(self._clock.seconds())
        for exported in exports:
            total.add_export(exported["total"])
            age = index - int(exported["index"])
            if age <= 0:
                current.add_export(exported["current"])
                last.add_export(exported["last"])
            else:
                # Its current window is over: in the totals, and the last
                # complete one if it was the window just before this one.
                total.add_export(exported["current"])
                if age == 1:
                    last.add_export(exported["current"])

    @property
    def total_requests(self) -> int:
        """Request copies sent since creation (responses, errors and timeouts)."""
        return self._total.requests + self._current.requests

    @property
    def total_errors(self) -> int:
        """Request copies that failed since creation."""
        return self._total.errors + self._current.errors

    @property
    def total_timeouts(self) -> int:
        """Request copies that timed out since creation."""
        return self._total.timeouts + self._current.timeouts

    @property
    def total_dropped(self) -> int:
        """Request copies shed, never sent, since creation."""
        return self._total.dropped + self._current.dropped

    @property
    def total_responses(self) -> dict[int, int]:
        """Responses since creation by status code (a copy; 0 for odd codes)."""
        responses = dict(self._total.responses)
        for code, n in self._current.responses.items():
            responses[code] = responses.get(code, 0) + n
        return responses

    @property
    def total_skipped(self) -> dict[str, int]:
        """Requests not sent to this outbound since creation, by reason (a copy)."""
        skipped = dict(self._total.skipped)
        for reason, n in self._current.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
        return skipped

    @property
    def total_ttfb(self) -> LatencyHistogram:
        """Times to the first byte since creation: a new histogram."""
        ttfb = LatencyHistogram()
        ttfb.merge(self._total.ttfb)
        ttfb.merge(self._current.ttfb)
        return ttfb

    @property
    def total_latency(self) -> LatencyHistogram:
        """Latencies since creation: a new histogram, for the metrics endpoint."""
        latency = LatencyHistogram()
        latency.merge(self._total.latency)
        latency.merge(self._current.latency)
        return latency
