"""What a hostile client request becomes: raw bytes on a real socket to an inbound.

An inbound started by a L{Controller} on the real reactor, in front of an
active and a shadow loopback backend.  Each test sends its attack as raw
bytes and, while the attack's connection is open, a normal request through
the same inbound, which must be answered within a second.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nfork.control.controller import Controller
from tests.support.backends import RecordingService
from tests.support.configs import inbound_config
from tests.support.rawclient import (
    RawClient,
    flood,
    half_close,
    raw_connect,
    raw_exchange,
    split_response,
)

ANSWER_WITHIN = 1.0
"""Seconds a normal request may take during an attack."""
HEADER_TIMEOUT = 0.5
"""The request head deadline of these tests' inbounds, in seconds."""
NORMAL = b"GET /normal HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
CHUNKED = (
    b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n5\r\nhello\r\n"
)
"""A chunked request up to its last chunk."""

_reactor = cast(Any, reactor)


class _InboundTestCase(TestCase):
    """An inbound copying to an active and a shadow backend, on loopback."""

    timeout = 30

    def setUp(self) -> None:
        self.active = RecordingService("prod")
        self.active.listen()
        self.addCleanup(self.active.close)
        self.shadow = RecordingService("shadow")
        self.shadow.listen()
        self.addCleanup(self.shadow.close)
        self.controller = Controller(_reactor, header_timeout=HEADER_TIMEOUT)
        self.addCleanup(self.controller.stop)

    async def start(self, prefix: str = "", **options: Any) -> None:
        """Start the inbound C{req}; C{prefix} is the outbounds' path prefix."""
        out = {
            "prod": f"http://{self.active.address}{prefix}",
            "shadow": f"http://{self.shadow.address}{prefix}",
        }
        inbound = await self.controller.add_inbound(
            inbound_config("req", out=out, **options)
        )
        self.port: int = cast(Any, inbound.port.getHost()).port

    async def served(self) -> None:
        """A normal request is answered by the active backend within a second."""
        start = _reactor.seconds()
        answer = await raw_exchange(_reactor, self.port, NORMAL)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertTrue(answer.endswith(b"prod"), answer[-100:])
        self.assertLess(_reactor.seconds() - start, ANSWER_WITHIN)

    async def attack(self, raw: bytes) -> bytes:
        """Send C{raw} on its own connection; every byte answered until the close.

        A normal request is served while the attacker's connection is open.
        """
        client = await raw_connect(_reactor, self.port, raw)
        return await self.during(client)

    async def during(self, client: RawClient) -> bytes:
        """Serve a normal request while C{client} is connected; its answer."""
        await self.served()
        return await client.done.addTimeout(10, _reactor)

    async def refused(self, raw: bytes, code: int) -> bytes:
        """C{raw} is answered C{code} and closed; no outbound gets anything."""
        answer = await self.attack(raw)
        self.assertTrue(answer.startswith(b"HTTP/1.1 %d " % code), answer[:200])
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertEqual(self.forwarded(), [])
        return answer

    def forwarded(self) -> list[tuple[bytes, bytes, bytes, dict[bytes, list[bytes]]]]:
        """The requests the active backend received, normal ones left out.

        Header names are lower-cased.
        """
        return [
            (method, uri, body, {k.lower(): v for k, v in headers.items()})
            for method, uri, body, headers in self.active.requests
            if not uri.endswith(b"/normal")
        ]


class TrailerTests(_InboundTestCase):
    """Trailers never become headers, and are bounded in size and time (1, 2)."""

    async def test_trailers_are_dropped_and_override_nothing(self) -> None:
        await self.start()
        answer = await self.attack(
            CHUNKED + b"0\r\nHost: evil\r\nAuthorization: Bearer x\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n"
            b"X-Trailer: 1\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        await self.shadow.wait_for(2)
        for backend in (self.active, self.shadow):
            (_, _, body, headers) = next(r for r in backend.requests if r[1] == b"/up")
            names = {name.lower(): value for name, value in headers.items()}
            self.assertEqual(body, b"hello")
            self.assertEqual(names[b"host"], [backend.address.encode()])
            self.assertEqual(names[b"x-forwarded-host"], [b"x"])
            self.assertEqual(names[b"x-forwarded-for"], [b"127.0.0.1"])
            self.assertNotIn(b"authorization", names)
            self.assertNotIn(b"x-trailer", names)

    async def test_an_endless_trailer_line_gets_431(self) -> None:
        await self.start()
        client = await flood(
            _reactor, self.port, CHUNKED + b"0\r\nX: ", b"a" * 2048, limit=100
        )
        answer = await self.during(client)
        code, _, body = split_response(answer)
        self.assertEqual((code, body), (431, b"nfork: request trailers too large\n"))
        # Refused once 16 KiB were counted: within a read or two of the limit.
        self.assertLess(client.sent, 16384 // 2048 + 4)
        self.assertEqual(self.forwarded(), [])

    async def test_an_endless_header_line_gets_431(self) -> None:
        await self.start()
        client = await flood(
            _reactor, self.port, b"GET / HTTP/1.1\r\nHost: x\r\nX: ", b"a" * 2048
        )
        answer = await self.during(client)
        self.assertTrue(answer.startswith(b"HTTP/1.1 431 "), answer)
        self.assertLess(client.sent, 16384 // 2048 + 4)

    async def test_the_first_read_counts_toward_the_head_limit(self) -> None:
        await self.start()
        # All in one write, nothing after it: refused at once, not at the
        # head deadline.
        start = _reactor.seconds()
        await self.refused(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 17_000, 431)
        self.assertLess(_reactor.seconds() - start, HEADER_TIMEOUT)

    async def test_trailers_in_the_bodys_read_count_toward_the_limit(self) -> None:
        await self.start()
        start = _reactor.seconds()
        await self.refused(CHUNKED + b"0\r\nX: " + b"a" * 17_000, 431)
        self.assertLess(_reactor.seconds() - start, HEADER_TIMEOUT)

    async def test_trailers_must_arrive_within_the_head_deadline(self) -> None:
        await self.start()
        start = _reactor.seconds()
        answer = await self.attack(CHUNKED + b"0\r\nX-Slow: 1\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        elapsed = _reactor.seconds() - start
        self.assertGreater(elapsed, HEADER_TIMEOUT * 0.9)
        self.assertLess(elapsed, HEADER_TIMEOUT + 1)
        self.assertEqual(self.forwarded(), [])


class RequestLineTests(_InboundTestCase):
    """Methods, versions, targets and Host that nfork does not forward (6)."""

    async def test_connect_gets_405(self) -> None:
        await self.start()
        await self.refused(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n", 405)

    async def test_http_0_9_gets_505(self) -> None:
        await self.start()
        await self.refused(b"GET /\r\n", 505)

    async def test_an_http_2_0_request_line_gets_505(self) -> None:
        await self.start()
        await self.refused(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)

    async def test_the_h2_prior_knowledge_preface_gets_505(self) -> None:
        await self.start()
        answer = await self.refused(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505)
        self.assertIn(b"HTTP/2 is not supported", answer)

    async def test_a_target_over_16_kib_gets_414(self) -> None:
        await self.start()
        await self.refused(
            b"GET /" + b"a" * 17_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414
        )

    async def test_a_target_trickled_past_16_kib_gets_414(self) -> None:
        await self.start()
        client = await flood(_reactor, self.port, b"GET /", b"a" * 2048)
        answer = await self.during(client)
        self.assertTrue(answer.startswith(b"HTTP/1.1 414 "), answer)

    async def test_http_1_1_without_host_gets_400(self) -> None:
        await self.start()
        answer = await self.refused(b"GET / HTTP/1.1\r\n\r\n", 400)
        self.assertIn(b"missing Host", answer)

    async def test_two_host_headers_get_400(self) -> None:
        await self.start()
        answer = await self.refused(
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: admin.internal\r\n\r\n", 400
        )
        self.assertIn(b"more than one Host", answer)

    async def test_absolute_form_is_sent_in_origin_form(self) -> None:
        await self.start(prefix="/api")
        answer = await self.attack(
            b"GET http://shop.example:8080/items?x=1 HTTP/1.1\r\nHost: other\r\n"
            b"Connection: close\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        ((_, uri, _, headers),) = self.forwarded()
        self.assertEqual(uri, b"/api/items?x=1")
        # RFC 9112 section 3.2.2: the target's authority wins over Host.
        self.assertEqual(headers[b"x-forwarded-host"], [b"shop.example:8080"])
        self.assertEqual(headers[b"host"], [self.active.address.encode()])

    async def test_dot_segments_above_the_root_get_400(self) -> None:
        await self.start(prefix="/api")
        for target in (
            b"/../admin",
            b"/a/../../admin",
            b"/%2e%2e/admin",
            b"/.%2E/admin",
            b"/..%2fadmin",
            b"/..;/admin",
            b"http://x/../admin",
        ):
            answer = await self.refused(
                b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400
            )
            self.assertIn(b"climbs above the root", answer)

    async def test_normal_paths_reach_the_outbounds_byte_for_byte(self) -> None:
        await self.start(prefix="/api")
        targets = [
            b"/a/b/../c",
            b"/a/./b",
            b"/caf%C3%A9/%2e%2E",
            b"/file.tar.gz?next=../../x",
            b"//double//slash",
        ]
        for target in targets:
            answer = await self.attack(
                b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertEqual(
            [r[1] for r in self.forwarded()], [b"/api" + t for t in targets]
        )


class HalfCloseTests(_InboundTestCase):
    """A client that half-closes after its requests still gets its answers (7)."""

    async def test_a_half_closed_client_gets_its_answer(self) -> None:
        self.active.delay = 0.2
        await self.start()
        client = await raw_connect(
            _reactor, self.port, b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        half_close(client)
        answer = await self.during(client)
        code, headers, body = split_response(answer)
        self.assertEqual((code, body), (200, b"prod"))
        self.assertEqual(headers[b"connection"], b"close")

    async def test_pipelined_requests_before_the_fin_are_all_answered(self) -> None:
        await self.start()
        client = await raw_connect(
            _reactor,
            self.port,
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /3 HTTP/1.1\r\nHost: x\r\n",  # unfinished: dropped
        )
        half_close(client)
        answer = await self.during(client)
        # Both answered, then the connection closed (client.done fired).
        self.assertEqual(answer.count(b"HTTP/1.1 200 OK\r\n"), 2, answer)
        self.assertTrue(answer.endswith(b"prod"), answer)
        self.assertEqual([r[1] for r in self.forwarded()], [b"/1", b"/2"])


SPOOFED = (
    b"GET /who HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n"
    b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
    b"X-Forwarded-Host: admin.internal\r\nForwarded: for=6.6.6.6\r\n\r\n"
)


class ForwardedHeaderTests(_InboundTestCase):
    """X-Forwarded-* and Forwarded are kept only from trusted networks (8)."""

    async def who(self) -> dict[bytes, list[bytes]]:
        answer = await self.attack(SPOOFED)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        ((_, _, _, headers),) = self.forwarded()
        return headers

    async def test_an_untrusted_client_cannot_speak_for_others(self) -> None:
        await self.start(trustForwarded=["10.0.0.0/8"])
        headers = await self.who()
        self.assertEqual(headers[b"x-forwarded-for"], [b"6.6.6.6, 127.0.0.1"])
        self.assertEqual(headers[b"x-forwarded-proto"], [b"http"])
        self.assertEqual(headers[b"x-forwarded-host"], [b"shop.example"])
        self.assertNotIn(b"forwarded", headers)

    async def test_a_trusted_proxy_keeps_and_extends_them(self) -> None:
        await self.start(trustForwarded=["127.0.0.0/8", "::1/128"])
        headers = await self.who()
        self.assertEqual(headers[b"x-forwarded-for"], [b"6.6.6.6, 127.0.0.1"])
        self.assertEqual(headers[b"x-forwarded-proto"], [b"https"])
        self.assertEqual(headers[b"x-forwarded-host"], [b"admin.internal"])
        self.assertEqual(
            headers[b"forwarded"],
            [b"for=6.6.6.6", b"for=127.0.0.1;host=shop.example;proto=http"],
        )

    async def test_a_changed_trust_applies_to_open_connections(self) -> None:
        await self.start()
        client = await raw_connect(
            _reactor, self.port, SPOOFED.replace(b"Connection: close\r\n", b"")
        )
        await self.active.wait_for(1)
        await self.controller.update_inbound(
            inbound_config(
                "req",
                out={
                    "prod": f"http://{self.active.address}",
                    "shadow": f"http://{self.shadow.address}",
                },
                trustForwarded=["127.0.0.1"],
            )
        )
        assert client.transport is not None
        client.transport.write(SPOOFED)
        await self.during(client)
        first, second = (r[3] for r in self.forwarded())
        self.assertEqual(first[b"x-forwarded-proto"], [b"http"])
        self.assertEqual(second[b"x-forwarded-proto"], [b"https"])
