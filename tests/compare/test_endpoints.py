"""Endpoint names: patterns and automatic templating."""

from __future__ import annotations

import pytest

from nfork.compare.endpoints import (
    MAX_PATH,
    EndpointNamer,
    compile_pattern,
    template_segment,
)


def test_integer_ids_make_one_endpoint():
    namer = EndpointNamer([])
    assert namer.name(b"GET", b"/users/123") == "GET /users/:int"
    assert namer.name(b"GET", b"/users/456") == "GET /users/:int"
    assert namer.name(b"POST", b"/users/456") == "POST /users/:int"


@pytest.mark.parametrize(
    ("segment", "template"),
    [
        ("42", ":int"),
        ("123e4567-e89b-12d3-a456-426614174000", ":uuid"),
        ("123E4567-E89B-12D3-A456-426614174000", ":uuid"),
        ("deadbeefdeadbeef", ":hex"),
        ("0123456789abcdef0123", ":hex"),
        ("deadbeefdeadbee", "deadbeefdeadbee"),
        ("aGVsbG8gd29ybGQgMTIzNDU2", ":token"),
        ("eyJhbGciOiJIUzI1NiJ9_x-Y1==", ":token"),
        ("abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"),
        ("user-profile-settings-v2", ":token"),
        ("users", "users"),
        ("v2", "v2"),
        ("", ""),
    ],
)
def test_id_like_segments_are_templated(segment, template):
    assert template_segment(segment) == template


def test_query_string_and_fragment_are_ignored():
    namer = EndpointNamer([])
    assert namer.name(b"GET", b"/search?q=1&page=2") == "GET /search"
    assert namer.name(b"GET", b"/items/9?x#frag") == "GET /items/:int"
    assert namer.name(b"GET", b"/") == "GET /"


def test_percent_encoded_and_odd_bytes_are_named_without_error():
    namer = EndpointNamer([])
    assert namer.name(b"GET", b"/caf%C3%A9/7") == "GET /caf%C3%A9/:int"
    assert namer.name(b"GET", b"/\xff/7") == "GET /\\xff/:int"
    assert namer.name(b"OPTIONS", b"*") == "OPTIONS *"


def test_long_paths_are_bounded():
    namer = EndpointNamer([])
    many = namer.name(b"GET", b"/a" * 100)
    assert many == "GET " + "/a" * 16 + "/..."
    long = namer.name(b"GET", b"/" + b"x" * 5000)
    assert len(long) == len("GET ") + MAX_PATH
    assert long.endswith("...")


def test_patterns_come_first_in_order_and_keep_their_text():
    namer = EndpointNamer(["GET /users/:id", "* /static/*", "GET /users/me"])
    assert namer.name(b"GET", b"/users/me") == "GET /users/:id"
    assert namer.name(b"GET", b"/users/42?x=1") == "GET /users/:id"
    assert namer.name(b"PUT", b"/users/42") == "PUT /users/:int"
    assert namer.name(b"GET", b"/users/42/posts") == "GET /users/:int/posts"
    assert namer.name(b"HEAD", b"/static/css/a.css") == "* /static/*"
    assert namer.name(b"GET", b"/static/") == "* /static/*"
    assert namer.name(b"GET", b"/static") == "* /static/*"
    assert namer.name(b"GET", b"/staticx/1") == "GET /staticx/:int"


def test_pattern_literals_match_percent_decoded_segments():
    namer = EndpointNamer(["GET /caf\u00e9/:id"])
    assert namer.name(b"GET", b"/caf%C3%A9/9") == "GET /caf\u00e9/:id"


def test_compiled_pattern_parts():
    pattern = compile_pattern("* /files/:name/*")
    assert pattern.method is None
    assert pattern.segments == ("files", None)
    assert pattern.rest


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("/users", "a method, one space and a path"),
        ("GET  /users", "a method, one space and a path"),
        ("G(T /users", "is not an HTTP method"),
        ("GET users", "must start with '/'"),
        ("GET /a/*/b", "'*' may only be the last segment"),
        ("GET /a/:", "needs a name"),
        ("GET /a/:1x", "needs a name"),
        ("GET /a?x=1", "query string"),
    ],
)
def test_invalid_patterns_say_why(text, words):
    with pytest.raises(ValueError, match="endpoint pattern") as info:
        compile_pattern(text)
    assert words in str(info.value)
    with pytest.raises(ValueError):
        EndpointNamer([text])
