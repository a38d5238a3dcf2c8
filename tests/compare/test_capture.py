"""AnswerCapture: keeps an answer up to a limit, digests the rest."""

from __future__ import annotations

import hashlib

from nfork.compare.capture import AnswerCapture
from nfork.proxy.messages import CapturedAnswer, ProxyResponse


def _answers(capture: AnswerCapture) -> list[CapturedAnswer]:
    seen: list[CapturedAnswer] = []
    capture.then(seen.append)
    return seen


def test_whole_answer_kept_as_it_came() -> None:
    capture = AnswerCapture(100)
    seen = _answers(capture)
    capture.whole(ProxyResponse(200, b"OK", ((b"A", b"1"),), b"hello"))
    assert seen == [CapturedAnswer(200, ((b"A", b"1"),), b"hello", 5)]
    assert not seen[0].truncated


def test_streamed_answer_over_the_limit_keeps_a_prefix_and_a_digest() -> None:
    capture = AnswerCapture(8)
    seen = _answers(capture)
    capture.head(ProxyResponse(200, b"", (), b"0123"))
    for piece in (b"4567", b"89", b"abcdef"):
        capture.data(piece)
    assert seen == []
    capture.end()
    (answer,) = seen
    assert answer.body == b"01234567"
    assert answer.length == 16
    assert answer.truncated
    assert answer.digest == hashlib.sha256(b"0123456789abcdef").digest()


def test_body_filling_the_limit_exactly_then_more() -> None:
    capture = AnswerCapture(4)
    capture.head(ProxyResponse(200, b"", (), b"abcd"))
    capture.data(b"e")
    capture.end()
    answer = capture.answer
    assert answer is not None
    assert (answer.body, answer.length) == (b"abcd", 5)
    assert answer.digest == hashlib.sha256(b"abcde").digest()


def test_failure_gives_the_error_word_once() -> None:
    capture = AnswerCapture(4)
    seen = _answers(capture)
    capture.failed("timeout")
    capture.end()
    capture.failed("error")
    assert seen == [CapturedAnswer(0, (), b"", error="timeout")]


def test_listener_added_after_the_end_is_called_at_once() -> None:
    capture = AnswerCapture(4)
    capture.whole(ProxyResponse(204, b"", (), b""))
    seen = _answers(capture)
    assert [a.code for a in seen] == [204]
