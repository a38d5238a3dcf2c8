"""docs/grafana/nfork.json: a board Grafana imports as is, querying real metrics.

The structure is checked as Grafana needs it (the datasource input, panels
with targets, the template variables).  Every PromQL expression is parsed
with a real PromQL parser, and every metric it selects, with every label it
matches or groups by, must be in the C{/metrics} of a real twistd nfork that
has served traffic: an inbound whose shadow is compared (so the comparison
metrics exist) and skipped a request (its body over C{mirrorBody}).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from tests.support.backends import ThreadedBackend
from tests.support.configs import inbound_json
from tests.support.running_nfork import running_nfork
from tests.support.waiting import poll_until

BOARD = Path(__file__).parents[2] / "docs" / "grafana" / "nfork.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SCRAPE_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped sample."""
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
}
"""Grafana's own variables, as Grafana replaces them before querying."""


def board() -> dict[str, Any]:
    with BOARD.open() as f:
        data = json.load(f)
    assert isinstance(data, dict)
    return data


def panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows excluded, their nested panels included)."""
    found = []
    for panel in data["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def expressions(data: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the board: the panels' and the variables'."""
    exprs = [target["expr"] for panel in panels(data) for target in panel["targets"]]
    for variable in data["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        exprs.append(match.group(1))
    return exprs


def parse(expr: str) -> Any:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)


def selectors(node: Any) -> Iterator[tuple[str, set[str]]]:
    """C{(metric, labels it uses)} for each selector; grouping labels go
    with every selector beneath the aggregation or operator using them."""
    if isinstance(node, promql_parser.VectorSelector):
        assert node.name is not None, "a selector must name its metric"
        yield node.name, {m.name for m in node.matchers.matchers}
    elif isinstance(node, promql_parser.MatrixSelector):
        yield from selectors(node.vector_selector)
    elif isinstance(node, promql_parser.AggregateExpr):
        grouping = set(node.modifier.labels) if node.modifier else set()
        for name, labels in selectors(node.expr):
            yield name, labels | grouping
    elif isinstance(node, promql_parser.BinaryExpr):
        matching = set()
        if node.modifier is not None and node.modifier.matching is not None:
            matching = set(node.modifier.matching.labels)
        for side in (node.lhs, node.rhs):
            for name, labels in selectors(side):
                yield name, labels | matching
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from selectors(arg)
    elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr)):
        yield from selectors(node.expr)


def exposed(metrics_text: str) -> dict[str, set[str]]:
    """The sample names of a C{/metrics} text, with the labels each one has."""
    found: dict[str, set[str]] = {}
    for line in metrics_text.splitlines():
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s", line)
        if line.startswith("#") or not match:
            continue
        labels = re.findall(r'(\w+)="', match.group(2) or "")
        found.setdefault(match.group(1), set()).update(labels)
    return found


def test_the_board_is_importable_as_is() -> None:
    data = board()
    assert data["title"] == "nfork"
    assert data["uid"] == "nfork"
    assert data["id"] is None  # a new dashboard on import
    assert data["schemaVersion"] >= 36
    [source] = data["__inputs"]
    assert source == {
        "name": "DS_PROMETHEUS",
        "label": "Prometheus",
        "description": source["description"],
        "type": "datasource",
        "pluginId": "prometheus",
        "pluginName": "Prometheus",
    }
    required = {(r["type"], r["id"]) for r in data["__requires"]}
    used = {("panel", panel["type"]) for panel in panels(data)}
    assert used <= required
    assert ("datasource", "prometheus") in required


def test_every_panel_queries_prometheus_and_fits_the_grid() -> None:
    data = board()
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids))
    queried = panels(data)
    assert len(queried) >= 10
    for panel in queried:
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"] == DATASOURCE, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24
        assert grid["h"] > 0 and grid["y"] >= 0
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
            # Every query follows the board's inbound selection.
            assert '"$inbound"' in target["expr"], target["expr"]


def test_the_inbound_and_outbound_variables() -> None:
    variables = {v["name"]: v for v in board()["templating"]["list"]}
    assert set(variables) == {"inbound", "outbound"}
    for variable in variables.values():
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["includeAll"] and variable["multi"]
        assert variable["query"]["query"] == variable["definition"]
    assert '"$inbound"' in variables["outbound"]["definition"]


def test_every_expression_parses_as_promql() -> None:
    for expr in expressions(board()):
        parse(expr)  # raises on a syntax error


def test_the_board_covers_every_figure_nfork_exports() -> None:
    """Each nfork metric of docs/api.md's table has a panel."""
    used = {name for expr in expressions(board()) for name, _ in selectors(parse(expr))}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    listed = set(
        re.findall(
            r"^\| `(nfork_\w+)`",
            (BOARD.parents[1] / "api.md").read_text(),
            re.MULTILINE,
        )
    )
    assert listed
    assert listed <= families, listed - families


@pytest.fixture(scope="module")
def metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """The metrics of a real nfork after traffic, compared and skipped."""
    prod = ThreadedBackend(body='{{"from": "prod", "path": "{path}"}}').start()
    staging = ThreadedBackend(body='{{"from": "staging", "path": "{path}"}}').start()
    web = inbound_json(
        "web",
        out={"prod": prod.address, "staging": staging.address},
        compare={"candidates": ["staging"]},
        mirrorBody=16,
    )
    try:
        with running_nfork(tmp_path_factory.mktemp("grafana"), web) as nfork:
            for index in range(3):
                nfork.send("web", f"/items/{index}")
            nfork.send("web", "/upload", data=b"x" * 100)  # over mirrorBody

            def compared() -> bool:
                return "nfork_compare_endpoint_differing_total{" in nfork.metrics()

            assert poll_until(compared, timeout=10)
            yield exposed(nfork.metrics())
    finally:
        prod.stop()
        staging.stop()


def test_every_metric_and_label_queried_is_in_metrics(
    metrics: dict[str, set[str]],
) -> None:
    checked = set()
    for expr in expressions(board()):
        for name, labels in selectors(parse(expr)):
            assert name in metrics, f"{name} (in {expr}) is not in /metrics"
            known = metrics[name] | SCRAPE_LABELS
            if name.endswith("_bucket"):
                known = known | {"le"}
            assert labels <= known, f"{expr}: {labels - known} not labels of {name}"
            checked.add(name)
    assert "nfork_compare_endpoint_differing_total" in checked
    assert "nfork_outbound_latency_seconds_bucket" in checked
