"""Real loopback test services for integration tests.

On this process's reactor: C{RecordingService} (an HTTP backend),
C{LineCollector} (a TCP log collector) and C{DatagramCollector} (a UDP one),
each with C{wait_for(count)}.  In threads, for tests whose nfork runs in
another process while the test blocks: C{ThreadedBackend}.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.protocols.basic import LineReceiver
from twisted.web import server
from twisted.web.resource import Resource

from tests.support.waiting import Arrivals


class RecordingService(Resource):
    """Answers with a fixed status and body (its name), recording each request.

    C{received} holds C{"METHOD path body"} strings, C{headers} each
    request's headers, C{requests} the raw C{(method, uri, body, headers)}.
    C{delay} makes it answer that many seconds later; C{body} answers those
    bytes instead of the name.
    """

    isLeaf = True

    def __init__(
        self,
        name: str,
        code: int = 200,
        delay: float = 0.0,
        body: bytes | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.code = code
        self.delay = delay
        self.body = body
        self.received: list[str] = []
        self.headers: list[dict[bytes, list[bytes]]] = []
        self.requests: list[tuple[bytes, bytes, bytes, dict[bytes, list[bytes]]]] = []
        self._arrivals = Arrivals(self.received, cast(Any, reactor))
        self.port: IListeningPort | None = None
        self._pending: list[Any] = []
        self.on_cancel: Any = None
        """Called when a delayed request's connection is lost before the answer."""

    @property
    def address(self) -> str:
        """C{127.0.0.1:port} of the listening service."""
        assert self.port is not None
        return f"127.0.0.1:{cast(IPv4Address, self.port.getHost()).port}"

    def listen(self) -> IListeningPort:
        """Listen on an ephemeral loopback port."""
        site = server.Site(self)
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        self.port = cast(Any, reactor).listenTCP(0, site, interface="127.0.0.1")
        return self.port

    def close(self) -> Deferred[None]:
        """Cancel delayed answers and stop listening."""
        for call in self._pending:
            if call.active():
                call.cancel()
        assert self.port is not None
        return cast(Deferred[None], self.port.stopListening())

    def wait_for(self, count: int) -> Deferred[None]:
        """Fires once C{count} requests have been received."""
        return self._arrivals.wait_for(count)

    def _wake(self) -> None:
        """Fire the waiters a new request satisfies (subclasses call it too)."""
        self._arrivals.check()

    def render(self, request: server.Request) -> Any:
        body = request.content.read() if request.content else b""
        path = request.uri.decode("latin-1")
        self.received.append(
            f"{request.method.decode()} {path} {body.decode('latin-1')}"
        )
        headers = {k: list(v) for k, v in request.requestHeaders.getAllRawHeaders()}
        self.headers.append(headers)
        self.requests.append((request.method, request.uri, body, headers))
        request.setResponseCode(self.code)
        request.setHeader(b"X-Service", self.name.encode())
        answer = self.name.encode() if self.body is None else self.body
        self._wake()
        if not self.delay:
            return answer
        gone: list[bool] = []

        def abandoned(_: object) -> None:
            gone.append(True)
            if self.on_cancel is not None:
                self.on_cancel()

        request.notifyFinish().addErrback(abandoned)

        def later() -> None:
            if not gone:
                request.write(answer)
                request.finish()

        self._pending.append(cast(Any, reactor).callLater(self.delay, later))
        return server.NOT_DONE_YET


class _LineProtocol(LineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        cast(LineCollector, self.factory).received(line)


class LineCollector(Factory):
    """A log collector: records the newline-terminated lines it receives."""

    protocol = _LineProtocol

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.connections: list[_LineProtocol] = []
        self._arrivals = Arrivals(self.lines, cast(Any, reactor))

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.connections.append(cast(_LineProtocol, protocol))
        return protocol

    def received(self, line: bytes) -> None:
        """Record one line."""
        self.lines.append(line)
        self._arrivals.check()

    def wait_for(self, count: int) -> Deferred[None]:
        """Fires once C{count} lines have been received."""
        return self._arrivals.wait_for(count)


class DatagramCollector(DatagramProtocol):
    """A UDP server (syslog, say): records the datagrams it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._arrivals = Arrivals(self.received, cast(Any, reactor))

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)
        self._arrivals.check()

    def wait_for(self, count: int) -> Deferred[None]:
        """Fires once C{count} datagrams have been received."""
        return self._arrivals.wait_for(count)


class _ThreadedHandler(BaseHTTPRequestHandler):
    server: ThreadedBackend

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        backend = self.server
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        backend.received.append(
            f"{self.command} {self.path} {self.headers.get('X-Nfork')}"
        )
        backend.arrived.set()
        if backend.delay:
            time.sleep(backend.delay)  # this backend's own thread, not a reactor
        body = backend.body.format(path=self.path, port=backend.port).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class ThreadedBackend(ThreadingHTTPServer):
    """An HTTP backend on 127.0.0.1 served by threads, not by a reactor.

    For tests that drive a real twistd and block while it works.  Every GET
    and POST gets 200 and C{body} (a format string: C{{path}}, C{{port}}),
    C{delay} seconds after it arrived.  C{received} holds one
    C{"METHOD path X-Nfork-header"} line per request; C{arrived} is set at
    the first.  Use the C{threaded_backend} fixture, which stops it.
    """

    daemon_threads = True

    def __init__(self, body: str = "", delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _ThreadedHandler)
        self.body = body
        self.delay = delay
        self.received: list[str] = []
        self.arrived = threading.Event()
        self._serving = False

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server_address[1])

    @property
    def address(self) -> str:
        """C{127.0.0.1:port}, as an outbound's address."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> ThreadedBackend:
        """Serve in a daemon thread until C{stop}."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self._serving = True
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._serving:
            self.shutdown()  # waits for serve_forever to return
            self._serving = False
        self.server_close()
