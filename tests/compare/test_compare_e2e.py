"""End to end: the real twistd compares a candidate with real JSON backends.

A primary, a baseline and a candidate (L{tests.support.json_app}, each its
own process) answer JSON on a few endpoints; every answer carries a random
id and the time.  The candidate has exactly two regressions.  After a few
thousand requests through nfork, the report must name exactly those as
differences, and the random fields only as noise (with a baseline) or not
at all (with an C{ignore} rule instead).
"""

from __future__ import annotations

import http.client
import json
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import inbound_json, write_config
from tests.support.files import recorded_lines, recording_files
from tests.support.json_app import NOISE, REGRESSIONS, VARIANTS
from tests.support.process import TwistdProcess

NFORK = Path(sys.executable).with_name("nfork")
"""The console script (`make test` installs nfork)."""

REQUESTS = 1500
"""Requests sent through each inbound."""


@pytest.fixture
def apps() -> Iterator[dict[str, int]]:
    """The three variants of the JSON API, by name, as ports."""
    processes = []
    ports = {}
    try:
        for variant in VARIANTS:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.json_app", variant],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            processes.append(process)
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("port "), line
            ports[variant] = int(line.split()[1])
        yield ports
    finally:
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _traffic(port: int, count: int, seed: int) -> int:
    """Send C{count} requests on one keep-alive connection; the JSON ones sent."""
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    compared = 0
    try:
        for _ in range(count):
            pick = rng.random()
            body = None
            if pick < 0.4:
                method, path = "GET", f"/users/{rng.randrange(1, 10**6)}"
            elif pick < 0.8:
                method, path = "GET", f"/orders/{rng.randrange(1, 10**6)}?page=2"
            elif pick < 0.95:
                method, path, body = "POST", "/search", b'{"q": "x"}'
            else:
                method, path = "GET", "/health"
            connection.request(method, path, body=body)
            response = connection.getresponse()
            response.read()
            assert response.status == 200, (path, response.status)
            compared += 1
    finally:
        connection.close()
    return compared


def _report(control: str, inbound: str, sent: int) -> dict[str, Any]:
    """The comparison report once every request sent was compared or skipped."""
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(f"{control}/v1/nfork/{inbound}/compare") as r:
            report: dict[str, Any] = json.loads(r.read())
        candidate = report["candidates"]["candidate"]
        if candidate["compared"] + candidate["skipped"] >= sent:
            return report
        assert time.monotonic() < deadline, report
        time.sleep(0.1)


def _verdicts(report: dict[str, Any], verdict: str) -> set[tuple[str, str]]:
    endpoints = report["candidates"]["candidate"]["endpoints"]
    return {
        (endpoint, field)
        for endpoint, figures in endpoints.items()
        for field, counts in figures["fields"].items()
        if counts["verdict"] == verdict
    }


def test_the_report_names_exactly_the_candidates_regressions(
    tmp_path: Path, apps: dict[str, int]
) -> None:
    out = {name: f"127.0.0.1:{port}" for name, port in apps.items()}
    config = write_config(
        tmp_path / "nfork.json",
        inbound_json(
            "withbaseline",
            out=out,
            active="primary",
            compare={"candidates": ["candidate"], "baseline": "baseline"},
        ),
        inbound_json(
            "withignore",
            out={"primary": out["primary"], "candidate": out["candidate"]},
            active="primary",
            compare={"ignore": list(NOISE)},
        ),
    )
    args = ["--config", str(config), "--control", "127.0.0.1:0"]
    with TwistdProcess(*args, cwd=str(tmp_path)) as twistd:
        match = twistd.wait_for_line(r"control API listening on .*port=(\d+)")
        control = f"http://127.0.0.1:{match.group(1)}"
        reports = {}
        for seed, inbound in enumerate(("withbaseline", "withignore")):
            sent = _traffic(twistd.listening_port(inbound), REQUESTS, seed)
            reports[inbound] = _report(control, inbound, sent)
        assert twistd.terminate() == 0
        assert "Traceback" not in twistd.output()

    for inbound, report in reports.items():
        candidate = report["candidates"]["candidate"]
        # The client sends as fast as it can: past the comparisons' share of
        # the CPU some requests may be skipped, never lost.
        assert candidate["compared"] + candidate["skipped"] == REQUESTS
        assert candidate["compared"] >= REQUESTS // 2, candidate["skipped"]
        assert _verdicts(report, "difference") == set(REGRESSIONS), inbound
        endpoints = candidate["endpoints"]
        for (endpoint, field), kind in REGRESSIONS.items():
            counts = endpoints[endpoint]["fields"][field]
            assert counts["kinds"] == {kind: counts["raw"]}, (inbound, field)
            assert counts["raw"] == endpoints[endpoint]["requests"]
        assert set(endpoints) == {
            "GET /users/:int",
            "GET /orders/:int",
            "POST /search",
            "GET /health",
        }
        assert endpoints["GET /health"]["differing"] == 0

    # With a baseline, the random fields are listed, as noise only.
    noise = _verdicts(reports["withbaseline"], "noise")
    for endpoint in ("GET /users/:int", "GET /orders/:int", "POST /search"):
        for field in NOISE:
            assert (endpoint, field) in noise
    # With an ignore rule, they are not compared at all.
    assert _verdicts(reports["withignore"], "noise") == set()


def test_a_recording_with_answers_replayed_to_the_candidate_fails_the_gate(
    tmp_path: Path, apps: dict[str, int]
) -> None:
    """Record the primary's answers with a file sink, replay to the candidate."""
    recording = tmp_path / "recording.jsonl"
    config = write_config(
        tmp_path / "nfork.json",
        inbound_json(
            "recorded",
            out={
                "primary": f"127.0.0.1:{apps['primary']}",
                "rec": {"addr": f"file://{recording}", "answers": True},
            },
            active="primary",
        ),
    )
    with TwistdProcess("--config", str(config), cwd=str(tmp_path)) as twistd:
        sent = _traffic(twistd.listening_port("recorded"), 300, seed=7)
        assert twistd.terminate() == 0
        assert "Traceback" not in twistd.output()
    records = [json.loads(line) for line in recorded_lines(recording)]
    assert len(records) == sent
    assert all(record["answer"]["status"] == 200 for record in records)

    settings = tmp_path / "compare.json"
    settings.write_text(json.dumps({"ignore": list(NOISE)}))
    command = [
        str(NFORK),
        "replay",
        *(str(file) for file in recording_files(recording)),
        "--to",
        f"http://127.0.0.1:{apps['candidate']}",
        "--rate",
        "2000",
        "--compare",
        "--compare-settings",
        str(settings),
        "--fail-on",
        "difference",
    ]
    replayed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    reported = {
        line.split()[1]
        for line in replayed.stdout.splitlines()
        if line.strip().startswith("difference ")
    }
    assert reported == {field for _, field in REGRESSIONS}, replayed.stdout
    # The same recording replayed to the primary's code passes the gate.
    command[command.index("--to") + 1] = f"http://127.0.0.1:{apps['baseline']}"
    replayed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "verdict: " in replayed.stdout
