"""The control API's routes, through StubTreq, over a controller on a memory reactor."""

from __future__ import annotations

import json
import marshal
import tracemalloc
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import pytest
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from nfork.config import (
    ConfigError,
    InboundConfig,
    decode_json,
    load_config,
    parse_inbound,
    parse_outbound,
)
from nfork.control.api import (
    MAX_BODY,
    ControlAPI,
    ControlHosts,
    ControlRequest,
    ControlResource,
    own_origin,
    split_authority,
)
from nfork.control.changes import Changes
from nfork.control.configfile import ConfigFile
from nfork.control.controller import Controller
from nfork.control.klog import LogRing
from tests.support.configs import inbound_config, inbound_json

TOKEN = "s3cret-token"
LISTEN = "127.0.0.1:9080"
"""Where the inbound "web" of these tests listens (on a memory reactor)."""


@frozen
class Answer:
    """What the API answered."""

    code: int
    headers: Headers
    body: bytes

    @property
    def json(self) -> Any:
        assert self.headers.getRawHeaders(b"content-type") == [b"application/json"]
        return json.loads(self.body)

    @property
    def error(self) -> str:
        data = self.json
        assert set(data) == {"error"}, data
        error: str = data["error"]
        return error


class API:
    """A ControlAPI over a Controller on a MemoryReactorClock, and a client."""

    def __init__(
        self,
        token: str | None = None,
        config_file: ConfigFile | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.controller = Controller(self.reactor)
        self.log_ring = LogRing()
        self.api = ControlAPI(
            self.controller,
            self.reactor,
            changes=Changes(self.controller, config_file),
            log_ring=self.log_ring,
            token=token,
            ready=ready,
        )
        self.stub: Any = StubTreq(self.api.resource())

    def start(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> Deferred[Answer]:
        headers = dict(headers or {})
        if body and not any(name.lower() == b"content-type" for name in headers):
            headers[b"Content-Type"] = [b"application/json"]

        async def go() -> Answer:
            response = await self.stub.request(
                method,
                "http://control" + path,
                data=body,
                headers=Headers(headers),
            )
            content = await self.stub.content(response)
            return Answer(response.code, response.headers, content)

        d = Deferred.fromCoroutine(go())
        self.stub.flush()
        return d

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
        """Send a request; C{body} is JSON-encoded unless it is bytes."""
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        d = self.start(method, path, body, **kwargs)
        self.stub.flush()
        results: list[Answer | Failure] = []
        d.addBoth(results.append)
        assert results, f"no answer to {method} {path}"
        result = results[0]
        if isinstance(result, Failure):
            result.raiseException()
        assert isinstance(result, Answer)
        return result

    def add(self, name: str = "web", port: int = 9080) -> InboundConfig:
        config = inbound_config(name, f"127.0.0.1:{port}")
        d = Deferred.fromCoroutine(self.controller.add_inbound(config))
        assert d.called
        return config


def fired(d: Deferred[Answer]) -> Answer:
    """The answer C{d} fired with."""
    results: list[object] = []
    d.addBoth(results.append)
    [answer] = results
    assert isinstance(answer, Answer), answer
    return answer


@pytest.fixture
def api() -> API:
    return API()


# -- gonfork's routes -------------------------------------------------------


def test_get_lists_every_inbound_in_the_config_file_schema(api: API) -> None:
    assert api.call("GET", "/v1/nfork").json == []
    web = api.add(name="web", port=9080)
    other = api.add(name="other", port=9081)
    answer = api.call("GET", "/v1/nfork")
    assert answer.code == 200
    assert answer.json == [web.to_json(), other.to_json()]
    assert load_config(answer.body.decode()) == (web, other)


def test_post_adds_an_inbound_that_listens_before_the_answer(api: API) -> None:
    answer = api.call("POST", "/v1/nfork", inbound_json("web", LISTEN))
    assert answer.code == 201
    assert answer.json == inbound_config("web", LISTEN).to_json()
    assert answer.headers.getRawHeaders(b"location") == [b"/v1/nfork/web"]
    assert api.controller.configs() == (inbound_config("web", LISTEN),)
    assert [(port, interface) for port, _, _, interface in api.reactor.tcpServers] == [
        (9080, "127.0.0.1")
    ]


def test_post_refuses_invalid_json(api: API) -> None:
    answer = api.call("POST", "/v1/nfork", b'[{"listen": ":9080",}]')
    assert answer.code == 400
    assert "invalid JSON" in answer.error
    assert "line 1 column 21" in answer.error
    answer = api.call("POST", "/v1/nfork", b'{"x": NaN}')
    assert answer.code == 400
    assert "NaN is not a JSON value" in answer.error
    answer = api.call("POST", "/v1/nfork", b"\xff\xfe")
    assert answer.code == 400
    assert "not UTF-8" in answer.error
    assert api.controller.configs() == ()


def test_post_refuses_an_invalid_inbound_with_the_config_loaders_message(
    api: API,
) -> None:
    body = inbound_json("web", LISTEN, timeout="10x")
    with pytest.raises(ConfigError) as expected:
        parse_inbound(decode_json(json.dumps(body)))
    answer = api.call("POST", "/v1/nfork", body)
    assert answer.code == 400
    assert answer.error == str(expected.value)
    assert 'inbound "web"' in answer.error and '"timeout"' in answer.error
    assert api.call("POST", "/v1/nfork", [inbound_json("web", LISTEN)]).code == 400
    assert api.call("POST", "/v1/nfork", inbound_json("stats", LISTEN)).code == 400
    assert api.controller.configs() == ()


def test_post_refuses_a_taken_name_or_listen_address(api: API) -> None:
    web = api.add(name="web", port=9080)
    answer = api.call("POST", "/v1/nfork", inbound_json("web", "127.0.0.1:9081"))
    assert answer.code == 409
    assert answer.error == 'an inbound named "web" already exists'
    answer = api.call("POST", "/v1/nfork", inbound_json("other", LISTEN))
    assert answer.code == 409
    assert "already used by inbound" in answer.error
    assert api.controller.configs() == (web,)


def test_a_body_over_one_mib_is_refused(api: API) -> None:
    answer = api.call("POST", "/v1/nfork", b" " * (MAX_BODY + 1))
    assert answer.code == 413
    assert "larger than 1048576 bytes" in answer.error
    answer = api.call("PUT", "/v1/nfork/web/x", b'"' + b"a" * MAX_BODY + b'"')
    assert answer.code == 413
    assert api.controller.configs() == ()


def test_control_request_keeps_at_most_one_mib_of_body() -> None:
    request = ControlRequest(DummyChannel())
    request.gotLength(None)
    request.handleContentChunk(b"x" * MAX_BODY)
    assert not request.body_too_large
    request.handleContentChunk(b"x")
    assert request.body_too_large
    assert request.content.getvalue() == b""
    announced = ControlRequest(DummyChannel())
    announced.gotLength(MAX_BODY + 1)
    announced.handleContentChunk(b"x")
    assert announced.body_too_large
    assert announced.content.getvalue() == b""


def test_get_one_inbound(api: API) -> None:
    web = api.add()
    answer = api.call("GET", "/v1/nfork/web")
    assert (answer.code, answer.json) == (200, web.to_json())
    answer = api.call("GET", "/v1/nfork/nope")
    assert answer.code == 404
    assert answer.error == 'no inbound named "nope"'


def test_names_in_paths_are_decoded_and_matched_exactly(api: API) -> None:
    # An unnamed inbound is named after its listen value.
    unnamed = load_config(
        json.dumps([{"listen": ":9090", "out": {"a": "h:1"}, "active": "a"}])
    )[0]
    Deferred.fromCoroutine(api.controller.add_inbound(unnamed))
    assert api.call("GET", "/v1/nfork/:9090").json["listen"] == ":9090"
    assert api.call("GET", "/v1/nfork/%3A9090").json["listen"] == ":9090"
    assert api.call("GET", "/v1/nfork/:9090/a/stats").code == 200
    assert api.call("GET", "/v1/nfork/9090").code == 404
    socket = load_config(
        json.dumps(
            [{"listen": "unix:/tmp/nfork.sock", "out": {"a": "h:1"}, "active": "a"}]
        )
    )[0]
    Deferred.fromCoroutine(api.controller.add_inbound(socket))
    answer = api.call("GET", "/v1/nfork/unix:%2Ftmp%2Fnfork.sock")
    assert answer.json["name"] == "unix:/tmp/nfork.sock"
    answer = api.call("POST", "/v1/nfork/unix:%2Ftmp%2Fnfork.sock/a/activate")
    assert answer.code == 200
    # The raw "/" separates segments: this is another (unknown) route.
    assert api.call("GET", "/v1/nfork/unix:/tmp/nfork.sock").code == 404
    answer = api.call("DELETE", "/v1/nfork/%3A9090")
    assert answer.code == 200
    assert [c.name for c in api.controller.configs()] == ["unix:/tmp/nfork.sock"]


def test_delete_removes_the_inbound(api: API) -> None:
    web = api.add()
    api.add(name="other", port=9081)
    answer = api.call("DELETE", "/v1/nfork/web")
    assert (answer.code, answer.json) == (200, web.to_json())
    assert [c.name for c in api.controller.configs()] == ["other"]
    assert api.call("GET", "/v1/nfork/web").code == 404
    answer = api.call("DELETE", "/v1/nfork/web")
    assert answer.code == 404
    assert answer.error == 'no inbound named "web"'


def test_stats_routes(api: API) -> None:
    api.add()
    route = api.controller.outbound_route("web", "staging")
    route.stats.record_response(200, 0.002)
    expected = api.controller.stats()
    assert expected["web"]["staging"]["total"]["requests"] == 1  # type: ignore[index]
    answer = api.call("GET", "/v1/nfork/stats")
    assert (answer.code, answer.json) == (200, expected)
    answer = api.call("GET", "/v1/nfork/web/stats")
    assert (answer.code, answer.json) == (200, expected["web"])
    answer = api.call("GET", "/v1/nfork/web/staging/stats")
    assert (answer.code, answer.json) == (200, expected["web"]["staging"])
    assert api.call("GET", "/v1/nfork/nope/stats").code == 404
    assert api.call("GET", "/v1/nfork/nope/prod/stats").code == 404
    answer = api.call("GET", "/v1/nfork/web/nope/stats")
    assert answer.code == 404
    assert answer.error == 'inbound "web" has no outbound named "nope"'


def test_put_adds_an_outbound_from_gonforks_address_string(api: API) -> None:
    api.add()
    answer = api.call("PUT", "/v1/nfork/web/logging", "127.0.0.1:8082")
    assert answer.code == 201
    assert answer.json["out"]["logging"] == "127.0.0.1:8082"
    assert api.controller.inbound("web").config.to_json() == answer.json
    assert api.controller.outbound_route("web", "logging").config.address.port == 8082


def test_put_replaces_an_outbound_from_an_outbound_object(api: API) -> None:
    api.add()
    body = {"addr": "127.0.0.1:9999", "sample": 0.5, "methods": ["GET"]}
    answer = api.call("PUT", "/v1/nfork/web/staging", body)
    assert answer.code == 200
    assert answer.json["out"]["staging"] == body
    config = api.controller.inbound("web").config.outbound("staging")
    assert config == parse_outbound("web", "staging", body)


def test_put_refuses_invalid_outbounds(api: API) -> None:
    web = api.add()
    with pytest.raises(ConfigError) as expected:
        parse_outbound("web", "x", "no-port")
    answer = api.call("PUT", "/v1/nfork/web/x", "no-port")
    assert (answer.code, answer.error) == (400, str(expected.value))
    assert api.call("PUT", "/v1/nfork/web/x", b"{").code == 400
    assert api.call("PUT", "/v1/nfork/web/x", {"addr": "h:1", "x": 1}).code == 400
    assert api.call("PUT", "/v1/nfork/web/b%20d", "h:1").code == 400
    # Valid alone, but the active outbound cannot be sampled.
    answer = api.call("PUT", "/v1/nfork/web/prod", {"addr": "h:1", "sample": 0.5})
    assert answer.code == 400
    assert "always receives all traffic" in answer.error
    answer = api.call("PUT", "/v1/nfork/nope/x", "h:1")
    assert (answer.code, answer.error) == (404, 'no inbound named "nope"')
    assert api.controller.configs() == (web,)


def test_delete_removes_an_outbound_but_not_the_active_one(api: API) -> None:
    api.add()
    answer = api.call("DELETE", "/v1/nfork/web/prod")
    assert answer.code == 409
    assert "is the active outbound" in answer.error
    answer = api.call("DELETE", "/v1/nfork/web/staging")
    assert answer.code == 200
    assert list(answer.json["out"]) == ["prod"]
    assert api.call("DELETE", "/v1/nfork/web/staging").code == 404
    assert api.call("DELETE", "/v1/nfork/nope/staging").code == 404


def test_activate_switches_the_active_outbound(api: API) -> None:
    api.add()
    answer = api.call("POST", "/v1/nfork/web/staging/activate")
    assert answer.code == 200
    assert answer.json["active"] == "staging"
    assert api.controller.inbound("web").routing.active.name == "staging"
    assert api.call("POST", "/v1/nfork/web/nope/activate").code == 404
    assert api.call("POST", "/v1/nfork/nope/prod/activate").code == 404


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/nfork", b"GET, HEAD, POST"),
        ("PATCH", "/v1/nfork/stats", b"GET, HEAD"),
        ("DELETE", "/v1/nfork/stats", b"GET, HEAD"),
        ("POST", "/v1/nfork/web", b"DELETE, GET, HEAD"),
        ("PUT", "/v1/nfork/web/stats", b"GET, HEAD"),
        ("GET", "/v1/nfork/web/prod", b"DELETE, PUT"),
        ("GET", "/v1/nfork/web/prod/activate", b"POST"),
        ("DELETE", "/v1/nfork/web/prod/stats", b"GET, HEAD"),
        ("POST", "/healthz", b"GET, HEAD"),
        ("PUT", "/debug/pprof/heap", b"DELETE, GET, HEAD, POST"),
    ],
)
def test_a_wrong_method_gets_405_with_allow(
    api: API, method: str, path: str, allowed: bytes
) -> None:
    api.add()
    answer = api.call(method, path)
    assert answer.code == 405
    assert answer.headers.getRawHeaders(b"allow") == [allowed]
    assert answer.error.startswith(f"method {method} not allowed on {path}")
    assert api.controller.configs() == (inbound_config("web", LISTEN),)


@pytest.mark.parametrize(
    "path",
    ["/", "/v1", "/v1/nfork/", "/v1/nfork//stats", "/v1/nfork/a/b/c/d", "/debugx"],
)
def test_an_unknown_path_gets_a_json_404(api: API, path: str) -> None:
    answer = api.call("GET", path)
    assert answer.code == 404
    assert answer.error == f"no such route: GET {path}"


def test_a_path_that_is_not_utf8_gets_a_json_400(api: API) -> None:
    answer = api.call("GET", "/v1/nfork/%FF")
    assert answer.code == 404  # percent-encoded: a name that cannot exist
    request = Request(DummyChannel())
    request.method = b"GET"
    request.path = b"/v1/nfork/\xff"
    request.uri = request.path
    request.args = {}
    request.content = BytesIO()
    body = api.api.resource().render(request)
    assert request.code == 400
    assert json.loads(body) == {"error": "the request path is not UTF-8"}


# -- token ------------------------------------------------------------------


def test_with_a_token_every_route_but_healthz_and_metrics_requires_it() -> None:
    api = API(token=TOKEN)
    api.add()
    good = {b"Authorization": [f"Bearer {TOKEN}".encode()]}
    for headers in (
        None,
        {b"Authorization": [b"Bearer wrong"]},
        {b"Authorization": [TOKEN.encode()]},
        {b"Authorization": [f"Basic {TOKEN}".encode()]},
        {b"Authorization": [f"Bearer {TOKEN}x".encode()]},
        {b"Authorization": [f"Bearer {TOKEN}".encode(), b"Bearer x"]},
    ):
        for method, path in (
            ("GET", "/v1/nfork"),
            ("DELETE", "/v1/nfork/web"),
            ("GET", "/debug/klog"),
            ("GET", "/no/such/route"),
        ):
            answer = api.call(method, path, headers=headers)
            assert answer.code == 401, (headers, path)
            assert "token" in answer.error
            assert answer.headers.getRawHeaders(b"www-authenticate") == [
                b'Bearer realm="nfork"'
            ]
    assert len(api.controller.configs()) == 1
    assert api.call("GET", "/healthz").code == 200
    assert api.call("GET", "/metrics").code == 200
    assert api.call("GET", "/v1/nfork", headers=good).code == 200
    lower = {b"Authorization": [f"bearer {TOKEN}".encode()]}
    assert api.call("GET", "/v1/nfork/web", headers=lower).code == 200
    assert api.call("DELETE", "/v1/nfork/web", headers=good).code == 200
    assert api.controller.configs() == ()


def test_a_refused_token_is_logged_as_a_warning() -> None:
    api = API(token=TOKEN)
    with capturedLogs() as events:
        api.call("GET", "/v1/nfork")
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 1
    assert "missing or wrong token" in formatEvent(warnings[0])
    assert TOKEN not in json.dumps([str(v) for v in warnings[0].values()])


# -- health, metrics, logs --------------------------------------------------


def test_healthz_says_whether_every_inbound_listens() -> None:
    ready = [False]
    api = API(ready=lambda: ready[0])
    answer = api.call("GET", "/healthz")
    assert answer.code == 503
    assert "not ready" in answer.error
    api.add()
    ready[0] = True
    answer = api.call("GET", "/healthz")
    assert answer.code == 200
    assert answer.json == {"status": "ok", "inbounds": {"web": "0.0.0.0:9080"}}


def test_metrics_serves_the_prometheus_text_format(api: API) -> None:
    api.add()
    api.controller.outbound_route("web", "prod").stats.record_response(200, 0.002)
    answer = api.call("GET", "/metrics")
    assert answer.code == 200
    content_type = answer.headers.getRawHeaders(b"content-type")
    assert content_type is not None and content_type[0].startswith(b"text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    samples = {
        (s.name, s.labels.get("outbound")): s.value
        for s in families["nfork_outbound_requests"].samples
    }
    assert samples == {
        ("nfork_outbound_requests_total", "prod"): 1.0,
        ("nfork_outbound_requests_total", "staging"): 0.0,
    }
    assert "process_cpu_seconds" in families or "python_info" in families


def test_klog_serves_recent_log_events_filtered_by_level(api: API) -> None:
    log = Logger(namespace="test.klog")
    # The ring is not subscribed here: feed it what was logged.
    with capturedLogs() as events:
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error):
            log.emit(level, "event at {name}", name=level.name)
    for event in events:
        api.log_ring(event)
    answer = api.call("GET", "/debug/klog")
    assert answer.code == 200
    assert [e["text"] for e in answer.json] == [
        "event at debug",
        "event at info",
        "event at warn",
        "event at error",
    ]
    assert set(answer.json[0]) == {"time", "level", "namespace", "text"}
    assert answer.json[0]["namespace"] == "test.klog"
    answer = api.call("GET", "/debug/klog?level=warn")
    assert [e["level"] for e in answer.json] == ["warn", "error"]
    answer = api.call("GET", "/debug/klog?level=loud")
    assert answer.code == 400
    assert "unknown log level" in answer.error


# -- profiling --------------------------------------------------------------


def test_pprof_index_lists_the_endpoints(api: API) -> None:
    for path in ("/debug/pprof/", "/debug/pprof"):
        answer = api.call("GET", path)
        assert answer.code == 200
        for endpoint in ("profile?seconds=N", "threads", "heap", "format=pstats"):
            assert endpoint.encode() in answer.body


def test_pprof_threads_dumps_every_thread(api: API) -> None:
    answer = api.call("GET", "/debug/pprof/threads")
    assert answer.code == 200
    assert b"(MainThread)" in answer.body
    assert b"test_pprof_threads_dumps_every_thread" in answer.body


@pytest.fixture
def no_tracemalloc() -> Iterator[None]:
    was_tracing = tracemalloc.is_tracing()
    tracemalloc.stop()
    yield
    if not was_tracing:
        tracemalloc.stop()


def test_pprof_heap_get_changes_nothing_post_starts_tracing(
    api: API, no_tracemalloc: None
) -> None:
    for _ in range(2):
        answer = api.call("GET", "/debug/pprof/heap")
        assert answer.code == 200
        assert b"not running. POST /debug/pprof/heap starts it" in answer.body
        assert not tracemalloc.is_tracing()
    answer = api.call("POST", "/debug/pprof/heap")
    assert answer.code == 200
    assert answer.body.startswith(b"tracemalloc started")
    assert tracemalloc.is_tracing()
    answer = api.call("POST", "/debug/pprof/heap")
    assert answer.body == b"tracemalloc was already running\n"
    kept = [bytearray(1000) for _ in range(100)]
    answer = api.call("GET", "/debug/pprof/heap")
    assert b"top" in answer.body and b"KiB" in answer.body
    assert b"test_api.py" in answer.body
    del kept
    answer = api.call("DELETE", "/debug/pprof/heap")
    assert answer.body == b"tracemalloc stopped\n"
    assert not tracemalloc.is_tracing()
    answer = api.call("DELETE", "/debug/pprof/heap")
    assert answer.body == b"tracemalloc was not running\n"


def test_pprof_profile_runs_for_the_seconds_asked_then_answers(api: API) -> None:
    d = api.start("GET", "/debug/pprof/profile?seconds=2")
    assert not d.called
    assert api.api.profiler.running
    # A second profile at the same time is refused.
    answer = api.call("GET", "/debug/pprof/profile?seconds=1")
    assert answer.code == 409
    assert "already running" in answer.error
    api.reactor.advance(1.9)
    api.stub.flush()
    assert not d.called
    api.reactor.advance(0.1)
    api.stub.flush()
    answer = fired(d)
    assert answer.code == 200
    assert b"over 2s" in answer.body
    assert b"cumulative" in answer.body
    assert not api.api.profiler.running


def test_pprof_profile_defaults_to_five_seconds_and_gives_pstats(
    api: API, tmp_path: Any
) -> None:
    d = api.start("GET", "/debug/pprof/profile?format=pstats")
    api.reactor.advance(4.9)
    api.stub.flush()
    assert not d.called
    api.reactor.advance(0.1)
    api.stub.flush()
    answer = fired(d)
    assert answer.code == 200
    assert answer.headers.getRawHeaders(b"content-type") == [
        b"application/octet-stream"
    ]
    assert isinstance(marshal.loads(answer.body), dict)
    path = tmp_path / "nfork.pstats"
    path.write_bytes(answer.body)
    import pstats

    pstats.Stats(str(path))


@pytest.mark.parametrize(
    "query", ["seconds=0", "seconds=61", "seconds=-1", "seconds=x", "format=svg"]
)
def test_pprof_profile_refuses_bad_parameters(api: API, query: str) -> None:
    answer = api.call("GET", f"/debug/pprof/profile?{query}")
    assert answer.code == 400
    assert not api.api.profiler.running


# -- persistence and logging of changes -------------------------------------


def failing_writer(path: str, text: str) -> None:
    raise PermissionError(13, "Permission denied", path)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/nfork", inbound_json("new", "127.0.0.1:9085")),
        ("DELETE", "/v1/nfork/web", None),
        ("PUT", "/v1/nfork/web/logging", "127.0.0.1:8082"),
        ("PUT", "/v1/nfork/web/staging", {"addr": "127.0.0.1:1", "sample": 0.1}),
        ("DELETE", "/v1/nfork/web/staging", None),
        ("POST", "/v1/nfork/web/staging/activate", None),
    ],
)
def test_a_change_that_cannot_be_saved_is_undone_and_answered_500(
    method: str, path: str, body: Any
) -> None:
    api = API(config_file=ConfigFile("/etc/nfork.json", writer=failing_writer))
    api.add()
    before = api.controller.configs()
    answer = api.call(method, path, body)
    assert answer.code == 500
    assert answer.error == (
        "cannot write the configuration file /etc/nfork.json: Permission "
        "denied: /etc/nfork.json; the change was undone"
    )
    assert api.controller.configs() == before


def test_each_change_is_saved_to_the_config_file(tmp_path: Any) -> None:
    path = tmp_path / "nfork.json"
    path.write_text("[]")
    api = API(config_file=ConfigFile(str(path)))
    assert api.call("POST", "/v1/nfork", inbound_json("web", LISTEN)).code == 201
    assert load_config(path.read_text()) == api.controller.configs()
    assert api.call("PUT", "/v1/nfork/web/x", "h:1").code == 201
    assert api.call("POST", "/v1/nfork/web/x/activate").code == 200
    assert load_config(path.read_text()) == api.controller.configs()
    assert json.loads(path.read_text())[0]["active"] == "x"
    # A refused change writes nothing.
    path.write_text("untouched")
    assert api.call("DELETE", "/v1/nfork/web/x").code == 409
    assert path.read_text() == "untouched"


def test_without_persist_nothing_is_written(api: API, tmp_path: Any) -> None:
    assert api.call("POST", "/v1/nfork", inbound_json("web", LISTEN)).code == 201
    assert list(tmp_path.iterdir()) == []


def test_every_change_is_logged_with_its_parameters(api: API) -> None:
    def texts(method: str, path: str, body: Any = None) -> list[str]:
        with capturedLogs() as events:
            api.call(method, path, body)
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.info]

    logged = texts("POST", "/v1/nfork", inbound_json("web", LISTEN))
    assert any(
        "inbound web listening on 127.0.0.1:9080" in t and "prod=127.0.0.1:8080" in t
        for t in logged
    ), logged
    assert any("control API: POST /v1/nfork from" in t for t in logged), logged
    logged = texts("PUT", "/v1/nfork/web/logging", "127.0.0.1:8082")
    assert any("outbound logging set to 127.0.0.1:8082" in t for t in logged)
    logged = texts("POST", "/v1/nfork/web/logging/activate")
    assert any("outbound logging is now active" in t for t in logged)
    logged = texts("POST", "/v1/nfork/web/prod/activate")
    logged = texts("DELETE", "/v1/nfork/web/logging")
    assert any("outbound logging removed" in t for t in logged)
    logged = texts("DELETE", "/v1/nfork/web/prod")
    assert any(": 409 outbound" in t for t in logged), logged
    logged = texts("DELETE", "/v1/nfork/web")
    assert any("inbound web removed" in t for t in logged)


def test_an_unexpected_error_is_a_json_500_and_logged(api: API) -> None:
    def broken(self: Any) -> Any:
        return fail(RuntimeError("boom"))

    api.controller.configs = broken.__get__(api.controller)  # type: ignore[method-assign]
    with capturedLogs() as events:
        answer = api.call("GET", "/v1/nfork")
    assert answer.code == 500
    assert answer.error.startswith("internal error")
    assert any(e.get("log_failure") is not None for e in events)


# -- properties -------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def mostly(
    valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any] = json_values
) -> st.SearchStrategy[Any]:
    """Values from C{valid} about nine times out of ten, else from C{other}."""
    return st.integers(0, 9).flatmap(lambda n: other if n == 9 else valid)


def one_of(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly one of the C{valid} values, sometimes an invalid one or any JSON."""
    return mostly(st.sampled_from(valid), st.sampled_from(invalid) | json_values)


listen_values = one_of(
    [":9080", "127.0.0.1:0", "[::1]:9081", "tcp:9082", "unix:/tmp/x.sock"],
    ["x", "", "127.0.0.1:99999", "tcp:"],
)
address_values = one_of(
    ["h:1", "127.0.0.1:8080", "http://h/p", "https://h"],
    ["file:///tmp/x", "h", "", "ftp://h"],
)
names = mostly(
    st.sampled_from(["a", "b"]), st.sampled_from(["", "stats", "a b"]) | st.text()
)
inbound_options = {
    "name": one_of(["x", "y", "z"], ["", "stats", "a b"]),
    "timeout": one_of(["1s", "100ms"], ["0s", "10x"]),
    "timeoutCode": mostly(st.integers(400, 599), st.integers()),
    "idleConn": mostly(st.integers(1, 100), st.integers()),
    "maxBody": mostly(st.integers(1, 100), st.integers()),
    "statsWindow": one_of(["1s", "1m"], ["-1s"]),
}
near_inbounds = mostly(
    st.fixed_dictionaries(
        {
            "listen": listen_values,
            "out": mostly(
                st.dictionaries(names, address_values, min_size=1, max_size=3)
            ),
            "active": mostly(names),
        },
        optional=inbound_options,
    ),
    st.fixed_dictionaries({}, optional=inbound_options),
)
near_outbounds = mostly(
    address_values,
    st.fixed_dictionaries(
        {},
        optional={
            "addr": address_values,
            "sample": mostly(st.floats(0.01, 1), st.floats()),
            "methods": mostly(
                st.lists(st.sampled_from(["GET", "get", "POST"]), min_size=1),
                st.lists(st.sampled_from(["", "X Y", "GET"])),
            ),
            "timeout": one_of(["1s"], ["-1s"]),
            "maxInflight": mostly(st.integers(1, 10), st.integers()),
        },
    ),
) | st.fixed_dictionaries({"addr": address_values})


def assert_not_a_server_error(answer: Answer) -> None:
    assert 200 <= answer.code < 500, (answer.code, answer.body)
    if answer.code >= 400:
        assert answer.error


@given(body=near_inbounds | json_values)
def test_any_json_posted_as_an_inbound_gets_2xx_or_a_4xx_json_error(
    body: object,
) -> None:
    api = API()
    api.add(name="x", port=9080)
    assert_not_a_server_error(api.call("POST", "/v1/nfork", json.dumps(body).encode()))


@given(body=near_outbounds | json_values)
def test_any_json_put_as_an_outbound_gets_2xx_or_a_4xx_json_error(
    body: object,
) -> None:
    api = API()
    api.add(name="x", port=9080)
    for outbound in ("y", "prod"):
        answer = api.call("PUT", f"/v1/nfork/x/{outbound}", json.dumps(body).encode())
        assert_not_a_server_error(answer)


# -- browsers: Host, Origin, Content-Type -----------------------------------


def test_split_authority() -> None:
    assert split_authority("Example.COM.") == ("example.com", None)
    assert split_authority("h:8080") == ("h", 8080)
    assert split_authority("[::1]:9090") == ("::1", 9090)
    assert split_authority("[::1]") == ("::1", None)
    for bad in ("", ":80", "h:", "h:x", "h:99999", "h:0", "[::1", "[::1]x", "a b"):
        assert split_authority(bad) is None, bad
    assert split_authority("a@b:1") is None


def test_control_hosts_bound_to_one_address() -> None:
    hosts = ControlHosts.from_names(["api.example", "proxy.example:8443"])
    assert not hosts.allows(b"127.0.0.1:9090")  # not listening yet
    hosts.listening(IPv4Address("TCP", "10.0.0.5", 9090))
    for good in (
        b"10.0.0.5:9090",
        b"127.0.0.1:9090",
        b"127.0.0.2:9090",
        b"[::1]:9090",
        b"localhost:9090",
        b"api.example",
        b"api.example:1",
        b"proxy.example:8443",
    ):
        assert hosts.allows(good), good
    for bad in (
        b"10.0.0.6:9090",
        b"10.0.0.5:9091",
        b"10.0.0.5",
        b"evil.example:9090",
        b"proxy.example",
        b"localhost",
        b"",
    ):
        assert not hosts.allows(bad), bad


def test_control_hosts_on_every_address_or_a_unix_socket() -> None:
    hosts = ControlHosts()
    hosts.listening(IPv6Address("TCP", "::", 80))
    assert hosts.allows(b"192.0.2.1") and hosts.allows(b"[2001:db8::1]:80")
    assert not hosts.allows(b"evil.example")
    unix = ControlHosts()
    unix.listening(UNIXAddress(b"/run/nfork.sock"))
    assert unix.allows(b"localhost") and unix.allows(b"localhost:8080")
    assert not unix.allows(b"evil.example")


def test_own_origin() -> None:
    assert own_origin(b"http://h:9090", b"h:9090")
    assert own_origin(b"http://H:80", b"h")
    assert own_origin(b"https://h", b"h")
    assert not own_origin(b"http://h:9091", b"h:9090")
    assert not own_origin(b"http://evil", b"h")
    assert not own_origin(b"null", b"h")
    assert not own_origin(b"file://h", b"h")
    assert not own_origin(b"https://h", b"h:80")


def hosted_api() -> API:
    api = API()
    hosts = ControlHosts.from_names(["control"])  # StubTreq's "http://control"
    hosts.listening(IPv4Address("TCP", "127.0.0.1", 9090))
    api.stub = StubTreq(ControlResource(api.api.app.resource(), None, hosts))
    api.add()
    return api


@pytest.mark.parametrize(
    ("headers", "body", "refused"),
    [
        ({}, None, False),
        ({b"Content-Type": [b"application/json"]}, None, False),
        ({b"Content-Type": [b"text/plain"]}, None, True),
        ({b"Content-Type": [b"application/x-www-form-urlencoded"]}, None, True),
        ({b"Content-Type": [b"application/json", b"text/plain"]}, None, True),
        ({b"Origin": [b"http://evil.example"]}, None, True),
        ({b"Origin": [b"http://control"]}, None, False),
        ({b"Origin": [b"http://control", b"http://control"]}, None, True),
        ({b"Host": [b"evil.example"]}, None, True),
    ],
)
def test_changes_from_a_browser_are_refused(
    headers: dict[bytes, list[bytes]], body: bytes | None, refused: bool
) -> None:
    api = hosted_api()
    with capturedLogs() as events:
        answer = api.call(
            "POST", "/v1/nfork/web/staging/activate", body, headers=headers
        )
    if refused:
        assert answer.code == 403
        assert answer.error
        assert any(e["log_level"] == LogLevel.warn for e in events)
        assert api.controller.configs()[0].active == "prod"
    else:
        assert answer.code == 200, answer.body


def test_a_body_without_a_type_is_refused() -> None:
    api = hosted_api()
    answer = api.call(
        "PUT",
        "/v1/nfork/web/x",
        b'"h:1"',
        headers={b"Content-Type": [b"text/plain"]},
    )
    assert answer.code == 403
    assert "application/json" in answer.error
    assert api.controller.configs()[0].outbound("x") is None


def test_file_sinks_need_a_sink_dir(tmp_path: Any) -> None:
    api = API()
    api.add()
    answer = api.call("PUT", "/v1/nfork/web/rec", f"file://{tmp_path}/r.jsonl")
    assert answer.code == 403
    assert "--sink-dir" in answer.error
    answer = api.call("PUT", "/v1/nfork/web/rec", "file://host/r.jsonl")
    assert answer.code == 400  # a malformed address is the caller's mistake
