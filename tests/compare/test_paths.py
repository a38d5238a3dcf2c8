"""Field paths and ignore rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfork.compare.paths import IgnoreSet, compile_ignore, format_path


def test_format_path_uses_dots_for_simple_keys_and_quotes_odd_ones():
    assert format_path([]) == "$"
    assert format_path(["items", 3, "price"]) == "$.items[3].price"
    assert format_path(["odd key"]) == '$["odd key"]'
    assert format_path(["content-type", 'x"y']) == '$["content-type"]["x\\"y"]'
    assert format_path(["3d"]) == '$["3d"]'


@pytest.mark.parametrize(
    ("rule", "path", "ignored"),
    [
        ("$.meta", ["meta"], True),
        ("$.meta", ["meta", "time"], True),
        ("$.meta", ["metadata"], False),
        ("$.items[*].cacheKey", ["items", 0, "cacheKey"], True),
        ("$.items[*].cacheKey", ["items", 7, "cacheKey", "x"], True),
        ("$.items[*].cacheKey", ["items", 7, "price"], False),
        ("$.items[*].cacheKey", ["items", "0", "cacheKey"], False),
        ("$.items[2]", ["items", 2], True),
        ("$.items[2]", ["items", 3], False),
        ("$.*.id", ["a", "id"], True),
        ("$.*.id", [0, "id"], False),
        ('$["odd key"].x', ["odd key", "x"], True),
        ("$", ["anything"], True),
    ],
)
def test_rules_ignore_the_field_and_its_subtree(rule, path, ignored):
    assert compile_ignore(rule).matches(path) is ignored
    assert IgnoreSet.compile([rule]).ignores(path) is ignored


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("meta", "must start with '$'"),
        ("$.", "key name or '*' after '.'"),
        ("$..a", "key name or '*' after '.'"),
        ("$.items[", "after '['"),
        ("$.items[x]", "after '['"),
        ("$.items[-1]", "after '['"),
        ('$["open', "quoted key"),
        ('$["a"x', "expected ']'"),
        ("$x", "expected '.' or '['"),
    ],
)
def test_invalid_rules_say_where_and_why(text, words):
    with pytest.raises(ValueError, match=r"path .*") as info:
        compile_ignore(text)
    assert words in str(info.value)


def test_descend_follows_rules_step_by_step():
    rules = IgnoreSet.compile(["$.items[*].cacheKey", "$.meta"])
    root = rules.start()
    assert root is not None
    assert rules.descend(root, "meta") is None
    items = rules.descend(root, "items")
    assert items is not None
    element = rules.descend(items, 4)
    assert element is not None
    assert rules.descend(element, "cacheKey") is None
    assert rules.descend(element, "price") == ()
    assert IgnoreSet.compile(["$"]).start() is None
    assert IgnoreSet.compile([]).descend((), "x") == ()


_steps = st.lists(
    st.one_of(st.text(max_size=8), st.integers(min_value=0, max_value=10**6)),
    max_size=6,
)


@given(_steps)
def test_a_formatted_path_compiles_to_a_rule_matching_exactly_it(steps):
    rule = compile_ignore(format_path(steps))
    assert rule.matches(steps)
    assert not rule.matches([*steps[:-1], "\0other"]) or not steps
