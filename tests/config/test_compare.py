"""The C{compare} settings: every key, its types and bounds, the outbounds named."""

from __future__ import annotations

from typing import Any

import pytest
from attrs import evolve

from nfork.config import ConfigError, dump_config, load_config
from nfork.config.compare import (
    DEFAULT_IGNORE_HEADERS,
    CompareConfig,
    parse_compare,
)
from nfork.outbounds.registry import check_inbound, outbound_factories
from tests.support.configs import inbound_config, inbound_json, load_inbounds

OUT = {
    "prod": "127.0.0.1:8080",
    "prod-2": "127.0.0.1:8082",
    "staging": "127.0.0.1:8081",
    "recorder": "file:///tmp/nfork-compare-test.jsonl",
}
"""An active prod, a baseline, a candidate and a sink."""


def web(compare: Any) -> dict[str, Any]:
    return inbound_json("web", out=OUT, compare=compare)


def error_of(compare: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_inbounds(web(compare))
    return caught.value


def test_without_compare_the_inbound_compares_nothing() -> None:
    config = inbound_config("web", out=OUT)
    assert config.compare is None
    assert "compare" not in config.to_json()


def test_null_compare_is_the_same_as_none() -> None:
    (config,) = load_inbounds(web(None))
    assert config.compare is None


def test_defaults() -> None:
    (config,) = load_inbounds(web({}))
    assert config.compare == CompareConfig()
    compare = config.compare
    assert compare.candidates is None
    assert compare.baseline is None
    assert compare.ignore_headers == DEFAULT_IGNORE_HEADERS
    assert compare.ignore == ()
    assert compare.endpoints == ()
    assert (compare.max_body, compare.samples, compare.queue) == (1024 * 1024, 20, 256)
    assert (compare.relative, compare.absolute) == (20.0, 0.03)


def test_default_ignored_headers_include_per_answer_ones() -> None:
    lower = {name.lower() for name in DEFAULT_IGNORE_HEADERS}
    for name in ("date", "server", "etag", "x-request-id", "traceparent"):
        assert name in lower
    assert "content-type" not in lower


def test_every_key_is_read() -> None:
    given = {
        "candidates": ["staging"],
        "baseline": "prod-2",
        "ignoreHeaders": ["Date", "X-Trace"],
        "ignore": ["$.meta.generatedAt", "$.items[*].cacheKey"],
        "endpoints": ["GET /users/:id", "POST /orders"],
        "maxBody": 4096,
        "samples": 5,
        "relative": 10,
        "absolute": 0.5,
        "queue": 64,
    }
    (config,) = load_inbounds(web(given))
    assert config.compare == CompareConfig(
        candidates=("staging",),
        baseline="prod-2",
        ignore_headers=("Date", "X-Trace"),
        ignore=("$.meta.generatedAt", "$.items[*].cacheKey"),
        endpoints=("GET /users/:id", "POST /orders"),
        max_body=4096,
        samples=5,
        relative=10.0,
        absolute=0.5,
        queue=64,
    )
    assert isinstance(config.compare.relative, float)
    assert config.to_json()["compare"] == {**given, "relative": 10.0}


def test_round_trip_through_the_file() -> None:
    given = {"candidates": ["staging"], "baseline": "prod-2", "samples": 0}
    (config,) = load_inbounds(web(given))
    (again,) = load_config(dump_config([config]))
    assert again == config
    assert again.to_json()["compare"] == given


def test_to_json_leaves_defaults_out_unless_full() -> None:
    assert CompareConfig().to_json() == {}
    full = CompareConfig().to_json(full=True)
    assert full["candidates"] is None and full["baseline"] is None
    assert full["ignoreHeaders"] == list(DEFAULT_IGNORE_HEADERS)
    assert full["maxBody"] == 1024 * 1024
    assert set(full) == {
        "candidates",
        "baseline",
        "ignoreHeaders",
        "ignore",
        "endpoints",
        "maxBody",
        "samples",
        "relative",
        "absolute",
        "queue",
    }
    assert parse_compare(full) == CompareConfig()


def test_an_empty_ignore_headers_list_compares_every_header() -> None:
    (config,) = load_inbounds(web({"ignoreHeaders": []}))
    assert config.compare is not None
    assert config.compare.ignore_headers == ()
    assert config.to_json()["compare"] == {"ignoreHeaders": []}


@pytest.mark.parametrize(
    ("compare", "key", "problem"),
    [
        pytest.param(5, "compare", "expected an object", id="not_an_object"),
        pytest.param(
            {"sampels": 1},
            "compare",
            'unknown key "sampels" (did you mean "samples"?)',
            id="unknown_key",
        ),
        pytest.param(
            {"candidates": "staging"},
            "compare.candidates",
            "expected an array",
            id="candidates_string",
        ),
        pytest.param(
            {"candidates": [1]},
            "compare.candidates",
            "the number 1",
            id="candidates_number",
        ),
        pytest.param(
            {"candidates": []},
            "compare.candidates",
            "at least one outbound",
            id="candidates_empty",
        ),
        pytest.param(
            {"candidates": ["staging", "staging"]},
            "compare.candidates",
            '"staging" is listed more than once',
            id="candidates_duplicate",
        ),
        pytest.param(
            {"candidates": ["nope"]},
            "compare.candidates",
            'no outbound named "nope" (outbounds: "prod", "prod-2"',
            id="candidates_unknown",
        ),
        pytest.param(
            {"baseline": 3},
            "compare.baseline",
            "expected an outbound name",
            id="baseline_number",
        ),
        pytest.param(
            {"baseline": "nope"},
            "compare.baseline",
            'no outbound named "nope"',
            id="baseline_unknown",
        ),
        pytest.param(
            {"baseline": "staging", "candidates": ["staging"]},
            "compare.baseline",
            'the baseline "staging" cannot also be a candidate',
            id="baseline_is_candidate",
        ),
        pytest.param(
            {"ignoreHeaders": "Date"},
            "compare.ignoreHeaders",
            "expected an array",
            id="ignore_headers_string",
        ),
        pytest.param(
            {"ignoreHeaders": ["Date:"]},
            "compare.ignoreHeaders",
            'invalid header name "Date:"',
            id="ignore_headers_invalid",
        ),
        pytest.param(
            {"ignore": ["meta.x"]}, "compare.ignore", "meta.x", id="ignore_invalid"
        ),
        pytest.param(
            {"ignore": [None]}, "compare.ignore", "null", id="ignore_null_path"
        ),
        pytest.param(
            {"endpoints": ["GET users"]},
            "compare.endpoints",
            "GET users",
            id="endpoint_invalid",
        ),
        pytest.param(
            {"maxBody": "1.5MiB"},
            "compare.maxBody",
            'expected a number of bytes, or a size such as "64KiB" or "1MiB", '
            'got "1.5MiB"',
            id="max_body_bad_size",
        ),
        pytest.param(
            {"maxBody": 1.5},
            "compare.maxBody",
            "or a size such as",
            id="max_body_float",
        ),
        pytest.param(
            {"maxBody": 0},
            "compare.maxBody",
            "must be at least 1, got 0",
            id="max_body_zero",
        ),
        pytest.param(
            {"maxBody": 64 * 1024 * 1024 + 1},
            "compare.maxBody",
            "must be at most 67108864",
            id="max_body_too_large",
        ),
        pytest.param(
            {"samples": -1},
            "compare.samples",
            "must be at least 0, got -1",
            id="samples_negative",
        ),
        pytest.param(
            {"samples": 1001},
            "compare.samples",
            "must be at most 1000",
            id="samples_too_many",
        ),
        pytest.param(
            {"samples": 2.5},
            "compare.samples",
            "expected an integer",
            id="samples_float",
        ),
        pytest.param(
            {"samples": True},
            "compare.samples",
            "expected an integer, got true",
            id="samples_bool",
        ),
        pytest.param(
            {"relative": -1},
            "compare.relative",
            "percentage from 0 to 100",
            id="relative_negative",
        ),
        pytest.param(
            {"relative": "20"},
            "compare.relative",
            'got the string "20"',
            id="relative_string",
        ),
        pytest.param(
            {"absolute": 100.5},
            "compare.absolute",
            "percentage from 0 to 100",
            id="absolute_too_large",
        ),
        pytest.param(
            {"queue": 0}, "compare.queue", "must be at least 1, got 0", id="queue_zero"
        ),
        pytest.param(
            {"queue": 100_001},
            "compare.queue",
            "must be at most 100000",
            id="queue_too_large",
        ),
    ],
)
def test_bad_values_name_the_inbound_and_the_key(
    compare: Any, key: str, problem: str
) -> None:
    error = error_of(compare)
    assert error.inbound == "web"
    assert error.key == key or (key == "compare" and error.key == "compare")
    assert str(error).startswith(f'inbound "web": key "{key}": ')
    assert problem in str(error)


def test_duplicate_key_in_the_file() -> None:
    text = (
        '[{"name": "web", "listen": ":9080", "out": {"a": "h:1", "b": "h:2"}, '
        '"active": "a", "compare": {"samples": 1, "samples": 2}}]'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(text)
    assert str(caught.value) == (
        'inbound "web": key "compare": key "samples" appears more than once'
    )


def test_the_model_checks_values_however_built() -> None:
    with pytest.raises(ConfigError, match=r'key "compare.samples": must be at least'):
        CompareConfig(samples=-5)
    with pytest.raises(ConfigError, match="cannot also be a candidate"):
        CompareConfig(candidates=["a"], baseline="a")


def test_the_active_outbound_may_be_a_candidate_or_the_baseline() -> None:
    (config,) = load_inbounds(web({"candidates": ["prod", "staging"]}))
    assert config.with_active("staging").active == "staging"
    (config,) = load_inbounds(web({"baseline": "prod"}))
    assert config.with_active("prod-2").compare == config.compare


def test_a_sink_cannot_be_compared() -> None:
    factories = outbound_factories()
    for compare, key in (
        ({"candidates": ["recorder"]}, "compare.candidates"),
        ({"baseline": "recorder"}, "compare.baseline"),
    ):
        (config,) = load_inbounds(web(compare))
        with pytest.raises(ConfigError) as caught:
            check_inbound(config, factories)
        assert str(caught.value) == (
            f'inbound "web": key "{key}": outbound "recorder" (file://) gives no '
            "HTTP response and cannot be compared"
        )


def test_removing_an_outbound_named_in_compare_is_refused() -> None:
    (config,) = load_inbounds(web({"candidates": ["staging"], "baseline": "prod-2"}))
    for name, key in (
        ("staging", "compare.candidates"),
        ("prod-2", "compare.baseline"),
    ):
        with pytest.raises(ConfigError) as caught:
            config.without_outbound(name)
        assert str(caught.value) == (
            f'inbound "web": outbound "{name}" is named in {key}; change compare first'
        )
    assert config.without_outbound("recorder").outbound("recorder") is None


def test_a_config_without_a_named_outbound_is_refused() -> None:
    (config,) = load_inbounds(web({"candidates": ["staging"]}))
    kept = tuple(o for o in config.outbounds if o.name != "staging")
    with pytest.raises(ConfigError) as caught:
        evolve(config, outbounds=kept)
    assert str(caught.value).startswith(
        'inbound "web": key "compare.candidates": no outbound named "staging"'
    )


@pytest.mark.parametrize("where", ["name", "out"])
def test_compare_is_a_reserved_name(where: str) -> None:
    if where == "name":
        obj = inbound_json("compare", out=OUT)
        expected = 'the inbound name "compare" is reserved'
    else:
        obj = inbound_json("web", out={"prod": "h:1", "compare": "h:2"})
        expected = 'the outbound name "compare" is reserved'
    with pytest.raises(ConfigError, match=expected):
        load_inbounds(obj)


def test_sizes_are_read_with_their_unit() -> None:
    (config,) = load_inbounds(
        inbound_json(maxBody="2MiB", mirrorBody="64KiB", compare={"maxBody": "256KiB"})
    )
    assert (config.max_body, config.mirror_body) == (2 * 1024**2, 64 * 1024)
    assert config.compare is not None and config.compare.max_body == 256 * 1024
