"""The benchmark's scenarios: which proxy, and which backends it forks to."""

from __future__ import annotations

from collections.abc import Iterable

from attrs import frozen

FAST = ("fast1", "fast2", "fast3")
"""nginx backends answering 200 at once."""
SLOW = "slow"
"""The nginx backend answering after 200 ms (the echo module's C{echo_sleep})."""
BLACKHOLE = "blackhole"
"""The Python backend that reads requests and never answers."""
BACKENDS = (*FAST, SLOW, BLACKHOLE)

LARGE_ANSWER_PATH = "/1mib"
"""Where every fast backend answers with a 1 MiB file instead of 100 bytes."""
LARGE_ANSWER_BYTES = 2**20

JSON_ANSWER_PATH = "/users/42"
"""Where every fast backend answers ~1 KiB of JSON with a fresh id and time."""


@frozen
class Scenario:
    """One line of the table: a proxy (or none) in front of some backends."""

    id: str
    title: str
    proxy: str
    """C{"direct"} (wrk hits the active backend), C{"nfork"} or C{"nginx"}."""
    outbounds: tuple[str, ...]
    """Backend names, the active one first, then the shadows."""
    peer: str | None = None
    """The id of the same scenario run by the other proxy, for the ratios."""
    path: str = "/"
    """What wrk requests: C{/} (100-byte answers), L{LARGE_ANSWER_PATH} or
    L{JSON_ANSWER_PATH}."""
    compare: bool = False
    """nfork compares the last shadow's answers with the active's, the
    first shadow being the baseline (C{compare})."""
    workers: int | None = None
    """nfork's C{--workers}; C{None}: not given (one process, as always)."""

    @property
    def active(self) -> str:
        """The backend whose answers the client gets."""
        return self.outbounds[0]

    @property
    def shadows(self) -> tuple[str, ...]:
        """The backends that get copies only."""
        return self.outbounds[1:]


SCENARIOS = (
    Scenario("1", "direct to one backend", "direct", ("fast1",)),
    Scenario("2", "1 outbound", "nfork", ("fast1",)),
    Scenario("3", "3 outbounds", "nfork", (*FAST,), peer="6.3"),
    Scenario(
        "4", "3 outbounds, 200 ms shadow", "nfork", ("fast1", "fast2", SLOW), "6.4"
    ),
    Scenario(
        "5", "3 outbounds, mute shadow", "nfork", ("fast1", "fast2", BLACKHOLE), "6.5"
    ),
    Scenario("6.3", "3 outbounds", "nginx", (*FAST,), peer="3"),
    Scenario(
        "6.4", "3 outbounds, 200 ms shadow", "nginx", ("fast1", "fast2", SLOW), "4"
    ),
    Scenario(
        "6.5", "3 outbounds, mute shadow", "nginx", ("fast1", "fast2", BLACKHOLE), "5"
    ),
    Scenario(
        "7",
        "3 outbounds, 1 MiB answers",
        "nfork",
        (*FAST,),
        peer="6.7",
        path=LARGE_ANSWER_PATH,
    ),
    Scenario(
        "6.7",
        "3 outbounds, 1 MiB answers",
        "nginx",
        (*FAST,),
        peer="7",
        path=LARGE_ANSWER_PATH,
    ),
    Scenario("8", "3 outbounds, 1 KiB JSON", "nfork", (*FAST,), path=JSON_ANSWER_PATH),
    Scenario(
        "9",
        "3 outbounds, 1 KiB JSON, compared",
        "nfork",
        (*FAST,),
        path=JSON_ANSWER_PATH,
        compare=True,
    ),
    Scenario("10", "3 outbounds, --workers 1", "nfork", (*FAST,), workers=1),
    Scenario("11", "3 outbounds, --workers 2", "nfork", (*FAST,), workers=2),
)
"""In the order they run in each round."""

WORKERS_PAIR = ("10", "11")
"""Scenario 3 with one worker and with two: how nfork scales with cores."""

_BY_ID = {scenario.id: scenario for scenario in SCENARIOS}
_NGINX = tuple(s.id for s in SCENARIOS if s.proxy == "nginx")


def select(spec: str | None) -> tuple[Scenario, ...]:
    """The scenarios named in C{spec} ("3,4"; "6": every nginx one), in run order.

    Raises C{ValueError} naming the unknown ids.
    """
    if not spec:
        return SCENARIOS
    wanted: set[str] = set()
    unknown: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item == "6":
            wanted.update(_NGINX)
        elif item in _BY_ID:
            wanted.add(item)
        else:
            unknown.append(item)
    if unknown or not wanted:
        named = ", ".join(unknown) if unknown else repr(spec)
        raise ValueError(
            f"unknown scenario {named}; "
            f"choose from {', '.join(_BY_ID)} (6 = {','.join(_NGINX)})"
        )
    return tuple(s for s in SCENARIOS if s.id in wanted)


def backends_used(scenarios: Iterable[Scenario]) -> tuple[str, ...]:
    """The backends the scenarios need, in a stable order."""
    used = {name for scenario in scenarios for name in scenario.outbounds}
    return tuple(name for name in BACKENDS if name in used)
