"""gonfork's own scenarios, replayed over real loopback sockets.

Three services: s0 answers 200 "s0", s1 answers 201 "s1", s2 answers after
100 ms; the inbound's timeout is 50 ms.  After each step every service must
have received exactly the expected requests.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from nfork.config import parse_outbound
from nfork.control.controller import Controller
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config


class GonforkScenarioTests(TestCase):
    """Duplication, activation, outbound and inbound changes, end to end."""

    timeout = 20

    def setUp(self) -> None:
        self.services = {
            "s0": RecordingService("s0", 200),
            "s1": RecordingService("s1", 201),
            "s2": RecordingService("s2", 200, delay=0.1),
        }
        for service in self.services.values():
            service.listen()
            self.addCleanup(service.close)
        self.controller = Controller(reactor)
        self.addCleanup(self.controller.stop)
        self.client_pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.client_pool.closeCachedConnections)

    def config(self, name: str, outs: list[str], active: str) -> Any:
        return inbound_config(
            name,
            out={o: self.services[o].address for o in outs},
            active=active,
            timeout="50ms",
        )

    def url(self, inbound: str, path: str) -> str:
        port = self.controller.inbound(inbound).port.getHost().port  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{port}{path}"

    @inlineCallbacks
    def send(self, inbound: str, method: str, path: str, body: bytes = b"") -> Any:
        response = yield treq.request(
            method,
            self.url(inbound, path),
            data=body or None,
            headers=Headers({b"X-Test": [b"yes"]}),
            pool=self.client_pool,
        )
        content = yield treq.content(response)
        return response.code, content, response.headers.getRawHeaders(b"X-Service")

    def received(self) -> dict[str, list[str]]:
        return {name: list(s.received) for name, s in self.services.items()}

    def settled(self, **counts: int) -> Deferred[Any]:
        """Wait until each named service received that many requests."""
        return DeferredList(
            [self.services[n].wait_for(c) for n, c in counts.items()],
            fireOnOneErrback=True,
        )

    @inlineCallbacks
    def test_gonfork_scenarios(self) -> Any:
        yield Deferred.fromCoroutine(
            self.controller.add_inbound(self.config("it", ["s0", "s1"], "s0"))
        )

        # Duplication: GET, PUT and POST on nested paths reach s0 and s1.
        result = yield self.send("it", "GET", "/a/b")
        self.assertEqual(result, (200, b"s0", [b"s0"]))
        result = yield self.send("it", "PUT", "/a/b/c", b"put-body")
        self.assertEqual(result, (200, b"s0", [b"s0"]))
        result = yield self.send("it", "POST", "/x/y?z=1", b"post-body")
        self.assertEqual(result, (200, b"s0", [b"s0"]))
        yield self.settled(s0=3, s1=3)
        expected = ["GET /a/b ", "PUT /a/b/c put-body", "POST /x/y?z=1 post-body"]
        self.assertEqual(self.received(), {"s0": expected, "s1": expected, "s2": []})
        for service in ("s0", "s1"):
            for headers in self.services[service].headers:
                self.assertEqual(headers[b"X-Nfork"], [b"true"])
                self.assertEqual(headers[b"X-Test"], [b"yes"])

        # Adding s2: it receives the next request too.
        self.controller.put_outbound(
            "it", parse_outbound("it", "s2", self.services["s2"].address)
        )
        result = yield self.send("it", "GET", "/after/add")
        self.assertEqual(result, (200, b"s0", [b"s0"]))
        yield self.settled(s0=4, s1=4, s2=1)
        self.assertEqual(self.services["s2"].received, ["GET /after/add "])

        # Activating s1: its answer reaches the client.
        self.controller.activate("it", "s1")
        result = yield self.send("it", "POST", "/active/s1", b"b")
        self.assertEqual(result, (201, b"s1", [b"s1"]))
        yield self.settled(s0=5, s1=5, s2=2)

        # Activating the slow s2: the 50 ms timeout gives the client a 503.
        self.controller.activate("it", "s2")
        code, body, _ = yield self.send("it", "GET", "/active/s2")
        self.assertEqual(code, 503)
        self.assertIn(b"timed out", body)
        yield self.settled(s0=6, s1=6, s2=3)

        # Removing s0: it receives nothing more.
        self.controller.activate("it", "s1")
        self.controller.remove_outbound("it", "s0")
        result = yield self.send("it", "DELETE", "/after/remove")
        self.assertEqual(result, (201, b"s1", [b"s1"]))
        yield self.settled(s1=7, s2=4)
        self.assertEqual(len(self.services["s0"].received), 6)
        self.assertEqual(self.services["s1"].received[-1], "DELETE /after/remove ")

        # A second inbound, then its removal: its port refuses connections.
        yield Deferred.fromCoroutine(
            self.controller.add_inbound(self.config("other", ["s0"], "s0"))
        )
        result = yield self.send("other", "GET", "/second")
        self.assertEqual(result, (200, b"s0", [b"s0"]))
        yield self.settled(s0=7)
        url = self.url("other", "/gone")
        yield Deferred.fromCoroutine(self.controller.remove_inbound("other"))
        failure = yield self.assertFailure(
            treq.get(url, pool=self.client_pool), ConnectionRefusedError
        )
        self.assertIsNotNone(failure)
        self.assertEqual([len(s.received) for s in self.services.values()], [7, 7, 4])
