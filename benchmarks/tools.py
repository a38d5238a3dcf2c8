"""Find the external tools the benchmark needs (wrk, nginx) or say how to get them.

C{python -m benchmarks.tools} is the check C{make bench} runs first: it exits
0 when both tools are there; otherwise it prints the exact C{apt-get} line and
exits 2, unless C{BENCH_INSTALL=1} is set and it runs as root, in which case
it installs them itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

from attrs import frozen

PACKAGES = ("wrk", "nginx-light")
"""Debian packages providing the tools."""

INSTALL_COMMAND = "apt-get install -y " + " ".join(PACKAGES)
"""The exact line that installs them (after C{apt-get update})."""

SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
"""nginx lives in sbin, which is not in a normal user's PATH on Debian."""


@frozen
class Tools:
    """Where wrk and nginx are, C{None} for a missing one."""

    wrk: str | None
    nginx: str | None

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of the tools not found."""
        return tuple(
            name
            for name, path in (("wrk", self.wrk), ("nginx", self.nginx))
            if path is None
        )

    def message(self) -> str:
        """What to tell the user when tools are missing (empty when none is)."""
        if not self.missing:
            return ""
        return (
            f"benchmark: missing {' and '.join(self.missing)}; install with:\n"
            f"  sudo apt-get update && sudo {INSTALL_COMMAND}\n"
            "(or run `make bench` as root with BENCH_INSTALL=1 to install them)\n"
        )


def find_tools(path: str | None = None, extra_dirs: Sequence[str] = SBIN_DIRS) -> Tools:
    """Locate wrk and nginx in C{path} (default C{$PATH}), nginx also in sbin."""
    search = os.environ.get("PATH", os.defpath) if path is None else path
    nginx_search = os.pathsep.join([search, *extra_dirs])
    return Tools(
        wrk=shutil.which("wrk", path=search),
        nginx=shutil.which("nginx", path=nginx_search),
    )


def ensure_tools(environ: Mapping[str, str] = os.environ) -> int:
    """The C{make bench} check: 0 when usable, else a message and exit status 2."""
    tools = find_tools()
    if not tools.missing:
        return 0
    if environ.get("BENCH_INSTALL") == "1" and os.geteuid() == 0:
        sys.stderr.write(f"benchmark: installing {' '.join(PACKAGES)}\n")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=apt_env)
        subprocess.run(INSTALL_COMMAND.split(), check=True, env=apt_env)
        tools = find_tools()
        if not tools.missing:
            return 0
    sys.stderr.write(tools.message())
    return 2


if __name__ == "__main__":
    raise SystemExit(ensure_tools())
