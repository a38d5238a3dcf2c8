"""The AMP commands between the parent and its worker processes.

The parent calls every command; a worker answers.  Configurations and
snapshots are JSON text of any length (L{LongText}: AMP limits one value to
64 KiB).
"""

from __future__ import annotations

from typing import Any

from twisted.protocols import amp

_CHUNK = 0xFFFF


class LongText(amp.Argument):
    """Unicode text of any length, split over several AMP values."""

    def toBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: Any,
    ) -> None:
        """Write C{name.0}, C{name.1}, ... (at least one)."""
        data = objects[name.decode("ascii")].encode("utf-8")
        for index, start in enumerate(range(0, max(len(data), 1), _CHUNK)):
            strings[b"%s.%d" % (name, index)] = data[start : start + _CHUNK]

    def fromBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: Any,
    ) -> None:
        """Join C{name.0}, C{name.1}, ... back."""
        chunks = []
        index = 0
        while (key := b"%s.%d" % (name, index)) in strings:
            chunks.append(strings[key])
            index += 1
        objects[name.decode("ascii")] = b"".join(chunks).decode("utf-8")


class WorkerError(Exception):
    """A worker could not do what it was asked; the message says why."""


class Configure(amp.Command):
    """Apply the full desired state; answered once applied.

    C{configs}: the JSON of L{nfork.config.load.dump_config}; C{listen}: JSON
    C{{inbound: [host, port]}}, the addresses the parent reserved.
    """

    arguments = [(b"configs", LongText()), (b"listen", LongText())]
    response = []
    errors = {WorkerError: b"WORKER_ERROR"}


class Snapshot(amp.Command):
    """The worker's figures as JSON text (L{nfork.workers.merge.snapshot})."""

    arguments = []
    response = [(b"snapshot", LongText())]


class ResetCompare(amp.Command):
    """Forget an inbound's comparison counters and samples."""

    arguments = [(b"inbound", amp.Unicode())]
    response = []
    errors = {WorkerError: b"WORKER_ERROR"}


class Drain(amp.Command):
    """Stop listening, let requests in flight finish (up to C{timeout} seconds),
    answer, then exit with status 0."""

    arguments = [(b"timeout", amp.Float())]
    response = []
