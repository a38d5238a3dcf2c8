"""Soak: mixed traffic with one shadow of every fault kind, bounded in time.

Every request must get the healthy active answer, the stats must count
exactly what was sent, and memory must stay within a stated bound.
"""

from __future__ import annotations

import resource
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from nfork.control.controller import Controller
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config
from tests.support.faults import FaultServer, refused_address

DURATION = 12.0
"""Seconds of traffic (the test stops sending after this, whatever the count)."""
MAX_REQUESTS = 4000
CONCURRENCY = 8
MEMORY_BOUND_MB = 64
"""Allowed growth of the process's RSS after warm-up, in MiB."""


def rss_mb() -> float:
    """The current resident set size of this process, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class SoakTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_mixed_traffic_with_every_fault_kind(self) -> Any:
        active = RecordingService("prod")
        active.listen()
        self.addCleanup(active.close)
        slow = RecordingService("slow", delay=3.0)
        slow.listen()
        self.addCleanup(slow.close)
        # The huge shadow sends 2 MiB bodies here: this process plays the
        # backends too, so bigger ones would measure the test, not nfork.
        faults = {
            kind: FaultServer(kind, huge_size=2 * 1024 * 1024)
            for kind in ("hang", "reset", "garbage", "huge")
        }
        out: dict[str, Any] = {
            "prod": active.address,
            "slow": slow.address,
            "refused": refused_address(),
        }
        for kind, server in faults.items():
            out[kind] = {"addr": server.listen(), "maxInflight": 50}
            self.addCleanup(server.close)
        controller = Controller(reactor)
        self.addCleanup(controller.stop)
        config = inbound_config("soak", out=out, timeout="1s")
        inbound = yield Deferred.fromCoroutine(controller.add_inbound(config))
        url = f"http://127.0.0.1:{inbound.port.getHost().port}".encode()
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = CONCURRENCY
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool)
        now = cast(Any, reactor).seconds
        sent: list[bytes] = []
        wrong: list[Any] = []
        baseline: list[float] = []
        deadline = now() + DURATION

        @inlineCallbacks
        def client(n: int) -> Any:
            i = 0
            while now() < deadline and len(sent) < MAX_REQUESTS:
                method = (b"GET", b"POST", b"PUT", b"HEAD")[i % 4]
                body = (
                    None
                    if method in (b"GET", b"HEAD")
                    else FileBodyProducer(
                        __import__("io").BytesIO(b"payload-%d-%d" % (n, i))
                    )
                )
                sent.append(method)
                response = yield agent.request(
                    method, url + b"/soak/%d" % i, Headers(), body
                )
                content = yield readBody(response)
                expected = b"" if method == b"HEAD" else b"prod"
                if (response.code, content) != (200, expected):
                    wrong.append((method, response.code, content[:100]))
                i += 1
                if len(sent) == 200 and not baseline:
                    baseline.append(rss_mb())

        yield gatherResults([client(n) for n in range(CONCURRENCY)])
        yield deferLater(reactor, 1.2, lambda: None)  # let shadow timeouts land
        grown = rss_mb() - baseline[0]

        self.assertEqual(wrong, [])
        self.assertGreater(len(sent), 200)
        stats = {r.name: r.stats for r in inbound.routing.routes}
        total = len(sent)
        self.assertEqual(stats["prod"].total_requests, total)
        self.assertEqual(stats["prod"].total_responses, {200: total})
        self.assertEqual(len(active.received), total)
        self.assertEqual(stats["refused"].total_errors, total)
        for name in ("reset", "garbage"):
            self.assertEqual(
                stats[name].total_errors + stats[name].total_dropped, total, name
            )
        for name in ("hang", "huge", "slow"):
            s = stats[name]
            done = s.total_requests + s.total_dropped
            self.assertLessEqual(total - done, 50, name)  # at most maxInflight pending
        self.assertEqual(
            stats["hang"].total_timeouts
            + stats["hang"].total_dropped
            + inbound.routing.shadows[2].inflight,
            total,
        )
        self.assertGreater(stats["hang"].total_dropped, 0)
        self.assertLess(grown, MEMORY_BOUND_MB, f"RSS grew by {grown:.1f} MiB")
