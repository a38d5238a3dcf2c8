"""Prometheus metrics for C{GET /metrics}, read from the stats at scrape time.

Nothing here runs per proxied request: the L{StatsCollector} walks the
controller's inbounds when Prometheus scrapes, and turns each outbound's
L{nfork.proxy.stats.OutboundStats} totals into counters and a histogram.  The
histogram's buckets are the fixed L{LATENCY_BUCKETS}, computed from the
stats' fine logarithmic buckets (see L{prometheus_buckets}).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from nfork.control.controller import Controller
from nfork.proxy.stats import BUCKET_COUNT, BUCKETS_PER_OCTAVE, LatencyHistogram

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds, in seconds, of the latency histogram's buckets (+Inf added)."""

_LABELS = ("inbound", "outbound")
_COMPARE_LABELS = ("inbound", "candidate")
COMPARE_TOP_ENDPOINTS = 50
"""Endpoints per inbound shown in C{nfork_compare_endpoint_differing_total}:
those with the most differing requests, so that the labels stay bounded."""


def _upper_edge(index: int) -> float:
    """The upper bound, in seconds, of the stats histogram's bucket C{index}."""
    if index == BUCKET_COUNT - 1:
        return float("inf")
    return float(2.0 ** (index / BUCKETS_PER_OCTAVE)) / 1e6


_EDGES = [_upper_edge(i) for i in range(BUCKET_COUNT)]
# How many fine buckets lie entirely at or below each Prometheus bound.  The
# tiny slack keeps a fine edge that equals a bound up to rounding on its side.
_CUTS = [bisect_right(_EDGES, bound * (1 + 1e-12)) for bound in LATENCY_BUCKETS]
_MIDDLES = [0.0] + [
    float(2.0 ** ((i - 0.5) / BUCKETS_PER_OCTAVE)) / 1e6
    for i in range(1, BUCKET_COUNT - 1)
]


def prometheus_buckets(
    histogram: LatencyHistogram,
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative C{(le, count)} pairs for L{LATENCY_BUCKETS}, and the sum.

    A fine bucket of the stats histogram counts in the Prometheus buckets
    whose bound is at or above its upper edge; as a fine bucket is 1.09%
    wide, a latency within 1.09% below a bound may count in the next one.
    The sum is estimated from the fine buckets (each latency counted at its
    bucket's geometric middle, within 0.55%; beyond the range, at the
    maximum), since the stats do not keep an exact one.
    """
    counts = histogram.buckets
    cumulative = [0, *accumulate(counts)]
    buckets: list[tuple[str, float]] = [
        (_format_bound(bound), float(cumulative[cut]))
        for bound, cut in zip(LATENCY_BUCKETS, _CUTS, strict=True)
    ]
    buckets.append(("+Inf", float(histogram.count)))
    total = sum(n * middle for n, middle in zip(counts, _MIDDLES, strict=False))
    total += counts[BUCKET_COUNT - 1] * histogram.max
    return buckets, total


def _format_bound(bound: float) -> str:
    return repr(bound)


class StatsCollector(Collector):
    """Reads every outbound's stats from the controller when scraped."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def describe(self) -> Sequence[Metric]:
        """Nothing to declare ahead: the inbounds change at run time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One family per figure, one sample per inbound and outbound."""
        requests = CounterMetricFamily(
            "nfork_outbound_requests",
            "Request copies sent to the outbound (answered, failed or timed out).",
            labels=_LABELS,
        )
        errors = CounterMetricFamily(
            "nfork_outbound_errors",
            "Request copies that failed without a response.",
            labels=_LABELS,
        )
        timeouts = CounterMetricFamily(
            "nfork_outbound_timeouts",
            "Request copies abandoned after the timeout.",
            labels=_LABELS,
        )
        dropped = CounterMetricFamily(
            "nfork_outbound_dropped",
            "Request copies shed without being sent (too many in flight).",
            labels=_LABELS,
        )
        skipped = CounterMetricFamily(
            "nfork_outbound_skipped",
            "Requests the outbound did not get, by reason (body_too_large, upgrade).",
            labels=(*_LABELS, "reason"),
        )
        responses = CounterMetricFamily(
            "nfork_outbound_responses",
            "Responses received from the outbound, by status code "
            '("0": outside 100-999).',
            labels=(*_LABELS, "code"),
        )
        latency = HistogramMetricFamily(
            "nfork_outbound_latency_seconds",
            "Time from sending a copy to its response, failure or timeout.",
            labels=_LABELS,
        )
        ttfb = HistogramMetricFamily(
            "nfork_outbound_ttfb_seconds",
            "Time from sending a copy to its answer's status line and headers.",
            labels=_LABELS,
        )
        active = GaugeMetricFamily(
            "nfork_outbound_active",
            "1 for the outbound whose responses go back to clients, else 0.",
            labels=_LABELS,
        )
        inflight = GaugeMetricFamily(
            "nfork_outbound_inflight",
            "Request copies sent to the outbound and not finished yet.",
            labels=_LABELS,
        )
        connections = GaugeMetricFamily(
            "nfork_inbound_connections",
            "Client connections open to the inbound.",
            labels=("inbound",),
        )
        refused = CounterMetricFamily(
            "nfork_inbound_connections_refused",
            "Client connections closed as soon as accepted, because "
            "maxConnections were open.",
            labels=("inbound",),
        )
        compared = CounterMetricFamily(
            "nfork_compared",
            "Requests whose candidate's answer was compared with the primary's.",
            labels=_COMPARE_LABELS,
        )
        differing = CounterMetricFamily(
            "nfork_compare_differing",
            "Compared requests where the candidate differed on a field the "
            "baseline agreed on.",
            labels=_COMPARE_LABELS,
        )
        compare_skipped = CounterMetricFamily(
            "nfork_compare_skipped",
            "Requests not compared for the candidate (comparisons behind, or "
            "the copy dropped).",
            labels=_COMPARE_LABELS,
        )
        endpoint_differing = CounterMetricFamily(
            "nfork_compare_endpoint_differing",
            f"Differing requests per endpoint, for the top {COMPARE_TOP_ENDPOINTS} "
            "endpoints of each inbound.",
            labels=(*_COMPARE_LABELS, "endpoint"),
        )
        for config in self._controller.configs():
            running = self._controller.inbound(config.name)
            comparer = running.routing.comparer
            if comparer is not None:
                for candidate, done, differ, skip in comparer.counters():
                    labels = [config.name, candidate]
                    compared.add_metric(labels, done)
                    differing.add_metric(labels, differ)
                    compare_skipped.add_metric(labels, skip)
                for candidate, endpoint, count in comparer.endpoint_differing(
                    COMPARE_TOP_ENDPOINTS
                ):
                    endpoint_differing.add_metric(
                        [config.name, candidate, endpoint], count
                    )
            connections.add_metric([config.name], running.factory.open_connections)
            refused.add_metric([config.name], running.factory.refused)
            routing = running.routing
            by_name = {route.name: route for route in routing.routes}
            for outbound in routing.config.outbounds:
                route = by_name[outbound.name]
                labels = [config.name, route.name]
                stats = route.stats
                requests.add_metric(labels, stats.total_requests)
                errors.add_metric(labels, stats.total_errors)
                timeouts.add_metric(labels, stats.total_timeouts)
                dropped.add_metric(labels, stats.total_dropped)
                for reason, count in sorted(stats.total_skipped.items()):
                    skipped.add_metric([*labels, reason], count)
                for code, count in sorted(stats.total_responses.items()):
                    responses.add_metric([*labels, str(code)], count)
                buckets, total = prometheus_buckets(stats.total_latency)
                latency.add_metric(labels, buckets, total)
                buckets, total = prometheus_buckets(stats.total_ttfb)
                ttfb.add_metric(labels, buckets, total)
                active.add_metric(labels, 1 if route is routing.active else 0)
                inflight.add_metric(labels, route.inflight)
        yield from (
            requests,
            errors,
            timeouts,
            dropped,
            skipped,
            responses,
            latency,
            ttfb,
            active,
            inflight,
            connections,
            refused,
            compared,
            differing,
            compare_skipped,
            endpoint_differing,
        )


def metrics_registry(controller: Controller) -> CollectorRegistry:
    """A registry of this process's metrics: nfork's stats, process, platform.

    Each control API has its own registry (never prometheus_client's global
    one), so that tests and several controllers in one process do not mix.
    """
    registry = CollectorRegistry()
    registry.register(StatsCollector(controller))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
