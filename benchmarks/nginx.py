"""nginx configurations the harness writes: the fast backends and the mirror proxy.

Both run one worker process: the fast backends so that they leave CPU to the
proxy under test on a small machine, the mirror proxy to compare it core for
core with the single nfork process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

FAST_BODY = "fast backend answer: " + "x" * 78
"""About 100 bytes (with nginx's newline) answered by every fast backend."""

LOG_FORMAT = "$connection"
"""One access-log line per request holding the connection's serial number:
lines count requests, distinct values count connections."""


def temp_dir(workdir: Path, name: str) -> Path:
    """Where instance C{name} keeps its temporary files (it must exist)."""
    return workdir / f"{name}-tmp"


def _common(workdir: Path, name: str) -> str:
    """The top of a config: foreground, one worker, files under C{workdir}."""
    tmp = temp_dir(workdir, name)
    return f"""\
daemon off;
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


def backends_config(workdir: Path, ports: Mapping[str, int]) -> str:
    """One server per fast backend on 127.0.0.1, each logging to C{<name>.log}."""
    servers = "".join(
        f"""\
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        access_log {workdir}/{name}.log count;
        location / {{
            return 200 "{FAST_BODY}\\n";
        }}
    }}
"""
        for name, port in ports.items()
    )
    return (
        _common(workdir, "nginx-backends")
        + f"""\
    default_type text/plain;
    log_format count '{LOG_FORMAT}';
{servers}}}
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
        _common(workdir, "nginx-mirror")
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
