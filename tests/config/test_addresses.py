"""Tests for L{nfork.config.addresses}: listen values and outbound addresses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    serverFromString,
)
from twisted.internet.testing import MemoryReactor

from nfork.config.addresses import (
    OutboundAddress,
    listen_key,
    listen_to_endpoint,
    parse_outbound_address,
)


@pytest.mark.parametrize(
    ("listen", "endpoint"),
    [
        (":9080", "tcp:9080"),
        (":0", "tcp:0"),
        ("127.0.0.1:9080", "tcp:9080:interface=127.0.0.1"),
        ("0.0.0.0:9080", "tcp:9080:interface=0.0.0.0"),
        ("localhost:9080", "tcp:9080:interface=127.0.0.1"),
        ("[::1]:9080", "tcp6:9080:interface=\\:\\:1"),
        ("[::]:65535", "tcp6:65535:interface=\\:\\:"),
        ("tcp:9080", "tcp:9080"),
        ("tcp:9080:interface=127.0.0.1", "tcp:9080:interface=127.0.0.1"),
        ("tcp6:9080:interface=\\:\\:1", "tcp6:9080:interface=\\:\\:1"),
        ("unix:/run/nfork.sock", "unix:/run/nfork.sock"),
        ("unix:/run/nfork.sock:mode=600", "unix:/run/nfork.sock:mode=600"),
    ],
)
def test_listen_to_endpoint(listen: str, endpoint: str) -> None:
    assert listen_to_endpoint(listen) == endpoint


def test_ipv6_endpoint_is_understood_by_twisted() -> None:
    endpoint = serverFromString(MemoryReactor(), listen_to_endpoint("[::1]:9080"))
    assert isinstance(endpoint, TCP6ServerEndpoint)
    assert endpoint._interface == "::1"
    assert endpoint._port == 9080


def test_ipv4_endpoint_is_understood_by_twisted() -> None:
    reactor = MemoryReactor()
    endpoint = serverFromString(reactor, listen_to_endpoint("127.0.0.1:0"))
    assert isinstance(endpoint, TCP4ServerEndpoint)
    assert endpoint._interface == "127.0.0.1"
    endpoint.listen(None)
    assert reactor.tcpServers[0][0] == 0


def test_unix_endpoint_passes_through() -> None:
    endpoint = serverFromString(MemoryReactor(), listen_to_endpoint("unix:/tmp/x"))
    assert isinstance(endpoint, UNIXServerEndpoint)


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("", "empty listen address"),
        ("9080", 'did you mean ":9080"?'),
        (":", "missing port number"),
        (":70000", "port 70000 out of range 0-65535"),
        (":-1", 'invalid port "-1"'),
        (":http", 'invalid port "http"'),
        ("example.com:9080", 'must be an IP address or "localhost", not a host'),
        ("1.2.3.400:80", "must be an IP address"),
        ("myhost:9080", 'unknown endpoint type "myhost"'),
        ("[x]:9080", 'invalid IPv6 address "x"'),
        ("[::1]:", "missing port number"),
        ("::1:9080", 'IPv6 addresses in brackets, as in "[::1]:9080"'),
        (" :9080", "spaces or control characters"),
        ("tcp:70000", "port 70000 out of range"),
        ("tcp:x", 'invalid port "x"'),
        ("tcp:9080:bogus=1", "Twisted rejects this endpoint description"),
        ("tcp:9080\\", "lone backslash"),
        ("unix:", "missing socket path"),
        ("ssl:9443:privateKey=/nonexistent/key.pem", "No such file"),
        ("nosuchtype:9080", 'unknown endpoint type "nosuchtype"'),
        ("tcp", "expected"),
    ],
)
def test_listen_errors(listen: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        listen_to_endpoint(listen)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (":9080", "tcp:9080"),
        (":9080", "0.0.0.0:9080"),
        ("127.0.0.1:9080", "tcp:9080:interface=127.0.0.1"),
        ("localhost:9080", "127.0.0.1:9080"),
        ("[::1]:9080", "tcp6:9080:interface=\\:\\:1"),
        ("[::1]:9080", "tcp:9080:interface=\\:\\:1"),
        ("[0:0::1]:9080", "[::1]:9080"),
        ("[::]:9080", "tcp6:9080"),
        ("tcp:9080", "tcp:port=9080"),
        ("unix:/tmp/a.sock", "unix:/tmp/./a.sock"),
    ],
)
def test_same_address_same_key(first: str, second: str) -> None:
    assert listen_key(first) == listen_key(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (":9080", ":9081"),
        (":9080", "127.0.0.1:9080"),
        ("127.0.0.1:9080", "127.0.0.2:9080"),
        ("[::1]:9080", "127.0.0.1:9080"),
        ("unix:/tmp/a.sock", "unix:/tmp/b.sock"),
        (":0", ":0"),
        (":0", "tcp:0"),
        ("[::1]:0", "[::1]:0"),
    ],
)
def test_different_address_different_key(first: str, second: str) -> None:
    assert listen_key(first) != listen_key(second)


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port", "prefix", "host_header"),
    [
        ("localhost:8080", "http", "localhost", 8080, "", b"localhost:8080"),
        ("127.0.0.1:80", "http", "127.0.0.1", 80, "", b"127.0.0.1"),
        ("[::1]:8080", "http", "::1", 8080, "", b"[::1]:8080"),
        ("http://h:1/prefix/", "http", "h", 1, "/prefix", b"h:1"),
        ("http://h/", "http", "h", 80, "", b"h"),
        ("http://h:80/a/b//", "http", "h", 80, "/a/b", b"h"),
        (
            "HTTP://Example.com:8080",
            "http",
            "Example.com",
            8080,
            "",
            b"Example.com:8080",
        ),
        ("https://h", "https", "h", 443, "", b"h"),
        ("https://h:8443/api", "https", "h", 8443, "/api", b"h:8443"),
        (
            "https://[2001:db8::1]/x",
            "https",
            "2001:db8::1",
            443,
            "/x",
            b"[2001:db8::1]",
        ),
        ("http://a_b.internal:81", "http", "a_b.internal", 81, "", b"a_b.internal:81"),
        ("file:///var/log/x.jsonl", "file", "", 0, "/var/log/x.jsonl", b""),
        ("tcp://127.0.0.1:5000", "tcp", "127.0.0.1", 5000, "", b"127.0.0.1:5000"),
    ],
)
def test_parse_outbound_address(
    text: str, scheme: str, host: str, port: int, prefix: str, host_header: bytes
) -> None:
    address = parse_outbound_address(text)
    assert address == OutboundAddress(scheme, host, port, prefix, text)
    assert address.host_header == host_header
    assert address.raw == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty address"),
        ("localhost", 'missing port in address "localhost"'),
        (":8080", "missing host"),
        ("h:", "missing port number"),
        ("h:70000", "port 70000 out of range"),
        ("h:0", "port 0 is not a valid destination"),
        ("h:http", 'invalid port "http"'),
        ("garbage!!", 'invalid host "garbage!!"'),
        ("::1:8080", 'IPv6 addresses in brackets, as in "[::1]:8080"'),
        ("[::1", "unclosed '['"),
        ("[zz]:80", 'invalid IPv6 address "zz"'),
        ("h:80/x", "expected"),
        ("http://", "missing host"),
        ("http://h:99999", "out of range"),
        ("http://h/x?y=1", "query string or a fragment"),
        ("http://h/#top", "query string or a fragment"),
        ("http://user:pw@h", "user names and passwords"),
        ("tcp://user@h:1", "user names and passwords"),
        ("http://h/a b", "spaces"),
        ("http://h/\u00e9", "non-ASCII"),
        ("http://h/a|b", 'invalid path "/a|b"'),
        ("1http://h", 'invalid scheme "1http"'),
        ("http://[::1]x", 'unexpected "x"'),
    ],
)
def test_outbound_address_errors(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_outbound_address(text)
    assert problem in str(caught.value)


listen_like = st.one_of(
    st.text(max_size=20),
    st.from_regex(
        r"\A(tcp6?|unix|ssl|stdio|systemd|x)?:[0-9:=a-z.\\\[\]]{0,12}\Z",
    ),
    st.from_regex(r"\A\[?[0-9a-f:.]{0,10}\]?:[0-9]{0,6}\Z"),
)


@given(listen_like)
def test_listen_parsing_only_raises_value_error(listen: str) -> None:
    try:
        endpoint = listen_to_endpoint(listen)
    except ValueError:
        with pytest.raises(ValueError):
            listen_key(listen)
    else:
        assert isinstance(endpoint, str)
        listen_key(listen)


address_like = st.one_of(
    st.text(max_size=25),
    st.from_regex(
        r"\A([a-z]{1,5}://)?[a-z0-9.:@\[\]_-]{0,12}(:[0-9]{0,6})?"
        r"(/[a-z/?#%]{0,6})?\Z"
    ),
)


@given(address_like)
def test_outbound_parsing_only_raises_value_error(text: str) -> None:
    try:
        address = parse_outbound_address(text)
    except ValueError:
        return
    assert address.raw == text
    assert address.scheme == address.scheme.lower()
    assert 0 <= address.port <= 65535
    assert not address.path_prefix.endswith("/") or address.scheme not in (
        "http",
        "https",
    )
    assert isinstance(address.host_header, bytes)
    assert parse_outbound_address(address.raw) == address
