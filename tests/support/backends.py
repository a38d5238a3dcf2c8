"""Real loopback test services for integration tests."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.web import server
from twisted.web.resource import Resource


class RecordingService(Resource):
    """Answers with a fixed status and body, recording "METHOD path body".

    It also records whether C{X-Nfork} and the client's C{X-Test} header
    arrived.  C{delay} makes it answer that many seconds later.
    """

    isLeaf = True

    def __init__(self, name: str, code: int = 200, delay: float = 0.0) -> None:
        super().__init__()
        self.name = name
        self.code = code
        self.delay = delay
        self.received: list[str] = []
        self.headers: list[dict[bytes, list[bytes]]] = []
        self._waiters: list[tuple[int, Deferred[None]]] = []
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
        d: Deferred[None] = Deferred()
        self._waiters.append((count, d))
        self._wake()
        return d

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            count, d = waiter
            if len(self.received) >= count:
                self._waiters.remove(waiter)
                d.callback(None)

    def render(self, request: server.Request) -> Any:
        body = request.content.read() if request.content else b""
        path = request.uri.decode("latin-1")
        self.received.append(
            f"{request.method.decode()} {path} {body.decode('latin-1')}"
        )
        self.headers.append(
            {k: list(v) for k, v in request.requestHeaders.getAllRawHeaders()}
        )
        request.setResponseCode(self.code)
        request.setHeader(b"X-Service", self.name.encode())
        answer = self.name.encode()
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
