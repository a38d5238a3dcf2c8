"""The outbound HTTP/1.1 client: pooled persistent connections, byte-transparent.

This is the proxy's hot path.  L{twisted.web.client.Agent} (and treq on top of
it) measured at a fraction of the throughput of a minimal client protocol, and
treq adds cookie handling and decompression, which would break transparency.
So this module speaks HTTP/1.1 itself: a request's head is serialized in one
C{b"".join} (with the body when it is small) and written at once; a larger
body is written after it as the very object every outbound shares, never
copied per outbound.  Responses are parsed by C{httptools}' llhttp binding,
and connections are kept in a per-destination LIFO pool.

Idle connections are kept per backend (scheme, host, port), which the
outbounds of several inbounds may share: each outbound registers how many it
wants kept (L{HTTPClientPool.allow_idle}, its inbound's C{idleConn}) and the
host keeps the largest of the allowances standing, so a small C{idleConn}
never starves another inbound that needs many.

Transparency: the backend receives the request line, a C{Host} header, the
caller's headers in order and case, and C{Content-Length}, nothing else; the
caller gets the status, reason phrase, headers (in order, repeated ones kept)
and body as the backend sent them.  The one exception is chunked transfer
coding: the body is handed over de-chunked (trailers dropped), so the caller
must drop C{Transfer-Encoding} and set C{Content-Length} when forwarding it.
Content codings (gzip, ...) are never touched.

Defences against a broken or hostile backend: an answer's head (status line
and headers) larger than L{MAX_RESPONSE_HEAD} fails the request, at linear
cost however the bytes trickle in; a C{Transfer-Encoding} other than exactly
C{chunked}, or with C{Content-Length}, and a status code outside 100-599 fail
it too.  A connection goes back to the pool only after the whole request was
written and the whole answer read; bytes on an idle connection close it, and
a connection that answered a C{HEAD} is never reused (a backend that wrongly
sends a body could otherwise answer the next request with it).  Only
idempotent requests are ever sent twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from attrs import define, field, frozen
from attrs.validators import in_
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from OpenSSL import SSL
from OpenSSL.SSL import Error as TLSError
from service_identity import VerificationError
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, NotConnectingError, UserError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import LoopingCall
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from nfork.config.errors import quote
from nfork.proxy.messages import (
    AnswerReceiver,
    Headers,
    ProxyResponse,
    RequestUpload,
)
from nfork.proxy.transport import write_now

__all__ = [
    "MAX_RESPONSE_HEAD",
    "HTTPClientPool",
    "IdleAllowance",
    "IncompleteResponseError",
    "PoolClosedError",
    "ResponseError",
    "TLSContextFactory",
    "TLSSettings",
    "TLSSettingsError",
    "Target",
    "check_tls_settings",
    "client_tls",
]

_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
"""Methods that get C{Content-Length: 0} even with an empty body."""

IDEMPOTENT_METHODS = frozenset(
    (b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE")
)
"""RFC 9110 9.2.2: the only methods sent again after a reused connection
died before any byte of the answer arrived."""

MAX_RESPONSE_HEAD = 64 * 1024
"""Bytes an answer's status line and headers (interim answers included) may
take; beyond, the request fails."""

_FEED_BATCH = 4096
"""While a head is incomplete, later reads are held and handed to the parser
together once they end the head or reach this size: httptools joins a header
split across reads by concatenation, so feeding it a trickle of tiny reads
would cost quadratic time."""

_JOIN_BELOW = 16 * 1024
"""Request bodies shorter than this are joined to the head and written in
one write (one packet); longer ones are written after it as the caller's
object, shared by every outbound instead of copied into each."""


SURPLUS_IDLE_TIMEOUT = 10.0
"""Seconds after which idle connections above a host's largest idle
allowance that were not needed are closed."""


class ResponseError(Exception):
    """The backend's response was malformed or not HTTP/1.x as we support it."""


class PoolClosedError(UserError):
    """The pool was closed before the request could get a connection."""

    def __init__(self) -> None:
        super().__init__(string="HTTP client pool closed")


class IncompleteResponseError(ResponseError):
    """The connection was lost before the complete response had arrived."""

    def __init__(self, reason: Failure) -> None:
        super().__init__(
            f"connection lost before the complete response: {reason.value}"
        )
        self.reason = reason
        """Why the connection was lost (C{ConnectionDone}, C{ConnectionLost}...)."""


@frozen
class TLSSettings:
    """How connections to an C{https} backend are secured (the outbound's options).

    By default the certificate is verified against the platform's trust
    store, for the address's host name (or IP address), which is also sent
    as SNI.
    """

    ca_file: str | None = None
    """PEM file of the certificate authorities to trust instead of the
    platform's."""
    server_name: str | None = None
    """The name sent as SNI and checked in the certificate, instead of the
    address's host."""
    client_cert: str | None = None
    """PEM file of the client certificate (and its chain) to present."""
    client_key: str | None = None
    """PEM file of the client certificate's private key; by default the key
    is read from C{client_cert}."""
    insecure: bool = False
    """Do not verify the backend's certificate at all."""


TLSContextFactory = Callable[["Target"], IOpenSSLClientConnectionCreator]
"""Builds the TLS client settings for connections to a target's backend."""


@frozen
class Target:
    """Where to send requests: a backend address plus how to address it."""

    scheme: str = field(validator=in_(("http", "https")))
    """C{"http"} or C{"https"}."""
    host: str
    """IP address (IPv6 without brackets) or host name to connect to."""
    port: int
    host_header: bytes
    """Value of the C{Host} header, e.g. C{b"localhost:8080"}."""
    path_prefix: bytes = b""
    """Prepended to every request URI: C{b"/api" + b"/x?y" -> b"/api/x?y"}."""
    tls: TLSSettings = TLSSettings()
    """For C{https}: how the connections are secured."""
    pool_key: tuple[str, str, int, TLSSettings] = field(
        init=False, eq=False, repr=False
    )
    """What connections are pooled by: targets that differ only in C{Host}
    header or path prefix share connections; different TLS settings never
    do."""

    @pool_key.default
    def _pool_key(self) -> tuple[str, str, int, TLSSettings]:
        return (self.scheme, self.host, self.port, self.tls)


@implementer(IOpenSSLTrustRoot)
class _TrustAndIdentity:
    """The CA file (or the platform's trust store) and the client certificate.

    Twisted configures a client TLS context's trust through the trust root
    (its interface lives in C{_sslverify}, the type L{platformTrust}
    returns); setting the client certificate here too lets OpenSSL load
    every file itself (chains included, no deprecated pyOpenSSL objects)
    when the first connection makes the context.
    """

    def __init__(self, settings: TLSSettings) -> None:
        self._settings = settings

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        settings = self._settings
        if settings.ca_file is None:
            context.set_default_verify_paths()
        else:
            context.load_verify_locations(settings.ca_file)
        _load_client_certificate(context, settings)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedTLS:
    """TLS that accepts any certificate (C{insecure}); sends SNI for a name."""

    def __init__(self, context: SSL.Context, server_name: str) -> None:
        self._context = context
        self._server_name: bytes | None = None
        if not _is_ip_address(server_name):
            self._server_name = server_name.encode("idna")

    def clientConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        """A new client connection on the shared context."""
        connection = SSL.Connection(self._context, None)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        return connection


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _load_client_certificate(context: SSL.Context, settings: TLSSettings) -> None:
    """Load the client certificate chain and key into C{context}, if any."""
    if settings.client_cert is not None:
        context.use_certificate_chain_file(settings.client_cert)
        context.use_privatekey_file(settings.client_key or settings.client_cert)
        context.check_privatekey()


def client_tls(target: Target) -> IOpenSSLClientConnectionCreator:
    """The TLS client settings for C{target}'s backend, from C{target.tls}."""
    settings = target.tls
    name = settings.server_name or target.host
    if settings.insecure:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        _load_client_certificate(context, settings)
        return _UnverifiedTLS(context, name)
    return optionsForClientTLS(name, trustRoot=_TrustAndIdentity(settings))


class TLSSettingsError(ValueError):
    """A file named by L{TLSSettings} cannot be used; C{field} names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


def check_tls_settings(settings: TLSSettings) -> None:
    """Load the files of C{settings} once, as a connection would.

    Blocking (it reads the files): for validating a configuration, not for
    the reactor's hot path.

    @raise TLSSettingsError: naming the setting whose file is unreadable or
        invalid, or a key that does not match its certificate.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    steps: list[tuple[str, str | None, Callable[[str], object]]] = [
        ("ca_file", settings.ca_file, context.load_verify_locations),
        ("client_cert", settings.client_cert, context.use_certificate_chain_file),
        (
            "client_key",
            settings.client_key or settings.client_cert,
            SSL.Context(SSL.TLS_CLIENT_METHOD).use_privatekey_file,
        ),
    ]
    for name, path, load in steps:
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
            load(path)
        except OSError as e:
            raise TLSSettingsError(
                name, f"cannot read {quote(path)}: {e.strerror or e}"
            ) from e
        except SSL.Error as e:
            raise TLSSettingsError(
                name, f"{quote(path)} holds no valid PEM {_PEM_WHAT[name]}"
            ) from e
    if settings.client_cert is not None:
        try:
            # The key loaded alone: an error now is a mismatch, not the PEM.
            context = SSL.Context(SSL.TLS_CLIENT_METHOD)
            context.use_certificate_chain_file(settings.client_cert)
            context.use_privatekey_file(settings.client_key or settings.client_cert)
            context.check_privatekey()
        except SSL.Error as e:
            raise TLSSettingsError(
                "client_key", "the private key does not match the client certificate"
            ) from e


_PEM_WHAT = {
    "ca_file": "CA certificate",
    "client_cert": "certificate",
    "client_key": "private key",
}


class _Request:
    """One request and the response being parsed for it.

    Plain class with slots: one of these is built per request, so it stays
    as cheap as possible.
    """

    __slots__ = (
        "body",
        "cancelled",
        "code",
        "connector",
        "data",
        "deferred",
        "head",
        "headers",
        "host",
        "idempotent",
        "keep_body",
        "payload",
        "phrase",
        "protocol",
        "received",
        "reused",
        "stream",
        "streaming",
        "transfer_encoding",
        "upload",
        "upload_done",
    )

    def __init__(
        self,
        host: _Host,
        data: bytes,
        payload: bytes,
        method: bytes,
        keep_body: bool,
        streaming: bool = False,
        upload: RequestUpload | None = None,
    ) -> None:
        self.host = host
        self.data = data
        """The serialized head (with a short body), kept for a retry."""
        self.payload = payload
        """A long body, written after C{data}: the caller's object, shared."""
        self.head = method == b"HEAD"
        # A streamed body cannot be sent again.
        self.idempotent = upload is None and method in IDEMPOTENT_METHODS
        self.upload = upload
        """A body streamed from the client after the head, if any."""
        self.upload_done = False
        """The whole streamed body was written."""
        self.keep_body = keep_body
        self.deferred: Deferred[ProxyResponse] = Deferred(self._cancel)
        self.protocol: _HTTPClientProtocol | None = None
        """The connection the request was written to, once it was."""
        self.connector: IConnector | None = None
        """The connection attempt made for this request, while it lasts."""
        self.reused = False
        """Sent on a connection taken from the idle list."""
        self.received = False
        """At least one response byte arrived."""
        self.cancelled = False
        self.code = 0
        """Final status code; 0 until the final response's headers are parsed."""
        self.phrase = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.transfer_encoding: list[bytes] | None = None
        """The values of the final response's C{Transfer-Encoding} headers."""
        self.body: list[bytes] = []
        self.streaming = streaming
        """The caller takes the answer as a stream once its head is in."""
        self.stream: _AnswerStream | None = None
        """The answer's stream, once its head was delivered before its end."""

    def _cancel(self, deferred: Deferred[ProxyResponse]) -> None:
        """Abandon the request: its connection or connection attempt goes."""
        self.cancelled = True
        protocol = self.protocol
        if protocol is not None:
            protocol.abandon(self)
        else:
            self.host.stop_connecting(self)

    def deliver(self) -> None:
        """Fire the Deferred with the response parsed so far."""
        self.deferred.callback(
            ProxyResponse(
                self.code, self.phrase, tuple(self.headers), b"".join(self.body)
            )
        )

    def deliver_head(self, protocol: _HTTPClientProtocol) -> None:
        """Fire the Deferred with the head; the rest of the body will stream."""
        stream = self.stream = _AnswerStream(self, protocol)
        body, self.body = self.body, []
        self.deferred.callback(
            ProxyResponse(
                self.code, self.phrase, tuple(self.headers), b"".join(body), stream
            )
        )

    def is_close_delimited(self) -> bool:
        """Whether the response body ends with the connection (RFC 9112 6.3 #8)."""
        if self.transfer_encoding is not None:
            return False
        return all(name.lower() != b"content-length" for name, _ in self.headers)

    def announces_body(self) -> bool:
        """Whether a 204/304 answer declares a body it must not have."""
        if self.transfer_encoding is not None:
            return True
        for name, value in self.headers:
            if name.lower() == b"content-length" and value.strip() != b"0":
                return True
        return False

    def check_framing(self) -> None:
        """Refuse a body framed other than by exactly C{chunked} (RFC 9112 6.3).

        Called only when the answer has C{Transfer-Encoding} and a body.
        """
        assert self.transfer_encoding is not None
        codings = [
            coding.strip().lower()
            for value in self.transfer_encoding
            for coding in value.split(b",")
            if coding.strip()
        ]
        if codings != [b"chunked"]:
            raise ResponseError(
                "unsupported Transfer-Encoding "
                + repr(b", ".join(self.transfer_encoding))
            )
        for name, _ in self.headers:
            if name.lower() == b"content-length":
                raise ResponseError("both Transfer-Encoding and Content-Length")


def _unsent(transport: object) -> bool:
    """Whether bytes written to C{transport} are still waiting to go out.

    Reads the buffers of Twisted's TCP transport (as L{write_now} does) and
    looks through TLS; other transports are taken as written.
    """
    if isinstance(transport, TLSMemoryBIOProtocol):
        if transport._appSendBuffer:
            return True
        transport = transport.transport
    if isinstance(transport, Connection):
        return (
            bool(transport._tempDataBuffer)
            or len(transport.dataBuffer) != transport.offset
        )
    return False


class _AnswerStream:
    """The body of an answer delivered once its head was in (L{AnswerStream}).

    Pieces that arrive before L{start} wait in a list (none do when the
    caller starts the stream from the Deferred's callback, as the fork does).
    Pausing stops reading the backend connection: at most the read under way
    is still delivered.
    """

    __slots__ = ("_connection", "_done", "_failure", "_pending", "_receiver", "paused")

    def __init__(self, request: _Request, connection: _HTTPClientProtocol) -> None:
        self._connection: _HTTPClientProtocol | None = connection
        self._receiver: AnswerReceiver | None = None
        self._pending: list[bytes] = []
        self._done = False
        self._failure: Failure | None = None
        self.paused = False

    def start(self, receiver: AnswerReceiver) -> None:
        """Deliver what arrived so far, then the rest as it comes."""
        self._receiver = receiver
        pending, self._pending = self._pending, []
        for data in pending:
            receiver.body(data)
        if self._failure is not None:
            receiver.fail(self._failure)
        elif self._done:
            receiver.end()

    def pause(self) -> None:
        """Stop reading the backend connection."""
        connection = self._connection
        if not self.paused and connection is not None:
            self.paused = True
            connection.transport.pauseProducing()  # type: ignore[union-attr]

    def resume(self) -> None:
        """Read the backend connection again."""
        connection = self._connection
        if self.paused and connection is not None:
            self.paused = False
            connection.transport.resumeProducing()  # type: ignore[union-attr]

    def cancel(self) -> None:
        """Abandon the answer: its connection is aborted."""
        connection, self._connection = self._connection, None
        self._receiver = None
        self._done = True
        if connection is not None:
            connection.abandon_stream(self)

    def body(self, data: bytes) -> None:
        """A piece of the body arrived."""
        receiver = self._receiver
        if receiver is not None:
            receiver.body(data)
        elif not self._done:
            self._pending.append(data)

    def end(self) -> None:
        """The body is complete; the connection goes back to the pool."""
        self.resume()
        self._connection = None
        self._done = True
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.end()

    def fail(self, reason: Failure) -> None:
        """The connection was lost before the end of the body."""
        self._connection = None
        if self._done:
            return
        self._done = True
        self._failure = reason
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.fail(reason)


@implementer(IPushProducer)
class _UploadWriter:
    """Writes a streamed request body to the backend connection.

    Registered as the connection's producer: when its output buffer fills,
    the client's connection stops being read (L{RequestUpload.pause}).
    """

    __slots__ = ("_chunked", "_protocol", "_request", "_upload")

    def __init__(self, protocol: _HTTPClientProtocol, request: _Request) -> None:
        upload = request.upload
        assert upload is not None
        self._protocol = protocol
        self._request = request
        self._upload = upload
        self._chunked = upload.length is None
        protocol.transport.registerProducer(self, True)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        """Send a piece of the body, in a chunk when its length is unknown."""
        if not data or self._request.protocol is not self._protocol:
            return
        if self._chunked:
            data = b"".join((b"%x\r\n" % len(data), data, b"\r\n"))
        self._protocol.transport.write(data)  # type: ignore[union-attr]

    def finish(self) -> None:
        """The body is complete: end it; the connection may be reused."""
        request = self._request
        if request.protocol is self._protocol:
            transport: Any = self._protocol.transport
            if self._chunked:
                transport.write(b"0\r\n\r\n")
            transport.unregisterProducer()
        request.upload_done = True

    def pauseProducing(self) -> None:
        """The backend takes no more for now: stop reading the client."""
        self._upload.pause()

    def resumeProducing(self) -> None:
        """The backend took what was written: read the client again."""
        self._upload.resume()

    def stopProducing(self) -> None:
        """The backend connection is gone: the rest of the body is not wanted."""
        self._upload.stop()


class _TrailingData(Exception):
    """Bytes followed a complete response before any request asked for them."""


class _HTTPClientProtocol(Protocol):
    """One persistent HTTP/1.1 connection, carrying one request at a time."""

    _log = Logger()

    def __init__(self, host: _Host, request: _Request) -> None:
        self._host = host
        self._request: _Request | None = request
        """The request in flight, if any."""
        self._parser = HttpResponseParser(self)
        self._finished = False
        """The parser has seen the end of the current response."""
        self._keep_alive = False
        self._idle = False
        self._dead = False
        """Closing or closed: never to be reused."""
        self._reusable = True
        """False once the current answer makes the connection unfit for reuse."""
        self._head_size = 0
        """Bytes received for the current request while its head was incomplete."""
        self._held: bytearray | None = None
        """Reads held back from the parser until they end the head."""
        self._tail = b""
        """The last two bytes received while the head was incomplete."""

    # Connection events

    def connectionMade(self) -> None:
        """Set TCP_NODELAY (requests are written whole) and send the request."""
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            nodelay(True)
        host = self._host
        host.pool.connections_opened += 1
        host.connections.add(self)
        request = self._request
        assert request is not None
        host.connecting.discard(request)
        request.connector = None
        if request.cancelled or host.pool.closed:
            # The attempt was abandoned but connected anyway.
            self._request = None
            self._abort()
            if not request.deferred.called:
                request.deferred.errback(PoolClosedError())
            return
        request.protocol = self
        self._write(request)

    def send(self, request: _Request) -> None:
        """Send a request on this idle connection."""
        self._idle = False
        self._request = request
        request.protocol = self
        request.reused = True
        self._write(request)

    def _write(self, request: _Request) -> None:
        """Write the request: the head, then a long body as the shared object."""
        self._head_size = 0
        self._held = None
        self._reusable = True
        transport = self.transport
        write_now(transport, request.data)
        if request.payload:
            write_now(transport, request.payload)
        if request.upload is not None:
            request.upload.start(_UploadWriter(self, request))

    def dataReceived(self, data: bytes) -> None:
        """Parse response bytes; hand the response over once complete."""
        request = self._request
        if request is None:
            self._log.debug(
                "closing connection to {host}:{port}: bytes received with no "
                "request pending",
                host=self._host.host,
                port=self._host.port,
            )
            self._abort()
            return
        request.received = True
        if not request.code:
            # The head is incomplete: bound it, and keep its cost linear.
            size = self._head_size = self._head_size + len(data)
            held = self._held
            if held is not None:
                # The head ends with an empty line, maybe across reads.
                window = self._tail + data
                self._tail = window[-2:]
                held += data
                if (
                    len(held) < _FEED_BATCH
                    and b"\n\r\n" not in window
                    and b"\n\n" not in window
                ):
                    if size > MAX_RESPONSE_HEAD:
                        self._fail(request, _head_too_large())
                    return
                self._held = None
                data = bytes(held)
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as e:
            if not self._finished:
                self._request = None
                self._abort()
                cause = e.__context__
                if not isinstance(cause, ResponseError):
                    cause = ResponseError(
                        f"invalid HTTP response from "
                        f"{self._host.host}:{self._host.port}: {e!r}"
                    )
                if request.stream is not None:
                    request.stream.fail(Failure(cause))
                else:
                    request.deferred.errback(cause)
                return
            # A complete response followed by junk: deliver it, drop the
            # connection.
            self._keep_alive = False
        if not request.code and self._request is request:
            if self._head_size > MAX_RESPONSE_HEAD:
                self._fail(request, _head_too_large())
                return
            if self._held is None:
                self._held = bytearray()
                self._tail = data[-2:]
        if self._finished:
            self._finished = False
            upload = request.upload
            if upload is not None and not request.upload_done:
                # Answered before the whole body was sent: never reused.
                self._keep_alive = False
                upload.stop()
            self._request = None
            request.protocol = None
            stream = request.stream
            if stream is not None:
                # Resume before release: a paused idle connection would
                # never see its next answer.
                stream.resume()
            self._release(request)
            # Last: the callbacks may already reuse this connection.
            if stream is None:
                request.deliver()
            else:
                stream.end()
        elif (
            request.code
            and request.streaming
            and request.stream is None
            and self._request is request
        ):
            # The head is in, the body is not complete: stream the rest.
            request.deliver_head(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget the connection; finish, retry or fail its request."""
        self._dead = True
        host = self._host
        host.connections.discard(self)
        if self._idle:
            self._idle = False
            host.idle.remove(self)
        request = self._request
        self._request = None
        if request is not None and not request.cancelled:
            stream = request.stream
            if (
                request.code
                and not request.head
                and isinstance(reason.value, ConnectionDone)
                and request.is_close_delimited()
            ):
                request.protocol = None
                if stream is None:
                    request.deliver()
                else:
                    stream.end()
            elif stream is not None:
                request.protocol = None
                stream.fail(Failure(IncompleteResponseError(reason)))
            elif request.reused and not request.received and request.idempotent:
                host.pool._retry(request, reason)
            elif isinstance(reason.value, (TLSError, VerificationError)):
                request.deferred.errback(reason)
            else:
                request.deferred.errback(IncompleteResponseError(reason))
        host.pool._check_closed()

    # Pool management

    def _release(self, request: _Request) -> None:
        """After a complete response: back to the idle list, or close."""
        host = self._host
        if (
            self._keep_alive
            and not self._dead
            and not host.pool.closed
            and not _unsent(self.transport)
        ):
            idle = host.idle
            max_idle = host.max_idle
            # Under load keep as many idle as are busy: they will be needed
            # again at once; the surplus over max_idle is trimmed when unused.
            busy = len(host.connections) - len(idle) - 1
            if len(idle) < max_idle or len(idle) < busy:
                if len(idle) >= max_idle:
                    host.pool._watch_surplus()
                self._idle = True
                idle.append(self)
                return
        self._dead = True
        self.transport.loseConnection()  # type: ignore[union-attr]

    def retire(self) -> None:
        """Close this connection, already taken off the idle list."""
        self._idle = False
        self.close()

    def _fail(self, request: _Request, error: Exception) -> None:
        """Fail the request in flight and drop its connection."""
        self._request = None
        self._held = None
        self._abort()
        request.deferred.errback(error)

    def abandon_stream(self, stream: _AnswerStream) -> None:
        """A streamed answer was cancelled: drop the connection with it."""
        request = self._request
        if request is not None and request.stream is stream:
            request.cancelled = True
            self._request = None
            self._abort()

    def abandon(self, request: _Request) -> None:
        """The request was cancelled: drop the connection with it."""
        if self._request is request:
            self._request = None
            self._abort()

    def close(self) -> None:
        """Close an idle connection gracefully, abort a busy one."""
        if self._request is None:
            if not self._dead:
                self._dead = True
                self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self._abort()

    def _abort(self) -> None:
        """Close the connection now; it will never be reused."""
        if self._idle:
            self._idle = False
            self._host.idle.remove(self)
        if not self._dead:
            self._dead = True
            self.transport.abortConnection()  # type: ignore[union-attr]

    # httptools callbacks; they only run inside feed_data, with a request.

    def on_message_begin(self) -> None:
        """A response starts; one after a complete response is unexpected."""
        if self._finished:
            raise _TrailingData()

    def on_status(self, data: bytes) -> None:
        """Collect the reason phrase, which may come in pieces."""
        self._request.phrase += data  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect a header; httptools joins names and values split across reads."""
        request = self._request
        assert request is not None
        if not request.code:
            # Chunked trailers (code already set) are dropped.
            request.headers.append((name, value))
            if len(name) == 17 and name.lower() == b"transfer-encoding":
                if request.transfer_encoding is None:
                    request.transfer_encoding = []
                request.transfer_encoding.append(value)

    def on_headers_complete(self) -> None:
        """Skip interim responses, check the framing, finish bodyless answers.

        A connection that answered a C{HEAD}, or a 204/304 that announces a
        body, is not reused: a backend that wrongly sends that body could
        have it read as the answer to the next request.
        """
        request = self._request
        assert request is not None
        parser = self._parser
        code = parser.get_status_code()
        if not 100 <= code <= 599:
            raise ResponseError(f"invalid status code {code:03d}")
        if code < 200:
            if code == 101:
                raise ResponseError("101 Switching Protocols is not supported")
            # 100 Continue, 103 Early Hints...: wait for the final response.
            request.phrase = b""
            request.headers.clear()
            request.transfer_encoding = None
            return
        request.code = code
        if request.head:
            self._finished = True
            self._keep_alive = False
        elif code == 204 or code == 304:
            self._reusable = not request.announces_body()
        elif request.transfer_encoding is not None:
            request.check_framing()

    def on_body(self, data: bytes) -> None:
        """Collect (or drop) a piece of the decoded body."""
        if self._finished:
            raise _TrailingData()
        request = self._request
        assert request is not None
        stream = request.stream
        if stream is not None:
            # Passed on even when dropped: the receiver sees the body move.
            stream.body(data)
        elif request.keep_body:
            request.body.append(data)

    def on_message_complete(self) -> None:
        """The final response is complete (interim ones are skipped)."""
        request = self._request
        assert request is not None
        if self._finished or not request.code:
            return
        self._finished = True
        self._keep_alive = self._reusable and self._parser.should_keep_alive()


def _head_too_large() -> ResponseError:
    return ResponseError(
        f"response status line and headers larger than {MAX_RESPONSE_HEAD} bytes"
    )


class _ConnectionFactory(ClientFactory):
    """Builds the connection for one connection attempt made for a request."""

    noisy = False

    def __init__(self, host: _Host, request: _Request) -> None:
        self._host = host
        self._request = request

    def buildProtocol(self, addr: IAddress | None) -> _HTTPClientProtocol:
        """The connection that will send the request."""
        return _HTTPClientProtocol(self._host, self._request)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """Fail the request with the reason (refused, DNS lookup, timeout...)."""
        request = self._request
        self._host.connecting.discard(request)
        request.connector = None
        if not request.cancelled and not request.deferred.called:
            request.deferred.errback(reason)
        self._host.pool._check_closed()


class _Host:
    """The connections to one (scheme, host, port)."""

    __slots__ = (
        "allowances",
        "connecting",
        "connections",
        "host",
        "idle",
        "idle_low_water",
        "max_idle",
        "pool",
        "port",
        "tls",
    )

    def __init__(
        self,
        pool: HTTPClientPool,
        host: str,
        port: int,
        tls: IOpenSSLClientConnectionCreator | None,
    ) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.tls = tls
        self.idle: list[_HTTPClientProtocol] = []
        """Connections waiting for a request, most recently used last."""
        self.connections: set[_HTTPClientProtocol] = set()
        """Every open connection, idle or busy."""
        self.connecting: set[_Request] = set()
        """Requests waiting for a new connection."""
        self.allowances: list[int] = []
        """The counts of the idle allowances standing for this host."""
        self.max_idle = 0
        """Idle connections kept for good: the largest allowance, or none."""
        self.idle_low_water = 0
        """The fewest idle connections seen since the last surplus check."""

    def take_idle(self) -> _HTTPClientProtocol:
        """The most recently used idle connection (there must be one)."""
        connection = self.idle.pop()
        if len(self.idle) < self.idle_low_water:
            self.idle_low_water = len(self.idle)
        return connection

    def trim_surplus(self) -> bool:
        """Close idle connections above C{max_idle} unused since the last check.

        Returns whether a surplus remains to be watched.
        """
        unused = max(min(len(self.idle) - self.max_idle, self.idle_low_water), 0)
        retired, self.idle[:unused] = self.idle[:unused], []
        for connection in retired:
            connection.retire()
        self.idle_low_water = len(self.idle)
        return len(self.idle) > self.max_idle

    def allow(self, count: int) -> None:
        """Register an allowance of C{count} idle connections."""
        self.allowances.append(count)
        self.max_idle = max(self.max_idle, count)

    def withdraw(self, count: int) -> None:
        """Withdraw an allowance; a surplus it leaves is trimmed when unused."""
        self.allowances.remove(count)
        self.max_idle = max(self.allowances, default=0)
        if len(self.idle) > self.max_idle:
            self.pool._watch_surplus()

    def stop_connecting(self, request: _Request) -> None:
        """Abandon the connection attempt made for C{request}, if any."""
        self.connecting.discard(request)
        connector = request.connector
        request.connector = None
        if connector is not None:
            with suppress(NotConnectingError):
                connector.stopConnecting()
        self.pool._check_closed()


@define(eq=False)
class IdleAllowance:
    """Idle connections to one host that a user of the pool asks to keep.

    Standing from L{HTTPClientPool.allow_idle} until L{withdraw}.
    """

    _host: _Host
    count: int
    """How many idle connections to keep."""
    withdrawn: bool = False

    def withdraw(self) -> None:
        """Take the allowance back (again: nothing); the host may keep fewer."""
        if not self.withdrawn:
            self.withdrawn = True
            self._host.withdraw(self.count)


class HTTPClientPool:
    """One shared pool of persistent HTTP/1.1 connections, keyed by Target.

    Connections are pooled by (scheme, host, port).  A request takes the most
    recently used idle connection, or opens a new one: the number of busy
    connections is not bounded here, callers bound their concurrency.  How
    many connections stay open when idle is up to the L{allow_idle}
    allowances standing for the host.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        *,
        tls_context_factory: TLSContextFactory | None = None,
        connect_timeout: float = 30,
    ) -> None:
        """
        @param reactor: Provides L{IReactorTCP} and L{IReactorTime}.
        @param tls_context_factory: Builds the TLS settings for C{https}
            targets, once per backend; by default L{client_tls}, from the
            target's L{TLSSettings}.
        @param connect_timeout: Seconds to wait for a TCP connection.
        """
        self._reactor = reactor
        self._clock = IReactorTime(reactor)
        self._tls_context_factory: TLSContextFactory = tls_context_factory or client_tls
        self._connect_timeout = connect_timeout
        self._hosts: dict[tuple[str, str, int, TLSSettings], _Host] = {}
        self._close_waiters: list[Deferred[None]] = []
        self.closed = False
        """C{close} was called: no new request or connection."""
        self.connections_opened = 0
        """How many connections were ever established."""
        self._surplus_check: LoopingCall | None = None

    def request(
        self,
        target: Target,
        method: bytes,
        uri: bytes,
        headers: Headers,
        body: bytes,
        *,
        keep_body: bool = True,
        stream: bool = False,
        zero_length: bool = False,
        upload: RequestUpload | None = None,
    ) -> Deferred[ProxyResponse]:
        """Send one request to C{target} and fire with the complete response.

        C{headers} are sent in order, exactly as given, after C{Host}; they
        must not contain C{Host}, C{Content-Length} or hop-by-hop headers.
        With C{keep_body} false the response body is read and dropped.  With
        C{stream}, an answer whose body is not complete when its head is in
        fires the Deferred with that head (and the body so far), the rest
        coming through the response's C{stream} (L{AnswerStream}); a complete
        answer fires whole, as without.  C{zero_length} sends
        C{Content-Length: 0} with an empty body whatever the method (the
        client sent it).  C{upload} streams a request body after the head
        (with its C{Content-Length}, or chunked when it has none): such a
        request is never sent twice.  After
        the response, the connection goes back to the idle list unless that
        already holds as many connections to the same host as the largest
        L{allow_idle} allowance for it (and fewer are busy).

        An idempotent request (L{IDEMPOTENT_METHODS}) sent on a reused
        connection that is lost before any response byte arrives is retried
        once on a new connection: this is usually the backend closing an idle
        keep-alive connection (or restarting) just as the request was sent.
        Other requests (C{POST}, C{PATCH}...) fail instead: the backend may
        have acted on them, and must not act twice.

        Fails with L{ResponseError} (L{IncompleteResponseError} when the
        connection was lost) or with the connection error
        (C{ConnectionRefusedError}, C{ConnectError}, C{DNSLookupError}, an
        C{OpenSSL.SSL.Error}...).  Cancelling aborts the connection.
        """
        if self.closed:
            return fail(PoolClosedError())
        host = self._hosts.get(target.pool_key)
        if host is None:
            host = self._add_host(target)
        parts = [method, b" ", target.path_prefix, uri, b" HTTP/1.1\r\nHost: "]
        parts.append(target.host_header)
        extend = parts.extend
        for name, value in headers:
            extend((b"\r\n", name, b": ", value))
        payload = b""
        if upload is not None:
            if upload.length is None:
                parts.append(b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            else:
                parts.append(b"\r\nContent-Length: %d\r\n\r\n" % upload.length)
        elif body or zero_length or method in _BODY_METHODS:
            parts.append(b"\r\nContent-Length: %d\r\n\r\n" % len(body))
            if len(body) < _JOIN_BELOW:
                parts.append(body)
            else:
                payload = body
        else:
            parts.append(b"\r\n\r\n")
        request = _Request(
            host, b"".join(parts), payload, method, keep_body, stream, upload
        )
        if host.idle:
            host.take_idle().send(request)
        else:
            self._connect(host, request)
        return request.deferred

    def allow_idle(self, target: Target, count: int) -> IdleAllowance:
        """Keep up to C{count} idle connections to C{target}'s host.

        Until the allowance is withdrawn, connections to C{target}'s (scheme,
        host, port) go back to the idle list after their response while it
        holds fewer than the largest allowance standing for that host.  With
        none, a connection stays open only while as many others are busy;
        idle connections over the largest allowance (one was withdrawn, or
        under load) are closed once unused for L{SURPLUS_IDLE_TIMEOUT}.
        """
        host = self._hosts.get(target.pool_key)
        if host is None:
            host = self._add_host(target)
        host.allow(count)
        return IdleAllowance(host, count)

    def idle_limit(self, target: Target) -> int:
        """Idle connections kept for C{target}'s host: its largest allowance."""
        host = self._hosts.get(target.pool_key)
        return 0 if host is None else host.max_idle

    def idle_count(self, target: Target) -> int:
        """Idle connections to C{target}'s (scheme, host, port)."""
        host = self._hosts.get(target.pool_key)
        return 0 if host is None else len(host.idle)

    def busy_count(self, target: Target) -> int:
        """Connections (or connection attempts) to C{target} carrying a request."""
        host = self._hosts.get(target.pool_key)
        if host is None:
            return 0
        return len(host.connections) - len(host.idle) + len(host.connecting)

    def close(self) -> Deferred[None]:
        """Close every connection; fires once all of them are closed.

        Idle connections are closed gracefully, busy ones aborted: their
        requests fail with L{IncompleteResponseError}.  Requests still waiting
        for a connection fail with L{PoolClosedError}.
        """
        self.closed = True
        if self._surplus_check is not None:
            self._surplus_check.stop()
            self._surplus_check = None
        for host in self._hosts.values():
            for request in list(host.connecting):
                host.connecting.discard(request)
                if not request.deferred.called:
                    request.deferred.errback(PoolClosedError())
                host.stop_connecting(request)
            for protocol in list(host.connections):
                protocol.close()
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        self._check_closed()
        return waiter

    def _watch_surplus(self) -> None:
        """Check every L{SURPLUS_IDLE_TIMEOUT} for idle connections to close."""
        if self._surplus_check is None:
            check = self._surplus_check = LoopingCall(self._trim_surplus)
            check.clock = self._clock
            check.start(SURPLUS_IDLE_TIMEOUT, now=False)

    def _trim_surplus(self) -> None:
        remaining = [host.trim_surplus() for host in self._hosts.values()]
        if not any(remaining) and self._surplus_check is not None:
            self._surplus_check.stop()
            self._surplus_check = None

    def _retry(self, request: _Request, reason: Failure) -> None:
        """Send C{request} again on a new connection (see L{request})."""
        if self.closed:
            request.deferred.errback(IncompleteResponseError(reason))
            return
        request.reused = False
        request.protocol = None
        self._connect(request.host, request)

    def _check_closed(self) -> None:
        """Fire the C{close} Deferreds once nothing is left open."""
        if not self._close_waiters:
            return
        for host in self._hosts.values():
            if host.connections or host.connecting:
                return
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _add_host(self, target: Target) -> _Host:
        """Set up the pool for a new (scheme, host, port)."""
        tls = None
        if target.scheme == "https":
            tls = self._tls_context_factory(target)
        host = self._hosts[target.pool_key] = _Host(self, target.host, target.port, tls)
        return host

    def _connect(self, host: _Host, request: _Request) -> None:
        """Open a new connection that will carry C{request}."""
        factory: ClientFactory[Any] = _ConnectionFactory(host, request)
        if host.tls is not None:
            factory = TLSMemoryBIOFactory(host.tls, True, factory, self._clock)
        host.connecting.add(request)
        connector = self._reactor.connectTCP(
            host.host, host.port, factory, timeout=self._connect_timeout
        )
        if request in host.connecting:
            request.connector = connector
