"""The parent's side of the worker processes, with fake workers: all-or-none
changes, restarts' backoff, long AMP values, address reservation."""

from __future__ import annotations

import json
import socket
from functools import partial
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from nfork.config import load_config
from nfork.config.compare import parse_compare
from nfork.control.changes import Changes, WorkersError
from nfork.control.controller import Controller, PlaceholderOutbound
from nfork.workers.cluster import Cluster
from nfork.workers.listening import reserve_port
from nfork.workers.protocol import Configure, ResetCompare, Snapshot, WorkerError
from nfork.workers.supervisor import MAX_DELAY, RestartPolicy
from tests.support.configs import inbound_config, inbound_json

WEB = inbound_json("web", "127.0.0.1:0", out={"prod": "h:1", "staging": "h:2"})


class FakeWorker:
    """A live worker answering Configure as told; records what it applied."""

    def __init__(self, index: int, answer: Any = None) -> None:
        self.index = index
        self.alive = True
        self.answer = answer
        self.applied: list[tuple[str, ...]] = []

    def call(self, command: type[amp.Command], **arguments: Any) -> Deferred[Any]:
        assert command is Configure
        if self.answer is not None:
            return fail(self.answer)
        configs = load_config(arguments["configs"])
        self.applied.append(tuple(c.active for c in configs))
        return succeed({})


class ClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.controller = Controller(
            self.reactor,
            listener=partial(reserve_port, self.reactor),
            build_outbounds=False,
            announce=False,
        )
        self.cluster = Cluster(self.reactor, 3, self.controller, on_fatal=self.fail)
        self.changes = Changes(self.controller, cluster=self.cluster)
        self.successResultOf(self.changes.add_inbound(inbound_config(**WEB)))
        self.addCleanup(
            lambda: self.successResultOf(Deferred.fromCoroutine(self.controller.stop()))
        )

    def fake(self, *answers: Any) -> list[FakeWorker]:
        workers = [FakeWorker(i + 1, answer) for i, answer in enumerate(answers)]
        self.cluster.workers = workers  # type: ignore[assignment]
        return workers

    def test_the_parent_builds_no_outbound(self) -> None:
        routes = self.controller.inbound("web").routing.routes
        assert all(isinstance(r.outbound, PlaceholderOutbound) for r in routes)

    def test_a_change_reaches_every_live_worker(self) -> None:
        workers = self.fake(None, None, None)
        workers[2].alive = False
        self.successResultOf(self.changes.activate("web", "staging"))
        assert [w.applied for w in workers] == [[("staging",)], [("staging",)], []]

    def test_a_refused_change_is_undone_everywhere(self) -> None:
        workers = self.fake(None, WorkerError("no file"), None)
        failure = self.failureResultOf(
            self.changes.activate("web", "staging"), WorkersError
        )
        assert "worker 2: no file" in str(failure.value)
        assert "the change was undone" in str(failure.value)
        # The parent is back, and the workers that applied it got it back.
        assert self.controller.inbound("web").config.active == "prod"
        assert workers[0].applied == [("staging",), ("prod",)]
        assert workers[2].applied == [("staging",), ("prod",)]

    def test_a_worker_dying_meanwhile_does_not_fail_the_change(self) -> None:
        died = ProcessTerminated(exitCode=None, signal=9)
        workers = self.fake(None, died, None)
        self.successResultOf(self.changes.activate("web", "staging"))
        assert self.controller.inbound("web").config.active == "staging"
        assert workers[0].applied == [("staging",)]

    def test_the_workers_listen_where_the_parent_reserved(self) -> None:
        sent: list[dict[str, Any]] = []

        class Recording(FakeWorker):
            def call(self, command: type[amp.Command], **arguments: Any) -> Any:
                sent.append(arguments)
                return succeed({})

        self.cluster.workers = [Recording(1)]  # type: ignore[list-item]
        self.successResultOf(self.changes.activate("web", "staging"))
        address: Any = self.controller.inbound("web").port.getHost()
        port = address.port
        assert port != 0
        assert json.loads(sent[0]["listen"]) == {"web": ["127.0.0.1", port]}

    def test_a_comparison_reset_reaches_every_live_worker(self) -> None:
        sent: list[tuple[type[amp.Command], dict[str, Any]]] = []

        class Recording(FakeWorker):
            def call(self, command: type[amp.Command], **arguments: Any) -> Any:
                sent.append((command, arguments))
                return succeed({})

        workers = [Recording(1), Recording(2), Recording(3)]
        workers[1].alive = False
        self.cluster.workers = workers  # type: ignore[assignment]
        self.controller.compare_reset_hooks.append(self.cluster.reset_compare)
        self.successResultOf(
            self.changes.set_compare("web", parse_compare({"candidates": ["staging"]}))
        )
        sent.clear()
        self.controller.reset_compare("web")
        assert sent == [(ResetCompare, {"inbound": "web"})] * 2

    def test_describe_reports_each_workers_requests(self) -> None:
        self.cluster.snapshots = {1: {"requests": 7}}
        described = self.cluster.describe()
        assert [(w["index"], w["requests"]) for w in described] == [
            (1, 7),
            (2, 0),
            (3, 0),
        ]


def test_restarts_back_off_then_give_up() -> None:
    policy = RestartPolicy()
    delays = [policy.died(float(t)) for t in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, None]


def test_deaths_older_than_a_minute_are_forgotten() -> None:
    policy = RestartPolicy()
    for t in range(5):
        policy.died(t * 100.0)
    assert policy.died(500.0) == 1.0
    assert RestartPolicy(deaths=[0.0] * 4).died(59.0) == 16.0
    assert RestartPolicy(deaths=[0.0] * 3).died(1.0) == 8.0 < MAX_DELAY


def test_configure_and_snapshot_carry_text_beyond_amps_value_limit() -> None:
    text = "é" * 100_000  # 200 kB of UTF-8, over AMP's 64 KiB per value
    box = Configure.makeArguments({"configs": text, "listen": ""}, None)
    assert all(len(value) <= 0xFFFF for value in box.values())
    assert Configure.parseArguments(box, None) == {"configs": text, "listen": ""}
    answer = Snapshot.makeResponse({"snapshot": text}, None)
    assert Snapshot.parseResponse(answer, None) == {"snapshot": text}


def test_a_reserved_address_refuses_other_listeners() -> None:
    reactor = MemoryReactorClock()
    config = inbound_config(**WEB)
    reserved = _run(reserve_port(reactor, config, None))  # type: ignore[arg-type]
    try:
        port = reserved.getHost().port
        assert port != 0
        other = socket.socket()
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        other.close()
        taken = inbound_config(**{**WEB, "listen": f"127.0.0.1:{port}"})
        # Another SO_REUSEPORT socket of the same user may share it (the
        # workers do); a plain listener may not.
        reserved_again = _run(reserve_port(reactor, taken, None))  # type: ignore[arg-type]
        reserved_again.stopListening()
    finally:
        reserved.stopListening()


def test_only_tcp_inbounds_can_be_shared() -> None:
    config = inbound_config(**{**WEB, "listen": "unix:/tmp/nfork-test.sock"})
    with pytest.raises(CannotListenError, match="must listen on TCP"):
        _run(reserve_port(MemoryReactorClock(), config, None))  # type: ignore[arg-type]


def _run(coroutine: Any) -> Any:
    d = Deferred.fromCoroutine(coroutine)
    results: list[Any] = []
    d.addBoth(results.append)
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result
