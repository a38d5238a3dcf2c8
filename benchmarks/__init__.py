"""nfork's benchmark harness: wrk load against nfork and nginx's mirror, on loopback.

Run it with C{make bench} or C{python -m benchmarks.run --help}; see
C{docs/performance.md} for what it measures and how to read the table.
"""
