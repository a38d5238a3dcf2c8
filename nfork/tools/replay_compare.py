"""C{nfork replay --compare}: a recording's answers compared with a target's.

A recording made by a sink with C{"answers": true} holds, with each request,
the answer the active outbound gave it.  Replayed to a candidate, each such
request gets a second answer; L{ReplayComparison} compares the two with the
same engine as the live comparison (L{nfork.compare.diff}), groups them by
endpoint (L{nfork.compare.endpoints}) and counts them in a
L{nfork.compare.tally.Tally}.  There is no baseline offline, so no noise:
fields whose values change on every request (ids, timestamps) are best
left out with C{ignore} rules in the settings.
"""

from __future__ import annotations

from typing import Any

from nfork.compare.diff import CompareRules, diff_answers
from nfork.compare.endpoints import EndpointNamer
from nfork.compare.tally import Tally
from nfork.compare.text import example_values, format_report, has_difference
from nfork.config.compare import CompareConfig, parse_compare
from nfork.config.errors import ConfigError
from nfork.config.load import decode_json
from nfork.outbounds.sinks.records import RecordedRequest
from nfork.proxy.messages import CapturedAnswer, ProxyRequest

__all__ = ["RECORDED", "ReplayComparison", "read_compare_settings"]

RECORDED = "recorded answers"
"""How the report names the primary: the answers in the recording."""


def read_compare_settings(path: str) -> CompareConfig:
    """The compare settings in a JSON file (an inbound's C{compare} object).

    @raise ValueError: with a message naming the file and the problem.
    """
    try:
        with open(path, encoding="utf-8") as settings:
            text = settings.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path!r}: {e}") from None
    try:
        return parse_compare(decode_json(text))
    except ConfigError as e:
        raise ValueError(f"{path}: {e}") from None


class ReplayComparison:
    """Compares each replayed answer with the recorded one, and counts."""

    def __init__(self, settings: CompareConfig, candidate: str) -> None:
        """
        @param settings: what is compared and how (C{candidates} and
            C{baseline} are not used: the recording is the primary, the
            target the one candidate).
        @param candidate: how the report names the target.
        """
        self.settings = settings
        self.candidate = candidate
        self._rules = CompareRules(
            ignore_headers=settings.ignore_headers,
            ignore=settings.ignore,
            max_body=settings.max_body,
        )
        self._namer = EndpointNamer(settings.endpoints)
        self._tally = Tally(
            relative=settings.relative,
            absolute=settings.absolute,
            samples=settings.samples,
        )
        self.compared = 0
        """Requests whose replayed answer was compared with the recorded one."""
        self.without_answer = 0
        """Records replayed that carry no answer: nothing to compare with."""

    def compare(self, record: RecordedRequest, answer: CapturedAnswer) -> bool:
        """Compare the target's C{answer} with the recorded one; count it.

        @return: whether the request counts as differing.
        """
        primary = record.answer
        assert primary is not None, "only records with an answer are compared"
        request = ProxyRequest(
            method=record.method,
            uri=record.uri,
            headers=record.headers,
            body=record.body,
            client=record.client,
            received=record.epoch,
        )
        differences = diff_answers(primary, answer, self._rules)
        self.compared += 1
        return self._tally.record(
            self.candidate,
            self._namer.name(record.method, record.uri),
            request,
            primary,
            answer,
            None,
            differences,
            (),
        )

    def report(self) -> dict[str, Any]:
        """The comparison report, shaped as the control API's."""
        report = dict(self._tally.report())
        report["primary"] = RECORDED
        report["baseline"] = None
        report["settings"] = self.settings.to_json()
        return report

    def has_difference(self) -> bool:
        """Whether a field of the report is a difference (C{--fail-on})."""
        return has_difference(self._tally.report())

    def format(self) -> str:
        """What C{nfork replay --compare} prints after the replay's summary."""
        lines = [
            f"compared: {self.compared} answers with the recorded ones"
            + (
                f"; {self.without_answer} records without an answer not compared"
                if self.without_answer
                else ""
            )
        ]
        example = None
        if self.settings.samples:
            example = self._example
        return "\n".join(lines) + "\n\n" + format_report(self.report(), example=example)

    def _example(
        self, candidate: str, endpoint: str, field: str
    ) -> tuple[object, object] | None:
        return example_values(self._tally.samples(candidate, endpoint, field), field)
