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
    C{body_base64} true.

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

from nfork.proxy.messages import Headers, ProxyRequest

__all__ = ["RecordError", "RecordedRequest", "decode_record", "encode_record"]


def _iso_time(epoch: float) -> str:
    """C{epoch} as ISO 8601 UTC with microseconds and a C{Z}."""
    try:
        moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        moment = datetime.fromtimestamp(0, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_record(request: ProxyRequest, inbound: str, outbound: str) -> bytes:
    """The record of C{request} as one line of JSON, C{\\n} included."""
    try:
        body = request.body.decode("utf-8")
        binary = False
    except UnicodeDecodeError:
        body = base64.b64encode(request.body).decode("ascii")
        binary = True
    record = {
        "time": _iso_time(request.received),
        "epoch": request.received,
        "inbound": inbound,
        "outbound": outbound,
        "client": request.client,
        "method": request.method.decode("latin-1"),
        "uri": request.uri.decode("latin-1"),
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, value in request.headers
        ],
        "body": body,
        "body_base64": binary,
    }
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


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise RecordError(f'"{key}" must be a string')
    return value


def decode_record(line: bytes) -> RecordedRequest:
    """Read one line written by L{encode_record}.

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
    raw_headers = record.get("headers")
    if not isinstance(raw_headers, list) or not all(
        isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(part, str) for part in pair)
        for pair in raw_headers
    ):
        raise RecordError('"headers" must be a list of [name, value] strings')
    body_text = _text(record, "body")
    try:
        if record.get("body_base64") is True:
            body = base64.b64decode(body_text, validate=True)
        else:
            body = body_text.encode("utf-8")
        headers = tuple(
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in raw_headers
        )
        method = _text(record, "method").encode("latin-1")
        uri = _text(record, "uri").encode("latin-1")
    except (UnicodeEncodeError, binascii.Error) as e:
        raise RecordError(str(e)) from None
    return RecordedRequest(
        epoch=float(epoch),
        method=method,
        uri=uri,
        headers=headers,
        body=body,
        inbound=str(record.get("inbound", "")),
        client=str(record.get("client", "")),
    )
