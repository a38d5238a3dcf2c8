"""Tests for an inbound's trustForwarded: networks read, checked, written back."""

from __future__ import annotations

import ipaddress

import pytest

from nfork.config import ConfigError, InboundConfig
from tests.support.configs import inbound_config


def test_default_trusts_nobody() -> None:
    config = inbound_config()
    assert config.trust_forwarded == ()
    assert not config.trusts_forwarded("127.0.0.1")
    assert "trustForwarded" not in config.to_json()


def test_networks_and_single_addresses_are_read_and_written_back() -> None:
    config = inbound_config(trustForwarded=["10.0.0.0/8", "::1/128", "192.0.2.7"])
    assert config.to_json()["trustForwarded"] == [
        "10.0.0.0/8",
        "::1/128",
        "192.0.2.7/32",
    ]
    assert inbound_config(**{"trustForwarded": config.to_json()["trustForwarded"]})


@pytest.mark.parametrize(
    ("client", "trusted"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),
        ("::1", True),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("11.0.0.1", False),
        ("", False),
        ("not-an-address", False),
    ],
)
def test_trusts_clients_in_its_networks(client: str, trusted: bool) -> None:
    config = inbound_config(trustForwarded=["10.0.0.0/8", "::1/128", "192.0.2.7"])
    assert config.trusts_forwarded(client) is trusted


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            ["10.0.0.1/8"],
            'inbound "foo": key "trustForwarded": "10.0.0.1/8" has bits set beyond '
            'its prefix length; did you mean "10.0.0.0/8"?',
        ),
        (
            ["10.0.0.0/33"],
            'inbound "foo": key "trustForwarded": "10.0.0.0/33" is not an IP network '
            'in CIDR notation (such as "10.0.0.0/8")',
        ),
        (
            "10.0.0.0/8",
            'inbound "foo": key "trustForwarded": expected an array of client '
            'networks such as ["10.0.0.0/8", "::1/128"], got the string "10.0.0.0/8"',
        ),
        (
            [8],
            'inbound "foo": key "trustForwarded": expected networks in CIDR notation '
            "(strings), got the number 8",
        ),
    ],
)
def test_bad_networks_are_refused_naming_inbound_key_and_value(
    value: object, message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        inbound_config(trustForwarded=value)
    assert str(e.value) == message


def test_the_model_refuses_what_is_not_a_network() -> None:
    good = inbound_config()
    with pytest.raises(ConfigError, match='key "trustForwarded": expected IP networks'):
        InboundConfig(
            name=good.name,
            listen=good.listen,
            endpoint=good.endpoint,
            outbounds=good.outbounds,
            active=good.active,
            trust_forwarded=("10.0.0.0/8",),  # type: ignore[arg-type]
        )
    built = InboundConfig(
        name=good.name,
        listen=good.listen,
        endpoint=good.endpoint,
        outbounds=good.outbounds,
        active=good.active,
        trust_forwarded=[ipaddress.ip_network("10.0.0.0/8")],
    )
    assert built.trusts_forwarded("10.9.9.9")
