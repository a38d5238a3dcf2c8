"""The benchmark's mute backend: reads and counts requests, never answers.

Every backend that answers is nginx (the slow one with C{echo_sleep}), but
nginx logs a request only once it ends, so it could not count requests that
are never answered: hence this.  It is an asyncio protocol with C{httptools}
parsing, so that it counts whole requests.  Run as::

    python -m benchmarks.backends [--port N]

It prints C{port N} once listening on 127.0.0.1, then answers C{count} on
stdin with C{count R C} on stdout (requests received and connections accepted
so far), and exits when stdin closes, so it never outlives the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser


class Counter:
    """Requests (counted when fully received) and connections of one backend."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0


class BlackholeProtocol(asyncio.Protocol):
    """Parses and counts HTTP/1.1 requests and never answers: the peer gives up."""

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
        """httptools callback: one whole request has arrived (and stays unanswered)."""
        self.counter.requests += 1


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


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:C{port} until stdin closes."""
    loop = asyncio.get_running_loop()
    counter = Counter()
    server = await loop.create_server(
        lambda: BlackholeProtocol(counter), "127.0.0.1", port, backlog=4096
    )
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
    """Command line: C{[--port N]}."""
    parser = argparse.ArgumentParser(
        description="The nfork benchmark's mute loopback backend."
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
