"""Running C{nfork ctl} in the test's own process, on the real reactor."""

from __future__ import annotations

import io
from typing import cast

from twisted.internet import reactor

from nfork.tools.cli import parser
from nfork.tools.ctl import ctl_main, ctl_options


async def run_ctl(*argv: str) -> tuple[int, str, str]:
    """C{(exit status, stdout, stderr)} of C{nfork ctl ARGV}."""
    args = parser().parse_args(["ctl", *argv])
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        await ctl_main(reactor, ctl_options(args, {}), stdout=stdout, stderr=stderr)
        status = 0
    except SystemExit as e:
        status = cast(int, e.code)
    return status, stdout.getvalue(), stderr.getvalue()
