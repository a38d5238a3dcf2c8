"""The control API over real loopback sockets, and across a restart of twistd."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from nfork.config import load_config
from nfork.control.api import ControlAPI, ControlSite
from nfork.control.changes import Changes
from nfork.control.configfile import ConfigFile, in_thread_pool
from nfork.control.controller import Controller
from tests.support.backends import RecordingService, ThreadedBackend
from tests.support.configs import inbound_json, write_config
from tests.support.control_api import control_port, control_request
from tests.support.process import TwistdProcess
from tests.support.waiting import poll_until

TOKEN = "e2e-token-0123456789"


class ControlAPITests(TestCase):
    """The Klein app served by a real Site, driving a real controller."""

    timeout = 20

    def setUp(self) -> None:
        self.services = {
            "s0": RecordingService("s0", 200),
            "s1": RecordingService("s1", 201),
        }
        for service in self.services.values():
            service.listen()
            self.addCleanup(service.close)
        self.controller = Controller(reactor)
        self.addCleanup(self.controller.stop)
        self.api = ControlAPI(self.controller, reactor)
        self.serve(self.api)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    def serve(self, api: ControlAPI) -> None:
        port = cast(Any, reactor).listenTCP(
            0, ControlSite(api.resource()), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.control = f"http://127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers: dict[bytes | str, bytes | str] = (
            {} if body is None else {"Content-Type": "application/json"}
        )
        response = yield treq.request(
            method, self.control + path, data=data, headers=headers, pool=self.pool
        )
        content = yield treq.content(response)
        if response.headers.getRawHeaders(b"content-type") == [b"application/json"]:
            return response.code, json.loads(content)
        return response.code, content.decode()

    @inlineCallbacks
    def send(self, port: int, path: str) -> Any:
        response = yield treq.get(f"http://127.0.0.1:{port}{path}", pool=self.pool)
        content = yield treq.content(response)
        return response.code, content

    def inbound(self, name: str = "web", listen: str = "127.0.0.1:0") -> Any:
        """An inbound forking to every service, s0 active."""
        return inbound_json(
            name,
            listen,
            out={n: s.address for n, s in self.services.items()},
            active="s0",
        )

    @inlineCallbacks
    def port_of(self, name: str) -> Any:
        """The port an inbound listens on, as /healthz reports it."""
        code, health = yield self.call("GET", "/healthz")
        self.assertEqual(code, 200)
        return int(health["inbounds"][name].rpartition(":")[2])

    @inlineCallbacks
    def test_an_inbound_added_by_post_proxies_at_once(self) -> Any:
        code, body = yield self.call("POST", "/v1/nfork", self.inbound())
        self.assertEqual(code, 201)
        self.assertEqual(body["listen"], "127.0.0.1:0")
        port = yield self.port_of("web")
        result = yield self.send(port, "/hello")
        self.assertEqual(result, (200, b"s0"))
        yield self.services["s1"].wait_for(1)
        self.assertEqual(self.services["s1"].received, ["GET /hello "])

    @inlineCallbacks
    def test_a_deleted_inbound_refuses_connections(self) -> Any:
        yield self.call("POST", "/v1/nfork", self.inbound())
        port = yield self.port_of("web")
        code, _ = yield self.call("DELETE", "/v1/nfork/web")
        self.assertEqual(code, 200)
        yield self.assertFailure(self.send(port, "/gone"), ConnectionRefusedError)
        code, _ = yield self.call("GET", "/v1/nfork/web")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_an_activated_shadow_answers_the_clients(self) -> Any:
        yield self.call("POST", "/v1/nfork", self.inbound())
        port = yield self.port_of("web")
        result = yield self.send(port, "/before")
        self.assertEqual(result, (200, b"s0"))
        code, body = yield self.call("POST", "/v1/nfork/web/s1/activate")
        self.assertEqual((code, body["active"]), (200, "s1"))
        result = yield self.send(port, "/after")
        self.assertEqual(result, (201, b"s1"))
        # The outbound put by PUT gets its copy too.
        self.services["s2"] = RecordingService("s2", 202)
        self.services["s2"].listen()
        self.addCleanup(self.services["s2"].close)
        code, _ = yield self.call(
            "PUT", "/v1/nfork/web/s2", self.services["s2"].address
        )
        self.assertEqual(code, 201)
        result = yield self.send(port, "/third")
        self.assertEqual(result, (201, b"s1"))
        yield self.services["s2"].wait_for(1)

    @inlineCallbacks
    def test_a_listen_address_taken_by_another_socket_is_a_conflict(self) -> Any:
        taken = cast(Any, reactor).listenTCP(
            0, Factory.forProtocol(Protocol), interface="127.0.0.1"
        )
        self.addCleanup(taken.stopListening)
        port = cast(IPv4Address, taken.getHost()).port
        code, body = yield self.call(
            "POST", "/v1/nfork", self.inbound(listen=f"127.0.0.1:{port}")
        )
        self.assertEqual(code, 409)
        self.assertIn("cannot listen on", body["error"])
        code, body = yield self.call("GET", "/v1/nfork")
        self.assertEqual((code, body), (200, []))

    @inlineCallbacks
    def test_a_profile_is_taken_while_traffic_flows(self) -> Any:
        yield self.call("POST", "/v1/nfork", self.inbound())
        port = yield self.port_of("web")
        profiled = self.call("GET", "/debug/pprof/profile?seconds=1")
        done: list[Any] = []

        def finished(result: Any) -> Any:
            done.append(result)
            return result

        profiled.addCallback(finished)
        results = []
        for i in range(5):
            result = yield self.send(port, f"/during/{i}")
            results.append(result)
        # Every request was answered while the profile was still running.
        self.assertEqual(done, [])
        self.assertEqual(results, [(200, b"s0")] * 5)
        response = yield treq.get(
            self.control + "/debug/pprof/profile?seconds=1", pool=self.pool
        )
        self.assertEqual(response.code, 409)
        yield treq.content(response)
        code, text = yield profiled
        self.assertEqual(code, 200)
        self.assertIn("CPU profile of the reactor thread over 1s", text)
        self.assertIn("cumulative", text)
        # The requests proxied during the profile show in it.
        self.assertIn("proxy/fork.py", text)

    @inlineCallbacks
    def test_changes_are_persisted_through_the_reactors_thread_pool(self) -> Any:
        directory = tempfile.mkdtemp()  # not trial's mktemp: outside the tree
        self.addCleanup(shutil.rmtree, directory)
        path = Path(directory) / "nfork.json"
        path.write_text("[]")
        api = ControlAPI(
            self.controller,
            reactor,
            changes=Changes(
                self.controller, ConfigFile(str(path), in_thread_pool(reactor))
            ),
        )
        self.serve(api)
        code, _ = yield self.call("POST", "/v1/nfork", self.inbound())
        self.assertEqual(code, 201)
        code, _ = yield self.call("POST", "/v1/nfork/web/s1/activate")
        self.assertEqual(code, 200)
        self.assertEqual(load_config(path.read_text()), self.controller.configs())
        self.assertEqual(json.loads(path.read_text())[0]["active"], "s1")

    @inlineCallbacks
    def test_a_large_body_is_refused_by_the_real_site(self) -> Any:
        response = yield treq.post(
            self.control + "/v1/nfork",
            data=b"x" * (1024 * 1024 + 10),
            headers=Headers({b"Content-Type": [b"application/json"]}),
            pool=self.pool,
        )
        body = yield treq.json_content(response)
        self.assertEqual(response.code, 413)
        self.assertIn("larger than", body["error"])

    @inlineCallbacks
    def test_requests_in_parallel_are_all_answered(self) -> Any:
        results = yield DeferredList(
            [
                self.call("POST", "/v1/nfork", self.inbound(name=f"in{i}"))
                for i in range(5)
            ],
            fireOnOneErrback=True,
        )
        self.assertEqual([r[1][0] for r in results], [201] * 5)
        _, body = yield self.call("GET", "/v1/nfork")
        self.assertEqual(sorted(i["name"] for i in body), [f"in{i}" for i in range(5)])


# -- the real twistd ---------------------------------------------------------


@pytest.fixture
def backends(threaded_backend: Callable[..., ThreadedBackend]) -> list[int]:
    """The ports of two backends, each answering with its own port."""
    return [threaded_backend(body="{port}").port for _ in range(2)]


request = partial(control_request, token=TOKEN)
"""Calls with the test's token unless told otherwise."""


def test_changes_made_through_the_api_survive_a_restart(
    tmp_path: Path, backends: list[int]
) -> None:
    config = write_config(
        tmp_path / "nfork.json",
        inbound_json("e2e", out={"prod": f"127.0.0.1:{backends[0]}"}),
    )
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    args = [
        "--config",
        str(config),
        "--persist",
        "--control",
        "127.0.0.1:0",
        "--control-token-file",
        str(token),
    ]
    with TwistdProcess(*args, cwd=str(tmp_path)) as twistd:
        api = f"http://127.0.0.1:{control_port(twistd)}"
        # The token is required, except for /healthz and /metrics.
        assert request(f"{api}/v1/nfork", token=None)[0] == 401
        assert request(f"{api}/v1/nfork", token="wrong")[0] == 401
        # With worker processes, ready once every worker listens.
        poll_until(lambda: request(f"{api}/healthz", token=None)[0] == 200, 15)
        assert request(f"{api}/healthz", token=None)[0] == 200
        code, _ = request(
            f"{api}/v1/nfork/e2e/shadow", "PUT", f"127.0.0.1:{backends[1]}"
        )
        assert code == 201
        assert request(f"{api}/v1/nfork/e2e/shadow/activate", "POST")[0] == 200
        extra = inbound_json("extra", out={"a": f"127.0.0.1:{backends[0]}"}, active="a")
        assert request(f"{api}/v1/nfork", "POST", extra)[0] == 201
        code, health = request(f"{api}/healthz", token=None)
        extra_port = int(health["inbounds"]["extra"].rpartition(":")[2])
        with urllib.request.urlopen(f"http://127.0.0.1:{extra_port}/", timeout=10) as r:
            assert r.read() == str(backends[0]).encode()
        code, before = request(f"{api}/v1/nfork")
        assert code == 200
        assert twistd.terminate() == 0
        output = twistd.output()
    assert "Traceback" not in output
    assert re.search(r"configuration saved to .*nfork\.json", output)
    saved = json.loads(config.read_text())
    assert [i["name"] for i in saved] == ["e2e", "extra"]
    assert saved[0]["active"] == "shadow"

    with TwistdProcess(*args, cwd=str(tmp_path)) as twistd:
        api = f"http://127.0.0.1:{control_port(twistd)}"
        port = twistd.listening_port("e2e")
        twistd.wait_for_line(r"inbound extra listening")
        code, after = request(f"{api}/v1/nfork")
        assert code == 200
        assert after == before
        # The active outbound chosen before the restart answers.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.read() == str(backends[1]).encode()
        assert twistd.terminate() == 0
