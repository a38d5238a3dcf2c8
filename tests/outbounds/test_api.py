"""The plugin API: one module, and the 0.1 import paths still give the same objects."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import nfork.outbounds.api as api

OLD_HOMES = {
    "nfork.interfaces": ("IOutbound", "IOutboundFactory", "IOutboundValidator"),
    "nfork.messages": ("CopyDropped", "Headers", "ProxyRequest", "ProxyResponse"),
    "nfork.outbound": (
        "OutboundContext",
        "check_option_names",
        "integer_option",
        "string_option",
    ),
    "nfork.config": ("ConfigError", "OutboundConfig"),
}


@pytest.mark.parametrize("module", sorted(OLD_HOMES))
def test_old_import_paths_give_the_api_objects(module: str) -> None:
    old = importlib.import_module(module)
    for name in OLD_HOMES[module]:
        new = getattr(api, name, None)
        if new is None:  # Headers is a type alias of the data path
            new = getattr(importlib.import_module("nfork.proxy.messages"), name)
        assert getattr(old, name) is new, f"{module}.{name}"


def test_api_exports_what_a_plugin_needs() -> None:
    for name in api.__all__:
        assert hasattr(api, name), name
    assert {"IOutbound", "OutboundContext", "ProxyRequest", "ConfigError"} <= set(
        api.__all__
    )


@pytest.mark.parametrize(
    "first",
    ["nfork.outbounds.api", "nfork.interfaces", "nfork.outbound", "nfork.config"],
)
def test_each_plugin_module_imports_first_without_a_cycle(first: str) -> None:
    # A fresh interpreter: an import cycle shows only when a module is the
    # first of its family to be imported.
    result = subprocess.run(
        [sys.executable, "-c", f"import {first}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_integer_option_names_its_bounds() -> None:
    from nfork.config import ConfigError, OutboundConfig
    from nfork.config.addresses import parse_outbound_address

    config = OutboundConfig(
        "rec", parse_outbound_address("file:///tmp/x"), options={"n": 11}
    )
    assert api.integer_option(config, "n", 1, maximum=11) == 11
    with pytest.raises(ConfigError, match=r"must be at most 10, got 11"):
        api.integer_option(config, "n", 1, maximum=10)
    with pytest.raises(ConfigError, match=r"at least 12, got 11"):
        api.integer_option(config, "n", 1, minimum=12)
