"""Run the benchmark: every scenario, round after round, then the medians.

    python -m benchmarks.run [--scenarios 3,6.3] [--rounds N] [--duration S] [--quick]

Prints a Markdown report on stdout (progress goes to stderr) and writes every
figure as JSON to C{benchmarks/results/}.  See C{docs/performance.md}.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path
from typing import Any

from attrs import define, evolve, field

from benchmarks import wrk
from benchmarks.processes import (
    CPUMeter,
    MachineMeter,
    ProcessFailed,
    Supervisor,
    established_connections,
    peak_rss_bytes,
    process_tree,
    supervised,
    terminate_as_interrupt,
)
from benchmarks.report import RunResult, Summary, markdown, summarize, write_json
from benchmarks.scenarios import Scenario, backends_used, select
from benchmarks.stack import (
    REPO,
    Backends,
    NforkSettings,
    Proxy,
    Received,
    nfork_has_control,
    start_nfork,
    start_nginx_mirror,
)
from benchmarks.tools import Tools, find_tools
from benchmarks.wrk import WrkOutputError

RESULTS = REPO / "benchmarks" / "results"


def _say(text: str) -> None:
    """Progress, on stderr so that stdout is the report alone."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; C{BENCH_DURATION} and C{BENCH_ROUNDS} set the defaults."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark nfork against nginx's mirror with wrk, on loopback.",
    )
    parser.add_argument(
        "--scenarios",
        help="comma-separated ids: 1-5, 7-11, 6.3, 6.4, 6.5, 6.7 (6 = every "
        "nginx one); default: all",
    )
    parser.add_argument(
        "--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3"))
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=int(os.environ.get("BENCH_DURATION", "10")),
        help="seconds of load per run (whole seconds, as wrk takes them)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 3 s: a quick look"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument(
        "--idle-conn",
        type=int,
        default=int(os.environ.get("BENCH_IDLE_CONN", "1024")),
        help="nfork's idleConn, and nginx's keepalive per upstream",
    )
    parser.add_argument(
        "--max-inflight", type=int, default=1000, help="maxInflight of every shadow"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        help="seconds each outbound has to answer "
        "(nfork's timeout, nginx's proxy_*_timeout)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run nfork under cProfile (slower!) and save each profile "
        "next to the results",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the configs and logs of the processes (path printed at the end)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 3
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    try:
        args.selected = select(args.scenarios)
    except ValueError as e:
        parser.error(str(e))
    return args


def stale_install() -> list[str]:
    """Source files of nfork that differ from the installed copy twistd runs."""
    located = subprocess.run(
        [
            sys.executable,
            "-c",
            "import nfork, os; print(os.path.dirname(nfork.__file__))",
        ],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )
    installed = Path(located.stdout.strip()) if located.returncode == 0 else None
    if installed is None or not installed.is_dir():
        return ["nfork is not installed in this Python"]
    source = REPO / "nfork"
    if installed.resolve() == source.resolve():
        return []
    return [
        str(path.relative_to(REPO))
        for path in sorted(source.rglob("*.py"))
        if not (installed / path.relative_to(source)).is_file()
        or (installed / path.relative_to(source)).read_bytes() != path.read_bytes()
    ]


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def environment(tools: Tools) -> dict[str, Any]:
    """Where the figures come from: machine, tool versions, nfork's commit."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(REPO), "status", "--porcelain", "nfork"])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _version([tools.nginx or "nginx", "-v"]),
        "wrk": _version([tools.wrk or "wrk", "-v"]).split(" Copyright")[0],
        "nfork_commit": commit,
        "nfork_local_changes": dirty not in ("", "unknown"),
    }


@define
class Bench:
    """Runs scenarios against one set of backends and collects the results."""

    args: argparse.Namespace
    tools: Tools
    supervisor: Supervisor
    backends: Backends
    control: bool
    stamp: str
    runs: list[RunResult] = field(factory=list)

    def run_all(self) -> None:
        """Every selected scenario, round after round."""
        scenarios: tuple[Scenario, ...] = self.args.selected
        for round_number in range(1, self.args.rounds + 1):
            for scenario in scenarios:
                _say(
                    f"round {round_number}/{self.args.rounds}: scenario {scenario.id} "
                    f"({scenario.proxy}, {scenario.title}) ..."
                )
                run = self.run_one(scenario, round_number)
                self.runs.append(run)
                _say(
                    f"    {run.wrk.requests_per_second:,.0f} req/s, "
                    f"p99 {run.wrk.latency_ms['p99']:.2f} ms, "
                    f"proxy CPU {run.proxy_cpu_percent or 0:.0f}%, "
                    f"errors {run.wrk.errors}, missing copies {run.missing()}"
                )

    def _start_proxy(self, scenario: Scenario, round_number: int) -> Proxy | None:
        args = self.args
        ports = self.backends.ports
        if scenario.proxy == "nfork":
            profile = None
            if args.profile:
                profile = args.results_dir / (
                    f"profile-{self.stamp}-s{scenario.id}-r{round_number}.pstats"
                )
                profile.parent.mkdir(parents=True, exist_ok=True)
            settings = NforkSettings(
                idle_conn=args.idle_conn,
                max_inflight=args.max_inflight,
                timeout=args.timeout,
                control=self.control,
                profile_path=profile,
            )
            return start_nfork(self.supervisor, scenario, ports, settings)
        if scenario.proxy == "nginx":
            assert self.tools.nginx is not None
            return start_nginx_mirror(
                self.supervisor,
                self.tools.nginx,
                scenario,
                ports,
                args.idle_conn,
                args.timeout,
            )
        return None

    def run_one(self, scenario: Scenario, round_number: int) -> RunResult:
        """Start the proxy, load it, measure, stop it."""
        proxy = self._start_proxy(scenario, round_number)
        try:
            result = self._measure(scenario, round_number, proxy)
        finally:
            clean = self.supervisor.stop(proxy.process) if proxy else None
        if proxy is None or scenario.proxy != "nfork":
            return evolve(result, clean_stop=clean)
        if self.args.profile:
            self._summarize_profile(scenario, round_number)
        return evolve(
            result, clean_stop=clean, log_problems=proxy.process.log_problems()
        )

    def _measure(
        self, scenario: Scenario, round_number: int, proxy: Proxy | None
    ) -> RunResult:
        """One wrk run through C{proxy} (or straight to the active backend)."""
        args = self.args
        backends = self.backends
        port = proxy.port if proxy else backends.ports[scenario.active]
        proxy_pids = process_tree(proxy.process.pid) if proxy else []
        backend_ports = {name: backends.ports[name] for name in scenario.outbounds}
        peak = dict.fromkeys(scenario.outbounds, 0)

        def sample_connections(load: subprocess.Popen[str]) -> None:
            start = time.monotonic()
            for fraction in (0.25, 0.5, 0.75):
                wait = start + fraction * args.duration - time.monotonic()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    load.wait(max(wait, 0))
                    return
                counts = established_connections(list(backend_ports.values()))
                for name, backend_port in backend_ports.items():
                    peak[name] = max(peak[name], counts[backend_port])

        before = backends.received()
        backend_meters = {
            role: CPUMeter.start(pids) for role, pids in backends.pids().items()
        }
        proxy_meter = CPUMeter.start(proxy_pids)
        machine = MachineMeter.start()
        assert self.tools.wrk is not None
        load = wrk.run(
            wrk.command(
                self.tools.wrk,
                f"http://127.0.0.1:{port}{scenario.path}",
                args.duration,
                args.connections,
                args.threads,
            ),
            args.duration,
            during=sample_connections,
        )
        busy, steal, harness = machine.percent()
        proxy_cpu_each = proxy_meter.percent_each() if proxy else None
        proxy_cpu = sum(proxy_cpu_each) if proxy_cpu_each is not None else None
        backend_cpu = {role: m.percent() for role, m in backend_meters.items()}
        ours = (proxy_cpu or 0.0) + sum(backend_cpu.values()) + harness
        after = self._settle()
        stats = proxy.stats() if proxy else None
        return RunResult(
            scenario=scenario.id,
            round=round_number,
            wrk=load.result,
            wrk_cpu_percent=load.cpu_percent,
            proxy_cpu_percent=proxy_cpu,
            proxy_cpu_split=proxy_cpu_each,
            proxy_peak_rss_bytes=peak_rss_bytes(proxy_pids) if proxy else None,
            received={name: after[name] - before[name] for name in scenario.outbounds},
            dropped=proxy.dropped(scenario.shadows, stats) if proxy else None,
            peak_connections=peak,
            backend_cpu_percent=backend_cpu,
            other_cpu_percent=max(0.0, busy - ours - load.cpu_percent),
            steal_percent=steal,
            proxy_stats=stats,
        )

    def _settle(self, limit: float = 5.0) -> dict[str, Received]:
        """Backend counts once they stop moving (copies still on their way)."""
        deadline = time.monotonic() + limit
        previous = self.backends.received()
        stable = 0
        while time.monotonic() < deadline and stable < 2:
            time.sleep(0.1)
            current = self.backends.received()
            stable = stable + 1 if current == previous else 0
            previous = current
        return previous

    def _summarize_profile(self, scenario: Scenario, round_number: int) -> None:
        path = self.args.results_dir / (
            f"profile-{self.stamp}-s{scenario.id}-r{round_number}.pstats"
        )
        if not path.exists():
            _say(f"    no profile written (nfork did not exit cleanly): {path}")
            return
        text = StringIO()
        profile = pstats.Stats(str(path), stream=text)
        profile.sort_stats("tottime").print_stats(30)
        profile.sort_stats("cumulative").print_stats(30)
        path.with_suffix(".txt").write_text(text.getvalue())
        _say(f"    profile: {path.with_suffix('.txt')}")


def _processes(selected: Sequence[Scenario]) -> str:
    """How many nfork processes the scenarios run: one, but with C{--workers}."""
    several = [s for s in selected if s.workers is not None and s.workers > 1]
    if not several:
        return "One nfork process"
    each = ", ".join(f"{s.id}: a parent and {s.workers} workers" for s in several)
    return f"One nfork process, but with `--workers` ({each})"


def _header(
    args: argparse.Namespace,
    env: dict[str, Any],
    started: datetime,
    control: bool,
    stale: list[str],
) -> list[str]:
    rounds = f"median of {args.rounds} rounds" if args.rounds > 1 else "1 round"
    lines = [
        f"## nfork benchmark, {started.strftime('%Y-%m-%d %H:%M')} UTC",
        "",
        f"{rounds}; every run is `wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s --latency` on 127.0.0.1. {_processes(args.selected)} "
        f"(CPython {env['python']}); nginx ({env['nginx'].split('/')[-1]}) runs "
        "`worker_processes 1`, as the mirror proxy and as the backends "
        "(the slow one with `echo_sleep`). "
        f"nfork: idleConn {args.idle_conn}, timeout {args.timeout:g}s, "
        f"shadows maxInflight {args.max_inflight}; nginx mirror: keepalive "
        f"{args.idle_conn} per upstream, proxy timeouts {args.timeout:g}s. "
        f"Machine: {env['cpus']} CPUs ({env['cpu_model']}), Linux {env['kernel']}. "
        f"nfork {env['nfork_commit']}"
        + (" with local changes" if env["nfork_local_changes"] else "")
        + ".",
    ]
    if not control:
        lines += [
            "",
            "nfork has no `--control` API in this build: shadow drops are not "
            "known, and the duplication check counts them as missing.",
        ]
    if args.profile:
        lines += ["", "**nfork ran under cProfile: its figures are not comparable.**"]
    if stale:
        lines += [
            "",
            "**Warning: the installed nfork differs from the source tree "
            f"({', '.join(stale[:5])}); run `make .venv/.installed`.**",
        ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 when wrk or nginx is missing."""
    args = parse_args(argv)
    tools = find_tools()
    if tools.missing:
        sys.stderr.write(tools.message())
        return 2
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    stale = stale_install()
    for problem in stale[:1]:
        _say(f"warning: installed nfork differs from the source tree ({problem}...)")
    env = environment(tools)
    control = nfork_has_control()
    workdir = Path(tempfile.mkdtemp(prefix="nfork-bench-"))
    keep = args.keep_workdir
    t0 = time.monotonic()
    try:
        with terminate_as_interrupt(), supervised(workdir) as supervisor:
            assert tools.nginx is not None and tools.echo_module is not None
            backends = Backends(supervisor, tools.nginx, tools.echo_module)
            backends.start(backends_used(args.selected))
            bench = Bench(args, tools, supervisor, backends, control, stamp)
            bench.run_all()
    except KeyboardInterrupt:
        _say("interrupted: every process started was stopped")
        return 130
    except (ProcessFailed, WrkOutputError) as e:
        keep = True
        _say(f"benchmark failed: {e}")
        return 1
    finally:
        if keep:
            _say(f"configs and logs of the processes: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    _say(f"done in {time.monotonic() - t0:.0f} s")
    summaries: dict[str, Summary] = {}
    for scenario in args.selected:
        runs = [run for run in bench.runs if run.scenario == scenario.id]
        summaries[scenario.id] = summarize(runs)
    parameters = {
        "scenarios": [s.id for s in args.selected],
        "rounds": args.rounds,
        "duration": args.duration,
        "connections": args.connections,
        "threads": args.threads,
        "idle_conn": args.idle_conn,
        "max_inflight": args.max_inflight,
        "timeout": args.timeout,
        "profile": args.profile,
        "nfork_control_api": control,
        "stale_install": stale,
    }
    path = write_json(args.results_dir, started, parameters, env, bench.runs, summaries)
    sys.stdout.write(
        markdown(summaries, _header(args, env, started, control, stale), args.rounds)
    )
    _say(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
