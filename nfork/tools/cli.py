"""The C{nfork} command: subcommands that are not the proxy itself.

The proxy runs under twistd (C{twistd nfork --config FILE}); this command
holds the tools around it, for now C{nfork replay}.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

from twisted.internet.task import react

from nfork import __version__
from nfork.config.durations import parse_duration

__all__ = ["main", "parser"]


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    """An argparse type: a number of C{kind} greater than zero."""

    def convert(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than zero, got {text!r}")
    return seconds


def parser() -> argparse.ArgumentParser:
    """The command line of C{nfork} and its subcommands."""
    top = argparse.ArgumentParser(
        prog="nfork",
        description="Tools around the nfork proxy (which runs as "
        "`twistd nfork --config FILE`).",
    )
    top.add_argument("--version", action="version", version=f"nfork {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    replay = commands.add_parser(
        "replay",
        help="send the requests of a file:// recording to a target",
        description="Send the requests recorded by a file:// sink to a target, "
        "at the recorded pace (scaled by --speed) or at a fixed --rate, and "
        "print a summary. Ctrl-C stops at once, with the summary.",
    )
    replay.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="recording(s) in JSON lines; several are replayed in the order "
        "given (e.g. traffic.jsonl.1 traffic.jsonl)",
    )
    replay.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the target: http(s)://host[:port][/prefix]",
    )
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=_positive(float),
        default=1.0,
        metavar="X",
        help="multiply the recorded pace by X (default 1: as recorded; 2: "
        "twice as fast)",
    )
    pace.add_argument(
        "--rate",
        type=_positive(float),
        metavar="N",
        help="send N requests per second, ignoring the recorded times",
    )
    replay.add_argument(
        "--concurrency",
        type=_positive(int),
        default=10,
        metavar="C",
        help="requests in flight at most (default 10)",
    )
    replay.add_argument(
        "--timeout",
        type=_duration,
        default=30.0,
        metavar="DURATION",
        help="how long a request may take, e.g. 5s (default 30s)",
    )
    return top


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the C{nfork} console script."""
    args = parser().parse_args(argv)
    if args.command == "replay":
        _replay(args)


def _replay(args: argparse.Namespace) -> None:
    from nfork.tools.replay import ReplayOptions, replay_main, target_url

    try:
        target = target_url(args.to)
    except ValueError as e:
        parser().error(f"--to: {e}")
    for path in args.files:
        if not os.access(path, os.R_OK) or os.path.isdir(path):
            parser().error(f"cannot read the recording {path!r}")
    options = ReplayOptions(
        files=tuple(args.files),
        target=target,
        speed=args.speed,
        rate=args.rate,
        concurrency=args.concurrency,
        timeout=args.timeout,
    )
    react(replay_main, (options,))
