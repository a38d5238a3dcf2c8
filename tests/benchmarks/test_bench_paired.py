"""The paired measurement of the slow shadow (C{benchmarks.paired})."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import paired
from benchmarks.paired import Window, pair_ratios, pooled_ratio, report
from benchmarks.tools import INSTALL_COMMAND, Tools


def _windows() -> list[Window]:
    # Two pairs: the slow window costs 25% more CPU per request, then 0%.
    return [
        Window("fast3", 1000, 1000, 0.200, 1.0),
        Window("slow", 800, 800, 0.200, 1.0),
        Window("fast3", 500, 500, 0.150, 1.0),
        Window("slow", 500, 500, 0.150, 1.0),
    ]


def test_ratio_is_fast_cpu_per_request_over_slow() -> None:
    """Each fast window is paired with the slow window after it."""
    assert pair_ratios(_windows()) == pytest.approx([0.8, 1.0])


def test_pooled_ratio_weighs_windows_by_their_requests() -> None:
    """(0.35 s / 1,500 requests) / (0.35 s / 1,300 requests)."""
    assert pooled_ratio(_windows()) == pytest.approx(1300 / 1500)


def test_report_lists_pairs_and_both_ratios() -> None:
    text = report(_windows(), 0.15)
    assert "| 1 | 200 | 1,000 | 250 | 800 | 0.800 |" in text
    assert "| 2 | 300 | 500 | 300 | 500 | 1.000 |" in text
    assert "with the 150 ms shadow" in text
    assert "0.867 over all 2 pairs' CPU and requests" in text
    assert "median of the pairs 0.900" in text


def test_a_window_without_requests_costs_infinitely_much() -> None:
    assert Window("slow", 0, 0, 0.1, 1.0).cpu_per_request == float("inf")


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--pairs", "0"], ["--delay", "0"], ["--window", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            paired.parse_args(bad)
        assert exit_.value.code == 2
        assert "--pairs must be >= 1" in capsys.readouterr().err


def test_paired_run_refuses_to_run_without_wrk(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code = paired.main(["--pairs", "1", "--results-dir", str(tmp_path)])
    assert code == 2
    assert INSTALL_COMMAND in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_paired_run_switches_the_shadow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_tools: Tools
) -> None:
    """One short pair on real backends: each window's copies went where said.

    Needs wrk, nginx and its echo module (skipped without them).
    """
    argv = ["--pairs", "1", "--settle", "0.4", "--window", "0.6"]
    code = paired.main([*argv, "--results-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    (path,) = tmp_path.glob("paired-*.json")
    document = json.loads(path.read_text())
    fast, slow = document["windows"]
    assert (fast["backend"], slow["backend"]) == ("fast3", "slow")
    for window in (fast, slow):
        assert window["requests"] > 0, window
        assert window["cpu_seconds"] > 0, window
        # The switched outbound's copies reached the backend it was set to.
        assert window["copies"] > 0, window
    assert len(document["ratios"]) == 1
    assert document["pooled_ratio"] == pytest.approx(document["ratios"][0])
    assert "over all 1 pairs'" in out
