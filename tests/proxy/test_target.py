"""Tests for request targets: origin form passes untouched, others are checked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfork.proxy.target import (
    BadTarget,
    checked_target,
    climbs_above_root,
    needs_check,
)

TRANSPARENT = [
    b"/",
    b"/items?x=1",
    b"/a/b/../c",
    b"/a/./b",
    b"/file.tar.gz",
    b"/%41%20b?q=../../..",
    b"/a/%2e%2e",
    b"/a/..;/b",
    b"/.well-known/x",
    b"/...",
    b"/..a",
]
"""Targets forwarded byte for byte: none climbs above the root."""

CLIMBING = [
    b"/..",
    b"/../admin",
    b"/a/../../admin",
    b"/%2e%2e/admin",
    b"/%2E%2e/admin",
    b"/.%2e/admin",
    b"/a/%2e%2e%2f%2e%2e/admin",
    b"/..%2fadmin",
    b"/..%5cadmin",
    b"/..\\admin",
    b"/..;jsessionid=1/admin",
    b"//../admin",
    b"/./../admin",
    b"/../admin?x=1",
]


@pytest.mark.parametrize("target", TRANSPARENT)
def test_origin_form_targets_are_forwarded_as_is(target: bytes) -> None:
    assert checked_target(target, b"GET") == (target, None)


@pytest.mark.parametrize("target", CLIMBING)
def test_dot_segments_above_the_root_are_refused(target: bytes) -> None:
    assert needs_check(target)
    with pytest.raises(BadTarget, match="climbs above the root"):
        checked_target(target, b"GET")


@pytest.mark.parametrize(
    ("target", "origin", "authority"),
    [
        (b"http://a.example/p?q=1", b"/p?q=1", b"a.example"),
        (b"HTTPS://a.example:8443", b"/", b"a.example:8443"),
        (b"http://a.example?q", b"/?q", b"a.example"),
        (b"http://[::1]:80/x", b"/x", b"[::1]:80"),
    ],
)
def test_absolute_form_becomes_origin_form(
    target: bytes, origin: bytes, authority: bytes
) -> None:
    assert checked_target(target, b"GET") == (origin, authority)


@pytest.mark.parametrize(
    "target",
    [
        b"ftp://a.example/x",
        b"http:///x",
        b"http://user:pw@a.example/x",
        b"http://a.example/../admin",
        b"a.example:443",
        b"*",
    ],
)
def test_other_targets_are_refused(target: bytes) -> None:
    with pytest.raises(BadTarget):
        checked_target(target, b"GET")


def test_asterisk_is_for_options() -> None:
    assert checked_target(b"*", b"OPTIONS") == (b"*", None)


def test_plain_paths_take_the_fast_path() -> None:
    assert not needs_check(b"/api/v1/items/42?sort=name&page=2")
    assert not needs_check(b"/file.js")


segment = st.sampled_from([b"a", b"b.c", b".", b"..", b"%2e%2e", b"", b"x;p"])


@given(st.lists(segment, max_size=8))
def test_climbing_matches_a_count_of_levels(segments: list[bytes]) -> None:
    """A path climbs exactly when some prefix has more .. than real segments."""
    depth, climbs = 0, False
    for s in segments:
        s = s.partition(b";")[0].replace(b"%2e", b".")
        if s == b"..":
            depth -= 1
            climbs = climbs or depth < 0
        elif s not in (b"", b"."):
            depth += 1
    assert climbs_above_root(b"/" + b"/".join(segments)) == climbs
