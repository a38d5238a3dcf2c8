"""Counting differences per candidate, endpoint and field, with Diffy's verdicts.

For each request a candidate's differences (primary against candidate) are
counted as C{raw}, and the baseline's (primary against baseline, a second
copy of the primary's version) as C{noise}: a field on which two copies of
the same code disagree is non-deterministic.  A field is a real difference
when its raw count clearly exceeds its noise (L{verdict}).

Memory is bounded whatever the traffic: endpoints per candidate beyond
C{max_endpoints} are counted as C{OTHER}, fields per endpoint beyond
C{max_fields} as C{OTHER}, at most C{samples} examples are kept per field
and C{max_stored_samples} in all, each with bodies cut to C{sample_body}.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from attrs import define, field

from nfork.compare.diff import Difference
from nfork.proxy.messages import CapturedAnswer, Headers, ProxyRequest

OTHER = "OTHER"
"""The endpoint or field under which everything past the bounds is counted."""
SAMPLE_DIFFERENCES = 50
"""Differences kept in one sample."""
SAMPLE_VALUE = 1024
"""Characters of a difference's value (as JSON) kept in a sample."""


def verdict(
    raw: int, noise: int, requests: int, relative: float, absolute: float
) -> str:
    """Diffy's verdict on a field: C{"difference"} or C{"noise"}.

    A difference when the raw count exceeds the noise by C{relative} percent
    of their sum, and by C{absolute} percent of the endpoint's requests.
    """
    if raw <= noise or requests <= 0:
        return "noise"
    excess = raw - noise
    if excess * 100 / (raw + noise) < relative:
        return "noise"
    if excess * 100 / requests < absolute:
        return "noise"
    return "difference"


@define(eq=False)
class _Field:
    raw: int = 0
    noise: int = 0
    kinds: dict[str, int] = field(factory=dict)
    samples: list[dict[str, Any]] = field(factory=list)


@define
class _Endpoint:
    requests: int = 0
    differing: int = 0
    truncated: int = 0
    fields: dict[str, _Field] = field(factory=dict)


@define
class _Candidate:
    compared: int = 0
    differing: int = 0
    skipped: int = 0
    endpoints: dict[str, _Endpoint] = field(factory=dict)


class Tally:
    """The counts of one inbound's comparisons, per candidate, endpoint and field."""

    def __init__(
        self,
        relative: float = 20.0,
        absolute: float = 0.03,
        samples: int = 20,
        max_endpoints: int = 1000,
        max_fields: int = 200,
        max_stored_samples: int = 2000,
        sample_body: int = 4096,
    ) -> None:
        """Thresholds (percent) and memory bounds."""
        self.relative = relative
        self.absolute = absolute
        self.samples_per_field = samples
        self.max_endpoints = max_endpoints
        self.max_fields = max_fields
        self.max_stored_samples = max_stored_samples
        self.sample_body = sample_body
        self._candidates: dict[str, _Candidate] = {}
        self._stored = 0
        self._kept: list[dict[str, Any]] = []
        """The samples stored, in the order they were: the number of a
        sample is its place here (see L{export})."""
        self._numbers: dict[int, int] = {}
        """The number of each stored sample, by C{id}."""
        self.epoch = 0
        """Changes with every L{reset}: sample numbers start over."""

    def record(
        self,
        candidate: str,
        endpoint: str,
        request: ProxyRequest,
        primary: CapturedAnswer,
        other: CapturedAnswer,
        baseline: CapturedAnswer | None,
        differences: Sequence[Difference],
        noise: Sequence[Difference],
    ) -> bool:
        """Count one compared request; whether it differs beyond the noise.

        C{differences} are the candidate's (against the primary), C{noise}
        the baseline's for the same request.  The request differs when the
        candidate differs on a field on which the baseline agreed.
        """
        counts = self._candidate(candidate)
        counts.compared += 1
        place = self._endpoint(counts, endpoint)
        place.requests += 1
        if primary.truncated or other.truncated:
            place.truncated += 1
        noisy = {difference.field for difference in noise}
        for name in noisy:
            self._field(place, name).noise += 1
        differing = False
        wanting: dict[int, _Field] = {}
        seen: set[str] = set()
        for difference in differences:
            if difference.field in seen:
                continue
            seen.add(difference.field)
            if difference.field not in noisy:
                differing = True
            stats = self._field(place, difference.field)
            stats.raw += 1
            stats.kinds[difference.kind] = stats.kinds.get(difference.kind, 0) + 1
            if len(stats.samples) < self.samples_per_field:
                wanting[id(stats)] = stats
        if differing:
            counts.differing += 1
            place.differing += 1
        if wanting and self._stored < self.max_stored_samples:
            sample = self._sample(request, primary, other, baseline, differences)
            self._keep(sample)
            for stats in wanting.values():
                stats.samples.append(sample)
        return differing

    def skip(self, candidate: str) -> None:
        """Count a request that was not compared (the queue was full)."""
        self._candidate(candidate).skipped += 1

    def reset(self) -> None:
        """Forget every count and sample."""
        self._candidates.clear()
        self._stored = 0
        self._kept = []
        self._numbers = {}
        self.epoch += 1

    def _keep(self, sample: dict[str, Any]) -> None:
        """Count C{sample} as stored, and number it."""
        self._stored += 1
        self._numbers[id(sample)] = len(self._kept)
        self._kept.append(sample)

    def export(self, since: int = 0) -> dict[str, Any]:
        """Every count, and the samples from number C{since} on, JSON-ready.

        For L{load_sum} in another process.  Samples are numbered in the
        order they were stored, from 0 after each L{reset} (C{"epoch"}
        changes): C{"samples"} lists those from C{"since"} on, and each field
        names its samples by number, so that a reader who has the earlier
        ones need not be sent them again.  A sample kept for several fields
        is sent once.
        """
        numbers = self._numbers
        candidates: dict[str, Any] = {}
        for name, counts in self._candidates.items():
            endpoints: dict[str, Any] = {}
            for endpoint, place in counts.endpoints.items():
                fields: dict[str, Any] = {}
                for path, stats in place.fields.items():
                    fields[path] = {
                        "raw": stats.raw,
                        "noise": stats.noise,
                        "kinds": dict(stats.kinds),
                        "samples": [numbers[id(sample)] for sample in stats.samples],
                    }
                endpoints[endpoint] = {
                    "requests": place.requests,
                    "differing": place.differing,
                    "truncated": place.truncated,
                    "fields": fields,
                }
            candidates[name] = {
                "compared": counts.compared,
                "differing": counts.differing,
                "skipped": counts.skipped,
                "endpoints": endpoints,
            }
        return {
            "epoch": self.epoch,
            "candidates": candidates,
            "since": since,
            "samples": self._kept[since:],
        }

    @property
    def stored(self) -> int:
        """How many samples are stored (the next sample's number)."""
        return self._stored

    def load_sum(self, exports: Sequence[dict[str, Any]]) -> None:
        """Replace every count and sample with the sum of C{exports}.

        Counts are added; each field keeps its earliest samples (by request
        time) within C{samples}, and C{max_stored_samples} in all.  Endpoints
        and fields beyond the bounds are counted as L{OTHER}, in the order
        of C{exports}.  A sample an export names but does not include (before
        its C{"since"}, or C{None}) is left out.
        """
        self.reset()
        # (time, export, number, sample): the samples each field may keep.
        offered: dict[int, list[tuple[float, int, int, dict[str, Any]]]] = {}
        places: dict[int, _Field] = {}
        pools: list[list[dict[str, Any] | None]] = []
        for source, exported in enumerate(exports):
            since = int(exported["since"])
            pool: list[dict[str, Any] | None] = [None] * since
            pool.extend(exported["samples"])
            pools.append(pool)
            for name, theirs in exported["candidates"].items():
                counts = self._candidate(name)
                counts.compared += theirs["compared"]
                counts.differing += theirs["differing"]
                counts.skipped += theirs["skipped"]
                for endpoint, their_place in theirs["endpoints"].items():
                    place = self._endpoint(counts, endpoint)
                    place.requests += their_place["requests"]
                    place.differing += their_place["differing"]
                    place.truncated += their_place["truncated"]
                    for path, their_field in their_place["fields"].items():
                        stats = self._field(place, path)
                        stats.raw += their_field["raw"]
                        stats.noise += their_field["noise"]
                        kinds = stats.kinds
                        for kind, n in their_field["kinds"].items():
                            kinds[kind] = kinds.get(kind, 0) + n
                        places[id(stats)] = stats
                        offered.setdefault(id(stats), []).extend(
                            (_time(sample), source, number, sample)
                            for number in their_field["samples"]
                            if number < len(pool)
                            and (sample := pool[number]) is not None
                        )
        kept: dict[tuple[int, int], dict[str, Any]] = {}
        for key, choices in offered.items():
            stats = places[key]
            choices.sort(key=lambda choice: choice[:3])
            for _, source, number, sample in choices:
                if len(stats.samples) >= self.samples_per_field:
                    break
                if (source, number) not in kept:
                    if self._stored >= self.max_stored_samples:
                        break
                    kept[source, number] = sample
                    self._keep(sample)
                stats.samples.append(kept[source, number])

    def report(self) -> dict[str, Any]:
        """The counts and verdicts, JSON-ready."""
        candidates: dict[str, Any] = {}
        for name, counts in self._candidates.items():
            endpoints: dict[str, Any] = {}
            for endpoint, place in counts.endpoints.items():
                fields = {
                    path: {
                        "raw": stats.raw,
                        "noise": stats.noise,
                        "verdict": verdict(
                            stats.raw,
                            stats.noise,
                            place.requests,
                            self.relative,
                            self.absolute,
                        ),
                        "kinds": dict(stats.kinds),
                    }
                    for path, stats in place.fields.items()
                }
                endpoints[endpoint] = {
                    "requests": place.requests,
                    "differing": place.differing,
                    "truncated": place.truncated,
                    "fields": fields,
                }
            candidates[name] = {
                "compared": counts.compared,
                "differing": counts.differing,
                "skipped": counts.skipped,
                "endpoints": endpoints,
            }
        return {"candidates": candidates}

    def samples(
        self, candidate: str, endpoint: str, field: str
    ) -> list[dict[str, Any]]:
        """The stored examples of C{field} differing on C{endpoint}.

        @raise KeyError: no such candidate.
        """
        place = self._candidates[candidate].endpoints.get(endpoint)
        if place is None:
            return []
        stats = place.fields.get(field)
        return [] if stats is None else list(stats.samples)

    def counters(self) -> list[tuple[str, int, int, int]]:
        """(candidate, compared, differing, skipped) for each candidate."""
        return [
            (name, counts.compared, counts.differing, counts.skipped)
            for name, counts in sorted(self._candidates.items())
        ]

    def endpoint_differing(self, limit: int = 50) -> list[tuple[str, str, int]]:
        """(candidate, endpoint, differing) for the C{limit} most differing ones."""
        rows = [
            (name, endpoint, place.differing)
            for name, counts in self._candidates.items()
            for endpoint, place in counts.endpoints.items()
            if place.differing
        ]
        rows.sort(key=lambda row: (-row[2], row[0], row[1]))
        return rows[:limit]

    def _candidate(self, name: str) -> _Candidate:
        counts = self._candidates.get(name)
        if counts is None:
            counts = self._candidates[name] = _Candidate()
        return counts

    def _endpoint(self, counts: _Candidate, endpoint: str) -> _Endpoint:
        return _bounded(counts.endpoints, endpoint, self.max_endpoints, _Endpoint)

    def _field(self, place: _Endpoint, name: str) -> _Field:
        return _bounded(place.fields, name, self.max_fields, _Field)

    def _sample(
        self,
        request: ProxyRequest,
        primary: CapturedAnswer,
        other: CapturedAnswer,
        baseline: CapturedAnswer | None,
        differences: Sequence[Difference],
    ) -> dict[str, Any]:
        """One request and its answers, as kept to show a difference."""
        body, body64, cut = self._body(request.body)
        return {
            "time": request.received,
            "request": {
                "method": request.method.decode("latin-1"),
                "target": request.uri.decode("utf-8", "backslashreplace"),
                "headers": _headers(request.headers),
                "body": body,
                "bodyBase64": body64,
                "truncated": cut or request.upload is not None,
            },
            "answers": {
                "primary": self._answer(primary),
                "candidate": self._answer(other),
                "baseline": None if baseline is None else self._answer(baseline),
            },
            "differences": [
                {
                    "field": difference.field,
                    "kind": difference.kind,
                    "primary": _clip(difference.primary),
                    "candidate": _clip(difference.other),
                }
                for difference in differences[:SAMPLE_DIFFERENCES]
            ],
        }

    def _answer(self, answer: CapturedAnswer) -> dict[str, Any]:
        body, body64, cut = self._body(answer.body)
        return {
            "status": answer.code,
            "headers": _headers(answer.headers),
            "body": body,
            "bodyBase64": body64,
            "truncated": cut or answer.truncated,
            "error": answer.error,
        }

    def _body(self, data: bytes) -> tuple[str | None, str | None, bool]:
        """(text, base64, cut): text when UTF-8, else base64; cut to the limit."""
        kept = data[: self.sample_body]
        cut = len(kept) < len(data)
        try:
            return kept.decode("utf-8"), None, cut
        except UnicodeDecodeError as error:
            if cut and error.reason == "unexpected end of data":
                # The cut split the last character: keep the whole ones.
                return kept[: error.start].decode("utf-8"), None, cut
            return None, base64.b64encode(kept).decode("ascii"), cut


def _time(sample: dict[str, Any]) -> float:
    """When a sample's request was received (0 when unknown)."""
    return float(sample.get("time") or 0.0)


def _headers(headers: Headers) -> list[list[str]]:
    return [
        [name.decode("latin-1"), value.decode("latin-1")] for name, value in headers
    ]


def _clip(value: object) -> object:
    """A difference's value, or its JSON text cut short when it is large."""
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        if len(text) > SAMPLE_VALUE:
            return text[:SAMPLE_VALUE] + "..."
    elif isinstance(value, str) and len(value) > SAMPLE_VALUE:
        return value[:SAMPLE_VALUE] + "..."
    return value


_V = TypeVar("_V")


def _bounded(entries: dict[str, _V], key: str, limit: int, new: Callable[[], _V]) -> _V:
    """The entry for C{key}, created if there is room; past C{limit} entries,
    new keys share the entry L{OTHER}."""
    entry = entries.get(key)
    if entry is None:
        if len(entries) >= limit:
            key = OTHER
            entry = entries.get(OTHER)
        if entry is None:
            entry = entries[key] = new()
    return entry
