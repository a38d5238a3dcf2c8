"""The process's recent log events, kept in a ring for C{GET /debug/klog}.

gonfork kept its last 1000 log lines in memory (its "klog") and served them
over HTTP, so that an operator can see what happened without access to the
log files.  L{LogRing} is a C{twisted.logger} observer doing the same; the
L{LogRingService} adds it to the global log publisher while nfork runs.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timezone

from twisted.application.service import Service
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    LogPublisher,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

RING_SIZE = 1000
"""How many log events the ring keeps, like gonfork's klog."""

_LEVEL_NAMES: dict[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}
_ORDER = {level: rank for rank, level in enumerate(LogLevel.iterconstants())}


def parse_level(text: str) -> LogLevel:
    """The log level called C{text} ("warning" is accepted for "warn").

    @raise ValueError: for an unknown name, listing the valid ones.
    """
    try:
        return _LEVEL_NAMES[text.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {text!r} (expected debug, info, warn, error "
            "or critical)"
        ) from None


def _event_time(event: LogEvent) -> str | None:
    when = event.get("log_time")
    if not isinstance(when, int | float):
        return None
    return datetime.fromtimestamp(when, timezone.utc).isoformat()


def _event_text(event: LogEvent) -> str:
    text = formatEvent(event)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        text = f"{text}\n{failure.getTraceback()}".rstrip("\n")
    return text


@implementer(ILogObserver)
class LogRing:
    """A log observer keeping the last C{size} events, formatted, oldest first.

    Events are turned into short JSON-ready records as they arrive, so that
    the ring holds no reference to the objects that were logged.  Appending
    to a bounded C{deque} is atomic: events logged from other threads are
    safe.
    """

    def __init__(self, size: int = RING_SIZE) -> None:
        self._records: deque[tuple[int, dict[str, object]]] = deque(maxlen=size)

    def __call__(self, event: LogEvent) -> None:
        """Record one event (an observer never raises)."""
        level = event.get("log_level", LogLevel.info)
        if not any(level is known for known in _ORDER):
            level = LogLevel.info
        try:
            text = _event_text(event)
        except Exception as e:  # pragma: no cover - formatEvent already guards
            text = f"unformattable log event: {e!r}"
        record: dict[str, object] = {
            "time": _event_time(event),
            "level": level.name,
            "namespace": event.get("log_namespace", ""),
            "text": text,
        }
        self._records.append((_ORDER[level], record))

    def events(self, minimum: LogLevel = LogLevel.debug) -> list[dict[str, object]]:
        """The recorded events at C{minimum} level or above, newest last."""
        floor = _ORDER[minimum]
        return [record for rank, record in list(self._records) if rank >= floor]


class LogRingService(Service):
    """Keeps C{ring} subscribed to the log publisher while the service runs.

    It subscribes in L{privilegedStartService}, the first phase of twistd's
    start: what the services after it log while listening (the warning of a
    control API exposed without a token) is in the ring too.
    """

    def __init__(
        self, ring: LogRing, publisher: LogPublisher = globalLogPublisher
    ) -> None:
        self.ring = ring
        self._publisher = publisher
        self._subscribed = False

    def privilegedStartService(self) -> None:
        """Start recording log events, before any service listens."""
        super().privilegedStartService()
        self._subscribe()

    def startService(self) -> None:
        """Start recording log events (if the privileged start did not)."""
        super().startService()
        self._subscribe()

    def stopService(self) -> None:
        """Stop recording log events."""
        super().stopService()
        if self._subscribed:
            self._subscribed = False
            self._publisher.removeObserver(self.ring)

    def _subscribe(self) -> None:
        if not self._subscribed:
            self._subscribed = True
            self._publisher.addObserver(self.ring)
