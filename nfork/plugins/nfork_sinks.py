"""The built-in sinks, registered as plugins: file:// and tcp://."""

from nfork.outbounds.sinks.file import FileSinkFactory
from nfork.outbounds.sinks.tcp import TCPSinkFactory

file = FileSinkFactory()
tcp = TCPSinkFactory()
