"""The test suite's own option: --nfork-workers, the twistd marker, the skips.

Each test runs pytest on a few of the suite's modules in a subprocess
(collection only, or a skipped test), so nothing here starts twistd.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import process

ROOT = Path(__file__).resolve().parent.parent


def _pytest(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_twistd_marker_selects_the_modules_that_start_twistd() -> None:
    result = _pytest(
        "--collect-only",
        "-q",
        "-m",
        "twistd",
        "tests/proxy/test_stress.py",
        "tests/tools/test_ctl_instances.py",
        "tests/outbounds/test_sinks_file.py",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    selected = [line for line in result.stdout.splitlines() if "::" in line]
    modules = {line.split("::")[0] for line in selected}
    assert modules == {
        "tests/proxy/test_stress.py",
        "tests/tools/test_ctl_instances.py",
    }
    assert "deselected" in result.stdout


def test_single_process_tests_are_skipped_with_workers_and_say_why() -> None:
    result = _pytest("-q", "-rs", "--nfork-workers", "2", "tests/proxy/test_stress.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "with --nfork-workers 2: the RSS bound is one process's" in result.stdout


def test_the_option_needs_a_number_of_workers() -> None:
    for value in ("0", "two"):
        result = _pytest("--collect-only", "-q", "--nfork-workers", value)
        assert result.returncode != 0
        assert "--nfork-workers" in result.stderr


def test_twistd_gets_workers_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "workers", None)
    assert process.workers_args() == []
    monkeypatch.setattr(process, "workers", 3)
    assert process.workers_args() == ["--workers", "3"]
