"""The built-in HTTP and HTTPS outbounds, registered as plugins."""

from nfork.outbound import HTTPOutboundFactory

http = HTTPOutboundFactory("http")
https = HTTPOutboundFactory("https")
