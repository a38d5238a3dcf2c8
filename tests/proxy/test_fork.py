"""Unit tests of the inbound fork: fan-out, answers, timeouts, headers.

Requests reach the fork through the inbound's real server protocol, in memory
(L{tests.support.inbound_client}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from nfork.outbounds.api import IStreamingOutbound
from nfork.outbounds.http import HTTPOutbound
from nfork.proxy.client import HTTPClientPool, Target
from nfork.proxy.messages import ProxyResponse
from tests.support.forks import Harness, fork_config

URL = "http://inbound.example/api/items?x=1"


class ForkingTests(SynchronousTestCase):
    """Every request goes to every outbound; the active one answers."""

    def setUp(self) -> None:
        self.h = Harness(fork_config())

    def test_request_is_copied_to_every_outbound(self) -> None:
        self.h.stub.request("PUT", URL, data=b"payload", headers={"X-Test": "yes"})
        for name in ("prod", "staging", "logging"):
            (copy,) = self.h[name].sent
            self.assertEqual(copy.request.method, b"PUT")
            self.assertEqual(copy.request.uri, b"/api/items?x=1")
            self.assertEqual(copy.request.body, b"payload")
            headers = dict(copy.request.headers)
            self.assertEqual(headers[b"X-Test"], b"yes")
            self.assertEqual(headers[b"X-Nfork"], b"true")
            self.assertEqual(headers[b"X-Forwarded-Host"], b"inbound.example")
            self.assertEqual(headers[b"X-Forwarded-Proto"], b"http")
            self.assertEqual(headers[b"X-Forwarded-For"], b"127.0.0.1")
        self.assertTrue(self.h["prod"].last.keep_body)
        self.assertFalse(self.h["staging"].last.keep_body)

    def test_client_gets_active_response_while_shadows_are_pending(self) -> None:
        d = self.h.stub.get(URL)
        self.assertNoResult(d)
        self.h["prod"].last.answer(
            201,
            b"from prod",
            ((b"X-From", b"prod"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")),
            b"Created",
        )
        self.h.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 201)
        self.assertEqual(response.phrase, b"Created")
        self.assertEqual(response.headers.getRawHeaders(b"X-From"), [b"prod"])
        self.assertEqual(
            response.headers.getRawHeaders(b"Set-Cookie"), [b"a=1", b"b=2"]
        )
        self.assertEqual(
            self.successResultOf(self.h.stub.content(response)), b"from prod"
        )
        # The shadows never answered, and that did not matter.
        self.assertFalse(self.h["staging"].last.deferred.called)

    def test_shadow_answer_never_reaches_client(self) -> None:
        d = self.h.stub.get(URL)
        self.h["staging"].last.answer(500, b"staging broke")
        self.h["logging"].last.answer(200, b"logged")
        self.h.stub.flush()
        self.assertNoResult(d)
        self.h["prod"].last.answer(200, b"prod")
        self.h.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.successResultOf(self.h.stub.content(response)), b"prod")

    def test_server_default_headers_are_not_added(self) -> None:
        d = self.h.stub.get(URL)
        self.h["prod"].last.answer(200, b"x", ((b"Server", b"backend/1.0"),))
        self.h.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.headers.getRawHeaders(b"Server"), [b"backend/1.0"])
        self.assertIsNone(response.headers.getRawHeaders(b"Content-Type"))
        self.assertIsNone(response.headers.getRawHeaders(b"Date"))

    def test_stats_count_every_outcome(self) -> None:
        self.h.stub.get(URL)
        self.h["prod"].last.answer(200)
        self.h["staging"].last.answer(404)
        self.h["logging"].last.fail(ConnectionRefusedError())
        self.h.clock.advance(1)
        stats = {n: r.stats.snapshot() for n, r in self.h.routes.items()}
        self.assertEqual(stats["prod"]["responses"], {"200": 1})
        self.assertEqual(stats["staging"]["responses"], {"404": 1})
        self.assertEqual(stats["logging"]["errors"], 1)
        self.assertEqual(stats["logging"]["requests"], 1)


class TimeoutTests(SynchronousTestCase):
    """The inbound timeout applies to every outbound."""

    def setUp(self) -> None:
        self.h = Harness(fork_config(timeoutCode=504))

    def test_active_timeout_answers_timeout_code(self) -> None:
        d = self.h.stub.get(URL)
        self.h.clock.advance(0.099)
        self.assertNoResult(d)
        self.h.clock.advance(0.002)
        self.h.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 504)
        body = self.successResultOf(self.h.stub.content(response))
        self.assertIn(b'"prod" timed out', body)
        self.assertTrue(self.h["prod"].last.cancelled)
        self.h.clock.advance(1)
        self.assertEqual(self.h.routes["prod"].stats.snapshot()["timeouts"], 1)

    def test_shadow_timeout_is_recorded_and_cancelled(self) -> None:
        d = self.h.stub.get(URL)
        self.h["prod"].last.answer(200, b"ok")
        self.h.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.h.clock.advance(0.2)
        self.assertTrue(self.h["staging"].last.cancelled)
        self.h.clock.advance(1)
        snapshot = self.h.routes["staging"].stats.snapshot()
        self.assertEqual(snapshot["timeouts"], 1)
        self.assertEqual(snapshot["errors"], 0)

    def test_answer_before_timeout_cancels_the_timer(self) -> None:
        self.h.stub.get(URL)
        for outbound in self.h.outbounds.values():
            outbound.last.answer(200)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])

    def test_per_outbound_timeout_overrides_inbound(self) -> None:
        h = Harness(
            fork_config(
                out={
                    "prod": "127.0.0.1:1",
                    "slow": {"addr": "127.0.0.1:2", "timeout": "2s"},
                }
            )
        )
        h.stub.get(URL)
        h["prod"].last.answer(200)
        h.clock.advance(1)
        self.assertFalse(h["slow"].last.cancelled)
        h.clock.advance(1.01)
        self.assertTrue(h["slow"].last.cancelled)


class ErrorTests(SynchronousTestCase):
    """Failures of the active outbound map to the configured status codes."""

    def test_refused_active_answers_error_code(self) -> None:
        h = Harness(fork_config())
        d = h.stub.get(URL)
        h["prod"].last.fail(ConnectionRefusedError("nobody home"))
        h.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 502)
        body = self.successResultOf(h.stub.content(response))
        # The reason ("nobody home") goes to the log, not to the client.
        self.assertEqual(body, b'nfork: active outbound "prod" failed\n')
        self.assertEqual(
            response.headers.getRawHeaders(b"Content-Type"),
            [b"text/plain; charset=utf-8"],
        )

    def test_error_code_is_configurable(self) -> None:
        h = Harness(fork_config(errorCode=500))
        d = h.stub.get(URL)
        h["prod"].last.fail(ConnectionRefusedError())
        h.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 500)

    def test_body_over_max_body_is_refused_without_contacting_outbounds(self) -> None:
        h = Harness(fork_config(maxBody=10))
        d = h.stub.post(URL, data=b"x" * 11)
        h.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 413)
        for outbound in h.outbounds.values():
            self.assertEqual(outbound.sent, [])

    def test_body_at_max_body_is_forwarded(self) -> None:
        h = Harness(fork_config(maxBody=10))
        h.stub.post(URL, data=b"x" * 10)
        self.assertEqual(h["prod"].last.request.body, b"x" * 10)


class HeaderTests(SynchronousTestCase):
    """Hop-by-hop headers are dropped in both directions; others pass."""

    def test_hop_by_hop_request_headers_are_dropped(self) -> None:
        h = Harness(fork_config())
        h.stub.get(
            URL,
            headers={
                "Connection": "X-Private, keep-alive",
                "X-Private": "secret",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic Zm9v",
                "Upgrade": "websocket",
                "X-Kept": "kept",
                "X-Forwarded-For": "10.0.0.1",
            },
        )
        names = {name.lower() for name, _ in h["prod"].last.request.headers}
        for dropped in (
            b"connection",
            b"x-private",
            b"keep-alive",
            b"te",
            b"proxy-authorization",
            b"upgrade",
            b"host",
            b"content-length",
        ):
            self.assertNotIn(dropped, names)
        headers = dict(h["prod"].last.request.headers)
        self.assertEqual(headers[b"X-Kept"], b"kept")
        self.assertEqual(headers[b"X-Forwarded-For"], b"10.0.0.1, 127.0.0.1")

    def test_hop_by_hop_response_headers_are_dropped(self) -> None:
        h = Harness(fork_config())
        d = h.stub.get(URL)
        h["prod"].last.answer(
            200,
            b"body",
            (
                (b"Connection", b"close, X-Hop"),
                (b"X-Hop", b"1"),
                (b"Keep-Alive", b"timeout=5"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Content-Length", b"999"),
                (b"X-End", b"2"),
            ),
        )
        h.stub.flush()
        response = self.successResultOf(d)
        for dropped in ("X-Hop", "Keep-Alive", "Transfer-Encoding"):
            self.assertIsNone(response.headers.getRawHeaders(dropped.encode()))
        self.assertEqual(response.headers.getRawHeaders(b"X-End"), [b"2"])
        self.assertEqual(response.length, 4)
        self.assertEqual(self.successResultOf(h.stub.content(response)), b"body")


class ShadowSelectionTests(SynchronousTestCase):
    """Per-outbound methods, sample and maxInflight decide which copies go."""

    def test_methods_limit_what_a_shadow_receives(self) -> None:
        h = Harness(
            fork_config(
                out={
                    "prod": "127.0.0.1:1",
                    "safe": {"addr": "127.0.0.1:2", "methods": ["GET"]},
                }
            )
        )
        h.stub.get(URL)
        h.stub.post(URL, data=b"x")
        self.assertEqual(len(h["prod"].sent), 2)
        self.assertEqual([c.request.method for c in h["safe"].sent], [b"GET"])

    def test_sample_is_deterministic_per_request_id(self) -> None:
        h = Harness(
            fork_config(
                out={
                    "prod": "127.0.0.1:1",
                    "some": {"addr": "127.0.0.1:2", "sample": 0.5},
                }
            )
        )
        for i in range(200):
            h.stub.get(URL, headers={"X-Request-Id": f"req-{i % 100}"})
        copies = [c.request for c in h["some"].sent]
        self.assertTrue(40 < len(copies) < 160)
        # Each request id is either always copied or never.
        ids = [dict(r.headers)[b"X-Request-Id"] for r in copies]
        self.assertTrue(all(ids.count(i) == 2 for i in ids))

    def test_max_inflight_sheds_shadow_copies_not_active(self) -> None:
        h = Harness(
            fork_config(
                out={
                    "prod": "127.0.0.1:1",
                    "slow": {"addr": "127.0.0.1:2", "maxInflight": 2},
                }
            )
        )
        for _ in range(5):
            h.stub.get(URL)
        self.assertEqual(len(h["prod"].sent), 5)
        self.assertEqual(len(h["slow"].sent), 2)
        h.clock.advance(1)
        snapshot = h.routes["slow"].stats.snapshot()
        self.assertEqual(snapshot["dropped"], 3)


class AdaptiveLimitTests(SynchronousTestCase):
    """A shadow that times out gets fewer copies until it answers again."""

    def test_timeouts_shrink_the_limit_and_answers_restore_it(self) -> None:
        h = Harness(
            fork_config(
                out={
                    "prod": "127.0.0.1:1",
                    "mute": {"addr": "127.0.0.1:2", "maxInflight": 8},
                },
            )
        )
        route = h.routes["mute"]
        for _ in range(8):
            h.stub.get(URL)
        self.assertEqual(len(h["mute"].sent), 8)
        h.clock.advance(0.2)  # all eight copies time out
        self.assertEqual(route.limit, 1)
        for _ in range(3):
            h.stub.get(URL)
        # One copy at a time now: the others are dropped at once.
        self.assertEqual(len(h["mute"].sent), 9)
        h.clock.advance(1)
        self.assertEqual(route.stats.snapshot()["dropped"], 2)
        # The shadow answers again: the limit grows back, one per answer.
        h.stub.get(URL)
        h["mute"].last.answer(200)
        self.assertEqual(route.limit, 2)
        for _ in range(20):
            h.stub.get(URL)
            h["mute"].last.answer(200)
        self.assertEqual(route.limit, 8)
        self.assertEqual(h.routes["prod"].stats.total_dropped, 0)


class FakeStream:
    """The rest of a fake answer's body, fed by the test (an AnswerStream)."""

    def __init__(self) -> None:
        self.receiver: Any = None
        self.paused = False
        self.cancelled = False

    def start(self, receiver: Any) -> None:
        self.receiver = receiver

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def cancel(self) -> None:
        self.cancelled = True


def answer_streaming(copy: Any, first: bytes = b"") -> FakeStream:
    """Answer C{copy} with a head (and C{first}); the rest comes from the stream."""
    stream = FakeStream()
    copy.deferred.callback(
        ProxyResponse(200, b"OK", ((b"Content-Type", b"text/plain"),), first, stream)
    )
    return stream


class StreamingTests(SynchronousTestCase):
    """Streamed answers: relayed as they come, cut by bodyTimeout/idleTimeout."""

    def test_http_outbound_provides_streaming(self) -> None:
        pool = HTTPClientPool(MemoryReactorClock())
        target = Target("http", "127.0.0.1", 8080, b"127.0.0.1:8080")
        verifyObject(IStreamingOutbound, HTTPOutbound(pool, target, 4))

    def test_streamed_body_reaches_the_client_and_is_recorded_at_its_end(
        self,
    ) -> None:
        h = Harness(fork_config())
        d = h.stub.get(URL)
        h.clock.advance(0.01)
        stream = answer_streaming(h["prod"].last, b"first ")
        h.clock.advance(0.5)
        stream.receiver.body(b"second")
        # The copy is in flight until its body ends.
        self.assertEqual(h.routes["prod"].inflight, 1)
        stream.receiver.end()
        h.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(
            self.successResultOf(h.stub.content(response)), b"first second"
        )
        self.assertEqual(h.routes["prod"].inflight, 0)
        total = h.routes["prod"].stats.snapshot()["total"]
        assert isinstance(total, dict)
        self.assertEqual(total["ttfb"]["pmx"], "10ms")
        self.assertEqual(total["latency"]["pmx"], "510ms")
        self.assertEqual(total["responses"], {"200": 1})

    def test_timeout_bounds_the_head_only(self) -> None:
        h = Harness(fork_config())
        h.stub.get(URL)
        stream = answer_streaming(h["prod"].last)
        h.clock.advance(5)
        self.assertFalse(stream.cancelled)

    def test_body_timeout_cuts_the_body_and_counts_a_timeout(self) -> None:
        h = Harness(fork_config(bodyTimeout="1s"))
        h.stub.get(URL)
        stream = answer_streaming(h["prod"].last)
        for _ in range(9):
            h.clock.advance(0.1)
            stream.receiver.body(b"x")
        self.assertFalse(stream.cancelled)
        h.clock.advance(0.15)
        self.assertTrue(stream.cancelled)
        total = h.routes["prod"].stats.snapshot()["total"]
        assert isinstance(total, dict)
        self.assertEqual(total["timeouts"], 1)
        self.assertEqual(h.routes["prod"].inflight, 0)

    def test_idle_timeout_cuts_a_silent_body(self) -> None:
        h = Harness(fork_config(idleTimeout="1s"))
        h.stub.get(URL)
        stream = answer_streaming(h["prod"].last)
        h.clock.advance(0.9)
        stream.receiver.body(b"x")
        h.clock.advance(0.9)
        self.assertFalse(stream.cancelled)
        h.clock.advance(0.2)
        self.assertTrue(stream.cancelled)

    def test_shadow_stream_is_dropped_and_recorded(self) -> None:
        h = Harness(fork_config())
        h.stub.get(URL)
        stream = answer_streaming(h["staging"].last)
        h.clock.advance(0.2)
        stream.receiver.end()
        total = h.routes["staging"].stats.snapshot()["total"]
        assert isinstance(total, dict)
        self.assertEqual(total["responses"], {"200": 1})
        self.assertEqual(total["latency"]["pmx"], "200ms")


class ContentLengthZeroTests(SynchronousTestCase):
    """A C{Content-Length: 0} the client sent is forwarded."""

    def setUp(self) -> None:
        self.h = Harness(fork_config())

    def zero_length(self, method: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        request = self.h.fork.proxy_request(
            method, b"/", [(b"Host", b"a"), *headers], b"", "127.0.0.1", False
        )
        return request.zero_length

    def test_delete_and_get_with_content_length_zero(self) -> None:
        for method in (b"DELETE", b"GET"):
            self.assertTrue(self.zero_length(method, [(b"content-length", b"0")]))

    def test_none_without_it(self) -> None:
        self.assertFalse(self.zero_length(b"DELETE", []))

    def test_body_methods_always_get_a_length_anyway(self) -> None:
        self.assertFalse(self.zero_length(b"POST", [(b"Content-Length", b"0")]))


class ShadowBodyIdleTests(SynchronousTestCase):
    """A shadow's dropped body that keeps moving is never cut as silent."""

    def test_moving_shadow_body_outlives_idle_timeout(self) -> None:
        h = Harness(fork_config(idleTimeout="1s"))
        h.stub.get(URL)
        stream = answer_streaming(h["staging"].last)
        for _ in range(5):
            h.clock.advance(0.6)
            stream.receiver.body(b"x")
        self.assertFalse(stream.cancelled)
        h.clock.advance(1.1)
        self.assertTrue(stream.cancelled)
