"""The workers' stats and comparisons summed in the parent: as if one process."""

from __future__ import annotations

import json
from math import inf
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from nfork.compare.diff import Difference
from nfork.compare.tally import OTHER, Tally
from nfork.control.controller import Controller
from nfork.control.metrics import metrics_registry
from nfork.proxy.messages import CapturedAnswer, ProxyRequest
from nfork.proxy.stats import OutboundStats
from nfork.workers.merge import (
    WorkerFigures,
    apply_snapshots,
    snapshot,
    snapshot_requests,
)
from tests.support.configs import inbound_json, load_inbounds

PRIMARY = CapturedAnswer(200, (), b'{"a":1}', 7)
CANDIDATE = CapturedAnswer(200, (), b'{"a":2}', 7)


def over_the_wire(exported: Any) -> Any:
    """What the other process reads: strict JSON (no NaN or Infinity)."""
    return json.loads(json.dumps(exported, allow_nan=False))


# -- OutboundStats ---------------------------------------------------------

_latencies = st.one_of(
    st.floats(min_value=0.0, max_value=5000.0),
    st.sampled_from([0.0, 1e-7, 0.0015, 4300.0, inf]),
)
_events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),  # worker
        st.sampled_from([0.0, 0.0, 0.3, 1.0, 2.5]),  # clock advance
        st.sampled_from(["response", "delivered", "error", "timeout", "drop", "skip"]),
        st.sampled_from([200, 204, 503, 42, 1200]),
        _latencies,
    ),
    max_size=60,
)


def record(stats: OutboundStats, kind: str, code: int, latency: float) -> None:
    if kind == "response":
        stats.record_response(code, latency, latency / 2)
    elif kind == "delivered":
        stats.record_delivered(latency)
    elif kind == "error":
        stats.record_error(latency)
    elif kind == "timeout":
        stats.record_timeout(latency)
    elif kind == "drop":
        stats.record_dropped()
    else:
        stats.record_skipped("body_too_large" if code == 200 else "upgrade")


def totals(stats: OutboundStats) -> dict[str, object]:
    return {
        "requests": stats.total_requests,
        "errors": stats.total_errors,
        "timeouts": stats.total_timeouts,
        "dropped": stats.total_dropped,
        "responses": stats.total_responses,
        "skipped": stats.total_skipped,
        "latency": list(stats.total_latency.buckets),
        "latency_max": stats.total_latency.max,
        "ttfb": list(stats.total_ttfb.buckets),
    }


@given(
    events=_events,
    workers=st.integers(min_value=1, max_value=4),
    window=st.sampled_from([1.0, 0.5, 2.0]),
    start=st.sampled_from([0.0, 1_700_000_000.25]),
    tail=st.sampled_from([0.0, 0.4, 1.0, 3.0]),
)
def test_the_sum_of_split_stats_is_one_objects_stats(
    events: list[tuple[int, float, str, int, float]],
    workers: int,
    window: float,
    start: float,
    tail: float,
) -> None:
    clock = Clock()
    clock.advance(start)
    whole = OutboundStats(clock, window)
    parts = [OutboundStats(clock, window) for _ in range(workers)]
    for worker, advance, kind, code, latency in events:
        clock.advance(advance)
        record(whole, kind, code, latency)
        record(parts[worker % workers], kind, code, latency)
    clock.advance(tail)
    exports = [over_the_wire(part.export()) for part in parts]
    summed = OutboundStats(clock, window)
    summed.load_sum(exports)
    assert summed.snapshot() == whole.snapshot()
    assert totals(summed) == totals(whole)
    # Read later, the sum turns over its windows as the one object does.
    clock.advance(window)
    assert summed.snapshot() == whole.snapshot()


def test_the_last_complete_window_is_the_sum_of_the_workers_last_windows() -> None:
    clock = Clock()
    clock.advance(100.2)
    one, two, whole = OutboundStats(clock), OutboundStats(clock), OutboundStats(clock)
    for stats, code, latency in [(one, 200, 0.010), (two, 200, 0.030), (two, 500, 0.2)]:
        stats.record_response(code, latency)
        whole.record_response(code, latency)
    clock.advance(1.0)  # window 101: 100 is the last complete one
    one.record_response(200, 5.0)
    summed = OutboundStats(clock)
    summed.load_sum([one.export(), two.export()])
    last = summed.snapshot()
    assert (last["requests"], last["responses"]) == (3, {"200": 2, "500": 1})
    # The percentiles of the merged histogram, not a mix of the workers'.
    assert last["latency"] == whole.snapshot()["latency"]
    percentiles = last["latency"]
    assert isinstance(percentiles, dict)
    assert percentiles["pmx"] == "200ms"
    total = last["total"]
    assert isinstance(total, dict)
    assert total["requests"] == 4


def test_an_export_from_the_window_before_counts_as_the_last_complete_one() -> None:
    clock = Clock()
    clock.advance(10.5)
    worker = OutboundStats(clock)
    worker.record_response(200, 0.001)
    exported = worker.export()  # taken in window 10
    clock.advance(1.0)  # loaded in window 11
    summed = OutboundStats(clock)
    summed.load_sum([exported])
    assert summed.snapshot() == worker.snapshot()
    assert summed.snapshot()["requests"] == 1
    clock.advance(5.0)  # older: in the totals only
    summed.load_sum([exported])
    assert summed.snapshot() == worker.snapshot()
    assert summed.snapshot()["requests"] == 0
    assert summed.total_requests == 1


def test_loading_replaces_the_previous_state() -> None:
    clock = Clock()
    worker = OutboundStats(clock)
    summed = OutboundStats(clock)
    summed.record_error(1.0)
    worker.record_response(200, 0.5)
    summed.load_sum([worker.export()])
    summed.load_sum([worker.export()])
    assert (summed.total_requests, summed.total_errors) == (1, 0)
    summed.load_sum([])
    assert summed.snapshot() == OutboundStats(clock).snapshot()


def test_stats_of_another_window_length_are_refused() -> None:
    clock = Clock()
    with pytest.raises(ValueError, match=r"2\.0-second windows"):
        OutboundStats(clock, 1.0).load_sum([OutboundStats(clock, 2.0).export()])


def test_an_export_lists_only_the_buckets_in_use() -> None:
    stats = OutboundStats(Clock())
    stats.record_response(200, 0.002)
    stats.record_response(200, 0.002)
    latency = over_the_wire(stats.export())["current"]["latency"]
    assert len(latency["buckets"]) == 1
    assert latency["buckets"][0][1] == 2


# -- Tally -----------------------------------------------------------------

_FIELDS = ["$.a", "$.b", "$.time", "status"]
_compared = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),  # worker
        st.sampled_from(["cand", "other"]),
        st.sampled_from(["GET /users/:int", "POST /orders", "GET /"]),
        st.lists(st.sampled_from(_FIELDS), max_size=3),  # differences
        st.lists(st.sampled_from(_FIELDS), max_size=2),  # noise
        st.booleans(),  # truncated
        st.booleans(),  # skipped instead
    ),
    max_size=50,
)


def tally_record(
    tally: Tally,
    number: int,
    candidate: str,
    endpoint: str,
    differences: list[str],
    noise: list[str],
    truncated: bool,
    skipped: bool,
) -> None:
    if skipped:
        tally.skip(candidate)
        return
    request = ProxyRequest(
        method=b"GET",
        uri=f"/r/{number}".encode(),
        headers=((b"Accept", b"*/*"),),
        body=b"\xff\xfe" if number % 2 else b"{}",
        received=1000.0 + number,
    )
    other = CapturedAnswer(200, (), b'{"a":2}', 70 if truncated else 7)
    tally.record(
        candidate,
        endpoint,
        request,
        PRIMARY,
        other,
        PRIMARY,
        [Difference(name, "value", 1, {"x": [number]}) for name in differences],
        [Difference(name, "value", 1, 3) for name in noise],
    )


def all_samples(tally: Tally) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    report = tally.report()["candidates"]
    return {
        (candidate, endpoint, name): tally.samples(candidate, endpoint, name)
        for candidate, counts in report.items()
        for endpoint, place in counts["endpoints"].items()
        for name in place["fields"]
    }


@given(
    compared=_compared,
    workers=st.integers(min_value=1, max_value=4),
    per_field=st.integers(min_value=1, max_value=4),
)
def test_the_sum_of_split_tallies_is_one_tallys_report_and_samples(
    compared: list[tuple[int, str, str, list[str], list[str], bool, bool]],
    workers: int,
    per_field: int,
) -> None:
    whole = Tally(samples=per_field)
    parts = [Tally(samples=per_field) for _ in range(workers)]
    for number, (worker, *what) in enumerate(compared):
        tally_record(whole, number, *what)  # type: ignore[arg-type]
        tally_record(parts[worker % workers], number, *what)  # type: ignore[arg-type]
    summed = Tally(samples=per_field)
    summed.load_sum([over_the_wire(part.export()) for part in parts])
    assert summed.report() == whole.report()
    assert summed.counters() == whole.counters()
    assert summed.endpoint_differing() == whole.endpoint_differing()
    expected = {key: over_the_wire(kept) for key, kept in all_samples(whole).items()}
    assert all_samples(summed) == expected
    assert summed._stored == whole._stored


def test_a_sample_kept_for_several_fields_is_sent_and_stored_once() -> None:
    worker = Tally()
    tally_record(worker, 1, "cand", "GET /", ["$.a", "$.b"], [], False, False)
    exported = over_the_wire(worker.export())
    assert len(exported["samples"]) == 1
    summed = Tally(max_stored_samples=1)
    summed.load_sum([exported, exported])
    assert summed._stored == 1
    assert summed.samples("cand", "GET /", "$.a") == summed.samples(
        "cand", "GET /", "$.b"
    )
    assert len(summed.samples("cand", "GET /", "$.a")) == 1


def test_the_sum_keeps_the_bounds_and_counts_the_rest_as_other() -> None:
    parts = []
    for worker in range(3):
        tally = Tally(samples=2, max_endpoints=2)
        for number in range(4):
            endpoint = f"GET /w{worker}/{number % 2}"
            tally_record(
                tally, worker * 10 + number, "cand", endpoint, ["$.a"], [], False, False
            )
        parts.append(tally.export())
    summed = Tally(samples=2, max_endpoints=2, max_stored_samples=3)
    summed.load_sum(parts)
    endpoints = summed.report()["candidates"]["cand"]["endpoints"]
    assert list(endpoints) == ["GET /w0/0", "GET /w0/1", OTHER]
    assert sum(place["requests"] for place in endpoints.values()) == 12
    assert endpoints[OTHER]["requests"] == 8
    kept = [len(summed.samples("cand", name, "$.a")) for name in endpoints]
    assert kept == [2, 1, 0]  # at most 2 per field, 3 in all, earliest first
    assert summed._stored == 3


def test_a_tally_loaded_twice_is_replaced_not_added() -> None:
    worker = Tally()
    tally_record(worker, 1, "cand", "GET /", ["$.a"], [], False, False)
    summed = Tally()
    summed.load_sum([worker.export()])
    summed.load_sum([worker.export()])
    assert summed.counters() == [("cand", 1, 1, 0)]


# -- Controllers: a parent reading its workers -----------------------------

WEB = inbound_json(
    "web",
    "127.0.0.1:9080",
    out={"prod": "h:1", "staging": "h:2"},
    compare={"candidates": ["staging"]},
)
API = inbound_json("api", "127.0.0.1:9081", out={"prod": "h:3"})


def controller(
    reactor: MemoryReactorClock, *inbounds: dict[str, Any], parent: bool = False
) -> Controller:
    """A worker's controller, or with C{parent} one with placeholder outbounds."""
    result = Controller(reactor, build_outbounds=not parent)
    for config in load_inbounds(*inbounds):
        Deferred.fromCoroutine(result.add_inbound(config))
    return result


def traffic(target: Controller, share: int, of: int) -> None:
    """Request number i goes to C{target} when i % of == share."""
    for i in range(12):
        if i % of != share:
            continue
        prod = target.outbound_route("web", "prod").stats
        staging = target.outbound_route("web", "staging").stats
        prod.record_response(200 if i % 3 else 503, 0.001 * (i + 1))
        if i % 4:
            staging.record_response(200, 0.5 + i)
        else:
            staging.record_dropped()
        target.outbound_route("api", "prod").stats.record_error(2.0)
        tally_record(
            target.comparer("web").tally,
            i,
            "staging",
            "GET /",
            ["$.a"],
            [],
            False,
            False,
        )


def scrape(target: Controller) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics_registry(target)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("nfork_")
        for sample in family.samples
    }


def test_the_parents_stats_and_metrics_are_those_of_one_process() -> None:
    reactor = MemoryReactorClock()
    reactor.advance(50.5)
    whole = controller(reactor, WEB, API)
    workers = [controller(reactor, WEB, API) for _ in range(3)]
    parent = controller(reactor, WEB, API, parent=True)
    traffic(whole, 0, 1)
    for k, worker in enumerate(workers):
        traffic(worker, k, 3)
        worker.outbound_route("web", "staging").inflight = k
        worker.inbound("web").factory.refused = 10 * k
        worker.comparer("web").pending = k + 1
    whole.outbound_route("web", "staging").inflight = 0 + 1 + 2
    whole.inbound("web").factory.refused = 30
    reactor.advance(1.0)
    snapshots = [over_the_wire(snapshot(w, k + 1)) for k, w in enumerate(workers)]
    apply_snapshots(parent, snapshots)
    assert parent.stats() == whole.stats()
    assert (
        parent.compare_report("web")["candidates"]
        == whole.compare_report("web")["candidates"]
    )
    assert parent.compare_report("web")["queue"]["pending"] == 1 + 2 + 3
    metrics = scrape(parent)
    assert metrics == scrape(whole)
    web_staging = (("inbound", "web"), ("outbound", "staging"))
    assert metrics["nfork_outbound_inflight", web_staging] == 3
    assert metrics["nfork_outbound_dropped_total", web_staging] == 3
    assert (
        metrics["nfork_inbound_connections_refused_total", (("inbound", "web"),)] == 30
    )
    everything = tuple(sorted((*web_staging, ("le", "+Inf"))))
    latency = ("nfork_outbound_latency_seconds_bucket", everything)
    assert metrics[latency] == 9
    assert (
        metrics["nfork_compared_total", (("candidate", "staging"), ("inbound", "web"))]
        == 12
    )
    # web's busiest outbound (4 copies and those in flight) and api's 4.
    assert [snapshot_requests(shot) for shot in snapshots] == [4 + 4, 5 + 4, 6 + 4]


def test_the_parent_counts_the_workers_open_connections() -> None:
    reactor = MemoryReactorClock()
    worker, parent = controller(reactor, API), controller(reactor, API, parent=True)
    worker.inbound("api").factory.connections.update([object(), object()])  # type: ignore[list-item]
    apply_snapshots(parent, [snapshot(worker, 1), snapshot(worker, 2)])
    assert parent.inbound("api").factory.open_connections == 4
    assert scrape(parent)["nfork_inbound_connections", (("inbound", "api"),)] == 4


def test_what_the_workers_have_not_started_reads_zero_and_the_rest_is_ignored() -> None:
    reactor = MemoryReactorClock()
    parent = controller(reactor, WEB, API, parent=True)
    old = controller(
        reactor, inbound_json("gone", "127.0.0.1:9082", out={"prod": "h:1"})
    )
    old.outbound_route("gone", "prod").stats.record_error(1.0)
    parent.outbound_route("api", "prod").stats.record_error(1.0)
    apply_snapshots(parent, [snapshot(old, 1)])
    assert parent.outbound_route("api", "prod").stats.total_requests == 0
    assert parent.compare_report("web")["candidates"]["staging"]["compared"] == 0


def test_stats_of_another_window_are_left_out() -> None:
    reactor = MemoryReactorClock()
    parent = controller(reactor, API, parent=True)
    worker = controller(reactor, {**API, "statsWindow": "2s"})
    worker.outbound_route("api", "prod").stats.record_error(1.0)
    apply_snapshots(parent, [snapshot(worker, 1)])
    assert parent.outbound_route("api", "prod").stats.total_requests == 0


def test_figures_of_an_outbound_changed_since_are_left_out() -> None:
    reactor = MemoryReactorClock()
    parent = controller(reactor, inbound_json("api", out={"prod": "h:4"}), parent=True)
    worker = controller(reactor, API)  # prod was h:3: another outbound
    worker.outbound_route("api", "prod").stats.record_error(1.0)
    apply_snapshots(parent, [snapshot(worker, 1)])
    assert parent.outbound_route("api", "prod").stats.total_requests == 0


def test_a_comparison_with_another_primary_is_left_out() -> None:
    reactor = MemoryReactorClock()
    parent = controller(reactor, {**WEB, "active": "staging"}, parent=True)
    worker = controller(reactor, {**WEB, "compare": {"candidates": ["prod"]}})
    tally_record(worker.comparer("web").tally, 1, "prod", "GET /", [], [], False, False)
    apply_snapshots(parent, [snapshot(worker, 1)])
    assert parent.comparer("web").counters() == []


def restarted(shot: dict[str, Any], pid: int) -> dict[str, Any]:
    return {**shot, "pid": pid}


def test_a_dead_workers_counts_stay_in_the_sum_and_counters_never_go_down() -> None:
    reactor = MemoryReactorClock()
    one, two = controller(reactor, WEB), controller(reactor, WEB)
    parent = controller(reactor, WEB, parent=True)
    figures = WorkerFigures(parent)
    one.outbound_route("web", "prod").stats.record_response(200, 0.1)
    one.outbound_route("web", "prod").inflight = 5
    two.outbound_route("web", "prod").stats.record_response(200, 0.1)
    figures.apply([snapshot(one, 1), snapshot(two, 2)])
    prod = parent.outbound_route("web", "prod")
    assert (prod.stats.total_requests, prod.inflight) == (2, 5)
    # Worker 1 dies: its counts stay, its copies in flight are gone.
    figures.apply([snapshot(two, 2)])
    assert (prod.stats.total_requests, prod.inflight) == (2, 0)
    # It answers again from the same process (it was late): counted once.
    figures.apply([snapshot(one, 1), snapshot(two, 2)])
    assert (prod.stats.total_requests, prod.inflight) == (2, 5)
    # Restarted: a new process with nothing counted yet.
    fresh = controller(reactor, WEB)
    fresh.outbound_route("web", "prod").stats.record_error(0.1)
    new = restarted(snapshot(fresh, 1), pid=-1)
    figures.apply([new, snapshot(two, 2)])
    assert (prod.stats.total_requests, prod.inflight) == (3, 0)
    assert prod.stats.total_errors == 1
    figures.apply([new, snapshot(two, 2)])
    assert prod.stats.total_requests == 3


def test_a_reset_forgets_the_comparison_of_workers_that_are_gone() -> None:
    reactor = MemoryReactorClock()
    worker = controller(reactor, WEB)
    parent = controller(reactor, WEB, parent=True)
    tally_record(
        worker.comparer("web").tally, 1, "staging", "GET /", [], [], False, False
    )
    figures = WorkerFigures(parent)
    figures.apply([snapshot(worker, 1)])
    figures.apply([])  # worker 1 gone
    assert parent.comparer("web").counters() == [("staging", 1, 0, 0)]
    parent.reset_compare("web")  # DELETE /v1/nfork/web/compare
    figures.apply([])
    assert parent.comparer("web").counters() == []
    replacement = restarted(snapshot(controller(reactor, WEB), 1), pid=-1)
    figures.apply([replacement])
    assert parent.comparer("web").counters() == []


def test_samples_are_sent_once_and_the_parent_keeps_them() -> None:
    reactor = MemoryReactorClock()
    worker = controller(reactor, WEB)
    parent = controller(reactor, WEB, parent=True)
    figures = WorkerFigures(parent)
    tally = worker.comparer("web").tally
    sent = []
    for number in range(3):
        tally_record(tally, number, "staging", "GET /", ["$.a"], [], False, False)
        shot = over_the_wire(snapshot(worker, 1))
        sent.append(
            len(shot["inbounds"]["web"]["compare"]["figures"]["tally"]["samples"])
        )
        figures.apply([shot])
    assert sent == [1, 1, 1]
    expected = over_the_wire(tally.samples("staging", "GET /", "$.a"))
    assert parent.compare_samples("web", "staging", "GET /", "$.a") == expected
    assert len(expected) == 3


def test_samples_missed_come_back_when_all_are_sent_again() -> None:
    reactor = MemoryReactorClock()
    worker = controller(reactor, WEB)
    parent = controller(reactor, WEB, parent=True)
    figures = WorkerFigures(parent)
    tally = worker.comparer("web").tally
    tally_record(tally, 1, "staging", "GET /", ["$.a"], [], False, False)
    snapshot(worker, 1)  # the answer is lost on the way
    tally_record(tally, 2, "staging", "GET /", ["$.a"], [], False, False)
    figures.apply([snapshot(worker, 1)])
    kept = parent.compare_samples("web", "staging", "GET /", "$.a")
    assert [sample["time"] for sample in kept] == [1002.0]
    assert parent.comparer("web").counters() == [("staging", 2, 2, 0)]
    for _ in range(30):
        figures.apply([snapshot(worker, 1)])
    kept = parent.compare_samples("web", "staging", "GET /", "$.a")
    assert [sample["time"] for sample in kept] == [1001.0, 1002.0]


def test_after_a_reset_the_samples_are_numbered_again() -> None:
    reactor = MemoryReactorClock()
    worker = controller(reactor, WEB)
    parent = controller(reactor, WEB, parent=True)
    figures = WorkerFigures(parent)
    tally = worker.comparer("web").tally
    tally_record(tally, 1, "staging", "GET /", ["$.a"], [], False, False)
    figures.apply([snapshot(worker, 1)])
    worker.reset_compare("web")
    tally_record(tally, 2, "staging", "GET /", ["$.b"], [], False, False)
    figures.apply([snapshot(worker, 1)])
    assert parent.compare_samples("web", "staging", "GET /", "$.a") == []
    kept = parent.compare_samples("web", "staging", "GET /", "$.b")
    assert [sample["time"] for sample in kept] == [1002.0]
