"""The parent's worker processes: one configuration for all, and their figures.

The parent's L{Controller} holds the configuration; L{Cluster.apply} makes
every worker apply it (all or none: the workers that applied a change that
another refused get the previous configuration back), a worker that starts
or restarts gets the current one before it listens, and every second each
worker's L{Snapshot} is collected and handed to C{on_snapshots} (which sums
them into the parent's stats, L{nfork.workers.merge}).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ConnectionClosed, ProcessDone, ProcessTerminated
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from nfork.config import InboundConfig
from nfork.config.load import dump_config
from nfork.control.controller import Controller
from nfork.workers.protocol import Configure, ResetCompare, Snapshot
from nfork.workers.supervisor import SupervisedWorker

POLL_INTERVAL = 1.0
"""Seconds between two collections of the workers' snapshots."""
APPLY_TIMEOUT = 30.0
"""Seconds a worker has to apply a configuration."""
SNAPSHOT_TIMEOUT = 5.0


class WorkersError(Exception):
    """A worker could not apply a configuration; the message says which and why."""


@frozen
class _State:
    """The desired state sent with L{Configure}."""

    configs: str
    listen: str

    def arguments(self) -> dict[str, str]:
        return {"configs": self.configs, "listen": self.listen}


def _gone(failure: Failure) -> bool:
    """The worker died meanwhile: it gets the current state when it restarts."""
    return (
        failure.check(ProcessDone, ProcessTerminated, ConnectionClosed, ConnectionError)
        is not None
    )


class Cluster:
    """N worker processes that apply the parent controller's configuration.

    @param on_fatal: called with the reason when a worker cannot be kept
        running; the parent then exits with status 1.
    @param on_snapshots: called after each collection with every live
        worker's snapshot (L{nfork.workers.merge.snapshot}).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        count: int,
        controller: Controller,
        on_fatal: Callable[[str], None],
        on_snapshots: Callable[[list[dict[str, Any]]], object] | None = None,
        argv: list[str] | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._reactor = reactor
        self._controller = controller
        self._on_snapshots = on_snapshots
        self._poll_interval = poll_interval
        self._state = self._encode(controller.configs())
        self._announced: set[str] = set()
        self.workers = [
            SupervisedWorker(reactor, index, self._configure_new, on_fatal, argv)
            for index in range(1, count + 1)
        ]
        self.snapshots: dict[int, dict[str, Any]] = {}
        """The last snapshot of each live worker, by index."""
        self._poller = LoopingCall(self._poll)
        self._poller.clock = reactor
        self._polling: Deferred[Any] | None = None
        self._ready: Deferred[None] = Deferred()

    # -- life --------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Start every worker; fires once all have applied the configuration."""
        self._state = self._encode(self._controller.configs())
        for worker in self.workers:
            worker.start()
        self._ready.addCallback(self._started)
        return self._ready

    def _started(self, _: object) -> None:
        self._announce()
        self._log.info("{count} worker processes ready", count=len(self.workers))
        self._poller.start(self._poll_interval, now=False)

    async def stop(self, timeout: float) -> None:
        """Drain every worker (up to C{timeout}, then SIGKILL) and wait for them."""
        if self._poller.running:
            self._poller.stop()
        await DeferredList(
            [worker.stop(timeout) for worker in self.workers], consumeErrors=True
        )

    def kill(self) -> None:
        """SIGKILL every worker (the parent gives up)."""
        for worker in self.workers:
            worker.stopping = True
            worker.kill()

    # -- configuration -------------------------------------------------------

    def _encode(self, configs: Iterable[InboundConfig]) -> _State:
        configs = tuple(configs)
        listen: dict[str, tuple[str, int]] = {}
        for config in configs:
            address: Any = self._controller.inbound(config.name).port.getHost()
            listen[config.name] = (address.host, address.port)
        return _State(dump_config(configs), json.dumps(listen))

    def _configure_new(self, worker: SupervisedWorker) -> Deferred[None]:
        """Bring a new worker process to the current state (it may change meanwhile)."""

        async def configure() -> None:
            while True:
                state = self._state
                await worker.call(Configure, **state.arguments()).addTimeout(
                    APPLY_TIMEOUT, self._reactor
                )
                if state == self._state:
                    break
            worker.ready = True
            if not self._ready.called and all(w.ready for w in self.workers):
                self._ready.callback(None)

        return Deferred.fromCoroutine(configure())

    async def apply(self, configs: Iterable[InboundConfig]) -> None:
        """Make every live worker apply C{configs}; all or none.

        @raise WorkersError: a worker refused or did not answer in time; the
            workers that applied C{configs} were given the previous state.
        """
        previous = self._state
        self._state = state = self._encode(configs)
        if state == previous:
            return
        targets = [worker for worker in self.workers if worker.alive]
        results = await self._send(targets, state)
        failures = [
            (worker, failure)
            for worker, (ok, failure) in zip(targets, results, strict=True)
            if not ok and not _gone(failure)
        ]
        if not failures:
            self._log.info(
                "{count} worker processes applied the configuration",
                count=len(targets),
            )
            self._announce()
            return
        self._state = previous
        applied = [
            worker for worker, (ok, _) in zip(targets, results, strict=True) if ok
        ]
        for worker, (ok, failure) in zip(
            applied, await self._send(applied, previous), strict=True
        ):
            if not ok and not _gone(failure):
                self._log.error(
                    "worker {index} could not take the previous configuration back: "
                    "{error}; restarting it",
                    index=worker.index,
                    error=failure.getErrorMessage(),
                )
                worker.kill()
        raise WorkersError(
            "; ".join(
                f"worker {worker.index}: {failure.getErrorMessage()}"
                for worker, failure in failures
            )
        )

    async def _send(
        self, targets: list[SupervisedWorker], state: _State
    ) -> list[tuple[bool, Any]]:
        calls = [
            worker.call(Configure, **state.arguments()).addTimeout(
                APPLY_TIMEOUT, self._reactor
            )
            for worker in targets
        ]
        results: list[tuple[bool, Any]] = await DeferredList(calls, consumeErrors=True)
        return results

    def _announce(self) -> None:
        """Log the "listening" line of each inbound new to the workers."""
        names = {config.name for config in self._controller.configs()}
        for name in names - self._announced:
            self._controller.announce(name)
        self._announced = names

    def reset_compare(self, inbound: str) -> None:
        """Reset an inbound's comparison in every live worker."""
        for worker in self.workers:
            if worker.alive:
                worker.call(ResetCompare, inbound=inbound).addErrback(
                    self._not_reset, worker.index
                )

    def _not_reset(self, failure: Failure, index: int) -> None:
        self._log.warn(
            "worker {index}: comparison not reset: {error}",
            index=index,
            error=failure.getErrorMessage(),
        )

    # -- figures -------------------------------------------------------------

    def _poll(self) -> Deferred[None] | None:
        if self._polling is not None:
            return None  # the previous collection is still under way
        self._polling = Deferred.fromCoroutine(self._collect())
        self._polling.addErrback(lambda f: self._log.failure("collecting snapshots", f))
        self._polling.addBoth(self._collected)
        return None

    def _collected(self, _: object) -> None:
        self._polling = None

    async def _collect(self) -> None:
        targets = [worker for worker in self.workers if worker.alive]
        calls = [
            worker.call(Snapshot).addTimeout(SNAPSHOT_TIMEOUT, self._reactor)
            for worker in targets
        ]
        results = await DeferredList(calls, consumeErrors=True)
        snapshots: dict[int, dict[str, Any]] = {}
        for worker, (ok, answer) in zip(targets, results, strict=True):
            if ok and worker.alive:
                snapshots[worker.index] = json.loads(answer["snapshot"])
        self.snapshots = snapshots
        if self._on_snapshots is not None:
            self._on_snapshots(list(snapshots.values()))

    def describe(self) -> list[dict[str, Any]]:
        """Each worker's index, pid, liveness, restarts and requests received."""
        return [
            {
                "index": worker.index,
                "pid": worker.pid,
                "alive": worker.alive,
                "restarts": worker.restarts,
                "requests": self.snapshots.get(worker.index, {}).get("requests", 0),
            }
            for worker in self.workers
        ]
