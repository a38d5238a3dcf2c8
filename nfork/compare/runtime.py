"""The comparison of one inbound at run time: which answers, when, how many.

The fork asks its routing's L{Comparer} for a L{ComparisonJob} per request
(L{Comparer.begin}); the job keeps the answers of the primary (the active
outbound), the candidates and the baseline as they come (L{AnswerCapture}).
When all are in, the job joins a queue that the reactor works through in
short slices after the client has its answer, within a share of the CPU:
when the queue is full, new requests are not compared and counted
C{skipped}.  The engine (L{nfork.compare.diff}, L{nfork.compare.tally})
does the comparing and counting.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from nfork.compare.capture import AnswerCapture
from nfork.compare.diff import CompareRules, diff_answers
from nfork.compare.endpoints import EndpointNamer
from nfork.compare.tally import Tally
from nfork.proxy.messages import CapturedAnswer, ProxyRequest

if TYPE_CHECKING:
    from nfork.config import InboundConfig
    from nfork.config.compare import CompareConfig
    from nfork.proxy.fork import OutboundRoute

__all__ = [
    "CPU_SHARE",
    "Comparer",
    "ComparisonJob",
    "UnknownCandidate",
    "build_comparer",
]

CPU_SHARE = 0.1
"""The largest share of wall-clock time spent comparing, per second."""
_SLICE = 0.002
"""Seconds of comparing before the reactor gets back to the connections."""
_WINDOW = 1.0
"""Seconds over which L{CPU_SHARE} is measured."""
_KEEPING_COST = 15e-6
"""Seconds charged to the share per compared request for keeping its
answers on the way (the job, the captures, the bodies kept): measured at
10-15 us, spent in the fork rather than in the comparison's slices."""


_RESEND_SAMPLES = 30
"""Every this many L{Comparer.export}s, all the samples are sent again, for a
reader that missed some."""


class UnknownCandidate(LookupError):
    """The outbound named is not a candidate of the inbound's comparison."""


class Comparer:
    """Compares the answers of one inbound's candidates with the primary's.

    One per inbound with C{compare} settings; a routing change keeps it
    while the settings and the active outbound stay the same (the roles of
    the other outbounds are updated), so its counters survive adding a
    shadow but not a new primary.
    """

    def __init__(
        self,
        inbound: str,
        settings: CompareConfig,
        primary: str,
        clock: IReactorTime,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.inbound = inbound
        self.settings = settings
        self.primary = primary
        self.candidates: tuple[str, ...] = ()
        self.baseline: str | None = None
        self._roles: frozenset[str] = frozenset()
        self._clock = clock
        self._timer = timer
        self.rules = CompareRules(
            settings.ignore_headers, settings.ignore, settings.max_body
        )
        self.namer = EndpointNamer(settings.endpoints)
        self.tally = Tally(
            relative=settings.relative,
            absolute=settings.absolute,
            samples=settings.samples,
        )
        self.pending = 0
        """Jobs begun and not yet compared (collecting answers or queued)."""
        self._queue: deque[ComparisonJob] = deque()
        self._call: IDelayedCall | None = None
        self._window_start = 0.0
        self._spent = 0.0
        self._exports = 0
        self._sent = (-1, 0)
        """The tally's epoch and the samples stored at the last L{export}."""

    def set_roles(self, candidates: Sequence[str], baseline: str | None) -> None:
        """The outbounds compared now (a routing change may add or remove some)."""
        self.candidates = tuple(candidates)
        self.baseline = baseline
        names = set(self.candidates)
        if baseline is not None:
            names.add(baseline)
        self._roles = frozenset(names)

    def roles(self) -> frozenset[str]:
        """The names of the outbounds whose answers a job keeps, primary aside."""
        return self._roles

    # -- the fork's side ------------------------------------------------

    def begin(self, request: ProxyRequest) -> ComparisonJob | None:
        """A job for C{request}, or None when the queue is full (skipped)."""
        if not self.candidates:
            return None
        if self.pending >= self.settings.queue:
            for candidate in self.candidates:
                self.tally.skip(candidate)
            return None
        self.pending += 1
        return ComparisonJob(self, request)

    def _abandon(self, job: ComparisonJob) -> None:
        """A job that got no candidate's copy: nothing to compare."""
        self.pending -= 1

    def _ready(self, job: ComparisonJob) -> None:
        """Every answer of C{job} is in: queue it."""
        self._queue.append(job)
        self._spent += _KEEPING_COST
        if self._call is None:
            self._schedule()

    def _schedule(self) -> None:
        """Drain the queue at once, or when the next window opens if this
        window's share of the CPU is spent."""
        now = self._clock.seconds()
        delay = 0.0
        if self._spent >= CPU_SHARE * _WINDOW:
            delay = max(0.0, self._window_start + _WINDOW - now)
        self._call = self._clock.callLater(delay, self._drain)

    def _drain(self) -> None:
        """Compare queued jobs for one slice, within the CPU share."""
        self._call = None
        now = self._clock.seconds()
        if now - self._window_start >= _WINDOW:
            self._window_start = now
            self._spent = 0.0
        timer = self._timer
        start = timer()
        queue = self._queue
        try:
            while queue:
                job = queue.popleft()
                self.pending -= 1
                self._compare(job)
                if timer() - start >= _SLICE:
                    break
        finally:
            self._spent += timer() - start
        if queue:
            self._schedule()

    def _compare(self, job: ComparisonJob) -> None:
        """Diff each candidate's answer with the primary's and count it."""
        answers = job.answers()
        primary = answers.get(self.primary)
        candidates = [
            (name, answers[name]) for name in self.candidates if name in answers
        ]
        tally = self.tally
        if primary is None or primary.error is not None:
            # Nothing to compare with: the client got an error too.
            for name, _ in candidates:
                tally.skip(name)
            return
        rules = self.rules
        request = job.request
        endpoint = self.namer.name(request.method, request.uri)
        baseline = None if self.baseline is None else answers.get(self.baseline)
        noise = [] if baseline is None else diff_answers(primary, baseline, rules)
        for name, answer in candidates:
            tally.record(
                name,
                endpoint,
                request,
                primary,
                answer,
                baseline,
                diff_answers(primary, answer, rules),
                noise,
            )

    # -- reading --------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The comparison's figures, as the REST API shows them."""
        report: dict[str, Any] = {
            "inbound": self.inbound,
            "primary": self.primary,
            "baseline": self.baseline,
            "settings": self.settings.to_json(full=True),
            "queue": {"pending": self.pending, "limit": self.settings.queue},
        }
        candidates = self.tally.report()["candidates"]
        for name in self.candidates:
            candidates.setdefault(
                name, {"compared": 0, "differing": 0, "skipped": 0, "endpoints": {}}
            )
        report["candidates"] = candidates
        return report

    def samples(
        self, candidate: str, endpoint: str, field: str
    ) -> list[dict[str, Any]]:
        """The stored examples of C{field} differing on C{endpoint}."""
        try:
            return self.tally.samples(candidate, endpoint, field)
        except KeyError:
            if candidate in self.candidates:
                return []
            raise UnknownCandidate(
                f'"{candidate}" is not a candidate of inbound "{self.inbound}" '
                f"(candidates: {', '.join(self.candidates) or 'none'})"
            ) from None

    def reset(self) -> None:
        """Forget every counter and sample."""
        self.tally.reset()

    def export(self) -> dict[str, Any]:
        """The counts, samples and pending jobs, JSON-ready, for L{load_sum}.

        Samples once sent are not sent again (they never change), but every
        L{_RESEND_SAMPLES}th time: the reader keeps them (see
        L{nfork.workers.merge.WorkerFigures}).
        """
        tally = self.tally
        epoch, sent = self._sent
        since = sent if epoch == tally.epoch and self._exports % _RESEND_SAMPLES else 0
        self._exports += 1
        self._sent = (tally.epoch, tally.stored)
        return {"pending": self.pending, "tally": tally.export(since)}

    def load_sum(self, exports: Sequence[Mapping[str, Any]]) -> None:
        """Replace the counts, samples and pending jobs with C{exports}' sum.

        For a process that compares nothing itself, and shows what its
        worker processes compared (their L{export}s).
        """
        self.pending = sum(int(exported["pending"]) for exported in exports)
        self.tally.load_sum([exported["tally"] for exported in exports])

    def counters(self) -> list[tuple[str, int, int, int]]:
        """C{(candidate, compared, differing, skipped)} for each candidate."""
        return self.tally.counters()

    def endpoint_differing(self, limit: int = 50) -> list[tuple[str, str, int]]:
        """C{(candidate, endpoint, differing)} for the C{limit} top endpoints."""
        return self.tally.endpoint_differing(limit)


class ComparisonJob:
    """The answers to one request that are being compared.

    The fork takes a L{capture} per outbound whose copy it sends, then
    L{seal}s the job; once sealed and every capture complete, the job is
    queued for comparison.  A job with no candidate's capture is abandoned.
    """

    __slots__ = ("_captures", "_comparer", "_outstanding", "_sealed", "request")

    def __init__(self, comparer: Comparer, request: ProxyRequest) -> None:
        self._comparer = comparer
        self.request = request
        self._captures: dict[str, AnswerCapture] = {}
        self._outstanding = 0
        self._sealed = False

    def capture(self, name: str) -> AnswerCapture:
        """Where the answer of the outbound C{name} goes."""
        capture = AnswerCapture(self._comparer.settings.max_body)
        self._captures[name] = capture
        self._outstanding += 1
        capture.then(self._one_done)
        return capture

    def dropped(self, name: str) -> None:
        """The outbound C{name} shed this copy (too many in flight)."""
        comparer = self._comparer
        if name in comparer.candidates:
            comparer.tally.skip(name)

    def seal(self) -> None:
        """Every copy of the request is sent: no more captures."""
        self._sealed = True
        comparer = self._comparer
        if not any(name in self._captures for name in comparer.candidates):
            comparer._abandon(self)
            self._captures = {}
        elif not self._outstanding:
            comparer._ready(self)

    def answers(self) -> dict[str, CapturedAnswer]:
        """The complete answers, by outbound name."""
        return {
            name: capture.answer
            for name, capture in self._captures.items()
            if capture.answer is not None
        }

    def _one_done(self, answer: CapturedAnswer) -> None:
        self._outstanding -= 1
        if self._sealed and not self._outstanding and self._captures:
            self._comparer._ready(self)


def build_comparer(
    config: InboundConfig,
    routes: Mapping[str, OutboundRoute],
    previous: Comparer | None,
    clock: IReactorTime,
) -> Comparer | None:
    """The comparer of a routing being built for C{config}, or None.

    C{routes} are the routing's outbounds by name.  C{previous} (the current
    routing's) is kept when the settings and the primary are unchanged.
    Candidates default to every shadow that answers (no sink) but the
    baseline; an outbound named as candidate or baseline that is now the
    active one is the primary, not compared with itself.
    """
    settings = config.compare
    if settings is None:
        return None
    primary = config.active
    baseline = settings.baseline
    if baseline == primary or baseline not in routes:
        baseline = None
    if settings.candidates is not None:
        names: Sequence[str] = settings.candidates
    else:
        names = [
            name
            for name, route in routes.items()
            if name != settings.baseline
            and getattr(route.outbound, "gives_response", True)
        ]
    candidates = [name for name in names if name != primary and name in routes]
    if (
        previous is not None
        and previous.settings == settings
        and previous.primary == primary
    ):
        comparer = previous
    else:
        comparer = Comparer(config.name, settings, primary, clock)
    comparer.set_roles(candidates, baseline)
    return comparer
