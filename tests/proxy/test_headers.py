"""Tests for the headers the outbounds receive: hop-by-hop, X-Forwarded-*, Forwarded."""

from __future__ import annotations

from nfork.proxy.headers import forwarded_element, outbound_request_headers
from nfork.proxy.messages import Headers

CLIENT = "10.0.0.7"

SPOOFED = [
    (b"Host", b"shop.example"),
    (b"X-Forwarded-For", b"1.2.3.4"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Forwarded-Host", b"admin.example"),
    (b"Forwarded", b"for=1.2.3.4;proto=https"),
    (b"X-Nfork", b"false"),
    (b"Accept", b"*/*"),
]
"""A request whose client claims to be a proxy that saw someone else."""


def named(headers: Headers, lower_name: bytes) -> list[bytes]:
    return [value for name, value in headers if name.lower() == lower_name]


def test_untrusted_client_gets_its_address_appended_and_nforks_proto_and_host() -> None:
    headers = outbound_request_headers(SPOOFED, CLIENT, b"http")
    assert named(headers, b"x-forwarded-for") == [b"1.2.3.4, 10.0.0.7"]
    assert named(headers, b"x-forwarded-proto") == [b"http"]
    assert named(headers, b"x-forwarded-host") == [b"shop.example"]
    assert named(headers, b"forwarded") == []
    assert named(headers, b"x-nfork") == [b"true"]
    assert named(headers, b"accept") == [b"*/*"]
    assert named(headers, b"host") == []


def test_trusted_client_keeps_proto_host_and_forwarded_extended() -> None:
    headers = outbound_request_headers(SPOOFED, CLIENT, b"http", trusted=True)
    assert named(headers, b"x-forwarded-for") == [b"1.2.3.4, 10.0.0.7"]
    assert named(headers, b"x-forwarded-proto") == [b"https"]
    assert named(headers, b"x-forwarded-host") == [b"admin.example"]
    assert named(headers, b"forwarded") == [
        b"for=1.2.3.4;proto=https",
        b"for=10.0.0.7;host=shop.example;proto=http",
    ]
    assert named(headers, b"x-nfork") == [b"true"], "X-Nfork is always nfork's"


def test_trusted_client_without_forwarded_headers_gets_nforks() -> None:
    request = [(b"Host", b"shop.example"), (b"Accept", b"*/*")]
    trusted = outbound_request_headers(request, CLIENT, b"https", trusted=True)
    assert trusted == outbound_request_headers(request, CLIENT, b"https")
    assert named(trusted, b"x-forwarded-proto") == [b"https"]
    assert named(trusted, b"x-forwarded-host") == [b"shop.example"]
    assert named(trusted, b"forwarded") == [], "nfork adds none of its own"


def test_trusted_forwarded_headers_listed_in_connection_are_dropped() -> None:
    request = [
        (b"Host", b"a"),
        (b"Connection", b"X-Forwarded-Proto"),
        (b"X-Forwarded-Proto", b"https"),
    ]
    headers = outbound_request_headers(request, CLIENT, b"http", trusted=True)
    assert named(headers, b"x-forwarded-proto") == [b"http"]


def test_forwarded_element_quotes_what_is_not_a_token() -> None:
    assert forwarded_element(b"::1", b"a.example:8080", b"https") == (
        b'for="[::1]";host="a.example:8080";proto=https'
    )
    assert forwarded_element(b"", b"", b"http") == b"for=unknown;proto=http"
    assert forwarded_element(b"10.0.0.1", b'a"b\\', b"http") == (
        b'for=10.0.0.1;host="a\\"b\\\\";proto=http'
    )
