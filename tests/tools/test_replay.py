"""nfork replay: pacing, concurrency, summary and Ctrl-C over a Clock and
StubTreq's in-memory agent; then a real record-and-replay round trip."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import treq
from attrs import define, field
from treq.testing import RequestTraversalAgent
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from zope.interface import implementer

from nfork.config.compare import DEFAULT_IGNORE_HEADERS, CompareConfig
from nfork.control.controller import Controller
from nfork.outbounds.sinks.records import RecordedRequest, RecordError, encode_record
from nfork.proxy.messages import CapturedAnswer, ProxyRequest
from nfork.tools.cli import main
from nfork.tools.replay import (
    DIFFERENCE,
    INTERRUPTED,
    Progress,
    Replay,
    ReplayOptions,
    ReplaySummary,
    read_records,
    replay_main,
    target_url,
)
from nfork.tools.replay_compare import ReplayComparison, read_compare_settings
from tests.support.backends import RecordingService, ThreadedBackend
from tests.support.configs import inbound_config
from tests.support.files import temp_dir

TARGET = b"http://target.example:8080/prefix"


def record(
    n: int,
    epoch: float,
    method: bytes = b"GET",
    body: bytes = b"",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> RecordedRequest:
    return RecordedRequest(epoch, method, b"/r/%d" % n, headers, body)


@define
class Seen:
    method: bytes
    uri: bytes
    headers: dict[bytes, list[bytes]]
    body: bytes


class Target(Resource):
    """Answers with the status in the path's last part (200 by default);
    holds requests while C{hold} is set."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self.held: list[server.Request] = []
        self.hold = False

    def render(self, request: server.Request) -> bytes | int:
        self.seen.append(
            Seen(
                request.method,
                request.uri,
                {k: list(v) for k, v in request.requestHeaders.getAllRawHeaders()},
                request.content.read() if request.content else b"",
            )
        )
        last = request.uri.rsplit(b"/", 1)[-1]
        if last.isdigit() and len(last) == 3:
            request.setResponseCode(int(last))
        if self.hold:
            self.held.append(request)
            return server.NOT_DONE_YET
        return b"ok"

    def release(self) -> None:
        held, self.held = self.held, []
        for request in held:
            request.write(b"late")
            request.finish()


@implementer(IAgent)
@define
class FailingAgent:
    """Refuses the connection for paths ending in /fail, else delegates."""

    agent: Any
    calls: list[bytes] = field(factory=list)

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None):
        self.calls.append(uri)
        if uri.endswith(b"/fail"):
            return fail(ConnectionRefusedError())
        return self.agent.request(method, uri, headers, body)


class ReplayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.target = Target()
        self.agent = RequestTraversalAgent(self.target)

    def replay(self, records: list[Any], **kwargs: Any) -> tuple[Replay, Deferred[Any]]:
        replay = Replay(
            records,
            TARGET,
            agent=kwargs.pop("agent", self.agent),
            clock=self.clock,
            **kwargs,
        )
        return replay, replay.run()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.agent.flush()

    def sent(self) -> list[bytes]:
        return [s.uri for s in self.target.seen]

    def test_requests_go_at_the_recorded_pace(self) -> None:
        _, done = self.replay([record(0, 100.0), record(1, 100.5), record(2, 102.0)])
        self.agent.flush()
        self.assertEqual(self.sent(), [b"/prefix/r/0"])
        self.advance(0.49)
        self.assertEqual(len(self.sent()), 1)
        self.advance(0.01)
        self.assertEqual(len(self.sent()), 2)
        self.advance(1.49)
        self.assertEqual(len(self.sent()), 2)
        self.advance(0.01)
        self.assertEqual(len(self.sent()), 3)
        summary = self.successResultOf(done)
        self.assertEqual((summary.sent, summary.responses), (3, {200: 3}))
        self.assertAlmostEqual(summary.elapsed, 2.0)

    def test_speed_scales_the_recorded_pace(self) -> None:
        _, done = self.replay([record(0, 100.0), record(1, 101.0)], speed=4.0)
        self.advance(0.24)
        self.assertEqual(len(self.sent()), 1)
        self.advance(0.01)
        self.assertEqual(len(self.sent()), 2)
        self.successResultOf(done)

    def test_out_of_order_times_are_sent_at_once(self) -> None:
        _, done = self.replay([record(0, 100.0), record(1, 99.0)])
        self.agent.flush()
        self.assertEqual(len(self.sent()), 2)
        self.successResultOf(done)

    def test_a_fixed_rate_ignores_the_recorded_times(self) -> None:
        records = [record(n, 100.0 + 10 * n) for n in range(4)]
        _, done = self.replay(records, rate=4.0)
        self.agent.flush()
        for expected in (1, 2, 3, 4):
            self.assertEqual(len(self.sent()), expected)
            self.advance(0.25)
        self.successResultOf(done)

    def test_at_most_concurrency_requests_are_in_flight(self) -> None:
        self.target.hold = True
        records = [record(n, 100.0) for n in range(5)]
        _, done = self.replay(records, concurrency=2)
        self.advance(0)
        self.assertEqual(len(self.sent()), 2)
        self.advance(10)
        self.assertEqual(len(self.sent()), 2)
        self.target.release()
        self.advance(0)
        self.assertEqual(len(self.sent()), 4)
        self.target.hold = False
        self.target.release()
        self.advance(0)
        self.assertEqual(len(self.sent()), 5)
        self.assertEqual(self.successResultOf(done).responses, {200: 5})

    def test_the_summary_counts_codes_errors_and_latency(self) -> None:
        self.target.hold = True
        records = [
            RecordedRequest(100.0, b"GET", b"/ok", (), b""),
            RecordedRequest(100.0, b"GET", b"/x/404", (), b""),
            RecordedRequest(100.0, b"GET", b"/fail", (), b""),
            RecordError("traffic.jsonl:4: not JSON"),
            RecordedRequest(100.0, b"GET", b"/slow", (), b""),
        ]
        _replay, done = self.replay(
            records, agent=FailingAgent(self.agent), timeout=5.0
        )
        self.advance(0)
        self.clock.advance(0.25)
        # Answer the first two after 250ms; the slow one never answers.
        for request in self.target.held[:2]:
            request.write(b"x")
            request.finish()
        self.target.held[2:] = self.target.held[2:]
        self.advance(0)
        self.advance(5)
        summary = self.successResultOf(done)
        self.assertEqual(summary.sent, 4)
        self.assertEqual(summary.responses, {200: 1, 404: 1})
        self.assertEqual(
            summary.errors, {"ConnectionRefusedError": 1, "TimeoutError": 1}
        )
        self.assertEqual(summary.skipped, 1)
        self.assertAlmostEqual(summary.latency.percentile(50), 0.25)
        text = summary.format()
        self.assertIn("replay done: 4 requests sent", text)
        self.assertIn("responses: 200: 1, 404: 1", text)
        self.assertIn("errors: 2 (ConnectionRefusedError: 1, TimeoutError: 1)", text)
        self.assertIn("skipped: 1", text)
        self.assertIn("latency: p50 250ms p90 250ms p99 250ms max 250ms", text)

    def test_headers_and_body_are_sent_as_recorded(self) -> None:
        body = bytes(range(256))
        headers = (
            (b"Content-Type", b"application/octet-stream"),
            (b"X-Custom", b"one"),
            (b"X-Custom", b"two"),
            (b"Host", b"old.example"),
            (b"Content-Length", b"999"),
            (b"Connection", b"keep-alive, X-Hop"),
            (b"X-Hop", b"dropped"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Proxy-Authorization", b"secret"),
        )
        odd = RecordedRequest(100.0, b"PUT", b"/a b/\xe9?q=1&r=%20", headers, body)
        _, done = self.replay([odd])
        self.agent.flush()
        self.successResultOf(done)
        (seen,) = self.target.seen
        self.assertEqual(seen.method, b"PUT")
        self.assertEqual(seen.uri, b"/prefix/a%20b/%E9?q=1&r=%20")
        self.assertEqual(seen.body, body)
        self.assertEqual(seen.headers[b"X-Custom"], [b"one", b"two"])
        self.assertEqual(seen.headers[b"Host"], [b"target.example:8080"])
        self.assertEqual(seen.headers[b"Content-Length"], [b"256"])
        for name in (b"X-Hop", b"Transfer-Encoding", b"Proxy-Authorization"):
            self.assertNotIn(name, seen.headers)
        self.assertNotIn(b"Accept-Encoding", seen.headers)

    def test_interrupt_cancels_what_is_in_flight_and_sends_nothing_more(self) -> None:
        self.target.hold = True
        records = [record(n, 100.0 + n) for n in range(5)]
        replay, done = self.replay(records, concurrency=3)
        self.advance(1)
        self.assertEqual(len(self.sent()), 2)
        replay.interrupt()
        summary = self.successResultOf(done)
        self.assertTrue(summary.interrupted)
        self.assertEqual((summary.sent, summary.cancelled, summary.errors), (2, 2, {}))
        self.advance(10)
        self.assertEqual(len(self.sent()), 2)
        self.assertIn("replay interrupted", summary.format())
        self.assertIn("cancelled: 2", summary.format())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_interrupt_while_waiting_for_the_next_request(self) -> None:
        replay, done = self.replay([record(0, 100.0), record(1, 200.0)])
        self.advance(1)
        replay.interrupt()
        self.assertEqual(self.successResultOf(done).sent, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_interrupt_while_waiting_for_a_slot(self) -> None:
        self.target.hold = True
        replay, done = self.replay([record(0, 100.0), record(1, 100.0)], concurrency=1)
        self.advance(0)
        replay.interrupt()
        summary = self.successResultOf(done)
        self.assertEqual((summary.sent, summary.cancelled), (1, 1))


class ProgressTests(SynchronousTestCase):
    def test_a_terminal_gets_a_bar_redrawn_in_place(self) -> None:
        clock = Clock()
        summary = ReplaySummary(total=4, sent=2, responses={200: 1})
        stream = io.StringIO()
        progress = Progress(summary, stream, clock, tty=True)
        progress.start()
        clock.advance(0.2)
        summary.responses[200] = 2
        progress.stop()
        text = stream.getvalue()
        self.assertEqual(text.count("\r"), 3)
        self.assertIn("[" + "#" * 7 + "-" * 23 + "]  25% 2/4 sent", text)
        self.assertTrue(
            text.endswith(
                "[" + "#" * 15 + "-" * 15 + "]  50% 2/4 sent, 2 done, 0 errors, 0.0s\n"
            )
        )

    def test_a_log_gets_a_line_every_few_seconds(self) -> None:
        clock = Clock()
        stream = io.StringIO()
        progress = Progress(ReplaySummary(total=9), stream, clock, tty=False)
        progress.start()
        clock.advance(4.9)
        self.assertEqual(len(stream.getvalue().splitlines()), 1)
        clock.advance(0.1)
        progress.stop()
        self.assertEqual(
            stream.getvalue().splitlines(),
            ["replay: 0/9 sent, 0 done, 0 errors, 0.0s"] * 3,
        )


def write_recording(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "w") as f:
        for item in records:
            f.write(json.dumps(item) + "\n")
        f.write("{cut short\n")


def recorded(uri: str, epoch: float, body: bytes = b"") -> dict[str, Any]:
    return {
        "epoch": epoch,
        "method": "POST" if body else "GET",
        "uri": uri,
        "headers": [["X-Test", "yes"]],
        "body": base64.b64encode(body).decode(),
        "body_base64": True,
    }


class ReplayMainTests(SynchronousTestCase):
    """The command's coroutine: files, progress, summary, Ctrl-C."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.target = Target()
        self.agent = RequestTraversalAgent(self.target)
        self.path = temp_dir(self) / "traffic.jsonl"
        write_recording(
            self.path,
            [recorded("/a", 10.0), recorded("/b", 10.5, b"\x00\xff")],
        )
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()

    def run_main(self) -> Deferred[None]:
        options = ReplayOptions((str(self.path),), TARGET)
        return Deferred.fromCoroutine(
            replay_main(
                self.reactor,
                options,
                agent=self.agent,
                stdout=self.stdout,
                stderr=self.stderr,
            )
        )

    def test_replays_the_file_and_prints_the_summary(self) -> None:
        done = self.run_main()
        self.reactor.advance(0.5)
        self.agent.flush()
        self.successResultOf(done)
        self.assertEqual([s.body for s in self.target.seen], [b"", b"\x00\xff"])
        self.assertIn(
            f"replaying 3 requests from {self.path} to {TARGET.decode()}",
            self.stderr.getvalue(),
        )
        self.assertIn("replay: 2/3 sent", self.stderr.getvalue())
        out = self.stdout.getvalue()
        self.assertIn("replay done: 2 requests sent", out)
        self.assertIn("skipped: 1", out)

    def test_ctrl_c_prints_the_summary_and_exits_130(self) -> None:
        self.target.hold = True
        done = self.run_main()
        self.agent.flush()
        [(shutdown, args, kwargs)] = self.reactor.triggers["before"]["shutdown"]
        # What SIGINT does: the reactor stops, running "before shutdown"
        # triggers and waiting for the Deferreds they return.
        waiting = shutdown(*args, **kwargs)
        failure = self.failureResultOf(done, SystemExit)
        self.assertEqual(failure.value.code, INTERRUPTED)
        self.successResultOf(waiting)
        self.assertIn("replay interrupted: 1 requests sent", self.stdout.getvalue())
        self.assertIn("cancelled: 1", self.stdout.getvalue())


class CommandLineTests(SynchronousTestCase):
    def test_bad_arguments_are_usage_errors(self) -> None:
        path = str(temp_dir(self) / "empty.jsonl")
        Path(path).write_text("")
        for argv in (
            ["replay", path],
            ["replay", path, "--to", "ftp://h/"],
            ["replay", path, "--to", "http://h/?q=1"],
            ["replay", path, "--to", "http://h", "--speed", "0"],
            ["replay", path, "--to", "http://h", "--rate", "x"],
            ["replay", path, "--to", "http://h", "--rate", "1", "--speed", "2"],
            ["replay", path, "--to", "http://h", "--concurrency", "0"],
            ["replay", path, "--to", "http://h", "--timeout", "10x"],
            ["replay", path + ".missing", "--to", "http://h"],
            [],
        ):
            with pytest.raises(SystemExit) as caught:
                main(argv)
            self.assertEqual(caught.value.code, 2, argv)

    def test_target_url(self) -> None:
        self.assertEqual(target_url("http://h:1/p/"), b"http://h:1/p")
        self.assertEqual(target_url("https://[::1]"), b"https://[::1]")
        with pytest.raises(ValueError):
            target_url("http://h:99999")

    def test_read_records_names_the_bad_lines(self) -> None:
        path = temp_dir(self) / "traffic.jsonl"
        write_recording(path, [recorded("/a", 1.0)])
        items = list(read_records([str(path)]))
        self.assertIsInstance(items[0], RecordedRequest)
        self.assertIsInstance(items[1], RecordError)
        self.assertTrue(str(items[1]).startswith(f"{path}:2: "))


# -- real sockets ------------------------------------------------------------


class RoundTripTests(TestCase):
    """Record through a real inbound into a file, replay it to a real service."""

    timeout = 20

    @inlineCallbacks
    def test_replay_sends_what_the_inbound_recorded(self) -> Any:
        prod = RecordingService("prod")
        prod.listen()
        self.addCleanup(prod.close)
        path = temp_dir(self) / "traffic.jsonl"
        config = inbound_config(
            "rec", out={"prod": prod.address, "file": f"file://{path}"}
        )
        controller = Controller(reactor)
        stopped = False

        def stop() -> Deferred[None]:
            nonlocal stopped
            if stopped:
                return succeed(None)
            stopped = True
            return Deferred.fromCoroutine(controller.stop())

        self.addCleanup(stop)
        running = yield Deferred.fromCoroutine(controller.add_inbound(config))
        port = running.port.getHost().port
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        binary = bytes(range(256)) * 4
        sent = [
            ("GET", "/items?id=1&q=a%20b", b"", {b"X-Test": [b"get"]}),
            ("POST", "/upload/bin", binary, {b"Content-Type": [b"image/png"]}),
            ("PUT", "/text", "naïve".encode(), {b"X-Multi": [b"1", b"2"]}),
            ("DELETE", "/items/7", b"", {b"Authorization": [b"Bearer t"]}),
        ]
        for method, uri, body, headers in sent:
            response = yield treq.request(
                method,
                f"http://127.0.0.1:{port}{uri}".encode(),
                data=body or None,
                headers=Headers(headers),
                pool=pool,
            )
            yield treq.content(response)
        # Stopping the controller closes the sink, which writes its buffer.
        yield stop()
        self.assertEqual(len(path.read_bytes().splitlines()), len(sent))

        service = RecordingService("replayed")
        service.listen()
        self.addCleanup(service.close)
        target = f"http://{service.address}".encode()
        replay_pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(replay_pool.closeCachedConnections)

        replay = Replay(
            read_records([str(path)]),
            target,
            agent=Agent(reactor, pool=replay_pool),
            clock=cast(Any, reactor),
            rate=1000.0,
            concurrency=1,
        )
        summary = yield replay.run()
        self.assertEqual(summary.responses, {200: len(sent)})
        self.assertEqual(
            [(m, u, b) for m, u, b, _ in service.requests],
            [(m.encode(), u.encode(), b) for m, u, b, _ in sent],
        )
        for (_, _, _, client_headers), (_, _, _, replayed) in zip(
            sent, service.requests, strict=True
        ):
            for name, values in client_headers.items():
                self.assertEqual(replayed[name], values)
            self.assertEqual(replayed[b"X-Nfork"], [b"true"])


# -- the installed command ---------------------------------------------------

NFORK = Path(sys.executable).with_name("nfork")


@pytest.fixture
def slow_target(threaded_backend: Callable[..., ThreadedBackend]) -> ThreadedBackend:
    """Answers every request after half a second; C{arrived} at the first."""
    return threaded_backend(delay=0.5)


def test_ctrl_c_stops_the_command_with_the_summary(
    tmp_path: Path, slow_target: ThreadedBackend
) -> None:
    # `make test` installs nfork, console script included.
    assert NFORK.exists(), f"{NFORK} missing: run the suite through make test"
    path = tmp_path / "traffic.jsonl"
    write_recording(path, [recorded(f"/{n}", 100.0 + n) for n in range(100)])
    port = slow_target.port
    process = subprocess.Popen(
        [str(NFORK), "replay", str(path), "--to", f"http://127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert slow_target.arrived.wait(15), "the replay sent nothing"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == INTERRUPTED, err
    assert "replay interrupted: 1 requests sent" in out
    assert "cancelled: 1" in out
    assert "Traceback" not in err


# -- comparing the answers (--compare) ---------------------------------------

RECORDED_BODY = b'{"id": 7, "name": "ada", "tags": ["a"]}'
REPLAYED_BODY = b'{"id": 7, "name": "bob", "tags": ["a"]}'
JSON_HEADERS = ((b"Content-Type", b"application/json"),)


def with_answer(uri: bytes, body: bytes = RECORDED_BODY) -> RecordedRequest:
    """A record carrying the answer the active outbound gave."""
    answer = CapturedAnswer(200, JSON_HEADERS, body, length=len(body))
    return RecordedRequest(1.0, b"GET", uri, (), b"", answer=answer)


class JSONTarget(Resource):
    """Answers JSON: C{REPLAYED_BODY}, or 500 for paths ending in /broken."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        if request.uri.endswith(b"/broken"):
            request.setResponseCode(500)
        return REPLAYED_BODY


class ReplayComparisonTests(SynchronousTestCase):
    """The target's answers against the recorded ones, over an in-memory agent."""

    def replay(
        self, records: list[RecordedRequest], settings: CompareConfig | None = None
    ) -> ReplayComparison:
        comparison = ReplayComparison(settings or CompareConfig(), "http://t")
        agent = FailingAgent(RequestTraversalAgent(JSONTarget()))
        replay = Replay(
            records,
            TARGET,
            agent=agent,
            clock=Clock(),
            comparison=comparison,
        )
        self.successResultOf(replay.run())
        return comparison

    def fields(self, comparison: ReplayComparison, endpoint: str) -> dict[str, Any]:
        candidate = comparison.report()["candidates"]["http://t"]
        fields: dict[str, Any] = candidate["endpoints"][endpoint]["fields"]
        return fields

    def test_the_differing_field_is_reported_per_endpoint(self) -> None:
        comparison = self.replay(
            [with_answer(b"/users/%d" % n) for n in range(1, 5)]
            + [with_answer(b"/same", REPLAYED_BODY)]
        )
        self.assertEqual(comparison.compared, 5)
        fields = self.fields(comparison, "GET /users/:int")
        self.assertEqual(list(fields), ["$.name"])
        self.assertEqual(fields["$.name"]["raw"], 4)
        self.assertEqual(fields["$.name"]["verdict"], "difference")
        self.assertEqual(self.fields(comparison, "GET /same"), {})
        text = comparison.format()
        self.assertTrue(text.startswith("compared: 5 answers with the recorded ones\n"))
        lines = text.splitlines()
        name = next(i for i, line in enumerate(lines) if "$.name" in line)
        self.assertEqual(lines[name].split()[:2], ["difference", "$.name"])
        self.assertEqual(lines[name + 1].split(), ["primary:", '"ada"'])
        self.assertEqual(lines[name + 2].split(), ["candidate:", '"bob"'])
        self.assertIn("primary recorded answers, no baseline", text)
        self.assertTrue(text.endswith("verdict: DIFFERENCE (http://t)\n"))

    def test_settings_apply_ignore_rules_and_endpoint_patterns(self) -> None:
        settings = CompareConfig(ignore=("$.name",), endpoints=("GET /users/:who",))
        comparison = self.replay([with_answer(b"/users/1")], settings)
        self.assertEqual(self.fields(comparison, "GET /users/:who"), {})
        self.assertTrue(comparison.format().endswith("verdict: no difference\n"))

    def test_records_without_answers_are_replayed_not_compared(self) -> None:
        comparison = self.replay([record(1, 1.0), with_answer(b"/users/1")])
        self.assertEqual((comparison.compared, comparison.without_answer), (1, 1))
        self.assertIn(
            "compared: 1 answers with the recorded ones; 1 records without an "
            "answer not compared",
            comparison.format(),
        )

    def test_an_error_or_a_status_is_a_status_difference(self) -> None:
        comparison = self.replay([with_answer(b"/x/fail"), with_answer(b"/x/broken")])
        self.assertEqual(comparison.compared, 2)
        candidate = comparison.report()["candidates"]["http://t"]
        self.assertEqual(candidate["differing"], 2)
        failed = self.fields(comparison, "GET /x/fail")
        self.assertEqual(failed["status"]["kinds"], {"status": 1})
        self.assertEqual(list(failed), ["status"])
        broken = self.fields(comparison, "GET /x/broken")
        self.assertEqual(broken["status"]["kinds"], {"status": 1})

    def test_a_long_answer_is_kept_up_to_max_body_with_a_digest(self) -> None:
        seen: list[CapturedAnswer] = []
        comparison = ReplayComparison(CompareConfig(max_body=10), "http://t")
        compare = comparison.compare

        def spy(record: RecordedRequest, answer: CapturedAnswer) -> bool:
            seen.append(answer)
            return compare(record, answer)

        comparison.compare = spy  # type: ignore[method-assign]
        replay = Replay(
            [with_answer(b"/long")],
            TARGET,
            agent=RequestTraversalAgent(JSONTarget()),
            clock=Clock(),
            comparison=comparison,
        )
        self.successResultOf(replay.run())
        [answer] = seen
        self.assertEqual(answer.body, REPLAYED_BODY[:10])
        self.assertEqual(answer.length, len(REPLAYED_BODY))
        self.assertEqual(answer.digest, hashlib.sha256(REPLAYED_BODY).digest())

    def run_main(self, path: Path, **options: Any) -> tuple[int, str]:
        """C{(exit status, stdout)} of replay_main on the recording."""
        stdout = io.StringIO()
        done = Deferred.fromCoroutine(
            replay_main(
                MemoryReactorClock(),
                ReplayOptions((str(path),), TARGET, **options),
                agent=RequestTraversalAgent(JSONTarget()),
                stdout=stdout,
                stderr=io.StringIO(),
            )
        )
        statuses: list[int] = []

        def exited(failure: Failure) -> None:
            failure.trap(SystemExit)
            statuses.append(int(cast(SystemExit, failure.value).code or 0))

        self.successResultOf(done.addErrback(exited))
        return (statuses or [0])[0], stdout.getvalue()

    def test_fail_on_difference_exits_1_only_on_a_difference(self) -> None:
        path = temp_dir(self) / "traffic.jsonl"
        path.write_bytes(
            encode_record(
                ProxyRequest(
                    b"GET",
                    b"/u/1",
                    (),
                    b"",
                    answer=CapturedAnswer(200, JSON_HEADERS, RECORDED_BODY, 39),
                ),
                "s",
                "r",
            )
        )
        for settings, expected in (
            (CompareConfig(), DIFFERENCE),
            (CompareConfig(ignore=("$.name",)), 0),
        ):
            status, out = self.run_main(path, compare=settings, fail_on_difference=True)
            self.assertEqual(status, expected, out)
        status, _ = self.run_main(path, compare=CompareConfig())
        self.assertEqual(status, 0)

    def test_replay_main_prints_the_report_after_the_summary(self) -> None:
        path = temp_dir(self) / "traffic.jsonl"
        line = encode_record(
            ProxyRequest(
                b"GET",
                b"/users/3",
                (),
                b"",
                answer=CapturedAnswer(200, JSON_HEADERS, RECORDED_BODY, 39),
            ),
            "shop",
            "rec",
        )
        path.write_bytes(line)
        stdout = io.StringIO()
        done = Deferred.fromCoroutine(
            replay_main(
                MemoryReactorClock(),
                ReplayOptions((str(path),), TARGET, compare=CompareConfig()),
                agent=RequestTraversalAgent(JSONTarget()),
                stdout=stdout,
                stderr=io.StringIO(),
            )
        )
        self.successResultOf(done)
        out = stdout.getvalue()
        self.assertLess(out.index("replay done"), out.index("compared: 1 answers"))
        self.assertIn("difference  $.name", out)


class CompareSettingsTests(SynchronousTestCase):
    def test_settings_are_read_from_a_compare_object(self) -> None:
        path = temp_dir(self) / "compare.json"
        path.write_text('{"ignore": ["$.meta"], "maxBody": 2048, "samples": 3}')
        settings = read_compare_settings(str(path))
        self.assertEqual(
            (settings.ignore, settings.max_body, settings.samples),
            (("$.meta",), 2048, 3),
        )

    def test_bad_settings_and_options_are_usage_errors(self) -> None:
        directory = temp_dir(self)
        recording = directory / "r.jsonl"
        recording.write_text("")
        bad = directory / "bad.json"
        for text, message in (
            ('{"sampels": 3}', 'unknown key "sampels" (did you mean "samples"?)'),
            ("{", "invalid JSON"),
            ('{"ignore": ["$..x"]}', 'key "compare.ignore"'),
        ):
            bad.write_text(text)
            with pytest.raises(ValueError, match=re.escape(message)):
                read_compare_settings(str(bad))
        with pytest.raises(ValueError, match="cannot read"):
            read_compare_settings(str(directory / "missing.json"))
        to = ["--to", "http://h"]
        for argv in (
            ["replay", str(recording), *to, "--compare-settings", str(bad)],
            ["replay", str(recording), *to, "--fail-on", "difference"],
            [
                "replay",
                str(recording),
                *to,
                "--compare",
                "--compare-settings",
                str(bad),
            ],
        ):
            with pytest.raises(SystemExit) as caught:
                main(argv)
            self.assertEqual(caught.value.code, 2, argv)


class ReplayCompareLoopbackTests(TestCase):
    """A recording with answers replayed to a real loopback backend."""

    timeout = 20

    @inlineCallbacks
    def test_the_report_names_the_field_the_backend_changed(self) -> Any:
        service = RecordingService("candidate", 200, body=REPLAYED_BODY)
        service.listen()
        self.addCleanup(service.close)
        path = temp_dir(self) / "traffic.jsonl"
        with open(path, "wb") as recording:
            for n in range(5):
                answer = CapturedAnswer(
                    200, JSON_HEADERS, RECORDED_BODY, length=len(RECORDED_BODY)
                )
                request = ProxyRequest(b"GET", b"/users/%d" % n, (), b"", answer=answer)
                recording.write(encode_record(request, "shop", "rec"))
            recording.write(
                encode_record(ProxyRequest(b"GET", b"/old", (), b""), "s", "r")
            )
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        target = f"http://{service.address}"
        # The service names itself in a header and answers text/html.
        ignore_headers = (*DEFAULT_IGNORE_HEADERS, "X-Service", "Content-Type")
        comparison = ReplayComparison(
            CompareConfig(ignore_headers=ignore_headers), target
        )
        replay = Replay(
            read_records([str(path)]),
            target.encode(),
            agent=Agent(reactor, pool=pool),
            clock=cast(Any, reactor),
            rate=1000.0,
            comparison=comparison,
        )
        summary = yield replay.run()
        self.assertEqual(summary.responses, {200: 6})
        self.assertEqual((comparison.compared, comparison.without_answer), (5, 1))
        report = comparison.report()
        endpoints = report["candidates"][target]["endpoints"]
        self.assertEqual(list(endpoints), ["GET /users/:int"])
        fields = endpoints["GET /users/:int"]["fields"]
        self.assertEqual(list(fields), ["$.name"])
        self.assertEqual(fields["$.name"]["verdict"], "difference")
        self.assertEqual(fields["$.name"]["kinds"], {"value": 5})
        self.assertIn("difference  $.name  raw 5", comparison.format())
