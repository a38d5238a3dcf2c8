"""C{nfork ctl}: nfork's control API from a terminal.

Each subcommand is one or two calls of the REST API (docs/api.md), made with
treq; the answer is printed as an aligned table or a line saying what
changed, or, with C{--json}, as the API's own JSON.  C{stats --watch}
redraws the stats table every second until Ctrl-C.

Where the API is: C{--control}, else C{$NFORK_CONTROL}, else
C{http://127.0.0.1:9090} (twistd nfork's default C{--control}).  With
C{--control} given several times (several nfork instances), the command is
sent to each in turn and each one's outcome is printed on a line of its
own, after its URL.  The token: the file named by C{--token-file}, else
C{$NFORK_TOKEN_FILE}.  Exit status: 0; 1 when the API refuses (its message
is printed), cannot be reached, or a file cannot be read (with several
instances: when any of them failed); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import treq
from attrs import evolve, frozen
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import (
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.error import (
    TimeoutError as ConnectTimeoutError,
)
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.http_headers import Headers

from nfork.tools.ctl_tables import inbounds_table, stats_table
from nfork.tools.token import read_token_file

__all__ = [
    "CLEAR",
    "DEFAULT_CONTROL",
    "ENV_CONTROL",
    "ENV_TOKEN_FILE",
    "FAILED",
    "CtlError",
    "CtlOptions",
    "add_ctl_parser",
    "control_url",
    "ctl_main",
    "ctl_options",
]

DEFAULT_CONTROL = "http://127.0.0.1:9090"
"""twistd nfork's default C{--control} address, as a URL."""
ENV_CONTROL = "NFORK_CONTROL"
"""The environment variable read when C{--control} is not given."""
ENV_TOKEN_FILE = "NFORK_TOKEN_FILE"
"""The environment variable read when C{--token-file} is not given."""
FAILED = 1
"""Exit status when the API refuses, cannot be reached, or a file cannot be read."""

CLEAR = "\x1b[H\x1b[2J"
"""Moves the cursor home and clears a terminal, before each redraw."""


class CtlError(Exception):
    """Why a subcommand failed, on one line, as printed after C{nfork ctl: }."""


@frozen
class CtlOptions:
    """What C{nfork ctl} was asked to do."""

    command: str
    """The subcommand: C{ls}, C{stats}, C{activate}, ..."""
    arguments: tuple[str, ...] = ()
    """The subcommand's positional arguments, in order."""
    control: str = DEFAULT_CONTROL
    """The control API's URL, C{http(s)://host:port}, no trailing slash."""
    controls: tuple[str, ...] = ()
    """Every instance's control URL, in order, when C{--control} was given
    more than once; else empty (C{control} alone)."""
    token_file: str | None = None
    as_json: bool = False
    watch: bool = False
    count: int | None = None
    """With C{watch}: stop after this many redraws (else at Ctrl-C)."""
    interval: float = 1.0
    """Seconds between redraws."""
    timeout: float = 10.0
    """Seconds each call of the API may take."""
    body: bytes | None = None
    """C{add}'s inbound, read once before it is sent to several instances."""


def control_url(text: str) -> str:
    """The control API's URL for C{--control}: C{host:port} or an http(s) URL.

    @raise ValueError: when it is neither.
    """
    url = text if "://" in text else f"http://{text}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected host:port or an http(s):// URL, got {text!r}")
    if parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"expected host:port or an http(s):// URL, got {text!r}")
    try:
        parts.port  # noqa: B018 - checks the port number
    except ValueError as e:
        raise ValueError(f"invalid control address {text!r}: {e}") from None
    return url.rstrip("/")


def _common_options(*, suppress: bool) -> argparse.ArgumentParser:
    """C{--control}, C{--token-file} and C{--json}, accepted before the
    subcommand and after it (where they do not override an earlier value
    unless given)."""
    default = argparse.SUPPRESS if suppress else None
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control",
        metavar="URL",
        action="append",
        # After the subcommand, a separate list: argparse would replace the
        # one given before it instead of adding to it.
        dest="control_after" if suppress else "control",
        default=default,
        help=f"the control API: host:port or http(s)://host:port (default: "
        f"${ENV_CONTROL}, else 127.0.0.1:9090); repeat it for several nfork "
        "instances: the command goes to each in turn",
    )
    common.add_argument(
        "--token-file",
        metavar="FILE",
        default=default,
        help=f"a file holding the API's token (twistd nfork's "
        f"--control-token-file; default: ${ENV_TOKEN_FILE})",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print the API's JSON instead of a table",
    )
    return common


def add_ctl_parser(commands: Any) -> argparse.ArgumentParser:
    """Add C{ctl} and its subcommands to C{nfork}'s subparsers."""
    ctl: argparse.ArgumentParser = commands.add_parser(
        "ctl",
        parents=[_common_options(suppress=False)],
        help="nfork's control API from a terminal: inbounds, stats, changes",
        description="Call a running nfork's control API: list the inbounds, "
        "show their stats (--watch: every second), switch the active outbound, "
        "add and remove outbounds and inbounds, show a comparison report; "
        "with --control repeated, on each nfork instance in turn. "
        "Exit status: 0; 1 when the API refuses (its message is printed) or "
        "cannot be reached (with several instances: any of them); 2 for a "
        "usage error.",
    )
    ctl.set_defaults(ctl_parser=ctl)
    after = [_common_options(suppress=True)]
    sub = ctl.add_subparsers(dest="ctl_command", metavar="SUBCOMMAND", required=True)
    sub.add_parser("ls", parents=after, help="list the inbounds and their outbounds")
    stats = sub.add_parser(
        "stats",
        parents=after,
        help="every outbound's stats, or one inbound's",
        description="Per outbound: requests, errors, timeouts, dropped, skipped "
        "and status codes since it was created; the rate and the p50/p99 "
        "latency of the last complete stats window. The active one is marked.",
    )
    stats.add_argument("inbound", nargs="?", metavar="INBOUND")
    stats.add_argument(
        "--watch", action="store_true", help="redraw every second until Ctrl-C"
    )
    stats.add_argument("--count", type=_positive_int, help=argparse.SUPPRESS)
    stats.add_argument("--interval", type=_positive_float, help=argparse.SUPPRESS)
    activate = sub.add_parser(
        "activate", parents=after, help="make an outbound the active one"
    )
    activate.add_argument("inbound", metavar="INBOUND")
    activate.add_argument("outbound", metavar="OUTBOUND")
    add_out = sub.add_parser(
        "add-out",
        parents=after,
        help="add or replace an outbound (a shadow)",
        description="ADDR is an address (localhost:8081, http://..., "
        "file:///...) or a JSON outbound object such as "
        '\'{"addr": "localhost:8081", "sample": 0.1}\'.',
    )
    add_out.add_argument("inbound", metavar="INBOUND")
    add_out.add_argument("outbound", metavar="NAME")
    add_out.add_argument("address", metavar="ADDR")
    rm_out = sub.add_parser("rm-out", parents=after, help="remove an outbound")
    rm_out.add_argument("inbound", metavar="INBOUND")
    rm_out.add_argument("outbound", metavar="NAME")
    add = sub.add_parser(
        "add",
        parents=after,
        help="add an inbound from a JSON file",
        description="FILE holds one inbound object, as in the config file "
        "(- reads it from standard input).",
    )
    add.add_argument("file", metavar="FILE")
    rm = sub.add_parser("rm", parents=after, help="remove an inbound")
    rm.add_argument("inbound", metavar="INBOUND")
    compare = sub.add_parser(
        "compare", parents=after, help="an inbound's comparison report"
    )
    compare.add_argument("inbound", metavar="INBOUND")
    return ctl


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


_ARGUMENTS = {
    "ls": (),
    "stats": ("inbound",),
    "activate": ("inbound", "outbound"),
    "add-out": ("inbound", "outbound", "address"),
    "rm-out": ("inbound", "outbound"),
    "add": ("file",),
    "rm": ("inbound",),
    "compare": ("inbound",),
}
"""Each subcommand's positional arguments, by their argparse names."""


def ctl_options(args: argparse.Namespace, environ: Mapping[str, str]) -> CtlOptions:
    """The options of a parsed C{nfork ctl} command line.

    @param environ: where C{NFORK_CONTROL} and C{NFORK_TOKEN_FILE} are read.
    @raise ValueError: when the control address is not one, or C{--count}
        is given without C{--watch}.
    """
    command = args.ctl_command
    arguments = tuple(
        value
        for value in (getattr(args, name) for name in _ARGUMENTS[command])
        if value is not None
    )
    given = [*(args.control or ()), *getattr(args, "control_after", ())]
    if given:
        source = "--control"
    else:
        given = [environ.get(ENV_CONTROL) or DEFAULT_CONTROL]
        source = f"${ENV_CONTROL}"
    urls: list[str] = []
    for control in given:
        try:
            url = control_url(control)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        if url in urls:
            raise ValueError(f"--control: {url} is given twice")
        urls.append(url)
    watch = bool(getattr(args, "watch", False))
    count = getattr(args, "count", None)
    if count is not None and not watch:
        raise ValueError("--count goes with --watch")
    if watch and len(urls) > 1:
        raise ValueError("--watch shows one instance: give one --control")
    return CtlOptions(
        command=command,
        arguments=arguments,
        control=urls[0],
        controls=tuple(urls) if len(urls) > 1 else (),
        token_file=args.token_file or environ.get(ENV_TOKEN_FILE) or None,
        as_json=args.json,
        watch=watch,
        count=count,
        interval=getattr(args, "interval", None) or 1.0,
    )


def read_token(path: str) -> str:
    """The token in the file at C{path} (L{read_token_file}).

    @raise CtlError: when it cannot be read or is empty.
    """
    try:
        return read_token_file(path)
    except ValueError as e:
        raise CtlError(str(e)) from None


def _unreachable_reason(error: Exception, timeout: float) -> str:
    """Why a call got no answer, in a few words."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, DNSLookupError):
        return "unknown host"
    if isinstance(error, (ConnectTimeoutError, DeferredTimeoutError, CancelledError)):
        return f"no answer within {timeout:g}s"
    if isinstance(error, ResponseNeverReceived):
        # treq's timeout cancels the request: the reason is a CancelledError.
        if any(reason.check(CancelledError) for reason in error.reasons):
            return f"no answer within {timeout:g}s"
        return "the connection closed without an answer"
    return str(error) or type(error).__name__


class ControlClient:
    """Calls the control API; every failure becomes a L{CtlError}."""

    def __init__(self, http: HTTPClient, options: CtlOptions, token: str | None):
        self._http = http
        self._options = options
        self._headers = Headers({b"Accept": [b"application/json"]})
        if token is not None:
            self._headers.setRawHeaders(b"Authorization", [b"Bearer " + token.encode()])

    async def call(self, method: str, path: str, body: bytes | None = None) -> Any:
        """The JSON answer of C{method path}; C{body} is sent as JSON.

        @raise CtlError: with the API's message when it answers with an
            error, or saying why it could not be reached.
        """
        headers = self._headers.copy()
        if body is not None:
            headers.setRawHeaders(b"Content-Type", [b"application/json"])
        url = self._options.control + path
        try:
            response = await self._http.request(
                method, url, data=body, headers=headers, timeout=self._options.timeout
            )
            content = await treq.content(response)
        except Exception as e:
            reason = _unreachable_reason(e, self._options.timeout)
            raise CtlError(
                f"cannot reach nfork's control API at {self._options.control}: {reason}"
            ) from None
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if response.code >= 300:
            message = data.get("error") if isinstance(data, dict) else None
            if not isinstance(message, str):
                text = content[:200].decode("utf-8", "replace").strip()
                message = f"HTTP {response.code} {text}".rstrip()
            if response.code == 401:
                message += f" (give the token with --token-file or ${ENV_TOKEN_FILE})"
            raise CtlError(message)
        if data is None:
            raise CtlError(f"the answer to {method} {path} is not JSON")
        return data


def _name(text: str) -> str:
    """An inbound or outbound name as one path segment."""
    return quote(text, safe="")


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


_Command = Callable[[ControlClient, CtlOptions], Awaitable[str]]


async def _ls(client: ControlClient, options: CtlOptions) -> str:
    inbounds = await client.call("GET", "/v1/nfork")
    return _dumps(inbounds) if options.as_json else inbounds_table(inbounds)


async def _stats(client: ControlClient, options: CtlOptions) -> str:
    if options.arguments:
        name = _name(options.arguments[0])
        inbound = await client.call("GET", f"/v1/nfork/{name}")
        stats = await client.call("GET", f"/v1/nfork/{name}/stats")
        if options.as_json:
            return _stats_json(stats, options)
        return stats_table([inbound], {options.arguments[0]: stats})
    inbounds = await client.call("GET", "/v1/nfork")
    stats = await client.call("GET", "/v1/nfork/stats")
    if options.as_json:
        return _stats_json(stats, options)
    return stats_table(inbounds, stats)


def _stats_json(stats: Any, options: CtlOptions) -> str:
    """The API's stats; one line per redraw with C{--watch} (JSON lines)."""
    if options.watch:
        return json.dumps(stats, ensure_ascii=False) + "\n"
    return _dumps(stats)


async def _activate(client: ControlClient, options: CtlOptions) -> str:
    inbound, outbound = options.arguments
    answer = await client.call(
        "POST", f"/v1/nfork/{_name(inbound)}/{_name(outbound)}/activate"
    )
    if options.as_json:
        return _dumps(answer)
    return f"inbound {inbound}: {answer.get('active', outbound)} is now active\n"


def _outbound_body(address: str) -> bytes:
    """An outbound's body for C{PUT}: a JSON object as given, else the address."""
    if address.lstrip().startswith("{"):
        try:
            obj = json.loads(address)
        except ValueError as e:
            raise CtlError(f"the outbound object is not valid JSON: {e}") from None
        return json.dumps(obj).encode()
    return json.dumps(address).encode()


async def _add_out(client: ControlClient, options: CtlOptions) -> str:
    inbound, outbound, address = options.arguments
    answer = await client.call(
        "PUT",
        f"/v1/nfork/{_name(inbound)}/{_name(outbound)}",
        _outbound_body(address),
    )
    if options.as_json:
        return _dumps(answer)
    added = answer.get("out", {}).get(outbound, address)
    shown = added if isinstance(added, str) else json.dumps(added)
    return f"inbound {inbound}: outbound {outbound} -> {shown}\n"


async def _rm_out(client: ControlClient, options: CtlOptions) -> str:
    inbound, outbound = options.arguments
    answer = await client.call(
        "DELETE", f"/v1/nfork/{_name(inbound)}/{_name(outbound)}"
    )
    if options.as_json:
        return _dumps(answer)
    return f"inbound {inbound}: outbound {outbound} removed\n"


def _read_inbound(path: str) -> bytes:
    """The bytes of the inbound's JSON file (C{-}: standard input)."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CtlError(f"cannot read {path}: {e.strerror or e}") from None


async def _add(client: ControlClient, options: CtlOptions) -> str:
    body = options.body
    if body is None:
        body = _read_inbound(options.arguments[0])
    answer = await client.call("POST", "/v1/nfork", body)
    if options.as_json:
        return _dumps(answer)
    return (
        f"inbound {answer.get('name')} added, listening on {answer.get('listen')}\n"
        + inbounds_table([answer])
    )


async def _rm(client: ControlClient, options: CtlOptions) -> str:
    (inbound,) = options.arguments
    answer = await client.call("DELETE", f"/v1/nfork/{_name(inbound)}")
    if options.as_json:
        return _dumps(answer)
    return f"inbound {inbound} removed\n"


async def _compare(client: ControlClient, options: CtlOptions) -> str:
    from nfork.compare.text import format_report

    (inbound,) = options.arguments
    report = await client.call("GET", f"/v1/nfork/{_name(inbound)}/compare")
    if options.as_json or not isinstance(report, dict):
        return _dumps(report)
    return format_report(report)


_COMMANDS: dict[str, _Command] = {
    "ls": _ls,
    "stats": _stats,
    "activate": _activate,
    "add-out": _add_out,
    "rm-out": _rm_out,
    "add": _add,
    "rm": _rm,
    "compare": _compare,
}


async def _watch(
    reactor: Any,
    command: _Command,
    client: ControlClient,
    options: CtlOptions,
    stdout: TextIO,
) -> None:
    """Print the command's output every C{interval} until Ctrl-C or C{count}."""
    isatty = getattr(stdout, "isatty", None)
    clear = CLEAR if isatty and isatty() and not options.as_json else ""
    pause: Deferred[None] | None = None
    stopping = False
    done: Deferred[None] = Deferred()

    def on_shutdown() -> Deferred[None]:
        # Ctrl-C: stop waiting for the next redraw; the reactor waits for us.
        nonlocal stopping
        stopping = True
        if pause is not None:
            pause.cancel()
        return done

    trigger = reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    try:
        shown = 0
        while not stopping:
            text = await command(client, options)
            # A terminal is cleared; a file or pipe gets a blank line between.
            stdout.write(
                (clear or ("\n" if shown and not options.as_json else "")) + text
            )
            stdout.flush()
            shown += 1
            if options.count is not None and shown >= options.count:
                break
            pause = deferLater(reactor, options.interval, lambda: None)
            try:
                await pause
            except CancelledError:
                break
            finally:
                pause = None
    finally:
        reactor.removeSystemEventTrigger(trigger)
        done.callback(None)


def _outcome(url: str, text: str) -> str:
    """One instance's outcome after its URL: on its line, or above a table."""
    if text.count("\n") <= 1:
        return f"{url}: {text.rstrip()}\n"
    return f"{url}:\n{text}"


async def _each_instance(
    command: _Command,
    client_for: Callable[[CtlOptions], ControlClient],
    options: CtlOptions,
    stdout: TextIO,
) -> int:
    """Run C{command} on every instance in turn; return how many failed.

    Each outcome is printed as soon as it is known: C{URL: what changed},
    or C{URL: failed: why}; with C{--json}, one document mapping each URL
    to C{{"result": answer}} or C{{"error": why}}, at the end.
    """
    if options.command == "add":
        options = evolve(options, body=_read_inbound(options.arguments[0]))
    failed = 0
    documents: dict[str, Any] = {}
    for url in options.controls:
        one = evolve(options, control=url)
        try:
            text = await command(client_for(one), one)
        except CtlError as e:
            failed += 1
            documents[url] = {"error": str(e)}
            if not options.as_json:
                stdout.write(f"{url}: failed: {e}\n")
        else:
            if options.as_json:
                documents[url] = {"result": json.loads(text)}
            else:
                stdout.write(_outcome(url, text))
        stdout.flush()
    if options.as_json:
        stdout.write(_dumps(documents))
        stdout.flush()
    return failed


async def ctl_main(
    reactor: Any,
    options: CtlOptions,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> None:
    """Run C{nfork ctl} on C{reactor}, for L{twisted.internet.task.react}.

    @raise SystemExit: with L{FAILED}, after printing why; returns for 0.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    pool = HTTPConnectionPool(reactor, persistent=options.watch)
    http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=options.timeout))
    command = _COMMANDS[options.command]
    try:
        token = None if options.token_file is None else read_token(options.token_file)
        client = ControlClient(http, options, token)
        if options.controls:
            failed = await _each_instance(
                command, lambda one: ControlClient(http, one, token), options, stdout
            )
            if failed:
                raise CtlError(f"{failed} of {len(options.controls)} instances failed")
        elif options.watch:
            await _watch(reactor, command, client, options, stdout)
        else:
            stdout.write(await command(client, options))
            stdout.flush()
    except CtlError as e:
        stderr.write(f"nfork ctl: {e}\n")
        stderr.flush()
        raise SystemExit(FAILED) from None
    finally:
        await pool.closeCachedConnections()


def run_ctl(args: argparse.Namespace) -> None:
    """C{nfork ctl} from its parsed command line: the reactor runs until done.

    A usage error found after parsing exits with status 2, as argparse's own.
    """
    from twisted.internet.task import react

    try:
        options = ctl_options(args, os.environ)
    except ValueError as e:
        args.ctl_parser.error(str(e))
    react(ctl_main, (options,))
