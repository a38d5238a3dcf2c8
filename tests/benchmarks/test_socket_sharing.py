"""The socket-sharing experiment runs both modes with real workers and wrk."""

from __future__ import annotations

import pytest

from benchmarks.socket_sharing import measure
from benchmarks.tools import Tools


@pytest.mark.parametrize("mode", ["shared", "reuseport"])
def test_each_mode_serves_with_two_workers(mode: str, wrk_tool: Tools) -> None:
    """Needs wrk (skipped without it): one second of load, two workers."""
    rate, counts = measure(mode, workers=2, connections=16, duration=1, work_us=10)
    assert rate > 0
    assert len(counts) == 2
    assert sum(counts) > 0
