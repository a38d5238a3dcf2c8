"""How worker processes should share a listening port: measured, not guessed.

Two ways for N processes to accept the connections of one address:

- C{shared}: one listening socket, opened once and inherited by every
  worker, which adopts it (Twisted's C{adoptStreamPort}); every worker's
  epoll wakes for each new connection and the fastest C{accept} wins.
- C{reuseport}: each worker listens on its own socket with C{SO_REUSEPORT};
  the kernel hashes each new connection to one of them.

Each worker here answers every request with 100 bytes after burning
C{--work-us} microseconds of CPU, standing in for nfork's work per request
(about 100 us on the benchmark machine), so that the workers, not wrk, are
the bottleneck.  Run::

    python -m benchmarks.socket_sharing [--workers 2] [--connections 32,256]
        [--duration 5] [--work-us 100]

It prints, per mode and connection count, the throughput and each worker's
share of the requests (docs/performance.md, "Worker processes").
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from benchmarks import wrk
from benchmarks.processes import free_port
from benchmarks.tools import find_tools

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100


def _serve(fd: int | None, port: int | None, work_us: float) -> None:
    """One worker: accept, answer, count; print the count on SIGTERM."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    count = [0]
    burn = work_us / 1e6

    class Answer(Protocol):
        def dataReceived(self, data: bytes) -> None:
            # wrk sends one small request at a time on each connection.
            for _ in range(data.count(b"\r\n\r\n")):
                end = time.perf_counter() + burn
                while time.perf_counter() < end:
                    pass
                count[0] += 1
                assert self.transport is not None
                self.transport.write(_ANSWER)

    factory = Factory.forProtocol(Answer)
    if fd is None:
        assert port is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(511)
        sock.setblocking(False)
        reactor.adoptStreamPort(sock.fileno(), socket.AF_INET, factory)  # type: ignore[attr-defined]
        sock.close()
    else:
        reactor.adoptStreamPort(fd, socket.AF_INET, factory)  # type: ignore[attr-defined]
        os.close(fd)

    def stop(signum: int, frame: object) -> None:
        sys.stdout.write(f"count {count[0]}\n")
        sys.stdout.flush()
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]


def _start(
    mode: str, workers: int, work_us: float
) -> tuple[int, list[subprocess.Popen[str]]]:
    """Start the workers; the port they serve."""
    port = free_port()
    processes = []
    shared: socket.socket | None = None
    if mode == "shared":
        shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        shared.bind(("127.0.0.1", port))
        shared.listen(511)
        shared.setblocking(False)
    for _ in range(workers):
        if shared is not None:
            fd = shared.fileno()
            args = ["--fd", str(fd)]
            pass_fds: Sequence[int] = (fd,)
        else:
            args = ["--port", str(port)]
            pass_fds = ()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.socket_sharing",
                "serve",
                "--work-us",
                str(work_us),
                *args,
            ],
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=pass_fds,
        )
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker did not start")
        processes.append(process)
    if shared is not None:
        shared.close()
    return port, processes


def _stop(processes: Sequence[subprocess.Popen[str]]) -> list[int]:
    counts = []
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        counts.append(int(line[1]) if len(line) == 2 else 0)
        process.wait(10)
        process.stdout.close()
    return counts


def measure(
    mode: str, workers: int, connections: int, duration: int, work_us: float
) -> tuple[float, list[int]]:
    """Requests per second and each worker's request count."""
    tools = find_tools()
    if tools.wrk is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    port, processes = _start(mode, workers, work_us)
    try:
        argv = wrk.command(
            tools.wrk, f"http://127.0.0.1:{port}/", duration, connections
        )
        run = wrk.run(argv, duration)
    finally:
        counts = _stop(processes)
    return run.result.requests_per_second, counts


def main(argv: Sequence[str] | None = None) -> None:
    """Measure both modes and print a table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.socket_sharing")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve")
    serve.add_argument("--fd", type=int)
    serve.add_argument("--port", type=int)
    serve.add_argument("--work-us", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", default="32,256")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--work-us", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve(args.fd, args.port, args.work_us)
        return
    print("| mode | connections | req/s | share of each worker |")
    print("|---|--:|--:|---|")
    for connections in (int(c) for c in args.connections.split(",")):
        for _ in range(args.rounds):
            for mode in ("shared", "reuseport"):
                rate, counts = measure(
                    mode, args.workers, connections, args.duration, args.work_us
                )
                total = sum(counts) or 1
                shares = " / ".join(f"{100 * c / total:.0f}%" for c in counts)
                print(
                    f"| {mode} | {connections} | {rate:,.0f} | {shares} |", flush=True
                )


if __name__ == "__main__":
    main()
