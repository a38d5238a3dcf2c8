"""Tests for L{nfork.proxy.stats}: histogram accuracy, windows and the JSON shape."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nfork.proxy.stats import (
    BUCKET_COUNT,
    OCTAVES,
    LatencyHistogram,
    OutboundStats,
)

deterministic = settings(derandomize=True, deadline=None, max_examples=100)

IN_RANGE = 2.0**OCTAVES / 1e6
"""The longest duration the histogram resolves, in seconds (~71.6 minutes)."""

latencies = st.one_of(
    st.floats(min_value=1e-6, max_value=IN_RANGE * 0.999),
    # Spread evenly over the orders of magnitude, as real latencies are.
    st.floats(min_value=-6, max_value=math.log10(IN_RANGE) - 0.001).map(
        lambda exponent: 10.0**exponent
    ),
)
percents = st.one_of(
    st.sampled_from([0.0, 50.0, 90.0, 99.0, 99.9, 100.0]),
    st.floats(min_value=0.0, max_value=100.0),
)

ZERO_LATENCY = {"p50": "0s", "p90": "0s", "p99": "0s", "pmx": "0s"}
EMPTY = {
    "requests": 0,
    "errors": 0,
    "timeouts": 0,
    "dropped": 0,
    "skipped": {},
    "latency": ZERO_LATENCY,
    "ttfb": ZERO_LATENCY,
    "responses": {},
}


def exact_percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile, computed by sorting."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p * len(ordered) / 100))
    return ordered[rank - 1]


def histogram_of(values: list[float]) -> LatencyHistogram:
    """A histogram with every one of C{values} recorded."""
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    return histogram


def window_figures(snapshot: dict[str, object]) -> dict[str, object]:
    """The last complete window's part of a snapshot (without the totals)."""
    return {key: value for key, value in snapshot.items() if key != "total"}


def total_figures(snapshot: dict[str, object]) -> dict[str, object]:
    """The totals of a snapshot."""
    total = snapshot["total"]
    assert isinstance(total, dict)
    return total


def latency_of(figures: dict[str, object]) -> dict[str, str]:
    """The latency part of a snapshot or of its totals."""
    latency = figures["latency"]
    assert isinstance(latency, dict)
    return latency


class LatencyHistogramTests(SynchronousTestCase):
    """A fixed-memory histogram answering percentiles within 1.09%."""

    def test_empty_histogram_reports_zero(self) -> None:
        histogram = LatencyHistogram()
        self.assertEqual(histogram.count, 0)
        self.assertEqual(histogram.max, 0.0)
        for p in (0, 50, 99, 100):
            self.assertEqual(histogram.percentile(p), 0.0)

    def test_single_value_is_every_percentile(self) -> None:
        histogram = histogram_of([0.0123456])
        for p in (0, 1, 50, 90, 99, 100):
            self.assertEqual(histogram.percentile(p), 0.0123456)

    def test_identical_values_are_exact(self) -> None:
        histogram = histogram_of([0.0015] * 1000)
        self.assertEqual(histogram.percentiles([0, 50, 90, 99, 100]), [0.0015] * 5)

    def test_max_and_count_are_exact(self) -> None:
        values = [0.003, 0.25, 1e-9, 0.1234567891, 0.0]
        histogram = histogram_of(values)
        self.assertEqual(histogram.max, 0.25)
        self.assertEqual(histogram.count, 5)
        self.assertEqual(histogram.percentile(100), 0.25)
        self.assertEqual(histogram.percentile(0), 0.0)

    def test_sub_microsecond_values_are_within_a_microsecond(self) -> None:
        values = [i * 1e-8 for i in range(100)]
        histogram = histogram_of(values)
        for p in (10, 50, 90, 99):
            self.assertLess(
                abs(histogram.percentile(p) - exact_percentile(values, p)), 1e-6
            )

    def test_values_beyond_the_range_report_the_max(self) -> None:
        two_hours = 7200.0
        histogram = histogram_of([two_hours] * 10 + [3 * two_hours])
        self.assertEqual(histogram.percentile(0), two_hours)
        self.assertEqual(histogram.percentile(50), 3 * two_hours)
        self.assertEqual(histogram.percentile(100), 3 * two_hours)
        self.assertEqual(histogram.buckets[-1], 11)

    def test_percentile_out_of_bounds_is_rejected(self) -> None:
        histogram = histogram_of([0.1])
        for p in (-0.1, 100.5, math.nan):
            self.assertRaises(ValueError, histogram.percentile, p)

    def test_bucket_list_never_grows(self) -> None:
        histogram = LatencyHistogram()
        buckets = histogram.buckets
        self.assertEqual(len(buckets), BUCKET_COUNT)
        rng = random.Random(1)
        for _ in range(20_000):
            histogram.record(rng.lognormvariate(-6, 3))
        for extreme in (0.0, -1.0, 1e-300, 1e300, math.nan):
            histogram.record(extreme)
        self.assertIs(histogram.buckets, buckets)
        self.assertEqual(len(histogram.buckets), BUCKET_COUNT)
        self.assertEqual(sum(histogram.buckets), 20_005)

    def test_merge_is_recording_both(self) -> None:
        rng = random.Random(2)
        first = [rng.expovariate(100) for _ in range(500)]
        second = [rng.expovariate(10) for _ in range(300)]
        merged = histogram_of(first)
        buckets = merged.buckets
        merged.merge(histogram_of(second))
        both = histogram_of(first + second)
        self.assertEqual(list(merged.buckets), list(both.buckets))
        self.assertIs(merged.buckets, buckets)
        self.assertEqual(merged.count, 800)
        self.assertEqual(merged.max, max(first + second))
        ps = [0, 50, 90, 99, 100]
        self.assertEqual(merged.percentiles(ps), both.percentiles(ps))

    def test_merge_into_empty_and_of_empty(self) -> None:
        empty = LatencyHistogram()
        full = histogram_of([0.5, 0.25])
        full.merge(LatencyHistogram())
        self.assertEqual(full.count, 2)
        empty.merge(full)
        self.assertEqual(empty.percentiles([0, 100]), [0.25, 0.5])

    def test_clear_forgets_everything_and_keeps_the_buckets(self) -> None:
        histogram = histogram_of([0.1, 0.2, 3.0])
        buckets = histogram.buckets
        histogram.clear()
        self.assertIs(histogram.buckets, buckets)
        self.assertEqual(sum(buckets), 0)
        self.assertEqual((histogram.count, histogram.max), (0, 0.0))
        self.assertEqual(histogram.percentile(50), 0.0)
        histogram.record(0.004)
        self.assertEqual(histogram.percentiles([0, 50, 100]), [0.004] * 3)


@deterministic
@given(values=st.lists(latencies, min_size=1, max_size=300), p=percents)
def test_percentile_is_within_one_bucket(values: list[float], p: float) -> None:
    """Between 1µs and ~71 minutes, the error is at most 1.09% of the value."""
    histogram = histogram_of(values)
    exact = exact_percentile(values, p)
    estimate = histogram.percentile(p)
    assert abs(estimate - exact) <= exact * (2 ** (1 / 64) - 1) * (1 + 1e-9)
    assert min(values) <= estimate <= max(values)
    assert histogram.max == max(values)
    assert histogram.count == len(values)


@deterministic
@given(values=st.lists(latencies, min_size=1, max_size=100))
def test_percentiles_never_decrease(values: list[float]) -> None:
    """A higher percentile is never a smaller latency."""
    estimates = histogram_of(values).percentiles([0, 10, 50, 90, 99, 99.9, 100])
    assert estimates == sorted(estimates)


def make_stats(window: float = 1.0, start: float = 0.0) -> tuple[Clock, OutboundStats]:
    """A clock at C{start} and the stats of an outbound reading it."""
    clock = Clock()
    clock.advance(start)
    return clock, OutboundStats(clock, window)


def advance_to(clock: Clock, when: float) -> None:
    """Move C{clock} to exactly C{when}, with no rounding drift from steps."""
    clock.advance(when - clock.seconds())
    assert clock.seconds() == when


class OutboundStatsCountingTests(SynchronousTestCase):
    """What each C{record_*} call counts."""

    def test_every_outcome_is_a_request_except_drops(self) -> None:
        clock, stats = make_stats()
        stats.record_response(200, 0.001)
        stats.record_response(200, 0.002)
        stats.record_response(503, 0.003)
        stats.record_error(0.004)
        stats.record_timeout(0.1)
        stats.record_timeout(0.1)
        stats.record_dropped()
        clock.advance(1)
        snapshot = stats.snapshot()
        self.assertEqual(snapshot["requests"], 6)
        self.assertEqual(snapshot["errors"], 1)
        self.assertEqual(snapshot["timeouts"], 2)
        self.assertEqual(snapshot["dropped"], 1)
        self.assertEqual(snapshot["responses"], {"200": 2, "503": 1})

    def test_dropped_copies_have_no_latency_and_are_not_requests(self) -> None:
        clock, stats = make_stats()
        for _ in range(5):
            stats.record_dropped()
        clock.advance(1)
        snapshot = stats.snapshot()
        self.assertEqual(snapshot["dropped"], 5)
        self.assertEqual(snapshot["requests"], 0)
        self.assertEqual(snapshot["latency"], ZERO_LATENCY)
        self.assertEqual(stats.total_dropped, 5)
        self.assertEqual(stats.total_requests, 0)

    def test_errors_and_timeouts_have_a_latency(self) -> None:
        clock, stats = make_stats()
        stats.record_error(0.25)
        stats.record_timeout(0.5)
        clock.advance(1)
        latency = stats.snapshot()["latency"]
        self.assertEqual(
            latency, {"p50": "250ms", "p90": "500ms", "p99": "500ms", "pmx": "500ms"}
        )

    def test_total_counters(self) -> None:
        clock, stats = make_stats()
        stats.record_response(200, 0.0)
        clock.advance(1)
        stats.record_response(200, 0.0)
        stats.record_response(404, 0.0)
        stats.record_error(0.0)
        stats.record_timeout(0.0)
        stats.record_dropped()
        self.assertEqual(stats.total_requests, 5)
        self.assertEqual(stats.total_errors, 1)
        self.assertEqual(stats.total_timeouts, 1)
        self.assertEqual(stats.total_dropped, 1)
        self.assertEqual(stats.total_responses, {200: 2, 404: 1})
        clock.advance(5)
        self.assertEqual(stats.total_requests, 5)
        stats.snapshot()
        self.assertEqual(stats.total_requests, 5)
        self.assertEqual(stats.total_responses, {200: 2, 404: 1})

    def test_odd_status_codes_share_one_key(self) -> None:
        """A backend sending odd codes cannot grow the response map unboundedly."""
        clock, stats = make_stats()
        for code in range(-50, 100_000):
            stats.record_response(code, 0.0)
        clock.advance(1)
        responses = stats.snapshot()["responses"]
        assert isinstance(responses, dict)
        self.assertEqual(len(responses), 901)
        self.assertEqual(responses["100"], 1)
        self.assertEqual(responses["999"], 1)
        self.assertEqual(responses["0"], 50 + 100 + 99_000)
        self.assertLessEqual(len(stats.total_responses), 901)


class OutboundStatsWindowTests(SynchronousTestCase):
    """Snapshots serve the last complete window."""

    def test_no_complete_window_yet(self) -> None:
        clock, stats = make_stats()
        stats.record_response(200, 0.001)
        clock.advance(0.999)
        self.assertEqual(window_figures(stats.snapshot()), EMPTY)

    def test_records_appear_when_their_window_ends(self) -> None:
        clock, stats = make_stats()
        clock.advance(0.5)
        stats.record_response(200, 0.001)
        clock.advance(0.4)
        self.assertEqual(stats.snapshot()["requests"], 0)
        clock.advance(0.1)
        self.assertEqual(stats.snapshot()["requests"], 1)

    def test_current_window_is_invisible(self) -> None:
        clock, stats = make_stats()
        stats.record_response(200, 0.001)
        clock.advance(1.2)
        stats.record_response(500, 0.001)
        stats.record_response(500, 0.001)
        clock.advance(0.7)
        snapshot = stats.snapshot()
        self.assertEqual(snapshot["requests"], 1)
        self.assertEqual(snapshot["responses"], {"200": 1})
        clock.advance(0.1)
        snapshot = stats.snapshot()
        self.assertEqual(snapshot["requests"], 2)
        self.assertEqual(snapshot["responses"], {"500": 2})

    def test_snapshot_is_repeatable(self) -> None:
        clock, stats = make_stats()
        stats.record_response(200, 0.001)
        clock.advance(1)
        stats.record_response(200, 0.002)
        self.assertEqual(stats.snapshot(), stats.snapshot())

    def test_idle_window_is_empty(self) -> None:
        clock, stats = make_stats()
        stats.record_response(200, 0.001)
        stats.record_dropped()
        clock.advance(2.5)
        snapshot = stats.snapshot()
        self.assertEqual(window_figures(snapshot), EMPTY)
        total = total_figures(snapshot)
        self.assertEqual(total["requests"], 1)
        self.assertEqual(total["dropped"], 1)

    def test_idle_window_found_by_a_record(self) -> None:
        """The turnover happens on record too, not only on snapshot."""
        clock, stats = make_stats()
        stats.record_response(200, 0.001)
        advance_to(clock, 5.3)
        stats.record_error(0.002)
        advance_to(clock, 5.4)
        self.assertEqual(window_figures(stats.snapshot()), EMPTY)
        advance_to(clock, 6.0)
        snapshot = stats.snapshot()
        self.assertEqual((snapshot["requests"], snapshot["errors"]), (1, 1))

    def test_windows_are_aligned_on_the_clock(self) -> None:
        """A window is [n * window, (n + 1) * window), whenever stats start."""
        clock, stats = make_stats(start=0.7)
        stats.record_response(200, 0.001)
        clock.advance(0.3)
        self.assertEqual(stats.snapshot()["requests"], 1)

    def test_total_keeps_everything(self) -> None:
        clock, stats = make_stats()
        for second in range(10):
            for _ in range(second):
                stats.record_response(200, 0.001 * (second + 1))
            clock.advance(1)
        stats.record_response(201, 0.5)
        snapshot = stats.snapshot()
        self.assertEqual(snapshot["requests"], 9)
        total = total_figures(snapshot)
        self.assertEqual(total["requests"], 46)
        self.assertEqual(total["responses"], {"200": 45, "201": 1})
        self.assertEqual(latency_of(total)["pmx"], "500ms")
        self.assertEqual(latency_of(snapshot)["pmx"], "10ms")

    def test_clock_going_back_starts_afresh(self) -> None:
        clock, stats = make_stats(start=100)
        stats.record_response(200, 0.001)
        clock.advance(1)
        stats.record_response(200, 0.001)
        clock.advance(-10)
        stats.record_response(200, 0.001)
        self.assertEqual(window_figures(stats.snapshot()), EMPTY)
        clock.advance(1)
        self.assertEqual(stats.snapshot()["requests"], 1)
        self.assertEqual(stats.total_requests, 3)

    def test_other_window_length(self) -> None:
        clock, stats = make_stats(window=0.25)
        stats.record_response(200, 0.001)
        clock.advance(0.25)
        stats.record_response(200, 0.001)
        stats.record_response(200, 0.001)
        self.assertEqual(stats.snapshot()["requests"], 1)
        clock.advance(0.25)
        self.assertEqual(stats.snapshot()["requests"], 2)
        clock.advance(0.5)
        self.assertEqual(stats.snapshot()["requests"], 0)

    def test_long_window(self) -> None:
        clock, stats = make_stats(window=10)
        self.assertEqual(stats.window, 10.0)
        for _ in range(9):
            stats.record_timeout(1.0)
            clock.advance(1)
        self.assertEqual(stats.snapshot()["timeouts"], 0)
        clock.advance(1)
        self.assertEqual(stats.snapshot()["timeouts"], 9)

    def test_window_must_be_positive(self) -> None:
        clock = Clock()
        for window in (0.0, -1.0, math.nan, math.inf):
            self.assertRaises(ValueError, OutboundStats, clock, window)

    def test_memory_is_bounded(self) -> None:
        """However long the traffic, the histograms keep their bucket lists."""
        clock, stats = make_stats(window=0.5)
        histograms = [
            stats._current.latency,
            stats._last.latency,
            stats._total.latency,
        ]
        rng = random.Random(3)
        for _ in range(5000):
            stats.record_response(rng.choice((200, 404, 503)), rng.expovariate(50))
            clock.advance(rng.expovariate(1000))
        stats.snapshot()
        for histogram in histograms:
            self.assertEqual(len(histogram.buckets), BUCKET_COUNT)
        self.assertEqual(
            {id(h.buckets) for h in histograms},
            {
                id(stats._current.latency.buckets),
                id(stats._last.latency.buckets),
                id(stats._total.latency.buckets),
            },
        )


class SnapshotShapeTests(SynchronousTestCase):
    """The JSON served for one outbound."""

    def test_exact_shape(self) -> None:
        clock, stats = make_stats()
        for _ in range(6):
            stats.record_response(200, 0.0015)
        stats.record_response(503, 0.0015)
        stats.record_error(0.0015)
        stats.record_timeout(0.0015)
        stats.record_timeout(0.007)
        stats.record_skipped("body_too_large")
        clock.advance(1)
        stats.record_response(200, 0.25, ttfb=0.002)
        stats.record_dropped()
        stats.record_skipped("body_too_large")
        stats.record_skipped("upgrade")
        snapshot = stats.snapshot()
        self.assertEqual(
            snapshot,
            {
                "requests": 10,
                "errors": 1,
                "timeouts": 2,
                "dropped": 0,
                "skipped": {"body_too_large": 1},
                # Percentiles other than the extremes are the geometric
                # middle of their bucket: 1.5ms is in [1.496ms, 1.512ms).
                "latency": {
                    "p50": "1.504ms",
                    "p90": "1.504ms",
                    "p99": "7ms",
                    "pmx": "7ms",
                },
                # Answers that came whole: their first byte came with the last.
                "ttfb": {
                    "p50": "1.5ms",
                    "p90": "1.5ms",
                    "p99": "1.5ms",
                    "pmx": "1.5ms",
                },
                "responses": {"200": 6, "503": 1},
                "total": {
                    "requests": 11,
                    "errors": 1,
                    "timeouts": 2,
                    "dropped": 1,
                    "skipped": {"body_too_large": 2, "upgrade": 1},
                    "latency": {
                        "p50": "1.504ms",
                        "p90": "7.001ms",
                        "p99": "250ms",
                        "pmx": "250ms",
                    },
                    "ttfb": {
                        "p50": "1.504ms",
                        "p90": "2ms",
                        "p99": "2ms",
                        "pmx": "2ms",
                    },
                    "responses": {"200": 7, "503": 1},
                },
            },
        )
        self.assertEqual(json.loads(json.dumps(snapshot)), snapshot)

    def test_empty_shape(self) -> None:
        _, stats = make_stats()
        self.assertEqual(stats.snapshot(), {**EMPTY, "total": EMPTY})

    def test_responses_sorted_by_code(self) -> None:
        clock, stats = make_stats()
        for code in (503, 200, 404, 201):
            stats.record_response(code, 0.0)
        clock.advance(1)
        responses = stats.snapshot()["responses"]
        assert isinstance(responses, dict)
        self.assertEqual(list(responses), ["200", "201", "404", "503"])

    def test_latency_is_rounded_to_the_microsecond(self) -> None:
        clock, stats = make_stats()
        stats.record_response(200, 0.0012345678)
        clock.advance(1)
        self.assertEqual(latency_of(stats.snapshot())["pmx"], "1.235ms")

    def test_latency_units(self) -> None:
        for latency, text in [
            (0.0, "0s"),
            (4e-7, "0s"),
            (0.00025, "250µs"),
            (1.5, "1.5s"),
            (90.0, "1m30s"),
        ]:
            clock, stats = make_stats()
            stats.record_response(200, latency)
            clock.advance(1)
            self.assertEqual(latency_of(stats.snapshot())["p50"], text, latency)


@pytest.mark.parametrize("window", [0.05, 0.1, 0.3, 1.0, 7.0])
def test_one_record_per_window_is_seen_once(window: float) -> None:
    """Each window's figures are served exactly during the next window.

    Windows that are not exact in binary (0.1s) turn over once each too.
    """
    clock, stats = make_stats(window=window)
    seen = 0
    for n in range(1, 21):
        advance_to(clock, (n - 0.5) * window)
        stats.record_response(200, 0.001 * n)
        advance_to(clock, n * window)
        snapshot = stats.snapshot()
        assert snapshot["requests"] == 1
        assert snapshot["latency"] == {
            "p50": f"{n}ms",
            "p90": f"{n}ms",
            "p99": f"{n}ms",
            "pmx": f"{n}ms",
        }
        seen += 1
    assert stats.total_requests == seen


@pytest.mark.parametrize(
    ("window", "now", "index"),
    [
        # 4.3 / 0.1 rounds down to 42.99..., yet 43 * 0.1 == 4.3.
        (0.1, 4.3, 43),
        # 5.699999999999999 / 0.3 rounds up to 19.0, yet 19 * 0.3 == 5.7.
        (0.3, 5.699999999999999, 18),
    ],
)
def test_window_boundaries_agree_with_the_division(
    window: float, now: float, index: int
) -> None:
    """A time at a rounding edge falls in the window whose bounds contain it."""
    clock, stats = make_stats(window=window, start=now)
    stats.record_response(200, 0.001)
    stats.record_response(200, 0.001)
    assert stats.snapshot()["requests"] == 0
    advance_to(clock, (index + 1) * window)
    assert stats.snapshot()["requests"] == 2
