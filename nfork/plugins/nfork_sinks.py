"""The built-in sinks, registered as plugins: file:// and tcp://."""

from nfork.sinks.file import FileSinkFactory
from nfork.sinks.tcp import TCPSinkFactory

file = FileSinkFactory()
tcp = TCPSinkFactory()
