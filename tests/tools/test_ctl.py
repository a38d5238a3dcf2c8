"""nfork ctl against the real twistd: every subcommand, its output and its errors.

One twistd serves the whole module (with a control token): an inbound
C{web} forking to two threaded backends, prod active and staging comparing,
which has served a few requests before the first test.  Tests that change
things add inbounds of their own and leave C{web} as it is.  The command
lines go through C{nfork}'s real parser and L{ctl_main} on this process's
reactor; a few run the real C{nfork} command as a subprocess, for the exit
statuses, the environment variables and the messages as a user sees them.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nfork.tools.cli import parser
from nfork.tools.ctl import (
    CLEAR,
    DEFAULT_CONTROL,
    FAILED,
    CtlOptions,
    ctl_main,
    ctl_options,
)
from nfork.tools.ctl_tables import stats_table
from tests.support.backends import ThreadedBackend
from tests.support.configs import inbound_json
from tests.support.ctl import run_ctl
from tests.support.running_nfork import RunningNfork, running_nfork
from tests.support.waiting import poll_until

TOKEN = "ctl-test-token-0123456789"
REQUESTS = 5
"""Requests sent through C{web} before the tests."""
NFORK = str(Path(sys.executable).with_name("nfork"))


@attrs.frozen
class Running:
    """The module's nfork and its backends."""

    nfork: RunningNfork
    backends: tuple[ThreadedBackend, ThreadedBackend]
    directory: Path

    @property
    def control(self) -> str:
        return self.nfork.control

    @property
    def token_file(self) -> str:
        assert self.nfork.token_file is not None
        return self.nfork.token_file


def _api(running: Running, path: str) -> Any:
    return running.nfork.api(path)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """twistd with the inbound C{web} that has served L{REQUESTS} requests."""
    directory = tmp_path_factory.mktemp("ctl")
    prod = ThreadedBackend(body='{{"from": "prod"}}').start()
    staging = ThreadedBackend(body='{{"from": "staging"}}').start()
    web = inbound_json(
        "web",
        out={"prod": prod.address, "staging": staging.address},
        compare={"candidates": ["staging"]},
    )
    try:
        with running_nfork(directory, web, token=TOKEN) as nfork:
            for index in range(REQUESTS):
                assert nfork.send("web", f"/items/{index}") == b'{"from": "prod"}'

            def counted() -> bool:
                stats = nfork.api("/v1/nfork/web/stats")
                return all(
                    stats[o]["total"]["requests"] == REQUESTS
                    for o in ("prod", "staging")
                )

            assert poll_until(counted, timeout=10)
            yield Running(nfork, (prod, staging), directory)
    finally:
        prod.stop()
        staging.stop()


class CtlTests(TestCase):
    """Each subcommand through the real parser, on the module's nfork."""

    timeout = 20

    @pytest.fixture(autouse=True)
    def _running(self, running: Running) -> None:
        self.running = running

    @inlineCallbacks
    def ctl(self, *argv: str, token: bool = True) -> Any:
        """C{(exit status, stdout, stderr)} of C{nfork ctl ARGV}."""
        options = ["--control", self.running.control]
        if token:
            options += ["--token-file", self.running.token_file]
        return (yield Deferred.fromCoroutine(run_ctl(*options, *argv)))

    @inlineCallbacks
    def succeed(self, *argv: str) -> Any:
        """The output of a command that must succeed quietly."""
        status, out, err = yield self.ctl(*argv)
        assert (status, err) == (0, ""), (status, err)
        return out

    def inbound_file(self, name: str, **extra: Any) -> str:
        """A JSON file holding an inbound C{name} forking to both backends."""
        prod, staging = self.running.backends
        path = self.running.directory / f"{name}.json"
        path.write_text(
            json.dumps(
                inbound_json(
                    name, out={"prod": prod.address, "staging": staging.address}
                )
                | extra
            )
        )
        return str(path)

    @inlineCallbacks
    def added(self, name: str) -> Any:
        """Add the inbound C{name} with C{ctl add}; it is removed after the test."""
        yield self.succeed("add", self.inbound_file(name))
        self.addCleanup(self.ctl, "rm", name)

    # -- ls and stats ---------------------------------------------------------

    @inlineCallbacks
    def test_ls_lists_each_outbound_with_the_active_one_first(self) -> Any:
        out = yield self.succeed("ls")
        prod, staging = self.running.backends
        lines = out.splitlines()
        assert lines[0].split() == [
            "INBOUND",
            "LISTEN",
            "OUTBOUND",
            "ADDRESS",
            "OPTIONS",
        ]
        web = [line.split() for line in lines[1:] if line.startswith("web ")]
        assert web == [
            ["web", "127.0.0.1:0", "prod", "(active)", prod.address, "-"],
            ["web", "127.0.0.1:0", "staging", staging.address, "-"],
        ]
        # The columns line up: every row's address starts under ADDRESS.
        column = lines[0].index("ADDRESS")
        assert {line[column:].split()[0] for line in lines[1:3]} == {
            prod.address,
            staging.address,
        }

    @inlineCallbacks
    def test_ls_json_is_the_apis_list(self) -> Any:
        out = yield self.succeed("ls", "--json")
        inbounds = json.loads(out)
        assert inbounds == _api(self.running, "/v1/nfork")
        assert "web" in [i["name"] for i in inbounds]

    @inlineCallbacks
    def test_stats_shows_each_outbounds_totals_and_marks_the_active(self) -> Any:
        out = yield self.succeed("stats", "web")
        header, *rows = out.splitlines()
        assert header.split() == [
            "INBOUND",
            "OUTBOUND",
            "REQUESTS",
            "RATE/S",
            "P50",
            "P99",
            "CODES",
            "ERRORS",
            "TIMEOUTS",
            "DROPPED",
            "SKIPPED",
        ]
        cells = [row.split() for row in rows]
        assert cells[0][:4] == ["web", "prod", "(active)", str(REQUESTS)]
        assert cells[1][:3] == ["web", "staging", str(REQUESTS)]
        assert len(cells) == 2
        prod, staging = cells[0][4:], cells[1][3:]
        for figures in (prod, staging):
            assert figures[3:] == [f"200:{REQUESTS}", "0", "0", "0", "0"]
            # The last complete window's: at most the requests sent, at most
            # a few seconds ago; latencies only for a window that had some.
            rate, p50, p99 = figures[:3]
            assert 0 <= float(rate) <= REQUESTS
            if float(rate) == 0:
                assert (p50, p99) == ("-", "-")
            else:
                assert p50.endswith("s") and p99.endswith("s")

    @inlineCallbacks
    def test_stats_of_every_inbound_and_as_json(self) -> Any:
        out = yield self.succeed("stats")
        rows = [line.split() for line in out.splitlines()]
        assert ["web", "prod", "(active)", str(REQUESTS)] in [r[:4] for r in rows]
        out = yield self.succeed("--json", "stats")
        stats = json.loads(out)
        assert stats["web"]["prod"]["total"]["requests"] == REQUESTS
        out = yield self.succeed("stats", "web", "--json")
        assert json.loads(out)["staging"]["total"]["responses"] == {"200": REQUESTS}

    @inlineCallbacks
    def test_stats_watch_redraws_the_table(self) -> Any:
        out = yield self.succeed(
            "stats", "web", "--watch", "--count", "3", "--interval", "0.05"
        )
        # Not a terminal: the tables follow one another, a blank line between.
        tables = out.split("\n\n")
        assert len(tables) == 3
        assert all(t.startswith("INBOUND") for t in tables)
        assert all("prod (active)" in t for t in tables)
        assert "\x1b" not in out

    @inlineCallbacks
    def test_stats_watch_clears_a_terminal_before_each_table(self) -> Any:
        terminal = _Terminal()
        args = parser().parse_args(
            ["ctl", "--control", self.running.control, "stats", "web", "--watch"]
        )
        options = attrs.evolve(
            ctl_options(args, {"NFORK_TOKEN_FILE": self.running.token_file}),
            count=2,
            interval=0.05,
        )
        yield Deferred.fromCoroutine(ctl_main(reactor, options, stdout=terminal))
        tables = terminal.getvalue().split(CLEAR)
        assert tables[0] == ""
        assert [t.split()[0] for t in tables[1:]] == ["INBOUND", "INBOUND"]

    @inlineCallbacks
    def test_stats_watch_json_is_one_document_per_line(self) -> Any:
        out = yield self.succeed(
            "stats", "--json", "--watch", "--count", "2", "--interval", "0.05"
        )
        documents = [json.loads(line) for line in out.splitlines()]
        assert len(documents) == 2
        assert all(d["web"]["prod"]["total"]["requests"] == REQUESTS for d in documents)

    @inlineCallbacks
    def test_stats_of_an_unknown_inbound_prints_the_apis_message(self) -> Any:
        status, out, err = yield self.ctl("stats", "nope")
        assert (status, out) == (FAILED, "")
        assert err.startswith("nfork ctl: ")
        assert err.count("\n") == 1
        assert '"nope"' in err

    # -- changes --------------------------------------------------------------

    @inlineCallbacks
    def test_add_ls_and_rm_an_inbound(self) -> Any:
        out = yield self.succeed("add", self.inbound_file("extra"))
        self.addCleanup(self.ctl, "rm", "extra")  # if the test fails before
        assert out.splitlines()[0] == "inbound extra added, listening on 127.0.0.1:0"
        listed = yield self.succeed("ls")
        rows = [line.split()[:3] for line in listed.splitlines()]
        assert ["extra", "127.0.0.1:0", "prod"] in rows
        out = yield self.succeed("rm", "extra")
        assert out == "inbound extra removed\n"
        names = [i["name"] for i in _api(self.running, "/v1/nfork")]
        assert "extra" not in names

    @inlineCallbacks
    def test_activate_switches_the_active_outbound(self) -> Any:
        yield self.added("switch")
        out = yield self.succeed("activate", "switch", "staging")
        assert out == "inbound switch: staging is now active\n"
        assert _api(self.running, "/v1/nfork/switch")["active"] == "staging"
        out = yield self.succeed("--json", "activate", "switch", "prod")
        assert json.loads(out)["active"] == "prod"

    @inlineCallbacks
    def test_add_out_and_rm_out(self) -> Any:
        yield self.added("outs")
        prod, _ = self.running.backends
        out = yield self.succeed("add-out", "outs", "logger", prod.address)
        assert out == f"inbound outs: outbound logger -> {prod.address}\n"
        setting = json.dumps({"addr": prod.address, "sample": 0.5})
        yield self.succeed("add-out", "outs", "sampled", setting)
        outbounds = _api(self.running, "/v1/nfork/outs")["out"]
        assert outbounds["logger"] == prod.address
        assert outbounds["sampled"] == {"addr": prod.address, "sample": 0.5}
        listed = yield self.succeed("ls")
        [row] = [line for line in listed.splitlines() if "sampled" in line]
        assert row.split()[-1] == "sample=0.5"
        out = yield self.succeed("rm-out", "outs", "logger")
        assert out == "inbound outs: outbound logger removed\n"
        assert "logger" not in _api(self.running, "/v1/nfork/outs")["out"]

    @inlineCallbacks
    def test_refused_changes_print_the_apis_message_and_change_nothing(self) -> Any:
        yield self.added("guarded")
        before = _api(self.running, "/v1/nfork/guarded")
        status, _, err = yield self.ctl("rm-out", "guarded", "prod")
        assert status == FAILED
        assert err == (
            'nfork ctl: outbound "prod" is the active outbound of inbound '
            '"guarded"; activate another one first\n'
        )
        status, _, err = yield self.ctl("add-out", "guarded", "bad", "nohost:")
        assert status == FAILED
        assert err.startswith('nfork ctl: inbound "guarded"')
        status, _, err = yield self.ctl("activate", "guarded", "nope")
        assert status == FAILED
        assert '"nope"' in err
        status, _, err = yield self.ctl("add-out", "guarded", "x", "{not json")
        assert (status, err.split(":")[:2]) == (
            FAILED,
            ["nfork ctl", " the outbound object is not valid JSON"],
        )
        assert _api(self.running, "/v1/nfork/guarded") == before

    @inlineCallbacks
    def test_add_refuses_an_invalid_inbound_or_a_missing_file(self) -> Any:
        status, _, err = yield self.ctl("add", self.inbound_file("bad", active="nope"))
        assert status == FAILED
        assert err.startswith('nfork ctl: inbound "bad"')
        missing = str(self.running.directory / "missing.json")
        status, _, err = yield self.ctl("add", missing)
        assert (status, err) == (
            FAILED,
            f"nfork ctl: cannot read {missing}: No such file or directory\n",
        )
        status, _, err = yield self.ctl("rm", "nope")
        assert status == FAILED
        assert '"nope"' in err
        names = [i["name"] for i in _api(self.running, "/v1/nfork")]
        assert "bad" not in names

    # -- compare --------------------------------------------------------------

    @inlineCallbacks
    def test_compare_prints_the_report(self) -> Any:
        out = yield self.succeed("compare", "web")
        assert out.splitlines()[0].startswith("inbound web, primary prod")
        assert "candidate staging:" in out
        assert out.splitlines()[-1].startswith("verdict: ")
        out = yield self.succeed("compare", "web", "--json")
        assert "staging" in json.loads(out)["candidates"]

    @inlineCallbacks
    def test_compare_of_an_inbound_that_compares_nothing(self) -> Any:
        yield self.added("plain")
        status, out, err = yield self.ctl("compare", "plain")
        assert (status, out) == (FAILED, "")
        assert err.startswith("nfork ctl: ")
        assert "plain" in err

    # -- the token ------------------------------------------------------------

    @inlineCallbacks
    def test_without_the_token_the_api_refuses(self) -> Any:
        status, out, err = yield self.ctl("ls", token=False)
        assert (status, out) == (FAILED, "")
        assert err == (
            "nfork ctl: missing or wrong token (Authorization: Bearer ...) "
            "(give the token with --token-file or $NFORK_TOKEN_FILE)\n"
        )

    @inlineCallbacks
    def test_a_wrong_token_is_refused(self) -> Any:
        wrong = self.running.directory / "wrong-token"
        wrong.write_text("not-the-token-0123456789\n")
        args = parser().parse_args(["ctl", "--control", self.running.control, "ls"])
        options = ctl_options(args, {"NFORK_TOKEN_FILE": str(wrong)})
        stderr = io.StringIO()
        with pytest.raises(SystemExit) as exited:
            yield Deferred.fromCoroutine(
                ctl_main(reactor, options, stdout=io.StringIO(), stderr=stderr)
            )
        assert exited.value.code == FAILED
        assert stderr.getvalue().startswith("nfork ctl: missing or wrong token")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class SilentAPITests(TestCase):
    """A control address that accepts connections and never answers."""

    timeout = 10

    def test_no_answer_within_the_timeout(self) -> Any:
        port = cast(Any, reactor).listenTCP(
            0, Factory.forProtocol(Protocol), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        control = f"http://127.0.0.1:{port.getHost().port}"
        stderr = io.StringIO()
        options = CtlOptions("ls", control=control, timeout=0.2)
        d = Deferred.fromCoroutine(
            ctl_main(reactor, options, stdout=io.StringIO(), stderr=stderr)
        )

        def exited(failure: Any) -> None:
            failure.trap(SystemExit)
            assert failure.value.code == FAILED
            assert stderr.getvalue() == (
                f"nfork ctl: cannot reach nfork's control API at {control}: "
                "no answer within 0.2s\n"
            )

        return d.addCallbacks(lambda _: self.fail("no error"), exited)


def _free_port() -> int:
    """A loopback port nothing listens on (just closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environ() -> dict[str, str]:
    """This process's environment without nfork ctl's variables."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("NFORK_CONTROL", "NFORK_TOKEN_FILE")
    }


def _nfork(
    *argv: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The real C{nfork} command, run to its end."""
    return subprocess.run(
        [NFORK, *argv],
        env={**_environ(), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_nfork_command_reads_the_address_and_token_from_the_environment(
    running: Running,
) -> None:
    result = _nfork(
        "ctl",
        "ls",
        env={"NFORK_CONTROL": running.control, "NFORK_TOKEN_FILE": running.token_file},
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1].startswith("web ")


def test_add_reads_the_inbound_from_standard_input(running: Running) -> None:
    prod, _ = running.backends
    inbound = inbound_json("piped", out={"prod": prod.address})
    env = {"NFORK_CONTROL": running.control, "NFORK_TOKEN_FILE": running.token_file}
    try:
        result = _nfork("ctl", "add", "-", "--json", env=env, stdin=json.dumps(inbound))
        assert (result.returncode, result.stderr) == (0, "")
        assert json.loads(result.stdout)["name"] == "piped"
        assert running.nfork.api("/v1/nfork/piped")["out"] == {"prod": prod.address}
    finally:
        _nfork("ctl", "rm", "piped", env=env)


def test_ctrl_c_ends_watch_with_status_0(running: Running) -> None:
    process = subprocess.Popen(
        [NFORK, "ctl", "--control", running.control, "stats", "--watch"],
        env={**_environ(), "NFORK_TOKEN_FILE": running.token_file},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killer = threading.Timer(20, process.kill)  # bounds the blocking reads
    killer.start()
    try:
        assert process.stdout is not None
        assert process.stdout.readline().split()[:2] == ["INBOUND", "OUTBOUND"]
        assert process.stdout.readline().split()[:3] == ["web", "prod", "(active)"]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        killer.cancel()
    assert (process.returncode, err) == (0, "")


def test_nfork_not_running_is_a_clear_message_and_status_1() -> None:
    control = f"127.0.0.1:{_free_port()}"
    result = _nfork("ctl", "--control", control, "stats")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"nfork ctl: cannot reach nfork's control API at http://{control}: "
        "connection refused\n"
    )


def test_usage_errors_exit_2() -> None:
    result = _nfork("ctl", "activate", "web")
    assert result.returncode == 2
    assert "the following arguments are required: OUTBOUND" in result.stderr
    result = _nfork("ctl", "--control", "ftp://host:1", "ls")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: nfork ctl ")
    assert "--control: expected host:port or an http(s):// URL" in result.stderr
    result = _nfork("ctl", "ls", env={"NFORK_CONTROL": "ftp://host:1"})
    assert result.returncode == 2
    assert "$NFORK_CONTROL: expected host:port" in result.stderr


class OptionsTests(SynchronousTestCase):
    """Where the address and the token come from; the table without traffic."""

    def options(self, argv: list[str], environ: dict[str, str]) -> Any:
        return ctl_options(parser().parse_args(["ctl", *argv]), environ)

    def test_the_default_address_is_twistd_nforks_default(self) -> None:
        assert (
            self.options(["ls"], {}).control
            == DEFAULT_CONTROL
            == ("http://127.0.0.1:9090")
        )

    def test_the_flag_wins_over_the_environment(self) -> None:
        environ = {"NFORK_CONTROL": "10.0.0.1:1", "NFORK_TOKEN_FILE": "/env"}
        options = self.options(["ls"], environ)
        assert (options.control, options.token_file) == ("http://10.0.0.1:1", "/env")
        options = self.options(
            ["--control", "https://h:2/", "ls", "--token-file", "/flag"], environ
        )
        assert (options.control, options.token_file) == ("https://h:2", "/flag")

    def test_options_are_accepted_after_the_subcommand(self) -> None:
        options = self.options(["stats", "web", "--json", "--watch"], {})
        assert (options.command, options.arguments) == ("stats", ("web",))
        assert options.as_json and options.watch

    def test_count_needs_watch(self) -> None:
        with pytest.raises(ValueError, match="--count goes with --watch"):
            self.options(["stats", "--count", "2"], {})

    def test_a_window_longer_than_a_second_divides_the_rate(self) -> None:
        inbound = {"name": "w", "active": "a", "statsWindow": "10s"}
        stats = {"w": {"a": {"requests": 25, "latency": {"p50": "1ms", "p99": "2ms"}}}}
        [row] = stats_table([inbound], stats).splitlines()[1:]
        assert row.split()[:6] == ["w", "a", "(active)", "0", "2.5", "1ms"]
