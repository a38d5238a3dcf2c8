"""Atomic writes of the config file, and changes undone when it cannot be written."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from nfork.config import InboundConfig, dump_config, load_config, parse_outbound
from nfork.control.changes import Changes, PersistError
from nfork.control.configfile import ConfigFile, in_thread_pool, write_file_atomically
from nfork.control.controller import Conflict, Controller
from tests.support.configs import inbound_config, inbound_json

WEB = inbound_json("web", "127.0.0.1:9080", out={"prod": "h:1", "staging": "h:2"})


# -- write_file_atomically ---------------------------------------------------


def test_writes_the_text_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "nfork.json"
    path.write_text("old")
    write_file_atomically(str(path), "new ✓\n")
    assert path.read_text(encoding="utf-8") == "new ✓\n"
    assert [p.name for p in tmp_path.iterdir()] == ["nfork.json"]


def test_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nfork.json"
    write_file_atomically(str(path), "[]\n")
    assert path.read_text() == "[]\n"


def test_keeps_the_files_permissions(tmp_path: Path) -> None:
    path = tmp_path / "nfork.json"
    path.write_text("old")
    path.chmod(0o600)
    write_file_atomically(str(path), "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_replaces_the_target_of_a_symbolic_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "nfork.json"
    target.write_text("old")
    link = tmp_path / "nfork.json"
    link.symlink_to(target)
    write_file_atomically(str(link), "new")
    assert link.is_symlink()
    assert target.read_text() == "new"


def test_a_failed_write_leaves_the_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nfork.json"
    path.write_text("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_file_atomically(str(path), "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["nfork.json"]


def test_an_unwritable_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_file_atomically(str(tmp_path / "missing" / "nfork.json"), "x")


def test_config_file_saves_in_the_config_format(tmp_path: Path) -> None:
    path = tmp_path / "nfork.json"
    d = ConfigFile(str(path)).save([inbound_config(**WEB)])
    assert d.called
    assert path.read_text() == dump_config([inbound_config(**WEB)])


class ThreadPoolTests(SynchronousTestCase):
    def test_in_thread_pool_defers_the_write_to_the_reactors_pool(self) -> None:
        calls: list[tuple[Any, ...]] = []

        class Pool:
            def callInThreadWithCallback(self, *args: Any) -> None:
                calls.append(args)

        class Reactor:
            def getThreadPool(self) -> Pool:
                return Pool()

        def writer(path: str, text: str) -> None:
            pass

        d = in_thread_pool(Reactor())(writer, "p", "t")
        self.assertNoResult(d)
        [(_, function, path, text)] = calls
        self.assertEqual((function, path, text), (writer, "p", "t"))


# -- Changes -----------------------------------------------------------------


class Writer:
    """A writer that fails on demand and records what it wrote."""

    def __init__(self) -> None:
        self.error: OSError | None = None
        self.written: list[str] = []

    def __call__(self, path: str, text: str) -> None:
        if self.error is not None:
            raise self.error
        self.written.append(text)


class ChangesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.controller = Controller(self.reactor)
        self.writer = Writer()
        self.changes = Changes(
            self.controller, ConfigFile("/etc/nfork.json", writer=self.writer)
        )
        self.successResultOf(self.changes.add_inbound(inbound_config(**WEB)))

    def fail_writes(self) -> None:
        self.writer.error = PermissionError(13, "Permission denied", "/etc/x")

    def assert_undone(self, d: Deferred[Any], before: Any) -> None:
        failure = self.failureResultOf(d, PersistError)
        self.assertIn("Permission denied", str(failure.value))
        self.assertIn("the change was undone", str(failure.value))
        self.assertEqual(self.controller.configs(), before)

    def test_each_change_is_written(self) -> None:
        self.assertEqual(self.writer.written, [dump_config([inbound_config(**WEB)])])
        self.successResultOf(self.changes.activate("web", "staging"))
        self.assertEqual(
            load_config(self.writer.written[-1]), self.controller.configs()
        )
        self.assertEqual(len(self.writer.written), 2)

    def test_a_refused_change_writes_nothing(self) -> None:
        self.failureResultOf(self.changes.remove_outbound("web", "prod"), Conflict)
        self.assertEqual(len(self.writer.written), 1)

    def test_adding_an_inbound_is_undone(self) -> None:
        before = self.controller.configs()
        self.fail_writes()
        self.assert_undone(
            self.changes.add_inbound(
                inbound_config("new", "127.0.0.1:9081", out=WEB["out"])
            ),
            before,
        )

    def stats(self) -> dict[str, Any]:
        """Every outbound's stats object, after recording one answer in each."""
        found = {}
        for route in self.controller.inbound("web").routing.routes:
            route.stats.record_response(200, 0.001)
            found[route.name] = route.stats
        return found

    def assert_same_stats(self, stats: dict[str, Any]) -> None:
        routes = self.controller.inbound("web").routing.routes
        self.assertEqual({route.name: route.stats for route in routes}, stats)

    def test_removing_an_inbound_is_undone(self) -> None:
        before = self.controller.configs()
        stats = self.stats()
        self.fail_writes()
        self.assert_undone(self.changes.remove_inbound("web"), before)
        self.assertEqual(len(self.reactor.tcpServers), 2)  # listening again
        self.assert_same_stats(stats)

    def test_putting_an_outbound_is_undone(self) -> None:
        before = self.controller.configs()
        stats = self.stats()
        self.fail_writes()
        added = parse_outbound("web", "logging", "h:3")
        self.assert_undone(self.changes.put_outbound("web", added), before)
        replaced = parse_outbound("web", "staging", "h:9")
        self.assert_undone(self.changes.put_outbound("web", replaced), before)
        self.assert_same_stats(stats)

    def test_removing_an_outbound_is_undone(self) -> None:
        before = self.controller.configs()
        stats = self.stats()
        self.fail_writes()
        self.assert_undone(self.changes.remove_outbound("web", "staging"), before)
        self.assert_same_stats(stats)

    def test_activating_is_undone_and_keeps_the_stats(self) -> None:
        before = self.controller.configs()
        stats = self.controller.outbound_route("web", "staging").stats
        stats.record_response(200, 0.001)
        self.fail_writes()
        self.assert_undone(self.changes.activate("web", "staging"), before)
        self.assertIs(self.controller.outbound_route("web", "staging").stats, stats)
        self.assertEqual(self.controller.inbound("web").routing.active.name, "prod")

    def test_failures_are_logged(self) -> None:
        self.fail_writes()
        with capturedLogs() as events:
            self.failureResultOf(self.changes.activate("web", "staging"))
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["reason"], "Permission denied: /etc/x")

    def test_a_failed_undo_is_logged_as_critical(self) -> None:
        self.fail_writes()

        async def broken(config: InboundConfig, stats_from: Any = None) -> None:
            raise RuntimeError("cannot restore")

        self.controller.update_inbound = broken  # type: ignore[method-assign]
        with capturedLogs() as events:
            self.failureResultOf(self.changes.activate("web", "staging"), PersistError)
        self.assertTrue(
            any(
                e["log_level"] == LogLevel.critical and "log_failure" in e
                for e in events
            )
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_changes_run_one_at_a_time(self) -> None:
        pending: list[Deferred[None]] = []

        def slow(writer: Any, path: str, text: str) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            pending.append(d)
            return d

        changes = Changes(self.controller, ConfigFile("/x", run=slow))
        first = changes.activate("web", "staging")
        second = changes.activate("web", "prod")
        self.assertNoResult(first)
        self.assertNoResult(second)
        # The second change waits for the first one to be saved.
        self.assertEqual(self.controller.inbound("web").config.active, "staging")
        self.assertEqual(len(pending), 1)
        pending[0].callback(None)
        self.assertEqual(self.successResultOf(first).active, "staging")
        self.assertEqual(self.controller.inbound("web").config.active, "prod")
        pending[1].callback(None)
        self.assertEqual(self.successResultOf(second).active, "prod")

    def test_cancelling_does_not_interrupt_a_started_change(self) -> None:
        pending: list[Deferred[None]] = []

        def slow(writer: Any, path: str, text: str) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            pending.append(d)
            return d

        changes = Changes(self.controller, ConfigFile("/x", run=slow))
        d = changes.activate("web", "staging")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        # The write goes on; once it succeeds, the change stays.
        pending[0].callback(None)
        self.assertEqual(self.controller.inbound("web").config.active, "staging")
        # And a failure after cancellation is still undone, silently for the caller.
        e = changes.activate("web", "prod")
        e.cancel()
        self.failureResultOf(e, CancelledError)
        pending[1].errback(OSError(5, "I/O error"))
        self.assertEqual(self.controller.inbound("web").config.active, "staging")

    def test_without_a_config_file_changes_are_only_applied(self) -> None:
        changes = Changes(self.controller)
        self.successResultOf(changes.activate("web", "staging"))
        self.assertEqual(len(self.writer.written), 1)
        self.assertEqual(self.controller.inbound("web").config.active, "staging")


def test_run_inline_reports_errors_as_failures() -> None:
    def broken(path: str, text: str) -> None:
        raise OSError(5, "I/O error")

    d = ConfigFile("/x", writer=broken).save([])
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures[0].check(OSError)
    assert succeed(None).called
