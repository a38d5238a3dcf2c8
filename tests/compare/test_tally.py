"""Counting differences, Diffy's verdicts, samples and the memory bounds."""

from __future__ import annotations

import pytest

from nfork.compare.diff import Difference
from nfork.compare.tally import OTHER, Tally, verdict
from nfork.proxy.messages import CapturedAnswer, ProxyRequest

REQUEST = ProxyRequest(
    method=b"GET",
    uri=b"/users/1?x=1",
    headers=((b"Accept", b"*/*"),),
    body=b"",
    received=1700000000.5,
)
PRIMARY = CapturedAnswer(200, ((b"Content-Type", b"application/json"),), b'{"a":1}', 7)
OTHER_ANSWER = CapturedAnswer(200, (), b'{"a":2}', 7)


def value(field, primary=1, other=2):
    return Difference(field, "value", primary, other)


def record(
    tally,
    differences=(),
    noise=(),
    *,
    endpoint="GET /users/:int",
    candidate="cand",
    baseline=PRIMARY,
    request=REQUEST,
    primary=PRIMARY,
    other=OTHER_ANSWER,
):
    return tally.record(
        candidate,
        endpoint,
        request,
        primary,
        other,
        baseline,
        list(differences),
        list(noise),
    )


@pytest.mark.parametrize(
    ("raw", "noise", "requests", "expected"),
    [
        # Worked example: 30 raw, 5 noise over 1000 requests:
        # relative 25/35 = 71% >= 20, absolute 25/1000 = 2.5% >= 0.03.
        (30, 5, 1000, "difference"),
        (10, 10, 1000, "noise"),  # raw == noise
        (5, 10, 1000, "noise"),  # raw < noise
        (11, 10, 1000, "noise"),  # relative 1/21 = 4.8% < 20
        (12, 8, 1000, "difference"),  # relative 4/20 = 20% exactly
        (1, 0, 10_000, "noise"),  # absolute 1/10000 = 0.01% < 0.03
        (3, 0, 10_000, "difference"),  # absolute 3/10000 = 0.03% exactly
        (0, 0, 10, "noise"),
    ],
)
def test_verdict_worked_examples(raw, noise, requests, expected):
    assert verdict(raw, noise, requests, 20.0, 0.03) == expected


def test_absolute_threshold_below_and_above():
    assert verdict(2, 0, 10_000, 20.0, 0.03) == "noise"
    assert verdict(2, 0, 10_000, 20.0, 0.02) == "difference"


def test_a_request_differs_only_on_fields_the_baseline_agreed_on():
    tally = Tally()
    assert record(tally, [value("$.a")]) is True
    assert record(tally, [value("$.time")], noise=[value("$.time")]) is False
    assert record(tally, [value("$.time"), value("$.a")], [value("$.time")]) is True
    assert record(tally, []) is False
    assert tally.counters() == [("cand", 4, 2, 0)]
    report = tally.report()["candidates"]["cand"]
    assert (report["compared"], report["differing"], report["skipped"]) == (4, 2, 0)
    endpoint = report["endpoints"]["GET /users/:int"]
    assert endpoint["requests"] == 4
    assert endpoint["differing"] == 2
    assert endpoint["fields"]["$.a"] == {
        "raw": 2,
        "noise": 0,
        "verdict": "difference",
        "kinds": {"value": 2},
    }
    assert endpoint["fields"]["$.time"] == {
        "raw": 2,
        "noise": 2,
        "verdict": "noise",
        "kinds": {"value": 2},
    }


def test_noise_only_fields_are_counted_too():
    tally = Tally()
    record(tally, [], noise=[value("$.t")])
    fields = tally.report()["candidates"]["cand"]["endpoints"]["GET /users/:int"]
    assert fields["fields"]["$.t"] == {
        "raw": 0,
        "noise": 1,
        "verdict": "noise",
        "kinds": {},
    }


def test_verdicts_in_the_report_use_the_endpoints_requests():
    tally = Tally(relative=20.0, absolute=10.0)
    for _ in range(9):
        record(tally, [])
    record(tally, [value("$.a")])
    fields = tally.report()["candidates"]["cand"]["endpoints"]["GET /users/:int"]
    assert fields["fields"]["$.a"]["verdict"] == "difference"  # 1/10 = 10%
    record(tally, [])
    fields = tally.report()["candidates"]["cand"]["endpoints"]["GET /users/:int"]
    assert fields["fields"]["$.a"]["verdict"] == "noise"  # 1/11 < 10%


def test_truncated_answers_skips_and_reset():
    tally = Tally()
    cut = CapturedAnswer(200, (), b"x", length=10, digest=b"d" * 32)
    record(tally, [], primary=cut)
    tally.skip("cand")
    tally.skip("other")
    assert tally.counters() == [("cand", 1, 0, 1), ("other", 0, 0, 1)]
    endpoint = tally.report()["candidates"]["cand"]["endpoints"]["GET /users/:int"]
    assert endpoint["truncated"] == 1
    tally.reset()
    assert tally.report() == {"candidates": {}}
    assert tally.counters() == []


def test_samples_hold_the_request_answers_and_differences():
    tally = Tally()
    binary = CapturedAnswer(0, (), b"", error="timeout")
    record(tally, [value("$.a"), value("$.b")], baseline=None, other=binary)
    [sample] = tally.samples("cand", "GET /users/:int", "$.a")
    assert tally.samples("cand", "GET /users/:int", "$.b")[0] is sample
    assert sample == {
        "time": 1700000000.5,
        "request": {
            "method": "GET",
            "target": "/users/1?x=1",
            "headers": [["Accept", "*/*"]],
            "body": "",
            "bodyBase64": None,
            "truncated": False,
        },
        "answers": {
            "primary": {
                "status": 200,
                "headers": [["Content-Type", "application/json"]],
                "body": '{"a":1}',
                "bodyBase64": None,
                "truncated": False,
                "error": None,
            },
            "candidate": {
                "status": 0,
                "headers": [],
                "body": "",
                "bodyBase64": None,
                "truncated": False,
                "error": "timeout",
            },
            "baseline": None,
        },
        "differences": [
            {"field": "$.a", "kind": "value", "primary": 1, "candidate": 2},
            {"field": "$.b", "kind": "value", "primary": 1, "candidate": 2},
        ],
    }


def test_sample_bodies_are_cut_and_binary_is_base64():
    tally = Tally(sample_body=4)
    request = ProxyRequest(method=b"POST", uri=b"/", headers=(), body=b"\xff\x00ab!")
    primary = CapturedAnswer(200, (), "h\u00e9llo".encode(), 6)
    big = [0] * 1000
    record(
        tally,
        [Difference("$.l", "missing", big, None)],
        request=request,
        primary=primary,
    )
    [sample] = tally.samples("cand", "GET /users/:int", "$.l")
    assert sample["request"]["body"] is None
    assert sample["request"]["bodyBase64"] == "/wBhYg=="
    assert sample["request"]["truncated"] is True
    assert sample["answers"]["primary"]["body"] == "h\u00e9l"
    assert sample["answers"]["primary"]["truncated"] is True
    clipped = sample["differences"][0]["primary"]
    assert isinstance(clipped, str)
    assert clipped.endswith("...")
    assert len(clipped) == 1024 + 3


def test_samples_per_field_and_lookups():
    tally = Tally(samples=3)
    for _ in range(10):
        record(tally, [value("$.a")])
    assert len(tally.samples("cand", "GET /users/:int", "$.a")) == 3
    assert tally.samples("cand", "GET /nothing", "$.a") == []
    assert tally.samples("cand", "GET /users/:int", "$.zzz") == []
    with pytest.raises(KeyError):
        tally.samples("nobody", "GET /users/:int", "$.a")


def test_endpoint_differing_lists_the_top_endpoints():
    tally = Tally()
    for index in range(5):
        for _ in range(index):
            record(tally, [value("$.a")], endpoint=f"GET /e{index}")
    record(tally, [], endpoint="GET /same")
    assert tally.endpoint_differing(limit=3) == [
        ("cand", "GET /e4", 4),
        ("cand", "GET /e3", 3),
        ("cand", "GET /e2", 2),
    ]


def test_memory_stays_bounded_under_a_flood_of_endpoints_and_fields():
    tally = Tally(
        samples=20, max_endpoints=1000, max_fields=200, max_stored_samples=1100
    )
    for index in range(100_000):
        record(tally, [value(f"$.f{index}")], endpoint=f"GET /p{index}")
    for index in range(100_000):
        record(tally, [value(f"$.g{index}")], endpoint="GET /one")
    endpoints = tally._candidates["cand"].endpoints
    assert len(endpoints) == 1001
    assert "GET /one" not in endpoints
    assert endpoints[OTHER].requests == 100_000 - 1000 + 100_000
    for place in endpoints.values():
        assert len(place.fields) <= 201
        for stats in place.fields.values():
            assert len(stats.samples) <= 20
    assert len(endpoints[OTHER].fields) == 201
    assert endpoints[OTHER].fields[OTHER].raw == 200_000 - 1000 - 200
    stored = {
        id(sample)
        for place in endpoints.values()
        for stats in place.fields.values()
        for sample in stats.samples
    }
    # 1000 endpoints' first samples, then OTHER's fields until the cap.
    assert len(stored) == 1100
    assert tally._stored == 1100
