"""Streaming through the real twistd: answers as they arrive, bounded memory.

One nfork process and one backend process (tests/support/stream_backend.py)
serve every test of the module, so that nfork's RSS is its own.  The
inbound C{shop} has the active outbound only; C{mirror} adds a shadow on the
same backend; C{cut} cuts a silent body after 300 ms (C{idleTimeout}).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import pytest
from attrs import frozen

from tests.support.configs import inbound_json, write_config
from tests.support.process import TwistdProcess, rss_mib
from tests.support.stream_backend import running_stream_backend
from tests.support.waiting import poll_until

GIB = 1024 * 1024 * 1024
RSS_GROWTH_BOUND = 100.0
"""MiB nfork may grow by while a 1 GiB answer goes through it."""
FIRST_EVENT_WITHIN = 0.1
"""Seconds from the backend's first event to the client."""


@frozen
class Stack:
    """The running nfork and backend."""

    nfork: TwistdProcess
    backend: str
    ports: dict[str, int]
    control: int

    def port(self, inbound: str) -> int:
        return self.ports[inbound]

    def stats(self, inbound: str) -> dict[str, dict[str, object]]:
        url = f"http://127.0.0.1:{self.control}/v1/nfork/{inbound}/stats"
        with urlopen(url, timeout=5) as answer:
            result: dict[str, dict[str, object]] = json.load(answer)
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("streaming")
    with running_stream_backend() as backend:
        config = write_config(
            tmp / "nfork.json",
            inbound_json("shop", out={"prod": backend}, timeout="2s"),
            inbound_json(
                "mirror",
                out={"prod": backend, "staging": backend},
                timeout="2s",
            ),
            inbound_json("cut", out={"prod": backend}, idleTimeout="300ms"),
        )
        with TwistdProcess(
            "--config", str(config), "--control", "127.0.0.1:0"
        ) as nfork:
            control = int(
                nfork.wait_for_line(r"control API listening on .*port=(\d+)").group(1)
            )
            ports = {name: nfork.listening_port(name) for name in ("shop", "mirror")}
            ports["cut"] = nfork.listening_port("cut")
            yield Stack(nfork, backend, ports, control)
            nfork.terminate()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The answer's head, and the body bytes that came with it."""
    data = b""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in data:
        assert time.monotonic() < deadline, data
        piece = sock.recv(65536)
        assert piece, f"closed after {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def drain(sock: socket.socket, size: int, pid: int) -> tuple[int, float]:
    """Read up to C{size} bytes: how many came, and nfork's peak RSS meanwhile."""
    received = 0
    peak = rss_mib(pid)
    buffer = bytearray(1 << 20)
    deadline = time.monotonic() + 120
    reads = 0
    while received < size and time.monotonic() < deadline:
        n = sock.recv_into(buffer)
        if not n:
            break
        received += n
        reads += 1
        if reads % 256 == 0:
            peak = max(peak, rss_mib(pid))
    return received, max(peak, rss_mib(pid))


def written(stack: Stack, transfer: str) -> int:
    with urlopen(f"http://{stack.backend}/written?id={transfer}", timeout=5) as answer:
        return int(answer.read())


def test_first_event_of_an_sse_answer_reaches_the_client_at_once(stack: Stack) -> None:
    with connect(stack.port("shop")) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /sse?hold=2 HTTP/1.1\r\nHost: shop\r\n\r\n")
        head, body = read_head(sock)
        while b"data: first\n\n" not in body:
            piece = sock.recv(65536)
            assert piece
            body += piece
        taken = time.monotonic() - start
    # The backend sends the event as soon as it has the request: this is
    # nfork's relay time (and the backend's), far below the 2 s hold.
    assert taken < FIRST_EVENT_WITHIN, f"first event after {taken * 1000:.0f} ms"
    assert b"Transfer-Encoding: chunked" in head
    assert b"Content-Type: text/event-stream" in head


def test_chunked_answer_stays_chunked_to_http11(stack: Stack) -> None:
    with connect(stack.port("shop")) as sock:
        sock.sendall(b"GET /chunked?n=300000 HTTP/1.1\r\nHost: shop\r\n\r\n")
        head, body = read_head(sock)
        while not body.endswith(b"0\r\n\r\n"):
            piece = sock.recv(65536)
            assert piece
            body += piece
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Transfer-Encoding: chunked" in head
    assert b"Content-Length" not in head
    decoded = b""
    rest = body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        decoded += rest[:size]
        rest = rest[size + 2 :]
    assert decoded == b"\0" * 300000


def test_length_delimited_answer_keeps_its_length(stack: Stack) -> None:
    with connect(stack.port("shop")) as sock:
        sock.sendall(b"GET /zeros?n=5000000 HTTP/1.1\r\nHost: shop\r\n\r\n")
        head, body = read_head(sock)
        received, _ = drain(sock, 5000000 - len(body), stack.nfork.process.pid)
    assert b"Content-Length: 5000000" in head
    assert b"Transfer-Encoding" not in head
    assert received + len(body) == 5000000


def test_http10_client_gets_a_close_delimited_body(stack: Stack) -> None:
    with connect(stack.port("shop")) as sock:
        sock.sendall(b"GET /chunked?n=200000 HTTP/1.0\r\n\r\n")
        head, body = read_head(sock)
        received, _ = drain(sock, GIB, stack.nfork.process.pid)
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert b"Connection: close" in head
    assert b"Transfer-Encoding" not in head
    assert len(body) + received == 200000


def test_one_gib_download_keeps_memory_bounded(stack: Stack) -> None:
    pid = stack.nfork.process.pid
    idle = rss_mib(pid)
    start = time.monotonic()
    with connect(stack.port("mirror")) as sock:
        sock.sendall(b"GET /zeros?n=%d HTTP/1.1\r\nHost: shop\r\n\r\n" % GIB)
        head, body = read_head(sock)
        received, peak = drain(sock, GIB - len(body), pid)
    taken = time.monotonic() - start
    assert b"Content-Length: %d" % GIB in head
    assert received + len(body) == GIB
    # The shadow read the same 1 GiB and dropped it as it came.
    assert peak - idle < RSS_GROWTH_BOUND, f"nfork grew from {idle:.0f} to {peak:.0f}"
    print(f"\n1 GiB in {taken:.1f}s; nfork RSS {idle:.0f} MiB idle, {peak:.0f} peak")


def test_slow_client_throttles_the_backend(stack: Stack) -> None:
    pid = stack.nfork.process.pid
    idle = rss_mib(pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(10)
    with sock:
        sock.connect(("127.0.0.1", stack.port("shop")))
        sock.sendall(b"GET /zeros?n=%d&id=slow HTTP/1.1\r\nHost: shop\r\n\r\n" % GIB)
        read_head(sock)
        # 64 KiB/s for 3 s: 16 KiB every 0.25 s.
        taken = 0
        peak = idle
        for _ in range(12):
            time.sleep(0.25)
            taken += len(sock.recv(16 * 1024))
            peak = max(peak, rss_mib(pid))
        sent = written(stack, "slow")
    # Without backpressure the backend would have sent the whole GiB by now
    # (loopback takes it in about a second) and nfork would hold it.
    assert sent < 64 * 1024 * 1024, f"the backend wrote {sent} bytes"
    assert peak - idle < RSS_GROWTH_BOUND
    print(f"\nslow client read {taken} bytes; the backend wrote {sent}")


def test_silent_body_is_cut_after_idle_timeout(stack: Stack) -> None:
    with connect(stack.port("cut")) as sock:
        sock.sendall(b"GET /sse?hold=2 HTTP/1.1\r\nHost: shop\r\n\r\n")
        head, body = read_head(sock)
        start = time.monotonic()
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            body += piece
        taken = time.monotonic() - start
    assert b"200 OK" in head
    assert b"data: first" in body
    # Cut: the chunked body never got its last chunk.
    assert not body.endswith(b"0\r\n\r\n")
    assert 0.2 < taken < 1.5

    def timeouts() -> object:
        prod = stack.stats("cut")["prod"]["total"]
        assert isinstance(prod, dict)
        return prod["timeouts"]

    # With worker processes the parent's stats follow within a second.
    poll_until(lambda: timeouts() == 1)
    assert timeouts() == 1


@pytest.mark.parametrize("method", [b"DELETE", b"GET"])
def test_content_length_zero_reaches_the_backend(stack: Stack, method: bytes) -> None:
    with connect(stack.port("shop")) as sock:
        sock.sendall(
            method + b" /head HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\n\r\n"
        )
        head, body = read_head(sock)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
    assert body.startswith(method + b" /head HTTP/1.1\r\n")
    assert b"\r\nContent-Length: 0\r\n" in body


def test_no_content_length_is_added_when_the_client_sent_none(stack: Stack) -> None:
    with connect(stack.port("shop")) as sock:
        sock.sendall(b"DELETE /head HTTP/1.1\r\nHost: shop\r\n\r\n")
        head, body = read_head(sock)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
    assert b"Content-Length" not in body


def test_stats_give_time_to_first_byte_and_total_time(stack: Stack) -> None:
    with connect(stack.port("mirror")) as sock:
        sock.sendall(b"GET /sse?hold=0.3 HTTP/1.1\r\nHost: shop\r\n\r\n")
        _, body = read_head(sock)
        while not body.endswith(b"0\r\n\r\n"):
            piece = sock.recv(65536)
            assert piece
            body += piece
    deadline = time.monotonic() + 5
    while True:
        stats = stack.stats("mirror")
        staging = stats["staging"]["total"]
        assert isinstance(staging, dict)
        if staging["requests"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for name in ("prod", "staging"):
        total = stats[name]["total"]
        assert isinstance(total, dict)
        ttfb = total["ttfb"]["pmx"]
        latency = total["latency"]["pmx"]
        assert ttfb.endswith("ms") or ttfb.endswith("µs"), ttfb
        # Two 0.3 s holds: the answer took over half a second in all.
        assert latency.endswith("s") and not latency.endswith("ms"), latency


def upload(port: int, head: bytes, body: Iterator[bytes]) -> bytes:
    """Send C{head}, then every piece of C{body}; the answer's body."""
    with connect(port) as sock:
        sock.sendall(head)
        if b"100-continue" in head:
            interim, _ = read_head(sock)
            assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        for piece in body:
            sock.sendall(piece)
        answer, rest = read_head(sock)
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer
        length = int(answer.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        while len(rest) < length:
            piece = sock.recv(65536)
            assert piece
            rest += piece
    return rest


def pieces(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    """C{total} bytes of a repeating pattern, in pieces of C{size}."""
    pattern = bytes(range(256)) * (size // 256)
    sent = 0
    while sent < total:
        piece = pattern[: min(size, total - sent)]
        sent += len(piece)
        yield piece


def skipped(stack: Stack, inbound: str, outbound: str) -> dict[str, int]:
    total = stack.stats(inbound)[outbound]["total"]
    assert isinstance(total, dict)
    result: dict[str, int] = total["skipped"]
    return result


def test_50_mib_upload_reaches_the_active_byte_for_byte(stack: Stack) -> None:
    size = 50 * 1024 * 1024
    digest = hashlib.sha256(b"".join(pieces(size))).hexdigest()
    before = skipped(stack, "mirror", "staging").get("body_too_large", 0)
    pid = stack.nfork.process.pid
    idle = rss_mib(pid)
    head = b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: %d\r\n\r\n" % size
    answer = upload(stack.port("mirror"), head, pieces(size))
    assert answer == f"{size} {digest} length".encode()
    # The shadow never got it, and says so, in its stats and in /metrics
    # (with worker processes, within a second).
    poll_until(
        lambda: skipped(stack, "mirror", "staging").get("body_too_large") == before + 1
    )
    assert skipped(stack, "mirror", "staging")["body_too_large"] == before + 1
    assert rss_mib(pid) - idle < RSS_GROWTH_BOUND
    with urlopen(f"http://127.0.0.1:{stack.control}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    assert (
        'nfork_outbound_skipped_total{inbound="mirror",outbound="staging",'
        f'reason="body_too_large"}} {before + 1}.0' in metrics
    ), metrics
    assert 'nfork_outbound_ttfb_seconds_count{inbound="mirror",outbound="prod"}' in (
        metrics
    )


def test_chunked_upload_past_mirror_body_streams_chunked(stack: Stack) -> None:
    size = 12 * 1024 * 1024
    digest = hashlib.sha256(b"".join(pieces(size))).hexdigest()
    head = b"PUT /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = (b"%x\r\n%s\r\n" % (len(p), p) for p in pieces(size, 256 * 1024))
    answer = upload(stack.port("mirror"), head, itertools.chain(chunks, [b"0\r\n\r\n"]))
    # Its length was unknown when it began streaming: it stays chunked.
    assert answer == f"{size} {digest} chunked".encode()


def test_upload_with_expect_100_continue(stack: Stack) -> None:
    size = 11 * 1024 * 1024
    digest = hashlib.sha256(b"".join(pieces(size))).hexdigest()
    head = (
        b"POST /upload HTTP/1.1\r\nHost: shop\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % size
    )
    answer = upload(stack.port("shop"), head, pieces(size))
    assert answer == f"{size} {digest} length".encode()


def test_small_body_is_still_copied_to_every_outbound(stack: Stack) -> None:
    before = skipped(stack, "mirror", "staging").get("body_too_large", 0)
    head = b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000\r\n\r\n"
    answer = upload(stack.port("mirror"), head, pieces(1000, 1000))
    assert answer.startswith(b"1000 ")
    assert skipped(stack, "mirror", "staging").get("body_too_large", 0) == before
