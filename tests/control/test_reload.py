"""Reloading the config file: apply the difference, refuse invalid files."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from nfork.control.controller import Controller
from nfork.control.reload import ReloadResult, apply_configs, reload_file
from nfork.proxy.client import HTTPClientPool
from tests.support.configs import inbound_json, load_inbounds, write_config
from tests.support.fakes import FakeFactory


class ReloadTests(SynchronousTestCase):
    def temp_file(self) -> Path:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        return Path(directory) / "nfork.json"

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.controller = Controller(
            self.reactor,
            HTTPClientPool(self.reactor),
            factories={"http": FakeFactory("http", {})},
        )
        for config in load_inbounds(
            inbound_json("keep", ":9001"),
            inbound_json("change", ":9002"),
            inbound_json("drop", ":9003"),
        ):
            self.successResultOf(
                Deferred.fromCoroutine(self.controller.add_inbound(config))
            )

    def test_difference_is_applied_and_unchanged_outbounds_keep_stats(self) -> None:
        staging = self.controller.outbound_route("change", "staging")
        keep = self.controller.inbound("keep")
        wanted = load_inbounds(
            inbound_json("keep", ":9001"),
            inbound_json("change", ":9002", timeout="3s"),
            inbound_json("new", ":9004"),
        )
        result = self.successResultOf(
            Deferred.fromCoroutine(apply_configs(self.controller, wanted))
        )
        self.assertEqual(
            result, ReloadResult(added=("new",), removed=("drop",), updated=("change",))
        )
        self.assertEqual(
            [c.name for c in self.controller.configs()], ["keep", "change", "new"]
        )
        self.assertIs(self.controller.outbound_route("change", "staging"), staging)
        self.assertEqual(self.controller.inbound("change").config.timeout, 3.0)
        self.assertIs(self.controller.inbound("keep"), keep)

    def test_invalid_file_changes_nothing_and_is_logged(self) -> None:
        path = self.temp_file()
        path.write_text(
            '[{"name": "keep", "listen": ":9001", "out": {}, "active": "x"}]'
        )
        before = self.controller.configs()
        with capturedLogs() as events:
            result = self.successResultOf(
                Deferred.fromCoroutine(reload_file(self.controller, str(path)))
            )
        self.assertIsNone(result)
        self.assertEqual(self.controller.configs(), before)
        self.assertTrue(
            any("nothing changed" in str(e.get("log_format")) for e in events)
        )

    def test_reload_file_applies_a_valid_file(self) -> None:
        path = self.temp_file()
        write_config(path, inbound_json("keep", ":9001"))
        result = self.successResultOf(
            Deferred.fromCoroutine(reload_file(self.controller, str(path)))
        )
        assert result is not None
        self.assertEqual(set(result.removed), {"change", "drop"})
        self.assertEqual([c.name for c in self.controller.configs()], ["keep"])


class ChangesReloadTests(ReloadTests):
    """Reloading through Changes takes the same lock as API changes."""

    def test_reload_waits_for_a_change_in_progress(self) -> None:
        from nfork.control.changes import Changes

        changes = Changes(self.controller)
        path = self.temp_file()
        write_config(path, inbound_json("keep", ":9001"))
        # Hold the lock as an API change in progress would.
        locked = changes._lock.acquire()
        self.successResultOf(locked)
        reloaded = changes.reload(str(path))
        self.assertNoResult(reloaded)
        self.assertEqual(len(self.controller.configs()), 3)
        changes._lock.release()
        result = self.successResultOf(reloaded)
        assert result is not None
        self.assertEqual([c.name for c in self.controller.configs()], ["keep"])
