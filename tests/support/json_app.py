"""A small JSON API in its own process, for end-to-end comparison tests.

Run as C{python -m tests.support.json_app VARIANT}: it prints C{port N} once
listening on 127.0.0.1 and exits when its stdin closes, so it never outlives
the test.  Every answer carries noise, as real APIs' do: a random
C{requestId} and the time (C{generatedAt}).  The variants answer alike but
for the two regressions the C{candidate} carries (L{REGRESSIONS}).

Endpoints: C{GET /users/<int>}, C{GET /orders/<int>}, C{POST /search},
C{GET /health} (plain text).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

from httptools import HttpParserError, HttpRequestParser

VARIANTS = ("primary", "baseline", "candidate")

REGRESSIONS = {
    ("GET /users/:int", "$.email"): "missing",
    ("GET /users/:int", "$.mail"): "extra",
    ("GET /orders/:int", "$.total"): "type",
}
"""What the candidate gets wrong: C{email} renamed C{mail} on the users
endpoint (the old name missing, the new one extra), C{total} an integer
turned into a string on the orders endpoint."""

NOISE = ("$.requestId", "$.generatedAt")
"""The fields that differ between any two answers, the candidate's or not."""


def answer(variant: str, method: str, path: str) -> tuple[int, str, bytes]:
    """The status, content type and body for one request."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    noise: dict[str, Any] = {
        "requestId": str(uuid.uuid4()),
        "generatedAt": time.time(),
    }
    document: dict[str, Any]
    if method == "GET" and len(parts) == 2 and parts[0] == "users":
        number = int(parts[1])
        document = {"id": number, "name": f"user {number}", "active": True}
        mail = "mail" if variant == "candidate" else "email"
        document[mail] = f"user{number}@example.com"
    elif method == "GET" and len(parts) == 2 and parts[0] == "orders":
        number = int(parts[1])
        total: int | str = number * 3
        if variant == "candidate":
            total = str(total)
        document = {
            "order": number,
            "total": total,
            "items": [{"sku": f"sku-{number % 7}", "qty": 2}],
        }
    elif method == "POST" and parts == ["search"]:
        document = {"results": ["a", "b", "c"], "count": 3}
    elif parts == ["health"]:
        return 200, "text/plain", b"ok\n"
    else:
        return 404, "application/json", b'{"error": "not found"}'
    document.update(noise)
    return 200, "application/json", json.dumps(document).encode()


class _API(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, parsed by httptools."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        code, kind, body = answer(self.variant, method, self.url.decode())
        self.url = b""
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                b"Date: %s\r\n\r\n%s"
                % (code, kind.encode(), len(body), str(time.time()).encode(), body)
            )


class _Stdin(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def serve(variant: str) -> None:
    """Listen on an ephemeral port of 127.0.0.1 until stdin closes."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _API(variant), "127.0.0.1", 0)
    done: asyncio.Future[None] = loop.create_future()
    await loop.connect_read_pipe(lambda: _Stdin(done), sys.stdin)
    sys.stdout.write(f"port {server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    try:
        await done
    finally:
        server.close()


def main() -> None:
    """Serve the variant named on the command line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=VARIANTS)
    asyncio.run(serve(parser.parse_args().variant))


if __name__ == "__main__":
    main()
