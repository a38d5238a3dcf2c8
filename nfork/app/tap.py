"""twistd plugin entry: command-line options and the service they build."""

from __future__ import annotations

import ipaddress
import os
import shlex
import stat
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site
from zope.interface import implementer

from nfork.app.demo import demo_backends, demo_config, demo_instructions
from nfork.app.gctuning import tune_gc
from nfork.app.signals import SignalService
from nfork.config import ConfigError, InboundConfig, load_config_file
from nfork.config.addresses import listen_key, listen_to_endpoint
from nfork.config.durations import parse_duration
from nfork.control.api import ControlAPI, ControlHosts, ControlSite
from nfork.control.changes import Changes
from nfork.control.configfile import ConfigFile, in_thread_pool
from nfork.control.controller import Controller
from nfork.control.klog import LogRing, LogRingService
from nfork.outbounds.registry import check_inbounds
from nfork.workers.listening import reserve_port
from nfork.workers.service import WorkersService

DEFAULT_CONTROL = "127.0.0.1:9090"
"""Where the control API listens by default: loopback only."""
MIN_TOKEN_BYTES = 16
"""The shortest control API token accepted."""


class Options(usage.Options):
    """Options of C{twistd nfork}."""

    synopsis = (
        "[--config FILE | --demo] [--control ADDR] [--control-allow-host NAME]... "
        "[--sink-dir DIR] [--persist] [--workers N|auto]"
    )
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
        [
            "control",
            None,
            DEFAULT_CONTROL,
            "Where the control API (REST, /metrics, /healthz, /debug) listens: "
            'the forms of an inbound\'s "listen"; "none" disables it.',
        ],
        [
            "control-token-file",
            None,
            None,
            "File holding the token every control API route but /healthz and "
            "/metrics requires (Authorization: Bearer TOKEN): at least 16 "
            "bytes, readable by nfork's user only (chmod 600).",
        ],
        [
            "sink-dir",
            None,
            None,
            "Directory where file:// sinks created through the control API "
            "may write; without it, the API refuses them (403).",
        ],
        [
            "workers",
            None,
            "1",
            "Worker processes forwarding the traffic (auto: one per CPU); with "
            "more than 1, this process keeps the control API, the stats and "
            "the configuration and forwards nothing.",
        ],
    ]
    optFlags = [
        [
            "demo",
            None,
            "Run the embedded demo: three loopback backends and an inbound.",
        ],
        [
            "persist",
            None,
            "Rewrite the --config file (atomically) after each change made "
            "through the control API, so that a restart keeps it.",
        ],
    ]

    inbounds: tuple[InboundConfig, ...] = ()
    drain_timeout = 10.0
    control: str | None = DEFAULT_CONTROL
    """The control API's listen address, or None when disabled."""
    token: str | None = None
    """The control API's token, read from --control-token-file."""
    sink_dir: str | None = None
    """--sink-dir, absolute."""
    workers = 1
    """--workers, as a number."""

    def __init__(self) -> None:
        super().__init__()
        self["control-allow-host"] = []
        self.hosts = ControlHosts()
        """The control API's names (C{--control-allow-host}), for its Host rule."""

    def opt_control_allow_host(self, name: str) -> None:
        """A name (NAME or NAME:PORT) the control API also answers to; repeatable."""
        self["control-allow-host"].append(name)

    def postOptions(self) -> None:
        """Load and validate the configuration before anything starts."""
        try:
            self.drain_timeout = parse_duration(self["drain-timeout"])
        except ValueError as e:
            raise usage.UsageError(f"--drain-timeout: {e}") from None
        self.workers = parse_workers(self["workers"])
        if self["demo"] and self["config"]:
            raise usage.UsageError("--demo and --config cannot be used together")
        self._control_options()
        if self["demo"]:
            self.inbounds = demo_config()
            return
        if not self["config"]:
            raise usage.UsageError("--config FILE is required (or --demo)")
        try:
            self.inbounds = load_config_file(self["config"])
            # Unknown schemes, sinks as active, plugins' options: builds nothing.
            check_inbounds(self.inbounds)
        except ConfigError as e:
            # A clear message and a non-zero exit, without twistd's usage dump.
            sys.stderr.write(f"nfork: invalid configuration: {e}\n")
            raise SystemExit(1) from None

    def _control_options(self) -> None:
        """Check --control, read --control-token-file, check --persist."""
        control = self["control"]
        if control.strip().lower() == "none":
            self.control = None
        else:
            try:
                listen_to_endpoint(control)
            except ValueError as e:
                raise usage.UsageError(f"--control: {e}") from None
            self.control = control
        try:
            self.hosts = ControlHosts.from_names(self["control-allow-host"])
        except ValueError as e:
            raise usage.UsageError(f"--control-allow-host: {e}") from None
        path = self["control-token-file"]
        if path is not None:
            self.token = read_token(path)
        sink_dir = self["sink-dir"]
        if sink_dir is not None:
            if not os.path.isdir(sink_dir):
                raise usage.UsageError(f"--sink-dir: {sink_dir} is not a directory")
            self.sink_dir = os.path.abspath(sink_dir)
        if self["persist"]:
            if not self["config"]:
                raise usage.UsageError("--persist needs --config FILE to rewrite")
            if self.control is None:
                raise usage.UsageError(
                    "--persist saves changes made through the control API: "
                    "it cannot be used with --control none"
                )


def parse_workers(value: str) -> int:
    """C{--workers}: a positive number, or C{auto} for the number of CPUs."""
    if value.strip().lower() == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise usage.UsageError(
            f"--workers: expected a number of processes (1 or more) or auto, "
            f"not {value!r}"
        )
    return count


def read_token(path: str) -> str:
    """The control API token in the file at C{path}, without surrounding spaces.

    Like an ssh private key, the file must be for nfork's user alone (no
    permission for group or others), and the token long enough not to be
    guessed.

    @raise usage.UsageError: if the file cannot be read, is open to others,
        or holds no token or a short one.
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except OSError as e:
        raise usage.UsageError(
            f"--control-token-file: cannot read {path}: {e.strerror or e}"
        ) from None
    if mode & 0o077:
        raise usage.UsageError(
            f"--control-token-file: {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); make it private: "
            f"chmod 600 {shlex.quote(path)}"
        )
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise usage.UsageError(
            f"--control-token-file: {path} is not UTF-8 text"
        ) from None
    if not token:
        raise usage.UsageError(f"--control-token-file: {path} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise usage.UsageError(
            f"--control-token-file: the token in {path} must be one line without spaces"
        )
    size = len(token.encode())
    if size < MIN_TOKEN_BYTES:
        raise usage.UsageError(
            f"--control-token-file: the token in {path} is {size} bytes long; "
            f"at least {MIN_TOKEN_BYTES} are required (e.g. openssl rand -hex 32)"
        )
    return token


def is_loopback(listen: str) -> bool:
    """Whether C{listen} binds only loopback (or a UNIX socket): local access."""
    key = listen_key(listen)
    if key[0] == "unix":
        return True
    if key[0] != "tcp":
        return False
    try:
        return ipaddress.ip_address(str(key[1])).is_loopback
    except ValueError:
        return False


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
        self.ready = False
        """True once every configured inbound listens, until stopping."""

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
                # A clear message and a non-zero exit, not a traceback.
                raise SystemExit(1)
        self.ready = True

    def stopService(self) -> Deferred[None]:
        """Stop listening, let copies in flight finish, close the pool."""
        self.ready = False
        super().stopService()
        return Deferred.fromCoroutine(self.controller.stop(self.drain_timeout))


@implementer(IStreamServerEndpoint)
class _ReportingEndpoint:
    """An endpoint that tells C{listening} the port it got."""

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        listening: Callable[[IListeningPort], None],
    ) -> None:
        self._endpoint = endpoint
        self._listening = listening

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Listen, then report the port."""

        def report(port: IListeningPort) -> IListeningPort:
            self._listening(port)
            return port

        return self._endpoint.listen(protocolFactory).addCallback(report)


class ControlService(StreamServerEndpointService):
    """Serves the control API's site on the --control address.

    Failing to listen aborts the start, like an inbound.  Listening beyond
    loopback without a token logs a warning: anyone who can reach the port
    could then point the traffic anywhere.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        listen: str,
        site: Site,
        token_required: bool,
        hosts: ControlHosts | None = None,
    ) -> None:
        """
        @param hosts: told the address the API listens on, for its C{Host} rule.
        """
        endpoint = serverFromString(reactor, listen_to_endpoint(listen))
        super().__init__(_ReportingEndpoint(endpoint, self._listening), site)
        self._raiseSynchronously = True
        self.listen = listen
        self.token_required = token_required
        self.hosts = hosts
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        """Listen (before the inbounds start); warn if exposed without a token."""
        if not self.token_required and not is_loopback(self.listen):
            self._log.warn(
                "the control API listens on {listen}, beyond loopback, without "
                "a token: anyone who reaches it can change where traffic goes "
                "(use --control-token-file)",
                listen=self.listen,
            )
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            self._log.critical(
                "cannot start the control API: cannot listen on {listen}: "
                "{error} (choose another address with --control)",
                listen=self.listen,
                error=e.socketError or e,
            )
            raise

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        if self.hosts is not None:
            self.hosts.listening(port.getHost())
        self._log.info(
            "control API listening on {listen} ({address})",
            listen=self.listen,
            address=port.getHost(),
        )

    @property
    def http_address(self) -> str | None:
        """C{host:port} to reach the control API with HTTP, once it listens."""
        address = self.port.getHost() if self.port is not None else None
        if isinstance(address, IPv4Address):
            host = "127.0.0.1" if address.host == "0.0.0.0" else address.host
            return f"{host}:{address.port}"
        if isinstance(address, IPv6Address):
            host = "::1" if address.host == "::" else address.host
            return f"[{host}]:{address.port}"
        return None


class _Announcement(Service):
    """Logs the demo's instructions once everything listens."""

    _log = Logger()

    def __init__(self, text: Callable[[], str]) -> None:
        self.text = text

    def startService(self) -> None:
        super().startService()
        for line in self.text().splitlines():
            self._log.info("{line}", line=line)


def makeService(options: Options, reactor: Any = None) -> IService:
    """Build the nfork service tree from parsed options."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    tune_gc(reactor)
    root = MultiService()
    # First, so that /debug/klog shows the startup too.
    log_ring = LogRing()
    LogRingService(log_ring).setServiceParent(root)
    if options["demo"]:
        demo_backends(reactor).setServiceParent(root)
    workers: WorkersService | None = None
    if options.workers > 1:
        # The parent reserves the addresses, the workers listen and forward.
        controller = Controller(
            reactor,
            listener=partial(reserve_port, reactor),
            build_outbounds=False,
            announce=False,
        )
        workers = WorkersService(
            reactor, controller, options.workers, options.drain_timeout
        )
    else:
        controller = Controller(reactor)
    config_file = None
    if options["persist"]:
        config_file = ConfigFile(options["config"], in_thread_pool(reactor))
    changes = Changes(
        controller, config_file, workers.cluster if workers is not None else None
    )
    # Before the inbounds, so that signals are handled from the moment the
    # first inbound is listening.
    path = options["config"]
    reload = (lambda: changes.reload(path)) if path else None
    SignalService(reactor, reload).setServiceParent(root)
    inbounds = InboundsService(controller, options.inbounds, options.drain_timeout)
    inbounds.setServiceParent(root)
    if workers is not None:
        # After the inbounds: the workers listen where the parent reserved.
        workers.setServiceParent(root)
    control: ControlService | None = None
    if options.control is not None:
        api = ControlAPI(
            controller,
            reactor,
            changes=changes,
            log_ring=log_ring,
            token=options.token,
            ready=lambda: inbounds.ready and (workers is None or workers.ready),
            hosts=options.hosts,
            sink_dir=options.sink_dir,
            workers=workers.cluster.describe if workers is not None else None,
        )
        control = ControlService(
            reactor,
            options.control,
            ControlSite(api.resource()),
            token_required=options.token is not None,
            hosts=options.hosts,
        )
        control.setServiceParent(root)
    if options["demo"]:
        _Announcement(
            lambda: demo_instructions(
                control.http_address if control else None,
                options["control-token-file"],
            )
        ).setServiceParent(root)
    return root
