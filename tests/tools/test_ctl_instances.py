"""nfork ctl with --control repeated: one command to several real nfork instances.

Two twistd processes serve the same config (as two hosts behind a load
balancer would, each from its copy of the file) with the same token; the
command lines go through C{nfork}'s real parser and L{ctl_main}, and one
runs the real C{nfork} command, for C{add -} reading standard input once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nfork.tools.cli import parser
from nfork.tools.ctl import ctl_options
from tests.support.backends import ThreadedBackend
from tests.support.configs import inbound_json
from tests.support.ctl import run_ctl
from tests.support.running_nfork import RunningNfork, running_nfork

TOKEN = "ctl-instances-token-0123456789"
NFORK = str(Path(sys.executable).with_name("nfork"))


@attrs.frozen
class Instances:
    """The module's two nfork instances and their backends."""

    nforks: tuple[RunningNfork, RunningNfork]
    backends: tuple[ThreadedBackend, ThreadedBackend]
    directory: Path

    @property
    def controls(self) -> list[str]:
        return [nfork.control for nfork in self.nforks]

    @property
    def token_file(self) -> str:
        token_file = self.nforks[0].token_file
        assert token_file is not None
        return token_file

    def active(self) -> list[str]:
        """The active outbound of C{web} on each instance."""
        return [nfork.api("/v1/nfork/web")["active"] for nfork in self.nforks]


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instances]:
    """Two twistd nfork serving the inbound C{web} (prod active, staging)."""
    prod = ThreadedBackend(body='{{"from": "prod"}}').start()
    staging = ThreadedBackend(body='{{"from": "staging"}}').start()
    web = inbound_json("web", out={"prod": prod.address, "staging": staging.address})
    first = tmp_path_factory.mktemp("nfork-a")
    second = tmp_path_factory.mktemp("nfork-b")
    try:
        with (
            running_nfork(first, web, token=TOKEN) as a,
            running_nfork(second, web, token=TOKEN) as b,
        ):
            yield Instances((a, b), (prod, staging), first)
    finally:
        prod.stop()
        staging.stop()


def _closed_port() -> str:
    """A loopback address nothing listens on (just closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class SeveralInstancesTests(TestCase):
    """Each subcommand goes to every instance, each outcome on its line."""

    timeout = 30

    @pytest.fixture(autouse=True)
    def _instances(self, instances: Instances) -> None:
        self.instances = instances

    @inlineCallbacks
    def ctl(self, *argv: str, controls: list[str] | None = None) -> Any:
        """C{(exit status, stdout, stderr)} of C{nfork ctl} on the instances."""
        options: list[str] = []
        for control in self.instances.controls if controls is None else controls:
            options += ["--control", control]
        options += ["--token-file", self.instances.token_file]
        return (yield Deferred.fromCoroutine(run_ctl(*options, *argv)))

    @inlineCallbacks
    def test_activate_switches_every_instance_and_reports_each(self) -> Any:
        a, b = self.instances.controls
        self.addCleanup(self.ctl, "activate", "web", "prod")
        status, out, err = yield self.ctl("activate", "web", "staging")
        assert (status, err) == (0, "")
        assert out == (
            f"{a}: inbound web: staging is now active\n"
            f"{b}: inbound web: staging is now active\n"
        )
        assert self.instances.active() == ["staging", "staging"]
        status, out, err = yield self.ctl("activate", "web", "prod")
        assert (status, err) == (0, "")
        assert self.instances.active() == ["prod", "prod"]

    @inlineCallbacks
    def test_an_unreachable_instance_fails_alone_and_the_status_is_1(self) -> Any:
        a, b = self.instances.controls
        down = _closed_port()
        self.addCleanup(self.ctl, "activate", "web", "prod")
        status, out, err = yield self.ctl(
            "activate", "web", "staging", controls=[a, down, b]
        )
        assert status == 1
        assert out.splitlines() == [
            f"{a}: inbound web: staging is now active",
            f"http://{down}: failed: cannot reach nfork's control API at "
            f"http://{down}: connection refused",
            f"{b}: inbound web: staging is now active",
        ]
        assert err == "nfork ctl: 1 of 3 instances failed\n"
        assert self.instances.active() == ["staging", "staging"]

    @inlineCallbacks
    def test_a_refused_change_is_reported_per_instance(self) -> Any:
        a, b = self.instances.controls
        status, out, err = yield self.ctl("rm-out", "web", "nope")
        assert status == 1
        lines = out.splitlines()
        assert [line.split(": failed: ")[0] for line in lines] == [a, b]
        assert all('"nope"' in line for line in lines), lines
        assert err == "nfork ctl: 2 of 2 instances failed\n"

    @inlineCallbacks
    def test_a_table_follows_its_instances_url(self) -> Any:
        a, b = self.instances.controls
        status, out, err = yield self.ctl("ls")
        assert (status, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == f"{a}:"
        assert lines[1].split()[:2] == ["INBOUND", "LISTEN"]
        assert f"{b}:" in lines
        second = lines.index(f"{b}:")
        assert lines[second + 2].startswith("web ")

    @inlineCallbacks
    def test_json_maps_each_url_to_its_answer_or_error(self) -> Any:
        a, b = self.instances.controls
        down = _closed_port()
        status, out, _ = yield self.ctl("stats", "web", "--json", controls=[a, down, b])
        assert status == 1
        document = json.loads(out)
        assert list(document) == [a, f"http://{down}", b]
        assert set(document[a]["result"]) == {"prod", "staging"}
        assert set(document[b]["result"]) == {"prod", "staging"}
        assert "connection refused" in document[f"http://{down}"]["error"]


def test_add_from_standard_input_reaches_every_instance(instances: Instances) -> None:
    prod, _ = instances.backends
    inbound = inbound_json("piped", out={"prod": prod.address})
    controls = [arg for url in instances.controls for arg in ("--control", url)]
    env = {
        **{k: v for k, v in os.environ.items() if k != "NFORK_CONTROL"},
        "NFORK_TOKEN_FILE": instances.token_file,
    }

    def nfork(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NFORK, "ctl", *controls, *argv],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    try:
        result = nfork("add", "-", stdin=json.dumps(inbound))
        assert (result.returncode, result.stderr) == (0, "")
        for instance in instances.nforks:
            assert instance.api("/v1/nfork/piped")["out"] == {"prod": prod.address}
        assert result.stdout.count("inbound piped added") == 2
    finally:
        removed = nfork("rm", "piped")
    assert removed.stdout.splitlines() == [
        f"{url}: inbound piped removed" for url in instances.controls
    ]


class SeveralControlOptionsTests(SynchronousTestCase):
    """--control repeated, before and after the subcommand."""

    def options(self, *argv: str) -> Any:
        return ctl_options(parser().parse_args(["ctl", *argv]), {})

    def test_every_control_is_kept_in_order(self) -> None:
        options = self.options(
            "--control", "a:1", "--control", "https://b:2", "ls", "--control", "c:3"
        )
        assert options.controls == ("http://a:1", "https://b:2", "http://c:3")
        assert options.control == "http://a:1"

    def test_one_control_is_one_instance(self) -> None:
        assert self.options("ls", "--control", "a:1").controls == ()

    def test_the_same_instance_twice_is_a_usage_error(self) -> None:
        with pytest.raises(ValueError, match="http://a:1 is given twice"):
            self.options("--control", "a:1", "--control", "http://a:1/", "ls")

    def test_watch_takes_one_instance(self) -> None:
        with pytest.raises(ValueError, match="--watch shows one instance"):
            self.options("--control", "a:1", "--control", "b:2", "stats", "--watch")
