"""The request copy an inbound hands to its outbounds, and what comes back."""

from __future__ import annotations

from typing import Protocol

from attrs import frozen
from twisted.python.failure import Failure

Headers = tuple[tuple[bytes, bytes], ...]
"""Raw header lines in arrival order; names keep their original case."""


class UploadWriter(Protocol):
    """Where a streamed request body goes: the connection to the outbound."""

    def write(self, data: bytes) -> None:
        """Send the next piece of the body."""

    def finish(self) -> None:
        """The body is complete."""


class RequestUpload(Protocol):
    """A request body larger than C{mirrorBody}, read from the client as sent.

    Only the active outbound gets it, once: it cannot be sent again.
    """

    @property
    def length(self) -> int | None:
        """The body's C{Content-Length}; None when the client chunks it."""

    def start(self, writer: UploadWriter) -> None:
        """Deliver the body to C{writer}: what was read so far, then the rest."""

    def pause(self) -> None:
        """Stop reading the client: the outbound takes no more for now."""

    def resume(self) -> None:
        """Read the client again."""

    def stop(self) -> None:
        """The outbound wants no more of the body (it answered or failed)."""


@frozen
class ProxyRequest:
    """One client request, ready to be copied to every outbound.

    The headers are already cleaned for forwarding: hop-by-hop headers and
    C{Host} removed, C{X-Nfork} and C{X-Forwarded-*} added.  Each outbound
    adds its own C{Host} and C{Content-Length}.
    """

    method: bytes
    uri: bytes
    """Path and query string exactly as the client sent them."""
    headers: Headers
    body: bytes
    client: str = ""
    """The client's address, for sinks that record traffic."""
    received: float = 0.0
    """Reactor time at which the request was received."""
    zero_length: bool = False
    """The client sent C{Content-Length: 0} with an empty body: forwarded as
    sent, even for methods that carry no body (C{DELETE}, C{GET})."""
    upload: RequestUpload | None = None
    """A body over C{mirrorBody}, streamed (C{body} is then empty)."""
    answer: CapturedAnswer | None = None
    """The active outbound's answer, for a sink that records answers
    (C{"answers": true}); None otherwise."""


@frozen
class CapturedAnswer:
    """An outbound's answer as kept to compare or record it.

    The body is kept up to a limit (the inbound's C{compare.maxBody}); past
    it, C{body} holds the first bytes, C{length} counts them all and
    C{digest} is the SHA-256 of the whole body, so two long bodies can still
    be compared.  A copy that got no answer has C{code} 0 and C{error} says
    why: C{"timeout"}, C{"error"} or C{"dropped"}.
    """

    code: int
    headers: Headers
    body: bytes
    length: int = 0
    """Bytes of body received, kept or not."""
    digest: bytes | None = None
    """SHA-256 of the whole body when it was longer than the limit."""
    error: str | None = None
    """Why there is no answer (C{code} is then 0)."""

    @property
    def truncated(self) -> bool:
        """Whether only the first part of the body was kept."""
        return self.length > len(self.body)


class CopyDropped(Exception):
    """An outbound shed a copy on purpose (a full buffer, too many in flight).

    The copy is counted as C{dropped} in the outbound's stats, not as an error.
    """


class AnswerReceiver(Protocol):
    """Where the rest of a streamed answer's body goes, as it arrives."""

    def body(self, data: bytes) -> None:
        """The next piece of the (de-chunked) body."""

    def end(self) -> None:
        """The body is complete."""

    def fail(self, reason: Failure) -> None:
        """The body could not be read to its end (the connection was lost)."""


class AnswerStream(Protocol):
    """The rest of an answer whose head came before its body was complete.

    Nothing is delivered until L{start}; then every piece goes to the
    receiver as it arrives, and exactly one of C{end} or C{fail} follows
    (neither after L{cancel}).
    """

    def start(self, receiver: AnswerReceiver) -> None:
        """Deliver the rest of the body to C{receiver}."""

    def pause(self) -> None:
        """Stop reading the body (the receiver cannot keep up)."""

    def resume(self) -> None:
        """Read the body again."""

    def cancel(self) -> None:
        """Abandon the body and its connection."""


@frozen
class ProxyResponse:
    """An outbound's answer.

    C{headers} are as the backend sent them (hop-by-hop ones included); the
    inbound filters them before answering the client.  C{body} is empty when
    the caller asked for the body to be discarded.  A streamed answer
    (C{stream} set) carries in C{body} only what had arrived with its head;
    the rest comes through C{stream}.
    """

    code: int
    phrase: bytes
    headers: Headers
    body: bytes
    stream: AnswerStream | None = None
    """The rest of the body, when the answer is streamed."""
