"""The comparison report as text: ordering, alignment, examples, verdicts."""

from __future__ import annotations

from typing import Any

from nfork.compare.text import (
    difference_fields,
    example_values,
    format_report,
    has_difference,
)


def field(raw: int, noise: int, verdict: str, **kinds: int) -> dict[str, Any]:
    return {"raw": raw, "noise": noise, "verdict": verdict, "kinds": kinds}


def endpoint(
    requests: int, differing: int, fields: dict[str, Any], truncated: int = 0
) -> dict[str, Any]:
    return {
        "requests": requests,
        "differing": differing,
        "truncated": truncated,
        "fields": fields,
    }


REPORT: dict[str, Any] = {
    "inbound": "shop",
    "primary": "prod",
    "baseline": "prod-2",
    "candidates": {
        "staging": {
            "compared": 300,
            "differing": 60,
            "skipped": 4,
            "endpoints": {
                "GET /users/:int": endpoint(
                    200,
                    10,
                    {
                        "$.id": field(200, 200, "noise", value=200),
                        "$.name": field(10, 0, "difference", missing=10),
                    },
                ),
                "POST /orders": endpoint(
                    100,
                    50,
                    {"$.total": field(50, 0, "difference", type=50)},
                    truncated=2,
                ),
                "GET /health": endpoint(0, 0, {}),
            },
        }
    },
}


def test_endpoints_are_sorted_by_difference_rate() -> None:
    text = format_report(REPORT)
    assert text.index("POST /orders") < text.index("GET /users/:int")
    assert text.index("GET /users/:int") < text.index("GET /health")


def test_columns_are_aligned() -> None:
    lines = format_report(REPORT).splitlines()
    table = [line for line in lines if line.startswith("  ") and "/" in line]
    table = [line for line in table if not line.startswith("      ")]
    header = next(line for line in lines if line.strip().startswith("endpoint"))
    # The requests column ends at the same place on every row.
    end = header.index("requests") + len("requests")
    for row in table:
        assert row[:end].rstrip()[-1].isdigit(), row
        assert row[end] == " ", row
    assert "50.0%" in next(row for row in table if "POST /orders" in row)
    assert "5.0%" in next(row for row in table if "GET /users" in row)


def test_differences_come_first_within_an_endpoint() -> None:
    text = format_report(REPORT)
    users = text[text.index("GET /users/:int") :]
    assert users.index("$.name") < users.index("$.id")
    line = next(line for line in text.splitlines() if "$.name" in line)
    assert line.split() == [
        "difference",
        "$.name",
        "raw",
        "10",
        "noise",
        "0",
        "missing",
        "10",
    ]


def test_top_fields_bounds_the_fields_shown() -> None:
    fields = {f"$.f{i}": field(i, 0, "noise", value=i) for i in range(1, 9)}
    report = {
        "candidates": {
            "c": {"compared": 8, "endpoints": {"GET /": endpoint(8, 0, fields)}}
        }
    }
    text = format_report(report, top_fields=3)
    assert "$.f8" in text and "$.f6" in text
    assert "$.f5" not in text
    assert "... 5 more fields" in text


def test_a_summary_line_per_candidate_and_the_verdict() -> None:
    text = format_report(REPORT)
    lines = text.splitlines()
    assert lines[0] == "inbound shop, primary prod, baseline prod-2"
    assert (
        "candidate staging: 300 compared, 60 differing (20.0%), 4 skipped, "
        "2 of 3 endpoints with differences"
    ) in lines
    assert lines[-1] == "verdict: DIFFERENCE (staging)"


def test_examples_are_shown_under_difference_fields_only() -> None:
    asked = []

    def example(candidate: str, endpoint: str, field: str) -> tuple[object, object]:
        asked.append((candidate, endpoint, field))
        return ("Ann", None) if field == "$.name" else (12.5, "x" * 100)

    text = format_report(REPORT, example=example)
    assert sorted(asked) == [
        ("staging", "GET /users/:int", "$.name"),
        ("staging", "POST /orders", "$.total"),
    ]
    lines = text.splitlines()
    name = next(i for i, line in enumerate(lines) if "$.name" in line)
    assert lines[name + 1].split() == ["primary:", '"Ann"']
    assert lines[name + 2].split() == ["candidate:", "null"]
    long = next(line for line in lines if "candidate:" in line and "xxx" in line)
    assert long.endswith("xxx...")
    assert len(long.split("candidate:")[1].strip()) == 60


def test_an_example_that_is_not_found_is_left_out() -> None:
    text = format_report(REPORT, example=lambda c, e, f: None)
    assert "primary:" not in text


def test_noise_only_means_no_difference() -> None:
    report = {
        "candidates": {
            "c": {
                "compared": 5,
                "endpoints": {"GET /": endpoint(5, 0, {"$.t": field(5, 5, "noise")})},
            }
        }
    }
    assert not has_difference(report)
    assert format_report(report).splitlines()[-1] == "verdict: no difference"


def test_has_difference_finds_any_difference_verdict() -> None:
    assert has_difference(REPORT)
    assert not has_difference({})
    assert not has_difference({"candidates": {"c": {"endpoints": {}}}})


def test_empty_and_partial_reports_still_print() -> None:
    assert format_report({}).splitlines() == [
        "no candidate compared",
        "",
        "verdict: nothing compared yet",
    ]
    text = format_report({"candidates": {"c": {"endpoints": {"GET /": {}}}}})
    assert "candidate c: 0 compared, 0 differing (-), 0 skipped" in text
    assert text.endswith("verdict: nothing compared yet\n")


def test_a_report_without_baseline_says_so() -> None:
    report = {"inbound": "shop", "primary": "prod", "baseline": None}
    assert format_report(report).splitlines()[0] == (
        "inbound shop, primary prod, no baseline"
    )


def test_example_values_come_from_the_first_sample_showing_the_field() -> None:
    samples: list[dict[str, Any]] = [
        {"differences": [{"field": "$.a", "primary": 1, "candidate": 2}]},
        {"differences": [{"field": "$.b", "primary": "x", "candidate": None}]},
        {"differences": [{"field": "$.b", "primary": "y", "candidate": "z"}]},
    ]
    assert example_values(samples, "$.b") == ("x", None)
    assert example_values(samples, "$.c") is None
    assert example_values([{"differences": "garbage"}, {}], "$.a") is None


def test_difference_fields_are_those_shown_with_an_example() -> None:
    assert sorted(difference_fields(REPORT)) == [
        ("staging", "GET /users/:int", "$.name"),
        ("staging", "POST /orders", "$.total"),
    ]
    fields = {f"$.f{i}": field(i, 0, "difference") for i in range(1, 9)}
    report = {"candidates": {"c": {"endpoints": {"GET /": endpoint(8, 8, fields)}}}}
    assert difference_fields(report, top_fields=2) == [
        ("c", "GET /", "$.f8"),
        ("c", "GET /", "$.f7"),
    ]
    assert difference_fields({}) == []
