"""Run wrk and read its C{--latency} report."""

from __future__ import annotations

import re
import resource
import subprocess
from collections.abc import Callable

from attrs import frozen

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
"""wrk's time units, in milliseconds."""

_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.M)
_READ = re.compile(r" requests in [^,]+, ([\d.]+)(B|KB|MB|GB|TB) read$", re.M)
_BYTE_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}
"""wrk's byte units (powers of 1024), with its two decimals."""
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class WrkOutputError(ValueError):
    """wrk's output is not the report we expect."""


@frozen
class WrkResult:
    """What one wrk run measured."""

    requests: int
    """Responses completed."""
    seconds: float
    requests_per_second: float
    latency_ms: dict[str, float]
    """Percentiles of the latency, C{"p50"}, C{"p75"}, C{"p90"}, C{"p99"}."""
    socket_errors: dict[str, int]
    """C{connect}, C{read}, C{write}, C{timeout} (all 0 if wrk saw none)."""
    non_2xx: int
    """Responses with a status other than 2xx or 3xx."""
    bytes_read: int = 0
    """Bytes received over the run, answers' heads included (three significant
    digits or so: wrk prints them with two decimals, in KB, MB or GB)."""

    @property
    def errors(self) -> int:
        """Every request that did not end in a 2xx or 3xx answer."""
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def mib_per_second(self) -> float:
        """Throughput in bytes: MiB received per second."""
        return self.bytes_read / 2**20 / self.seconds if self.seconds else 0.0


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def parse(output: str) -> WrkResult:
    """Read the report printed by C{wrk --latency}."""
    total = _TOTAL.search(output)
    rate = _RATE.search(output)
    percentiles = {f"p{p}": _ms(v, u) for p, v, u in _PERCENTILE.findall(output)}
    if total is None or rate is None or len(percentiles) != 4:
        raise WrkOutputError(f"unexpected wrk output (was --latency given?):\n{output}")
    errors = _SOCKET_ERRORS.search(output)
    non_2xx = _NON_2XX.search(output)
    read = _READ.search(output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1e3,
        requests_per_second=float(rate.group(1)),
        latency_ms=percentiles,
        socket_errors=dict(
            zip(
                ("connect", "read", "write", "timeout"),
                (int(n) for n in errors.groups()) if errors else (0, 0, 0, 0),
                strict=True,
            )
        ),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        bytes_read=round(float(read.group(1)) * _BYTE_UNITS[read.group(2)])
        if read
        else 0,
    )


def command(
    wrk: str, url: str, duration: int, connections: int = 32, threads: int = 1
) -> list[str]:
    """The wrk command line: the same load for every scenario."""
    return [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        url,
    ]


@frozen
class WrkRun:
    """A finished wrk run: its report and the CPU wrk itself used."""

    result: WrkResult
    cpu_percent: float
    output: str


def run(
    argv: list[str],
    duration: int,
    during: Callable[[subprocess.Popen[str]], None] | None = None,
) -> WrkRun:
    """Run wrk to the end; C{during(process)} runs while it loads the target.

    wrk's own CPU use comes from the harness's children rusage (wrk is the
    only child reaped meanwhile), to show whether the load generator is the
    bottleneck.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        if during is not None:
            during(process)
        output, _ = process.communicate(timeout=duration + 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise WrkOutputError(f"wrk exited with status {process.returncode}:\n{output}")
    result = parse(output)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkRun(result, 100.0 * used / max(result.seconds, 1e-9), output)
