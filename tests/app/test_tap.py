"""The twistd options of the control API and the services they build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IServiceCollection
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import Site

from nfork.app.tap import (
    DEFAULT_CONTROL,
    ControlService,
    InboundsService,
    Options,
    is_loopback,
    makeService,
    read_token,
)
from nfork.control.api import ControlHosts, ControlSite
from nfork.control.klog import LogRingService


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "nfork.json"
    path.write_text(
        json.dumps(
            [
                {
                    "name": "web",
                    "listen": "127.0.0.1:9080",
                    "out": {"prod": "127.0.0.1:8080"},
                    "active": "prod",
                }
            ]
        )
    )
    return str(path)


def options(*args: str) -> Options:
    parsed = Options()
    parsed.parseOptions(list(args))
    return parsed


def test_the_control_api_listens_on_loopback_by_default(config_file: str) -> None:
    parsed = options("--config", config_file)
    assert parsed.control == DEFAULT_CONTROL == "127.0.0.1:9090"
    assert parsed.token is None
    assert not parsed["persist"]


def test_control_accepts_the_forms_of_listen_or_none(config_file: str) -> None:
    for control in (":9090", "[::1]:9090", "tcp:0:interface=127.0.0.1"):
        assert options("--config", config_file, "--control", control).control == (
            control
        )
    assert options("--config", config_file, "--control", "none").control is None
    with pytest.raises(usage.UsageError, match="--control: invalid listen"):
        options("--config", config_file, "--control", "nowhere")


TOKEN = "s3cret-0123456789abcdef"


def private_file(path: Path, content: bytes) -> Path:
    """C{path} holding C{content}, for its owner only (as a token must be)."""
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def test_token_file_is_stripped(config_file: str, tmp_path: Path) -> None:
    token = private_file(tmp_path / "token", f"  {TOKEN}\n\n".encode())
    parsed = options("--config", config_file, "--control-token-file", str(token))
    assert parsed.token == TOKEN


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
        (b"two words\n", "one line without spaces"),
        (b"\xff\xfe", "not UTF-8"),
        (b"short-token-15b\n", "is 15 bytes long; at least 16 are required"),
    ],
)
def test_a_bad_token_file_stops_the_start(
    tmp_path: Path, content: bytes, message: str
) -> None:
    token = private_file(tmp_path / "token", content)
    with pytest.raises(usage.UsageError, match=message):
        read_token(str(token))


def test_a_token_of_sixteen_bytes_is_enough(tmp_path: Path) -> None:
    token = private_file(tmp_path / "token", b"0123456789abcdef")
    assert read_token(str(token)) == "0123456789abcdef"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o700 | 0o001])
def test_a_token_file_open_to_others_stops_the_start(
    config_file: str, tmp_path: Path, mode: int
) -> None:
    # Like an ssh private key: group or others may not even read it.
    token = private_file(tmp_path / "my token", TOKEN.encode())
    token.chmod(mode)
    with pytest.raises(usage.UsageError) as caught:
        options("--config", config_file, "--control-token-file", str(token))
    message = str(caught.value)
    assert f"(mode {mode:04o})" in message
    assert f"chmod 600 '{token}'" in message
    assert TOKEN not in message


def test_a_missing_token_file_stops_the_start(config_file: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(usage.UsageError, match=r"cannot read .*No such file"):
        options("--config", config_file, "--control-token-file", missing)


def test_persist_needs_a_config_file_and_the_control_api(config_file: str) -> None:
    with pytest.raises(usage.UsageError, match="--persist needs --config"):
        options("--demo", "--persist")
    with pytest.raises(usage.UsageError, match="--control none"):
        options("--config", config_file, "--persist", "--control", "none")
    assert options("--config", config_file, "--persist")["persist"]


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:9090", True),
        ("localhost:9090", True),
        ("127.0.0.2:9090", True),
        ("[::1]:9090", True),
        ("tcp:9090:interface=127.0.0.1", True),
        ("unix:/run/nfork.sock", True),
        (":9090", False),
        ("0.0.0.0:9090", False),
        ("10.1.2.3:9090", False),
        ("[::]:9090", False),
        ("tcp:9090", False),
    ],
)
def test_is_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def warnings_of(service: ControlService) -> list[str]:
    with capturedLogs() as events:
        service.privilegedStartService()
    service.stopService()
    return [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]


def test_listening_beyond_loopback_without_a_token_warns() -> None:
    site = Site(Resource())
    reactor = MemoryReactorClock()
    [warning] = warnings_of(ControlService(reactor, ":9090", site, False))
    assert "beyond loopback, without a token" in warning
    assert "--control-token-file" in warning
    assert warnings_of(ControlService(reactor, ":9090", site, True)) == []
    assert warnings_of(ControlService(reactor, "127.0.0.1:9090", site, False)) == []


def test_the_control_service_logs_and_exposes_its_address() -> None:
    reactor = MemoryReactorClock()
    service = ControlService(reactor, "[::1]:0", Site(Resource()), False)
    with capturedLogs() as events:
        service.privilegedStartService()
    assert any("control API listening on [::1]:0" in formatEvent(e) for e in events)
    assert service.http_address == "[::1]:0"
    service = ControlService(reactor, ":9090", Site(Resource()), False)
    service.privilegedStartService()
    assert service.http_address == "127.0.0.1:9090"


def test_failing_to_listen_for_the_control_api_stops_the_start() -> None:
    reactor = RaisingMemoryReactor(CannotListenError("127.0.0.1", 9090, OSError()))
    service = ControlService(reactor, "127.0.0.1:9090", Site(Resource()), False)
    with capturedLogs() as events, pytest.raises(CannotListenError):
        service.privilegedStartService()
    assert any(
        e["log_level"] == LogLevel.critical and "--control" in formatEvent(e)
        for e in events
    )


def services(root: Any) -> dict[type, Any]:
    assert IServiceCollection.providedBy(root)
    return {type(service): service for service in root}


def test_make_service_serves_the_control_api(config_file: str) -> None:
    reactor = MemoryReactorClock()
    root = makeService(options("--config", config_file), reactor)
    children = services(root)
    control = children[ControlService]
    assert isinstance(control.factory, ControlSite)
    assert not children[InboundsService].ready
    root.privilegedStartService()
    root.startService()
    try:
        assert children[InboundsService].ready
        ports = [(port, interface) for port, _, _, interface in reactor.tcpServers]
        assert (9090, "127.0.0.1") in ports
        assert (9080, "127.0.0.1") in ports
    finally:
        root.stopService()
    assert not children[InboundsService].ready


def test_make_service_without_control_api(config_file: str) -> None:
    root = makeService(
        options("--config", config_file, "--control", "none"), MemoryReactorClock()
    )
    assert ControlService not in services(root)


def _demo_log(*argv: str) -> str:
    """What C{--demo} with C{argv} logs while starting (on a fake reactor)."""
    root = makeService(options("--demo", *argv), MemoryReactorClock())
    root.privilegedStartService()
    with capturedLogs() as events:
        root.startService()
    root.stopService()
    return "\n".join(formatEvent(e) for e in events)


def test_the_demo_prints_the_control_apis_curl_commands() -> None:
    text = _demo_log("--control", "127.0.0.1:9190")
    assert "curl http://127.0.0.1:9190/v1/nfork/stats" in text
    assert "curl -X POST http://127.0.0.1:9190/v1/nfork/demo/staging/activate" in text
    assert "Authorization" not in text


def test_the_demo_commands_read_the_token_file(tmp_path: Path) -> None:
    token_file = private_file(tmp_path / "my token", f"{TOKEN}\n".encode())
    text = _demo_log(
        "--control", "127.0.0.1:9190", "--control-token-file", str(token_file)
    )
    auth = f"-H \"Authorization: Bearer $(cat '{token_file}')\""
    assert f"curl {auth} http://127.0.0.1:9190/v1/nfork/stats" in text
    assert f"curl -X POST {auth} http://127.0.0.1:9190/v1/nfork/demo" in text
    assert "curl http://127.0.0.1:9190/metrics" in text
    assert TOKEN not in text


def test_make_service_tunes_the_garbage_collector() -> None:
    import gc

    from twisted.internet.testing import MemoryReactorClock

    from nfork.app.gctuning import GEN0_THRESHOLD
    from nfork.app.tap import Options, makeService

    before = gc.get_threshold()
    reactor = MemoryReactorClock()
    options = Options()
    options.parseOptions(["--demo", "--control", "none"])
    try:
        makeService(options, reactor)
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        assert any(call[0] is gc.freeze for call in reactor.whenRunningHooks)
    finally:
        gc.set_threshold(*before)


def test_signal_handlers_are_installed_at_start_and_restored_at_stop() -> None:
    """SIGHUP is handled from the start, before the reactor runs.

    Its default action kills the process, so a reload requested just after
    the first inbound is listening must not be lost.
    """
    import signal as signals

    from nfork.app.signals import SignalService

    class Reactor(MemoryReactorClock):
        def callFromThread(self, f: Any, *args: Any) -> None:
            self.callLater(0, f, *args)

    reactor = Reactor()
    reloads: list[None] = []
    before = signals.getsignal(signals.SIGHUP)
    service = SignalService(reactor, lambda: reloads.append(None))
    service.startService()
    try:
        handler = signals.getsignal(signals.SIGHUP)
        assert callable(handler) and handler is not before
        handler(signals.SIGHUP, None)
        reactor.advance(0)
        assert reloads == [None]
    finally:
        service.stopService()
    assert signals.getsignal(signals.SIGHUP) is before


def test_a_second_sigterm_while_draining_stops_the_reactor_once() -> None:
    import signal as signals

    from nfork.app.signals import SignalService

    class Reactor(MemoryReactorClock):
        stops = 0

        def callFromThread(self, f: Any, *args: Any) -> None:
            self.callLater(0, f, *args)

        def stop(self) -> None:
            # The real reactor stays "running" while it shuts down, and a
            # second stop() raises ReactorNotRunning.
            self.stops += 1
            if self.stops > 1:
                raise ReactorNotRunning()

    reactor = Reactor()
    reactor.running = True
    service = SignalService(reactor)
    service.startService()
    try:
        handler = signals.getsignal(signals.SIGTERM)
        assert callable(handler)
        handler(signals.SIGTERM, None)
        handler(signals.SIGTERM, None)
        reactor.advance(0)
        assert reactor.stops == 1
    finally:
        service.stopService()


def test_control_allow_host_is_repeatable_and_checked(config_file: str) -> None:
    parsed = options(
        "--config",
        config_file,
        "--control-allow-host",
        "nfork.internal",
        "--control-allow-host",
        "Proxy.Example:8443",
    )
    assert parsed.hosts.names == (("nfork.internal", None), ("proxy.example", 8443))
    assert parsed.hosts.allows(b"nfork.internal:1234")
    assert not parsed.hosts.allows(b"proxy.example:443")
    for bad in ("", "a b", "host:port", "[::1", "x:99999"):
        with pytest.raises(usage.UsageError, match="--control-allow-host: invalid"):
            options("--config", config_file, "--control-allow-host", bad)


def test_sink_dir_must_be_a_directory(config_file: str, tmp_path: Path) -> None:
    assert options("--config", config_file).sink_dir is None
    parsed = options("--config", config_file, "--sink-dir", str(tmp_path))
    assert parsed.sink_dir == str(tmp_path)
    with pytest.raises(usage.UsageError, match=r"--sink-dir: .* is not a directory"):
        options("--config", config_file, "--sink-dir", str(tmp_path / "missing"))


def test_the_control_service_tells_the_host_rule_its_port() -> None:
    hosts = ControlHosts()
    reactor = MemoryReactorClock()
    service = ControlService(
        reactor, "127.0.0.1:9191", Site(Resource()), False, hosts=hosts
    )
    assert not hosts.allows(b"127.0.0.1:9191")
    service.privilegedStartService()
    assert hosts.allows(b"127.0.0.1:9191")
    assert hosts.allows(b"localhost:9191")
    assert not hosts.allows(b"localhost:9192")
    # The memory reactor's port says 0.0.0.0: any address of the machine.
    assert hosts.allows(b"10.0.0.1:9191")
    assert not hosts.allows(b"evil.example:9191")


def test_the_exposed_control_api_warning_reaches_the_log_ring(
    config_file: str,
) -> None:
    root = makeService(
        options("--config", config_file, "--control", ":9090"), MemoryReactorClock()
    )
    ring = services(root)[LogRingService].ring
    root.privilegedStartService()
    root.startService()
    try:
        texts = [event["text"] for event in ring.events(LogLevel.warn)]
    finally:
        root.stopService()
    assert any("beyond loopback, without a token" in str(t) for t in texts), texts
