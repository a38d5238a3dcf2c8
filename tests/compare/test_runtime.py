"""The comparison at run time: the fork keeps the compared answers, the
comparer diffs them off the client's path, within its queue and CPU share."""

from __future__ import annotations

import json
from typing import Any

from attrs import define
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nfork.compare.runtime import Comparer, UnknownCandidate, build_comparer
from nfork.proxy.messages import ProxyRequest
from tests.support.fakes import FakeOutbound
from tests.support.forks import THREE_BACKENDS, Harness, fork_config

URL = "http://inbound.example/users/17?x=1"
JSON = ((b"Content-Type", b"application/json"),)


def _body(**values: Any) -> bytes:
    return json.dumps({"id": 17, "name": "Ada", **values}).encode()


def _comparer(h: Harness) -> Comparer:
    comparer = h.fork.routing.comparer
    assert comparer is not None
    return comparer


def _endpoint(h: Harness, candidate: str = "staging") -> dict[str, Any]:
    report = _comparer(h).report()["candidates"][candidate]
    (endpoint,) = report["endpoints"].values()
    assert isinstance(endpoint, dict)
    return endpoint


@define
class RecordingSink(FakeOutbound):
    """A sink that records answers: its copies wait for the active's answer."""

    gives_response: bool = False
    records_answers: bool = True


class ComparingForkTests(SynchronousTestCase):
    """prod is the primary, staging the candidate, logging the baseline."""

    def setUp(self) -> None:
        self.h = Harness(
            fork_config(compare={"candidates": ["staging"], "baseline": "logging"})
        )

    def _exchange(
        self, prod: bytes, staging: bytes | None, logging: bytes | None
    ) -> None:
        d = self.h.stub.get(URL)
        self.h["prod"].last.answer(200, prod, JSON)
        self.h.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        if staging is not None:
            self.h["staging"].last.answer(200, staging, JSON)
        if logging is not None:
            self.h["logging"].last.answer(200, logging, JSON)

    def test_compared_copies_keep_their_bodies(self) -> None:
        self.h.stub.get(URL)
        self.assertTrue(self.h["staging"].last.keep_body)
        self.assertTrue(self.h["logging"].last.keep_body)

    def test_client_answered_before_the_comparison_happens(self) -> None:
        d = self.h.stub.get(URL)
        self.h["prod"].last.answer(200, _body(), JSON)
        self.h.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(_comparer(self.h).pending, 1)
        self.h["staging"].last.answer(200, _body(name="Bob"), JSON)
        self.h["logging"].last.answer(200, _body(), JSON)
        # Queued, compared on the next turn of the reactor.
        self.assertEqual(
            _comparer(self.h).report()["candidates"]["staging"]["compared"], 0
        )
        self.h.clock.advance(0)
        report = _comparer(self.h).report()
        self.assertEqual(report["primary"], "prod")
        self.assertEqual(report["baseline"], "logging")
        staging = report["candidates"]["staging"]
        self.assertEqual((staging["compared"], staging["differing"]), (1, 1))
        self.assertEqual(list(staging["endpoints"]), ["GET /users/:int"])
        fields = _endpoint(self.h)["fields"]
        self.assertEqual(fields["$.name"]["raw"], 1)
        self.assertEqual(fields["$.name"]["noise"], 0)
        self.assertEqual(_comparer(self.h).pending, 0)

    def test_a_difference_the_baseline_shares_is_noise(self) -> None:
        for n in range(5):
            self._exchange(_body(t=n), _body(t=n + 100), _body(t=n + 200))
        self.h.clock.advance(0)
        field = _endpoint(self.h)["fields"]["$.t"]
        self.assertEqual((field["raw"], field["noise"]), (5, 5))
        self.assertEqual(field["verdict"], "noise")
        staging = _comparer(self.h).report()["candidates"]["staging"]
        self.assertEqual((staging["compared"], staging["differing"]), (5, 0))

    def test_a_candidate_timeout_is_a_status_difference(self) -> None:
        self._exchange(_body(), None, _body())
        self.h.clock.advance(0.2)  # past the 100 ms timeout
        field = _endpoint(self.h)["fields"]["status"]
        self.assertEqual(field["raw"], 1)
        (sample,) = _comparer(self.h).samples("staging", "GET /users/:int", "status")
        self.assertEqual(sample["answers"]["candidate"]["error"], "timeout")

    def test_no_answer_from_the_primary_compares_nothing(self) -> None:
        d = self.h.stub.get(URL)
        self.h["staging"].last.answer(200, _body(), JSON)
        self.h["logging"].last.answer(200, _body(), JSON)
        self.h.clock.advance(0.2)
        self.h.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 503)
        staging = _comparer(self.h).report()["candidates"]["staging"]
        self.assertEqual((staging["compared"], staging["skipped"]), (0, 1))

    def test_full_queue_skips_new_requests(self) -> None:
        comparer = _comparer(self.h)
        limit = comparer.settings.queue
        for _ in range(limit + 3):
            self.h.stub.get(URL)  # answers pending: every job stays open
        self.assertEqual(comparer.pending, limit)
        staging = comparer.report()["candidates"]["staging"]
        self.assertEqual(staging["skipped"], 3)
        self.assertEqual(len(self.h["staging"].sent), limit + 3)

    def test_comparing_stops_at_its_cpu_share_until_the_next_window(self) -> None:
        comparer = _comparer(self.h)
        now = [0.0]

        def timer() -> float:
            now[0] += 0.1  # every reading costs 100 ms of comparing
            return now[0]

        comparer._timer = timer
        for _ in range(10):
            self._exchange(_body(), _body(), _body())
        self.h.clock.advance(0)
        compared = comparer.report()["candidates"]["staging"]["compared"]
        self.assertLess(compared, 10)
        self.assertGreater(comparer.pending, 0)
        # The rest waits for the next one-second window.
        self.h.clock.advance(0.5)
        self.assertEqual(
            comparer.report()["candidates"]["staging"]["compared"], compared
        )
        for _ in range(20):
            self.h.clock.advance(1)
        self.assertEqual(comparer.report()["candidates"]["staging"]["compared"], 10)
        self.assertEqual(comparer.pending, 0)

    def test_requests_arriving_one_by_one_wait_once_the_share_is_spent(self) -> None:
        comparer = _comparer(self.h)
        now = [0.0]

        def timer() -> float:
            now[0] += 0.06  # a comparison costs more than the share (0.1 s)
            return now[0]

        comparer._timer = timer
        self.h.clock.advance(5)  # a fresh window
        compared = []
        for _ in range(3):
            self._exchange(_body(), _body(), _body())
            self.h.clock.advance(0)
            compared.append(comparer.report()["candidates"]["staging"]["compared"])
        # The first spends the window's share; the others wait for the next.
        self.assertEqual(compared, [1, 1, 1])
        self.h.clock.advance(1)
        self.assertEqual(comparer.report()["candidates"]["staging"]["compared"], 2)
        self.h.clock.advance(1)
        self.assertEqual(comparer.report()["candidates"]["staging"]["compared"], 3)

    def test_a_dropped_candidate_copy_is_skipped(self) -> None:
        h = Harness(
            fork_config(
                out={
                    **THREE_BACKENDS,
                    "staging": {"addr": THREE_BACKENDS["staging"], "maxInflight": 1},
                },
                compare={"candidates": ["staging"]},
            )
        )
        h.stub.get(URL)
        h.stub.get(URL)
        staging = _comparer(h).report()["candidates"]["staging"]
        self.assertEqual(staging["skipped"], 1)
        self.assertEqual(len(h["staging"].sent), 1)

    def test_unknown_candidate_samples_refused(self) -> None:
        with self.assertRaises(UnknownCandidate) as caught:
            _comparer(self.h).samples("logging", "GET /", "status")
        self.assertIn('"logging" is not a candidate', str(caught.exception))
        self.assertEqual(_comparer(self.h).samples("staging", "GET /", "status"), [])

    def test_reset_forgets_the_counters(self) -> None:
        self._exchange(_body(), _body(name="Eve"), _body())
        self.h.clock.advance(0)
        _comparer(self.h).reset()
        staging = _comparer(self.h).report()["candidates"]["staging"]
        self.assertEqual((staging["compared"], staging["endpoints"]), (0, {}))


class RolesTests(SynchronousTestCase):
    """Who is compared: the defaults, the active, and a comparer's lifetime."""

    def _build(self, config: Any, previous: Comparer | None = None) -> Comparer:
        h = Harness(config)
        comparer = build_comparer(config, h.routes, previous, Clock())
        assert comparer is not None
        return comparer

    def test_candidates_default_to_the_shadows_that_answer(self) -> None:
        sink = RecordingSink()
        config = fork_config(
            out={**THREE_BACKENDS, "rec": "file:///tmp/x.log"},
            compare={"baseline": "logging"},
        )
        h = Harness(config, {"rec": sink})
        comparer = build_comparer(config, h.routes, None, Clock())
        assert comparer is not None
        self.assertEqual(comparer.candidates, ("staging",))
        self.assertEqual(comparer.baseline, "logging")

    def test_no_compare_settings_no_comparer(self) -> None:
        h = Harness(fork_config())
        self.assertIsNone(h.fork.routing.comparer)

    def test_kept_while_settings_and_primary_stay(self) -> None:
        config = fork_config(compare={"candidates": ["staging"]})
        first = self._build(config)
        self.assertIs(self._build(config, first), first)
        switched = config.with_active("logging")
        second = self._build(switched, first)
        self.assertIsNot(second, first)
        self.assertEqual(second.primary, "logging")

    def test_an_active_candidate_is_not_compared_with_itself(self) -> None:
        config = fork_config(compare={"candidates": ["staging", "logging"]})
        comparer = self._build(config.with_active("staging"))
        self.assertEqual(comparer.candidates, ("logging",))


class RecordingSinkTests(SynchronousTestCase):
    """A sink recording answers gets its copy once the active's answer is in."""

    def test_copy_waits_for_the_answer_and_carries_it(self) -> None:
        config = fork_config(out={**THREE_BACKENDS, "rec": "file:///tmp/x.log"})
        sink = RecordingSink()
        h = Harness(config, {"rec": sink})
        h.stub.get(URL)
        self.assertEqual(sink.sent, [])
        self.assertEqual(len(h["staging"].sent), 1)
        h["prod"].last.answer(201, b"made", ((b"X-A", b"1"),))
        (copy,) = sink.sent
        request: ProxyRequest = copy.request
        self.assertEqual(request.uri, b"/users/17?x=1")
        assert request.answer is not None
        self.assertEqual(
            (request.answer.code, request.answer.body, request.answer.headers),
            (201, b"made", ((b"X-A", b"1"),)),
        )

    def test_no_answer_is_recorded_as_its_error(self) -> None:
        config = fork_config(out={**THREE_BACKENDS, "rec": "file:///tmp/x.log"})
        sink = RecordingSink()
        h = Harness(config, {"rec": sink})
        h.stub.get(URL)
        h.clock.advance(0.2)
        (copy,) = sink.sent
        assert copy.request.answer is not None
        self.assertEqual(copy.request.answer.error, "timeout")
