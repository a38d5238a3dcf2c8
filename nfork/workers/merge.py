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

from collections.abc import Mapping, Sequence
from typing import Any

from nfork.control.controller import Controller, RunningInbound

__all__ = ["apply_snapshots", "snapshot", "snapshot_requests"]


def snapshot(controller: Controller, worker_index: int) -> dict[str, Any]:
    """The raw state of a worker's inbounds, JSON-ready.

    C{{"worker": k, "requests": n, "inbounds": {inbound: {"connections",
    "refused", "compare", "outbounds": {outbound: {"stats", "inflight"}}}}}};
    C{"requests"} is L{snapshot_requests}.
    """
    inbounds: dict[str, Any] = {}
    for config in controller.configs():
        inbounds[config.name] = _inbound_snapshot(controller.inbound(config.name))
    result: dict[str, Any] = {"worker": worker_index, "inbounds": inbounds}
    result["requests"] = snapshot_requests(result)
    return result


def _inbound_snapshot(running: RunningInbound) -> dict[str, Any]:
    routing = running.routing
    comparer = routing.comparer
    return {
        "connections": len(running.factory.connections),
        "refused": running.factory.refused,
        "compare": None if comparer is None else comparer.export(),
        "outbounds": {
            route.name: {"stats": route.stats.export(), "inflight": route.inflight}
            for route in routing.routes
        },
    }


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
    outbound the workers have not started yet) reads zero; what the
    controller does not have (one the workers have not removed yet) is
    ignored, and so are an outbound's stats of another window length (a
    change of C{statsWindow} on its way).
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
            outbounds = [
                outbound
                for outbound in (part["outbounds"].get(route.name) for part in parts)
                if outbound is not None
            ]
            route.stats.load_sum(
                [
                    outbound["stats"]
                    for outbound in outbounds
                    if float(outbound["stats"]["window"]) == route.stats.window
                ]
            )
            route.inflight = sum(int(outbound["inflight"]) for outbound in outbounds)
        comparer = routing.comparer
        if comparer is not None:
            comparer.load_sum(
                [part["compare"] for part in parts if part["compare"] is not None]
            )
