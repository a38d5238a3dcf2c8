"""Kept for plugins written before 0.2: the messages live in L{nfork.proxy.messages}."""

from nfork.proxy.messages import CopyDropped, Headers, ProxyRequest, ProxyResponse

__all__ = ["CopyDropped", "Headers", "ProxyRequest", "ProxyResponse"]
