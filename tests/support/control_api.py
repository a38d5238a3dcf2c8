"""Talking to the control API of a twistd nfork started by a test."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.support.process import TwistdProcess


def control_port(twistd: TwistdProcess) -> int:
    """The port the control API listens on, from its startup log line."""
    match = twistd.wait_for_line(r"control API listening on .*port=(\d+)")
    return int(match.group(1))


def control_request(
    url: str, method: str = "GET", body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """One call: C{body} sent as JSON; the status and the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
