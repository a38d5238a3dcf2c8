"""The ring of recent log events served by /debug/klog."""

from __future__ import annotations

from datetime import datetime

import pytest
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    capturedLogs,
)
from zope.interface.verify import verifyObject

from nfork.control.klog import RING_SIZE, LogRing, LogRingService, parse_level


def feed(ring: LogRing, log: Logger, level: LogLevel, text: str, **kw: object) -> None:
    with capturedLogs() as events:
        log.emit(level, text, **kw)
    for event in events:
        ring(event)


def test_log_ring_is_a_log_observer() -> None:
    assert verifyObject(ILogObserver, LogRing())


def test_records_time_level_namespace_and_formatted_text() -> None:
    ring = LogRing()
    feed(ring, Logger(namespace="nfork.x"), LogLevel.warn, "hello {who}", who="you")
    [record] = ring.events()
    assert set(record) == {"time", "level", "namespace", "text"}
    assert record["level"] == "warn"
    assert record["namespace"] == "nfork.x"
    assert record["text"] == "hello you"
    assert isinstance(record["time"], str)
    assert datetime.fromisoformat(record["time"]).utcoffset() is not None


def test_keeps_the_last_thousand_events_newest_last() -> None:
    ring = LogRing()
    log = Logger(namespace="t")
    with capturedLogs() as events:
        for i in range(RING_SIZE + 5):
            log.info("event {i}", i=i)
    for event in events:
        ring(event)
    records = ring.events()
    assert len(records) == RING_SIZE == 1000
    assert records[0]["text"] == "event 5"
    assert records[-1]["text"] == "event 1004"


def test_filters_at_a_level_and_above() -> None:
    ring = LogRing()
    log = Logger(namespace="t")
    for level in LogLevel.iterconstants():
        feed(ring, log, level, "at {name}", name=level.name)
    assert [r["level"] for r in ring.events(LogLevel.warn)] == [
        "warn",
        "error",
        "critical",
    ]
    assert len(ring.events()) == 5
    assert [r["level"] for r in ring.events(LogLevel.critical)] == ["critical"]


def test_failures_keep_their_traceback() -> None:
    ring = LogRing()
    log = Logger(namespace="t")
    with capturedLogs() as events:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.failure("it broke")
    for event in events:
        ring(event)
    [record] = ring.events()
    assert record["level"] == "critical"
    text = record["text"]
    assert isinstance(text, str)
    assert text.startswith("it broke\n")
    assert "ZeroDivisionError" in text


def test_odd_events_do_not_break_the_ring() -> None:
    ring = LogRing()
    ring({})
    ring({"log_level": "loud", "log_time": "yesterday", "log_format": "{missing}"})
    records = ring.events()
    assert [r["level"] for r in records] == ["info", "info"]
    assert records[1]["time"] is None
    assert "Unable to format event" in str(records[1]["text"])


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("debug", LogLevel.debug),
        ("info", LogLevel.info),
        ("warn", LogLevel.warn),
        ("WARNING", LogLevel.warn),
        ("error", LogLevel.error),
        ("critical", LogLevel.critical),
    ],
)
def test_parse_level(name: str, level: LogLevel) -> None:
    assert parse_level(name) is level


def test_parse_level_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="expected debug, info, warn, error"):
        parse_level("loud")


def test_service_subscribes_the_ring_while_running() -> None:
    publisher = LogPublisher()
    ring = LogRing()
    service = LogRingService(ring, publisher)
    log = Logger(namespace="t", observer=publisher)
    log.info("before")
    service.startService()
    log.info("during")
    service.stopService()
    log.info("after")
    assert [r["text"] for r in ring.events()] == ["during"]


def test_the_privileged_start_subscribes_once() -> None:
    # twistd starts every service's privileged phase first: what a service
    # logs while listening (a control API exposed without a token) is kept.
    publisher = LogPublisher()
    ring = LogRing()
    service = LogRingService(ring, publisher)
    log = Logger(namespace="t", observer=publisher)
    service.privilegedStartService()
    log.warn("while listening")
    service.startService()
    log.info("running")
    service.stopService()
    log.info("after")
    assert [r["text"] for r in ring.events()] == ["while listening", "running"]
