"""Kept for plugins written before 0.2: see L{nfork.outbounds}.

The context and the option helpers live in L{nfork.outbounds.api}, the
factory lookup in L{nfork.outbounds.registry}, the HTTP outbound in
L{nfork.outbounds.http}.
"""

from nfork.outbounds.api import (
    OutboundContext,
    check_option_names,
    integer_option,
    string_option,
)
from nfork.outbounds.http import HTTPOutbound, HTTPOutboundFactory
from nfork.outbounds.registry import (
    check_inbound,
    check_inbounds,
    factory_for,
    outbound_factories,
)

__all__ = [
    "HTTPOutbound",
    "HTTPOutboundFactory",
    "OutboundContext",
    "check_inbound",
    "check_inbounds",
    "check_option_names",
    "factory_for",
    "integer_option",
    "outbound_factories",
    "string_option",
]
