"""Broken and hostile backends, over real loopback sockets, through a running inbound.

Each test starts an inbound with the real controller and sends raw bytes to
it; the backends are raw sockets that misbehave (tests/support/faults.py).
During every attack a normal request through the same inbound must be
answered within a second, and no answer may reach the wrong client.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase

from nfork.control.controller import Controller
from nfork.proxy.client import MAX_RESPONSE_HEAD
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config
from tests.support.faults import EndlessHead, ScriptedBackend, answer
from tests.support.files import temp_dir
from tests.support.rawclient import raw_exchange
from tests.support.tls import CertificateAuthority, server_tls_options

ANSWER_WITHIN = 1.0
"""Seconds a normal request may take while a backend misbehaves."""


def get(path: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    """A raw request through the inbound, on its own connection."""
    length = b"Content-Length: %d\r\n" % len(body) if body else b""
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: shop\r\n" + length
        + b"Connection: close\r\n\r\n" + body
    )  # fmt: skip


def split(answer: bytes) -> tuple[int, bytes]:
    """The status code and the body of a raw answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def echo(protocol: Any, method: bytes, target: bytes) -> None:
    """Answer with the request's target: every answer says whose it is."""
    protocol.write(answer(target))


class _InboundTestCase(TestCase):
    """A controller and an inbound whose outbounds the test gives."""

    timeout = 20

    def setUp(self) -> None:
        self.controller = Controller(reactor, header_timeout=2.0)
        self.addCleanup(self.controller.stop)

    async def start(self, out: dict[str, Any], **options: Any) -> int:
        """Start inbound "shop" forking to C{out}, "prod" active; its port."""
        inbound = await Deferred.fromCoroutine(
            self.controller.add_inbound(
                inbound_config("shop", out=out, timeout="5s", **options)
            )
        )
        port: int = cast(Any, inbound.port.getHost()).port
        self.port = port
        return port

    def backend(self, script: Any = echo, **kwargs: Any) -> tuple[ScriptedBackend, str]:
        backend = ScriptedBackend(script, **kwargs)
        address = backend.listen()
        self.addCleanup(backend.close)
        return backend, address

    def healthy(self) -> str:
        service = RecordingService("prod")
        service.listen()
        self.addCleanup(service.close)
        return service.address

    async def exchange(self, raw: bytes) -> tuple[int, bytes]:
        """Send C{raw} through the inbound: the answer's code and body."""
        return split(await raw_exchange(cast(Any, reactor), self.port, raw))

    async def assert_served(
        self, path: bytes = b"/normal", expect: bytes = b""
    ) -> None:
        """A normal request through the inbound is answered within a second."""
        start = cast(Any, reactor).seconds()
        code, body = await self.exchange(get(path))
        self.assertLess(cast(Any, reactor).seconds() - start, ANSWER_WITHIN)
        self.assertEqual((code, body), (200, expect or path))

    def stats(self, outbound: str) -> Any:
        return self.controller.outbound_route("shop", outbound).stats


class ResponseHeadTests(_InboundTestCase):
    """Point 10: an answer's head is bounded, its framing and status checked."""

    async def endless(self) -> tuple[list[EndlessHead], str]:
        heads: list[EndlessHead] = []

        def build(addr: Any) -> EndlessHead:
            heads.append(EndlessHead())
            return heads[-1]

        factory = Factory.forProtocol(EndlessHead)
        factory.buildProtocol = build  # type: ignore[method-assign]
        port = cast(Any, reactor).listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(
            lambda: [cast(Any, h.transport).abortConnection() for h in heads]
        )
        return heads, f"127.0.0.1:{port.getHost().port}"

    async def test_a_shadow_sending_endless_headers_does_not_slow_the_active(
        self,
    ) -> None:
        heads, address = await self.endless()
        await self.start({"prod": self.healthy(), "shadow": address})
        for i in range(5):
            await self.assert_served(b"/normal%d" % i, b"prod")
        for head in heads:
            await head.closed
            # nfork closed the connection soon after the limit.
            self.assertLess(head.sent, 4 * MAX_RESPONSE_HEAD)
        self.assertEqual(self.stats("shadow").total_errors, 5)

    async def test_an_endless_head_from_the_active_is_a_502(self) -> None:
        heads, address = await self.endless()
        await self.start({"prod": address})
        code, body = await self.exchange(get(b"/"))
        self.assertEqual((code, body), (502, b'nfork: active outbound "prod" failed\n'))
        await heads[0].closed
        self.assertLess(heads[0].sent, 4 * MAX_RESPONSE_HEAD)

    async def test_bad_framing_and_status_codes_are_502(self) -> None:
        answers = {
            b"/gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nbody",
            b"/chunked-gzip": b"HTTP/1.1 200 OK\r\n"
            b"Transfer-Encoding: chunked, gzip\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
            b"/te-and-length": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 4\r\n\r\n0\r\n\r\n",
            b"/000": b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
            b"/600": b"HTTP/1.1 600 Big\r\nContent-Length: 0\r\n\r\n",
        }

        def script(protocol: Any, method: bytes, target: bytes) -> None:
            protocol.write(answers.get(target) or answer(target))

        _, address = self.backend(script)
        await self.start({"prod": address})
        for target in answers:
            code, body = await self.exchange(get(target))
            self.assertEqual(code, 502, target)
            self.assertNotIn(b"127.0.0.1", body)
            await self.assert_served()


class RetryTests(_InboundTestCase):
    """Point 9: a request that may have been acted on is never sent twice."""

    def drops_second(self) -> tuple[ScriptedBackend, str]:
        """A backend that closes a connection when its second request comes."""

        def script(protocol: Any, method: bytes, target: bytes) -> None:
            if protocol.served:
                cast(Any, protocol.transport).loseConnection()
            else:
                protocol.write(answer(target))

        return self.backend(script)

    async def test_a_post_on_a_dead_reused_connection_is_not_resent(self) -> None:
        backend, address = self.drops_second()
        await self.start({"prod": address})
        await self.assert_served(b"/first")
        code, _ = await self.exchange(get(b"/order", b"POST", b"pay once"))
        self.assertEqual(code, 502)
        self.assertEqual(backend.requests.count((b"POST", b"/order")), 1)
        await self.assert_served(b"/after")

    async def test_a_get_on_a_dead_reused_connection_is_retried(self) -> None:
        backend, address = self.drops_second()
        await self.start({"prod": address})
        await self.assert_served(b"/first")
        await self.assert_served(b"/again")
        self.assertEqual(backend.requests.count((b"GET", b"/again")), 2)

    async def test_a_shadow_post_is_not_resent_either(self) -> None:
        backend, address = self.drops_second()
        await self.start({"prod": self.healthy(), "shadow": address})
        await self.assert_served(b"/first", b"prod")
        code, _ = await self.exchange(get(b"/order", b"POST", b"pay once"))
        self.assertEqual(code, 200)
        await deferLater(cast(Any, reactor), 0.1, lambda: None)
        self.assertEqual(backend.requests.count((b"POST", b"/order")), 1)
        self.assertEqual(self.stats("shadow").total_errors, 1)


class WrongClientTests(_InboundTestCase):
    """Point 11: what a backend sends out of turn never answers another request."""

    async def test_an_extra_answer_after_head_never_reaches_the_next_request(
        self,
    ) -> None:
        def script(protocol: Any, method: bytes, target: bytes) -> None:
            if method == b"HEAD":
                protocol.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
                protocol.later(0.05, b"evil")
                protocol.later(0.1, answer(b"evil"))
            else:
                protocol.write(answer(target))

        _, address = self.backend(script)
        await self.start({"prod": address})
        for i in range(3):
            code, _ = await self.exchange(get(b"/h", b"HEAD"))
            self.assertEqual(code, 200)
            for j in range(3):
                await self.assert_served(b"/next-%d-%d" % (i, j))
                await deferLater(cast(Any, reactor), 0.05, lambda: None)

    async def test_garbage_on_an_idle_connection_never_answers_a_request(
        self,
    ) -> None:
        def script(protocol: Any, method: bytes, target: bytes) -> None:
            protocol.write(answer(target))
            protocol.later(0.02, answer(b"unsolicited"))

        backend, address = self.backend(script)
        await self.start({"prod": address})
        for i in range(5):
            await self.assert_served(b"/own-%d" % i)
            await deferLater(cast(Any, reactor), 0.05, lambda: None)
        # Each connection was closed when the unsolicited answer came.
        self.assertEqual(backend.opened, 5)

    async def test_an_answer_before_the_body_was_written_is_not_reused(
        self,
    ) -> None:
        backend, address = self.backend(answer_early=True)
        await self.start({"prod": address})
        body = b"b" * (8 * 1024 * 1024)
        code, answered = await self.exchange(get(b"/upload", b"POST", body))
        self.assertEqual((code, answered), (200, b"/upload"))
        await self.assert_served(b"/next")
        self.assertEqual(backend.opened, 2)


class TLSTests(_InboundTestCase):
    """Point 12 and 13 through an inbound: verified TLS, and errors kept private."""

    def tls_backend(self, *names: str) -> tuple[str, str]:
        """A TLS backend with a certificate for C{names}: its port, the CA file."""
        ca = CertificateAuthority()
        directory = temp_dir(self)
        (directory / "ca.pem").write_bytes(ca.cert)
        service = RecordingService("secure")
        service.listen()
        self.addCleanup(service.close)
        assert service.port is not None
        site = cast(Any, service.port).factory  # its twisted.web Site, in TLS too
        tls = TLSMemoryBIOFactory(server_tls_options(ca.issue(*names)), False, site)
        port = cast(Any, reactor).listenTCP(0, tls, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return str(port.getHost().port), str(directory / "ca.pem")

    async def test_https_with_a_ca_file_and_server_name(self) -> None:
        port, ca_file = self.tls_backend("api.internal")
        await self.start(
            {
                "prod": {
                    "addr": f"https://127.0.0.1:{port}",
                    "caFile": ca_file,
                    "serverName": "api.internal",
                }
            }
        )
        await self.assert_served(b"/tls", b"secure")

    async def test_an_untrusted_certificate_is_a_502_that_tells_nothing(
        self,
    ) -> None:
        port, _ = self.tls_backend("127.0.0.1")
        await self.start({"prod": f"https://127.0.0.1:{port}"})
        with capturedLogs() as events:
            code, body = await self.exchange(get(b"/"))
        self.assertEqual((code, body), (502, b'nfork: active outbound "prod" failed\n'))
        (event,) = [
            e
            for e in events
            if e["log_level"] == LogLevel.warn and e.get("outbound") == "prod"
        ]
        text = formatEvent(event)
        self.assertIn(f"127.0.0.1:{port}", text)
        self.assertIn("certificate verify failed", text)
