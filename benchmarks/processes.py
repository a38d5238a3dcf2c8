"""Start, watch and stop the benchmark's processes; read their CPU and memory.

Every process is started in its own session (so a Ctrl-C on the terminal
reaches only the harness, which then stops them in order) with a parent-death
signal (so they also go if the harness is killed outright). CPU time and peak
resident memory come from C{/proc}, summed over a process and its descendants
(nginx's master and workers).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from attrs import define, field, frozen

PROC = Path("/proc")
"""Where the process table is read (a test passes a fake one)."""
_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Looked up here, not in the forked child, where loading a library could
# deadlock on a lock another thread of the harness held at fork time.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


class ProcessFailed(RuntimeError):
    """A benchmark process exited early or never became ready."""


def _die_with_harness() -> None:
    """In the child before exec: get SIGTERM if the harness dies, even by SIGKILL."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def allow_many_files() -> None:
    """Raise this process's open-file limit to the maximum; children inherit it.

    A mute shadow holds up to C{maxInflight} sockets open in nfork, and the
    backends hold as many: the usual soft limit of 1024 would be the
    bottleneck instead of the proxy.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@define
class ManagedProcess:
    """One started process, its output file and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines it wrote (stdout and stderr), for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "".join(text.splitlines(keepends=True)[-lines:])

    def log_problems(self) -> list[str]:
        """Lines of its log at warning level or above, and tracebacks.

        Matches twisted.logger's C{[namespace#level]} tags as twistd writes them.
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        markers = ("#warn]", "#error]", "#critical]", "Traceback", "Unhandled")
        return [line for line in text.splitlines() if any(m in line for m in markers)]

    def stop(self, timeout: float = 5.0) -> bool:
        """SIGTERM its process group, SIGKILL after C{timeout}; True if it obeyed."""
        if self.popen.poll() is not None:
            return True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
            clean = True
        except subprocess.TimeoutExpired:
            clean = False
        # Whatever is left of the group (a stuck child) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        return clean


@define
class Supervisor:
    """Starts processes and guarantees they are all stopped by L{stop_all}."""

    workdir: Path
    processes: list[ManagedProcess] = field(factory=list)

    def __attrs_post_init__(self) -> None:
        allow_many_files()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | None = None,
    ) -> ManagedProcess:
        """Start C{argv}; its output goes to C{<workdir>/<name>.log}.

        C{stdout=subprocess.PIPE} keeps stdout for the caller (stderr still
        goes to the log file).
        """
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=log if stdout is None else stdout,
                stderr=log,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_harness,
            )
        process = ManagedProcess(name, popen, log_path)
        self.processes.append(process)
        return process

    def stop(self, process: ManagedProcess, timeout: float = 5.0) -> bool:
        """Stop one process (see L{ManagedProcess.stop}) and forget it."""
        clean = process.stop(timeout)
        if process in self.processes:
            self.processes.remove(process)
        return clean

    def stop_all(self) -> None:
        """Stop every process still running, the most recently started first."""
        while self.processes:
            process = self.processes.pop()
            with contextlib.suppress(Exception):
                process.stop(timeout=3.0)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for configs that need a number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: ManagedProcess, timeout: float = 20.0) -> None:
    """Return once 127.0.0.1:C{port} accepts connections; fail if C{process} dies."""
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive():
            raise ProcessFailed(
                f"{process.name} exited with status {process.popen.returncode} "
                f"before listening on port {port}:\n{process.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ProcessFailed(
                    f"{process.name} did not listen on port {port} within "
                    f"{timeout:g}s:\n{process.log_tail()}"
                ) from None
            time.sleep(0.02)


def listening_sockets(port: int, proc: Path = PROC) -> int:
    """How many sockets listen on TCP port C{port} (IPv4) right now.

    Processes sharing a port with C{SO_REUSEPORT} (nfork's workers) each
    have their own listening socket: one line each in C{/proc/net/tcp}.
    """
    wanted = f":{port:04X}"
    count = 0
    with open(proc / "net" / "tcp") as table:
        next(table)
        for line in table:
            fields = line.split(None, 4)
            if fields[3] == "0A" and fields[1].endswith(wanted):
                count += 1
    return count


def wait_for_listeners(
    port: int, count: int, process: ManagedProcess, timeout: float = 20.0
) -> None:
    """Return once C{count} sockets listen on C{port}; fail if C{process} dies."""
    deadline = time.monotonic() + timeout
    while listening_sockets(port) < count:
        if not process.alive():
            raise ProcessFailed(
                f"{process.name} exited with status {process.popen.returncode} "
                f"before {count} processes listened on port {port}:\n"
                f"{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise ProcessFailed(
                f"{process.name}: {listening_sockets(port)} of {count} processes "
                f"listen on port {port} after {timeout:g}s:\n{process.log_tail()}"
            )
        time.sleep(0.02)


def wait_for_children(
    process: ManagedProcess, count: int, timeout: float = 10.0
) -> None:
    """Return once C{process} has C{count} children (nginx's workers)."""
    deadline = time.monotonic() + timeout
    while len(process_tree(process.pid)) <= count:
        if not process.alive() or time.monotonic() > deadline:
            raise ProcessFailed(
                f"{process.name} did not start its {count} worker(s):\n"
                f"{process.log_tail()}"
            )
        time.sleep(0.02)


def _read_stat(pid: int, proc: Path = PROC) -> tuple[int, int] | None:
    """(parent pid, utime + stime in ticks) of C{pid}, C{None} if it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return int(fields[1]), int(fields[11]) + int(fields[12])


def process_tree(pid: int, proc: Path = PROC) -> list[int]:
    """C{pid} and all its descendants that are alive.

    Each process comes before its children, and children in the order of
    their ids: C{[parent, worker 1, worker 2]} for nfork with two workers.
    """
    children: dict[int, list[int]] = {}
    for entry in sorted(os.listdir(proc), key=lambda e: int(e) if e.isdigit() else 0):
        if not entry.isdigit():
            continue
        stat = _read_stat(int(entry), proc)
        if stat is not None:
            children.setdefault(stat[0], []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds_each(pids: Sequence[int], proc: Path = PROC) -> list[float]:
    """User + system CPU time of each process, in seconds (a gone one counts 0)."""
    each = []
    for pid in pids:
        stat = _read_stat(pid, proc)
        each.append(0.0 if stat is None else stat[1] / _CLOCK_TICKS)
    return each


def cpu_seconds(pids: Sequence[int], proc: Path = PROC) -> float:
    """User + system CPU time of the processes, in seconds (gone ones count 0)."""
    return sum(cpu_seconds_each(pids, proc))


def peak_rss_bytes(pids: Sequence[int]) -> int:
    """Sum of the peak resident set sizes (C{VmHWM}) of the processes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total


@frozen
class CPUMeter:
    """CPU time of a fixed set of processes between L{start} and L{percent}."""

    pids: tuple[int, ...]
    cpu_start: tuple[float, ...]
    """Each process's CPU seconds at the start, in the order of C{pids}."""
    wall_start: float
    proc: Path = PROC

    @classmethod
    def start(cls, pids: Sequence[int], proc: Path = PROC) -> CPUMeter:
        """Begin measuring C{pids} now."""
        return cls(
            tuple(pids), tuple(cpu_seconds_each(pids, proc)), time.monotonic(), proc
        )

    def percent_each(self) -> list[float]:
        """Each process's CPU since L{start}, in % of one core, in C{pids} order.

        A process that is gone counts 0 from then on (its time is lost).
        """
        wall = time.monotonic() - self.wall_start
        now = cpu_seconds_each(self.pids, self.proc)
        return [
            max(0.0, 100.0 * (used - start) / wall) if wall > 0 else 0.0
            for used, start in zip(now, self.cpu_start, strict=True)
        ]

    def percent(self) -> float:
        """CPU used since L{start} by them all, in % of one core (100 = one core)."""
        return sum(self.percent_each())


@contextlib.contextmanager
def supervised(workdir: Path) -> Iterator[Supervisor]:
    """A L{Supervisor} whose processes are all stopped on exit, however it happens."""
    supervisor = Supervisor(workdir)
    try:
        yield supervisor
    finally:
        supervisor.stop_all()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C, so every process is stopped."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def established_connections(ports: Sequence[int]) -> dict[int, int]:
    """Open TCP connections (IPv4, established) to each of C{ports} right now.

    Counts the client side, so for a backend port this is the number of
    connections its peers (the proxy, or wrk) hold to it, as
    C{ss -tn state established dst :PORT} would.
    """
    wanted = {f"{port:04X}": port for port in ports}
    counts = dict.fromkeys(ports, 0)
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split(None, 4)
            if fields[3] != "01":
                continue
            port = wanted.get(fields[2].rsplit(":", 1)[1])
            if port is not None:
                counts[port] += 1
    return counts


def _machine_ticks() -> tuple[int, int]:
    """(user + nice + system, steal) CPU ticks of the whole machine so far.

    Interrupt time is left out: loopback traffic is processed in softirqs
    that no process is charged for.
    """
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    user, nice, system = (int(v) for v in fields[1:4])
    steal = int(fields[8]) if len(fields) > 8 else 0
    return user + nice + system, steal


@frozen
class MachineMeter:
    """CPU used by the whole machine, to tell how much went to other processes."""

    busy_start: int
    steal_start: int
    self_start: float
    wall_start: float

    @classmethod
    def start(cls) -> MachineMeter:
        """Begin measuring now."""
        busy, steal = _machine_ticks()
        return cls(busy, steal, _self_cpu(), time.monotonic())

    def percent(self) -> tuple[float, float, float]:
        """(busy, steal, this harness) since L{start}, in % of one core."""
        wall = max(time.monotonic() - self.wall_start, 1e-9)
        busy, steal = _machine_ticks()
        return (
            100.0 * (busy - self.busy_start) / _CLOCK_TICKS / wall,
            100.0 * (steal - self.steal_start) / _CLOCK_TICKS / wall,
            100.0 * (_self_cpu() - self.self_start) / wall,
        )


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
