"""Tests for L{nfork.config.durations}: Go duration strings, both ways."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfork.config.durations import format_duration, parse_duration

NS = 1e-9
MAX_NS = 2**63 - 1


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        # gonfork's documented forms
        ("250us", 250_000),
        ("250µs", 250_000),  # micro sign, as Go writes it
        ("250μs", 250_000),  # Greek mu, also accepted by Go
        ("100ms", 100_000_000),
        ("1.5s", 1_500_000_000),
        ("1m30s", 90_000_000_000),
        ("2h", 7_200_000_000_000),
        ("300ns", 300),
        ("0", 0),
        # from Go's own ParseDuration tests
        ("+0", 0),
        ("0s", 0),
        ("5s", 5_000_000_000),
        ("+5s", 5_000_000_000),
        ("5.0s", 5_000_000_000),
        ("5.s", 5_000_000_000),
        (".5s", 500_000_000),
        ("1.004s", 1_004_000_000),
        ("100.00100s", 100_001_000_000),
        ("3h30m", 12_600_000_000_000),
        ("10.5s4m", 250_500_000_000),
        ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ("39h9m14.425s", 140_954_425_000_000),
        ("0.3333333333333333333h", 1_200_000_000_000),
        ("0.830103483285477580700h", 2_988_372_539_827),
        ("9007199254740993ns", 9_007_199_254_740_993),
        ("9223372036854775807ns", MAX_NS),
        ("9223372036854775.807us", MAX_NS),
        ("9223372036s854ms775us807ns", MAX_NS),
    ],
)
def test_parse_go_durations(text: str, nanoseconds: int) -> None:
    assert parse_duration(text) == nanoseconds / 1e9


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty string"),
        ("10", 'missing unit after "10"'),
        ("00", "missing unit"),
        ("1x", 'unknown unit "x"'),
        ("1d", 'unknown unit "d"'),
        ("1S", 'unknown unit "S"'),
        ("abc", 'no number before "abc"'),
        ("s", 'no number before "s"'),
        (".", "expected a number"),
        (".s", "no number"),
        ("+", "no number"),
        ("-1s", "negative durations are not allowed"),
        ("-0", "negative durations are not allowed"),
        (" 1s", 'no number before " "'),
        ("1s ", 'unknown unit "s "'),
        ("1 s", 'unknown unit " s"'),
        ("9223372036854775808ns", "out of range"),
        ("9223372036854775.808us", "out of range"),
        ("1" + "0" * 5000 + "s", "out of range"),
        ("0." + "9" * 5000 + "h" * 3, 'unknown unit "hhh"'),
    ],
)
def test_parse_rejects_with_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert problem in message
    assert message.startswith("invalid duration ")
    assert 'expected a Go duration such as "100ms" or "1.5s"' in message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1.5, "1.5s"),
        (0.1, "100ms"),
        (250e-6, "250µs"),
        (90, "1m30s"),
        (7200, "2h0m0s"),
        (0.001234, "1.234ms"),
        (300e-9, "300ns"),
        (1e-9, "1ns"),
        # Go's own Duration.String tests
        (1.1e-6, "1.1µs"),
        (2.2e-3, "2.2ms"),
        (3.3, "3.3s"),
        (245, "4m5s"),
        (245.001, "4m5.001s"),
        (18367.001, "5h6m7.001s"),
        (480.000000001, "8m0.000000001s"),
        (-1.5, "-1.5s"),
        (0.1 + 0.2, "300ms"),
    ],
)
def test_format_like_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_rounds_to_the_nanosecond() -> None:
    assert format_duration(1.4e-9) == "1ns"
    assert format_duration(4e-10) == "0s"


def test_format_clamps_to_go_range() -> None:
    assert format_duration(1e12) == "2562047h47m16.854775807s"
    assert format_duration(-1e12) == "-2562047h47m16.854775807s"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_format_refuses_non_finite(value: float) -> None:
    with pytest.raises(ValueError):
        format_duration(value)


units = st.sampled_from(["ns", "us", "µs", "μs", "ms", "s", "m", "h"])
numbers = st.one_of(
    st.integers(0, 10**6).map(str),
    st.builds(
        lambda whole, fraction: f"{whole}.{fraction}",
        st.integers(0, 10**4),
        st.text("0123456789", max_size=12),
    ),
    st.text("0123456789", min_size=1, max_size=12).map(lambda d: "." + d),
)
durations = st.one_of(
    st.just("0"),
    st.lists(st.tuples(numbers, units), min_size=1, max_size=4).map(
        lambda parts: "".join(n + u for n, u in parts)
    ),
)


@given(durations)
def test_parse_format_round_trip(text: str) -> None:
    seconds = parse_duration(text)
    assert seconds >= 0
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(0, MAX_NS))
def test_every_nanosecond_count_round_trips(nanoseconds: int) -> None:
    seconds = nanoseconds / 1e9
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.floats(min_value=0, max_value=9e9))
def test_format_is_within_half_a_nanosecond(seconds: float) -> None:
    assert abs(parse_duration(format_duration(seconds)) - seconds) <= 0.5 * NS + (
        seconds * 1e-15
    )


@given(st.text(max_size=30))
def test_parse_only_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        assert str(e).startswith("invalid duration")
    else:
        assert 0 <= seconds <= MAX_NS / 1e9
