"""twistd nfork --workers 2, end to end: spread, changes, restarts, signals."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

from tests.support.backends import ThreadedBackend
from tests.support.configs import write_config
from tests.support.process import TwistdProcess

WAIT = 10.0
"""Seconds any condition of these tests may take."""


@frozen
class Running:
    twistd: TwistdProcess
    control: str
    port: int

    def api(self, path: str, method: str = "GET") -> tuple[int, Any]:
        request = urllib.request.Request(self.control + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def workers(self) -> list[dict[str, Any]]:
        code, body = self.api("/debug/workers")
        assert code == 200
        workers: list[dict[str, Any]] = body["workers"]
        return workers

    def send(self, path: str = "/") -> str:
        """One request on a new connection; the answer's body."""
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=WAIT) as answer:
            return str(answer.read().decode())


def inbound(**out: str) -> dict[str, Any]:
    return {
        "name": "web",
        "listen": "127.0.0.1:0",
        "out": out,
        "active": next(iter(out)),
    }


@contextmanager
def nfork_workers(config: Path, *args: str) -> Iterator[Running]:
    """twistd nfork --workers 2 on C{config}; its inbound "web" ready."""
    with TwistdProcess(
        "--config",
        str(config),
        "--control",
        "127.0.0.1:0",
        "--workers",
        "2",
        *args,
    ) as twistd:
        control = twistd.wait_for_line(r"control API listening on .*port=(\d+)")
        port = twistd.listening_port("web")
        yield Running(twistd, f"http://127.0.0.1:{control.group(1)}", port)


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT}s: {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_traffic_is_spread_over_every_worker(
    tmp_path: Path, threaded_backend: Callable[..., ThreadedBackend]
) -> None:
    backend = threaded_backend("ok")
    config = write_config(tmp_path / "nfork.json", inbound(a=backend.address))
    with nfork_workers(config) as nfork:
        for _ in range(200):
            assert nfork.send() == "ok"

        def counted() -> bool:
            return sum(int(w["requests"]) for w in nfork.workers()) == 200

        eventually(counted, "every request counted by a worker")
        workers = nfork.workers()
        assert [w["index"] for w in workers] == [1, 2]
        assert all(w["alive"] and w["restarts"] == 0 for w in workers)
        assert all(w["requests"] > 0 for w in workers), workers
        # The parent's stats are the workers' sum.
        code, stats = nfork.api("/v1/nfork/web/stats")
        assert code == 200
        assert stats["a"]["total"]["requests"] == 200
        assert nfork.twistd.terminate() == 0


def test_an_activation_during_load_reaches_every_worker(
    tmp_path: Path, threaded_backend: Callable[..., ThreadedBackend]
) -> None:
    a, b = threaded_backend("A"), threaded_backend("B")
    config = write_config(tmp_path / "nfork.json", inbound(a=a.address, b=b.address))
    with nfork_workers(config) as nfork:
        answers: list[tuple[float, str]] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set() and len(answers) < 5000:
                started = time.monotonic()
                answers.append((started, nfork.send()))

        client = threading.Thread(target=load, daemon=True)
        client.start()
        eventually(lambda: len(answers) >= 20, "requests before the change")
        code, _ = nfork.api("/v1/nfork/web/b/activate", "POST")
        activated = time.monotonic()
        assert code == 200
        eventually(
            lambda: sum(t > activated for t, _ in answers) >= 50,
            "requests after the change",
        )
        stop.set()
        client.join(WAIT)
        before = {body for t, body in answers if t < activated}
        after = [body for t, body in answers if t > activated]
        assert "A" in before
        assert set(after) == {"B"}
        assert nfork.twistd.terminate() == 0


def test_a_killed_worker_is_restarted_while_the_others_serve(
    tmp_path: Path, threaded_backend: Callable[..., ThreadedBackend]
) -> None:
    backend = threaded_backend("ok")
    config = write_config(tmp_path / "nfork.json", inbound(a=backend.address))
    with nfork_workers(config) as nfork:
        first = nfork.workers()
        victim = first[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        # Connections the kernel gave the victim before it died are reset;
        # once it is gone, the other worker serves every connection.
        eventually(lambda: not nfork.workers()[0]["alive"], "worker 1 seen dead")
        for _ in range(20):
            assert nfork.send() == "ok"

        def restarted() -> bool:
            worker = nfork.workers()[0]
            return bool(worker["alive"] and worker["restarts"] == 1)

        eventually(restarted, "worker 1 restarted")
        workers = nfork.workers()
        assert workers[0]["pid"] not in (None, victim)
        assert workers[1]["pid"] == first[1]["pid"]
        assert workers[1]["restarts"] == 0
        assert not alive(victim)
        for _ in range(20):
            assert nfork.send() == "ok"
        nfork.twistd.wait_for_line(r"worker 1 \(pid \d+\) was killed by signal 9")
        assert nfork.twistd.terminate() == 0


def test_sigterm_drains_every_worker(
    tmp_path: Path, threaded_backend: Callable[..., ThreadedBackend]
) -> None:
    slow = threaded_backend("slow", delay=1.5)
    config = write_config(
        tmp_path / "nfork.json", {**inbound(a=slow.address), "timeout": "5s"}
    )
    with nfork_workers(config, "--drain-timeout", "5s") as nfork:
        pids = [w["pid"] for w in nfork.workers()]
        answers: list[str] = []
        client = threading.Thread(target=lambda: answers.append(nfork.send()))
        client.start()
        assert slow.arrived.wait(WAIT)
        assert nfork.twistd.terminate() == 0
        client.join(WAIT)
        assert answers == ["slow"]
        assert not any(alive(pid) for pid in pids)


def test_sighup_reloads_every_worker(
    tmp_path: Path, threaded_backend: Callable[..., ThreadedBackend]
) -> None:
    a, b = threaded_backend("A"), threaded_backend("B")
    config = write_config(tmp_path / "nfork.json", inbound(a=a.address))
    with nfork_workers(config) as nfork:
        assert {nfork.send() for _ in range(10)} == {"A"}
        changed = inbound(b=b.address, a=a.address)
        write_config(config, changed)
        nfork.twistd.process.send_signal(signal.SIGHUP)
        nfork.twistd.wait_for_line(r"reload of .*updated \['web'\]")
        nfork.twistd.wait_for_line(r"2 worker processes applied the configuration")
        assert {nfork.send() for _ in range(50)} == {"B"}
        assert nfork.twistd.terminate() == 0


def test_a_worker_that_cannot_start_makes_the_parent_exit_1(
    tmp_path: Path,
    threaded_backend: Callable[..., ThreadedBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = threaded_backend("ok")
    config = write_config(tmp_path / "nfork.json", inbound(a=backend.address))
    # Python imports sitecustomize at startup: it ends every worker process.
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('NFORK_WORKER'):\n    os._exit(3)\n"
    )
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(crash), path])))
    with TwistdProcess(
        "--config", str(config), "--control", "127.0.0.1:0", "--workers", "2"
    ) as twistd:
        twistd.wait_for_line(
            r"worker \d \(pid \d+\) exited with status 3 before it was ready"
        )
        assert twistd.process.wait(WAIT) == 1
        assert twistd.terminate() == 1
