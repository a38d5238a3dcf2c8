"""Timeouts grouped into short slots: one reactor timer per slot, not per copy.

Every request copy has a timeout, and almost every copy finishes long before
it.  A reactor timer per copy costs a heap insertion (Python-level
comparisons with every pending timer: about a thousand of them behind a slow
shadow) and a cancellation.  Here copies whose deadlines fall in the same
10 ms slot share one timer; finishing a copy only forgets its callable, and
a slot whose copies have all finished cancels its timer.  A timeout fires at
the end of its slot: at most one slot late.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

RESOLUTION = 0.01
"""Seconds per slot: how late a timeout may fire."""


class Deadline:
    """One scheduled expiry; L{cancel} it when the work finished in time."""

    __slots__ = ("_expire", "_slot")

    def __init__(self, slot: _Slot, expire: Callable[[], object]) -> None:
        self._slot = slot
        self._expire: Callable[[], object] | None = expire

    def cancel(self) -> None:
        """Forget the expiry (a no-op once it fired or was cancelled)."""
        if self._expire is not None:
            self._expire = None
            self._slot.forget()


class _Slot:
    """The deadlines that end in one slot, and the timer that fires them."""

    __slots__ = ("call", "deadlines", "key", "live", "owner")

    def __init__(self, owner: Deadlines, key: int) -> None:
        self.owner = owner
        self.key = key
        self.deadlines: list[Deadline] = []
        self.live = 0
        self.call: IDelayedCall | None = None

    def forget(self) -> None:
        self.live -= 1
        if not self.live and self.call is not None and self.call.active():
            self.call.cancel()
            self.owner._slots.pop(self.key, None)

    def fire(self) -> None:
        self.owner._slots.pop(self.key, None)
        for deadline in self.deadlines:
            expire = deadline._expire
            if expire is not None:
                deadline._expire = None
                expire()


class Deadlines:
    """Schedules expiries on C{clock}, grouped into L{RESOLUTION} slots."""

    def __init__(self, clock: IReactorTime, resolution: float = RESOLUTION) -> None:
        self._clock = clock
        self._resolution = resolution
        self._slots: dict[int, _Slot] = {}

    def add(self, delay: float, expire: Callable[[], object]) -> Deadline:
        """Call C{expire} once C{delay} seconds have passed (within one slot)."""
        now = self._clock.seconds()
        # The small epsilon keeps 0.1 / 0.01 from rounding up a slot.
        key = math.ceil((now + delay) / self._resolution - 1e-6)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(self, key)
            slot.call = self._clock.callLater(
                max(key * self._resolution - now, 0.0), slot.fire
            )
        deadline = Deadline(slot, expire)
        slot.deadlines.append(deadline)
        slot.live += 1
        return deadline

    @property
    def pending(self) -> int:
        """Deadlines scheduled and neither fired nor cancelled."""
        return sum(slot.live for slot in self._slots.values())
