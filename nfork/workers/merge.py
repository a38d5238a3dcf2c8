"""Stats and comparisons of the worker processes, summed in the parent.

A worker answers the parent's C{Snapshot} command with L{snapshot}: the raw
state of every inbound it runs (each outbound's L{OutboundStats.export} and
copies in flight, the connections open and refused, the comparer's
L{Comparer.export}).  The parent, about once a second, gives every worker's
snapshot to L{apply_snapshots}, which REPLACES the state of its own
controller's stats and comparers with their sum.  The parent forwards no
traffic, so its stats hold only what the workers sent: every reader (the
REST API, C{/metrics}, the dashboard) then serves the sum as for one
process.  Histograms are merged bucket by bucket, never percentiles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from nfork.control.controller import Controller, RunningInbound

__all__ = [
    "WorkerFigures",
    "apply_snapshots",
    "retired",
    "snapshot",
    "snapshot_requests",
]


def snapshot(controller: Controller, worker_index: int) -> dict[str, Any]:
    """The raw state of a worker's inbounds, JSON-ready.

    C{{"worker": k, "pid": p, "requests": n, "inbounds": {inbound:
    {"connections", "refused", "compare", "outbounds": {outbound: {"config",
    "stats", "inflight"}}}}}}}; C{"requests"} is L{snapshot_requests}.  Each
    outbound's and comparer's settings go along, so that the parent adds
    only figures of the outbound and comparison it has (see
    L{apply_snapshots}).
    """
    inbounds: dict[str, Any] = {}
    for config in controller.configs():
        inbounds[config.name] = _inbound_snapshot(controller.inbound(config.name))
    result: dict[str, Any] = {
        "worker": worker_index,
        "pid": os.getpid(),
        "inbounds": inbounds,
    }
    result["requests"] = snapshot_requests(result)
    return result


def _inbound_snapshot(running: RunningInbound) -> dict[str, Any]:
    routing = running.routing
    comparer = routing.comparer
    compare = None
    if comparer is not None:
        compare = {
            "primary": comparer.primary,
            "settings": comparer.settings.to_json(full=True),
            "figures": comparer.export(),
        }
    return {
        "connections": len(running.factory.connections),
        "refused": running.factory.refused,
        "compare": compare,
        "outbounds": {
            route.name: {
                "config": route.config.to_json(),
                "stats": route.stats.export(),
                "inflight": route.inflight,
            }
            for route in routing.routes
        },
    }


def _as_json(value: object) -> object:
    """C{value} as it reads after a trip through JSON (tuples as lists...)."""
    return json.loads(json.dumps(value))


def snapshot_requests(snapshot: Mapping[str, Any]) -> int:
    """The requests a worker's inbounds received, by its L{snapshot}.

    Per inbound, the copies of its busiest outbound (sent, in flight,
    dropped or skipped): the active one, unless it was switched since.
    """
    total = 0
    for inbound in snapshot["inbounds"].values():
        busiest = 0
        for outbound in inbound["outbounds"].values():
            stats = outbound["stats"]
            copies = int(outbound["inflight"])
            for part in ("total", "current"):
                figures = stats[part]
                copies += figures["requests"] + figures["dropped"]
                copies += sum(figures["skipped"].values())
            busiest = max(busiest, copies)
        total += busiest
    return total


def apply_snapshots(
    controller: Controller, snapshots: Sequence[Mapping[str, Any]]
) -> None:
    """Replace the parent's stats and comparisons with the sum of C{snapshots}.

    For every inbound of C{controller}: each outbound's stats, copies in
    flight, the connections open and refused, and the comparer's counts,
    samples and pending jobs.  What no snapshot mentions (an inbound or
    outbound the workers have not started yet) reads zero.  Figures of what
    the controller does not have are left out: an inbound or outbound it
    does not run, an outbound configured otherwise or with another
    C{statsWindow}, a comparison with other settings or another primary (a
    change on its way to the workers, or the L{retired} figures of an
    outbound changed since), as one process would have started those over.
    """
    for config in controller.configs():
        running = controller.inbound(config.name)
        parts = [
            part
            for part in (shot["inbounds"].get(config.name) for shot in snapshots)
            if part is not None
        ]
        factory = running.factory
        factory.worker_connections = sum(int(part["connections"]) for part in parts)
        factory.refused = sum(int(part["refused"]) for part in parts)
        routing = running.routing
        for route in routing.routes:
            configured = _as_json(route.config.to_json())
            window = route.stats.window
            outbounds = [
                outbound
                for outbound in (part["outbounds"].get(route.name) for part in parts)
                if outbound is not None
                and outbound["config"] == configured
                and float(outbound["stats"]["window"]) == window
            ]
            route.stats.load_sum([outbound["stats"] for outbound in outbounds])
            route.inflight = sum(int(outbound["inflight"]) for outbound in outbounds)
        comparer = routing.comparer
        if comparer is not None:
            settings = _as_json(comparer.settings.to_json(full=True))
            comparer.load_sum(
                [
                    compare["figures"]
                    for compare in (part["compare"] for part in parts)
                    if compare is not None
                    and compare["primary"] == comparer.primary
                    and compare["settings"] == settings
                ]
            )


def retired(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The figures a worker that is gone leaves in the sum: its counts only.

    Its last C{snapshot}, with no connection open, no copy in flight and no
    comparison pending: all those went with the process.
    """
    inbounds = {}
    for name, inbound in snapshot["inbounds"].items():
        compare = inbound["compare"]
        if compare is not None:
            compare = {
                **compare,
                "figures": {**compare["figures"], "pending": 0},
            }
        inbounds[name] = {
            **inbound,
            "connections": 0,
            "compare": compare,
            "outbounds": {
                outbound: {**figures, "inflight": 0}
                for outbound, figures in inbound["outbounds"].items()
            },
        }
    return {**snapshot, "inbounds": inbounds, "requests": 0}


class WorkerFigures:
    """The parent's sum of its workers' snapshots, those of dead ones kept.

    A worker that dies takes its counts with it; summing only the live
    workers would make the parent's counters go down, which Prometheus
    reads as a reset.  L{update} keeps the last snapshot of each worker
    process that is gone (L{retired}) and adds it to every later sum, so
    that counters never go down while the outbound and comparison they
    count stay as they were.  The parent calls L{apply} with every
    collection of its live workers' snapshots.
    """

    def __init__(self, controller: Controller) -> None:
        """Sum into C{controller}'s stats; follow its comparison resets."""
        self._controller = controller
        self._live: dict[int, Mapping[str, Any]] = {}
        """The last snapshot of each worker, by index."""
        self._retired: list[dict[str, Any]] = []
        self._samples: dict[tuple[int, str], tuple[object, list[Any]]] = {}
        """Per worker and inbound, the comparison's samples received so far
        (with the worker's pid and tally epoch they belong to)."""
        controller.compare_reset_hooks.append(self.reset_compare)

    def apply(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        """L{apply_snapshots} of the live workers' and the retired ones'."""
        apply_snapshots(self._controller, self.update(snapshots))

    def update(self, snapshots: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Take the workers' latest C{snapshots}; every snapshot to sum.

        A worker answering from another process (pid) than before was
        restarted: its previous process is retired.  A worker missing from
        C{snapshots} (dead, or late to answer) counts with its last
        snapshot's counts until it answers again.
        """
        missing = dict(self._live)
        complete = []
        for shot in snapshots:
            index = int(shot["worker"])
            last = missing.pop(index, None)
            if last is not None and shot.get("pid") != last.get("pid"):
                self._retired.append(retired(last))
            shot = self._with_samples(index, shot)
            self._live[index] = shot
            complete.append(shot)
        return [
            *self._retired,
            *complete,
            *(retired(last) for last in missing.values()),
        ]

    def _with_samples(self, index: int, shot: Mapping[str, Any]) -> dict[str, Any]:
        """C{shot} with every sample its worker sent so far (see L{Comparer.export}).

        A sample missed (an answer lost) stays missing until the worker
        sends them all again.
        """
        inbounds = dict(shot["inbounds"])
        for name, inbound in inbounds.items():
            compare = inbound["compare"]
            if compare is None:
                continue
            tally = compare["figures"]["tally"]
            key = (index, name)
            owner = (shot.get("pid"), tally["epoch"])
            known = self._samples.get(key)
            samples = known[1] if known is not None and known[0] == owner else []
            since = int(tally["since"])
            if len(samples) < since:
                samples.extend([None] * (since - len(samples)))
            samples[since:] = tally["samples"]
            self._samples[key] = (owner, samples)
            figures = {
                **compare["figures"],
                "tally": {**tally, "since": 0, "samples": list(samples)},
            }
            inbounds[name] = {**inbound, "compare": {**compare, "figures": figures}}
        return {**shot, "inbounds": inbounds}

    def reset_compare(self, inbound: str) -> None:
        """Forget the comparison of C{inbound} of the workers that are gone.

        Call it when the comparison is reset (the live workers reset theirs).
        """
        for shot in self._retired:
            place = shot["inbounds"].get(inbound)
            if place is not None:
                place["compare"] = None
        for index, last in self._live.items():
            place = last["inbounds"].get(inbound)
            if place is not None and place["compare"] is not None:
                inbounds = {**last["inbounds"], inbound: {**place, "compare": None}}
                self._live[index] = {**last, "inbounds": inbounds}
