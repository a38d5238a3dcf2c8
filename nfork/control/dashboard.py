"""The dashboard: the page, script and style sheet served at C{/ui/}.

The files are package data (C{nfork/control/ui/}), read once and kept in
memory: no build step, nothing fetched from outside, so the page works on an
air-gapped host.  They are served without the token (the page asks for it
and sends it with every API call it makes) but under the control API's
C{Host} rule, with headers that keep the page from loading anything but its
own files and from being framed by another site.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import resources

from attrs import frozen
from twisted.web.iweb import IRequest

UI_PATH = b"/ui/"
"""Where the dashboard is served; C{/ui} redirects here."""

CONTENT_TYPES = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
}
"""The dashboard's files and their types: nothing else is served."""

SECURITY_HEADERS = {
    # Only the page's own files and the API; no inline script, no framing.
    b"Content-Security-Policy": (
        b"default-src 'none'; script-src 'self'; style-src 'self'; "
        b"img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'"
    ),
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
    # Revalidated on each load (with the ETag): an upgrade is seen at once.
    b"Cache-Control": b"no-cache",
}


@frozen
class StaticFile:
    """One of the dashboard's files, ready to serve."""

    body: bytes
    content_type: bytes
    etag: bytes
    """A strong validator: a quoted hash of the body."""

    @classmethod
    def of(cls, body: bytes, content_type: bytes) -> StaticFile:
        """The file with its ETag computed from C{body}."""
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(body, content_type, f'"{digest}"'.encode())


def load_files() -> dict[str, StaticFile]:
    """Read the dashboard's files from the installed package."""
    folder = resources.files("nfork.control").joinpath("ui")
    return {
        name: StaticFile.of(folder.joinpath(name).read_bytes(), content_type)
        for name, content_type in CONTENT_TYPES.items()
    }


def is_dashboard_path(path: bytes) -> bool:
    """Whether a request path is the dashboard's (C{/ui} or below C{/ui/})."""
    return path == UI_PATH[:-1] or path.startswith(UI_PATH)


class Dashboard:
    """Serves the dashboard's files: GET and HEAD, an ETag, no listing."""

    def __init__(self, files: Mapping[str, StaticFile] | None = None) -> None:
        self._files = dict(load_files() if files is None else files)

    def render(self, request: IRequest) -> bytes:
        """The file named by C{request.path}, or a JSON error as the API's."""
        path: bytes = request.path
        if path == UI_PATH[:-1]:
            request.setResponseCode(301)
            request.setHeader(b"Location", UI_PATH)
            return b""
        name = path[len(UI_PATH) :].decode("utf-8", "replace") or "index.html"
        found = self._files.get(name)
        if found is None:
            return _error(
                request, 404, f"no such dashboard file: {path.decode('latin-1')[:100]}"
            )
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return _error(request, 405, "the dashboard's files are read-only")
        for header, value in SECURITY_HEADERS.items():
            request.setHeader(header, value)
        request.setHeader(b"ETag", found.etag)
        if found.etag in _if_none_match(request):
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Type", found.content_type)
        return found.body


def _if_none_match(request: IRequest) -> list[bytes]:
    values = request.requestHeaders.getRawHeaders(b"if-none-match") or []
    return [tag.strip() for value in values for tag in value.split(b",")]


def _error(request: IRequest, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps({"error": message}).encode()
