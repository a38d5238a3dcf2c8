"""The live set of inbounds: every change to a running nfork goes through here.

The REST API, the twistd service and signal handlers all call the
L{Controller}.  A change builds a new immutable L{Routing} and swaps it into
the inbound's fork object, so requests already in flight finish with the
configuration they started with and the next request sees the change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from attrs import define, evolve
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from zope.interface import implementer

from nfork.compare.runtime import Comparer, build_comparer
from nfork.config import InboundConfig, OutboundConfig
from nfork.config.addresses import listen_key
from nfork.config.compare import CompareConfig
from nfork.outbounds.api import IOutbound, IOutboundFactory, OutboundContext
from nfork.outbounds.registry import check_inbound, outbound_factories
from nfork.proxy.client import HTTPClientPool
from nfork.proxy.fork import InboundFork, OutboundRoute, Routing
from nfork.proxy.messages import ProxyRequest, ProxyResponse
from nfork.proxy.server import HEADER_TIMEOUT, InboundServerFactory
from nfork.proxy.stats import OutboundStats


class UnknownInbound(LookupError):
    """No inbound has that name."""


class UnknownOutbound(LookupError):
    """The inbound has no outbound of that name."""


class CompareOff(LookupError):
    """The inbound compares no answers (it has no C{compare} settings)."""


class Conflict(Exception):
    """The change clashes with the running state (name taken, address in use, ...)."""


Listener = Callable[[InboundConfig, InboundServerFactory], Awaitable[Any]]
"""Listens for an inbound: C{(config, factory)} -> a port with C{getHost()}
and C{stopListening()}; raises L{CannotListenError}."""


@implementer(IOutbound)
class PlaceholderOutbound:
    """An outbound that sends nothing: the parent of worker processes routes
    no traffic, but keeps routes (names, stats, comparers) as one process."""

    def __init__(self, gives_response: bool) -> None:
        self.gives_response = gives_response

    def send(
        self, request: ProxyRequest, keep_body: bool
    ) -> Deferred[ProxyResponse | None]:
        """Never called in the parent; answers nothing."""
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Nothing to release."""
        return succeed(None)


@define(eq=False)
class RunningInbound:
    """An inbound that is listening: its fork object, server factory and port."""

    fork: InboundFork
    factory: InboundServerFactory
    port: IListeningPort

    @property
    def config(self) -> InboundConfig:
        """The inbound's current configuration."""
        return self.fork.routing.config

    @property
    def routing(self) -> Routing:
        """The inbound's current routing snapshot."""
        return self.fork.routing


class Controller:
    """Starts, stops and reconfigures inbounds of a running process."""

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        pool: HTTPClientPool | None = None,
        factories: dict[str, IOutboundFactory] | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        listener: Listener | None = None,
        build_outbounds: bool = True,
        announce: bool = True,
    ) -> None:
        """
        @param listener: listens for an inbound (default: its endpoint); with
            worker processes, the parent only reserves the address and each
            worker listens with C{SO_REUSEPORT} (L{nfork.workers.listening}).
        @param build_outbounds: False in the parent of worker processes: the
            routes get placeholder outbounds (no file opened, no connection),
            so that checks, names and stats work as in one process.
        @param announce: log each inbound's "listening" line as it starts;
            the parent of worker processes logs it once they listen.
        """
        self._reactor = reactor
        self._header_timeout = header_timeout
        self._listener = listener if listener is not None else self._listen
        self._build_outbounds = build_outbounds
        self._announce = announce
        self.compare_reset_hooks: list[Callable[[str], object]] = []
        """Called with the inbound's name after its comparison is reset."""
        self.pool = pool if pool is not None else HTTPClientPool(reactor)
        self._factories = factories if factories is not None else outbound_factories()
        self._inbounds: dict[str, RunningInbound] = {}

    # -- reading ---------------------------------------------------------

    @property
    def factories(self) -> dict[str, IOutboundFactory]:
        """The outbound factories in use, by scheme."""
        return self._factories

    def configs(self) -> tuple[InboundConfig, ...]:
        """The configuration of every running inbound, in start order."""
        return tuple(inbound.config for inbound in self._inbounds.values())

    def inbound(self, name: str) -> RunningInbound:
        """The running inbound called C{name}, or L{UnknownInbound}."""
        try:
            return self._inbounds[name]
        except KeyError:
            raise UnknownInbound(f'no inbound named "{name}"') from None

    def outbound_route(self, inbound: str, outbound: str) -> OutboundRoute:
        """The route of one outbound, or L{UnknownInbound}/L{UnknownOutbound}."""
        for route in self.inbound(inbound).routing.routes:
            if route.name == outbound:
                return route
        raise UnknownOutbound(f'inbound "{inbound}" has no outbound named "{outbound}"')

    def stats(self) -> dict[str, dict[str, dict[str, object]]]:
        """C{{inbound: {outbound: stats}}} for every running inbound."""
        return {name: self.inbound_stats(name) for name in self._inbounds}

    def inbound_stats(self, name: str) -> dict[str, dict[str, object]]:
        """C{{outbound: stats}} for one inbound, in configuration order."""
        routing = self.inbound(name).routing
        by_name = {route.name: route for route in routing.routes}
        return {
            out.name: by_name[out.name].stats.snapshot()
            for out in routing.config.outbounds
        }

    def comparer(self, inbound: str) -> Comparer:
        """The comparer of an inbound, or L{UnknownInbound}/L{CompareOff}."""
        comparer = self.inbound(inbound).routing.comparer
        if comparer is None:
            raise CompareOff(
                f'inbound "{inbound}" compares no answers: turn comparison on '
                'with a "compare" object in its configuration, or with '
                f"PUT /v1/nfork/{inbound}/compare and a body such as "
                '{"candidates": ["staging"]}'
            )
        return comparer

    def compare_report(self, inbound: str) -> dict[str, Any]:
        """The comparison's figures per candidate, endpoint and field."""
        return self.comparer(inbound).report()

    def compare_samples(
        self, inbound: str, candidate: str, endpoint: str, field: str
    ) -> list[dict[str, Any]]:
        """The examples kept of C{field} differing on C{endpoint} for C{candidate}.

        Raises L{nfork.compare.runtime.UnknownCandidate} for an outbound
        that is not a candidate.
        """
        return self.comparer(inbound).samples(candidate, endpoint, field)

    def reset_compare(self, inbound: str) -> dict[str, Any]:
        """Forget the comparison's counters and samples; the empty report."""
        comparer = self.comparer(inbound)
        comparer.reset()
        for hook in self.compare_reset_hooks:
            hook(inbound)
        self._log.info("inbound {inbound}: comparison reset", inbound=inbound)
        return comparer.report()

    # -- inbounds --------------------------------------------------------

    async def _listen(
        self, config: InboundConfig, factory: InboundServerFactory
    ) -> IListeningPort:
        """The default listener: the inbound's endpoint, with a long backlog."""
        endpoint = serverFromString(self._reactor, with_backlog(config.endpoint))
        port: IListeningPort = await endpoint.listen(factory)
        return port

    async def add_inbound(
        self, config: InboundConfig, stats_from: Routing | None = None
    ) -> RunningInbound:
        """Start an inbound; it is listening when this returns.

        Outbounds configured as in C{stats_from} (an earlier routing of this
        inbound) continue its stats.  Raises L{Conflict} when the name or the
        listen address is taken and L{ConfigError} when an outbound cannot be
        built.
        """
        if config.name in self._inbounds:
            raise Conflict(f'an inbound named "{config.name}" already exists')
        key = listen_key(config.listen)
        for other in self._inbounds.values():
            if listen_key(other.config.listen) == key:
                raise Conflict(
                    f'listen address "{config.listen}" is already used by '
                    f'inbound "{other.config.name}"'
                )
        routing = self._routing(config, previous=None, stats_from=stats_from)
        fork = InboundFork(routing, self._reactor)
        factory = InboundServerFactory(
            fork, self._reactor, header_timeout=self._header_timeout
        )
        try:
            port = await self._listener(config, factory)
        except CannotListenError as e:
            await self._close_routes(routing.routes)
            raise Conflict(
                f'inbound "{config.name}": cannot listen on "{config.listen}": '
                f"{e.socketError or e}"
            ) from e
        running = RunningInbound(fork, factory, port)
        self._inbounds[config.name] = running
        if self._announce:
            self.announce(config.name)
        return running

    def announce(self, name: str) -> None:
        """Log that inbound C{name} listens, where, and its outbounds."""
        running = self.inbound(name)
        config = running.config
        self._log.info(
            "inbound {name} listening on {listen} ({address}), "
            "outbounds {outbounds}, active {active}",
            name=config.name,
            listen=config.listen,
            address=running.port.getHost(),
            outbounds=", ".join(
                f"{out.name}={out.address.raw}" for out in config.outbounds
            ),
            active=config.active,
        )

    async def remove_inbound(self, name: str) -> InboundConfig:
        """Stop listening (the port is closed on return); requests in flight finish.

        Client connections are closed, idle ones now and the others after
        the request they are sending or waiting for is answered, so that
        none keeps using this inbound's routing.  Its outbounds are closed
        once the last connection is and no copy is pending.
        """
        running = self.inbound(name)
        del self._inbounds[name]
        await _stop_listening(running.port)
        running.factory.close_connections()
        routes = running.routing.routes
        fork = running.fork
        running.factory.when_closed().addCallback(
            lambda _: fork.when_idle()
        ).addCallback(lambda _: self._close_routes(routes))
        self._log.info("inbound {name} removed", name=name)
        return running.config

    async def update_inbound(
        self, config: InboundConfig, stats_from: Routing | None = None
    ) -> None:
        """Apply a new configuration to a running inbound of the same name.

        The listen address cannot change in place: the inbound is restarted.
        Outbounds whose configuration did not change keep their stats, and
        so do those configured as in C{stats_from} (an earlier routing of
        this inbound, when a change is undone).
        """
        running = self.inbound(config.name)
        if running.config == config:
            return
        if running.config.endpoint != config.endpoint:
            await self.remove_inbound(config.name)
            await self.add_inbound(config, stats_from=stats_from or running.routing)
            return
        self._swap(running, config, stats_from)

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Stop every inbound and close the shared connection pool.

        Listening stops at once; copies in flight get up to C{drain_timeout}
        seconds to finish before the pool's connections are closed.
        """
        running = list(self._inbounds.values())
        self._inbounds.clear()
        for inbound in running:
            await _stop_listening(inbound.port)
            inbound.factory.close_connections()
        if drain_timeout > 0:
            pending = sum(inbound.fork.pending for inbound in running)
            if pending:
                self._log.info(
                    "draining {pending} request copies in flight (up to {timeout}s)",
                    pending=pending,
                    timeout=drain_timeout,
                )
            idle = DeferredList(
                [inbound.fork.when_idle() for inbound in running],
                consumeErrors=True,
            )
            idle.addTimeout(drain_timeout, self._reactor)
            try:
                await idle
            except TimeoutError:
                self._log.warn(
                    "drain timeout: abandoning {pending} request copies",
                    pending=sum(inbound.fork.pending for inbound in running),
                )
        for inbound in running:
            await self._close_routes(inbound.routing.routes)
        await self.pool.close()

    # -- outbounds -------------------------------------------------------

    def put_outbound(self, inbound: str, outbound: OutboundConfig) -> InboundConfig:
        """Add an outbound, or replace the one of the same name."""
        running = self.inbound(inbound)
        config = running.config.with_outbound(outbound)
        self._swap(running, config)
        self._log.info(
            "inbound {inbound}: outbound {name} set to {address}",
            inbound=inbound,
            name=outbound.name,
            address=outbound.to_json(),
        )
        return config

    def remove_outbound(self, inbound: str, outbound: str) -> InboundConfig:
        """Remove an outbound; the active one cannot be removed (L{Conflict})."""
        running = self.inbound(inbound)
        self.outbound_route(inbound, outbound)
        if running.config.active == outbound:
            raise Conflict(
                f'outbound "{outbound}" is the active outbound of inbound '
                f'"{inbound}"; activate another one first'
            )
        compare = running.config.compare
        for key, name in compare.named_outbounds() if compare else ():
            if name == outbound:
                raise Conflict(
                    f'outbound "{outbound}" is named in {key} of inbound '
                    f'"{inbound}"; change compare first (PUT '
                    f"/v1/nfork/{inbound}/compare)"
                )
        config = running.config.without_outbound(outbound)
        self._swap(running, config)
        self._log.info(
            "inbound {inbound}: outbound {name} removed", inbound=inbound, name=outbound
        )
        return config

    def set_compare(self, inbound: str, compare: CompareConfig | None) -> InboundConfig:
        """Replace the inbound's compare settings (None: compare nothing).

        New settings start a new comparison (counters and samples from zero).
        """
        running = self.inbound(inbound)
        config = evolve(running.config, compare=compare)
        self._swap(running, config)
        self._log.info(
            "inbound {inbound}: compare settings {settings}",
            inbound=inbound,
            settings="removed" if compare is None else compare.to_json(),
        )
        return config

    def activate(self, inbound: str, outbound: str) -> InboundConfig:
        """Make C{outbound} the active one; the next request is answered by it."""
        running = self.inbound(inbound)
        self.outbound_route(inbound, outbound)
        config = running.config.with_active(outbound)
        self._swap(running, config)
        self._log.info(
            "inbound {inbound}: outbound {name} is now active",
            inbound=inbound,
            name=outbound,
        )
        return config

    # -- internals -------------------------------------------------------

    def _swap(
        self,
        running: RunningInbound,
        config: InboundConfig,
        stats_from: Routing | None = None,
    ) -> None:
        """Install a new routing for C{running}; close outbounds that left."""
        old = running.routing
        routing = self._routing(config, previous=old, stats_from=stats_from)
        running.fork.routing = routing
        kept = {id(route) for route in routing.routes}
        self._close_routes(r for r in old.routes if id(r) not in kept)

    def _routing(
        self,
        config: InboundConfig,
        previous: Routing | None,
        stats_from: Routing | None = None,
    ) -> Routing:
        """Build the routing for C{config}, reusing unchanged outbounds.

        A new outbound configured exactly as one of C{stats_from} takes over
        that one's stats (a removed inbound or outbound coming back).
        """
        reusable = {}
        if previous is not None and (
            previous.config.idle_conn,
            previous.config.stats_window,
        ) == (config.idle_conn, config.stats_window):
            reusable = {route.name: route for route in previous.routes}
        donors = {}
        if stats_from is not None and stats_from.config.stats_window == (
            config.stats_window
        ):
            donors = {route.name: route for route in stats_from.routes}
        context = OutboundContext(
            reactor=self._reactor,
            pool=self.pool,
            inbound=config.name,
            idle_conn=config.idle_conn,
        )
        routes: dict[str, OutboundRoute] = {}
        built: list[OutboundRoute] = []
        factories = check_inbound(config, self._factories)
        try:
            for out in config.outbounds:
                old = reusable.get(out.name)
                if old is not None and old.config == out:
                    routes[out.name] = old
                    continue
                factory = factories[out.name]
                donor = donors.get(out.name)
                if donor is not None and donor.config == out:
                    stats = donor.stats
                else:
                    stats = OutboundStats(self._reactor, config.stats_window)
                outbound = (
                    factory.build(out, context)
                    if self._build_outbounds
                    else PlaceholderOutbound(factory.gives_response)
                )
                route = OutboundRoute(config=out, outbound=outbound, stats=stats)
                routes[out.name] = route
                built.append(route)
        except BaseException:
            # The change fails whole: what it built for nothing is released
            # (connections, files, the pool's idle allowance).
            self._close_routes(built)
            raise
        return Routing(
            config=config,
            active=routes[config.active],
            shadows=tuple(r for name, r in routes.items() if name != config.active),
            comparer=build_comparer(
                config,
                routes,
                previous.comparer if previous is not None else None,
                self._reactor,
            ),
        )

    def _close_routes(self, routes: Iterable[OutboundRoute]) -> Deferred[Any]:
        """Close the outbounds of C{routes}, logging failures."""
        closing = [route.outbound.close() for route in routes]
        return DeferredList(closing, consumeErrors=True)


LISTEN_BACKLOG = 511
"""Connections the kernel queues before nfork accepts them (nginx's default).

Twisted's default, 50, drops the SYNs of normal clients behind a burst of new
connections (a slowloris opening hundreds): they then wait a second for the
retransmission.  Linux caps it at C{net.core.somaxconn}."""

_BACKLOG_TYPES = ("tcp:", "tcp6:", "ssl:", "unix:")


def with_backlog(endpoint: str) -> str:
    """The endpoint description C{endpoint} with L{LISTEN_BACKLOG}.

    A description that sets its own C{backlog}, or whose type takes none, is
    kept as it is.
    """
    if not endpoint.startswith(_BACKLOG_TYPES) or "backlog=" in endpoint:
        return endpoint
    return f"{endpoint}:backlog={LISTEN_BACKLOG}"


async def _stop_listening(port: IListeningPort) -> None:
    """Close a listening port; returns once the port is closed."""
    stopped = port.stopListening()
    if stopped is not None:
        await stopped
