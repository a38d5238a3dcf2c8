"""The JSON-lines record shared by the sinks and replay."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfork.outbounds.sinks.records import RecordError, decode_record, encode_record
from nfork.proxy.messages import CapturedAnswer, ProxyRequest

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


answers = st.builds(
    CapturedAnswer,
    code=st.sampled_from([0, 200, 404, 503]),
    headers=st.lists(st.tuples(header_bytes, header_bytes), max_size=4).map(tuple),
    body=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)),
    error=st.sampled_from([None, "timeout", "error", "dropped"]),
)


@given(requests, answers)
def test_a_recorded_answer_reads_back(
    request: ProxyRequest, answer: CapturedAnswer
) -> None:
    answer = attrs.evolve(answer, length=len(answer.body))
    line = encode_record(attrs.evolve(request, answer=answer), "in", "out")
    assert line.count(b"\n") == 1
    assert decode_record(line).answer == answer


def test_a_truncated_answer_keeps_its_length_and_digest() -> None:
    whole = b"\xff" + b"x" * 99
    answer = CapturedAnswer(
        code=200,
        headers=((b"Content-Type", b"application/octet-stream"),),
        body=whole[:10],
        length=len(whole),
        digest=hashlib.sha256(whole).digest(),
    )
    line = encode_record(
        ProxyRequest(b"GET", b"/big", (), b"", answer=answer), "i", "o"
    )
    record = json.loads(line)["answer"]
    assert record == {
        "status": 200,
        "headers": [["Content-Type", "application/octet-stream"]],
        "body": base64.b64encode(whole[:10]).decode(),
        "body_base64": True,
        "truncated": True,
        "length": 100,
        "digest": hashlib.sha256(whole).hexdigest(),
        "error": None,
    }
    recorded = decode_record(line).answer
    assert recorded == answer
    assert recorded is not None and recorded.truncated


def test_a_missing_answer_is_recorded_with_its_error_word() -> None:
    answer = CapturedAnswer(code=0, headers=(), body=b"", error="timeout")
    line = encode_record(ProxyRequest(b"GET", b"/", (), b"", answer=answer), "i", "o")
    assert json.loads(line)["answer"]["error"] == "timeout"
    assert decode_record(line).answer == answer


def test_records_without_answers_have_none() -> None:
    line = encode_record(ProxyRequest(b"GET", b"/", (), b""), "i", "o")
    assert "answer" not in json.loads(line)
    old = b'{"epoch": 1, "method": "GET", "uri": "/", "headers": [], "body": ""}'
    assert decode_record(old).answer is None


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("[]", '"answer" must be a JSON object'),
        ('{"headers": [], "body": ""}', 'answer: "status" must be an integer'),
        ('{"status": 200, "headers": [1], "body": ""}', 'answer: "headers" must be'),
        ('{"status": 200, "headers": []}', 'answer: "body" must be a string'),
        (
            '{"status": 200, "headers": [], "body": "", "length": -1}',
            'answer: "length" must be an integer',
        ),
        (
            '{"status": 200, "headers": [], "body": "", "digest": "zz"}',
            'answer: "digest" must be hexadecimal',
        ),
        (
            '{"status": 0, "headers": [], "body": "", "error": 3}',
            'answer: "error" must be a string or null',
        ),
    ],
)
def test_answers_that_are_not_answers_are_refused(answer: str, message: str) -> None:
    line = (
        '{"epoch": 1, "method": "GET", "uri": "/", "headers": [], "body": "", '
        f'"answer": {answer}}}'
    ).encode()
    with pytest.raises(RecordError, match=re.escape(message)):
        decode_record(line)
