"""The C{nfork} command: subcommands that are not the proxy itself.

The proxy runs under twistd (C{twistd nfork --config FILE}); this command
holds the tools around it: C{nfork replay}, C{nfork compare} and C{nfork ctl}.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

from twisted.internet.task import react

from nfork import __version__
from nfork.config.durations import parse_duration
from nfork.tools.ctl import add_ctl_parser, run_ctl

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
    replay.add_argument(
        "--compare",
        action="store_true",
        help="compare the target's answers with those recorded (by a sink "
        'with "answers": true) and print the comparison report',
    )
    replay.add_argument(
        "--compare-settings",
        metavar="JSON_FILE",
        help="with --compare: a JSON file holding a compare object, as in an "
        'inbound\'s "compare" (ignoreHeaders, ignore, endpoints, maxBody, '
        "samples, relative, absolute)",
    )
    replay.add_argument(
        "--fail-on",
        choices=["difference"],
        help="with --compare: exit with status 1 when a field is reported as "
        "a difference",
    )
    compare = commands.add_parser(
        "compare",
        help="print a running nfork's comparison report; a release gate",
        description="Fetch an inbound's comparison report from nfork's control "
        "API and print it: per candidate, endpoints by difference rate, their "
        "top fields with one example each. Exit status: 0; 1 with --fail-on "
        "difference when a field is reported as a difference; 2 when the "
        "report cannot be had.",
    )
    compare.add_argument("inbound", metavar="INBOUND", help="the inbound's name")
    compare.add_argument(
        "--control",
        required=True,
        metavar="URL",
        help="the control API: http(s)://host:port (twistd nfork's --control)",
    )
    compare.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding the control API's token (--control-token-file)",
    )
    compare.add_argument("--json", action="store_true", help="print the report as JSON")
    compare.add_argument(
        "--fail-on",
        choices=["difference"],
        help="exit with status 1 when any field is reported as a difference",
    )
    compare.add_argument(
        "--top",
        type=_positive(int),
        default=5,
        metavar="N",
        help="fields shown per endpoint (default 5)",
    )
    compare.add_argument(
        "--timeout",
        type=_duration,
        default=10.0,
        metavar="DURATION",
        help="how long each request to the API may take (default 10s)",
    )
    add_ctl_parser(commands)
    return top


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the C{nfork} console script."""
    args = parser().parse_args(argv)
    if args.command == "replay":
        _replay(args)
    elif args.command == "compare":
        _compare(args)
    elif args.command == "ctl":
        run_ctl(args)


def _compare(args: argparse.Namespace) -> None:
    from nfork.tools.compare import CompareOptions, compare_main, read_token_file
    from nfork.tools.replay import target_url

    try:
        control = target_url(args.control)
    except ValueError as e:
        parser().error(f"--control: {e}")
    token = None
    if args.token_file is not None:
        try:
            token = read_token_file(args.token_file)
        except ValueError as e:
            parser().error(f"--token-file: {e}")
    options = CompareOptions(
        control=control,
        inbound=args.inbound,
        token=token,
        as_json=args.json,
        fail_on_difference=args.fail_on == "difference",
        top_fields=args.top,
        timeout=args.timeout,
    )
    react(compare_main, (options,))


def _replay(args: argparse.Namespace) -> None:
    from nfork.tools.replay import ReplayOptions, replay_main, target_url

    try:
        target = target_url(args.to)
    except ValueError as e:
        parser().error(f"--to: {e}")
    for path in args.files:
        if not os.access(path, os.R_OK) or os.path.isdir(path):
            parser().error(f"cannot read the recording {path!r}")
    compare = None
    for given, option in (
        (args.compare_settings, "--compare-settings"),
        (args.fail_on, "--fail-on"),
    ):
        if given is not None and not args.compare:
            parser().error(f"{option} goes with --compare")
    if args.compare:
        from nfork.config.compare import CompareConfig
        from nfork.tools.replay_compare import read_compare_settings

        compare = CompareConfig()
        if args.compare_settings is not None:
            try:
                compare = read_compare_settings(args.compare_settings)
            except ValueError as e:
                parser().error(f"--compare-settings: {e}")
    options = ReplayOptions(
        files=tuple(args.files),
        target=target,
        speed=args.speed,
        rate=args.rate,
        concurrency=args.concurrency,
        timeout=args.timeout,
        compare=compare,
        fail_on_difference=args.fail_on == "difference",
    )
    react(replay_main, (options,))
