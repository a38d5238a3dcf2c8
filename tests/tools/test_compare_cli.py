"""nfork compare: the report of a real control API, exit codes and errors.

A real inbound forks to loopback services answering JSON: the primary
C{prod}, and C{staging} whose C{id} is a string instead of an integer.  The
real comparer counts; the command reads the report over the real control
API, with its token.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from nfork.config.compare import DEFAULT_IGNORE_HEADERS
from nfork.control.api import ControlAPI, ControlSite
from nfork.control.controller import Controller
from nfork.tools.cli import main
from nfork.tools.compare import (
    DIFFERENCE,
    UNAVAILABLE,
    CompareOptions,
    compare_main,
    read_token_file,
)
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config
from tests.support.files import temp_dir
from tests.support.waiting import eventually

TOKEN = "compare-cli-token-0123456789"
PRIMARY_BODY = b'{"id": 7, "name": "ada"}'
CANDIDATE_BODY = b'{"id": "7", "name": "ada"}'
REQUESTS = 6


class CompareCommandTests(TestCase):
    """C{compare_main} against a real control API on 127.0.0.1."""

    timeout = 20

    def setUp(self) -> None:
        self.services = {
            "prod": RecordingService("prod", 200, body=PRIMARY_BODY),
            "staging": RecordingService("staging", 200, body=CANDIDATE_BODY),
        }
        for service in self.services.values():
            service.listen()
            self.addCleanup(service.close)
        self.controller = Controller(reactor)
        self.addCleanup(self.controller.stop)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)
        api = ControlAPI(self.controller, reactor, token=TOKEN)
        port = cast(Any, reactor).listenTCP(
            0, ControlSite(api.resource()), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.control = f"http://127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def start(self, name: str = "web", **compare: Any) -> Any:
        """An inbound forking to both services, prod active; some traffic."""
        out = {n: s.address for n, s in self.services.items()}
        extra: dict[str, Any] = {"compare": compare} if compare else {}
        config = inbound_config(name, out=out, active="prod", **extra)
        running = yield self.controller.add_inbound(config)
        if not compare:
            return
        inbound = f"http://127.0.0.1:{running.port.getHost().port}"
        for index in range(REQUESTS):
            response = yield treq.get(f"{inbound}/users/{index + 1}", pool=self.pool)
            yield treq.content(response)
        comparer = self.controller.comparer(name)

        def compared() -> bool:
            counts = {c: done for c, done, _, _ in comparer.counters()}
            return counts.get("staging", 0) >= REQUESTS

        yield eventually(cast(Any, reactor), compared, timeout=10)

    @inlineCallbacks
    def command(self, inbound: str = "web", **options: Any) -> Any:
        """C{(exit status, stdout, stderr)} of the command."""
        settings: dict[str, Any] = {"token": TOKEN, "timeout": 5.0, **options}
        stdout, stderr = io.StringIO(), io.StringIO()
        command = compare_main(
            reactor,
            CompareOptions(self.control.encode(), inbound, **settings),
            stdout=stdout,
            stderr=stderr,
        )
        try:
            yield Deferred.fromCoroutine(command)
            status = 0
        except SystemExit as e:
            status = cast(int, e.code)
        return status, stdout.getvalue(), stderr.getvalue()

    @inlineCallbacks
    def test_the_report_names_the_differing_field_with_an_example(self) -> Any:
        yield self.start(candidates=["staging"])
        status, out, err = yield self.command()
        assert (status, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == "inbound web, primary prod, no baseline"
        assert (
            f"candidate staging: {REQUESTS} compared, {REQUESTS} differing (100.0%)"
            in out
        )
        row = next(line for line in lines if "GET /users/:int" in line)
        assert row.split() == ["GET", "/users/:int", "6", "6", "100.0%", "0"]
        field = next(line for line in lines if "$.id" in line)
        assert field.split()[:2] == ["difference", "$.id"]
        # The example is the first sample's, as the samples route gives it.
        response = yield treq.get(
            f"{self.control}/v1/nfork/web/compare/staging/samples",
            params={"endpoint": "GET /users/:int", "field": "$.id"},
            headers=Headers({b"Authorization": [f"Bearer {TOKEN}".encode()]}),
            pool=self.pool,
        )
        samples = yield treq.json_content(response)
        [difference] = [d for d in samples[0]["differences"] if d["field"] == "$.id"]
        index = lines.index(field)
        assert lines[index + 1].split() == [
            "primary:",
            json.dumps(difference["primary"]),
        ]
        assert lines[index + 2].split() == [
            "candidate:",
            json.dumps(difference["candidate"]),
        ]
        assert "$.name" not in out
        assert lines[-1] == "verdict: DIFFERENCE (staging)"

    @inlineCallbacks
    def test_fail_on_difference_exits_1(self) -> Any:
        yield self.start(candidates=["staging"])
        status, out, _ = yield self.command(fail_on_difference=True)
        assert status == DIFFERENCE
        assert out.endswith("verdict: DIFFERENCE (staging)\n")

    @inlineCallbacks
    def test_no_difference_passes_the_gate(self) -> Any:
        yield self.start(
            candidates=["staging"],
            ignore=["$.id"],
            ignoreHeaders=[*DEFAULT_IGNORE_HEADERS, "X-Service"],
        )
        status, out, _ = yield self.command(fail_on_difference=True)
        assert status == 0, out
        assert out.endswith("verdict: no difference\n")

    @inlineCallbacks
    def test_json_prints_the_api_report(self) -> Any:
        yield self.start(candidates=["staging"])
        status, out, _ = yield self.command(as_json=True, fail_on_difference=True)
        assert status == DIFFERENCE
        report = json.loads(out)
        assert report["inbound"] == "web"
        staging = report["candidates"]["staging"]
        assert staging["compared"] == REQUESTS
        fields = staging["endpoints"]["GET /users/:int"]["fields"]
        assert fields["$.id"]["verdict"] == "difference"

    @inlineCallbacks
    def test_an_unknown_inbound_exits_2_with_the_api_message(self) -> Any:
        status, out, err = yield self.command("nope")
        assert (status, out) == (UNAVAILABLE, "")
        assert err == 'nfork compare: no inbound named "nope" (HTTP 404)\n'

    @inlineCallbacks
    def test_an_inbound_without_compare_settings_exits_2(self) -> Any:
        yield self.start()
        status, _, err = yield self.command()
        assert status == UNAVAILABLE
        assert err.startswith('nfork compare: inbound "web" compares no answers')
        assert err.endswith("(HTTP 404)\n")
        assert err.count("\n") == 1

    @inlineCallbacks
    def test_a_refused_token_exits_2(self) -> Any:
        for token in ("wrong-token-0123456789", None):
            status, _, err = yield self.command(token=token)
            assert status == UNAVAILABLE
            assert err == (
                "nfork compare: missing or wrong token (Authorization: Bearer ...) "
                "(give the token with --token-file) (HTTP 401)\n"
            )

    @inlineCallbacks
    def test_an_unreachable_nfork_exits_2(self) -> Any:
        port = cast(Any, reactor).listenTCP(0, Factory(), interface="127.0.0.1")
        address = f"http://127.0.0.1:{port.getHost().port}"
        yield port.stopListening()
        self.control = address
        status, out, err = yield self.command()
        assert (status, out) == (UNAVAILABLE, "")
        assert err.startswith(
            f"nfork compare: cannot reach nfork's control API at {address}: "
        )
        assert err.count("\n") == 1

    @inlineCallbacks
    def test_the_installed_command_exits_with_the_verdict(self) -> Any:
        yield self.start(candidates=["staging"])
        token_file = temp_dir(self) / "token"
        token_file.write_text(TOKEN + "\n")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
        argv = ["compare", "--control", self.control, "web", "--token-file"]
        script = ["-c", "from nfork.tools.cli import main; main()"]
        out, err, status = yield getProcessOutputAndValue(
            sys.executable,
            [*script, *argv, str(token_file), "--fail-on", "difference"],
            env=env,
        )
        assert status == DIFFERENCE, err
        assert b"difference  $.id" in out
        out, err, status = yield getProcessOutputAndValue(
            sys.executable,
            [*script, *argv[:3], "nope", "--token-file", str(token_file)],
            env=env,
        )
        assert status == UNAVAILABLE
        assert err == b'nfork compare: no inbound named "nope" (HTTP 404)\n'


class CommandLineTests(SynchronousTestCase):
    def test_bad_arguments_are_usage_errors(self) -> None:
        directory = temp_dir(self)
        empty = directory / "empty"
        empty.write_text("  \n")
        for argv in (
            ["compare", "web"],
            ["compare", "--control", "ftp://h:1", "web"],
            ["compare", "--control", "http://h:1/?x=1", "web"],
            ["compare", "--control", "http://h:1"],
            ["compare", "--control", "http://h:1", "web", "--fail-on", "noise"],
            ["compare", "--control", "http://h:1", "web", "--token-file", str(empty)],
            ["compare", "--control", "http://h:1", "web", "--token-file", "/nope"],
        ):
            with pytest.raises(SystemExit) as caught:
                main(argv)
            self.assertEqual(caught.value.code, 2, argv)

    def test_the_token_file_is_read_without_surrounding_spaces(self) -> None:
        path = temp_dir(self) / "token"
        path.write_text("  abc-def \n")
        self.assertEqual(read_token_file(str(path)), "abc-def")
        path.write_text("\n")
        with pytest.raises(ValueError, match="is empty"):
            read_token_file(str(path))
