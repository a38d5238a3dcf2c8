"""nfork: an HTTP live-traffic duplication proxy on Twisted."""

__version__ = "0.1.0"
