"""The comparison's REST routes and metrics, on a real control API and real inbounds.

The inbound's outbounds are loopback services answering JSON: the primary
and the baseline the same, the candidate with one field of another type;
each service names itself in a header (noise: the baseline differs there
too).  Requests go through the real inbound, and the real comparer counts.
"""

from __future__ import annotations

import json
from typing import Any, cast

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from nfork.control.api import ControlAPI, ControlSite
from nfork.control.changes import Changes
from nfork.control.configfile import ConfigFile
from nfork.control.controller import Controller
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config
from tests.support.files import temp_dir
from tests.support.waiting import eventually

TOKEN = "compare-token-0123456789"
PRIMARY_BODY = b'{"id": 7, "name": "ada"}'
CANDIDATE_BODY = b'{"id": "7", "name": "ada"}'


class CompareAPITests(TestCase):
    """C{/v1/nfork/:inbound/compare} and its samples, served by a real Site."""

    timeout = 20

    def setUp(self) -> None:
        self.services = {
            "prod": RecordingService("prod", 200, body=PRIMARY_BODY),
            "prod-2": RecordingService("prod-2", 200, body=PRIMARY_BODY),
            "staging": RecordingService("staging", 200, body=CANDIDATE_BODY),
        }
        for service in self.services.values():
            service.listen()
            self.addCleanup(service.close)
        self.controller = Controller(reactor)
        self.addCleanup(self.controller.stop)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)
        self.config_path = temp_dir(self) / "nfork.json"
        self.changes = Changes(self.controller, ConfigFile(str(self.config_path)))
        self.serve(token=None)

    def serve(self, token: str | None) -> None:
        api = ControlAPI(self.controller, reactor, changes=self.changes, token=token)
        self.api = api
        port = cast(Any, reactor).listenTCP(
            0, ControlSite(api.resource()), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.control = f"http://127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def start_web(self, **compare: Any) -> Any:
        """Start the inbound "web": prod active, prod-2 and staging shadows."""
        out = {name: s.address for name, s in self.services.items()}
        extra: dict[str, Any] = {"compare": compare} if compare else {}
        config = inbound_config("web", out=out, active="prod", **extra)
        running = yield self.controller.add_inbound(config)
        self.inbound = f"http://127.0.0.1:{running.port.getHost().port}"
        return running

    @inlineCallbacks
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Any:
        """C{(code, decoded JSON or text)}; C{raw} is sent as is, else C{body}."""
        data = raw
        if data is None and (body is not None or method == "PUT"):
            data = json.dumps(body).encode()
        sent: dict[bytes | str, bytes | str] = {}
        sent.update(headers or {})
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        response = yield treq.request(
            method, self.control + path, data=data, headers=sent, pool=self.pool
        )
        content = yield treq.content(response)
        if response.headers.getRawHeaders(b"content-type") == [b"application/json"]:
            return response.code, json.loads(content)
        return response.code, content.decode()

    @inlineCallbacks
    def traffic(self, count: int) -> Any:
        """Send C{count} requests through the inbound; wait for their comparison."""
        for index in range(count):
            response = yield treq.get(
                f"{self.inbound}/users/{index + 100}", pool=self.pool
            )
            body = yield treq.content(response)
            assert body == PRIMARY_BODY
        comparer = self.controller.comparer("web")

        def compared() -> bool:
            counts = {name: done for name, done, _, _ in comparer.counters()}
            return counts.get("staging", 0) >= count

        yield eventually(cast(Any, reactor), compared, timeout=10)

    # -- turning it on and off ----------------------------------------------

    @inlineCallbacks
    def test_without_settings_the_report_is_a_404_saying_how_to_turn_it_on(
        self,
    ) -> Any:
        yield self.start_web()
        code, body = yield self.call("GET", "/v1/nfork/web/compare")
        assert code == 404
        assert 'inbound "web" compares no answers' in body["error"]
        assert "PUT /v1/nfork/web/compare" in body["error"]
        for method in ("DELETE", "GET"):
            path = "/v1/nfork/web/compare"
            if method == "GET":
                path += "/staging/samples?endpoint=x&field=y"
            code, body = yield self.call(method, path)
            assert code == 404, (method, body)
        code, body = yield self.call("GET", "/v1/nfork/nope/compare")
        assert (code, body) == (404, {"error": 'no inbound named "nope"'})

    @inlineCallbacks
    def test_put_turns_comparison_on_and_persists_it_null_turns_it_off(self) -> Any:
        yield self.start_web()
        settings = {"candidates": ["staging"], "baseline": "prod-2", "samples": 3}
        code, body = yield self.call("PUT", "/v1/nfork/web/compare", settings)
        assert code == 200
        assert body["compare"] == settings
        saved = json.loads(self.config_path.read_text())
        assert saved[0]["compare"] == settings
        code, report = yield self.call("GET", "/v1/nfork/web/compare")
        assert code == 200
        assert report["inbound"] == "web"
        assert report["primary"] == "prod"
        assert report["baseline"] == "prod-2"
        assert report["candidates"]["staging"]["compared"] == 0

        code, body = yield self.call("PUT", "/v1/nfork/web/compare", raw=b"null")
        assert code == 200
        assert "compare" not in body
        assert "compare" not in json.loads(self.config_path.read_text())[0]
        code, _ = yield self.call("GET", "/v1/nfork/web/compare")
        assert code == 404

    @inlineCallbacks
    def test_put_is_validated_like_the_file(self) -> Any:
        yield self.start_web()
        for settings, message in (
            (
                {"samples": -1},
                'inbound "web": key "compare.samples": must be at least 0, got -1',
            ),
            (
                {"candidates": ["nope"]},
                'inbound "web": key "compare.candidates": no outbound named "nope"',
            ),
            (
                {"sampels": 3},
                'inbound "web": key "compare": unknown key "sampels" '
                '(did you mean "samples"?)',
            ),
            (
                "staging:8081",
                'inbound "web": key "compare": expected an object of compare '
                'settings, got the string "staging:8081"',
            ),
        ):
            code, body = yield self.call("PUT", "/v1/nfork/web/compare", settings)
            assert code == 400, body
            assert body["error"].startswith(message), body
        assert self.controller.inbound("web").config.compare is None
        code, body = yield self.call("PUT", "/v1/nfork/nope/compare", {})
        assert code == 404

    @inlineCallbacks
    def test_compare_is_not_an_outbound_name_for_the_api(self) -> Any:
        yield self.start_web()
        code, body = yield self.call("PUT", "/v1/nfork/web/compare", "127.0.0.1:1")
        assert code == 400
        assert self.controller.inbound("web").config.outbound("compare") is None
        code, body = yield self.call(
            "POST",
            "/v1/nfork",
            {
                "name": "compare",
                "listen": "127.0.0.1:0",
                "out": {"a": "h:1"},
                "active": "a",
            },
        )
        assert code == 400
        assert 'the inbound name "compare" is reserved' in body["error"]

    @inlineCallbacks
    def test_removing_an_outbound_named_in_compare_is_a_conflict(self) -> Any:
        yield self.start_web(candidates=["staging"], baseline="prod-2")
        for name, key in (("staging", "candidates"), ("prod-2", "baseline")):
            code, body = yield self.call("DELETE", f"/v1/nfork/web/{name}")
            assert code == 409
            assert body["error"] == (
                f'outbound "{name}" is named in compare.{key} of inbound "web"; '
                "change compare first (PUT /v1/nfork/web/compare)"
            )
        code, _ = yield self.call("POST", "/v1/nfork/web/staging/activate")
        assert code == 200

    # -- the report, samples, reset -----------------------------------------

    @inlineCallbacks
    def test_report_samples_and_reset_after_real_traffic(self) -> Any:
        yield self.start_web(candidates=["staging"], baseline="prod-2", samples=2)
        yield self.traffic(4)
        code, report = yield self.call("GET", "/v1/nfork/web/compare")
        assert code == 200
        staging = report["candidates"]["staging"]
        assert (staging["compared"], staging["differing"]) == (4, 4)
        endpoint = staging["endpoints"]["GET /users/:int"]
        assert endpoint["requests"] == 4
        field = endpoint["fields"]["$.id"]
        assert (field["raw"], field["noise"], field["verdict"]) == (4, 0, "difference")
        assert endpoint["fields"]["header.x-service"]["verdict"] == "noise"

        query = "?endpoint=GET%20/users/:int&field=$.id"
        code, samples = yield self.call(
            "GET", f"/v1/nfork/web/compare/staging/samples{query}"
        )
        assert code == 200
        assert len(samples) == 2
        sample = samples[0]
        assert sample["request"]["method"] == "GET"
        assert sample["request"]["target"].startswith("/users/")
        assert sample["answers"]["candidate"]["body"] == CANDIDATE_BODY.decode()
        assert sample["answers"]["baseline"]["body"] == PRIMARY_BODY.decode()
        assert {
            "field": "$.id",
            "kind": "type",
            "primary": "number",
            "candidate": "string",
        } in (sample["differences"])

        code, samples = yield self.call(
            "GET", "/v1/nfork/web/compare/staging/samples?endpoint=GET%20/x&field=$.id"
        )
        assert (code, samples) == (200, [])

        code, report = yield self.call("DELETE", "/v1/nfork/web/compare")
        assert code == 200
        assert report["candidates"]["staging"]["compared"] == 0
        code, samples = yield self.call(
            "GET", f"/v1/nfork/web/compare/staging/samples{query}"
        )
        assert (code, samples) == (200, [])

    @inlineCallbacks
    def test_samples_need_endpoint_and_field_and_a_candidate(self) -> Any:
        yield self.start_web(candidates=["staging"])
        for query in ("", "?endpoint=GET%20/", "?field=$.id"):
            code, body = yield self.call(
                "GET", f"/v1/nfork/web/compare/staging/samples{query}"
            )
            assert code == 400
            assert "endpoint and field" in body["error"]
        code, body = yield self.call(
            "GET", "/v1/nfork/web/compare/prod-2/samples?endpoint=a&field=b"
        )
        assert code == 404
        assert '"prod-2" is not a candidate of inbound "web"' in body["error"]

    # -- the control API's rules --------------------------------------------

    @inlineCallbacks
    def test_token_and_browser_rules_apply(self) -> Any:
        self.serve(token=TOKEN)
        yield self.start_web(candidates=["staging"])
        auth = {"Authorization": f"Bearer {TOKEN}"}
        code, _ = yield self.call("GET", "/v1/nfork/web/compare")
        assert code == 401
        code, _ = yield self.call("GET", "/v1/nfork/web/compare", headers=auth)
        assert code == 200
        code, _ = yield self.call("DELETE", "/v1/nfork/web/compare")
        assert code == 401
        code, body = yield self.call(
            "PUT",
            "/v1/nfork/web/compare",
            raw=b"null",
            headers={**auth, "Content-Type": "text/plain"},
        )
        assert code == 403
        assert "application/json" in body["error"]
        code, body = yield self.call(
            "DELETE",
            "/v1/nfork/web/compare",
            headers={**auth, "Origin": "http://evil.example"},
        )
        assert code == 403
        assert self.controller.inbound("web").config.compare is not None

    # -- metrics --------------------------------------------------------------

    @inlineCallbacks
    def test_metrics_count_per_candidate_and_endpoint(self) -> Any:
        yield self.start_web(candidates=["staging"], baseline="prod-2")
        yield self.traffic(3)
        code, text = yield self.call("GET", "/metrics")
        assert code == 200
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        labels = (("candidate", "staging"), ("inbound", "web"))
        assert samples[("nfork_compared_total", labels)] == 3
        assert samples[("nfork_compare_differing_total", labels)] == 3
        assert samples[("nfork_compare_skipped_total", labels)] == 0
        endpoint = (
            ("candidate", "staging"),
            ("endpoint", "GET /users/:int"),
            ("inbound", "web"),
        )
        assert samples[("nfork_compare_endpoint_differing_total", endpoint)] == 3
