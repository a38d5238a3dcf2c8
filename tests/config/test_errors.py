"""Tests for L{nfork.config.errors}: how configuration messages are worded."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfork.config.errors import (
    ConfigError,
    add_context,
    config_error,
    describe,
    error_context,
    plugin_error_context,
    quote,
    quote_all,
    unknown_key,
)

# -- quote, describe -------------------------------------------------------------


def test_quote_writes_a_json_string() -> None:
    assert quote("foo") == '"foo"'
    assert quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert quote_all(["a", "b"]) == '"a", "b"'


def test_quote_keeps_printable_non_ascii_and_escapes_the_rest() -> None:
    assert quote("é") == '"é"'
    assert quote("é\n") == '"\\u00e9\\n"'


def test_quote_shortens_past_its_limit() -> None:
    assert quote("x" * 80) == json.dumps("x" * 80)
    assert quote("x" * 81) == json.dumps("x" * 77 + "...")
    assert quote("x" * 61, limit=60) == json.dumps("x" * 57 + "...")


@given(st.text())
def test_quote_is_one_line_of_json_for_any_text(text: str) -> None:
    quoted = quote(text)
    assert "\n" not in quoted
    decoded = json.loads(quoted)
    assert decoded == text or (len(text) > 80 and decoded == text[:77] + "...")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (7, "the number 7"),
        (10**31, "a very large number"),
        (1.5, "the number 1.5"),
        ("x", 'the string "x"'),
        ([1], "an array"),
        ({}, "an object"),
        (object(), "a object"),
    ],
)
def test_describe_names_the_json_type(value: object, expected: str) -> None:
    assert describe(value) == expected


# -- unknown keys ------------------------------------------------------------------


def test_unknown_key_suggests_the_closest_ignoring_case() -> None:
    error = unknown_key("TimeoutCode", ["timeout", "timeoutCode"])
    assert str(error) == 'unknown key "TimeoutCode" (did you mean "timeoutCode"?)'
    assert error.key == "TimeoutCode"


def test_unknown_key_lists_the_valid_keys_when_none_is_close() -> None:
    error = unknown_key("zzz", ["addr", "sample"])
    assert str(error) == 'unknown key "zzz" (valid keys: "addr", "sample")'


def test_unknown_key_that_is_not_a_string() -> None:
    error = unknown_key(3, ["addr"])
    assert (str(error), error.key) == ("unknown key the number 3", None)


def test_unknown_key_with_context_does_not_repeat_the_key() -> None:
    error = unknown_key("sampel", ["sample"])
    add_context(error, inbound="foo", outbound="a")
    assert str(error) == (
        'inbound "foo": outbound "a": unknown key "sampel" (did you mean "sample"?)'
    )


# -- context -----------------------------------------------------------------------


def test_context_is_written_in_one_order_whatever_order_it_comes_in() -> None:
    def check_foo() -> None:
        with error_context(inbound="foo"):
            raise config_error("bad", key="timeout", outbound="a")

    with pytest.raises(ConfigError) as caught, error_context(path="nfork.json"):
        check_foo()
    error = caught.value
    assert str(error) == 'nfork.json: inbound "foo": outbound "a": key "timeout": bad'
    assert error.args == (str(error),)
    assert error.problem == "bad"
    assert (error.path, error.inbound, error.outbound, error.key) == (
        "nfork.json",
        "foo",
        "a",
        "timeout",
    )


def test_inner_context_wins_and_a_label_replaces_the_inbound_name() -> None:
    error = config_error("bad", inbound="inner", position="line 1 column 2")
    add_context(error, inbound="outer", label="inbound #1")
    assert str(error) == "line 1 column 2: inbound #1: bad"
    assert error.inbound == "inner"


def test_mentions_can_be_left_to_the_problem() -> None:
    error = config_error(
        'outbound "a" is bad',
        inbound="foo",
        outbound="a",
        key="active",
        mention_outbound=False,
    )
    assert str(error) == 'inbound "foo": key "active": outbound "a" is bad'
    assert error.outbound == "a"
    error = config_error('key "x" is bad', key="x", mention_key=False)
    assert str(error) == 'key "x" is bad'


def test_an_error_made_by_its_constructor_keeps_its_message() -> None:
    error = ConfigError('inbound "a": no', inbound="a")
    with pytest.raises(ConfigError), error_context(path="p"):
        raise error
    assert str(error) == 'inbound "a": no'
    assert error.path is None


def test_a_plugin_error_gets_the_inbound_outbound_and_key() -> None:
    with pytest.raises(ConfigError) as caught, plugin_error_context("foo", "rec"):
        raise ConfigError("expected a path", key="addr")
    assert (
        str(caught.value)
        == 'inbound "foo": outbound "rec": key "addr": expected a path'
    )
    assert (caught.value.inbound, caught.value.outbound) == ("foo", "rec")


def test_a_plugin_error_quoting_its_key_does_not_get_it_twice() -> None:
    with pytest.raises(ConfigError) as caught, plugin_error_context("foo", "rec"):
        raise ConfigError('"level" must be one of ...', key="level")
    assert str(caught.value) == (
        'inbound "foo": outbound "rec": "level" must be one of ...'
    )
    with pytest.raises(ConfigError) as caught, plugin_error_context("foo", "rec"):
        raise ConfigError("cannot build it")
    assert str(caught.value) == 'inbound "foo": outbound "rec": cannot build it'
