"""The built-in HTTP and HTTPS outbounds, registered as plugins."""

from nfork.outbounds.http import HTTPOutboundFactory

http = HTTPOutboundFactory("http")
https = HTTPOutboundFactory("https")
