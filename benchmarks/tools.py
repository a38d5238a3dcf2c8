"""Find the external tools the benchmark needs (wrk, nginx) or say how to get them.

nginx serves every backend that answers, the 200 ms one included: that one
needs nginx's C{echo} module (C{echo_sleep}), which Debian ships as
C{libnginx-mod-http-echo} (a dependency of C{nginx-light}).

C{python -m benchmarks.tools} is the check C{make bench} runs first: it exits
0 when every tool is there; otherwise it prints the exact C{apt-get} line and
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

PACKAGES = ("wrk", "nginx-light", "libnginx-mod-http-echo")
"""Debian packages providing the tools."""

INSTALL_COMMAND = "apt-get install -y " + " ".join(PACKAGES)
"""The exact line that installs them (after C{apt-get update})."""

SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
"""nginx lives in sbin, which is not in a normal user's PATH on Debian."""

ECHO_MODULE = "ngx_http_echo_module.so"
"""The file name of nginx's dynamic echo module."""

DEFAULT_MODULES_PATH = "/usr/lib/nginx/modules"
"""Where Debian's nginx looks for dynamic modules (when C{nginx -V} does not say)."""


@frozen
class Tools:
    """Where wrk, nginx and nginx's echo module are, C{None} for a missing one."""

    wrk: str | None
    nginx: str | None
    echo_module: str | None = None
    """The module file to C{load_module}, or C{""} when nginx has echo built in."""

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of the tools not found (the module only counts with an nginx)."""
        found = [("wrk", self.wrk), ("nginx", self.nginx)]
        if self.nginx is not None:
            found.append(("nginx's echo module", self.echo_module))
        return tuple(name for name, path in found if path is None)

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
    nginx = shutil.which("nginx", path=nginx_search)
    return Tools(
        wrk=shutil.which("wrk", path=search),
        nginx=nginx,
        echo_module=None if nginx is None else find_echo_module(nginx),
    )


def find_echo_module(nginx: str) -> str | None:
    """The echo module C{nginx} can load: a path, C{""} if built in, else C{None}.

    C{nginx -V} tells how the binary was built: an C{--add-module} of echo
    means it is already in; otherwise the module file is looked for in the
    C{--modules-path} it names (Debian's by default).
    """
    try:
        built = subprocess.run(
            [nginx, "-V"], capture_output=True, text=True, timeout=10, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    modules = DEFAULT_MODULES_PATH
    for option in built.split():
        if option.startswith("--add-module=") and "echo" in option:
            return ""
        if option.startswith("--modules-path="):
            modules = option.split("=", 1)[1]
    candidate = os.path.join(modules, ECHO_MODULE)
    return candidate if os.path.isfile(candidate) else None


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
