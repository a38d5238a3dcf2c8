"""The built-in sinks: outbounds that record request copies instead of answering.

C{file://} appends them to a JSON-lines file (L{nfork.outbounds.sinks.file}) and
C{tcp://} ships the same lines to a log collector (L{nfork.outbounds.sinks.tcp}); both
encode with L{nfork.outbounds.sinks.records}.  They are registered as plugins in
C{nfork/plugins/nfork_sinks.py}.
"""


class SinkClosed(Exception):
    """The sink was closed; it takes no more copies."""
