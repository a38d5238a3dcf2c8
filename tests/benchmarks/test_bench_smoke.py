"""The benchmark harness (C{benchmarks/}) runs in the suite so that it cannot rot.

C{make bench} itself is not part of C{make test}.  Here its parsing and
reporting run on recorded wrk output, its mute Python backend serves real
requests, and its nfork configs go through nfork's own loader.  Without wrk
the harness must refuse to run and say exactly what to install.  On a machine
with wrk and nginx (and nginx's echo module), a 1-second run of five
scenarios (small and 1 MiB answers) goes through every code path end to end;
without them, the tests that need them are skipped, with the install line as
the reason.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import attrs
import pytest

from benchmarks import run, scenarios, wrk
from benchmarks.nginx import (
    backends_config,
    json_answer,
    large_answer_root,
    mirror_config,
    worker_user,
    write_large_answer,
)
from benchmarks.processes import (
    CPUMeter,
    Supervisor,
    established_connections,
    peak_rss_bytes,
    process_tree,
)
from benchmarks.report import RunResult, markdown, summarize, write_json
from benchmarks.stack import (
    Backends,
    NforkProxy,
    NforkSettings,
    Received,
    nfork_config,
)
from benchmarks.tools import INSTALL_COMMAND, Tools, find_tools
from nfork.config import load_config
from tests.support.waiting import poll_until

# Recorded from wrk 4.1.0 (Debian bookworm) against nginx.
WRK_FAST = """\
Running 2s test @ http://127.0.0.1:47123/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   639.02us  184.53us   3.16ms   78.16%
    Req/Sec    38.97k     3.69k   47.15k    75.00%
  Latency Distribution
     50%  624.00us
     75%  716.00us
     90%  833.00us
     99%    1.23ms
  77584 requests in 2.00s, 11.25MB read
Requests/sec:  38721.24
Transfer/sec:      5.61MB
"""

# Recorded against a backend answering after 1.5 s; the socket errors line
# (absent from that run) is wrk's format with made-up numbers.
WRK_SLOW_WITH_ERRORS = """\
Running 3s test @ http://127.0.0.1:36611/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.50s    30.45us   1.50s    62.50%
    Req/Sec     2.00      0.00     2.00    100.00%
  Latency Distribution
     50%    1.50s
     75%    1.50s
     90%    1.50s
     99%    1.50s
  8 requests in 3.01s, 1.30KB read
  Socket errors: connect 0, read 2, write 0, timeout 4
  Non-2xx or 3xx responses: 3
Requests/sec:      2.66
Transfer/sec:     441.36B
""".replace("1.50s\n", "1.50s \n")  # wrk pads a time in seconds with a space


def test_wrk_report_is_parsed() -> None:
    result = wrk.parse(WRK_FAST)
    assert result.requests == 77584
    assert result.seconds == pytest.approx(2.0)
    assert result.requests_per_second == pytest.approx(38721.24)
    assert result.latency_ms == pytest.approx(
        {"p50": 0.624, "p75": 0.716, "p90": 0.833, "p99": 1.23}
    )
    assert result.errors == 0
    assert result.bytes_read == round(11.25 * 2**20)
    assert result.mib_per_second == pytest.approx(11.25 / 2.0)


def test_wrk_seconds_and_errors_are_parsed() -> None:
    result = wrk.parse(WRK_SLOW_WITH_ERRORS)
    assert result.latency_ms["p99"] == pytest.approx(1500.0)
    assert result.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 4}
    assert result.non_2xx == 3
    assert result.errors == 9
    assert result.bytes_read == round(1.30 * 1024)


def test_wrk_output_without_latency_is_refused() -> None:
    without = WRK_FAST.split("  Latency Distribution")[0] + "Requests/sec: 1.0\n"
    with pytest.raises(wrk.WrkOutputError, match="--latency"):
        wrk.parse(without)


def test_wrk_command_is_the_issue_load() -> None:
    assert wrk.command("wrk", "http://127.0.0.1:1/", 10) == [
        "wrk",
        "-t1",
        "-c32",
        "-d10s",
        "--latency",
        "http://127.0.0.1:1/",
    ]


def test_scenarios_are_selected_by_id() -> None:
    assert [s.id for s in scenarios.select("6,3")] == [
        "3",
        "6.3",
        "6.4",
        "6.5",
        "6.7",
    ]
    assert [s.id for s in scenarios.select("6.7, 7")] == ["7", "6.7"]
    assert len(scenarios.select(None)) == 14
    with pytest.raises(ValueError, match=r"unknown scenario 12; .* \(6 = 6.3,6.4"):
        scenarios.select("3,12")


def test_large_answer_scenarios_pair_nfork_with_nginx_on_the_1mib_path() -> None:
    by_id = {s.id: s for s in scenarios.SCENARIOS}
    nfork, nginx = by_id["7"], by_id["6.7"]
    assert (nfork.proxy, nfork.peer, nginx.proxy, nginx.peer) == (
        "nfork",
        "6.7",
        "nginx",
        "7",
    )
    for scenario in (nfork, nginx):
        assert scenario.outbounds == scenarios.FAST
        assert scenario.path == scenarios.LARGE_ANSWER_PATH == "/1mib"
    # Every other scenario asks for the 100-byte answer, but the JSON pair.
    assert {
        s.path for s in scenarios.SCENARIOS if s.id not in ("7", "6.7", "8", "9")
    } == {"/"}


def test_json_scenarios_differ_only_by_the_comparison() -> None:
    by_id = {s.id: s for s in scenarios.SCENARIOS}
    plain, compared = by_id["8"], by_id["9"]
    assert plain.path == compared.path == scenarios.JSON_ANSWER_PATH
    assert plain.outbounds == compared.outbounds == scenarios.FAST
    assert (plain.compare, compared.compare) == (False, True)
    ports = {name: 10000 + i for i, name in enumerate(scenarios.BACKENDS)}
    settings = NforkSettings(idle_conn=8, max_inflight=7, timeout=1.0, control=False)
    (inbound,) = load_config(json.dumps(nfork_config(compared, ports, 9999, settings)))
    assert inbound.compare is not None
    assert inbound.compare.candidates == ("fast3",)
    assert inbound.compare.baseline == "fast2"
    (inbound,) = load_config(json.dumps(nfork_config(plain, ports, 9999, settings)))
    assert inbound.compare is None


def test_json_answer_is_about_1_kib_of_json_with_fresh_noise() -> None:
    text = json_answer()
    document = json.loads(
        text.replace("$request_id", "0f" * 16).replace("$msec", "1.5")
    )
    assert document["id"] == "0f" * 16 and document["generatedAt"] == 1.5
    assert 900 <= len(text) <= 1300
    assert "'" not in text  # inside nginx's single-quoted return


def test_fast_backends_serve_a_1mib_file_readable_by_the_worker(
    tmp_path: Path,
) -> None:
    path = write_large_answer(tmp_path)
    assert path.read_bytes().startswith(b"large backend answer: x")
    assert path.stat().st_size == scenarios.LARGE_ANSWER_BYTES == 2**20
    assert path.parent == large_answer_root(tmp_path)
    text = backends_config(tmp_path, {"fast1": 8001, "fast2": 8002})
    assert text.count("location = /1mib {") == 2
    assert text.count(f"location = {scenarios.JSON_ANSWER_PATH} {{") == 2
    assert text.count(f"root {path.parent};") == 2
    assert text.count("sendfile on;") == 2
    # Started by root, nginx's workers would run as nobody, who cannot open
    # the harness's private workdir: they run as the harness's user then.
    user = worker_user()
    if os.geteuid() == 0:
        assert user is not None and user.startswith("root ")
        assert f"\nuser {user};\n" in "\n" + text
        assert f"\nuser {user};\n" in "\n" + mirror_config(
            tmp_path, 8000, 8001, [8002], keepalive=8, timeout=1
        )
    else:
        assert user is None
        assert "\nuser " not in "\n" + text


def test_nfork_configs_are_valid_nfork_configs() -> None:
    ports = {name: 10000 + i for i, name in enumerate(scenarios.BACKENDS)}
    settings = NforkSettings(
        idle_conn=512, max_inflight=700, timeout=1.0, control=False
    )
    for scenario in scenarios.SCENARIOS:
        if scenario.proxy != "nfork":
            continue
        text = json.dumps(nfork_config(scenario, ports, 9999, settings))
        (inbound,) = load_config(text)
        assert inbound.active == scenario.active
        assert [o.name for o in inbound.outbounds] == list(scenario.outbounds)
        assert inbound.idle_conn == 512
        assert inbound.timeout == 1.0
        for outbound in inbound.outbounds:
            if outbound.name in scenario.shadows:
                assert outbound.max_inflight == 700


def test_nginx_configs_mirror_every_shadow(tmp_path: Path) -> None:
    text = mirror_config(tmp_path, 8000, 8001, [8002, 8003], keepalive=64, timeout=1)
    assert text.count("mirror /_mirror") == 2
    assert "mirror_request_body on;" in text
    assert text.count("keepalive 64;") == 3
    assert 'proxy_set_header Connection "";' in text
    assert "proxy_read_timeout 1000ms;" in text
    assert "worker_processes 1;" in text
    backends = backends_config(tmp_path, {"fast1": 8001, "fast2": 8002})
    assert backends.count("access_log") == 2
    assert "load_module" not in backends
    assert "echo" not in backends


def test_the_slow_backend_is_nginx_with_echo_sleep(tmp_path: Path) -> None:
    module = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
    text = backends_config(tmp_path, {"fast1": 8001}, {"slow": 8004}, 0.2, module)
    assert text.startswith(f"load_module {module};\n")
    assert text.count("access_log") == 2
    assert f"access_log {tmp_path}/slow.log count;" in text
    assert "echo_sleep 0.2;" in text
    # nginx with echo built in needs no load_module line.
    built_in = backends_config(tmp_path, {"fast1": 8001}, {"slow": 8004}, 0.05, "")
    assert "load_module" not in built_in
    assert "echo_sleep 0.05;" in built_in


def _run(sid: str, round_: int, rps: float, p99: float, **kw: object) -> RunResult:
    info = {s.id: s for s in scenarios.SCENARIOS}[sid]
    active = int(rps * 10)
    received = kw.pop("received", None) or {
        name: Received(active, 32) for name in info.outbounds
    }
    return RunResult(
        scenario=sid,
        round=round_,
        wrk=wrk.WrkResult(
            requests=active,
            seconds=10.0,
            requests_per_second=rps,
            latency_ms={"p50": p99 / 4, "p75": p99 / 3, "p90": p99 / 2, "p99": p99},
            socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": 0},
            non_2xx=0,
            bytes_read=active * 2**10,
        ),
        wrk_cpu_percent=30.0,
        proxy_cpu_percent=100.0,
        proxy_peak_rss_bytes=50 * 2**20,
        received=received,  # type: ignore[arg-type]
        dropped=kw.pop("dropped", dict.fromkeys(info.shadows, 0)),  # type: ignore[arg-type]
        peak_connections=dict.fromkeys(info.outbounds, 32),
        backend_cpu_percent={"nginx-backends": 10.0},
        clean_stop=True,
    )


def test_report_has_medians_ratios_and_targets(tmp_path: Path) -> None:
    runs = [
        _run("3", 1, 3000, 20.0),
        _run("3", 2, 3300, 10.0),
        _run("3", 3, 2700, 30.0),
        _run("6.3", 1, 6000, 10.0),
        _run("5", 1, 2900, 25.0),
    ]
    summaries = {
        sid: summarize([r for r in runs if r.scenario == sid])
        for sid in ("3", "5", "6.3")
    }
    assert summaries["3"].requests_per_second == 3000
    assert summaries["3"].p99_ms == 20.0
    assert summaries["3"].spread_percent == pytest.approx(10.0)
    text = markdown(summaries, ["## header"], rounds=3)
    assert "| 3 | 3 outbounds | nfork | 3,000 ±10% | 2.93 |" in text
    assert "| 3 vs 6.3 | 3,000 | 6,000 | 0.50x |" in text
    assert "scenario 3 req/s >= 0.6x nginx mirror: 0.50x (NOT met)" in text
    assert "scenario 5 req/s >= 0.9x scenario 3: 0.97x (met)" in text
    assert "scenario 5 p99 <= 1.5x scenario 3: 1.25x (met)" in text

    path = write_json(tmp_path, datetime.now(timezone.utc), {}, {}, runs, summaries)
    document = json.loads(path.read_text())
    assert path.parent == tmp_path
    assert len(document["runs"]) == 5
    assert document["summary"]["3"]["requests_per_second"] == 3000
    assert document["comparisons"][0]["requests_per_second"] == 0.5
    assert document["runs"][0]["received"]["fast1"] == {
        "requests": 30000,
        "connections": 32,
    }


def test_duplication_check_counts_what_neither_arrived_nor_was_dropped() -> None:
    received = {
        "fast1": Received(1000, 32),
        "fast2": Received(1000, 32),
        "blackhole": Received(700, 700),
    }
    shed = _run(
        "5", 1, 100, 5.0, received=received, dropped={"fast2": 0, "blackhole": 300}
    )
    assert shed.missing() == {"fast2": 0, "blackhole": 0}
    lost = _run(
        "5", 1, 100, 5.0, received=received, dropped={"fast2": 0, "blackhole": 0}
    )
    assert lost.missing() == {"fast2": 0, "blackhole": 300}
    unknown = _run("5", 1, 100, 5.0, received=received, dropped=None)
    text = markdown({"5": summarize([unknown])}, [], rounds=1)
    assert "+300 missing (drops unknown)" in text


def test_drops_come_from_nforks_stats(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path)
    process = supervisor.start("fake-nfork", [sys.executable, "-c", "pass"])
    proxy = NforkProxy(port=1, process=process, control_port=None)
    stats = {
        "bench": {
            name: {"dropped": 0, "total": {"dropped": dropped, "requests": 5}}
            for name, dropped in (("fast1", 0), ("fast2", 0), ("blackhole", 42))
        }
    }
    assert proxy.dropped(("fast2", "blackhole"), stats) == {
        "fast2": 0,
        "blackhole": 42,
    }
    assert proxy.dropped(("fast2",), None) is None
    assert proxy.dropped(("fast2",), {"bench": {}}) is None
    assert proxy.stats() is None
    supervisor.stop_all()


def test_nfork_warnings_and_unclean_stops_are_reported(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path)
    process = supervisor.start(
        "noisy",
        [
            sys.executable,
            "-c",
            "print('2026-01-01T00:00:00+0000 [nfork.x#info] fine');"
            "print('2026-01-01T00:00:00+0000 [nfork.x#error] broken pipe')",
        ],
    )
    process.popen.wait()
    problems = process.log_problems()
    assert problems == ["2026-01-01T00:00:00+0000 [nfork.x#error] broken pipe"]
    supervisor.stop_all()
    noisy = attrs.evolve(
        _run("3", 1, 100, 5.0), log_problems=problems, clean_stop=False
    )
    text = markdown({"3": summarize([noisy])}, [], rounds=1)
    assert "Scenario 3: nfork logged 1 warning or error line(s)" in text
    assert "broken pipe" in text
    assert "did not exit within 5 s of SIGTERM" in text


def test_missing_tools_are_named_with_the_install_line(tmp_path: Path) -> None:
    tools = find_tools(path=str(tmp_path), extra_dirs=())
    assert tools.missing == ("wrk", "nginx")
    assert INSTALL_COMMAND == (
        "apt-get install -y wrk nginx-light libnginx-mod-http-echo"
    )
    assert INSTALL_COMMAND in tools.message()
    (tmp_path / "wrk").write_text("#!/bin/sh\n")
    (tmp_path / "wrk").chmod(0o755)
    assert find_tools(path=str(tmp_path), extra_dirs=()).missing == ("nginx",)


def _fake_nginx(directory: Path, built_with: str) -> None:
    """An C{nginx} script whose C{-V} prints C{built_with}, as nginx does, on stderr."""
    script = directory / "nginx"
    script.write_text(f"#!/bin/sh\necho 'configure arguments: {built_with}' >&2\n")
    script.chmod(0o755)


def test_nginx_without_the_echo_module_is_refused(tmp_path: Path) -> None:
    bin_dir, modules = tmp_path / "bin", tmp_path / "modules"
    bin_dir.mkdir()
    modules.mkdir()
    (bin_dir / "wrk").write_text("#!/bin/sh\n")
    (bin_dir / "wrk").chmod(0o755)
    _fake_nginx(bin_dir, f"--with-http_ssl_module --modules-path={modules}")
    tools = find_tools(path=str(bin_dir), extra_dirs=())
    assert tools.missing == ("nginx's echo module",)
    assert INSTALL_COMMAND in tools.message()
    (modules / "ngx_http_echo_module.so").write_bytes(b"")
    tools = find_tools(path=str(bin_dir), extra_dirs=())
    assert tools.missing == ()
    assert tools.echo_module == str(modules / "ngx_http_echo_module.so")
    _fake_nginx(bin_dir, "--add-module=/build/echo-nginx-module-0.63")
    assert find_tools(path=str(bin_dir), extra_dirs=()).echo_module == ""


def test_harness_refuses_to_run_without_wrk(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert run.main(["--quick", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "benchmark: missing wrk" in err
    assert f"sudo apt-get update && sudo {INSTALL_COMMAND}" in err
    assert list(tmp_path.iterdir()) == []


def _http_get(sock: socket.socket) -> None:
    sock.sendall(b"GET /x HTTP/1.1\r\nHost: b\r\n\r\n")


def test_mute_backend_counts_requests_and_never_answers(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path)
    backends = Backends(supervisor, nginx_binary="unused")
    try:
        backends.start_blackhole()
        port = backends.ports["blackhole"]
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            _http_get(sock)
            _http_get(sock)
            with pytest.raises(TimeoutError):
                sock.recv(4096)
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            _http_get(sock)
            with pytest.raises(TimeoutError):
                sock.recv(4096)
        received = backends.received()
        assert received["blackhole"] == Received(3, 2)
        pids = [p.pid for p in supervisor.processes]
        meter = CPUMeter.start(pids)
        assert meter.percent() >= 0
        assert peak_rss_bytes(pids) > 1_000_000
        assert process_tree(pids[0]) == [pids[0]]
        assert established_connections([port]) == {port: 0}
    finally:
        processes = list(supervisor.processes)
        supervisor.stop_all()
    assert all(p.popen.returncode is not None for p in processes)


def test_nginx_backends_answer_at_once_or_after_the_delay(
    tmp_path: Path, nginx_tools: Tools
) -> None:
    """Needs nginx and its echo module (skipped without them)."""
    assert nginx_tools.nginx is not None and nginx_tools.echo_module is not None
    supervisor = Supervisor(tmp_path)
    backends = Backends(
        supervisor, nginx_tools.nginx, nginx_tools.echo_module, slow_delay=0.3
    )
    try:
        backends.start(["fast1", "slow"])
        for name, least, most in (("fast1", 0.0, 0.2), ("slow", 0.29, 2.0)):
            port = backends.ports[name]
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                for _ in range(2):
                    sent = time.monotonic()
                    _http_get(sock)
                    answer = b""
                    # The fast body ends "x\n"; the slow answer is chunked.
                    while not answer.endswith((b"x\n", b"\r\n0\r\n\r\n")):
                        answer += sock.recv(4096)
                    waited = time.monotonic() - sent
                    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
                    assert least <= waited < most, (name, waited)
        # nginx logs a request just after answering it: give the lines a moment.
        expected = {"fast1": Received(2, 1), "slow": Received(2, 1)}

        def counts() -> dict[str, Received]:
            received = backends.received()
            return {name: received[name] for name in expected}

        poll_until(lambda: counts() == expected, timeout=5)
        assert counts() == expected
    finally:
        supervisor.stop_all()


def test_fast_backends_answer_1mib_with_its_length(
    tmp_path: Path, nginx_tools: Tools
) -> None:
    """Needs nginx (skipped without it): the file scenarios 7 and 6.7 fetch."""
    assert nginx_tools.nginx is not None
    supervisor = Supervisor(tmp_path)
    backends = Backends(supervisor, nginx_tools.nginx)
    try:
        backends.start(["fast1"])
        port = backends.ports["fast1"]
        expected = (tmp_path / "www" / "1mib").read_bytes()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for _ in range(2):  # the same connection serves it twice
                sock.sendall(b"GET /1mib HTTP/1.1\r\nHost: b\r\n\r\n")
                answer = b""
                for _ in range(10_000):  # bounded: 1 MiB arrives in far fewer reads
                    head, _, body = answer.partition(b"\r\n\r\n")
                    if len(body) >= len(expected):
                        break
                    data = sock.recv(256 * 1024)
                    assert data, answer[:200]
                    answer += data
                assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
                assert b"\r\nContent-Length: 1048576\r\n" in head, head
                assert body == expected
        poll_until(lambda: backends.received()["fast1"] == Received(2, 1), timeout=5)
        assert backends.received()["fast1"] == Received(2, 1)
    finally:
        supervisor.stop_all()


def test_fast_backends_answer_json_with_a_fresh_id_each_time(
    tmp_path: Path, nginx_tools: Tools
) -> None:
    """Needs nginx (skipped without it): the answer scenarios 8 and 9 fetch."""
    assert nginx_tools.nginx is not None
    supervisor = Supervisor(tmp_path)
    backends = Backends(supervisor, nginx_tools.nginx)
    try:
        backends.start(["fast1"])
        port = backends.ports["fast1"]
        ids = set()
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(
                    b"GET "
                    + scenarios.JSON_ANSWER_PATH.encode()
                    + b" HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
                )
                answer = b""
                for _ in range(1000):  # bounded: 1 KiB arrives in a read or two
                    data = sock.recv(65536)
                    if not data:
                        break
                    answer += data
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
            assert b"\r\nContent-Type: application/json\r\n" in head, head
            document = json.loads(body)
            assert document["user"]["id"] == 42 and len(document["items"]) == 10
            ids.add(document["id"])
        assert len(ids) == 2
    finally:
        supervisor.stop_all()


def test_backend_exits_when_the_harness_goes(tmp_path: Path) -> None:
    backend = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.backends"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert backend.stdout is not None and backend.stdin is not None
    assert backend.stdout.readline().startswith(b"port ")
    backend.stdin.close()
    assert backend.wait(10) == 0
    backend.stdout.close()


def test_benchmark_runs_small_and_large_answers_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_tools: Tools
) -> None:
    """A 1-second run of scenarios 1, 4, 6.5, 7 and 6.7: nfork, nginx, every
    backend, 100-byte and 1 MiB answers.

    Needs wrk, nginx and its echo module (skipped without them); the
    refusal without them is test_harness_refuses_to_run_without_wrk.
    """
    argv = ["--scenarios", "1,4,6.5,7,6.7", "--rounds", "1", "--duration", "1"]
    argv += ["--results-dir", str(tmp_path)]
    code = run.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    (path,) = tmp_path.glob("bench-*.json")
    document = json.loads(path.read_text())
    summary = document["summary"]
    assert set(summary) == {"1", "4", "6.5", "7", "6.7"}
    for sid, figures in summary.items():
        assert figures["requests_per_second"] > 0, sid
        assert figures["client_errors"] == 0, (sid, figures, err)
    # Every copy reached the shadows or was counted as dropped: the slow one
    # through nfork, the mute one through nginx's mirror (which never sheds).
    assert summary["4"]["missing"] == {"fast2": 0, "slow": 0}
    # (nfork may shed copies past maxInflight; they are counted as dropped.)
    dropped = summary["4"]["dropped"] or {}
    assert (
        summary["4"]["received"]["slow"] + dropped.get("slow", 0)
        == summary["4"]["received"]["fast1"]
    )
    assert summary["6.5"]["received"]["blackhole"] > 0
    assert summary["4"]["proxy_cpu_percent"] > 0
    assert summary["4"]["proxy_peak_rss_mib"] > 1
    for run_ in document["runs"]:
        assert run_["clean_stop"] in (True, None)
    assert "| 4 | 3 outbounds, 200 ms shadow | nfork |" in out
    # The large answers: every copy reached both shadows through nfork, and
    # each answer wrk got was the 1 MiB file (wrk also counts the bytes of
    # the answers cut off at the end, up to one per connection).
    assert summary["7"]["missing"] == {"fast2": 0, "fast3": 0}
    assert summary["6.7"]["received"]["fast2"] > 0
    for run_ in document["runs"]:
        load = run_["wrk"]
        per_answer = load["bytes_read"] / load["requests"]
        if run_["scenario"] in ("7", "6.7"):
            assert 2**20 <= per_answer < 2**20 * (1 + 40 / load["requests"]), run_
        else:
            assert per_answer < 1024, run_
    assert "| 7 vs 6.7 |" in out
