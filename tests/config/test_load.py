"""Tests for L{nfork.config}: the models, loading, dumping and every check."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfork.config import (
    ConfigError,
    InboundConfig,
    OutboundConfig,
    check_unique,
    decode_json,
    dump_config,
    load_config,
    load_config_file,
    parse_inbound,
    parse_outbound,
)
from nfork.config.addresses import parse_outbound_address

GONFORK_SAMPLE = """\
[
  {
    "name": "foo",
    "listen": ":9080",
    "out": {
      "prod": "localhost:8080",
      "staging": "localhost:8081",
      "logging": "localhost:8082"
    },
    "active": "prod",
    "timeout": "100ms",
    "timeoutCode": 500,
    "idleConn": 64
  }
]
"""

MISSING = object()
"""Marks a key to remove from the base inbound."""


def inbound_obj(**changes: object) -> dict[str, Any]:
    """A valid inbound object named "foo", with some keys changed or removed."""
    obj: dict[str, Any] = {
        "name": "foo",
        "listen": ":9080",
        "out": {"prod": "localhost:8080", "staging": "localhost:8081"},
        "active": "prod",
    }
    for key, value in changes.items():
        if value is MISSING:
            del obj[key]
        else:
            obj[key] = value
    return obj


def with_staging(value: object) -> dict[str, Any]:
    """The base inbound with outbound "staging" set to C{value}."""
    return inbound_obj(out={"prod": "localhost:8080", "staging": value})


def load_error(data: object) -> ConfigError:
    """The ConfigError that loading C{data} (as a JSON file) raises."""
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(ConfigError) as caught:
        load_config(text)
    return caught.value


def out(name: str, address: str, **options: Any) -> OutboundConfig:
    return OutboundConfig(name, parse_outbound_address(address), **options)


# -- gonfork compatibility and defaults ------------------------------------


def test_gonfork_sample_loads_unchanged() -> None:
    (foo,) = load_config(GONFORK_SAMPLE)
    assert foo.name == "foo"
    assert foo.name_given
    assert foo.listen == ":9080"
    assert foo.endpoint == "tcp:9080"
    assert [o.name for o in foo.outbounds] == ["prod", "staging", "logging"]
    assert [o.address.port for o in foo.outbounds] == [8080, 8081, 8082]
    assert foo.active == "prod"
    assert foo.active_outbound is foo.outbounds[0]
    assert foo.timeout == 0.1
    assert foo.timeout_code == 500
    assert foo.idle_conn == 64


def test_gonfork_sample_dumps_back_to_the_same_json() -> None:
    dumped = dump_config(load_config(GONFORK_SAMPLE))
    assert json.loads(dumped) == json.loads(GONFORK_SAMPLE)
    assert dumped == GONFORK_SAMPLE


def test_documented_full_example_loads() -> None:
    docs = Path(__file__).parents[2] / "docs" / "configuration.md"
    text = docs.read_text(encoding="utf-8")
    example = text.split("## A full example", 1)[1].split("```json\n", 1)[1]
    shop, unnamed = load_config(example.split("```", 1)[0])
    assert shop.outbound("staging") == out(
        "staging",
        "http://staging.internal:8080/v2",
        sample=0.25,
        methods=("GET", "HEAD"),
        timeout=2.0,
        max_inflight=200,
    )
    assert (unnamed.name, unnamed.name_given, unnamed.timeout) == (":9081", False, 1)


def test_gonfork_sample_with_its_trailing_comma_is_explained() -> None:
    error = load_error(GONFORK_SAMPLE.replace("  }\n]", "  },\n]"))
    assert str(error).startswith("line 15 column 1: invalid JSON: ")
    assert "comma before a closing bracket" in str(error)


def test_defaults() -> None:
    (inbound,) = load_config(
        json.dumps([{"listen": ":9080", "out": {"a": "h:1"}, "active": "a"}])
    )
    assert inbound == InboundConfig(
        name=":9080",
        listen=":9080",
        endpoint="tcp:9080",
        outbounds=(out("a", "h:1"),),
        active="a",
        timeout=1.0,
        timeout_code=503,
        error_code=502,
        idle_conn=64,
        max_body=None,
        stats_window=1.0,
        name_given=False,
    )
    outbound = inbound.outbounds[0]
    assert (outbound.sample, outbound.methods, outbound.timeout) == (None, None, None)
    assert outbound.max_inflight == 1000


@pytest.mark.parametrize("name", ["", ":9080"])
def test_empty_name_or_listen_value_means_no_name(name: str) -> None:
    inbound = parse_inbound(inbound_obj(name=name))
    assert inbound.name == ":9080"
    assert not inbound.name_given


def test_every_key_is_read() -> None:
    inbound = parse_inbound(
        inbound_obj(
            listen="127.0.0.1:0",
            out={
                "prod": "https://prod.example:8443/api/",
                "staging": {
                    "addr": "localhost:8081",
                    "sample": 0.25,
                    "methods": ["get", "HEAD"],
                    "timeout": "2s",
                    "maxInflight": 10,
                },
            },
            timeout="1m30s",
            timeoutCode=504,
            errorCode=500,
            idleConn=8,
            maxBody=1024,
            statsWindow="10s",
        )
    )
    assert inbound.endpoint == "tcp:0:interface=127.0.0.1"
    assert inbound.timeout == 90
    assert (inbound.timeout_code, inbound.error_code) == (504, 500)
    assert (inbound.idle_conn, inbound.max_body, inbound.stats_window) == (8, 1024, 10)
    prod, staging = inbound.outbounds
    assert prod.address.path_prefix == "/api"
    assert staging == out(
        "staging",
        "localhost:8081",
        sample=0.25,
        methods=("GET", "HEAD"),
        timeout=2.0,
        max_inflight=10,
    )
    assert inbound.outbound("staging") is staging
    assert inbound.outbound("nope") is None


def test_methods_are_upper_cased_and_deduplicated() -> None:
    staging = parse_outbound(
        "foo", "staging", {"addr": "h:1", "methods": ["get", "GET", "Post"]}
    )
    assert staging.methods == ("GET", "POST")


def test_sample_integer_one_is_accepted() -> None:
    staging = parse_outbound("foo", "staging", {"addr": "h:1", "sample": 1})
    assert staging.sample == 1.0
    assert isinstance(staging.sample, float)


def test_non_http_outbounds_are_kept_for_plugins() -> None:
    inbound = parse_inbound(with_staging("file:///var/log/nfork.jsonl"))
    address = inbound.outbound("staging").address  # type: ignore[union-attr]
    assert (address.scheme, address.path_prefix) == ("file", "/var/log/nfork.jsonl")


# -- to_json / dump / round trips --------------------------------------------


def test_outbound_to_json_is_the_address_when_all_defaults() -> None:
    assert out("a", "http://h:1/x/").to_json() == "http://h:1/x/"


def test_outbound_to_json_lists_only_the_options_set() -> None:
    assert out("a", "h:1", timeout=0.25).to_json() == {
        "addr": "h:1",
        "timeout": "250ms",
    }
    assert out("a", "h:1", sample=0.5, methods=("GET",), max_inflight=5).to_json() == {
        "addr": "h:1",
        "sample": 0.5,
        "methods": ["GET"],
        "maxInflight": 5,
    }


def test_inbound_to_json_writes_our_keys_only_when_not_default() -> None:
    base = parse_inbound(inbound_obj())
    assert list(base.to_json()) == [
        "name",
        "listen",
        "out",
        "active",
        "timeout",
        "timeoutCode",
        "idleConn",
    ]
    assert base.to_json()["timeout"] == "1s"
    changed = parse_inbound(inbound_obj(errorCode=500, maxBody=1, statsWindow="5s"))
    assert {
        k: changed.to_json()[k] for k in ("errorCode", "maxBody", "statsWindow")
    } == {
        "errorCode": 500,
        "maxBody": 1,
        "statsWindow": "5s",
    }


def test_unnamed_inbound_is_written_with_its_listen_value_as_name() -> None:
    (inbound,) = load_config(json.dumps([inbound_obj(name=MISSING)]))
    assert inbound.to_json()["name"] == ":9080"
    assert load_config(dump_config([inbound])) == (inbound,)


def test_round_trip_of_a_rich_configuration() -> None:
    text = json.dumps(
        [
            inbound_obj(
                out={
                    "prod": "https://[2001:db8::1]:8443/v1",
                    "staging": {"addr": "h:1", "sample": 0.1, "timeout": "250us"},
                    "audit": {"addr": "file:///tmp/a.jsonl", "methods": ["POST"]},
                },
                timeout="1.5s",
                maxBody=10 * 1024 * 1024 + 1,
                statsWindow="1m",
            ),
            inbound_obj(name=MISSING, listen="[::1]:0", timeout="0.000001s"),
        ]
    )
    loaded = load_config(text)
    dumped = dump_config(loaded)
    assert dumped.endswith("]\n")
    assert load_config(dumped) == loaded
    assert dump_config(load_config(dumped)) == dumped
    assert '"timeout": "1µs"' in dumped


# -- the validation rules, one by one ----------------------------------------

RULES: list[tuple[str, object, tuple[str, ...]]] = [
    (
        "unknown_key_suggests_closest",
        [inbound_obj(timout="1s")],
        ('inbound "foo"', 'unknown key "timout" (did you mean "timeout"?)'),
    ),
    (
        "unknown_key_suggestion_ignores_case",
        [inbound_obj(TimeoutCode=500)],
        ('inbound "foo"', 'unknown key "TimeoutCode" (did you mean "timeoutCode"?)'),
    ),
    (
        "unknown_key_lists_valid_keys",
        [inbound_obj(zzz=1)],
        ('inbound "foo"', 'unknown key "zzz"', '"statsWindow"'),
    ),
    (
        "duplicate_key",
        '[{"name": "foo", "listen": ":1", "listen": ":2"}]',
        ('inbound "foo"', 'key "listen" appears more than once'),
    ),
    (
        "missing_listen",
        [inbound_obj(listen=MISSING)],
        ('inbound "foo"', 'missing required key "listen"'),
    ),
    (
        "missing_out",
        [inbound_obj(out=MISSING)],
        ('inbound "foo"', 'missing required key "out"'),
    ),
    (
        "missing_active",
        [inbound_obj(active=MISSING)],
        ('inbound "foo"', 'missing required key "active"'),
    ),
    (
        "name_not_a_string",
        [inbound_obj(name=7)],
        (
            'inbound #1 (listen ":9080")',
            'key "name"',
            "expected a string, got the number 7",
        ),
    ),
    (
        "name_with_bad_characters",
        [inbound_obj(name="foo bar")],
        ('inbound #1 (listen ":9080")', 'key "name"', 'invalid inbound name "foo bar"'),
    ),
    (
        "name_stats_is_reserved",
        [inbound_obj(name="stats")],
        ('inbound #1 (listen ":9080")', 'key "name"', '"stats" is reserved'),
    ),
    (
        "listen_not_a_string",
        [inbound_obj(listen=9080)],
        ('inbound "foo"', 'key "listen"', "expected a string, got the number 9080"),
    ),
    (
        "listen_unparseable",
        [inbound_obj(listen="example.com:9080")],
        ('inbound "foo"', 'key "listen"', "must be an IP address"),
    ),
    (
        "listen_port_out_of_range",
        [inbound_obj(listen=":99999")],
        ('inbound "foo"', 'key "listen"', "port 99999 out of range"),
    ),
    (
        "out_not_an_object",
        [inbound_obj(out=["localhost:8080"])],
        ('inbound "foo"', 'key "out"', "expected an object mapping outbound names"),
    ),
    (
        "out_empty",
        [inbound_obj(out={})],
        ('inbound "foo"', 'key "out"', "must name at least one outbound"),
    ),
    (
        "out_duplicate_name",
        '[{"name": "foo", "listen": ":1", "active": "a",'
        ' "out": {"a": "h:1", "a": "h:2"}}]',
        ('inbound "foo"', 'key "out"', 'outbound "a" appears more than once'),
    ),
    (
        "outbound_name_invalid",
        [inbound_obj(out={"prod": "h:1", "stag ing": "h:2"})],
        ('inbound "foo"', 'key "out"', 'invalid outbound name "stag ing"'),
    ),
    (
        "outbound_name_stats_reserved",
        [inbound_obj(out={"prod": "h:1", "stats": "h:2"})],
        ('inbound "foo"', 'key "out"', 'outbound name "stats" is reserved'),
    ),
    (
        "outbound_address_unparseable",
        [with_staging("localhost")],
        ('inbound "foo"', 'outbound "staging"', 'missing port in address "localhost"'),
    ),
    (
        "outbound_address_query",
        [with_staging("http://h/?x=1")],
        ('inbound "foo"', 'outbound "staging"', "query string"),
    ),
    (
        "outbound_wrong_type",
        [with_staging(8081)],
        (
            'inbound "foo"',
            'outbound "staging"',
            'expected an address string or an object with "addr"',
        ),
    ),
    (
        "outbound_object_without_addr",
        [with_staging({"sample": 0.5})],
        ('inbound "foo"', 'outbound "staging"', 'missing required key "addr"'),
    ),
    (
        "outbound_object_addr_not_a_string",
        [with_staging({"addr": ["h:1"]})],
        (
            'inbound "foo"',
            'outbound "staging"',
            'key "addr"',
            "expected an address string",
        ),
    ),
    (
        "outbound_object_bad_addr",
        [with_staging({"addr": "h:0"})],
        ('inbound "foo"', 'outbound "staging"', 'key "addr"', "port 0"),
    ),
    (
        "outbound_object_unknown_key",
        [with_staging({"addr": "h:1", "sampel": 0.5})],
        (
            'inbound "foo"',
            'outbound "staging"',
            'unknown key "sampel" (did you mean "sample"?)',
        ),
    ),
    (
        "outbound_sample_above_one",
        [with_staging({"addr": "h:1", "sample": 1.5})],
        (
            'inbound "foo"',
            'outbound "staging"',
            'key "sample"',
            "at most 1, got the number 1.5",
        ),
    ),
    (
        "outbound_sample_zero",
        [with_staging({"addr": "h:1", "sample": 0})],
        ('inbound "foo"', 'outbound "staging"', 'key "sample"', "greater than 0"),
    ),
    (
        "outbound_sample_not_a_number",
        [with_staging({"addr": "h:1", "sample": "50%"})],
        ('inbound "foo"', 'outbound "staging"', 'key "sample"', 'got the string "50%"'),
    ),
    (
        "outbound_sample_bool",
        [with_staging({"addr": "h:1", "sample": True})],
        ('inbound "foo"', 'outbound "staging"', 'key "sample"', "got true"),
    ),
    (
        "outbound_methods_not_a_list",
        [with_staging({"addr": "h:1", "methods": "GET"})],
        ('inbound "foo"', 'outbound "staging"', 'key "methods"', "expected an array"),
    ),
    (
        "outbound_methods_empty",
        [with_staging({"addr": "h:1", "methods": []})],
        ('inbound "foo"', 'outbound "staging"', 'key "methods"', "at least one method"),
    ),
    (
        "outbound_methods_not_a_token",
        [with_staging({"addr": "h:1", "methods": ["GET POST"]})],
        (
            'inbound "foo"',
            'outbound "staging"',
            'key "methods"',
            'invalid HTTP method "GET POST"',
        ),
    ),
    (
        "outbound_methods_not_strings",
        [with_staging({"addr": "h:1", "methods": [1]})],
        ('inbound "foo"', 'outbound "staging"', 'key "methods"', "got the number 1"),
    ),
    (
        "outbound_timeout_invalid",
        [with_staging({"addr": "h:1", "timeout": "2"})],
        (
            'inbound "foo"',
            'outbound "staging"',
            'key "timeout"',
            'invalid duration "2"',
        ),
    ),
    (
        "outbound_timeout_zero",
        [with_staging({"addr": "h:1", "timeout": "0s"})],
        ('inbound "foo"', 'outbound "staging"', 'key "timeout"', "greater than zero"),
    ),
    (
        "outbound_max_inflight_zero",
        [with_staging({"addr": "h:1", "maxInflight": 0})],
        (
            'inbound "foo"',
            'outbound "staging"',
            'key "maxInflight"',
            "must be a positive integer, got 0",
        ),
    ),
    (
        "outbound_max_inflight_too_large",
        [with_staging({"addr": "h:1", "maxInflight": 1_000_000})],
        (
            'inbound "foo"',
            'outbound "staging"',
            'key "maxInflight"',
            "must be at most 100000, got 1000000",
        ),
    ),
    (
        "max_body_too_large",
        [inbound_obj(maxBody=2**31)],
        (
            'inbound "foo"',
            'key "maxBody"',
            "must be at most 1073741824, got 2147483648",
        ),
    ),
    (
        "idle_conn_too_large",
        [inbound_obj(idleConn=10**40)],
        ('inbound "foo"', 'key "idleConn"', "at most 10000, got a very large number"),
    ),
    (
        "timeout_code_without_body",
        [inbound_obj(timeoutCode=204)],
        ('inbound "foo"', 'key "timeoutCode"', "error status from 400 to 599, got 204"),
    ),
    (
        "error_code_informational",
        [inbound_obj(errorCode=101)],
        ('inbound "foo"', 'key "errorCode"', "from 400 to 599, got 101"),
    ),
    (
        "outbound_max_inflight_float",
        [with_staging({"addr": "h:1", "maxInflight": 1.5})],
        (
            'inbound "foo"',
            'outbound "staging"',
            'key "maxInflight"',
            "expected an integer",
        ),
    ),
    (
        "active_not_a_string",
        [inbound_obj(active=["prod"])],
        ('inbound "foo"', 'key "active"', "expected a string, got an array"),
    ),
    (
        "active_not_in_out",
        [inbound_obj(active="prd")],
        (
            'inbound "foo"',
            'key "active"',
            'no outbound named "prd"',
            '(outbounds: "prod", "staging")',
        ),
    ),
    (
        "active_with_sample",
        [inbound_obj(out={"prod": {"addr": "h:1", "sample": 0.5}})],
        (
            'inbound "foo"',
            'outbound "prod"',
            'the active outbound "prod" always receives all traffic; remove "sample"',
        ),
    ),
    (
        "active_with_methods",
        [inbound_obj(out={"prod": {"addr": "h:1", "methods": ["GET"]}})],
        ('inbound "foo"', 'outbound "prod"', 'remove "methods"'),
    ),
    (
        "timeout_invalid",
        [inbound_obj(timeout="10x")],
        (
            'inbound "foo": key "timeout": invalid duration "10x"',
            'expected a Go duration such as "100ms" or "1.5s"',
        ),
    ),
    (
        "timeout_not_a_string",
        [inbound_obj(timeout=100)],
        ('inbound "foo"', 'key "timeout"', "got the number 100"),
    ),
    (
        "timeout_zero",
        [inbound_obj(timeout="0")],
        ('inbound "foo"', 'key "timeout"', "greater than zero"),
    ),
    (
        "timeout_negative",
        [inbound_obj(timeout="-1s")],
        ('inbound "foo"', 'key "timeout"', "negative durations are not allowed"),
    ),
    (
        "timeout_code_out_of_range",
        [inbound_obj(timeoutCode=600)],
        ('inbound "foo"', 'key "timeoutCode"', "from 400 to 599, got 600"),
    ),
    (
        "timeout_code_bool",
        [inbound_obj(timeoutCode=True)],
        ('inbound "foo"', 'key "timeoutCode"', "expected an integer, got true"),
    ),
    (
        "timeout_code_string",
        [inbound_obj(timeoutCode="503")],
        (
            'inbound "foo"',
            'key "timeoutCode"',
            'expected an integer, got the string "503"',
        ),
    ),
    (
        "error_code_out_of_range",
        [inbound_obj(errorCode=99)],
        ('inbound "foo"', 'key "errorCode"', "from 400 to 599, got 99"),
    ),
    (
        "idle_conn_zero",
        [inbound_obj(idleConn=0)],
        ('inbound "foo"', 'key "idleConn"', "must be a positive integer, got 0"),
    ),
    (
        "idle_conn_float",
        [inbound_obj(idleConn=64.0)],
        ('inbound "foo"', 'key "idleConn"', "expected an integer, got the number 64.0"),
    ),
    (
        "max_body_negative",
        [inbound_obj(maxBody=-1)],
        ('inbound "foo"', 'key "maxBody"', "must be a positive integer, got -1"),
    ),
    (
        "stats_window_zero",
        [inbound_obj(statsWindow="0s")],
        ('inbound "foo"', 'key "statsWindow"', "greater than zero"),
    ),
    (
        "stats_window_invalid",
        [inbound_obj(statsWindow="1 s")],
        ('inbound "foo"', 'key "statsWindow"', 'invalid duration "1 s"'),
    ),
    (
        "inbound_not_an_object",
        [inbound_obj(), "foo"],
        ("inbound #2", 'expected an inbound object, got the string "foo"'),
    ),
    (
        "unnamed_inbound_is_shown_by_position_and_listen",
        [inbound_obj(name="a", listen=":1"), inbound_obj(name=MISSING, timeout="10x")],
        ('inbound #2 (listen ":9080"): key "timeout": invalid duration "10x"',),
    ),
    (
        "duplicate_inbound_names",
        [inbound_obj(listen=":1"), inbound_obj(listen=":2")],
        (
            'inbound "foo"',
            'key "name"',
            'the name "foo" is already used by inbound #1 (listen ":1")',
        ),
    ),
    (
        "same_listen_address",
        [inbound_obj(name="a"), inbound_obj(name="b", listen="tcp:9080")],
        (
            'inbound "b"',
            'key "listen"',
            '"tcp:9080" is the same address as the listen address ":9080" '
            "of inbound #1",
        ),
    ),
    (
        "top_level_object",
        inbound_obj(),
        ("the configuration must be a JSON array of inbound objects", "got an object"),
    ),
    (
        "invalid_json",
        '[\n  {"name": "foo"\n    "listen": ":9080"}]',
        ("line 3 column 5: invalid JSON: Expecting ',' delimiter",),
    ),
    (
        "nan_is_not_json",
        '[{"name": "foo", "out": {"a": {"addr": "h:1", "sample": NaN}}}]',
        ("invalid JSON: NaN is not a JSON value",),
    ),
    (
        "deeply_nested_json",
        "[" * 100_000,
        ("invalid JSON",),
    ),
    (
        "huge_integer",
        "[" + "9" * 5000 + "]",
        ("invalid JSON: a number has too many digits",),
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [pytest.param(data, expected, id=rule) for rule, data, expected in RULES],
)
def test_validation_rule(data: object, expected: tuple[str, ...]) -> None:
    message = str(load_error(data))
    for part in expected:
        assert part in message
    assert "\n" not in message


def test_error_attributes() -> None:
    error = load_error([inbound_obj(timeout="10x")])
    assert (error.inbound, error.outbound, error.key) == ("foo", None, "timeout")
    error = load_error([with_staging({"addr": "h:1", "sample": 2})])
    assert (error.inbound, error.outbound, error.key) == ("foo", "staging", "sample")
    error = load_error([inbound_obj(name=MISSING, idleConn=0)])
    assert (error.inbound, error.key) == (":9080", "idleConn")
    assert str(error) == (
        'inbound #1 (listen ":9080"): key "idleConn": must be a positive integer, got 0'
    )
    error = load_error("{")
    assert (error.inbound, error.key) == (None, None)


def test_config_error_made_elsewhere_keeps_its_message() -> None:
    error = ConfigError('inbound "a": key "out": no', inbound="a", key="out")
    assert str(error) == 'inbound "a": key "out": no'
    assert (error.inbound, error.key, error.outbound) == ("a", "out", None)


def test_parse_inbound_checks_one_object() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_inbound(inbound_obj(name=MISSING, active="x"), index=4)
    assert str(caught.value).startswith('inbound #5 (listen ":9080"): key "active": ')


def test_parse_outbound_names_inbound_and_outbound() -> None:
    assert parse_outbound("foo", "shadow", "h:1") == out("shadow", "h:1")
    with pytest.raises(ConfigError) as caught:
        parse_outbound("foo", "shadow", {"addr": "h:1", "maxInflight": -5})
    assert str(caught.value) == (
        'inbound "foo": outbound "shadow": key "maxInflight": '
        "must be a positive integer, got -5"
    )
    with pytest.raises(ConfigError) as caught:
        parse_outbound("foo", "a/b", "h:1")
    assert 'invalid outbound name "a/b"' in str(caught.value)


def test_decode_json_reports_position() -> None:
    assert decode_json('{"a": [1]}') == {"a": [1]}
    with pytest.raises(ConfigError) as caught:
        decode_json('{"a": }')
    assert str(caught.value) == "line 1 column 7: invalid JSON: Expecting value"


# -- check_unique --------------------------------------------------------------


def test_check_unique_accepts_distinct_inbounds() -> None:
    check_unique(
        [
            parse_inbound(inbound_obj(name="a", listen=":1")),
            parse_inbound(inbound_obj(name="b", listen="127.0.0.1:1")),
            parse_inbound(inbound_obj(name="c", listen=":0")),
            parse_inbound(inbound_obj(name="d", listen=":0")),
        ]
    )


def test_check_unique_reports_the_later_inbound() -> None:
    first = parse_inbound(inbound_obj(name="a", listen="127.0.0.1:9080"))
    second = parse_inbound(inbound_obj(name="b", listen="tcp:9080:interface=127.0.0.1"))
    with pytest.raises(ConfigError) as caught:
        check_unique([first, second])
    assert (caught.value.inbound, caught.value.key) == ("b", "listen")
    assert 'of inbound "a"' in str(caught.value)
    third = parse_inbound(inbound_obj(name="a", listen=":1"))
    with pytest.raises(ConfigError) as caught:
        check_unique([first, third])
    assert str(caught.value) == (
        'inbound "a": key "name": the name "a" is already used by inbound "a" '
        '(listen "127.0.0.1:9080")'
    )


# -- copies with changes --------------------------------------------------------


@pytest.fixture
def foo() -> InboundConfig:
    return parse_inbound(
        inbound_obj(out={"prod": "h:1", "staging": "h:2", "logging": "h:3"})
    )


def test_with_outbound_adds_at_the_end(foo: InboundConfig) -> None:
    changed = foo.with_outbound(out("extra", "h:4"))
    assert [o.name for o in changed.outbounds] == [
        "prod",
        "staging",
        "logging",
        "extra",
    ]
    assert [o.name for o in foo.outbounds] == ["prod", "staging", "logging"]


def test_with_outbound_replaces_in_place(foo: InboundConfig) -> None:
    changed = foo.with_outbound(out("staging", "h:9", sample=0.5))
    assert [o.name for o in changed.outbounds] == ["prod", "staging", "logging"]
    assert changed.outbound("staging") == out("staging", "h:9", sample=0.5)


def test_with_outbound_revalidates(foo: InboundConfig) -> None:
    with pytest.raises(ConfigError) as caught:
        foo.with_outbound(out("prod", "h:9", methods=("GET",)))
    assert str(caught.value) == (
        'inbound "foo": outbound "prod": the active outbound "prod" always '
        'receives all traffic; remove "methods"'
    )


def test_without_outbound(foo: InboundConfig) -> None:
    changed = foo.without_outbound("staging")
    assert [o.name for o in changed.outbounds] == ["prod", "logging"]


def test_without_outbound_refuses_the_active_one(foo: InboundConfig) -> None:
    with pytest.raises(ConfigError) as caught:
        foo.without_outbound("prod")
    assert str(caught.value) == (
        'inbound "foo": outbound "prod": cannot remove the active outbound "prod"; '
        "make another outbound active first"
    )


def test_without_outbound_refuses_an_unknown_one(foo: InboundConfig) -> None:
    with pytest.raises(ConfigError) as caught:
        foo.without_outbound("nope")
    assert (caught.value.inbound, caught.value.key) == ("foo", "out")
    assert 'no outbound named "nope" (outbounds: "prod", "staging", "logging")' in str(
        caught.value
    )


def test_with_active(foo: InboundConfig) -> None:
    changed = foo.with_active("staging")
    assert changed.active == "staging"
    assert changed.active_outbound.name == "staging"
    assert foo.active == "prod"


def test_with_active_refuses_an_unknown_one(foo: InboundConfig) -> None:
    with pytest.raises(ConfigError) as caught:
        foo.with_active("nope")
    assert 'inbound "foo": key "active": no outbound named "nope"' in str(caught.value)


def test_with_active_refuses_a_sampled_outbound(foo: InboundConfig) -> None:
    sampled = foo.with_outbound(out("staging", "h:2", sample=0.1))
    with pytest.raises(ConfigError) as caught:
        sampled.with_active("staging")
    assert 'remove "sample"' in str(caught.value)


def test_models_validate_at_construction() -> None:
    with pytest.raises(ConfigError) as caught:
        out("a", "h:1", sample=math.nan)
    assert (caught.value.outbound, caught.value.key) == ("a", "sample")
    with pytest.raises(ConfigError):
        out("a", "h:1", methods=())
    with pytest.raises(ConfigError):
        out("a", "h:1", methods=("get",))
    with pytest.raises(ConfigError):
        out("a", "h:1", timeout=0.0)
    with pytest.raises(ConfigError):
        out("a b", "h:1")
    with pytest.raises(ConfigError):
        InboundConfig("a", ":1", "tcp:1", (out("x", "h:1"), out("x", "h:2")), "x")
    with pytest.raises(ConfigError):
        InboundConfig("a", ":1", "tcp:1", (), "x")
    with pytest.raises(ConfigError):
        InboundConfig("a", ":1", "tcp:1", (out("x", "h:1"),), "x", timeout=math.inf)
    with pytest.raises(ConfigError):
        InboundConfig("a", ":1", "tcp:1", (out("x", "h:1"),), "x", name_given=False)


# -- files ----------------------------------------------------------------------


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nfork.json"
    path.write_text(GONFORK_SAMPLE, encoding="utf-8")
    assert load_config_file(str(path)) == load_config(GONFORK_SAMPLE)


def test_load_config_file_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "nfork.json"
    path.write_bytes(b"\xef\xbb\xbf" + GONFORK_SAMPLE.encode())
    assert len(load_config_file(str(path))) == 1


def test_load_config_file_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert str(caught.value) == (
        f"{path}: cannot read the configuration file: No such file or directory"
    )
    assert caught.value.path == path


def test_load_config_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "nfork.json"
    path.write_bytes(b'["\xff"]')
    with pytest.raises(ConfigError) as caught:
        load_config_file(str(path))
    assert "is not UTF-8 text (byte 2)" in str(caught.value)


def test_load_config_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nfork.json"
    path.write_text(json.dumps([inbound_obj(timeout="10x")]), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config_file(str(path))
    assert str(caught.value).startswith(f'{path}: inbound "foo": key "timeout": ')
    path.write_text("[\n,", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config_file(str(path))
    assert str(caught.value).startswith(f"{path}: line 2 column 1: invalid JSON")


# -- properties -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.sampled_from([[], {}, ["GET"], {"a": 1}]),
)
"""Cheap values of every JSON type (and NaN), for keys expecting another one."""


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """Usually (9 times in 10) a value from C{good}, else one from C{bad}."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 9 else good)


good_names = st.sampled_from(["prod", "staging", "a"])
bad_names = st.sampled_from(["stats", "x y", "", "foo/", "é"])
good_durations = st.sampled_from(["1s", "100ms", "1m30s", "250µs", "1.5h"])
bad_durations = st.sampled_from(["0", "-1s", "10", "1x", ""])
good_addresses = st.sampled_from(
    ["localhost:8080", "h:1", "http://h/x/", "https://[::1]", "file:///tmp/x"]
)
bad_addresses = st.sampled_from(["h", "", "http://h/?q", "h:0", "::1:80"])
outbound_values = mostly(
    st.one_of(
        mostly(good_addresses, bad_addresses),
        st.fixed_dictionaries(
            {"addr": mostly(good_addresses, bad_addresses | junk)},
            optional={
                "sample": mostly(
                    st.sampled_from([0.5, 1, 1e-9]), st.sampled_from([0, 2]) | junk
                ),
                "methods": mostly(
                    st.lists(
                        st.sampled_from(["GET", "post", "X-1"]), min_size=1, max_size=3
                    ),
                    st.lists(st.sampled_from(["B@D", "", "G T"]), max_size=2) | junk,
                ),
                "timeout": mostly(good_durations, bad_durations | junk),
                "maxInflight": mostly(
                    st.integers(1, 10**5), st.integers(max_value=0) | junk
                ),
            },
        ),
    ),
    json_values,
)
optional_inbound_values = {
    "name": mostly(good_names | st.just("foo"), bad_names | junk),
    "timeout": mostly(good_durations, bad_durations | junk),
    "timeoutCode": mostly(st.integers(400, 599), st.integers() | junk),
    "errorCode": mostly(st.integers(400, 599), st.integers() | junk),
    "idleConn": mostly(st.integers(1, 1000), st.integers(max_value=0) | junk),
    "maxBody": mostly(st.integers(1, 2**30), st.integers(max_value=0) | junk),
    "statsWindow": mostly(good_durations, bad_durations | junk),
}
listens = st.sampled_from(
    [":9080", ":0", "[::1]:0", "127.0.0.1:0", "tcp:0", "unix:/tmp/nfork-test.sock"]
)
bad_listens = st.sampled_from(["", "9", "x:1", "example.com:80", ":99999"])
inbound_values = mostly(
    st.fixed_dictionaries(
        {
            "listen": mostly(listens, bad_listens | junk),
            "out": mostly(
                st.dictionaries(
                    mostly(good_names, bad_names),
                    outbound_values,
                    min_size=1,
                    max_size=3,
                ),
                json_values,
            ),
            "active": mostly(good_names, bad_names | junk),
        },
        optional=optional_inbound_values,
    ),
    st.fixed_dictionaries(
        {},
        optional={
            **optional_inbound_values,
            "listen": listens | junk,
            "out": json_values,
            "active": good_names | junk,
            "timout": junk,
        },
    ),
)


def check_loads_or_explains(data: object) -> None:
    """Loading C{data} gives a valid configuration or a ConfigError, nothing else."""
    try:
        loaded = load_config(json.dumps(data))
    except ConfigError as e:
        message = str(e)
        assert message
        assert "\n" not in message
        message.encode("utf-8")
        return
    dumped = dump_config(loaded)
    assert load_config(dumped) == loaded
    for inbound in loaded:
        assert parse_inbound(json.loads(json.dumps(inbound.to_json()))) == inbound


@given(json_values)
def test_any_json_value_loads_or_is_explained(data: object) -> None:
    check_loads_or_explains(data)
    check_loads_or_explains([data])


@given(st.lists(inbound_values, max_size=3))
def test_any_inbound_shaped_value_loads_or_is_explained(data: object) -> None:
    check_loads_or_explains(data)


@given(json_values)
def test_parse_inbound_and_outbound_raise_only_config_errors(data: object) -> None:
    for call in (
        lambda: parse_inbound(data),
        lambda: parse_outbound("foo", "bar", data),
    ):
        with contextlib.suppress(ConfigError):
            call()


@given(inbound_values)
def test_valid_inbound_shapes_are_accepted(data: dict[str, Any]) -> None:
    try:
        inbound = parse_inbound(data)
    except ConfigError:
        return
    assert inbound.outbound(inbound.active) is not None
    assert parse_inbound(inbound.to_json()) == inbound
