"""The configuration file that C{--persist} rewrites: atomically, off the reactor."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool

from nfork.config import InboundConfig, dump_config

Writer = Callable[[str, str], None]
"""Writes a text to a path: L{write_file_atomically} or a test double."""

Runner = Callable[[Writer, str, str], Deferred[None]]
"""Runs a blocking L{Writer} somewhere (a thread) and says when it is done."""


def write_file_atomically(path: str, text: str) -> None:
    """Replace the file at C{path} with C{text} (UTF-8), atomically and durably.

    The text goes to a temporary file in the same directory, which is
    flushed, fsynced, given the old file's permissions and renamed over
    C{path}; the directory is then fsynced so that the rename survives a
    crash.  A reader sees the old file or the new one, never a mix.  When
    C{path} is a symbolic link, the file it points to is replaced.

    @raise OSError: the file is left unchanged (the temporary file removed).
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def run_inline(writer: Writer, path: str, text: str) -> Deferred[None]:
    """Run C{writer} at once, in the calling thread (for tests)."""
    return maybeDeferred(writer, path, text)


def in_thread_pool(reactor: Any) -> Runner:
    """Run writers in the reactor's thread pool: disk I/O never blocks it."""
    return partial(deferToThreadPool, reactor, reactor.getThreadPool())


@frozen
class ConfigFile:
    """The configuration file that C{--persist} rewrites after each change."""

    path: str
    run: Runner = run_inline
    """How to run the blocking write (L{in_thread_pool} in the service)."""
    writer: Writer = write_file_atomically

    def save(self, configs: Iterable[InboundConfig]) -> Deferred[None]:
        """Write C{configs} in the configuration file's format."""
        return self.run(self.writer, self.path, dump_config(configs))
