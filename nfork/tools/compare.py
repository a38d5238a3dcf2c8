"""C{nfork compare}: a running nfork's comparison report, as a release gate.

The command asks the control API for an inbound's report
(C{GET /v1/nfork/INBOUND/compare}), then, for each difference it will show,
one stored example (C{GET .../compare/CANDIDATE/samples?endpoint=E&field=F}),
and prints the report as text (L{nfork.compare.text.format_report}) or as
JSON.  Exit status: 0; 1 with C{--fail-on difference} when a field's
verdict is C{difference}; 2 when the report cannot be had (nfork not
reachable, unknown inbound, token refused, no compare settings), with the
API's own message on one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote, urlencode

import treq
from attrs import frozen
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from nfork.compare.text import (
    difference_fields,
    example_values,
    format_report,
    has_difference,
)
from nfork.tools.token import read_token_file

__all__ = [
    "DIFFERENCE",
    "UNAVAILABLE",
    "CompareOptions",
    "ReportUnavailable",
    "compare_main",
    "fetch_report",
    "read_token_file",
]

DIFFERENCE = 1
"""Exit status with C{--fail-on difference} when a difference is reported."""
UNAVAILABLE = 2
"""Exit status when there is no report to judge (argparse's usage status too)."""
SAMPLE_REQUESTS = 8
"""Requests for examples in flight at once (one per difference shown)."""


class ReportUnavailable(Exception):
    """The report could not be had; the message says why, on one line."""


@frozen
class CompareOptions:
    """What C{nfork compare} was asked to do."""

    control: bytes
    """The control API's URL, C{http(s)://host:port}, no trailing slash."""
    inbound: str
    token: str | None = None
    as_json: bool = False
    fail_on_difference: bool = False
    top_fields: int = 5
    timeout: float = 10.0
    """Seconds each request to the control API may take."""


class _Client:
    """GETs JSON from the control API, turning every failure into one line."""

    def __init__(self, http: HTTPClient, options: CompareOptions) -> None:
        self._http = http
        self._options = options
        self._headers = Headers({b"Accept": [b"application/json"]})
        if options.token is not None:
            self._headers.setRawHeaders(
                b"Authorization", [b"Bearer " + options.token.encode()]
            )

    async def get(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        url = self._options.control.decode() + path
        if query:
            url += "?" + urlencode(query, quote_via=quote)
        try:
            response = await self._http.get(
                url, headers=self._headers, timeout=self._options.timeout
            )
            body = await treq.content(response)
        except Exception as e:
            reason = str(e) or type(e).__name__
            raise ReportUnavailable(
                f"cannot reach nfork's control API at "
                f"{self._options.control.decode()}: {reason}"
            ) from None
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if response.code != 200:
            message = data.get("error") if isinstance(data, dict) else None
            if not isinstance(message, str):
                message = body[:200].decode("utf-8", "replace").strip() or "no message"
            hint = " (give the token with --token-file)" if response.code == 401 else ""
            raise ReportUnavailable(f"{message}{hint} (HTTP {response.code})")
        if data is None:
            raise ReportUnavailable(f"the answer to GET {path} is not JSON")
        return data


async def fetch_report(
    http: HTTPClient, options: CompareOptions
) -> tuple[dict[str, Any], dict[tuple[str, str, str], tuple[object, object]]]:
    """The inbound's report and one example per difference shown.

    @raise ReportUnavailable: when the report cannot be had.  A sample that
        cannot be fetched only leaves its example out.
    """
    client = _Client(http, options)
    base = f"/v1/nfork/{quote(options.inbound, safe='')}/compare"
    report = await client.get(base)
    if not isinstance(report, dict):
        raise ReportUnavailable(f"the answer to GET {base} is not a JSON object")
    examples: dict[tuple[str, str, str], tuple[object, object]] = {}
    if options.as_json:
        return report, examples
    wanted = difference_fields(report, top_fields=options.top_fields)
    slots = DeferredSemaphore(SAMPLE_REQUESTS)

    async def example(candidate: str, endpoint: str, field: str) -> None:
        await slots.acquire()
        try:
            samples = await client.get(
                f"{base}/{quote(candidate, safe='')}/samples",
                {"endpoint": endpoint, "field": field},
            )
        finally:
            slots.release()
        if isinstance(samples, list):
            found = example_values(samples, field)
            if found is not None:
                examples[candidate, endpoint, field] = found

    await DeferredList(
        [Deferred.fromCoroutine(example(*key)) for key in wanted],
        consumeErrors=True,
    )
    return report, examples


async def compare_main(
    reactor: Any,
    options: CompareOptions,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> None:
    """Run C{nfork compare} on C{reactor}, for L{twisted.internet.task.react}.

    @raise SystemExit: with L{DIFFERENCE} or L{UNAVAILABLE}; returns for 0.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=options.timeout))
    try:
        report, examples = await fetch_report(http, options)
    except ReportUnavailable as e:
        stderr.write(f"nfork compare: {e}\n")
        stderr.flush()
        raise SystemExit(UNAVAILABLE) from None
    finally:
        await pool.closeCachedConnections()
    if options.as_json:
        stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    else:
        stdout.write(
            format_report(
                report,
                top_fields=options.top_fields,
                example=lambda *key: examples.get(key),
            )
        )
    stdout.flush()
    if options.fail_on_difference and has_difference(report):
        raise SystemExit(DIFFERENCE)
