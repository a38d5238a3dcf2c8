"""Stress: slowloris, non-readers and a trailer flood at once against the real twistd.

Bounded in time (about 20 s) and to loopback.  nfork's memory must stay under
a stated bound while a normal client keeps being served within a second;
docs/operations.md gives the figures of a run.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from tests.support.configs import inbound_json, write_config
from tests.support.process import TwistdProcess

ATTACK_SECONDS = 12.0
"""How long the three attacks run together."""
SLOWLORIS = 400
"""Connections that send a head one byte at a time and never finish it."""
NON_READERS = 20
"""Connections that pipeline requests for a 1 MiB answer and never read."""
PIPELINED = 50
"""Requests each non-reader sends."""
FLOODERS = 4
"""Connections whose chunked body ends in a trailer field that never ends."""
FLOOD_BYTES = 16 * 1024 * 1024
"""Most bytes one flooder sends (it stops earlier once nfork closes it)."""
BIG = 1024 * 1024
RSS_BOUND_MB = 100
"""nfork's resident memory never exceeds this during the attacks, in MiB."""
ANSWER_WITHIN = 1.0
"""Seconds a normal request may take while the attacks run."""


def rss_mb(pid: int) -> float:
    """The resident set size of process C{pid}, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def normal_request(port: int, path: str = "/normal") -> tuple[float, bytes]:
    """One GET on a fresh connection: (seconds taken, the status line)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return time.monotonic() - start, data.split(b"\r\n", 1)[0]


class Attack:
    """The three attacks, each in a thread, until C{stop} or their time is up."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stopping = threading.Event()
        self.opened = {"slowloris": 0, "non-readers": 0, "flooders": 0}
        self.flood_closed = 0
        """Flooders that nfork cut off before they had sent everything."""
        self._threads = [
            threading.Thread(target=run, daemon=True)
            for run in (self._slowloris, self._non_readers, self._flood)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setblocking(False)
        return s

    def _slowloris(self) -> None:
        sockets: list[socket.socket] = []
        try:
            for _ in range(SLOWLORIS):
                if self.stopping.is_set():
                    return
                s = self._connect()
                s.send(b"GET / HTTP/1.1\r\nHost: shop\r\nX-A: ")
                sockets.append(s)
                self.opened["slowloris"] += 1
            while not self.stopping.wait(1.0):
                for s in sockets:
                    with contextlib.suppress(OSError):
                        s.send(b"a")
        finally:
            for s in sockets:
                s.close()

    def _non_readers(self) -> None:
        request = b"GET /big HTTP/1.1\r\nHost: shop\r\n\r\n"
        sockets: list[socket.socket] = []
        try:
            for _ in range(NON_READERS):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                # A small receive window: the answers pile up at nfork's end.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(5)
                s.connect(("127.0.0.1", self.port))
                s.setblocking(False)
                with contextlib.suppress(OSError):
                    s.send(request * PIPELINED)
                sockets.append(s)
                self.opened["non-readers"] += 1
            self.stopping.wait(ATTACK_SECONDS + 5)
        finally:
            for s in sockets:
                s.close()

    def _flood(self) -> None:
        head = (
            b"POST /upload HTTP/1.1\r\nHost: shop\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\nX: "
        )
        piece = b"y" * 65536
        selector = selectors.DefaultSelector()
        sent: dict[socket.socket, int] = {}
        try:
            for _ in range(FLOODERS):
                s = self._connect()
                s.send(head)
                selector.register(s, selectors.EVENT_WRITE)
                sent[s] = 0
                self.opened["flooders"] += 1
            while sent and not self.stopping.is_set():
                for key, _ in selector.select(timeout=0.2):
                    s = cast(socket.socket, key.fileobj)
                    try:
                        sent[s] += s.send(piece)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        self.flood_closed += 1
                        selector.unregister(s)
                        del sent[s]
                        continue
                    if sent[s] >= FLOOD_BYTES:
                        selector.unregister(s)
                        del sent[s]
                # Feed at most ~20 MiB/s in total: a flood, not a CPU race
                # between this thread and nfork.
                time.sleep(0.01)
        finally:
            selector.close()
            for s in sent:
                s.close()


@contextlib.contextmanager
def attacking(port: int) -> Iterator[Attack]:
    attack = Attack(port)
    attack.start()
    try:
        yield attack
    finally:
        attack.stop()


FILE_SERVER = """
import functools, http.server
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 512  # http.server's 5 would drop nfork's SYNs
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=".")
handler.log_message = lambda *args: None
with Server(("127.0.0.1", 0), handler) as server:
    print("serving on port", server.server_address[1], flush=True)
    server.serve_forever()
"""


@contextlib.contextmanager
def file_backend(root: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the files of C{root}: its address.

    A process of its own: in this one, the attack threads would slow it down
    and nfork would be blamed.
    """
    server = subprocess.Popen(
        [sys.executable, "-u", "-c", FILE_SERVER],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"port (\d+)", line)
        assert match, f"http.server said {line!r}"
        yield f"127.0.0.1:{match.group(1)}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.single_process(
    "the RSS bound is one process's, read from twistd's pid; with workers "
    "the attacks land on the workers"
)
def test_slowloris_non_readers_and_a_trailer_flood_at_once(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "normal").write_bytes(b"ok\n")
    (files / "big").write_bytes(b"x" * BIG)
    with file_backend(files) as backend:
        config = write_config(
            tmp_path / "nfork.json", inbound_json("shop", out={"prod": backend})
        )
        run_attacks(config)


def run_attacks(config: Path) -> None:
    with TwistdProcess("--config", str(config), "--control", "none") as nfork:
        port = nfork.listening_port("shop")
        pid = nfork.process.pid
        for _ in range(20):
            taken, status = normal_request(port)
            assert status == b"HTTP/1.1 200 OK"
        baseline = rss_mb(pid)
        peak = baseline
        slowest = 0.0
        served = 0
        with attacking(port) as attack:
            deadline = time.monotonic() + ATTACK_SECONDS
            while time.monotonic() < deadline:
                peak = max(peak, rss_mb(pid))
                taken, status = normal_request(port)
                assert status == b"HTTP/1.1 200 OK", status
                assert taken < ANSWER_WITHIN, f"a normal request took {taken:.2f}s"
                slowest = max(slowest, taken)
                served += 1
                time.sleep(0.25)
            peak = max(peak, rss_mb(pid))
        assert attack.opened == {
            "slowloris": SLOWLORIS,
            "non-readers": NON_READERS,
            "flooders": FLOODERS,
        }
        assert peak < RSS_BOUND_MB, f"nfork grew to {peak:.0f} MiB"
        print(
            f"\nstress: RSS {baseline:.0f} MiB before, peak {peak:.0f} MiB; "
            f"{served} normal requests, slowest {slowest * 1000:.0f} ms; "
            f"flooders cut off: {attack.flood_closed}/{FLOODERS}"
        )
        nfork.terminate()
