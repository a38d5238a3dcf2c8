"""Grouped timeouts: fire on time (within a slot), cancel cleanly."""

from __future__ import annotations

from functools import partial

from twisted.internet.task import Clock

from nfork.proxy.deadlines import RESOLUTION, Deadlines


def test_a_deadline_fires_at_the_end_of_its_slot_not_before() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    fired: list[str] = []
    deadlines.add(0.1, lambda: fired.append("a"))
    clock.advance(0.099)
    assert fired == []
    clock.advance(0.001)
    assert fired == ["a"]
    assert clock.getDelayedCalls() == []


def test_deadlines_in_one_slot_share_one_timer() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    fired: list[int] = []
    for i in range(100):
        deadlines.add(
            1.0 + RESOLUTION / 2 + i * RESOLUTION / 400, partial(fired.append, i)
        )
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1.0 + RESOLUTION)
    assert fired == list(range(100))


def test_cancelled_deadlines_do_not_fire_and_an_empty_slot_frees_its_timer() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    fired: list[str] = []
    a = deadlines.add(0.5, lambda: fired.append("a"))
    b = deadlines.add(0.5, lambda: fired.append("b"))
    a.cancel()
    a.cancel()  # twice is harmless
    assert deadlines.pending == 1
    clock.advance(0.5)
    assert fired == ["b"]
    c = deadlines.add(0.5, lambda: fired.append("c"))
    c.cancel()
    assert clock.getDelayedCalls() == []
    assert deadlines.pending == 0
    b.cancel()  # after it fired: nothing happens
    assert fired == ["b"]


def test_a_deadline_added_while_its_slot_fires_gets_a_new_slot() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    fired: list[str] = []

    def again() -> None:
        fired.append("first")
        deadlines.add(0.2, lambda: fired.append("second"))

    deadlines.add(0.1, again)
    clock.advance(0.1)
    assert fired == ["first"]
    clock.advance(0.2)
    assert fired == ["first", "second"]
