"""Signals of a running nfork: SIGTERM drains and exits 0, SIGHUP reloads."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger


class SignalService(Service):
    """SIGTERM: a clean shutdown (drain, then exit 0); SIGHUP: reload.

    The reactor's own SIGTERM handler would stop the same way but make
    twistd end by re-raising the signal; a supervisor expects status 0 from
    a clean stop.  SIGHUP reloads the configuration file, when there is one.
    """

    _log = Logger()

    def __init__(
        self, reactor: Any, reload: Callable[[], object] | None = None
    ) -> None:
        self._reactor = reactor
        self._reload = reload
        self._previous: dict[int, Any] = {}
        self._stopping = False

    def startService(self) -> None:
        # Installed at once, so that a signal arriving between the first
        # inbound listening and the reactor running is not lost (SIGHUP's
        # default action would kill the process), and again once the reactor
        # runs, because the reactor installs its own SIGTERM handler then.
        super().startService()
        self._install()
        self._reactor.callWhenRunning(self._install)

    def stopService(self) -> None:
        """Put back the handlers found when the service started."""
        super().stopService()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _install(self) -> None:
        self._handle(signal.SIGTERM, self._received)
        if self._reload is not None:
            self._handle(signal.SIGHUP, self._hangup)

    def _handle(self, signum: int, handler: Callable[[int, Any], None]) -> None:
        previous = signal.signal(signum, handler)
        self._previous.setdefault(signum, previous)

    def _received(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._terminate)

    def _hangup(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._reload_now)

    def _reload_now(self) -> None:
        assert self._reload is not None
        self._log.info("SIGHUP received: reloading the configuration file")
        self._reload()

    def _terminate(self) -> None:
        if self._stopping:
            # A second SIGTERM (a supervisor signalling the whole process
            # group, an impatient operator): the drain is already under way.
            self._log.info("SIGTERM received again: still draining")
            return
        self._log.info("SIGTERM received: draining requests in flight, then exiting")
        if self._reactor.running:
            self._stopping = True
            self._reactor.stop()
