"""nginx configurations the harness writes: the backends and the mirror proxy.

Both run one worker process: the backends so that they leave CPU to the
proxy under test on a small machine, the mirror proxy to compare it core for
core with the single nfork process.  The 200 ms backend is a server of the
same nginx, delayed with the echo module's C{echo_sleep} (a timer in the
event loop: thousands of pending answers cost almost nothing).  The fast
backends also answer a 1 MiB file, with C{sendfile}, at
L{benchmarks.scenarios.LARGE_ANSWER_PATH}.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.scenarios import JSON_ANSWER_PATH, LARGE_ANSWER_BYTES, LARGE_ANSWER_PATH

FAST_BODY = "fast backend answer: " + "x" * 78
"""About 100 bytes (with nginx's newline) answered by every fast backend."""

SLOW_BODY = "slow backend answer: " + "x" * 78
"""The same size, answered by the slow backend."""

LOG_FORMAT = "$connection"
"""One access-log line per request holding the connection's serial number:
lines count requests, distinct values count connections."""


def large_answer_root(workdir: Path) -> Path:
    """The C{root} of the fast backends' 1 MiB location."""
    return workdir / "www"


def write_large_answer(workdir: Path) -> Path:
    """Write the 1 MiB file the fast backends send at L{LARGE_ANSWER_PATH}."""
    root = large_answer_root(workdir)
    root.mkdir(exist_ok=True)
    line = b"large backend answer: " + b"x" * 41 + b"\n"  # 64 bytes
    path = root / LARGE_ANSWER_PATH.lstrip("/")
    path.write_bytes(line * (LARGE_ANSWER_BYTES // len(line)))
    return path


def temp_dir(workdir: Path, name: str) -> Path:
    """Where instance C{name} keeps its temporary files (it must exist)."""
    return workdir / f"{name}-tmp"


def worker_user() -> str | None:
    """The C{user} directive's value: the harness's own user and group when
    it runs as root, else C{None} (nginx ignores the directive then).

    Started by root, nginx runs its workers as C{nobody}, which cannot open
    the harness's private workdir: its temporary files, the 1 MiB file.
    """
    if os.geteuid() != 0:
        return None
    return f"{pwd.getpwuid(0).pw_name} {grp.getgrgid(os.getegid()).gr_name}"


def _common(workdir: Path, name: str, module: str = "", user: str | None = None) -> str:
    """The top of a config: foreground, one worker, files under C{workdir}.

    C{module}, if given, is a dynamic module file to load; C{user}, if
    given, the user (and group) the worker runs as.
    """
    tmp = temp_dir(workdir, name)
    load = f"load_module {module};\n" if module else ""
    load += f"user {user};\n" if user else ""
    return f"""\
{load}daemon off;
master_process on;
worker_processes 1;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{
    worker_connections 16384;
}}
http {{
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
"""


def _server(workdir: Path, name: str, port: int, answer: str, extra: str = "") -> str:
    """A backend on 127.0.0.1:C{port} that logs to C{<name>.log} and runs C{answer}.

    C{extra} is more C{location} blocks.
    """
    return f"""\
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        access_log {workdir}/{name}.log count;
        location / {{
            {answer}
        }}
{extra}\
    }}
"""


def json_answer() -> str:
    """The fast backends' JSON answer at L{JSON_ANSWER_PATH}: about 1 KiB.

    Like a real API's, each answer carries a fresh id (nginx's
    C{$request_id}) and the time (C{$msec}): noise a comparison must cancel.
    """
    items = ",".join(
        f'{{"sku":"sku-{n:04d}","name":"item number {n}","price":{n * 3}.5,'
        f'"tags":["a","b"],"stock":{n * 7}}}'
        for n in range(10)
    )
    return (
        '{"id":"$request_id","generatedAt":$msec,'
        '"user":{"id":42,"name":"Ada Lovelace","email":"ada@example.com",'
        '"roles":["admin","dev"],"active":true},'
        f'"items":[{items}],"total":10}}'
    )


def _large_location(workdir: Path) -> str:
    """The fast backends' locations for the 1 MiB file of L{write_large_answer}
    and the JSON answer of L{json_answer}."""
    return f"""\
        location = {LARGE_ANSWER_PATH} {{
            root {large_answer_root(workdir)};
            sendfile on;
        }}
        location = {JSON_ANSWER_PATH} {{
            default_type application/json;
            return 200 '{json_answer()}';
        }}
"""


def backends_config(
    workdir: Path,
    fast: Mapping[str, int],
    slow: Mapping[str, int] | None = None,
    delay: float = 0.2,
    echo_module: str = "",
) -> str:
    """One server per backend on 127.0.0.1, each logging to C{<name>.log}.

    The C{fast} ones answer at once (and with the 1 MiB file of
    L{write_large_answer} at L{LARGE_ANSWER_PATH}); the C{slow} ones C{delay}
    seconds after the request, with the echo module (loaded from
    C{echo_module} unless nginx has it built in).
    """
    servers = [
        _server(
            workdir,
            name,
            port,
            f'return 200 "{FAST_BODY}\\n";',
            _large_location(workdir),
        )
        for name, port in fast.items()
    ]
    delayed = f'echo_sleep {delay:g};\n            echo "{SLOW_BODY}";'
    servers += [
        _server(workdir, name, port, delayed) for name, port in (slow or {}).items()
    ]
    module = echo_module if slow else ""
    return (
        _common(workdir, "nginx-backends", module, worker_user())
        + f"""\
    default_type text/plain;
    log_format count '{LOG_FORMAT}';
{"".join(servers)}}}
"""
    )


def mirror_config(
    workdir: Path,
    listen_port: int,
    active_port: int,
    shadow_ports: Sequence[int],
    keepalive: int,
    timeout: float,
) -> str:
    """nginx as the peer of nfork: C{mirror} to every shadow, keep-alive upstreams.

    Every upstream caches C{keepalive} idle connections (nfork's C{idleConn});
    C{timeout} (nfork's C{timeout}) bounds connecting to and reading from each.
    """
    upstreams = [("active", active_port)] + [
        (f"shadow{i}", port) for i, port in enumerate(shadow_ports, 1)
    ]
    upstream_blocks = "".join(
        f"""\
    upstream {name} {{
        server 127.0.0.1:{port};
        keepalive {keepalive};
    }}
"""
        for name, port in upstreams
    )
    mirrors = "".join(
        f"            mirror /_mirror{i};\n" for i in range(1, len(shadow_ports) + 1)
    )
    mirror_locations = "".join(
        f"""\
        location = /_mirror{i} {{
            internal;
            proxy_pass http://shadow{i}$request_uri;
        }}
"""
        for i in range(1, len(shadow_ports) + 1)
    )
    ms = max(1, round(timeout * 1000))
    return (
        _common(workdir, "nginx-mirror", user=worker_user())
        + f"""\
    access_log off;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_connect_timeout {ms}ms;
    proxy_send_timeout {ms}ms;
    proxy_read_timeout {ms}ms;
{upstream_blocks}\
    server {{
        listen 127.0.0.1:{listen_port} backlog=4096;
        location / {{
{mirrors}\
            mirror_request_body on;
            proxy_pass http://active;
        }}
{mirror_locations}\
    }}
}}
"""
    )
