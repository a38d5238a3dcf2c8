"""Tests for L{nfork.config.model}: the models check values, however built.

Loading a file and building a model directly give the same message for the
same value: the check and its wording live in the model only.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from nfork.config import ConfigError, InboundConfig, OutboundConfig, load_config
from nfork.config.addresses import parse_outbound_address


def loaded_error(outbound: object = "h:2", **inbound: object) -> str:
    """The message for loading inbound "foo" with outbound "staging" as given."""
    obj: dict[str, Any] = {
        "name": "foo",
        "listen": ":9080",
        "out": {"prod": "h:1", "staging": outbound},
        "active": "prod",
        **inbound,
    }
    with pytest.raises(ConfigError) as caught:
        load_config(json.dumps([obj]))
    return str(caught.value)


def built_error(**options: Any) -> str:
    """The message for building outbound "staging" directly with C{options}."""
    address = parse_outbound_address(options.pop("address", "h:2"))
    with pytest.raises(ConfigError) as caught:
        OutboundConfig("staging", address, **options)
    return str(caught.value)


@pytest.mark.parametrize(
    ("key", "attribute", "value", "problem"),
    [
        (
            "sample",
            "sample",
            2,
            "expected a number greater than 0 and at most 1, got the number 2",
        ),
        (
            "sample",
            "sample",
            10**400,
            "expected a number greater than 0 and at most 1, got a very large number",
        ),
        ("maxInflight", "max_inflight", 0, "must be a positive integer, got 0"),
        ("methods", "methods", [], "must list at least one method"),
    ],
)
def test_loading_and_building_word_a_value_problem_alike(
    key: str, attribute: str, value: object, problem: str
) -> None:
    where = f'outbound "staging": key "{key}": '
    assert (
        loaded_error({"addr": "h:2", key: value}) == f'inbound "foo": {where}{problem}'
    )
    built = value if not isinstance(value, list) else tuple(value)
    assert built_error(**{attribute: built}) == where + problem


def test_a_zero_duration_is_shown_in_gos_form() -> None:
    assert loaded_error(timeout="0") == (
        'inbound "foo": key "timeout": must be a duration greater than zero, got "0s"'
    )


def test_an_option_of_an_http_outbound_is_a_typo_however_built() -> None:
    problem = 'outbound "staging": unknown key "sampel" (did you mean "sample"?)'
    assert loaded_error({"addr": "h:2", "sampel": 1}) == f'inbound "foo": {problem}'
    assert built_error(options={"sampel": 1}) == problem


def test_without_an_address_an_unknown_key_is_a_typo() -> None:
    assert loaded_error({"adr": "h:2"}) == (
        'inbound "foo": outbound "staging": unknown key "adr" (did you mean "addr"?)'
    )


def test_an_option_named_like_an_outbound_key_is_refused() -> None:
    assert "not an option" in built_error(address="file:///x", options={"sample": 1})


def test_an_integer_sample_is_stored_as_a_float() -> None:
    sample = OutboundConfig("a", parse_outbound_address("h:1"), sample=1).sample
    assert (sample, type(sample)) == (1.0, float)


def test_a_bad_outbound_name_is_a_bad_key_of_out() -> None:
    assert loaded_error(out={"prod": "h:1", "x y": "h:2"}).startswith(
        'inbound "foo": key "out": invalid outbound name "x y"'
    )
    with pytest.raises(ConfigError) as caught:
        OutboundConfig("stats", parse_outbound_address("h:1"))
    assert str(caught.value) == (
        'key "out": the outbound name "stats" is reserved (used by the REST API)'
    )
    assert caught.value.outbound == "stats"


def test_an_inbound_checks_its_counts_and_codes() -> None:
    outbounds = (OutboundConfig("a", parse_outbound_address("h:1")),)
    with pytest.raises(ConfigError) as caught:
        InboundConfig("foo", ":1", "tcp:1", outbounds, "a", idle_conn=0)
    assert str(caught.value) == (
        'inbound "foo": key "idleConn": must be a positive integer, got 0'
    )
    with pytest.raises(ConfigError) as caught:
        InboundConfig("foo", ":1", "tcp:1", outbounds, "a", error_code=600)
    assert str(caught.value) == (
        'inbound "foo": key "errorCode": must be an HTTP error status from 400 to '
        "599, got 600"
    )
