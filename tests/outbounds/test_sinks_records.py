"""The JSON-lines record shared by the sinks and replay."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfork.outbounds.sinks.records import RecordError, decode_record, encode_record
from nfork.proxy.messages import ProxyRequest

header_bytes = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"\n" not in b and b"\r" not in b
)
requests = st.builds(
    ProxyRequest,
    method=st.sampled_from([b"GET", b"POST", b"PROPFIND"]),
    uri=st.binary(max_size=30).map(lambda b: b"/" + b),
    headers=st.lists(st.tuples(header_bytes, header_bytes), max_size=4).map(tuple),
    body=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)),
    client=st.sampled_from(["", "127.0.0.1", "::1"]),
    received=st.floats(min_value=0, max_value=4e9),
)


@given(requests)
def test_a_record_reads_back_as_the_request(request: ProxyRequest) -> None:
    line = encode_record(request, "in", "out")
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    recorded = decode_record(line)
    assert (recorded.method, recorded.uri, recorded.headers, recorded.body) == (
        request.method,
        request.uri,
        request.headers,
        request.body,
    )
    assert recorded.epoch == request.received
    assert (recorded.inbound, recorded.client) == ("in", request.client)


def test_text_bodies_stay_readable() -> None:
    line = encode_record(
        ProxyRequest(b"POST", b"/", (), "ça\u2028va".encode()), "i", "o"
    )
    record = json.loads(line)
    assert record["body"] == "ça\u2028va"
    assert record["body_base64"] is False


@pytest.mark.parametrize(
    "line",
    [
        b'{"epoch": 1, "method": "GET", "uri": "/", "headers": [], "bo',
        b"[1, 2]",
        b'{"epoch": "x", "method": "GET", "uri": "/", "headers": [], "body": ""}',
        b'{"epoch": 1, "method": "GET", "uri": "/", "headers": [["a"]], "body": ""}',
        b'{"epoch": 1, "method": "GET", "uri": "/", "headers": [], "body": "!",'
        b' "body_base64": true}',
        b'{"epoch": 1, "method": "\xc3\xa9\xe2\x82\xac", "uri": "/", "headers": [],'
        b' "body": ""}',
        b"\xff",
    ],
)
def test_lines_that_are_not_records_are_refused(line: bytes) -> None:
    with pytest.raises(RecordError):
        decode_record(line)
