"""Shared pytest configuration: a deterministic Hypothesis profile."""

from __future__ import annotations

from hypothesis import settings

# Property tests must give the same verdict on every run and every machine:
# no random seeds, no example database, no timing-dependent deadlines.
settings.register_profile(
    "nfork", derandomize=True, database=None, deadline=None, max_examples=200
)
settings.load_profile("nfork")
