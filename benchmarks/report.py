"""Results: one record per scenario run, medians per scenario, Markdown and JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from attrs import asdict, field, frozen

from benchmarks.scenarios import SCENARIOS, Scenario
from benchmarks.stack import Received
from benchmarks.wrk import WrkResult

_SCENARIOS = {scenario.id: scenario for scenario in SCENARIOS}


@frozen
class RunResult:
    """Everything measured in one run of one scenario."""

    scenario: str
    round: int
    wrk: WrkResult
    wrk_cpu_percent: float
    proxy_cpu_percent: float | None
    """User + system CPU of the proxy's processes over the load, 100 = one core."""
    proxy_peak_rss_bytes: int | None
    """Sum of C{VmHWM} of the proxy's processes."""
    received: dict[str, Received]
    """Per backend of the scenario: requests and new connections during the run."""
    dropped: dict[str, int] | None
    """Per shadow: copies the proxy shed on purpose; C{None} if it cannot say."""
    peak_connections: dict[str, int]
    """Per backend: most connections open to it at one of the samples."""
    backend_cpu_percent: dict[str, float]
    other_cpu_percent: float = 0.0
    """CPU the rest of the machine used meanwhile (not the proxy, backends,
    wrk or harness), 100 = one core: a noisy neighbour makes figures noisy."""
    steal_percent: float = 0.0
    """CPU time the hypervisor gave to other machines, 100 = one core."""
    proxy_stats: dict[str, Any] | None = None
    clean_stop: bool | None = None
    """Whether the proxy exited on SIGTERM in time (C{None}: no proxy)."""
    log_problems: list[str] = field(factory=list)
    """nfork's log lines at warning level or above (and tracebacks)."""
    proxy_cpu_split: list[float] | None = None
    """C{proxy_cpu_percent} per process: the proxy's own first, then its
    children's (nfork's workers, nginx's worker) in the order of their ids."""

    @property
    def scenario_info(self) -> Scenario:
        """The scenario this run belongs to."""
        return _SCENARIOS[self.scenario]

    def missing(self) -> dict[str, int]:
        """Per shadow: copies neither received nor counted as dropped.

        The duplication proof: 0 for every shadow means each request the
        active backend got also reached every shadow, or was shed and counted.
        """
        info = self.scenario_info
        active = self.received[info.active].requests
        dropped = self.dropped or {}
        return {
            shadow: active - self.received[shadow].requests - dropped.get(shadow, 0)
            for shadow in info.shadows
        }


@frozen
class Summary:
    """The median of each figure over the rounds of one scenario."""

    scenario: str
    rounds: int
    requests_per_second: float
    spread_percent: float
    """Half the range of req/s over the rounds, as a percentage of the median."""
    mib_per_second: float
    """What wrk received per second (answers with their heads), in MiB."""
    p50_ms: float
    p99_ms: float
    proxy_cpu_percent: float | None
    proxy_cpu_split: list[float] | None
    """The median of each process's CPU (parent first), if every round had
    as many processes."""
    requests_per_core_second: float | None
    """req/s divided by the proxy's CPU (in cores): throughput per core."""
    proxy_peak_rss_mib: float | None
    received: dict[str, int]
    connections: dict[str, int]
    peak_connections: dict[str, int]
    dropped: dict[str, int] | None
    missing: dict[str, int]
    """The largest shortfall of each shadow over the rounds (0: duplication proven)."""
    client_errors: int
    wrk_cpu_percent: float
    backend_cpu_percent: dict[str, float]
    other_cpu_percent: float
    """The largest over the rounds."""
    steal_percent: float
    """The largest over the rounds."""
    clean_stops: bool | None
    log_problems: list[str]
    """Every round's, in order."""


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _median_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return _median(known) if len(known) == len(values) and known else None


def _median_by_key(
    runs: Sequence[RunResult], get: Callable[[RunResult], Mapping[str, float]]
) -> dict[str, float]:
    keys = list(get(runs[0]))
    return {key: _median([get(run)[key] for run in runs]) for key in keys}


def _median_split(runs: Sequence[RunResult]) -> list[float] | None:
    """Each process's median CPU, when every run measured as many processes."""
    splits = [run.proxy_cpu_split for run in runs]
    if any(split is None for split in splits):
        return None
    known = [split for split in splits if split is not None]
    if not known or len({len(split) for split in known}) != 1:
        return None
    return [_median(each) for each in zip(*known, strict=True)]


def summarize(runs: Sequence[RunResult]) -> Summary:
    """The medians of the runs of one scenario (every round)."""
    first = runs[0]
    rates = [run.wrk.requests_per_second for run in runs]
    rate = _median(rates)
    cpu = _median_or_none([run.proxy_cpu_percent for run in runs])
    rss = _median_or_none(
        [
            None
            if run.proxy_peak_rss_bytes is None
            else run.proxy_peak_rss_bytes / 2**20
            for run in runs
        ]
    )
    dropped = (
        None
        if any(run.dropped is None for run in runs)
        else {
            k: round(v)
            for k, v in _median_by_key(runs, lambda r: r.dropped or {}).items()
        }
    )
    missing_by_round = [run.missing() for run in runs]
    stops = [run.clean_stop for run in runs]
    return Summary(
        scenario=first.scenario,
        rounds=len(runs),
        requests_per_second=rate,
        spread_percent=100.0 * (max(rates) - min(rates)) / 2 / rate if rate else 0.0,
        mib_per_second=_median([run.wrk.mib_per_second for run in runs]),
        p50_ms=_median([run.wrk.latency_ms["p50"] for run in runs]),
        p99_ms=_median([run.wrk.latency_ms["p99"] for run in runs]),
        proxy_cpu_percent=cpu,
        proxy_cpu_split=_median_split(runs),
        requests_per_core_second=rate / (cpu / 100.0) if cpu else None,
        proxy_peak_rss_mib=rss,
        received={
            k: round(v)
            for k, v in _median_by_key(
                runs, lambda r: {n: c.requests for n, c in r.received.items()}
            ).items()
        },
        connections={
            k: round(v)
            for k, v in _median_by_key(
                runs, lambda r: {n: c.connections for n, c in r.received.items()}
            ).items()
        },
        peak_connections={
            k: round(v)
            for k, v in _median_by_key(runs, lambda r: r.peak_connections).items()
        },
        dropped=dropped,
        missing={
            shadow: max((m[shadow] for m in missing_by_round), key=abs)
            for shadow in first.scenario_info.shadows
        },
        client_errors=round(_median([run.wrk.errors for run in runs])),
        wrk_cpu_percent=_median([run.wrk_cpu_percent for run in runs]),
        backend_cpu_percent=_median_by_key(runs, lambda r: r.backend_cpu_percent),
        other_cpu_percent=max(run.other_cpu_percent for run in runs),
        steal_percent=max(run.steal_percent for run in runs),
        clean_stops=None if None in stops else all(s for s in stops if s is not None),
        log_problems=[line for run in runs for line in run.log_problems],
    )


@frozen
class Comparison:
    """nfork against nginx's mirror for one scenario: ratios of the medians."""

    scenario: str
    peer: str
    requests_per_second: float
    p50: float
    p99: float
    proxy_cpu: float | None
    requests_per_core_second: float | None
    peak_rss: float | None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(summaries: Mapping[str, Summary]) -> list[Comparison]:
    """nfork/nginx ratios for every scenario run by both."""
    comparisons = []
    for scenario_id, nfork in summaries.items():
        info = _SCENARIOS[scenario_id]
        if info.proxy != "nfork" or info.peer is None or info.peer not in summaries:
            continue
        peer = summaries[info.peer]
        comparisons.append(
            Comparison(
                scenario=scenario_id,
                peer=info.peer,
                requests_per_second=nfork.requests_per_second / peer.requests_per_second
                if peer.requests_per_second
                else 0.0,
                p50=nfork.p50_ms / peer.p50_ms if peer.p50_ms else 0.0,
                p99=nfork.p99_ms / peer.p99_ms if peer.p99_ms else 0.0,
                proxy_cpu=_ratio(nfork.proxy_cpu_percent, peer.proxy_cpu_percent),
                requests_per_core_second=_ratio(
                    nfork.requests_per_core_second, peer.requests_per_core_second
                ),
                peak_rss=_ratio(nfork.proxy_peak_rss_mib, peer.proxy_peak_rss_mib),
            )
        )
    return comparisons


@frozen
class Target:
    """One of issue 6's targets and whether this run meets it."""

    text: str
    value: str
    met: bool


def targets(summaries: Mapping[str, Summary]) -> list[Target]:
    """The targets (issues 6 and 14) that the scenarios run allow to check."""
    found = []
    s3 = summaries.get("3")
    if s3 and "6.3" in summaries:
        ratio = s3.requests_per_second / summaries["6.3"].requests_per_second
        found.append(
            Target(
                "scenario 3 req/s >= 0.6x nginx mirror", f"{ratio:.2f}x", ratio >= 0.6
            )
        )
    for sid in ("4", "5"):
        s = summaries.get(sid)
        if s is None or s3 is None:
            continue
        rate = s.requests_per_second / s3.requests_per_second
        found.append(
            Target(
                f"scenario {sid} req/s >= 0.9x scenario 3", f"{rate:.2f}x", rate >= 0.9
            )
        )
        p99 = s.p99_ms / s3.p99_ms if s3.p99_ms else float("inf")
        found.append(
            Target(f"scenario {sid} p99 <= 1.5x scenario 3", f"{p99:.2f}x", p99 <= 1.5)
        )
    s8, s9 = summaries.get("8"), summaries.get("9")
    if s8 and s9:
        rate = s9.requests_per_second / s8.requests_per_second
        found.append(
            Target(
                "scenario 9 (compared) req/s >= 0.8x scenario 8",
                f"{rate:.2f}x",
                rate >= 0.8,
            )
        )
    s10, s11 = summaries.get("10"), summaries.get("11")
    if s10 and s11:
        rate = s11.requests_per_second / s10.requests_per_second
        found.append(
            Target(
                "scenario 11 (2 workers) req/s >= 1.3x scenario 10 (1 worker)",
                f"{rate:.2f}x",
                rate >= 1.3,
            )
        )
    return found


def cpu_split_text(split: Sequence[float]) -> str:
    """nfork's CPU by process: C{parent 2%, workers 91% + 89%}."""
    parent, *workers = split
    text = f"parent {parent:.0f}%"
    if workers:
        text += ", workers " + " + ".join(f"{w:.0f}%" for w in workers)
    return text


def _cpu_splits(summaries: Mapping[str, Summary]) -> list[str]:
    """One line per nfork scenario run with worker processes: whose CPU it was."""
    lines = []
    for sid, s in summaries.items():
        info = _SCENARIOS[sid]
        if info.proxy != "nfork" or not info.workers or info.workers < 2:
            continue
        split = (
            "n/a" if s.proxy_cpu_split is None else cpu_split_text(s.proxy_cpu_split)
        )
        lines.append(f"- scenario {sid}: {split}")
    if not lines:
        return []
    return ["", "nfork's CPU by process (% of one core, medians):", "", *lines]


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    return (
        f"{value:.2f}"
        if value < 10
        else f"{value:.1f}"
        if value < 100
        else f"{value:.0f}"
    )


def _mib(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def _ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _slash(values: Mapping[str, int], names: Sequence[str]) -> str:
    return " / ".join(f"{values[n]:,}" for n in names)


def _duplication(summary: Summary) -> str:
    if not summary.missing:
        return "n/a"
    worst = max(summary.missing.values(), key=abs)
    note = "" if summary.dropped is not None else " (drops unknown)"
    return "ok" if worst == 0 else f"{worst:+,} missing{note}"


NOISY_NEIGHBOURS = 20.0
"""Other processes' CPU (% of one core) beyond which the report warns."""


def _neighbours(summaries: Mapping[str, Summary]) -> str:
    """One line on the CPU other processes (or machines) took during the runs."""
    if not summaries:
        return ""
    worst = max(summaries.values(), key=lambda s: s.other_cpu_percent)
    steal = max(s.steal_percent for s in summaries.values())
    text = (
        f"Other processes used at most {worst.other_cpu_percent:.0f}% of a core "
        f"during a run (scenario {worst.scenario}); CPU steal at most {steal:.0f}%."
    )
    if worst.other_cpu_percent > NOISY_NEIGHBOURS or steal > NOISY_NEIGHBOURS:
        text = f"**Noisy machine: figures vary more than usual.** {text}"
    return text


def _problems(summaries: Mapping[str, Summary]) -> list[str]:
    """Warnings about proxies that logged errors or did not stop when asked."""
    lines = []
    for sid, s in summaries.items():
        if s.log_problems:
            lines.append(
                f"**Scenario {sid}: nfork logged {len(s.log_problems)} warning or "
                f"error line(s)**, the first: `{s.log_problems[0][:200]}`"
            )
        if s.clean_stops is False:
            lines.append(
                f"**Scenario {sid}: the proxy did not exit within 5 s of SIGTERM "
                "and was killed.**"
            )
    return ["", *lines] if lines else []


def markdown(
    summaries: Mapping[str, Summary], header: Sequence[str], rounds: int
) -> str:
    """The report: the scenario table, the nfork/nginx ratios and the targets."""
    lines = [*header, ""]
    spread = " ±" if rounds > 1 else ""
    lines += [
        f"| # | scenario | proxy | req/s{spread} | MiB/s | p50 ms | p99 ms "
        "| proxy CPU % "
        "| req/s per core | peak RSS MiB | requests received (active / shadows) "
        "| shadow drops | duplication | conns opened | peak open conns | errors "
        "| others' CPU % |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|---|---|---|--:|--:|",
    ]
    for sid, s in summaries.items():
        info = _SCENARIOS[sid]
        rate = f"{s.requests_per_second:,.0f}"
        if rounds > 1:
            rate += f" ±{s.spread_percent:.0f}%"
        drops = (
            "-"
            if not info.shadows
            else "n/a"
            if s.dropped is None
            else _slash(s.dropped, info.shadows)
        )
        lines.append(
            f"| {sid} | {info.title} | {info.proxy} | {rate} "
            f"| {_mib(s.mib_per_second)} | {_ms(s.p50_ms)} "
            f"| {_ms(s.p99_ms)} | {_num(s.proxy_cpu_percent)} "
            f"| {_num(s.requests_per_core_second)} | {_num(s.proxy_peak_rss_mib, 1)} "
            f"| {_slash(s.received, info.outbounds)} | {drops} "
            f"| {_duplication(s) if info.shadows else '-'} "
            f"| {_slash(s.connections, info.outbounds)} "
            f"| {_slash(s.peak_connections, info.outbounds)} | {s.client_errors:,} "
            f"| {s.other_cpu_percent:.0f} |"
        )
    lines += ["", _neighbours(summaries), *_cpu_splits(summaries)]
    lines += _problems(summaries)
    comparisons = compare(summaries)
    if comparisons:
        lines += [
            "",
            "nfork / nginx mirror, same scenario (ratios of the medians; "
            "> 1 is better for nfork in req/s and req/s per core, < 1 elsewhere):",
            "",
            "| scenario | nfork req/s | nginx req/s | req/s | p50 | p99 "
            "| CPU | req/s per core | peak RSS |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for c in comparisons:
            lines.append(
                f"| {c.scenario} vs {c.peer} "
                f"| {summaries[c.scenario].requests_per_second:,.0f} "
                f"| {summaries[c.peer].requests_per_second:,.0f} "
                f"| {c.requests_per_second:.2f}x | {c.p50:.2f}x | {c.p99:.2f}x "
                f"| {_ratio_text(c.proxy_cpu)} "
                f"| {_ratio_text(c.requests_per_core_second)} "
                f"| {_ratio_text(c.peak_rss)} |"
            )
    found = targets(summaries)
    if found:
        lines += ["", "Targets (issues 6, 14 and 16):", ""]
        lines += [
            f"- {t.text}: {t.value} ({'met' if t.met else 'NOT met'})" for t in found
        ]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    return asdict(value) if hasattr(value, "__attrs_attrs__") else value


def write_json(
    directory: Path,
    started: datetime,
    parameters: Mapping[str, Any],
    environment: Mapping[str, Any],
    runs: Sequence[RunResult],
    summaries: Mapping[str, Summary],
) -> Path:
    """Write everything to C{<directory>/bench-<UTC time>.json}; return its path."""
    document = {
        "started": started.isoformat(),
        "parameters": dict(parameters),
        "environment": dict(environment),
        "runs": [_jsonable(run) for run in runs],
        "summary": {sid: _jsonable(s) for sid, s in summaries.items()},
        "comparisons": [_jsonable(c) for c in compare(summaries)],
        "targets": [_jsonable(t) for t in targets(summaries)],
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
