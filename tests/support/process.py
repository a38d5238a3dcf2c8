"""Run the real twistd as a subprocess, for end-to-end tests."""

from __future__ import annotations

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


class TwistdProcess:
    """C{twistd -n nfork ARGS} in the background, its log lines in a queue."""

    def __init__(self, *args: str, cwd: str | None = None) -> None:
        self.args = [TWISTD, "--nodaemon", "--pidfile=", "nfork", *args]
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
        """The port an inbound listens on, from its startup log line."""
        match = self.wait_for_line(
            rf"inbound {re.escape(inbound)} listening on .*port=(\d+)"
        )
        return int(match.group(1))

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

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
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def rss_mib(pid: int) -> float:
    """The resident set size of process C{pid}, in MiB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")
