"""The C{file://} sink: request copies appended to a JSON-lines file.

Writing never blocks the reactor: L{FileSink.send} only encodes the record
and appends it to a buffer in memory.  The buffer is written out at most
C{flush_interval} (1 s) after its first line, at once when it holds
C{flush_bytes}, and on L{FileSink.close}.  The write itself, with rotation,
runs in a thread of the reactor's pool (one write at a time per sink): a
write usually takes microseconds, but a full or slow disk, a network file
system or a rotation can stall it for much longer, and the reactor must go
on serving the active outbound meanwhile.

What a copy counts as in the outbound's stats:

  - C{delivered}: the line is in the buffer.  It stays there until it is
    written: a failed write is retried every C{retry_interval} with the
    lines it did not write, so a full disk loses nothing while nfork runs.
    Lines still unwritten when the sink closes are lost, and logged.
  - C{errors}: the copy was refused because the file is failing (the last
    attempt to open or write it failed): nothing is buffered while the
    disk is full or the file unwritable.
  - C{dropped}: C{bufferLines} lines were already waiting to be written.

A failure is logged once, not per copy; the same error is logged again at
most once a minute, and the recovery once, with the number of copies
refused meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import unquote

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from nfork.outbounds.api import (
    ConfigError,
    CopyDropped,
    IOutbound,
    IOutboundFactory,
    IOutboundValidator,
    OutboundConfig,
    OutboundContext,
    ProxyRequest,
    ProxyResponse,
    check_option_names,
    integer_option,
)
from nfork.outbounds.sinks import SinkClosed
from nfork.outbounds.sinks.records import ANSWERS_OPTION, answers_option, encode_record

__all__ = [
    "DEFAULT_BACKUPS",
    "DEFAULT_BUFFER_LINES",
    "FILE_MODE",
    "MAX_BACKUPS",
    "MAX_BUFFER_LINES",
    "MAX_FILE_BYTES",
    "WORKER_ENV",
    "FileSink",
    "FileSinkFactory",
    "OutsideSinkDir",
    "RotatingFile",
    "SinkUnavailable",
    "WriteFailed",
    "check_sink_dir",
    "sink_path",
    "worker_file_path",
]

_T = TypeVar("_T")

DEFAULT_BACKUPS = 5
"""Rotated files kept (C{traffic.jsonl.1} ... C{.5}) when C{maxBytes} is set."""
DEFAULT_BUFFER_LINES = 10_000
"""Lines waiting to be written beyond which new copies are dropped."""
FLUSH_INTERVAL = 1.0
"""Seconds a line may wait in memory before it is written."""
FLUSH_BYTES = 256 * 1024
"""Buffered bytes that are written at once, without waiting."""
LOG_INTERVAL = 60.0
"""Seconds before the same write error is logged again."""
FILE_MODE = 0o600
"""Permissions of a sink file nfork creates: it holds recorded requests,
credentials included, for nfork's user only."""
MAX_BUFFER_LINES = 1_000_000
"""The largest C{bufferLines}: the lines wait in memory."""
MAX_BACKUPS = 1000
"""The largest C{backups}: a rotation renames each of them."""
MAX_FILE_BYTES = 1024**4
"""The largest C{maxBytes} (1 TiB)."""

WORKER_ENV = "NFORK_WORKER"
"""The environment variable holding a worker process's index (1..N)."""

BlockingRunner = Callable[..., Deferred[Any]]
"""Runs C{f(*args)} away from the reactor: C{run(f, *args) -> Deferred}."""


class SinkUnavailable(Exception):
    """The sink refused a copy: its file cannot be written at the moment."""


class OutsideSinkDir(Exception):
    """A sink file asked for through the control API is not allowed where it is."""


class WriteFailed(Exception):
    """A write stopped with an error after C{written} whole lines."""

    def __init__(self, written: int, error: OSError) -> None:
        super().__init__(written, error)
        self.written = written
        self.error = error


@define
class RotatingFile:
    """An append-only file of lines, rotated by size; blocking, for a thread.

    With C{max_bytes} set, a line that would take the file past it starts
    a new file first: C{path} becomes C{path.1}, C{path.1} becomes
    C{path.2}, and so on up to C{path.<backups>}, the oldest, which is
    replaced.  With no backups the full file is simply removed.  Lines are
    never split between files.  If the file is moved or deleted from
    outside (logrotate), the next write creates it again.
    """

    path: str
    max_bytes: int = 0
    """Size in bytes a file does not grow past; 0: no rotation."""
    backups: int = DEFAULT_BACKUPS
    _fd: int | None = field(default=None, init=False)
    _inode: tuple[int, int] | None = field(default=None, init=False)
    _size: int = field(default=0, init=False)

    def open(self) -> None:
        """Open (or create) the file, if not open; check it is still ours."""
        if self._fd is not None:
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                info = None
            if info is not None and (info.st_dev, info.st_ino) == self._inode:
                return
            self.close()
        fd = os.open(
            self.path,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
            FILE_MODE,
        )
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise IsADirectoryError(0, "not a regular file", self.path)
            size = info.st_size
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._inode = (info.st_dev, info.st_ino)
        self._size = size
        try:
            if size and not self._ends_with_newline():
                # The end of a line cut short (a full disk, a crash): end it,
                # so that the next record starts on a line of its own.
                self._write(b"\n")
        except OSError:
            self._abandon()
            raise

    def _ends_with_newline(self) -> bool:
        reader = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(reader, 1, self._size - 1) == b"\n"
        finally:
            os.close(reader)

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Append C{lines} (each ending in C{\\n}), rotating as needed.

        @raise WriteFailed: with the number of lines entirely written.
        """
        written = 0
        try:
            self.open()
            batch: list[bytes] = []
            batch_size = 0
            for line in lines:
                if (
                    self.max_bytes
                    and self._size + batch_size > 0
                    and self._size + batch_size + len(line) > self.max_bytes
                ):
                    written += self._write_batch(batch)
                    batch, batch_size = [], 0
                    self._rotate()
                batch.append(line)
                batch_size += len(line)
            written += self._write_batch(batch)
        except WriteFailed as e:
            self._abandon()
            raise WriteFailed(written + e.written, e.error) from e.error
        except OSError as e:
            self._abandon()
            raise WriteFailed(written, e) from e

    def _write_batch(self, batch: list[bytes]) -> int:
        """Write whole lines; on error, say how many got entirely written."""
        start = self._size
        try:
            self._write(b"".join(batch))
        except OSError as e:
            done = self._size - start
            whole = 0
            for line in batch:
                if done < len(line):
                    break
                done -= len(line)
                whole += 1
            raise WriteFailed(whole, e) from e
        return len(batch)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            count = os.write(self._fd, view)
            self._size += count
            view = view[count:]

    def _rotate(self) -> None:
        """Move the full file to C{path.1} (and older ones up), start anew."""
        self.close()
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.remove(self.path)
        self.open()

    def _abandon(self) -> None:
        """Forget the file after an error: the next write opens it again."""
        with contextlib.suppress(OSError):
            self.close()

    def close(self) -> None:
        """Close the file, if open."""
        fd, self._fd, self._inode = self._fd, None, None
        if fd is not None:
            os.close(fd)


def _inline(f: Callable[..., _T], *args: Any) -> Deferred[_T]:
    """Run C{f} right away (for reactors without threads, and tests)."""
    return maybeDeferred(f, *args)


def thread_runner(reactor: Any) -> BlockingRunner:
    """Run blocking calls in C{reactor}'s thread pool (inline without one)."""
    if IReactorThreads.providedBy(reactor):
        return partial(deferToThreadPool, reactor, reactor.getThreadPool())
    return _inline


@implementer(IOutbound)
class FileSink:
    """Appends a JSON record of every copy to a file (see the module doc)."""

    gives_response = False
    _log = Logger()

    def __init__(
        self,
        *,
        name: str,
        inbound: str,
        writer: RotatingFile,
        clock: IReactorTime,
        run: BlockingRunner = _inline,
        buffer_lines: int = DEFAULT_BUFFER_LINES,
        flush_interval: float = FLUSH_INTERVAL,
        flush_bytes: int = FLUSH_BYTES,
        retry_interval: float = FLUSH_INTERVAL,
        records_answers: bool = False,
    ) -> None:
        self.name = name
        self.records_answers = records_answers
        """Whether records carry the active outbound's answer (C{"answers"})."""
        self.inbound = inbound
        self.path = writer.path
        self._writer = writer
        self._clock = clock
        self._run = run
        self._buffer_lines = buffer_lines
        self._flush_interval = flush_interval
        self._flush_bytes = flush_bytes
        self._retry_interval = retry_interval
        self._lines: list[bytes] = []
        self._bytes = 0
        self._timer: IDelayedCall | None = None
        self._writing: Deferred[None] | None = None
        self._again = False
        self._closed = False
        self.failure: str | None = None
        """Why the file cannot be written, while copies are refused."""
        self.refused = 0
        """Copies refused because the file was failing, since creation."""
        self.lost = 0
        """Lines accepted but never written (the file still failed at close)."""
        self._refused_since = 0
        self._logged: tuple[str, float] | None = None
        self._recovering = False
        self._attempt(None)

    @property
    def buffered(self) -> int:
        """Lines waiting to be written."""
        return len(self._lines)

    def send(
        self, request: ProxyRequest, keep_body: bool
    ) -> Deferred[ProxyResponse | None]:
        """Buffer the copy's record; fires at once (see the module doc)."""
        if self._closed:
            return fail(SinkClosed(f"file sink {self.name} is closed"))
        if self.failure is not None:
            self.refused += 1
            self._refused_since += 1
            return fail(SinkUnavailable(f"cannot write {self.path}: {self.failure}"))
        if len(self._lines) >= self._buffer_lines:
            return fail(
                CopyDropped(f"{len(self._lines)} lines already waiting for the disk")
            )
        line = encode_record(request, self.inbound, self.name)
        self._lines.append(line)
        self._bytes += len(line)
        if self._bytes >= self._flush_bytes:
            self._flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(self._flush_interval, self._flush)
        return succeed(None)

    def _flush(self) -> None:
        """Write out the buffer (after the current write, if one is running)."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            self._again = True
            return
        if not self._lines:
            if self.failure is not None:
                self._attempt(None)
            return
        lines, self._lines, self._bytes = self._lines, [], 0
        self._attempt(lines)

    def _attempt(self, lines: list[bytes] | None) -> None:
        """Write C{lines} (or, with None, just open the file) in the runner."""
        if lines is None:
            writing = self._run(self._writer.open)
        else:
            writing = self._run(self._writer.write_lines, lines)
        self._writing = writing
        writing.addCallbacks(
            self._succeeded,
            self._failed,
            callbackArgs=(lines is not None,),
            errbackArgs=(lines or [],),
        )

    def _succeeded(self, result: object, wrote: bool) -> None:
        self._writing = None
        if self.failure is not None:
            self.failure = None
            self._recovering = True
        if wrote and self._recovering:
            self._recovering = False
            self._log.info(
                "file sink {name}: writing to {path} again "
                "({refused} copies refused meanwhile)",
                name=self.name,
                path=self.path,
                refused=self._refused_since,
            )
            self._refused_since = 0
            self._logged = None
        self._next()

    def _failed(self, reason: Failure, lines: Sequence[bytes]) -> None:
        self._writing = None
        error: BaseException | None = reason.value
        written = 0
        if isinstance(error, WriteFailed):
            written, error = error.written, error.error
        elif not isinstance(error, OSError):
            self._log.failure(
                "file sink {name}: unexpected error writing {path}",
                reason,
                name=self.name,
                path=self.path,
            )
        rest = list(lines[written:])
        if rest:
            # Put them back in front, in order: they are retried first.
            self._lines[:0] = rest
            self._bytes += sum(len(line) for line in rest)
        text = str(error) or type(error).__name__
        self.failure = text
        now = self._clock.seconds()
        if (
            self._logged is None
            or self._logged[0] != text
            or now - self._logged[1] >= LOG_INTERVAL
        ):
            self._logged = (text, now)
            self._log.error(
                "file sink {name}: cannot write {path}: {error}; {waiting} lines "
                "kept to retry, new copies refused (counted as errors) until a "
                "write succeeds",
                name=self.name,
                path=self.path,
                error=text,
                waiting=len(self._lines),
            )
        if not self._closed and self._timer is None:
            self._timer = self._clock.callLater(self._retry_interval, self._flush)

    def _next(self) -> None:
        """After a write: write again now if asked to, else when due."""
        if self._closed:
            return
        if self._again or self._bytes >= self._flush_bytes:
            self._again = False
            self._flush()
        elif self._lines and self._timer is None:
            self._timer = self._clock.callLater(self._flush_interval, self._flush)

    def close(self) -> Deferred[None]:
        """Write what is buffered (one last attempt), then close the file."""
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while self._writing is not None:
            await self._writing
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._lines:
            lines, self._lines, self._bytes = self._lines, [], 0
            try:
                await self._run(self._writer.write_lines, lines)
            except WriteFailed as e:
                self.lost += len(lines) - e.written
                self._log.error(
                    "file sink {name}: {lost} lines lost: cannot write {path}: {error}",
                    name=self.name,
                    lost=len(lines) - e.written,
                    path=self.path,
                    error=str(e.error),
                )
        try:
            await self._run(self._writer.close)
        except OSError as e:
            self._log.warn(
                "file sink {name}: closing {path}: {error}",
                name=self.name,
                path=self.path,
                error=str(e),
            )


def sink_path(config: OutboundConfig) -> str:
    """The local path a C{file:///path} address names, percent-decoded.

    @raise ConfigError: if the address is not C{file:///absolute/path}.
    """
    address = config.address
    raw = address.raw
    if address.host not in ("", "localhost") or address.port:
        raise ConfigError(
            f'expected "file:///absolute/path", got "{raw}" (a file:// '
            "address names a local file: three slashes)",
            key="addr",
        )
    if "?" in raw or "#" in raw:
        raise ConfigError(
            f'a file address cannot have a query or a fragment: "{raw}"',
            key="addr",
        )
    path = unquote(address.path_prefix)
    if not path.startswith("/") or path.endswith("/") or "\x00" in path:
        raise ConfigError(
            f'expected "file:///absolute/path/to/file.jsonl", got "{raw}"',
            key="addr",
        )
    return path


def worker_file_path(path: str, worker: str | None) -> str:
    """The file worker C{worker} writes for the sink file C{path}.

    With several worker processes each one writes its own file, so that
    lines are never interleaved or torn: the worker's index goes before the
    suffix (C{traffic.jsonl} -> C{traffic.w1.jsonl}, C{traffic} ->
    C{traffic.w1}).  Without a worker (a single process) the path is
    unchanged.
    """
    if not worker:
        return path
    directory, name = os.path.split(path)
    stem, suffix = os.path.splitext(name)
    return os.path.join(directory, f"{stem}.w{worker}{suffix}")


def check_sink_dir(path: str, sink_dir: str) -> None:
    """Refuse a sink file C{path} that is not inside C{sink_dir}; blocking.

    For sinks created through the control API: C{path} must be written
    plainly (no C{.} or C{..} segment, no C{//}) and lie under C{sink_dir}
    (as given, or as its symbolic links resolve); from there down, no
    existing segment may be a symbolic link, and an existing file must be a
    regular one.  Rotation then only renames or removes files of that
    directory.  Reads the file system: call it in a thread.

    @raise OutsideSinkDir: saying why.
    """
    if os.path.normpath(path) != path or path.startswith("//"):
        raise OutsideSinkDir(
            f"{path} is not a plain absolute path (no '.', '..' or '//' segments)"
        )
    given = os.path.normpath(os.path.abspath(sink_dir))
    real = os.path.realpath(given)
    relative: str | None = None
    for root in (given, real):
        prefix = root.rstrip("/") + "/"
        if path.startswith(prefix) and len(path) > len(prefix):
            relative = path[len(prefix) :]
            break
    if relative is None:
        raise OutsideSinkDir(f"{path} is not inside the sink directory {given}")
    _check_below(path, real, relative)
    # With --workers, worker k writes <stem>.w<k><suffix> next to it: the
    # same rules hold for those files.
    directory, name = os.path.split(relative)
    stem, suffix = os.path.splitext(name)
    pattern = re.compile(rf"{re.escape(stem)}\.w[0-9]+{re.escape(suffix)}")
    try:
        siblings = os.listdir(os.path.join(real, directory))
    except OSError:
        return  # no directory yet, or not one: checked above
    for sibling in sorted(siblings):
        if pattern.fullmatch(sibling):
            worker_path = os.path.join(os.path.dirname(path), sibling)
            _check_below(worker_path, real, os.path.join(directory, sibling))


def _check_below(path: str, real: str, relative: str) -> None:
    """No segment of C{relative} under C{real} is a link; the file is regular."""
    current = real
    for segment in relative.split("/"):
        current = os.path.join(current, segment)
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return  # created on the first write, inside the directory
        except OSError as e:
            raise OutsideSinkDir(f"cannot check {path}: {e.strerror or e}") from None
        if stat.S_ISLNK(info.st_mode):
            raise OutsideSinkDir(
                f"{path} goes through a symbolic link ({current}): not followed"
            )
    if not stat.S_ISREG(info.st_mode):
        raise OutsideSinkDir(f"{path} exists and is not a regular file")


@implementer(IOutboundFactory, IOutboundValidator)
@frozen
class FileSinkFactory:
    """Builds L{FileSink}s for C{file:///path} addresses.

    Options: C{maxBytes} (rotate before a file grows past it; 0, the
    default: never; at most 1 TiB), C{backups} (rotated files kept, default
    5, at most 1000) and C{bufferLines} (lines waiting for the disk beyond
    which copies are dropped, default 10000, at most 1000000) and
    C{answers} (true: record the active outbound's answer with each request;
    default false).
    """

    scheme: str = "file"
    gives_response: bool = False

    def validate(self, config: OutboundConfig) -> None:
        """Check the address (an absolute local path) and the options."""
        sink_path(config)
        check_option_names(
            config, ("maxBytes", "backups", "bufferLines", ANSWERS_OPTION)
        )
        answers_option(config)
        integer_option(config, "maxBytes", 0, maximum=MAX_FILE_BYTES)
        integer_option(config, "backups", DEFAULT_BACKUPS, maximum=MAX_BACKUPS)
        integer_option(
            config,
            "bufferLines",
            DEFAULT_BUFFER_LINES,
            minimum=1,
            maximum=MAX_BUFFER_LINES,
        )

    def build(self, config: OutboundConfig, context: OutboundContext) -> IOutbound:
        """A sink writing to the file, in the reactor's thread pool."""
        writer = RotatingFile(
            worker_file_path(sink_path(config), os.environ.get(WORKER_ENV)),
            max_bytes=integer_option(config, "maxBytes", 0),
            backups=integer_option(config, "backups", DEFAULT_BACKUPS),
        )
        return FileSink(
            name=config.name,
            inbound=context.inbound,
            writer=writer,
            clock=context.reactor,
            run=thread_runner(context.reactor),
            buffer_lines=integer_option(config, "bufferLines", DEFAULT_BUFFER_LINES),
            records_answers=answers_option(config),
        )
