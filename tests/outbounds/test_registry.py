"""The outbound registry: plugins found by scheme, checks before building."""

from __future__ import annotations

from typing import Any

import pytest
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from nfork.config import (
    ConfigError,
    OutboundConfig,
    dump_config,
    load_config,
    parse_inbound,
    parse_outbound,
)
from nfork.control.controller import Controller
from nfork.outbounds.api import (
    IOutbound,
    IOutboundFactory,
    OutboundContext,
    check_option_names,
    integer_option,
    string_option,
)
from nfork.outbounds.http import HTTPOutbound, HTTPOutboundFactory
from nfork.outbounds.registry import check_inbounds, factory_for, outbound_factories
from nfork.proxy.client import HTTPClientPool, Target
from tests.support.configs import inbound_config
from tests.support.fakes import FakeOutbound

BUILT_IN = ["file", "http", "https", "tcp"]


def test_http_outbound_and_factories_provide_their_interfaces() -> None:
    pool = HTTPClientPool(MemoryReactorClock())
    target = Target("http", "h", 80, b"h", b"")
    verifyObject(IOutbound, HTTPOutbound(pool, target, 4))
    for scheme in ("http", "https"):
        verifyObject(IOutboundFactory, HTTPOutboundFactory(scheme))


def test_the_built_in_schemes_are_found_as_plugins() -> None:
    factories = outbound_factories()
    assert sorted(factories) == BUILT_IN
    for scheme, factory in factories.items():
        verifyObject(IOutboundFactory, factory)
        assert factory.scheme == scheme
    assert [s for s in BUILT_IN if factories[s].gives_response] == ["http", "https"]


def test_an_unknown_scheme_lists_the_available_ones() -> None:
    config = parse_outbound("foo", "audit", "kafka://broker:9092/topic")
    with pytest.raises(ConfigError) as caught:
        factory_for("foo", config, outbound_factories())
    assert str(caught.value) == (
        'inbound "foo": outbound "audit": key "addr": unknown address scheme '
        '"kafka" (available: file, http, https, tcp)'
    )
    assert (caught.value.inbound, caught.value.outbound, caught.value.key) == (
        "foo",
        "audit",
        "addr",
    )


def test_a_sink_cannot_be_active() -> None:
    config = inbound_config(
        out={"prod": "h:1", "rec": "file:///tmp/t.jsonl"}, active="rec"
    )
    with pytest.raises(ConfigError) as caught:
        check_inbounds([config])
    assert str(caught.value) == (
        'inbound "foo": key "active": outbound "rec" (file://) gives no HTTP '
        "response and cannot be active"
    )


def test_the_controller_refuses_a_sink_as_active() -> None:
    reactor = MemoryReactorClock()
    controller = Controller(reactor, HTTPClientPool(reactor))
    config = inbound_config(
        out={"prod": "h:1", "ship": "tcp://127.0.0.1:5170"}, active="ship"
    )
    failure = Deferred.fromCoroutine(controller.add_inbound(config))
    failures: list[Any] = []
    failure.addErrback(failures.append)
    (reason,) = failures
    assert reason.check(ConfigError)
    assert "cannot be active" in str(reason.value)
    assert reactor.tcpServers == []
    assert reactor.tcpClients == []


def test_the_controller_refuses_an_unknown_scheme_when_adding_an_outbound() -> None:
    reactor = MemoryReactorClock()
    controller = Controller(reactor, HTTPClientPool(reactor))
    Deferred.fromCoroutine(controller.add_inbound(inbound_config(out={"prod": "h:1"})))
    with pytest.raises(ConfigError) as caught:
        controller.put_outbound("foo", parse_outbound("foo", "x", "nope://h"))
    assert "(available: file, http, https, tcp)" in str(caught.value)
    assert [o.name for o in controller.configs()[0].outbounds] == ["prod"]


def test_valid_configurations_pass_the_startup_check() -> None:
    check_inbounds(
        [
            inbound_config(
                out={
                    "prod": "h:1",
                    "rec": {"addr": "file:///tmp/t.jsonl", "maxBytes": 1000},
                    "ship": {"addr": "tcp://127.0.0.1:5170", "bufferLines": 10},
                }
            )
        ]
    )


@implementer(IOutboundFactory)
@frozen
class PlainFactory:
    """A factory that takes no options (it provides no IOutboundValidator)."""

    scheme: str = "plain"
    gives_response: bool = False

    def build(self, config: OutboundConfig, context: OutboundContext) -> IOutbound:
        return FakeOutbound(gives_response=False)


def test_a_factory_without_a_validator_takes_no_options() -> None:
    factories = {"plain": PlainFactory()}
    factory_for("foo", parse_outbound("foo", "p", "plain://x"), factories)
    config = parse_outbound("foo", "p", {"addr": "plain://x", "sampel": 1})
    with pytest.raises(ConfigError) as caught:
        factory_for("foo", config, factories)
    assert str(caught.value) == (
        'inbound "foo": outbound "p": unknown key "sampel" (did you mean "sample"?)'
    )
    assert caught.value.key == "sampel"


# -- options: parsed for plugin schemes, kept, written back -------------------


def test_extra_keys_are_options_for_plugin_schemes_only() -> None:
    config = parse_outbound(
        "foo", "rec", {"addr": "file:///t", "maxBytes": 5, "tags": ["a", {"b": 1}]}
    )
    assert dict(config.options) == {"maxBytes": 5, "tags": ["a", {"b": 1}]}
    with pytest.raises(ConfigError) as caught:
        parse_outbound("foo", "web", {"addr": "http://h", "maxBytes": 5})
    assert 'unknown key "maxBytes"' in str(caught.value)
    with pytest.raises(ConfigError):
        OutboundConfig("web", config.address, options={"sample": 1})


def test_options_survive_the_round_trip() -> None:
    config = inbound_config(
        "foo",
        ":9080",
        out={
            "prod": "h:1",
            "rec": {"addr": "file:///t", "sample": 0.5, "maxBytes": 5, "x": [1]},
        },
    )
    assert config.to_json()["out"]["rec"] == {
        "addr": "file:///t",
        "sample": 0.5,
        "maxBytes": 5,
        "x": [1],
    }
    assert load_config(dump_config([config])) == (config,)
    assert parse_inbound(config.to_json()) == config


def test_options_are_frozen_and_hashable() -> None:
    given: dict[str, Any] = {"addr": "file:///t", "tags": ["a"]}
    config = parse_outbound("foo", "rec", given)
    given["tags"].append("b")
    assert config.options["tags"] == ["a"]
    same = parse_outbound("foo", "rec", {"addr": "file:///t", "tags": ["a"]})
    assert config == same
    assert hash(config) == hash(same)
    assert config != parse_outbound("foo", "rec", {"addr": "file:///t", "tags": []})


def test_option_helpers() -> None:
    config = parse_outbound(
        "foo", "p", {"addr": "x://h", "n": 3, "flag": True, "s": "v", "bad": 1.5}
    )
    assert integer_option(config, "n", 0) == 3
    assert integer_option(config, "missing", 7) == 7
    assert string_option(config, "s", "") == "v"
    assert string_option(config, "missing", "d") == "d"
    for key in ("flag", "bad", "s"):
        with pytest.raises(ConfigError) as caught:
            integer_option(config, key, 0)
        assert caught.value.key == key
    with pytest.raises(ConfigError, match="at least 5"):
        integer_option(config, "n", 0, minimum=5)
    with pytest.raises(ConfigError, match="expected a string"):
        string_option(config, "n", "")
    check_option_names(config, ("n", "flag", "s", "bad"))
    with pytest.raises(ConfigError, match='unknown key "flag"'):
        check_option_names(config, ("n", "s", "bad"))
