"""One worker process, kept alive: spawned, watched, restarted with backoff.

The parent talks AMP (L{nfork.workers.protocol}) to the worker over its
standard input and output; the worker's standard error is the parent's, so
its log lines (prefixed C{worker K:}) land in the same log.  A worker that
dies is started again after 1 s, then 2, 4, ... up to 30 s while it keeps
dying; more than L{MAX_DEATHS} deaths within L{DEATH_PERIOD} seconds, or a
death before the first worker process was ever ready, is fatal: the parent
cannot serve, and says why.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from nfork.workers.child import WORKER_ENV
from nfork.workers.protocol import Drain

MAX_DEATHS = 5
"""More deaths than this within L{DEATH_PERIOD}: the parent gives up."""
DEATH_PERIOD = 60.0
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
KILL_GRACE = 2.0
"""Seconds a draining worker gets beyond the drain timeout before SIGKILL."""


@define
class RestartPolicy:
    """When to start a dead worker again, and when to give up."""

    deaths: list[float] = field(factory=list)
    """When the worker died, within the last L{DEATH_PERIOD} seconds."""

    def died(self, now: float) -> float | None:
        """Record a death; the delay before the restart, or None: give up."""
        self.deaths = [t for t in self.deaths if now - t < DEATH_PERIOD]
        self.deaths.append(now)
        if len(self.deaths) > MAX_DEATHS:
            return None
        delay: float = FIRST_DELAY * 2 ** (len(self.deaths) - 1)
        return min(MAX_DELAY, delay)


@define(eq=False)
class _StdinTransport:
    """AMP's transport: writes go to the worker's standard input."""

    process: Any

    def write(self, data: bytes) -> None:
        self.process.writeToChild(0, data)

    def writeSequence(self, sequence: list[bytes]) -> None:
        for data in sequence:
            self.process.writeToChild(0, data)

    def loseConnection(self) -> None:
        self.process.loseConnection()

    def getPeer(self) -> None:
        return None

    def getHost(self) -> None:
        return None


class _Channel(ProcessProtocol):
    """A worker process's protocol: its standard output feeds the AMP protocol."""

    def __init__(self, worker: SupervisedWorker) -> None:
        self.worker = worker
        self.amp = amp.AMP()

    def connectionMade(self) -> None:
        self.amp.makeConnection(_StdinTransport(self.transport))
        self.worker._started(self)

    def outReceived(self, data: bytes) -> None:
        self.amp.dataReceived(data)

    def processEnded(self, reason: Failure) -> None:
        # The worker learns first, so that it reports the death itself rather
        # than the commands the death failed.
        self.worker._ended(self, reason)
        self.amp.connectionLost(reason)


def worker_environment(index: int) -> dict[str, str]:
    """The environment of worker C{index}: the parent's, its index, its path."""
    path = os.pathsep.join(entry for entry in sys.path if entry)
    return {**os.environ, WORKER_ENV: str(index), "PYTHONPATH": path}


class SupervisedWorker:
    """Worker process number C{index} (1..N) and its restarts.

    @param on_started: called with this worker once a new process runs; it
        configures the process, which is ready when its Deferred fires.
    @param on_fatal: called with the reason when the worker cannot be kept
        running (see the module).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        index: int,
        on_started: Callable[[SupervisedWorker], Deferred[None]],
        on_fatal: Callable[[str], None],
        argv: list[str] | None = None,
    ) -> None:
        self._reactor = reactor
        self.index = index
        self._on_started = on_started
        self._on_fatal = on_fatal
        self._argv = argv or [sys.executable, "-m", "nfork.workers.child"]
        self._policy = RestartPolicy()
        self._channel: _Channel | None = None
        self._restart: Any = None
        self._stopped: Deferred[None] | None = None
        self.pid: int | None = None
        self.restarts = 0
        self.ready = False
        """The current process has applied the configuration."""
        self.ever_ready = False
        self.stopping = False

    @property
    def alive(self) -> bool:
        """A process runs and has applied the configuration."""
        return self._channel is not None and self.ready

    def start(self) -> None:
        """Spawn the worker process."""
        self._restart = None
        channel = _Channel(self)
        self._reactor.spawnProcess(
            channel,
            self._argv[0],
            self._argv,
            env=worker_environment(self.index),
            childFDs={0: "w", 1: "r", 2: 2},
        )

    def call(self, command: type[amp.Command], **arguments: Any) -> Deferred[Any]:
        """Send C{command} to the current process (fails if there is none)."""
        if self._channel is None:
            return Deferred.fromCoroutine(_no_process(self.index))
        answer: Deferred[Any] = self._channel.amp.callRemote(command, **arguments)
        return answer

    def stop(self, timeout: float) -> Deferred[None]:
        """Drain the worker (L{Drain}), SIGKILL it after C{timeout} + 2 s."""
        self.stopping = True
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
            self._restart = None
        if self._channel is None:
            return succeed(None)
        self._stopped = Deferred()
        self.call(Drain, timeout=timeout).addErrback(lambda _: None)
        killer = self._reactor.callLater(timeout + KILL_GRACE, self._kill)
        stopped = self._stopped

        def cancel_kill(result: None) -> None:
            if killer.active():
                killer.cancel()
            return result

        return stopped.addBoth(cancel_kill)

    def kill(self) -> None:
        """SIGKILL the current process, if any."""
        if self._channel is not None:
            transport: Any = self._channel.transport
            with suppress(ProcessExitedAlready):
                transport.signalProcess("KILL")

    def _kill(self) -> None:
        """The drain took too long."""
        if self._channel is not None:
            self._log.warn(
                "worker {index} (pid {pid}) still running: killing it",
                index=self.index,
                pid=self.pid,
            )
            self.kill()

    # -- process events ------------------------------------------------------

    def _started(self, channel: _Channel) -> None:
        self._channel = channel
        transport: Any = channel.transport
        self.pid = transport.pid
        self.ready = False
        self._log.info(
            "worker {index} started (pid {pid})", index=self.index, pid=self.pid
        )
        self._on_started(self).addCallbacks(self._configured, self._not_configured)

    def _configured(self, _: object) -> None:
        self.ready = True
        self.ever_ready = True

    def _not_configured(self, failure: Failure) -> None:
        if self.stopping or self._channel is None or failure.check(ProcessTerminated):
            return  # a death is reported by _ended
        if not self.ever_ready:
            self._on_fatal(
                f"worker {self.index} could not apply the configuration: "
                f"{failure.getErrorMessage()}"
            )
            return
        self._log.error(
            "worker {index} (pid {pid}) could not apply the configuration: "
            "{error}; restarting it",
            index=self.index,
            pid=self.pid,
            error=failure.getErrorMessage(),
        )
        self.kill()

    def _ended(self, channel: _Channel, reason: Failure) -> None:
        pid = self.pid
        self._channel = None
        self.ready = False
        if self.stopping:
            self._log.info(
                "worker {index} (pid {pid}) stopped", index=self.index, pid=pid
            )
            if self._stopped is not None:
                self._stopped.callback(None)
            return
        how = _how_it_ended(reason)
        if not self.ever_ready:
            self._on_fatal(f"worker {self.index} (pid {pid}) {how} before it was ready")
            return
        delay = self._policy.died(self._reactor.seconds())
        if delay is None:
            self._on_fatal(
                f"worker {self.index} (pid {pid}) {how}: more than {MAX_DEATHS} "
                f"deaths within {DEATH_PERIOD:g}s"
            )
            return
        self._log.error(
            "worker {index} (pid {pid}) {how}; restarting it in {delay:g}s",
            index=self.index,
            pid=pid,
            how=how,
            delay=delay,
        )
        self._restart = self._reactor.callLater(delay, self._respawn)

    def _respawn(self) -> None:
        self.restarts += 1
        self.start()


async def _no_process(index: int) -> Any:
    raise ConnectionError(f"worker {index} has no running process")


def _how_it_ended(reason: Failure) -> str:
    """C{exited with status 3}, C{was killed by signal 9}, ..."""
    if reason.check(ProcessDone):
        return "exited with status 0"
    status = getattr(reason.value, "exitCode", None)
    signal = getattr(reason.value, "signal", None)
    if signal is not None:
        return f"was killed by signal {signal}"
    return f"exited with status {status}"
