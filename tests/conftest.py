"""Shared pytest configuration: a deterministic Hypothesis profile, shared fixtures.

C{--nfork-workers N} runs every real twistd the tests start
(L{tests.support.process.TwistdProcess}) with C{--workers N}.  The tests of
the modules that start one are marked C{twistd} automatically, so that
C{pytest -m twistd --nfork-workers 2} runs the end-to-end tests again with
worker processes; a test marked C{single_process("why")} is skipped then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings

from tests.support import process
from tests.support.backends import ThreadedBackend

# Property tests must give the same verdict on every run and every machine:
# no random seeds, no example database, no timing-dependent deadlines.
settings.register_profile(
    "nfork", derandomize=True, database=None, deadline=None, max_examples=200
)
settings.load_profile("nfork")

_STARTS_TWISTD = ("TwistdProcess", "running_nfork")
"""Names a test module imports when its tests start the real twistd."""


def _workers(text: str) -> int:
    """C{--nfork-workers}'s value: a number of worker processes, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise pytest.UsageError(f"--nfork-workers: not a number: {text!r}") from None
    if value < 1:
        raise pytest.UsageError(f"--nfork-workers: at least 1, got {value}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    """C{--nfork-workers N}: the real twistd of every test runs N workers."""
    parser.addoption(
        "--nfork-workers",
        metavar="N",
        default=None,
        help="start every twistd nfork of the tests with --workers N "
        "(with -m twistd: the end-to-end tests alone)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; pass --nfork-workers on to TwistdProcess."""
    config.addinivalue_line(
        "markers",
        "twistd: starts the real twistd (set automatically on the tests of "
        "modules that import TwistdProcess or running_nfork)",
    )
    config.addinivalue_line(
        "markers",
        "single_process(reason): proves something of one process only; "
        "skipped with --nfork-workers",
    )
    option = config.getoption("--nfork-workers")
    process.workers = None if option is None else _workers(option)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Mark the tests that start twistd; skip single-process ones with workers."""
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and any(hasattr(module, n) for n in _STARTS_TWISTD):
            item.add_marker(pytest.mark.twistd)
        if process.workers is None:
            continue
        for marker in item.iter_markers("single_process"):
            reason = marker.args[0] if marker.args else "one process only"
            item.add_marker(
                pytest.mark.skip(
                    reason=f"with --nfork-workers {process.workers}: {reason}"
                )
            )


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
