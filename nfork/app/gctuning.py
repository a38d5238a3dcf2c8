"""Garbage-collector settings for a long-running, allocation-heavy proxy.

Every proxied request allocates hundreds of short-lived objects (Deferreds,
requests, header tuples), so CPython's default generation-0 threshold (700
allocations) runs the cyclic collector thousands of times a second, each time
walking the objects that survived startup.  Measured on the benchmark's
3-outbound scenario, a higher threshold plus freezing the startup objects cut
the proxy's CPU per request by about a sixth (see docs/performance.md).
Reference counting still frees almost everything at once; only cyclic
garbage waits a little longer.
"""

from __future__ import annotations

import gc
from typing import Any

GEN0_THRESHOLD = 20_000
GEN1_THRESHOLD = 50
GEN2_THRESHOLD = 100


def tune_gc(reactor: Any) -> None:
    """Raise the collection thresholds; freeze what exists once running."""
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    reactor.callWhenRunning(gc.freeze)
