"""The dashboard's files: served by the control API, self-contained, token-free."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
from attrs import frozen
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource

from nfork.control.api import ControlAPI, ControlHosts, ControlResource
from nfork.control.controller import Controller
from nfork.control.dashboard import (
    CONTENT_TYPES,
    SECURITY_HEADERS,
    Dashboard,
    StaticFile,
    is_dashboard_path,
    load_files,
)

TOKEN = "dashboard-token-0123456789"
UI = resources.files("nfork.control").joinpath("ui")


@frozen
class Answer:
    code: int
    headers: Any
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.getRawHeaders(name)
        return None if values is None else values[0]


def serve(token: str | None = None) -> Any:
    """A StubTreq over the control API (on a memory reactor), Host "control"."""
    reactor = MemoryReactorClock()
    hosts = ControlHosts.from_names(["control"])
    hosts.listening(IPv4Address("TCP", "127.0.0.1", 9090))
    api = ControlAPI(Controller(reactor), reactor, token=token, hosts=hosts)
    return StubTreq(api.resource())


def call(
    stub: Any,
    method: str,
    path: str,
    headers: dict[bytes, list[bytes]] | None = None,
) -> Answer:
    done: list[Answer] = []

    async def run() -> None:
        response = await stub.request(
            method, f"http://control{path}", headers=headers, allow_redirects=False
        )
        body = await stub.content(response)
        done.append(Answer(response.code, response.headers, body))

    ensureDeferred(run())
    stub.flush()
    assert done, f"no answer to {method} {path}"
    return done[0]


@pytest.mark.parametrize("name", sorted(CONTENT_TYPES))
def test_each_file_is_served_with_its_type_and_security_headers(name: str) -> None:
    answer = call(serve(), "GET", f"/ui/{name}")
    assert answer.code == 200
    assert answer.body == UI.joinpath(name).read_bytes()
    assert answer.header(b"content-type") == CONTENT_TYPES[name]
    for header, value in SECURITY_HEADERS.items():
        assert answer.header(header) == value
    assert answer.header(b"cache-control") == b"no-cache"
    assert answer.header(b"etag") == StaticFile.of(answer.body, b"").etag


def test_the_folder_serves_the_page_and_its_bare_name_redirects() -> None:
    stub = serve()
    page = call(stub, "GET", "/ui/")
    assert page.code == 200
    assert page.body == UI.joinpath("index.html").read_bytes()
    redirect = call(stub, "GET", "/ui")
    assert (redirect.code, redirect.header(b"location")) == (301, b"/ui/")


def test_an_unchanged_file_is_not_sent_again() -> None:
    stub = serve()
    etag = call(stub, "GET", "/ui/app.js").header(b"etag")
    assert etag is not None
    again = call(stub, "GET", "/ui/app.js", {b"If-None-Match": [b'"other", ' + etag]})
    assert (again.code, again.body) == (304, b"")
    other = call(stub, "GET", "/ui/app.js", {b"If-None-Match": [b'"other"']})
    assert other.code == 200


def test_unknown_files_and_other_methods_are_json_errors() -> None:
    stub = serve()
    for path in ("/ui/nope.js", "/ui/ui/app.js", "/ui/index.html/x"):
        missing = call(stub, "GET", path)
        assert missing.code == 404
        assert missing.header(b"content-type") == b"application/json"
        assert b'"error"' in missing.body
    posted = call(stub, "POST", "/ui/app.js", {b"Content-Type": [b"application/json"]})
    assert (posted.code, posted.header(b"allow")) == (405, b"GET, HEAD")
    assert b"read-only" in posted.body


def test_with_a_token_the_page_is_served_but_the_api_refuses() -> None:
    stub = serve(TOKEN)
    assert call(stub, "GET", "/ui/").code == 200
    assert call(stub, "GET", "/ui/app.js").code == 200
    assert call(stub, "GET", "/v1/nfork").code == 401
    assert call(stub, "GET", "/v1/nfork/stats").code == 401
    # Only the dashboard's own paths are open: no prefix trick.
    assert call(stub, "GET", "/uix").code == 401
    authorized = {b"Authorization": [f"Bearer {TOKEN}".encode()]}
    assert call(stub, "GET", "/v1/nfork", authorized).code == 200


def test_the_page_keeps_the_host_rule() -> None:
    answer = call(serve(), "GET", "/ui/", {b"Host": [b"evil.example"]})
    assert answer.code == 403
    assert b"not a name of the control API" in answer.body


def test_dashboard_paths() -> None:
    assert is_dashboard_path(b"/ui") and is_dashboard_path(b"/ui/")
    assert is_dashboard_path(b"/ui/app.js")
    assert not is_dashboard_path(b"/uix") and not is_dashboard_path(b"/v1/ui/")


def test_the_files_fetch_nothing_from_outside() -> None:
    """No URL of another site: the page works on an air-gapped host."""
    for name, file in load_files().items():
        text = file.body.decode()
        urls = set(re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'`)]*", text, re.I))
        # The SVG namespace is a name, never fetched.
        assert urls <= {"http://www.w3.org/2000/svg"}, name
        assert "@import" not in text and "url(" not in text, name


def test_the_page_loads_only_its_own_files() -> None:
    html = UI.joinpath("index.html").read_text()
    references = set(re.findall(r'(?:src|href)="([^"]*)"', html))
    assert references == {"style.css", "app.js", "data:,"}
    assert references - {"data:,"} <= set(CONTENT_TYPES)
    assert "<script>" not in html and "style=" not in html  # nothing inline (CSP)


def test_the_script_calls_only_the_control_api() -> None:
    script = UI.joinpath("app.js").read_text()
    paths = re.findall(r"[\"`](/[^\"`]*)", script)
    assert paths
    assert all(p.startswith(("/v1/nfork", "/healthz")) for p in paths), paths
    assert "fetch(path" in script and script.count("fetch(") == 1
    assert "Content-Type" in script  # the API refuses bodies without it


def test_every_control_is_a_button_or_a_form_field() -> None:
    """Keyboard users reach every control: no clickable div or span."""
    html = UI.joinpath("index.html").read_text()
    script = UI.joinpath("app.js").read_text()
    for tag in re.findall(r'el\("(\w+)", \{[^}]*onclick', script):
        assert tag == "button"
    assert "onclick" not in html
    assert 'tabindex="-1"' not in html + script
    assert ":focus-visible" in UI.joinpath("style.css").read_text()


def test_the_control_resource_serves_the_dashboard_it_is_given() -> None:
    files = {"index.html": StaticFile.of(b"<p>hi</p>", b"text/html")}
    routes: Any = Resource()  # never reached: /ui/ is the dashboard's
    resource = ControlResource(routes, None, None, dashboard=Dashboard(files))
    answer = call(StubTreq(resource), "GET", "/ui/")
    assert (answer.code, answer.body) == (200, b"<p>hi</p>")
    assert call(StubTreq(resource), "GET", "/ui/app.js").code == 404
