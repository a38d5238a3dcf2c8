"""Keeps one outbound's answer, up to a limit, to compare or record it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from nfork.proxy.messages import CapturedAnswer, Headers, ProxyResponse

__all__ = ["RECORDED_ANSWER_LIMIT", "AnswerCapture"]

RECORDED_ANSWER_LIMIT = 1024 * 1024
"""Body bytes of the active's answer kept for sinks that record answers,
when the inbound compares nothing (else its C{compare.maxBody})."""


class AnswerCapture:
    """Builds a L{CapturedAnswer} from an answer as it arrives.

    The fork feeds it: L{whole} for an answer complete at once, or L{head},
    L{data}... and L{end} for a streamed one, or L{failed} when the copy got
    no answer.  The first C{limit} bytes of the body are kept; past them the
    rest only feeds a SHA-256 of the whole body.  When the answer is
    complete, every callback given to L{then} is called with it, once.
    """

    __slots__ = (
        "_code",
        "_hash",
        "_headers",
        "_kept",
        "_length",
        "_limit",
        "_listeners",
        "_parts",
        "answer",
    )

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._code = 0
        self._headers: Headers = ()
        self._parts: list[bytes] = []
        self._kept = 0
        self._length = 0
        self._hash: Any = None
        self._listeners: list[Callable[[CapturedAnswer], object]] = []
        self.answer: CapturedAnswer | None = None
        """The complete answer, once it is."""

    def then(self, listener: Callable[[CapturedAnswer], object]) -> None:
        """Call C{listener} with the answer when it is complete."""
        if self.answer is not None:
            listener(self.answer)
        else:
            self._listeners.append(listener)

    def whole(self, response: ProxyResponse) -> None:
        """The answer came complete, body included."""
        body = response.body
        if self.answer is None and not self._length and len(body) <= self._limit:
            # The usual case, in one step.
            self._finish(
                CapturedAnswer(response.code, response.headers, body, len(body))
            )
            return
        self.head(response)
        self.end()

    def head(self, response: ProxyResponse) -> None:
        """The answer's head (and the body's first bytes) came."""
        self._code = response.code
        self._headers = response.headers
        if response.body:
            self.data(response.body)

    def data(self, data: bytes) -> None:
        """The next piece of the body."""
        self._length += len(data)
        room = self._limit - self._kept
        if len(data) <= room:
            self._parts.append(data)
            self._kept += len(data)
            return
        if room > 0:
            self._parts.append(data[:room])
            self._kept = self._limit
        if self._hash is None:
            self._hash = hashlib.sha256()
            for part in self._parts:
                self._hash.update(part)
            self._hash.update(data[room:] if room > 0 else data)
        else:
            self._hash.update(data)

    def end(self) -> None:
        """The body is complete."""
        if self.answer is not None:
            return
        self._finish(
            CapturedAnswer(
                code=self._code,
                headers=self._headers,
                body=b"".join(self._parts),
                length=self._length,
                digest=None if self._hash is None else self._hash.digest(),
            )
        )

    def failed(self, error: str) -> None:
        """The copy got no complete answer: C{"timeout"}, C{"error"}, C{"dropped"}."""
        if self.answer is not None:
            return
        self._finish(CapturedAnswer(code=0, headers=(), body=b"", error=error))

    def _finish(self, answer: CapturedAnswer) -> None:
        self.answer = answer
        self._parts = []
        self._hash = None
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(answer)
