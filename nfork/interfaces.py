"""Kept for plugins written before 0.2: the interfaces are in L{nfork.outbounds.api}."""

from nfork.outbounds.api import IOutbound, IOutboundFactory, IOutboundValidator

__all__ = ["IOutbound", "IOutboundFactory", "IOutboundValidator"]
