"""Profiling a running nfork: CPU profiles, thread stacks, heap allocations.

This is what the control API's C{/debug/pprof/} routes serve, Python's
equivalent of Go's pprof.  A CPU profile runs I{inside} the running process,
while it keeps serving traffic: the profiler is switched on in the reactor
thread, and a timer of the reactor switches it off N seconds later.
"""

from __future__ import annotations

import cProfile
import io
import marshal
import pstats
import sys
import threading
import traceback
import tracemalloc

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

DEFAULT_SECONDS = 5.0
"""How long a CPU profile runs when the request does not say."""

MAX_SECONDS = 60.0
"""The longest CPU profile allowed."""

PROFILE_LINES = 200
"""Functions listed in a text profile, by cumulative time."""

HEAP_LINES = 50
"""Source lines listed in a heap report, by allocated size."""


class ProfileBusy(Exception):
    """A CPU profile is already running: only one at a time."""


class CPUProfile:
    """The outcome of one CPU profile, as text or as a raw pstats file."""

    def __init__(self, profile: cProfile.Profile, seconds: float) -> None:
        self.seconds = seconds
        self._profile = profile

    def text(self, lines: int = PROFILE_LINES) -> str:
        """The top C{lines} functions sorted by cumulative time, as pstats prints."""
        header = f"CPU profile of the reactor thread over {self.seconds:g}s\n"
        if not self._profile.getstats():
            return header + "no function calls were recorded\n"
        out = io.StringIO()
        stats = pstats.Stats(self._profile, stream=out)
        stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(lines)
        return header + out.getvalue()

    def pstats_file(self) -> bytes:
        """The raw profile, as C{pstats.Stats.dump_stats} writes it."""
        self._profile.create_stats()
        return marshal.dumps(self._profile.stats)


class Profiler:
    """Runs CPU profiles of the reactor thread, one at a time."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._running: cProfile.Profile | None = None

    @property
    def running(self) -> bool:
        """Whether a profile is being taken now."""
        return self._running is not None

    def profile(self, seconds: float) -> Deferred[CPUProfile]:
        """Profile the reactor thread for C{seconds}; traffic keeps flowing.

        Must be called in the reactor thread.  Cancelling the Deferred stops
        the profile early and discards it.

        @raise ProfileBusy: if a profile is already running.
        """
        if self._running is not None:
            raise ProfileBusy("a CPU profile is already running; try again later")
        profile = cProfile.Profile()
        try:
            profile.enable()
        except ValueError as e:
            # Python 3.12+: another profiler (a debugger, coverage) holds the hook.
            raise ProfileBusy(f"cannot start the profiler: {e}") from None
        self._running = profile
        call: IDelayedCall | None = None

        def stop(d: Deferred[CPUProfile]) -> None:
            if call is not None and call.active():
                call.cancel()
            self._finish(profile)

        done: Deferred[CPUProfile] = Deferred(stop)

        def finish() -> None:
            self._finish(profile)
            done.callback(CPUProfile(profile, seconds))

        call = self._clock.callLater(seconds, finish)
        return done

    def _finish(self, profile: cProfile.Profile) -> None:
        profile.disable()
        if self._running is profile:
            self._running = None


def thread_stacks() -> str:
    """The current stack of every thread of the process, innermost call last."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sorted(sys._current_frames().items()):
        stack = "".join(traceback.format_stack(frame))
        parts.append(f"Thread {ident} ({names.get(ident, '?')}):\n{stack}")
    return "\n".join(parts)


def heap_report(lines: int = HEAP_LINES) -> str:
    """The source lines holding the most memory allocated since tracing began.

    Changes nothing: when C{tracemalloc} is not running, it says how to
    start it (L{start_heap_tracing}, C{POST /debug/pprof/heap}).
    """
    if not tracemalloc.is_tracing():
        return (
            "tracemalloc is not running. POST /debug/pprof/heap starts it (it "
            "slows allocations down); allocations are traced from then on, and "
            "GET /debug/pprof/heap shows the top ones. DELETE stops it.\n"
        )
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    current, peak = tracemalloc.get_traced_memory()
    top = snapshot.statistics("lineno")[:lines]
    out = [
        f"tracemalloc: {current / 1024:.1f} KiB traced now, peak {peak / 1024:.1f}"
        f" KiB; top {len(top)} source lines by size:",
    ]
    out += [str(stat) for stat in top]
    return "\n".join(out) + "\n"


def start_heap_tracing() -> bool:
    """Start C{tracemalloc}; return whether it was started now (not already)."""
    if tracemalloc.is_tracing():
        return False
    tracemalloc.start()
    return True


def stop_heap_tracing() -> bool:
    """Stop C{tracemalloc}; return whether it was running."""
    tracing = tracemalloc.is_tracing()
    tracemalloc.stop()
    return tracing
