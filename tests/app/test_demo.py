"""The embedded demo: its backends, its comparison and what it tells to try."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.web.test.requesthelper import DummyRequest

from nfork.app.demo import DemoBackend, demo_config, demo_instructions
from nfork.compare.diff import CompareRules, diff_answers
from nfork.config.compare import DEFAULT_IGNORE_HEADERS
from nfork.proxy.messages import CapturedAnswer


def _answer(backend: str, path: str) -> CapturedAnswer:
    # Any: DummyRequest stands in for the server.Request render() takes.
    request: Any = DummyRequest([part.encode() for part in path.strip("/").split("/")])
    request.path = request.uri = path.encode()
    request.content = io.BytesIO()
    body = DemoBackend(backend).render(request)
    headers = tuple(
        (name, value)
        for name, values in request.responseHeaders.getAllRawHeaders()
        for value in values
    )
    return CapturedAnswer(200, headers, body, len(body))


def test_the_demo_compares_staging_with_prod() -> None:
    (inbound,) = demo_config()
    assert inbound.compare is not None
    assert inbound.compare.candidates == ("staging",)
    rules = CompareRules(
        DEFAULT_IGNORE_HEADERS, inbound.compare.ignore, inbound.compare.max_body
    )
    prod, staging = _answer("prod", "/users/42"), _answer("staging", "/users/42")
    assert json.loads(prod.body)["name"] == "user 42"
    found = {(d.field, d.kind) for d in diff_answers(prod, staging, rules)}
    # The fresh requestId is ignored; the renamed field is what differs.
    assert found == {("$.name", "missing"), ("$.fullName", "extra")}
    assert diff_answers(prod, _answer("logging", "/users/42"), rules) == []


def test_the_instructions_name_the_dashboard_and_the_tools() -> None:
    text = demo_instructions("127.0.0.1:9090")
    assert "http://127.0.0.1:9090/ui/" in text
    assert "nfork compare --control http://127.0.0.1:9090 demo" in text
    assert "nfork ctl --control http://127.0.0.1:9090 stats" in text
    assert "curl http://127.0.0.1:9080/users/42" in text
    with_token = demo_instructions("127.0.0.1:9090", "/etc/nfork token")
    assert "--token-file '/etc/nfork token' demo" in with_token
