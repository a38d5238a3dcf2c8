"""Changes through the control API: one at a time, saved with --persist, or undone.

L{Changes} applies each change through the L{Controller}, then (with
C{--persist}) rewrites the configuration file atomically
(L{nfork.control.configfile}).  If the file cannot be written, the change is
undone through the controller, so that the running state and the file never
disagree, and L{PersistError} says why.  Changes are serialized: the undo of
one change can never revert another made meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from twisted.python.failure import Failure

from nfork.config import InboundConfig, OutboundConfig
from nfork.config.compare import CompareConfig
from nfork.control.configfile import ConfigFile
from nfork.control.controller import Controller
from nfork.control.reload import ReloadResult, apply_configs, reload_file

T = TypeVar("T")

Undo = Callable[[], Awaitable[object]]


class PersistError(Exception):
    """The configuration file could not be written; the change was undone."""


class WorkersError(PersistError):
    """A worker process could not apply the change; it was undone everywhere."""


class Cluster(Protocol):
    """The worker processes (L{nfork.workers.cluster.Cluster}), as changes see them."""

    async def apply(self, configs: Iterable[InboundConfig]) -> None:
        """Every worker applies C{configs}, or none does (and it raises)."""


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error) or type(error).__name__


def _detached(inner: Deferred[T]) -> Deferred[T]:
    """A Deferred for C{inner}'s result whose cancellation leaves C{inner} alone.

    A change that has started goes to its end (applied and saved, or
    undone) even if the client that asked for it goes away.
    """
    outer: Deferred[T] = Deferred(lambda d: None)

    def forward(result: T | Failure) -> None:
        if outer.called:
            return None  # cancelled by the caller: nobody waits for it
        if isinstance(result, Failure):
            outer.errback(result)
        else:
            outer.callback(result)
        return None

    inner.addBoth(forward)
    return outer


class Changes:
    """Applies changes through the controller, one at a time, and persists them.

    Each method returns a Deferred; once a change has started, cancelling
    that Deferred does not interrupt it.  With no C{config_file}, changes are
    only applied.
    """

    _log = Logger()

    def __init__(
        self,
        controller: Controller,
        config_file: ConfigFile | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        """
        @param cluster: the worker processes, if any: each change is applied
            by all of them before it is answered, or undone.
        """
        self._controller = controller
        self.config_file = config_file
        self.cluster = cluster
        self._lock = DeferredLock()

    def add_inbound(self, config: InboundConfig) -> Deferred[InboundConfig]:
        """Start an inbound (listening when this fires); see L{Controller}."""
        controller = self._controller

        async def apply() -> tuple[InboundConfig, Undo]:
            running = await controller.add_inbound(config)
            return running.config, partial(controller.remove_inbound, config.name)

        return self._commit(f"adding inbound {config.name!r}", apply)

    def remove_inbound(self, name: str) -> Deferred[InboundConfig]:
        """Stop an inbound (its port closed when this fires); fires with it."""
        controller = self._controller

        async def apply() -> tuple[InboundConfig, Undo]:
            routing = controller.inbound(name).routing
            removed = await controller.remove_inbound(name)
            return removed, partial(controller.add_inbound, removed, routing)

        return self._commit(f"removing inbound {name!r}", apply)

    def put_outbound(
        self, inbound: str, outbound: OutboundConfig
    ) -> Deferred[tuple[InboundConfig, bool]]:
        """Add or replace an outbound; fires with the inbound's new config and
        whether the outbound was added (not replaced)."""
        controller = self._controller

        def change(before: InboundConfig) -> tuple[InboundConfig, bool]:
            added = before.outbound(outbound.name) is None
            return controller.put_outbound(inbound, outbound), added

        return self._swap(
            f"setting outbound {outbound.name!r} of inbound {inbound!r}",
            inbound,
            change,
        )

    def remove_outbound(self, inbound: str, outbound: str) -> Deferred[InboundConfig]:
        """Remove an outbound; fires with the inbound's new config."""
        return self._swap(
            f"removing outbound {outbound!r} of inbound {inbound!r}",
            inbound,
            lambda before: self._controller.remove_outbound(inbound, outbound),
        )

    def set_compare(
        self, inbound: str, compare: CompareConfig | None
    ) -> Deferred[InboundConfig]:
        """Replace an inbound's compare settings; fires with its new config."""
        return self._swap(
            f"setting the compare settings of inbound {inbound!r}",
            inbound,
            lambda before: self._controller.set_compare(inbound, compare),
        )

    def activate(self, inbound: str, outbound: str) -> Deferred[InboundConfig]:
        """Make an outbound the active one; fires with the inbound's new config."""
        return self._swap(
            f"activating outbound {outbound!r} of inbound {inbound!r}",
            inbound,
            lambda before: self._controller.activate(inbound, outbound),
        )

    def reload(self, path: str) -> Deferred[ReloadResult | None]:
        """Reload the configuration file, one change at a time with the API's.

        The file is what is reloaded, so nothing is written back.
        """

        controller = self._controller

        async def run() -> ReloadResult | None:
            async with self._lock:
                before = controller.configs()
                result = await reload_file(controller, path)
                if result is not None and self.cluster is not None:
                    try:
                        await self._spread(
                            f"the reload of {path}",
                            partial(apply_configs, controller, before),
                        )
                    except WorkersError:
                        return None  # logged: nothing changed
                return result

        return _detached(Deferred.fromCoroutine(run()))

    def _swap(
        self, what: str, inbound: str, change: Callable[[InboundConfig], T]
    ) -> Deferred[T]:
        """A change of one inbound's config, undone by restoring the old one."""
        controller = self._controller

        async def apply() -> tuple[T, Undo]:
            routing = controller.inbound(inbound).routing
            before = routing.config
            result = change(before)
            return result, partial(controller.update_inbound, before, routing)

        return self._commit(what, apply)

    def _commit(
        self, what: str, apply: Callable[[], Awaitable[tuple[T, Undo]]]
    ) -> Deferred[T]:
        async def commit() -> T:
            async with self._lock:
                result, undo = await apply()
                if self.cluster is not None:
                    await self._spread(what, undo)
                    undo = self._spread_undo(undo)
                if self.config_file is not None:
                    await self._save(what, undo)
                return result

        return _detached(Deferred.fromCoroutine(commit()))

    async def _spread(self, what: str, undo: Undo) -> None:
        """Have every worker apply the running state; on failure, undo and raise."""
        assert self.cluster is not None
        try:
            await self.cluster.apply(self._controller.configs())
        except Exception as e:
            reason = _reason(e)
            self._log.error(
                "the worker processes could not apply {change}: {reason}; "
                "undoing the change",
                change=what,
                reason=reason,
            )
            try:
                await undo()
            except Exception:
                self._log.failure(
                    "undoing {change} failed: the parent and its workers now disagree",
                    change=what,
                )
            raise WorkersError(
                f"a worker process could not apply the change: {reason}; "
                "the change was undone"
            ) from e

    def _spread_undo(self, undo: Undo) -> Undo:
        """C{undo}, then the workers take the state back too."""
        cluster = self.cluster
        assert cluster is not None

        async def undo_everywhere() -> None:
            await undo()
            await cluster.apply(self._controller.configs())

        return undo_everywhere

    async def _save(self, what: str, undo: Undo) -> None:
        """Persist the running state; on failure, undo the change and raise."""
        assert self.config_file is not None
        path = self.config_file.path
        try:
            await self.config_file.save(self._controller.configs())
        except Exception as e:
            reason = _reason(e)
            self._log.error(
                "cannot write the configuration file {path} after {change}: "
                "{reason}; undoing the change",
                path=path,
                change=what,
                reason=reason,
            )
            try:
                await undo()
            except Exception:
                self._log.failure(
                    "undoing {change} failed: the running state and {path} "
                    "now disagree",
                    change=what,
                    path=path,
                )
            raise PersistError(
                f"cannot write the configuration file {path}: {reason}; "
                "the change was undone"
            ) from e
        self._log.info("configuration saved to {path}", path=path)
