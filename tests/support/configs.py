"""Inbound configs for tests: the JSON a user writes, loaded by nfork's own loader.

Every test builds its inbounds here, so that a test's config goes through the
same validation a config file does, and a change of the format is made once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nfork.config import InboundConfig, load_config

TWO_BACKENDS = {"prod": "127.0.0.1:8080", "staging": "127.0.0.1:8081"}
"""The default outbounds: an active prod and a staging shadow (nothing listens)."""


def inbound_json(
    name: str = "foo",
    listen: str = "127.0.0.1:0",
    out: Mapping[str, Any] | None = None,
    active: str = "prod",
    **extra: Any,
) -> dict[str, Any]:
    """One inbound as the config file holds it; C{extra} adds or replaces keys."""
    obj: dict[str, Any] = {
        "name": name,
        "listen": listen,
        "out": dict(TWO_BACKENDS if out is None else out),
        "active": active,
    }
    obj.update(extra)
    return obj


def load_inbounds(*inbounds: Mapping[str, Any]) -> tuple[InboundConfig, ...]:
    """Load inbound JSON objects as a config file holding them would load."""
    return load_config(json.dumps(list(inbounds)))


def inbound_config(
    name: str = "foo",
    listen: str = "127.0.0.1:0",
    out: Mapping[str, Any] | None = None,
    active: str = "prod",
    **extra: Any,
) -> InboundConfig:
    """The loaded config of C{inbound_json(...)} with the same arguments."""
    (config,) = load_inbounds(inbound_json(name, listen, out, active, **extra))
    return config


def write_config(path: Path, *inbounds: Mapping[str, Any]) -> Path:
    """Write inbound JSON objects to C{path} as a config file; returns C{path}."""
    path.write_text(json.dumps(list(inbounds)))
    return path
