"""The processes a scenario runs against: the backends, and nfork or nginx as proxy.

The backends start once and serve every scenario; each counts the requests
and connections it received, and the harness takes differences around a
scenario.  A proxy starts fresh for each scenario run, so that its peak
memory and its connection pool belong to that run alone.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from attrs import define, field, frozen

from benchmarks import nginx
from benchmarks.processes import (
    ManagedProcess,
    ProcessFailed,
    Supervisor,
    free_port,
    process_tree,
    wait_for_children,
    wait_for_listeners,
    wait_for_port,
)
from benchmarks.scenarios import BLACKHOLE, FAST, SLOW, Scenario

REPO = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).with_name("twistd"))


@frozen
class Received:
    """Requests and connections one backend has received so far."""

    requests: int
    connections: int

    def __sub__(self, other: Received) -> Received:
        return Received(
            self.requests - other.requests, self.connections - other.connections
        )


@define
class _AccessLog:
    """Counts an nginx access log's lines and distinct connections, incrementally."""

    path: Path
    _offset: int = 0
    _requests: int = 0
    _connections: set[bytes] = field(factory=set)

    def read(self) -> Received:
        """The totals since the log was created."""
        try:
            with open(self.path, "rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            data = b""
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        lines = complete.split(b"\n")[:-1]
        self._requests += len(lines)
        self._connections.update(lines)
        return Received(self._requests, len(self._connections))


@define
class _PythonBackend:
    """A C{benchmarks.backends} process and its stdin/stdout counter protocol."""

    process: ManagedProcess
    port: int

    def read(self) -> Received:
        """Ask the backend for its counts."""
        popen = self.process.popen
        assert popen.stdin is not None and popen.stdout is not None
        popen.stdin.write(b"count\n")
        popen.stdin.flush()
        line = _readline(popen, timeout=5.0)
        _, requests, connections = line.split()
        return Received(int(requests), int(connections))


def _readline(popen: subprocess.Popen[bytes], timeout: float) -> str:
    """One line of a backend's stdout, failing rather than hanging."""
    assert popen.stdout is not None
    ready, _, _ = select.select([popen.stdout], [], [], timeout)
    line = popen.stdout.readline().decode() if ready else ""
    if not line:
        raise ProcessFailed(f"backend pid {popen.pid} did not answer in {timeout}s")
    return line


@define
class Backends:
    """The five loopback backends: four nginx servers (three fast, which also
    serve the 1 MiB file, and one slow) and the mute Python one."""

    supervisor: Supervisor
    nginx_binary: str
    echo_module: str = ""
    """What L{benchmarks.tools.Tools.echo_module} found: the slow one needs it."""
    slow_delay: float = 0.2
    ports: dict[str, int] = field(factory=dict)
    _logs: dict[str, _AccessLog] = field(factory=dict)
    _python: dict[str, _PythonBackend] = field(factory=dict)
    processes: dict[str, ManagedProcess] = field(factory=dict)
    """By role: C{nginx-backends} (the slow backend too) and C{blackhole}."""

    def start(self, names: Sequence[str]) -> None:
        """Start the backends among C{names} (the fast nginx ones always start)."""
        workdir = self.supervisor.workdir
        fast = {name: free_port() for name in FAST}
        slow = {SLOW: free_port()} if SLOW in names else {}
        config = workdir / "nginx-backends.conf"
        nginx.temp_dir(workdir, "nginx-backends").mkdir(exist_ok=True)
        nginx.write_large_answer(workdir)
        config.write_text(
            nginx.backends_config(
                workdir, fast, slow, self.slow_delay, self.echo_module
            )
        )
        process = self.supervisor.start(
            "nginx-backends",
            [self.nginx_binary, "-p", str(workdir), "-c", str(config)],
        )
        self.processes["nginx-backends"] = process
        wait_for_children(process, 1)
        for name, port in {**fast, **slow}.items():
            wait_for_port(port, process)
            self.ports[name] = port
            self._logs[name] = _AccessLog(workdir / f"{name}.log")
        if BLACKHOLE in names:
            self.start_blackhole()

    def start_blackhole(self) -> None:
        """Start the C{benchmarks.backends} process that never answers."""
        process = self.supervisor.start(
            BLACKHOLE,
            [sys.executable, "-m", "benchmarks.backends"],
            cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            line = _readline(process.popen, timeout=15.0)
        except ProcessFailed:
            raise ProcessFailed(
                f"backend {BLACKHOLE} did not start:\n{process.log_tail()}"
            ) from None
        port = int(line.split()[1])
        self.ports[BLACKHOLE] = port
        self.processes[BLACKHOLE] = process
        self._python[BLACKHOLE] = _PythonBackend(process, port)

    def received(self) -> dict[str, Received]:
        """What every backend has received since it started."""
        counts = {name: log.read() for name, log in self._logs.items()}
        counts.update({name: b.read() for name, b in self._python.items()})
        return counts

    def pids(self) -> dict[str, list[int]]:
        """Process ids by role (nginx master and worker together)."""
        return {
            role: process_tree(process.pid) for role, process in self.processes.items()
        }


class Proxy(Protocol):
    """A proxy under test, running."""

    port: int
    process: ManagedProcess

    def stats(self) -> dict[str, Any] | None:
        """Its own per-outbound stats, when it can tell them."""

    def dropped(
        self, shadows: Sequence[str], stats: dict[str, Any] | None
    ) -> dict[str, int] | None:
        """Copies it shed on purpose per shadow, from C{stats}, if it can tell."""


@define
class NforkProxy:
    """A C{twistd nfork} process with a config written for one scenario."""

    port: int
    process: ManagedProcess
    control_port: int | None

    def stats(self) -> dict[str, Any] | None:
        """C{GET /v1/nfork/stats} from the control API, if nfork has one."""
        if self.control_port is None:
            return None
        url = f"http://127.0.0.1:{self.control_port}/v1/nfork/stats"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                stats: dict[str, Any] = json.load(response)
        except (OSError, ValueError):
            return None
        return stats

    def dropped(
        self, shadows: Sequence[str], stats: dict[str, Any] | None
    ) -> dict[str, int] | None:
        """C{total.dropped} of each shadow, from the stats."""
        if stats is None or "bench" not in stats:
            return None
        try:
            return {
                name: int(stats["bench"][name]["total"]["dropped"]) for name in shadows
            }
        except (KeyError, TypeError, ValueError):
            return None


@define
class NginxProxy:
    """nginx with the C{mirror} config for one scenario."""

    port: int
    process: ManagedProcess

    def stats(self) -> dict[str, Any] | None:
        """nginx keeps no per-mirror stats."""
        return None

    def dropped(
        self, shadows: Sequence[str], stats: dict[str, Any] | None
    ) -> dict[str, int] | None:
        """nginx never sheds a mirror copy: every one is sent."""
        return dict.fromkeys(shadows, 0)


@frozen
class NforkSettings:
    """The parts of nfork's config and command line the harness varies."""

    idle_conn: int
    max_inflight: int
    timeout: float
    control: bool
    """Whether this nfork has C{--control} (the REST API with the stats)."""
    profile_path: Path | None = None
    """Run nfork under cProfile and write the pstats file here."""


def nfork_config(
    scenario: Scenario, ports: Mapping[str, int], port: int, settings: NforkSettings
) -> list[dict[str, Any]]:
    """The nfork.json for a scenario: one inbound named C{bench}."""
    out: dict[str, Any] = {}
    for name in scenario.outbounds:
        address = f"127.0.0.1:{ports[name]}"
        if name in scenario.shadows:
            out[name] = {"addr": address, "maxInflight": settings.max_inflight}
        else:
            out[name] = address
    inbound: dict[str, Any] = {
        "name": "bench",
        "listen": f"127.0.0.1:{port}",
        "out": out,
        "active": scenario.active,
        "timeout": f"{round(settings.timeout * 1000)}ms",
        "idleConn": settings.idle_conn,
    }
    if scenario.compare:
        inbound["compare"] = {
            "candidates": [scenario.shadows[-1]],
            "baseline": scenario.shadows[0],
        }
    return [inbound]


def nfork_has_control() -> bool:
    """Whether the installed nfork accepts C{--control} (the REST API)."""
    usage = subprocess.run(
        [TWISTD, "nfork", "--help"], capture_output=True, text=True, check=False
    )
    return "--control" in usage.stdout


def start_nfork(
    supervisor: Supervisor,
    scenario: Scenario,
    ports: Mapping[str, int],
    settings: NforkSettings,
) -> NforkProxy:
    """Start nfork for C{scenario}; it is accepting connections on return."""
    workdir = supervisor.workdir
    port = free_port()
    config = workdir / f"nfork-{scenario.id}.json"
    config.write_text(json.dumps(nfork_config(scenario, ports, port, settings)))
    argv = [TWISTD, "--nodaemon", "--pidfile=", "nfork", "--config", str(config)]
    argv += ["--drain-timeout", "2s"]
    argv += nfork_workers_args(scenario)
    control_port = None
    if settings.control:
        control_port = free_port()
        argv += ["--control", f"127.0.0.1:{control_port}"]
    if settings.profile_path is not None:
        profiler = [sys.executable, "-m", "cProfile", "-o", str(settings.profile_path)]
        argv = profiler + argv
    process = supervisor.start(f"nfork-{scenario.id}", argv, cwd=str(workdir))
    wait_for_port(port, process)
    if scenario.workers is not None and scenario.workers > 1:
        # The first worker listening is not enough: every one must take its
        # share of the connections wrk opens at once.
        wait_for_listeners(port, scenario.workers, process)
    return NforkProxy(port, process, control_port)


def nfork_workers_args(scenario: Scenario) -> list[str]:
    """C{--workers N} when the scenario sets it, else nothing (today's command)."""
    return [] if scenario.workers is None else ["--workers", str(scenario.workers)]


def start_nginx_mirror(
    supervisor: Supervisor,
    nginx_binary: str,
    scenario: Scenario,
    ports: Mapping[str, int],
    keepalive: int,
    timeout: float,
) -> NginxProxy:
    """Start nginx mirroring C{scenario}'s shadows; it accepts connections on return."""
    workdir = supervisor.workdir
    port = free_port()
    config = workdir / f"nginx-mirror-{scenario.id}.conf"
    nginx.temp_dir(workdir, "nginx-mirror").mkdir(exist_ok=True)
    config.write_text(
        nginx.mirror_config(
            workdir,
            port,
            ports[scenario.active],
            [ports[name] for name in scenario.shadows],
            keepalive,
            timeout,
        )
    )
    process = supervisor.start(
        f"nginx-mirror-{scenario.id}",
        [nginx_binary, "-p", str(workdir), "-c", str(config)],
    )
    wait_for_children(process, 1)
    wait_for_port(port, process)
    return NginxProxy(port, process)
