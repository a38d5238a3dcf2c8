"""Differences between two captured answers."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib

import brotli
import pytest

from nfork.compare.diff import CompareRules, Difference, diff_answers
from nfork.proxy.messages import CapturedAnswer

JSON_TYPE = (b"Content-Type", b"application/json")


def rules(ignore=(), ignore_headers=("date",), max_body=1 << 20):
    return CompareRules(ignore_headers=ignore_headers, ignore=ignore, max_body=max_body)


def answer(body=b"", *, code=200, headers=(JSON_TYPE,), length=None, digest=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return CapturedAnswer(
        code=code,
        headers=tuple(headers),
        body=data,
        length=len(data) if length is None else length,
        digest=digest,
    )


def diff(primary, other, **kwargs):
    return diff_answers(answer(primary), answer(other), rules(**kwargs))


def test_equal_answers_have_no_difference():
    body = {"a": 1, "b": [1, 2, {"c": None}]}
    assert diff(body, body) == []
    assert diff(b'{"a": 1, "b": 2}', b'{"b":2,"a":1}') == []


def test_leaf_values_are_reported_by_path():
    primary = {"items": [{"price": 1}, {"price": 2}], "odd key": {"x": "a"}}
    other = {"items": [{"price": 1}, {"price": 3}], "odd key": {"x": "b"}}
    assert diff(primary, other) == [
        Difference("$.items[1].price", "value", 2, 3),
        Difference('$["odd key"].x', "value", "a", "b"),
    ]


def test_type_changes_use_json_type_words():
    primary = {"a": 1, "b": "1", "c": True, "d": None, "e": {}, "f": []}
    other = {"a": "1", "b": 1, "c": 1, "d": False, "e": [], "f": {}}
    assert diff(primary, other) == [
        Difference("$.a", "type", "number", "string"),
        Difference("$.b", "type", "string", "number"),
        Difference("$.c", "type", "boolean", "number"),
        Difference("$.d", "type", "null", "boolean"),
        Difference("$.e", "type", "object", "array"),
        Difference("$.f", "type", "array", "object"),
    ]


def test_booleans_never_equal_numbers_even_inside_equal_looking_subtrees():
    assert diff({"x": {"on": True}}, {"x": {"on": 1}}) == [
        Difference("$.x.on", "type", "boolean", "number")
    ]
    assert diff([False], [0]) == [Difference("$[0]", "type", "boolean", "number")]
    # Deep inside subtrees that == finds equal, beside a field that differs.
    primary = {"id": "a", "user": {"flags": [True, {"ok": False}]}, "n": 1}
    other = {"id": "b", "user": {"flags": [1, {"ok": 0}]}, "n": 1.0}
    assert diff(primary, other) == [
        Difference("$.id", "value", "a", "b"),
        Difference("$.user.flags[0]", "type", "boolean", "number"),
        Difference("$.user.flags[1].ok", "type", "boolean", "number"),
    ]


def test_key_order_is_not_a_difference():
    assert diff(b'{"a": {"x": 1, "y": [1, 2]}}', b'{"a": {"y": [1, 2], "x": 1}}') == []


def test_what_only_the_standard_parser_reads_still_compares():
    # Integers over 64 bits are read as floating-point numbers (as a
    # JavaScript client reads them).
    big = b"1" + b"0" * 30
    assert diff(b'{"a": [' + big + b"]}", b'{"a": [' + big + b"]}") == []
    assert diff(b'{"a": [' + big + b"]}", b'{"a": [' + big + b"1]}") == [
        Difference("$.a[0]", "value", 1e30, 1e31)
    ]
    lone = b'{"s": ["\\ud800"], "t": 1}'
    assert diff(lone, lone.replace(b"1}", b"2}")) == [Difference("$.t", "value", 1, 2)]


def test_one_and_one_point_zero_are_the_same_number():
    assert diff(b'{"n": 1}', b'{"n": 1.0}') == []
    assert diff(b'{"n": 1}', b'{"n": 1.5}') == [Difference("$.n", "value", 1, 1.5)]


def test_missing_and_extra_keys():
    assert diff({"a": 1, "b": {"c": 2}}, {"a": 1, "z": [1]}) == [
        Difference("$.b", "missing", {"c": 2}, None),
        Difference("$.z", "extra", None, [1]),
    ]


def test_arrays_by_index_with_length_and_elements_beyond():
    assert diff({"l": [1, 2, 3]}, {"l": [1, 5]}) == [
        Difference("$.l", "length", 3, 2),
        Difference("$.l[1]", "value", 2, 5),
        Difference("$.l[2]", "missing", 3, None),
    ]
    assert diff([1], [1, {"n": 2}]) == [
        Difference("$", "length", 1, 2),
        Difference("$[1]", "extra", None, {"n": 2}),
    ]


def test_ignore_rules_skip_fields_and_subtrees():
    primary = {"items": [{"k": 1, "p": 1}, {"k": 2, "p": 2}], "meta": {"t": 1}}
    other = {"items": [{"k": 9, "p": 1}, {"k": 8, "p": 3}], "meta": {"t": 2, "u": 1}}
    assert diff(primary, other, ignore=["$.items[*].k", "$.meta"]) == [
        Difference("$.items[1].p", "value", 2, 3)
    ]
    assert diff([1, 2], [1], ignore=["$[1]"]) == [Difference("$", "length", 2, 1)]
    assert diff({"a": 1}, {"a": 2}, ignore=["$"]) == []
    assert diff(b"text", b"other", ignore=["$"]) == []


def test_status_difference_and_the_rest_still_compared():
    found = diff_answers(answer({"a": 1}), answer({"a": 2}, code=500), rules())
    assert found == [
        Difference("status", "status", 200, 500),
        Difference("$.a", "value", 1, 2),
    ]


@pytest.mark.parametrize("error", ["timeout", "error", "dropped"])
def test_a_failed_answer_gives_only_the_status_difference(error):
    failed = CapturedAnswer(code=0, headers=(), body=b"", error=error)
    assert diff_answers(answer({"a": 1}), failed, rules()) == [
        Difference("status", "status", 200, error)
    ]
    assert diff_answers(failed, answer({"a": 1}), rules()) == [
        Difference("status", "status", error, 200)
    ]
    assert diff_answers(failed, failed, rules()) == []


def test_headers_case_insensitive_multi_values_missing_and_extra():
    primary = answer(
        b"",
        headers=[
            (b"Set-Cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            (b"X-Only-Primary", b"p"),
            (b"Cache-Control", b"no-cache"),
            (b"Date", b"Mon"),
        ],
    )
    other = answer(
        b"",
        headers=[
            (b"SET-COOKIE", b"a=1"),
            (b"Set-Cookie", b"c=3"),
            (b"cache-control", b"no-cache"),
            (b"X-Only-Other", b"o"),
            (b"DATE", b"Tue"),
        ],
    )
    assert diff_answers(primary, other, rules(ignore_headers=["Date"])) == [
        Difference("header.set-cookie", "value", ["a=1", "b=2"], ["a=1", "c=3"]),
        Difference("header.x-only-primary", "missing", "p", None),
        Difference("header.x-only-other", "extra", None, "o"),
    ]


def test_non_json_bodies_compare_by_equality():
    text = [(b"Content-Type", b"text/plain")]
    hi = answer(b"hi", headers=text)
    assert diff_answers(hi, answer(b"hi", headers=text), rules()) == []
    [found] = diff_answers(
        answer(b"hi", headers=text), answer(b"ho!", headers=text), rules()
    )
    assert (found.field, found.kind) == ("body", "body")
    assert found.primary == {"length": 2, "sha256": hashlib.sha256(b"hi").hexdigest()}
    assert found.other == {"length": 3, "sha256": hashlib.sha256(b"ho!").hexdigest()}


def test_json_is_detected_by_type_or_by_its_first_byte():
    plain = [(b"Content-Type", b"text/plain")]
    problem = [(b"Content-Type", b"application/problem+json; charset=utf-8")]
    assert diff_answers(
        answer(b' {"a": 1}', headers=plain), answer(b'{"a":2}', headers=plain), rules()
    ) == [Difference("$.a", "value", 1, 2)]
    assert diff_answers(
        answer(b'"x"', headers=problem), answer(b'"y"', headers=problem), rules()
    ) == [Difference("$", "value", "x", "y")]
    [found] = diff_answers(answer(b"{not json"), answer(b'{"a": 1}'), rules())
    assert (found.field, found.kind) == ("body", "body")


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        (b"gzip", gzip.compress),
        (b"deflate", zlib.compress),
        (b"br", brotli.compress),
    ],
)
def test_encoded_bodies_are_compared_decoded(encoding, compress):
    headers = [JSON_TYPE, (b"Content-Encoding", encoding)]
    primary = answer(compress(b'{"a": 1, "b": 2}'), headers=headers)
    other = answer(b'{"a": 1, "b": 3}')
    assert diff_answers(primary, other, rules()) == [
        Difference("header.content-encoding", "missing", encoding.decode(), None),
        Difference("$.b", "value", 2, 3),
    ]
    assert diff_answers(primary, other, rules(ignore_headers=["content-encoding"])) == [
        Difference("$.b", "value", 2, 3)
    ]


def test_truncated_bodies_compare_by_digest():
    digest = hashlib.sha256(b"x" * 100).digest()
    cut = answer(b"x" * 10, length=100, digest=digest)
    same = answer(b"x" * 10, length=100, digest=digest)
    assert diff_answers(cut, same, rules()) == []
    other = answer(b"x" * 10, length=100, digest=hashlib.sha256(b"y").digest())
    [found] = diff_answers(cut, other, rules())
    assert (found.field, found.kind) == ("body", "truncated")
    assert found.primary == {"length": 100, "sha256": digest.hex(), "truncated": True}
    [found] = diff_answers(cut, answer(b"x" * 10), rules())
    assert found.kind == "truncated"


def test_a_bomb_counts_as_truncated():
    headers = [JSON_TYPE, (b"Content-Encoding", b"gzip")]
    bomb = gzip.compress(b"[" + b"0," * 100_000 + b"0]")
    primary = answer(bomb, headers=headers)
    small = rules(max_body=1000)
    assert diff_answers(primary, answer(bomb, headers=headers), small) == []
    other = answer(gzip.compress(b"[" + b"1," * 100_000 + b"1]"), headers=headers)
    [found] = diff_answers(primary, other, rules(max_body=1000))
    assert (found.field, found.kind) == ("body", "truncated")


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x1f\x8b\x08garbage",
        b"{" * 100_000,
        b"[" * 5000 + b"]" * 5000,
        b'{"a": 1e999999, "b": NaN, "c": Infinity}',
        b'{"n": ' + b"9" * 5000 + b"}",
        b"\xff\xfe{\x00",
        b'{"a": "\\ud800"}',
    ],
)
def test_garbage_never_raises(garbage):
    for encoding in (b"gzip", b"br", b"deflate", b"compress"):
        headers = [JSON_TYPE, (b"Content-Encoding", encoding)]
        hostile = answer(garbage, headers=headers)
        diff_answers(answer({"a": 1}), hostile, rules())
        diff_answers(hostile, answer({"a": 1}), rules())
    assert diff_answers(answer(garbage), answer(garbage), rules()) == []


def test_deep_documents_that_differ_are_reported_without_error():
    deep_a = b"[" * 900 + b"1" + b"]" * 900
    deep_b = b"[" * 900 + b"2" + b"]" * 900
    found = diff_answers(answer(deep_a), answer(deep_b), rules())
    assert len(found) == 1
    assert found[0].kind in ("value", "body")


def test_differences_are_bounded_per_pair():
    found = diff(list(range(5000)), list(range(1, 5001)))
    assert len(found) == 200


def test_the_primary_is_parsed_once_for_two_comparisons():
    shared = rules()
    primary = answer({"a": 1})
    first = shared.prepare(primary)
    diff_answers(primary, answer({"a": 2}), shared)
    diff_answers(primary, answer({"a": 3}), shared)
    assert shared.prepare(primary) is first
