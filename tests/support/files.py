"""Files for tests that are not pytest functions (trial TestCases)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any


def temp_dir(case: Any) -> Path:
    """A fresh directory outside the work tree, removed after the test.

    C{case} is the trial TestCase, whose cleanups remove it (pytest
    functions use C{tmp_path} instead).
    """
    path = Path(tempfile.mkdtemp(prefix="nfork-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


def recording_files(path: Path) -> list[Path]:
    """The files a C{file://} sink at C{path} wrote: C{path} itself, or with
    worker processes one per worker (C{<stem>.w<k><suffix>})."""
    files = [path] if path.exists() else []
    files += sorted(path.parent.glob(f"{path.stem}.w*{path.suffix}"))
    return files


def recorded_lines(path: Path) -> list[bytes]:
    """Every line a C{file://} sink at C{path} wrote, whichever process wrote it."""
    lines: list[bytes] = []
    for file in recording_files(path):
        lines += file.read_bytes().splitlines()
    return lines
