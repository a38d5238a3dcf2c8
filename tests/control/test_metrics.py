"""Prometheus metrics read from the stats at scrape time."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from nfork.control.controller import Controller
from nfork.control.metrics import LATENCY_BUCKETS, metrics_registry, prometheus_buckets
from nfork.proxy.stats import LatencyHistogram
from tests.support.configs import inbound_json, load_inbounds


def controller_with(*inbounds: dict[str, Any]) -> tuple[Controller, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    controller = Controller(reactor)
    for config in load_inbounds(*inbounds):
        Deferred.fromCoroutine(controller.add_inbound(config))
    return controller, reactor


WEB = inbound_json("web", "127.0.0.1:9080", out={"prod": "h:1", "staging": "h:2"})


def scrape(controller: Controller) -> dict[str, list[Sample]]:
    text = generate_latest(metrics_registry(controller)).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def values(samples: list[Sample], name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(v for k, v in sorted(s.labels.items()) if k != "inbound"): s.value
        for s in samples
        if s.name == name
    }


def test_counters_per_inbound_and_outbound() -> None:
    controller, reactor = controller_with(WEB)
    prod = controller.outbound_route("web", "prod").stats
    staging = controller.outbound_route("web", "staging").stats
    prod.record_response(200, 0.002)
    prod.record_response(200, 0.003)
    prod.record_response(503, 0.004)
    reactor.advance(5)  # across windows: the totals keep counting
    prod.record_error(0.1)
    staging.record_timeout(1.0)
    staging.record_dropped()
    metrics = scrape(controller)
    requests = metrics["nfork_outbound_requests"]
    assert values(requests, "nfork_outbound_requests_total") == {
        ("prod",): 4.0,
        ("staging",): 1.0,
    }
    assert {s.labels["inbound"] for s in requests} == {"web"}
    assert values(metrics["nfork_outbound_errors"], "nfork_outbound_errors_total") == {
        ("prod",): 1.0,
        ("staging",): 0.0,
    }
    timeouts = metrics["nfork_outbound_timeouts"]
    assert values(timeouts, "nfork_outbound_timeouts_total")[("staging",)] == 1.0
    dropped = metrics["nfork_outbound_dropped"]
    assert values(dropped, "nfork_outbound_dropped_total")[("staging",)] == 1.0
    responses = metrics["nfork_outbound_responses"]
    assert values(responses, "nfork_outbound_responses_total") == {
        ("200", "prod"): 2.0,
        ("503", "prod"): 1.0,
    }
    active = metrics["nfork_outbound_active"]
    assert values(active, "nfork_outbound_active") == {
        ("prod",): 1.0,
        ("staging",): 0.0,
    }
    inflight = metrics["nfork_outbound_inflight"]
    assert values(inflight, "nfork_outbound_inflight") == {
        ("prod",): 0.0,
        ("staging",): 0.0,
    }


def test_latency_histogram_is_cumulative_with_fixed_buckets() -> None:
    controller, _ = controller_with(WEB)
    prod = controller.outbound_route("web", "prod").stats
    for latency in (0.0001, 0.002, 0.003, 0.2, 100.0):
        prod.record_response(200, latency)
    samples = scrape(controller)["nfork_outbound_latency_seconds"]
    buckets = {
        s.labels["le"]: s.value
        for s in samples
        if s.name.endswith("_bucket") and s.labels["outbound"] == "prod"
    }
    assert list(buckets) == [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]
    assert buckets["0.0005"] == 1
    assert buckets["0.001"] == 1
    assert buckets["0.0025"] == 2
    assert buckets["0.005"] == 3
    assert buckets["0.1"] == 3
    assert buckets["0.25"] == 4
    assert buckets["60.0"] == 4
    assert buckets["+Inf"] == 5
    count = [
        s.value
        for s in samples
        if s.name.endswith("_count") and s.labels["outbound"] == "prod"
    ]
    assert count == [5]
    [total] = [
        s.value
        for s in samples
        if s.name.endswith("_sum") and s.labels["outbound"] == "prod"
    ]
    assert abs(total - 100.2051) < 100.2051 * 0.006


def test_follows_changes_of_the_running_inbounds() -> None:
    controller, _ = controller_with(WEB)
    registry = metrics_registry(controller)
    controller.activate("web", "staging")
    Deferred.fromCoroutine(controller.remove_inbound("web"))
    text = generate_latest(registry).decode()
    assert 'inbound="web"' not in text
    assert "# TYPE nfork_outbound_requests_total counter" in text


def test_each_registry_is_separate() -> None:
    one, _ = controller_with(WEB)
    two, _ = controller_with({**WEB, "name": "other"})
    assert 'inbound="other"' not in generate_latest(metrics_registry(one)).decode()
    assert 'inbound="web"' not in generate_latest(metrics_registry(two)).decode()


latencies = st.lists(
    st.floats(min_value=0, max_value=200, allow_nan=False), max_size=50
)


@given(latencies)
def test_prometheus_buckets_are_within_the_histograms_precision(
    recorded: list[float],
) -> None:
    histogram = LatencyHistogram()
    for latency in recorded:
        histogram.record(latency)
    buckets, total = prometheus_buckets(histogram)
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == len(recorded)
    for (le, count), bound in zip(buckets, LATENCY_BUCKETS, strict=False):
        assert float(le) == bound
        # A latency a little (< 1.1%) below a bound may count in the next one.
        assert sum(1 for v in recorded if v <= bound * 0.989) <= count
        assert count <= sum(1 for v in recorded if v <= bound)
    exact = sum(recorded)
    assert abs(total - exact) <= exact * 0.0056 + len(recorded) * 1e-6
