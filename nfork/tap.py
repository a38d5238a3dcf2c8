"""twistd plugin entry: command-line options and the service they build."""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage

from nfork.config import ConfigError, InboundConfig, load_config_file
from nfork.controller import Controller
from nfork.demo import demo_backends, demo_config, demo_instructions
from nfork.durations import parse_duration


class Options(usage.Options):
    """Options of C{twistd nfork}."""

    synopsis = "[--config FILE | --demo]"
    longdesc = (
        "nfork forks every HTTP request of an inbound to several outbound "
        "backends and answers the client with the active one's response. "
        "The config file is a JSON array of inbounds, gonfork's format."
    )
    optParameters = [
        ["config", "c", None, "Path of the JSON configuration file."],
        [
            "drain-timeout",
            None,
            "10s",
            "On SIGTERM, how long requests in flight may take to finish "
            "(a duration such as 10s).",
        ],
    ]
    optFlags = [
        [
            "demo",
            None,
            "Run the embedded demo: three loopback backends and an inbound.",
        ],
    ]

    inbounds: tuple[InboundConfig, ...] = ()
    drain_timeout = 10.0

    def postOptions(self) -> None:
        """Load and validate the configuration before anything starts."""
        try:
            self.drain_timeout = parse_duration(self["drain-timeout"])
        except ValueError as e:
            raise usage.UsageError(f"--drain-timeout: {e}") from None
        if self["demo"] and self["config"]:
            raise usage.UsageError("--demo and --config cannot be used together")
        if self["demo"]:
            self.inbounds = demo_config()
            return
        if not self["config"]:
            raise usage.UsageError("--config FILE is required (or --demo)")
        try:
            self.inbounds = load_config_file(self["config"])
        except ConfigError as e:
            # A clear message and a non-zero exit, without twistd's usage dump.
            sys.stderr.write(f"nfork: invalid configuration: {e}\n")
            raise SystemExit(1) from None


class InboundsService(Service):
    """Starts the configured inbounds through the controller, stops them all."""

    _log = Logger()

    def __init__(
        self,
        controller: Controller,
        inbounds: tuple[InboundConfig, ...],
        drain_timeout: float = 10.0,
    ) -> None:
        self.controller = controller
        self.inbounds = inbounds
        self.drain_timeout = drain_timeout

    def startService(self) -> None:
        """Listen on every inbound; a failure to listen aborts the start."""
        super().startService()
        for config in self.inbounds:
            started = Deferred.fromCoroutine(self.controller.add_inbound(config))
            failures: list[Any] = []
            started.addErrback(failures.append)
            if failures:
                self._log.critical(
                    "cannot start inbound {name}: {error}",
                    name=config.name,
                    error=failures[0].getErrorMessage(),
                )
                failures[0].raiseException()

    def stopService(self) -> Deferred[None]:
        """Stop listening, let copies in flight finish, close the pool."""
        super().stopService()
        return Deferred.fromCoroutine(self.controller.stop(self.drain_timeout))


class TerminationService(Service):
    """Makes SIGTERM a clean shutdown: drain, then exit with status 0.

    The reactor's own handler would stop the same way but make twistd end by
    re-raising the signal; a supervisor expects status 0 from a clean stop.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        signal.signal(signal.SIGTERM, self._received)

    def _received(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._terminate)

    def _terminate(self) -> None:
        self._log.info("SIGTERM received: draining requests in flight, then exiting")
        if self._reactor.running:
            self._reactor.stop()


class _Announcement(Service):
    """Logs the demo's instructions once everything listens."""

    _log = Logger()

    def __init__(self, text: str) -> None:
        self.text = text

    def startService(self) -> None:
        super().startService()
        for line in self.text.splitlines():
            self._log.info("{line}", line=line)


def makeService(options: Options, reactor: Any = None) -> IService:
    """Build the nfork service tree from parsed options."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    root = MultiService()
    if options["demo"]:
        demo_backends(reactor).setServiceParent(root)
    controller = Controller(reactor)
    InboundsService(
        controller, options.inbounds, options.drain_timeout
    ).setServiceParent(root)
    TerminationService(reactor).setServiceParent(root)
    if options["demo"]:
        _Announcement(demo_instructions(None)).setServiceParent(root)
    return root
