"""Worker processes: with C{--workers N}, N processes forward the traffic.

The parent process keeps the configuration, the control API, the stats and
the signals; each worker (L{nfork.workers.child}) runs only the data path and
takes its configuration from the parent over AMP (L{nfork.workers.protocol}).
"""
