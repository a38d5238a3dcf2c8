"""What the 200 ms shadow costs, measured in pairs inside one nfork process.

    python -m benchmarks.paired [--pairs 20] [--settle 0.5] [--window 1.2]
                                [--delay 0.2]

The harness runs scenarios 3 and 4 in separate nfork processes, seconds
apart; on a shared machine whose speed drifts by up to 1.7x within a minute,
their ratio moves by +-10% from one run to the next.  Here a single nfork
runs scenario 3's config under one continuous wrk load, and the control API
switches its third outbound between the fast backend and the 200 ms one
(C{PUT /v1/nfork/bench/fast3}) before every window.  A fast window and the
slow window right after it form a pair measured at nearly the same machine
speed.  For each window: nfork's CPU time per request the client got
(requests counted by nfork's stats of the active outbound).  The figure
reported is (CPU per request, fast) / (CPU per request, slow) over all the
windows of each kind, with the median of the pairs' own ratios beside it:
scenario 4's throughput per core relative to scenario 3's.
Windows start C{settle} seconds after a switch, once the copies sent under
the previous address have finished (the slow ones take C{delay}).

The fast windows run in a process that also serves the slow shadow in
between (its heap and its idle connections to the slow backend stay), so
a pair measures what the slow copies themselves cost, not what a process
that never met a slow shadow gains from that.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from attrs import asdict, frozen

from benchmarks import wrk
from benchmarks.processes import (
    ProcessFailed,
    cpu_seconds,
    process_tree,
    supervised,
    terminate_as_interrupt,
)
from benchmarks.run import stale_install
from benchmarks.scenarios import SLOW, select
from benchmarks.stack import REPO, Backends, NforkProxy, NforkSettings, start_nfork
from benchmarks.tools import find_tools

SCENARIO = select("3")[0]
"""Scenario 3's config is the one measured: active fast1, shadows fast2, fast3."""
SWITCHED = "fast3"
"""The outbound of scenario 3 whose address alternates."""


@frozen
class Window:
    """One measured stretch with the switched outbound at one address."""

    backend: str
    """C{fast3} or C{slow}: where the switched outbound sent its copies."""
    requests: int
    """Requests nfork answered (from the active outbound's stats)."""
    copies: int
    """Requests C{backend} logged as answered: the switch took effect."""
    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_per_request(self) -> float:
        """nfork's CPU seconds per answered request."""
        return self.cpu_seconds / self.requests if self.requests else float("inf")


def pairs(windows: Sequence[Window]) -> list[tuple[Window, Window]]:
    """(fast, slow) pairs of consecutive windows, as L{measure} makes them."""
    fast = [w for w in windows if w.backend == SWITCHED]
    slow = [w for w in windows if w.backend == SLOW]
    return list(zip(fast, slow, strict=False))


def pair_ratios(windows: Sequence[Window]) -> list[float]:
    """Fast CPU per request over slow CPU per request, for each pair."""
    return [f.cpu_per_request / s.cpu_per_request for f, s in pairs(windows)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.paired",
        description="Measure in one nfork process what a slow shadow costs.",
    )
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument(
        "--settle", type=float, default=0.5, help="seconds between switch and window"
    )
    parser.add_argument("--window", type=float, default=1.2, help="seconds measured")
    parser.add_argument(
        "--delay", type=float, default=0.2, help="seconds the slow backend waits"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=REPO / "benchmarks" / "results"
    )
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.window <= 0 or args.settle < 0 or args.delay <= 0:
        parser.error("--pairs must be >= 1, --window > 0, --settle >= 0, --delay > 0")
    return args


def switch(proxy: NforkProxy, port: int, max_inflight: int) -> None:
    """Point the switched outbound at C{127.0.0.1:port} through the control API."""
    body = json.dumps({"addr": f"127.0.0.1:{port}", "maxInflight": max_inflight})
    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy.control_port}/v1/nfork/bench/{SWITCHED}",
        data=body.encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def answered(proxy: NforkProxy, active: str) -> int:
    """Requests the active outbound has answered so far."""
    stats = proxy.stats()
    if stats is None:
        raise ProcessFailed("nfork's control API gave no stats")
    return int(stats["bench"][active]["total"]["requests"])


def measure(
    proxy: NforkProxy,
    backends: Backends,
    args: argparse.Namespace,
    max_inflight: int,
) -> list[Window]:
    """Alternate the switched outbound, fast first, and measure each window."""
    pids = process_tree(proxy.process.pid)
    windows = []
    for index in range(2 * args.pairs):
        backend = SWITCHED if index % 2 == 0 else SLOW
        switch(proxy, backends.ports[backend], max_inflight)
        time.sleep(args.settle)
        requests, copies = answered(proxy, SCENARIO.active), backends.received()
        cpu, wall = cpu_seconds(pids), time.monotonic()
        time.sleep(args.window)
        cpu, wall = cpu_seconds(pids) - cpu, time.monotonic() - wall
        window = Window(
            backend,
            answered(proxy, SCENARIO.active) - requests,
            (backends.received()[backend] - copies[backend]).requests,
            cpu,
            wall,
        )
        if not window.requests:
            raise ProcessFailed(f"nfork answered no request in window {index + 1}")
        windows.append(window)
    return windows


def pooled_ratio(windows: Sequence[Window]) -> float:
    """Like L{pair_ratios}, over all the fast windows and all the slow ones."""

    def cost(backend: str) -> float:
        chosen = [w for w in windows if w.backend == backend]
        return sum(w.cpu_seconds for w in chosen) / sum(w.requests for w in chosen)

    return cost(SWITCHED) / cost(SLOW)


def report(windows: Sequence[Window], delay: float) -> str:
    """The Markdown summary: each pair's figures, the pooled and median ratios."""
    ratios = pair_ratios(windows)
    lines = [
        "| pair | fast3: us CPU/req | req/s | slow: us CPU/req | req/s | ratio |",
        "|--:|--:|--:|--:|--:|--:|",
    ]
    for number, ((f, s), ratio) in enumerate(
        zip(pairs(windows), ratios, strict=True), 1
    ):
        lines.append(
            f"| {number} | {f.cpu_per_request * 1e6:.0f} "
            f"| {f.requests / f.wall_seconds:,.0f} "
            f"| {s.cpu_per_request * 1e6:.0f} | {s.requests / s.wall_seconds:,.0f} "
            f"| {ratio:.3f} |"
        )
    lines.append("")
    lines.append(
        f"Throughput per core with the {delay * 1000:g} ms shadow, relative to "
        f"all-fast shadows: {pooled_ratio(windows):.3f} over all {len(ratios)} pairs' "
        f"CPU and requests; median of the pairs {statistics.median(ratios):.3f}."
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the paired measurement; 0 on success, 2 when a tool is missing."""
    args = parse_args(argv)
    tools = find_tools()
    if tools.missing:
        sys.stderr.write(tools.message())
        return 2
    assert tools.nginx is not None and tools.wrk is not None
    assert tools.echo_module is not None
    for problem in stale_install()[:1]:
        sys.stderr.write(f"warning: installed nfork differs from source ({problem})\n")
    # The harness's defaults (C{python -m benchmarks.run --help}).
    settings = NforkSettings(
        idle_conn=1024, max_inflight=1000, timeout=1.0, control=True
    )
    duration = round(2 * args.pairs * (args.settle + args.window + 0.2) + 10)
    started = datetime.now(timezone.utc)
    workdir = Path(tempfile.mkdtemp(prefix="nfork-paired-"))
    try:
        with terminate_as_interrupt(), supervised(workdir) as supervisor:
            backends = Backends(
                supervisor, tools.nginx, tools.echo_module, slow_delay=args.delay
            )
            backends.start([*SCENARIO.outbounds, SLOW])
            proxy = start_nfork(supervisor, SCENARIO, backends.ports, settings)
            load = subprocess.Popen(
                wrk.command(tools.wrk, f"http://127.0.0.1:{proxy.port}/", duration),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(1.0)
                windows = measure(proxy, backends, args, settings.max_inflight)
            finally:
                load.kill()
                load.wait()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: every process started was stopped\n")
        return 130
    except (ProcessFailed, OSError) as e:
        sys.stderr.write(f"paired measurement failed: {e}\n")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(report(windows, args.delay))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"paired-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    record: dict[str, Any] = {
        "started": started.isoformat(),
        "parameters": {k: str(v) for k, v in vars(args).items()},
        "windows": [asdict(w) for w in windows],
        "ratios": pair_ratios(windows),
        "pooled_ratio": pooled_ratio(windows),
    }
    path.write_text(json.dumps(record, indent=2))
    sys.stderr.write(f"results: {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
