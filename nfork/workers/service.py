"""The parent's service for its worker processes (C{--workers N})."""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from nfork.control.controller import Controller
from nfork.workers.cluster import Cluster
from nfork.workers.merge import WorkerFigures


def exit_with(reactor: Any, status: int) -> None:
    """Stop the reactor (services stop as usual), then exit with C{status}.

    twistd itself always exits 0 after a stop.
    """

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    reactor.addSystemEventTrigger("after", "shutdown", leave)
    if reactor.running:
        reactor.stop()
    else:
        reactor.callWhenRunning(reactor.stop)


class WorkersService(Service):
    """Starts the worker processes once the inbounds' addresses are reserved;
    drains them on stop.  A worker that cannot be kept running makes the
    parent exit with status 1."""

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        controller: Controller,
        count: int,
        drain_timeout: float,
        argv: list[str] | None = None,
    ) -> None:
        self._reactor = reactor
        self.drain_timeout = drain_timeout
        self.figures = WorkerFigures(controller)
        """The workers' snapshots summed into the parent's stats."""
        self.cluster = Cluster(
            reactor,
            count,
            controller,
            on_fatal=self._fatal,
            on_snapshots=self.figures.apply,
            argv=argv,
        )
        controller.compare_reset_hooks.append(self.cluster.reset_compare)
        self.ready = False
        """True once every worker has applied the configuration, until stopping."""
        self._failed = False

    def startService(self) -> None:
        """Start the workers; ready once all listen."""
        super().startService()
        self.cluster.start().addCallback(self._ready)

    def _ready(self, _: object) -> None:
        self.ready = True

    def stopService(self) -> Deferred[None]:
        """Drain every worker (up to the drain timeout, then SIGKILL)."""
        self.ready = False
        super().stopService()
        return Deferred.fromCoroutine(self.cluster.stop(self.drain_timeout))

    def _fatal(self, reason: str) -> None:
        if self._failed:
            return
        self._failed = True
        self._log.critical("{reason}: nfork stops (exit status 1)", reason=reason)
        self.cluster.kill()
        exit_with(self._reactor, 1)
