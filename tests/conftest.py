"""Shared pytest configuration: a deterministic Hypothesis profile, shared fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings

from tests.support.backends import ThreadedBackend

# Property tests must give the same verdict on every run and every machine:
# no random seeds, no example database, no timing-dependent deadlines.
settings.register_profile(
    "nfork", derandomize=True, database=None, deadline=None, max_examples=200
)
settings.load_profile("nfork")


@pytest.fixture
def threaded_backend() -> Iterator[Callable[..., ThreadedBackend]]:
    """Start C{ThreadedBackend(body, delay)}s; every one is stopped after the test."""
    started: list[ThreadedBackend] = []

    def start(body: str = "", delay: float = 0.0) -> ThreadedBackend:
        backend = ThreadedBackend(body, delay)
        started.append(backend)
        return backend.start()

    yield start
    for backend in started:
        backend.stop()
