"""Waiting in tests, always bounded: for arrivals on the reactor, or by polling.

A test on the real reactor waits for a backend to have received so many
requests with C{Arrivals.wait_for}: a Deferred, no spinning, which fails with
what did arrive once its time is up.  Code outside the reactor (a subprocess,
a thread) is polled with C{poll_until}, a bounded loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sized

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater

WAIT_TIMEOUT = 10.0
"""Seconds a test waits for arrivals on loopback before it fails."""


class Arrivals:
    """Deferreds that fire once a growing collection holds enough items.

    The owner of C{items} calls C{check} after each item it adds.
    """

    def __init__(self, items: Sized, clock: IReactorTime) -> None:
        self._items = items
        self._clock = clock
        self._waiters: list[tuple[int, Deferred[None], IDelayedCall]] = []

    def wait_for(self, count: int, timeout: float = WAIT_TIMEOUT) -> Deferred[None]:
        """Fires once C{count} items have arrived; fails after C{timeout} seconds."""
        d: Deferred[None] = Deferred()
        if len(self._items) >= count:
            d.callback(None)
            return d
        expiry = self._clock.callLater(timeout, self._expire, count, d, timeout)
        self._waiters.append((count, d, expiry))
        return d

    def check(self) -> None:
        """Fire the waiters whose count has been reached."""
        for waiter in list(self._waiters):
            count, d, expiry = waiter
            if len(self._items) >= count:
                self._waiters.remove(waiter)
                expiry.cancel()
                d.callback(None)

    def _expire(self, count: int, d: Deferred[None], timeout: float) -> None:
        self._waiters = [w for w in self._waiters if w[1] is not d]
        d.errback(
            AssertionError(
                f"{len(self._items)} of {count} expected arrived in {timeout}s"
            )
        )


def poll_until(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05
) -> bool:
    """Call C{predicate} until it is true or C{timeout} seconds have passed.

    For state outside this process's reactor (a subprocess's log file);
    returns the predicate's last answer, so C{assert poll_until(...)} reads
    as the condition it waited for.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)
    return True


def eventually(
    clock: IReactorTime,
    predicate: Callable[[], bool],
    timeout: float = 5.0,
    interval: float = 0.05,
) -> Deferred[None]:
    """Fires once C{predicate()} is true, checked every C{interval} on C{clock}.

    For state the reactor's threads change (a file written in the thread
    pool); fails with an AssertionError after C{timeout} seconds.
    """

    async def check() -> None:
        for _ in range(max(1, int(timeout / interval))):
            if predicate():
                return
            await deferLater(clock, interval, lambda: None)
        if not predicate():
            raise AssertionError(f"not true after {timeout}s: {predicate!r}")

    return Deferred.fromCoroutine(check())
