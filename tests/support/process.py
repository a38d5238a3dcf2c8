"""Run the real twistd as a subprocess, for end-to-end tests.

With C{pytest --nfork-workers N} (tests/conftest.py) every L{TwistdProcess}
adds C{--workers N}: the end-to-end tests then run against a parent and N
worker processes.  Each twistd runs in a process group of its own, so that
its workers are found (and none outlives the test) by the group's id.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

TWISTD = str(Path(sys.executable).with_name("twistd"))

workers: int | None = None
"""C{--workers} for every L{TwistdProcess} (set by C{--nfork-workers});
C{None}: not given, one process."""


def workers_args() -> list[str]:
    """C{--workers N} when the test run asks for workers, else nothing."""
    return [] if workers is None else ["--workers", str(workers)]


def _group_members(group: int) -> list[int]:
    """The live (not zombie) processes of process group C{group} (Linux)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        # After the command name (which may hold spaces): state, ppid, pgrp.
        state, _, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == group and state != "Z":
            members.append(int(entry))
    return members


class TwistdProcess:
    """C{twistd -n nfork ARGS} in the background, its log lines in a queue."""

    def __init__(self, *args: str, cwd: str | None = None) -> None:
        self.args = [TWISTD, "--nodaemon", "--pidfile=", "nfork", *args]
        self.args += workers_args()
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first new log line matching C{pattern}; fails after C{timeout}."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line matching {pattern!r} in {timeout}s:\n"
                    + "".join(self.lines)
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"twistd exited before {pattern!r}:\n" + "".join(self.lines)
                )
            self.lines.append(line)
            match = regex.search(line)
            if match:
                return match

    def listening_port(self, inbound: str) -> int:
        """The port an inbound listens on, from its startup log line.

        A line already read (while waiting for another inbound's: with
        workers, inbounds are announced in any order) counts, the latest
        first; else the next one is waited for.
        """
        pattern = rf"inbound {re.escape(inbound)} listening on .*port=(\d+)"
        for line in reversed(self.lines):
            seen = re.search(pattern, line)
            if seen:
                return int(seen.group(1))
        return int(self.wait_for_line(pattern).group(1))

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL if it hangs).

        Fails if a process twistd started (a worker) is still alive 2 s
        after twistd exited: each is killed and named.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()
            raise
        left = self._survivors(grace=2.0)
        if left:
            self._kill_group()
            raise AssertionError(f"twistd exited leaving processes {left} alive")
        return code

    def _survivors(self, grace: float) -> list[int]:
        """The group's processes still alive after up to C{grace} seconds."""
        deadline = time.monotonic() + grace
        while True:
            left = _group_members(self.process.pid)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def _kill_group(self) -> None:
        """SIGKILL twistd and every process of its group (its workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._survivors(grace=2.0)

    def output(self) -> str:
        """Every line read so far, and whatever is left once it has exited."""
        while True:
            try:
                line = self._queue.get(
                    timeout=0.5 if self.process.poll() is not None else 0
                )
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return "".join(self.lines)

    def __enter__(self) -> TwistdProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None or _group_members(self.process.pid):
            self._kill_group()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def rss_mib(pid: int) -> float:
    """The resident set size of process C{pid} and its group, in MiB (Linux).

    For a L{TwistdProcess}: twistd's own, plus its workers' when it has some
    (C{--nfork-workers}), so that a bound on growth holds for all of nfork.
    """
    total = _rss_kib(pid)
    for member in _group_members(pid):
        if member != pid:
            with contextlib.suppress(OSError, AssertionError):
                total += _rss_kib(member)
    return total / 1024
