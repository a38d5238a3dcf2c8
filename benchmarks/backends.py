"""The benchmark's Python backends: one answering after a delay, one never answering.

nginx cannot delay an answer without extra modules, hence these.  They are
asyncio protocols with C{httptools} parsing (not twisted.web) so that a
single process sustains thousands of concurrent slow requests without
becoming the bottleneck.  Run as::

    python -m benchmarks.backends delay --delay 0.2
    python -m benchmarks.backends blackhole

Each prints C{port N} once listening on 127.0.0.1, then answers C{count} on
stdin with C{count R C} on stdout (requests received and connections accepted
so far), and exits when stdin closes, so it never outlives the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

BODY = b"slow backend answer: " + b"x" * 78 + b"\n"
"""About 100 bytes, like the nginx backends' answer."""

_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
) + BODY


class Counter:
    """Requests (counted when fully received) and connections of one backend."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0


class _RequestProtocol(asyncio.Protocol):
    """Parses HTTP/1.1 requests; subclasses decide what to answer."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counter.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade):
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        """httptools callback: one whole request has arrived."""
        self.counter.requests += 1
        self.answer(self.parser.should_keep_alive())

    def answer(self, keep_alive: bool) -> None:
        """Respond (or not) to the request just received."""
        raise NotImplementedError


class DelayProtocol(_RequestProtocol):
    """Answers 200 with a ~100-byte body, C{delay} seconds after each request."""

    def __init__(self, counter: Counter, delay: float) -> None:
        super().__init__(counter)
        self.delay = delay

    def answer(self, keep_alive: bool) -> None:
        asyncio.get_running_loop().call_later(self.delay, self._respond, keep_alive)

    def _respond(self, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(_RESPONSE)
        if not keep_alive:
            transport.close()


class BlackholeProtocol(_RequestProtocol):
    """Reads and counts requests and never answers; the peer has to give up."""

    def answer(self, keep_alive: bool) -> None:
        """Say nothing, ever."""


class _Control(asyncio.Protocol):
    """Stdin commands: C{count} prints the count; end of input stops the server."""

    def __init__(self, counter: Counter, done: asyncio.Future[None]) -> None:
        self.counter = counter
        self.done = done
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip() == b"count":
                counter = self.counter
                sys.stdout.write(f"count {counter.requests} {counter.connections}\n")
                sys.stdout.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def serve(kind: str, delay: float, port: int) -> None:
    """Listen on 127.0.0.1:C{port} until stdin closes."""
    loop = asyncio.get_running_loop()
    counter = Counter()
    factory: Any
    if kind == "delay":

        def factory() -> asyncio.Protocol:
            return DelayProtocol(counter, delay)
    else:

        def factory() -> asyncio.Protocol:
            return BlackholeProtocol(counter)

    server = await loop.create_server(factory, "127.0.0.1", port, backlog=4096)
    done: asyncio.Future[None] = loop.create_future()
    await loop.connect_read_pipe(lambda: _Control(counter, done), sys.stdin)
    sockname = server.sockets[0].getsockname()
    sys.stdout.write(f"port {sockname[1]}\n")
    sys.stdout.flush()
    try:
        await done
    finally:
        server.close()


def main(argv: list[str] | None = None) -> None:
    """Command line: C{delay [--delay S] | blackhole} [--port N]."""
    parser = argparse.ArgumentParser(
        description="A loopback backend for the nfork benchmark."
    )
    parser.add_argument("kind", choices=["delay", "blackhole"])
    parser.add_argument("--delay", type=float, default=0.2, help="seconds")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.kind, args.delay, args.port))


if __name__ == "__main__":
    main()
