"""A worker process: the data path of every inbound, configured by the parent.

Run as C{python -m nfork.workers.child} by the parent (L{nfork.workers.
supervisor}), with C{NFORK_WORKER} set to its index.  It talks AMP
(L{nfork.workers.protocol}) on its standard input and output, logs to its
standard error (each line prefixed C{worker K:}), listens with
C{SO_REUSEPORT} on the addresses the parent reserved, and exits when the
parent says (L{Drain}) or goes away (end of its standard input).  Signals
are the parent's business: the worker ignores SIGTERM, SIGHUP and SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.internet.stdio import StandardIO
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsText,
    globalLogBeginner,
)
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import provider

from nfork.config import InboundConfig, load_config
from nfork.control.controller import Controller
from nfork.control.reload import apply_configs
from nfork.proxy.server import InboundServerFactory
from nfork.workers.listening import listen_reuseport
from nfork.workers.merge import snapshot
from nfork.workers.protocol import (
    Configure,
    Drain,
    ResetCompare,
    Snapshot,
    WorkerError,
)

WORKER_ENV = "NFORK_WORKER"
"""The environment variable holding a worker's index (1..N)."""

_EXIT_DELAY = 0.1
"""Seconds between answering L{Drain} and exiting, for the answer to leave."""


def worker_index() -> int | None:
    """This process's worker index, or None outside a worker process."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value else None


def prefixed_observer(index: int, out: TextIO) -> ILogObserver:
    """A log observer writing C{worker K: ...} lines (info and above) to C{out}."""

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        text = eventAsText(event, includeTimestamp=True, includeSystem=False)
        if not text:
            return
        out.write("".join(f"worker {index}: {line}\n" for line in text.splitlines()))
        out.flush()

    return FilteringLogObserver(
        observe, [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)]
    )


class Worker:
    """The worker's state: its controller and the addresses it listens on."""

    _log = Logger()

    def __init__(self, reactor: Any, index: int) -> None:
        self._reactor = reactor
        self.index = index
        self._listen: dict[str, tuple[str, int]] = {}
        self._bound: dict[str, tuple[str, int]] = {}
        # The parent logs each inbound's "listening" line once all listen.
        self.controller = Controller(reactor, listener=self._listen_on, announce=False)

    async def _listen_on(
        self, config: InboundConfig, factory: InboundServerFactory
    ) -> Any:
        host, port = self._listen[config.name]
        return listen_reuseport(self._reactor, host, port, factory)

    async def configure(self, configs: str, listen: str) -> None:
        """Make the running inbounds match C{configs} on the C{listen} addresses.

        @raise WorkerError: an inbound could not be applied.
        """
        wanted = load_config(configs)
        addresses = {
            name: (str(host), int(port))
            for name, (host, port) in json.loads(listen).items()
        }
        # An inbound whose reserved address changed (a port 0 reserved again)
        # listens anew even if its configuration is the same.
        for config in self.controller.configs():
            if self._bound.get(config.name) != addresses.get(config.name):
                await self.controller.remove_inbound(config.name)
        self._listen = addresses
        result = await apply_configs(self.controller, wanted)
        self._bound = {
            config.name: addresses[config.name] for config in self.controller.configs()
        }
        self._log.info(
            "configured: inbounds {inbounds}",
            inbounds=", ".join(f"{n} on {h}:{p}" for n, (h, p) in self._bound.items())
            or "none",
        )
        if result.failed:
            raise WorkerError(
                f"worker {self.index}: inbound {', '.join(result.failed)} not "
                "applied (the worker's log says why)"
            )

    def snapshot(self) -> str:
        """The worker's figures as JSON text (L{nfork.workers.merge.snapshot})."""
        return json.dumps(snapshot(self.controller, self.index), separators=(",", ":"))

    def reset_compare(self, inbound: str) -> None:
        """Reset an inbound's comparison; L{WorkerError} if it compares nothing."""
        try:
            self.controller.reset_compare(inbound)
        except LookupError as e:
            raise WorkerError(str(e)) from None

    async def drain(self, timeout: float) -> None:
        """Stop every inbound (copies in flight get C{timeout}), then exit."""
        self._log.info("draining (up to {timeout}s), then exiting", timeout=timeout)
        await self.controller.stop(timeout)
        self._reactor.callLater(_EXIT_DELAY, self._reactor.stop)

    def parent_gone(self) -> None:
        """The parent closed the channel: nobody is in charge, stop now."""
        if self._reactor.running:
            self._reactor.stop()


class WorkerProtocol(amp.AMP):
    """The worker's end of the AMP channel."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._worker = worker

    @Configure.responder
    def configure(self, configs: str, listen: str) -> Deferred[dict[str, Any]]:
        d = Deferred.fromCoroutine(self._worker.configure(configs, listen))
        return d.addCallback(lambda _: {})

    @Snapshot.responder
    def snapshot(self) -> dict[str, Any]:
        return {"snapshot": self._worker.snapshot()}

    @ResetCompare.responder
    def reset_compare(self, inbound: str) -> dict[str, Any]:
        self._worker.reset_compare(inbound)
        return {}

    @Drain.responder
    def drain(self, timeout: float) -> Deferred[dict[str, Any]]:
        d = Deferred.fromCoroutine(self._worker.drain(timeout))
        return d.addCallback(lambda _: {})

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._worker.parent_gone()


def main() -> None:
    """Run a worker process until the parent stops it."""
    index = worker_index()
    if index is None:
        sys.exit(f"nfork worker: {WORKER_ENV} is not set (the parent sets it)")
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    globalLogBeginner.beginLoggingTo(
        [prefixed_observer(index, sys.stderr)], redirectStandardIO=False
    )
    from twisted.internet import reactor

    from nfork.app.gctuning import tune_gc

    tune_gc(reactor)
    worker = Worker(reactor, index)
    StandardIO(WorkerProtocol(worker), reactor=reactor)
    running: Any = reactor  # IReactorCore.run does not declare the argument
    running.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
