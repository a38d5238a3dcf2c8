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
