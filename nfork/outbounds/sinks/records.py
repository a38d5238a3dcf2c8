"""The JSON-lines record of one request copy, written by sinks, read by replay.

One JSON object per line (UTF-8, ending in C{\\n}), with these keys:

  - C{time}: when nfork received the request, ISO 8601 in UTC
    (C{"2025-01-31T12:00:00.123456Z"}); C{epoch}: the same in seconds since
    the Unix epoch;
  - C{inbound}, C{outbound}: the names of the inbound and of the sink;
  - C{client}: the client's IP address;
  - C{method}, C{uri}: as the client sent them (path and query string);
  - C{headers}: C{[name, value]} pairs in arrival order, as forwarded to
    outbounds (hop-by-hop headers and C{Host} removed, C{X-Nfork} and
    C{X-Forwarded-*} added);
  - C{body}: the body as text when it is UTF-8, else in base64 with
    C{body_base64} true;
  - C{answer}, only from a sink with C{"answers": true}: the active
    outbound's answer to the request, an object with C{status} (0 when it
    gave none), C{headers} (C{[name, value]} pairs as the backend sent
    them), C{body} and C{body_base64} as above (the body as received, still
    Content-Encoded, cut past a size limit), C{truncated}
    (whether it was cut), C{length} (the whole body's bytes), C{digest} (the
    SHA-256 of the whole body in hex, only when truncated) and C{error}
    (C{"timeout"}, C{"error"} or C{"dropped"} when there was no answer, else
    null).

Bytes that are not text in the method, URI and headers are decoded as
latin-1, so that they come back unchanged when encoded as latin-1 again.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Any

from attrs import frozen

from nfork.config import OutboundConfig
from nfork.config.errors import config_error
from nfork.proxy.messages import CapturedAnswer, Headers, ProxyRequest

__all__ = [
    "ANSWERS_OPTION",
    "RecordError",
    "RecordedRequest",
    "answers_option",
    "decode_record",
    "encode_record",
]

ANSWERS_OPTION = "answers"
"""The sinks' option that records the active outbound's answer with each
request (the fork then hands the copy over once that answer is in)."""


def answers_option(config: OutboundConfig) -> bool:
    """The C{answers} option of a sink's config: false unless set to true.

    @raise ConfigError: if it is not a boolean.
    """
    value = config.options.get(ANSWERS_OPTION, False)
    if not isinstance(value, bool):
        raise config_error(
            f"expected true or false, got {json.dumps(value)}", key=ANSWERS_OPTION
        )
    return value


def _iso_time(epoch: float) -> str:
    """C{epoch} as ISO 8601 UTC with microseconds and a C{Z}."""
    try:
        moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        moment = datetime.fromtimestamp(0, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _body(data: bytes) -> tuple[str, bool]:
    """A body as JSON text: itself when UTF-8, else base64 (and True)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def _headers(headers: Headers) -> list[list[str]]:
    return [
        [name.decode("latin-1"), value.decode("latin-1")] for name, value in headers
    ]


def _answer(answer: CapturedAnswer) -> dict[str, Any]:
    """The C{answer} object of a record."""
    body, binary = _body(answer.body)
    encoded: dict[str, Any] = {
        "status": answer.code,
        "headers": _headers(answer.headers),
        "body": body,
        "body_base64": binary,
        "truncated": answer.truncated,
        "length": answer.length,
        "error": answer.error,
    }
    if answer.digest is not None:
        encoded["digest"] = answer.digest.hex()
    return encoded


def encode_record(request: ProxyRequest, inbound: str, outbound: str) -> bytes:
    """The record of C{request} as one line of JSON, C{\\n} included."""
    body, binary = _body(request.body)
    record: dict[str, Any] = {
        "time": _iso_time(request.received),
        "epoch": request.received,
        "inbound": inbound,
        "outbound": outbound,
        "client": request.client,
        "method": request.method.decode("latin-1"),
        "uri": request.uri.decode("latin-1"),
        "headers": _headers(request.headers),
        "body": body,
        "body_base64": binary,
    }
    if request.answer is not None:
        record["answer"] = _answer(request.answer)
    # ensure_ascii=False keeps text bodies readable; JSON escapes the control
    # characters, so a record never contains a raw newline.
    return (
        json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        + b"\n"
    )


class RecordError(ValueError):
    """A line that is not a request record."""


@frozen
class RecordedRequest:
    """A request read back from a recording."""

    epoch: float
    method: bytes
    uri: bytes
    headers: Headers
    body: bytes
    inbound: str = ""
    client: str = ""
    answer: CapturedAnswer | None = None
    """The active outbound's answer, when the sink recorded answers."""


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise RecordError(f'"{key}" must be a string')
    return value


def _read_headers(record: dict[str, Any], key: str) -> Headers:
    raw = record.get(key)
    if not isinstance(raw, list) or not all(
        isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(part, str) for part in pair)
        for pair in raw
    ):
        raise RecordError(f'"{key}" must be a list of [name, value] strings')
    try:
        return tuple(
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in raw
        )
    except UnicodeEncodeError as e:
        raise RecordError(str(e)) from None


def _read_body(record: dict[str, Any]) -> bytes:
    text = _text(record, "body")
    try:
        if record.get("body_base64") is True:
            return base64.b64decode(text, validate=True)
        return text.encode("utf-8")
    except (UnicodeEncodeError, binascii.Error) as e:
        raise RecordError(str(e)) from None


def _read_answer(record: dict[str, Any]) -> CapturedAnswer | None:
    """The C{answer} object of a record, if it has one."""
    answer = record.get("answer")
    if answer is None:
        return None
    if not isinstance(answer, dict):
        raise RecordError('"answer" must be a JSON object')
    try:
        status = answer.get("status")
        if isinstance(status, bool) or not isinstance(status, int):
            raise RecordError('"status" must be an integer')
        headers = _read_headers(answer, "headers")
        body = _read_body(answer)
        length = answer.get("length", len(body))
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise RecordError('"length" must be an integer of at least 0')
        error = answer.get("error")
        if error is not None and not isinstance(error, str):
            raise RecordError('"error" must be a string or null')
        digest: bytes | None = None
        if answer.get("digest") is not None:
            try:
                digest = bytes.fromhex(_text(answer, "digest"))
            except ValueError:
                raise RecordError('"digest" must be hexadecimal') from None
    except RecordError as e:
        raise RecordError(f"answer: {e}") from None
    return CapturedAnswer(
        code=status,
        headers=headers,
        body=body,
        length=max(length, len(body)),
        digest=digest,
        error=error,
    )


def decode_record(line: bytes) -> RecordedRequest:
    """Read one line written by L{encode_record}.

    Records written before answers were recorded read back with C{answer}
    None.

    @raise RecordError: if the line is not such a record (e.g. a line cut
        short by a full disk).
    """
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"not JSON: {e}") from None
    if not isinstance(record, dict):
        raise RecordError("not a JSON object")
    epoch = record.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int | float):
        raise RecordError('"epoch" must be a number')
    headers = _read_headers(record, "headers")
    body = _read_body(record)
    try:
        method = _text(record, "method").encode("latin-1")
        uri = _text(record, "uri").encode("latin-1")
    except UnicodeEncodeError as e:
        raise RecordError(str(e)) from None
    return RecordedRequest(
        epoch=float(epoch),
        method=method,
        uri=uri,
        headers=headers,
        body=body,
        inbound=str(record.get("inbound", "")),
        client=str(record.get("client", "")),
        answer=_read_answer(record),
    )
