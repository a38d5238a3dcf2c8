"""The worker scenarios (10 and 11): nfork's command line, the CPU split, the report.

The CPU accounting reads a fake C{/proc} (a parent with two workers, and a
process that is no relative), so these tests need neither wrk nor nginx.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from benchmarks import scenarios, wrk
from benchmarks.processes import (
    CPUMeter,
    cpu_seconds,
    listening_sockets,
    process_tree,
)
from benchmarks.report import RunResult, markdown, summarize
from benchmarks.run import parse_args
from benchmarks.stack import NforkSettings, Received, nfork_config, nfork_workers_args
from nfork.config import load_config

TICKS = 100  # what os.sysconf("SC_CLK_TCK") says on Linux


def _write_stat(proc: Path, pid: int, ppid: int, utime: int, stime: int) -> None:
    """A /proc/<pid>/stat line, with a command name that holds ') ('."""
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    rest = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 30
    (proc / str(pid) / "stat").write_text(f"{pid} (py) (x) {' '.join(rest)}\n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A parent (100) with two workers (102, 101), a grandchild, and a stranger."""
    root = tmp_path / "proc"
    _write_stat(root, 1, 0, 0, 0)
    _write_stat(root, 100, 1, 10, 5)
    _write_stat(root, 102, 100, 300, 100)
    _write_stat(root, 101, 100, 200, 50)
    _write_stat(root, 103, 101, 1, 1)
    _write_stat(root, 200, 1, 999, 999)
    (root / "self").mkdir()
    return root


def test_the_worker_scenarios_are_scenario_3_with_one_and_two_workers() -> None:
    by_id = {s.id: s for s in scenarios.SCENARIOS}
    three = by_id["3"]
    assert scenarios.WORKERS_PAIR == ("10", "11")
    for sid, workers in (("10", 1), ("11", 2)):
        scenario = by_id[sid]
        assert scenario.proxy == "nfork"
        assert (scenario.outbounds, scenario.path, scenario.compare) == (
            three.outbounds,
            three.path,
            three.compare,
        )
        assert scenario.workers == workers
        assert nfork_workers_args(scenario) == ["--workers", str(workers)]
    assert three.workers is None
    assert nfork_workers_args(three) == []
    assert [s.id for s in scenarios.select("11,10")] == ["10", "11"]
    assert [s.id for s in parse_args(["--scenarios", "10,11"]).selected] == [
        "10",
        "11",
    ]


def test_the_worker_scenarios_run_scenario_3s_config() -> None:
    ports = {name: 10000 + i for i, name in enumerate(scenarios.BACKENDS)}
    settings = NforkSettings(idle_conn=64, max_inflight=70, timeout=1.0, control=True)
    by_id = {s.id: s for s in scenarios.SCENARIOS}
    configs = [
        nfork_config(by_id[sid], ports, 9999, settings) for sid in ("3", "10", "11")
    ]
    assert configs[0] == configs[1] == configs[2]
    (inbound,) = load_config(json.dumps(configs[2]))
    assert inbound.active == "fast1"


def test_the_process_tree_lists_the_parent_then_its_workers(proc: Path) -> None:
    assert process_tree(100, proc) == [100, 101, 102, 103]
    assert process_tree(102, proc) == [102]
    assert process_tree(999, proc) == [999]  # gone: itself only


def test_cpu_is_read_per_process_and_summed(proc: Path) -> None:
    assert cpu_seconds([100, 101, 102], proc) == pytest.approx(6.65)
    assert cpu_seconds([100, 4242], proc) == pytest.approx(0.15)  # gone: 0


def test_the_cpu_meter_splits_the_proxy_cpu_by_process(proc: Path) -> None:
    start = CPUMeter.start([100, 101, 102], proc)
    # Two seconds of wall time later: the parent used 0.04 s, each worker 1.8 s
    # and 1.7 s, and the stranger a lot (not counted).
    meter = CPUMeter(start.pids, start.cpu_start, time.monotonic() - 2.0, proc)
    _write_stat(proc, 100, 1, 14, 5)
    _write_stat(proc, 101, 100, 290, 140)
    _write_stat(proc, 102, 100, 400, 170)
    _write_stat(proc, 200, 1, 5000, 5000)
    each = meter.percent_each()
    assert each == pytest.approx([2.0, 90.0, 85.0], abs=0.5)
    assert meter.percent() == pytest.approx(sum(each), abs=0.5)


def test_a_worker_gone_during_the_run_does_not_count_negative(proc: Path) -> None:
    meter = CPUMeter.start([100, 101], proc)
    (proc / "101" / "stat").unlink()
    assert meter.percent_each()[1] == 0.0


def test_listening_sockets_counts_one_per_sharing_process(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when\n"
    rows = [
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000",
        "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000",
        "   2: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000",
        "   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000",
        "   4: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000",
    ]
    (tmp_path / "net" / "tcp").write_text(header + "\n".join(rows) + "\n")
    # Two workers listen on 8080; the parent's reserved socket (07, closed)
    # and an established connection are not listeners.
    assert listening_sockets(8080, tmp_path) == 2
    assert listening_sockets(8081, tmp_path) == 1
    assert listening_sockets(8082, tmp_path) == 0


def _run(sid: str, round_: int, rps: float, split: list[float] | None) -> RunResult:
    info = {s.id: s for s in scenarios.SCENARIOS}[sid]
    active = int(rps * 5)
    return RunResult(
        scenario=sid,
        round=round_,
        wrk=wrk.WrkResult(
            requests=active,
            seconds=5.0,
            requests_per_second=rps,
            latency_ms={"p50": 2.0, "p75": 3.0, "p90": 4.0, "p99": 8.0},
            socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": 0},
            non_2xx=0,
            bytes_read=active * 200,
        ),
        wrk_cpu_percent=30.0,
        proxy_cpu_percent=None if split is None else sum(split),
        proxy_cpu_split=split,
        proxy_peak_rss_bytes=50 * 2**20,
        received={name: Received(active, 32) for name in info.outbounds},
        dropped=dict.fromkeys(info.shadows, 0),
        peak_connections=dict.fromkeys(info.outbounds, 32),
        backend_cpu_percent={"nginx-backends": 10.0},
        clean_stop=True,
    )


def test_the_report_gives_the_cpu_split_and_the_scaling_target() -> None:
    runs = [
        _run("10", 1, 4000, [99.0]),
        _run("10", 2, 4200, [98.0]),
        _run("10", 3, 4100, [97.0]),
        _run("11", 1, 5600, [2.0, 91.0, 89.0]),
        _run("11", 2, 5800, [3.0, 93.0, 85.0]),
        _run("11", 3, 5700, [1.0, 90.0, 87.0]),
    ]
    summaries = {
        sid: summarize([r for r in runs if r.scenario == sid]) for sid in ("10", "11")
    }
    assert summaries["11"].proxy_cpu_split == [2.0, 91.0, 87.0]
    assert summaries["11"].proxy_cpu_percent == pytest.approx(181.0)
    text = markdown(summaries, ["## header"], rounds=3)
    assert "| 11 | 3 outbounds, --workers 2 | nfork | 5,700 ±2% |" in text
    assert "- scenario 11: parent 2%, workers 91% + 87%" in text
    assert "- scenario 10:" not in text  # one process: nothing to split
    assert (
        "- scenario 11 (2 workers) req/s >= 1.3x scenario 10 (1 worker): "
        "1.39x (met)" in text
    )
    slower = {**summaries, "11": summarize([_run("11", 1, 4500, [1.0, 60.0, 60.0])])}
    assert "1.10x (NOT met)" in markdown(slower, [], rounds=1)


def test_rounds_with_a_different_number_of_processes_give_no_split() -> None:
    runs = [_run("11", 1, 5600, [2.0, 91.0, 89.0]), _run("11", 2, 5000, [2.0, 91.0])]
    summary = summarize(runs)
    assert summary.proxy_cpu_split is None
    assert "- scenario 11: n/a" in markdown({"11": summary}, [], rounds=2)
