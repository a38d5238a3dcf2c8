"""Fixtures for the benchmark tests: the external tools, or a skip that names them.

A test whose real path drives wrk or nginx asks for one of these fixtures;
on a machine without the tools it is reported as skipped, with the
C{apt-get} line, never as passed.  Detection is C{benchmarks.tools}'s own,
so the skip and the harness agree (wrk through C{$PATH}; nginx through
C{$PATH} and the sbin directories).
"""

from __future__ import annotations

from collections.abc import Collection

import pytest

from benchmarks.tools import INSTALL_COMMAND, Tools, find_tools

NGINX = ("nginx", "nginx's echo module")
"""What the nginx backends need (the slow one sleeps with C{echo_sleep})."""


def _require(needed: Collection[str]) -> Tools:
    """The tools found, or a skip naming the ones of C{needed} that are missing."""
    tools = find_tools()
    missing = [name for name in tools.missing if name in needed]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: {INSTALL_COMMAND}")
    return tools


@pytest.fixture
def bench_tools() -> Tools:
    """wrk, nginx and nginx's echo module: everything the harness runs."""
    return _require(("wrk", *NGINX))


@pytest.fixture
def nginx_tools() -> Tools:
    """nginx and its echo module, for the nginx backends alone."""
    return _require(NGINX)


@pytest.fixture
def wrk_tool() -> Tools:
    """wrk alone, for measurements without nginx."""
    return _require(("wrk",))
