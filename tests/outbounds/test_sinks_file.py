"""The file:// sink: records, flush timing, rotation, failures, over a Clock."""

from __future__ import annotations

import base64
import errno
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from nfork.config import ConfigError, parse_outbound
from nfork.outbounds.api import IOutbound, IOutboundFactory, IOutboundValidator
from nfork.outbounds.registry import factory_for
from nfork.outbounds.sinks import SinkClosed
from nfork.outbounds.sinks.file import (
    WORKER_ENV,
    FileSink,
    FileSinkFactory,
    OutsideSinkDir,
    RotatingFile,
    SinkUnavailable,
    WriteFailed,
    check_sink_dir,
    thread_runner,
    worker_file_path,
)
from nfork.outbounds.sinks.records import decode_record
from nfork.proxy.fork import InboundFork, OutboundRoute, Routing
from nfork.proxy.messages import CapturedAnswer, CopyDropped, ProxyRequest
from nfork.proxy.stats import OutboundStats
from tests.support.configs import inbound_config
from tests.support.fakes import FakeOutbound
from tests.support.files import temp_dir
from tests.support.inbound_client import InboundClient


def request(n: int = 0, body: bytes = b"", method: bytes = b"POST") -> ProxyRequest:
    return ProxyRequest(
        method=method,
        uri=b"/items/%d?x=1" % n,
        headers=((b"Content-Type", b"text/plain"), (b"X-Nfork", b"true")),
        body=body,
        client="192.0.2.7",
        received=1_700_000_000.25 + n,
    )


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines()]


class FlakyFile(RotatingFile):
    """A file whose writes fail, after some lines, while C{failing} is set."""

    failing: OSError | None = None
    after_lines: int = 0

    def write_lines(self, lines: Sequence[bytes]) -> None:
        if self.failing is not None:
            if self.after_lines:
                super().write_lines(lines[: self.after_lines])
            raise WriteFailed(self.after_lines, self.failing)
        super().write_lines(lines)


class FileSinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.path = self.dir / "traffic.jsonl"
        self.clock = Clock()

    def sink(self, writer: RotatingFile | None = None, **kwargs: Any) -> FileSink:
        sink = FileSink(
            name="rec",
            inbound="foo",
            writer=writer or RotatingFile(str(self.path)),
            clock=self.clock,
            **kwargs,
        )
        self.addCleanup(sink.close)
        return sink

    def test_provides_its_interfaces(self) -> None:
        verifyObject(IOutbound, self.sink())
        verifyObject(IOutboundFactory, FileSinkFactory())
        verifyObject(IOutboundValidator, FileSinkFactory())

    def test_a_copy_is_accepted_at_once(self) -> None:
        sink = self.sink()
        self.assertIsNone(self.successResultOf(sink.send(request(), False)))

    def test_nothing_is_written_before_the_flush_interval(self) -> None:
        sink = self.sink()
        for n in range(3):
            sink.send(request(n), False)
        self.assertEqual(self.path.read_bytes(), b"")
        self.clock.advance(0.999)
        self.assertEqual(self.path.read_bytes(), b"")
        self.clock.advance(0.001)
        self.assertEqual(
            [r["uri"] for r in lines(self.path)],
            [
                "/items/0?x=1",
                "/items/1?x=1",
                "/items/2?x=1",
            ],
        )
        self.assertEqual(sink.buffered, 0)

    def test_the_interval_starts_with_the_first_buffered_line(self) -> None:
        sink = self.sink()
        self.clock.advance(5)
        sink.send(request(0), False)
        self.clock.advance(0.5)
        sink.send(request(1), False)
        self.clock.advance(0.5)
        self.assertEqual(len(lines(self.path)), 2)

    def test_a_full_buffer_is_written_without_waiting(self) -> None:
        sink = self.sink(flush_bytes=1000)
        sent = 0
        while not self.path.read_bytes() and sent < 5:
            sink.send(request(sent, body=b"x" * 100), False)
            sent += 1
        self.assertLess(sent, 5)
        self.assertEqual(len(lines(self.path)), sent)

    def test_the_record_describes_the_request(self) -> None:
        sink = self.sink()
        sink.send(request(0, body="héllo".encode()), False)
        self.clock.advance(1)
        (record,) = lines(self.path)
        self.assertEqual(
            record,
            {
                "time": "2023-11-14T22:13:20.250000Z",
                "epoch": 1_700_000_000.25,
                "inbound": "foo",
                "outbound": "rec",
                "client": "192.0.2.7",
                "method": "POST",
                "uri": "/items/0?x=1",
                "headers": [["Content-Type", "text/plain"], ["X-Nfork", "true"]],
                "body": "héllo",
                "body_base64": False,
            },
        )

    def test_a_binary_body_is_base64(self) -> None:
        sink = self.sink()
        body = bytes(range(256))
        sink.send(request(0, body=body), False)
        self.clock.advance(1)
        (record,) = lines(self.path)
        self.assertTrue(record["body_base64"])
        self.assertEqual(base64.b64decode(record["body"]), body)

    def test_close_writes_what_is_buffered(self) -> None:
        sink = self.sink()
        sink.send(request(), False)
        self.successResultOf(sink.close())
        self.assertEqual(len(lines(self.path)), 1)
        self.failureResultOf(sink.send(request(), False), SinkClosed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lines_are_appended_to_an_existing_file(self) -> None:
        self.path.write_bytes(b'{"old": 1}\n')
        sink = self.sink()
        sink.send(request(), False)
        self.clock.advance(1)
        self.assertEqual(len(lines(self.path)), 2)

    def test_a_torn_last_line_is_ended_before_appending(self) -> None:
        self.path.write_bytes(b'{"cut": "sho')
        sink = self.sink()
        sink.send(request(), False)
        self.clock.advance(1)
        first, second = self.path.read_bytes().split(b"\n")[:2]
        self.assertEqual(first, b'{"cut": "sho')
        self.assertEqual(json.loads(second)["uri"], "/items/0?x=1")

    def test_a_file_moved_away_is_created_again(self) -> None:
        sink = self.sink()
        sink.send(request(0), False)
        self.clock.advance(1)
        self.path.rename(self.dir / "moved.jsonl")
        sink.send(request(1), False)
        self.clock.advance(1)
        self.assertEqual([r["uri"] for r in lines(self.path)], ["/items/1?x=1"])
        self.assertEqual(len(lines(self.dir / "moved.jsonl")), 1)

    def test_copies_beyond_buffer_lines_are_dropped(self) -> None:
        stalled: list[Deferred[None]] = []

        def stall(f: Any, *args: Any) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            stalled.append(d)
            return d

        sink = self.sink(buffer_lines=2, run=stall)
        stalled[0].callback(None)  # the open at creation
        for n in range(2):
            self.successResultOf(sink.send(request(n), False))
        self.clock.advance(1)  # a write starts, and hangs
        self.assertEqual(len(stalled), 2)
        for n in range(2):
            self.successResultOf(sink.send(request(n), False))
        self.failureResultOf(sink.send(request(3), False), CopyDropped)
        stalled[1].callback(None)
        self.clock.advance(1)
        stalled[2].callback(None)


class RotationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.path = self.dir / "traffic.jsonl"

    def test_files_rotate_by_size_keeping_backups(self) -> None:
        writer = RotatingFile(str(self.path), max_bytes=100, backups=2)
        batch = [b"%02d-%s\n" % (n, b"x" * 36) for n in range(12)]  # 40 bytes
        writer.write_lines(batch[:5])
        writer.write_lines(batch[5:])
        writer.close()
        names = sorted(os.listdir(self.dir))
        self.assertEqual(names, ["traffic.jsonl", "traffic.jsonl.1", "traffic.jsonl.2"])
        for name in names:
            self.assertLessEqual(os.path.getsize(self.dir / name), 100)
        kept = b"".join(
            (self.dir / name).read_bytes()
            for name in ("traffic.jsonl.2", "traffic.jsonl.1", "traffic.jsonl")
        )
        self.assertEqual(kept, b"".join(batch[6:]))

    def test_without_backups_a_full_file_starts_over(self) -> None:
        writer = RotatingFile(str(self.path), max_bytes=50, backups=0)
        writer.write_lines([b"a" * 29 + b"\n", b"b" * 29 + b"\n"])
        writer.close()
        self.assertEqual(os.listdir(self.dir), ["traffic.jsonl"])
        self.assertEqual(self.path.read_bytes(), b"b" * 29 + b"\n")

    def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(self) -> None:
        writer = RotatingFile(str(self.path), max_bytes=10, backups=3)
        writer.write_lines([b"short\n", b"x" * 20 + b"\n", b"end\n"])
        writer.close()
        self.assertEqual((self.dir / "traffic.jsonl.2").read_bytes(), b"short\n")
        self.assertEqual((self.dir / "traffic.jsonl.1").read_bytes(), b"x" * 20 + b"\n")
        self.assertEqual(self.path.read_bytes(), b"end\n")

    def test_every_file_is_created_for_nfork_alone(self) -> None:
        # Recorded requests carry credentials: 0600 even with a lax umask.
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        writer = RotatingFile(str(self.path), max_bytes=10, backups=1)
        writer.write_lines([b"a" * 9 + b"\n", b"b" * 9 + b"\n"])
        writer.close()
        for name in ("traffic.jsonl", "traffic.jsonl.1"):
            mode = os.stat(self.dir / name).st_mode & 0o777
            self.assertEqual(mode, 0o600, f"{name}: {mode:o}")

    def test_a_write_error_says_how_many_lines_were_written(self) -> None:
        writer = RotatingFile(str(self.dir / "missing" / "traffic.jsonl"))
        with pytest.raises(WriteFailed) as caught:
            writer.write_lines([b"a\n"])
        self.assertEqual(caught.value.written, 0)
        self.assertEqual(caught.value.error.errno, errno.ENOENT)


class FailureTests(SynchronousTestCase):
    """An unwritable file: logged once, errors in the stats, never a crash."""

    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.clock = Clock()

    def inbound_with(self, sink: FileSink) -> tuple[Any, OutboundStats]:
        """An inbound whose shadow is C{sink}, and the sink's stats."""
        config = inbound_config(out={"prod": "127.0.0.1:1", "rec": "file:///unused"})
        prod = FakeOutbound()
        stats = OutboundStats(self.clock)
        active = OutboundRoute(config.outbounds[0], prod, OutboundStats(self.clock))
        shadow = OutboundRoute(config.outbounds[1], sink, stats)
        fork = InboundFork(Routing(config, active, (shadow,)), self.clock)
        client = InboundClient(fork)

        def call(path: str) -> int:
            response = client.get(f"http://foo.example{path}")
            prod.last.answer(200, b"ok")
            client.flush()
            code: int = self.successResultOf(response).code
            return code

        return call, stats

    def test_an_unwritable_path_counts_errors_and_logs_once(self) -> None:
        path = self.dir / "missing" / "traffic.jsonl"
        with capturedLogs() as events:
            sink = FileSink(
                name="rec",
                inbound="foo",
                writer=RotatingFile(str(path)),
                clock=self.clock,
            )
            self.addCleanup(sink.close)
            call, stats = self.inbound_with(sink)
            for n in range(5):
                self.assertEqual(call(f"/{n}"), 200)
            self.clock.advance(1)  # a retry, failing the same way
            self.assertEqual(call("/again"), 200)
        self.assertEqual(stats.total_errors, 6)
        self.assertEqual(stats.total_requests, 6)
        self.assertEqual(sink.refused, 6)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("No such file or directory", errors[0]["error"])
        failure = self.failureResultOf(sink.send(request(), False), SinkUnavailable)
        self.assertIn(str(path), str(failure.value))

        # The directory appears: the next retry opens the file, copies are
        # accepted again, and the first write logs the recovery.
        path.parent.mkdir()
        with capturedLogs() as events:
            self.clock.advance(1)
            self.assertEqual(call("/back"), 200)
            self.clock.advance(1)
        self.assertEqual([r["uri"] for r in lines(path)], ["/back"])
        self.assertEqual((stats.total_requests, stats.total_errors), (7, 6))
        (info,) = [e for e in events if e["log_level"] == LogLevel.info]
        self.assertEqual(info["refused"], 7)  # the six, and the direct send

    def test_lines_of_a_failed_write_are_kept_and_retried(self) -> None:
        path = self.dir / "traffic.jsonl"
        writer = FlakyFile(str(path))
        sink = FileSink(name="rec", inbound="foo", writer=writer, clock=self.clock)
        self.addCleanup(sink.close)
        writer.failing = OSError(errno.ENOSPC, "No space left on device")
        writer.after_lines = 1
        for n in range(3):
            sink.send(request(n), False)
        with capturedLogs() as events:
            self.clock.advance(1)
            writer.after_lines = 0
            self.failureResultOf(sink.send(request(9), False), SinkUnavailable)
            for _ in range(3):
                self.clock.advance(1)
        self.assertEqual(
            len([e for e in events if e["log_level"] == LogLevel.error]), 1
        )
        self.assertEqual([r["uri"] for r in lines(path)], ["/items/0?x=1"])
        writer.failing = None
        self.clock.advance(1)
        self.assertEqual(
            [r["uri"] for r in lines(path)],
            ["/items/0?x=1", "/items/1?x=1", "/items/2?x=1"],
        )
        self.successResultOf(sink.send(request(3), False))
        self.assertEqual(sink.lost, 0)

    def test_lines_still_unwritable_at_close_are_counted_and_logged(self) -> None:
        writer = FlakyFile(str(self.dir / "traffic.jsonl"))
        sink = FileSink(name="rec", inbound="foo", writer=writer, clock=self.clock)
        writer.failing = OSError(errno.ENOSPC, "No space left on device")
        for n in range(4):
            sink.send(request(n), False)
        with capturedLogs() as events:
            self.successResultOf(sink.close())
        self.assertEqual(sink.lost, 4)
        (error,) = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(error["lost"], 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FactoryTests(SynchronousTestCase):
    def check(self, value: object) -> None:
        config = parse_outbound("foo", "rec", value)
        factory_for("foo", config, {"file": FileSinkFactory()})

    def test_valid_addresses_and_options(self) -> None:
        for value in (
            "file:///var/log/nfork/traffic.jsonl",
            "file://localhost/tmp/a%20b.jsonl",
            {"addr": "file:///t.jsonl", "maxBytes": 1000, "backups": 0},
            {"addr": "file:///t.jsonl", "bufferLines": 5, "methods": ["POST"]},
        ):
            self.check(value)

    def test_invalid_addresses(self) -> None:
        for address in (
            "file://relative/path.jsonl",
            "file:///var/log/",
            "file:///t.jsonl?x=1",
            "file://host:99/t.jsonl",
        ):
            with pytest.raises(ConfigError) as caught:
                self.check(address)
            message = str(caught.value)
            self.assertTrue(
                message.startswith('inbound "foo": outbound "rec": key "addr": '),
                message,
            )
            self.assertEqual(caught.value.key, "addr")

    def test_invalid_options(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"maxBytes": -1}, 'key "maxBytes": expected an integer of at least 0'),
            ({"backups": "3"}, 'key "backups": expected an integer'),
            ({"bufferLines": 0}, 'key "bufferLines": expected an integer of at least'),
            ({"maxbytes": 1}, 'unknown key "maxbytes" (did you mean "maxBytes"?)'),
            ({"sampel": 0.5}, 'unknown key "sampel" (did you mean "sample"?)'),
            ({"zzz": 1}, 'unknown key "zzz" (valid keys: "addr", "sample"'),
            ({"bufferLines": 10**7}, 'key "bufferLines": must be at most 1000000, '),
            ({"backups": 5000}, 'key "backups": must be at most 1000, got 5000'),
            ({"maxBytes": 2**41}, 'key "maxBytes": must be at most 1099511627776'),
            ({"maxBytes": 10**40}, "got a very large number"),
        ]
        for options, expected in cases:
            with pytest.raises(ConfigError) as caught:
                self.check({"addr": "file:///t.jsonl", **options})
            self.assertIn(expected, str(caught.value))
            self.assertTrue(
                str(caught.value).startswith('inbound "foo": outbound "rec": ')
            )

    def test_build_passes_the_options_and_the_inbound(self) -> None:
        directory = temp_dir(self)
        config = parse_outbound(
            "foo",
            "rec",
            {"addr": f"file://{directory}/t.jsonl", "maxBytes": 10, "backups": 1},
        )
        clock = Clock()
        context: Any = type("Context", (), {"reactor": clock, "inbound": "foo"})()
        sink = FileSinkFactory().build(config, context)
        assert isinstance(sink, FileSink)
        self.assertEqual(
            (sink.inbound, sink.name, sink.path), ("foo", "rec", f"{directory}/t.jsonl")
        )
        self.successResultOf(sink.close())

    def test_without_threads_writes_are_inline(self) -> None:
        result = self.successResultOf(thread_runner(Clock())(lambda x: x + 1, 1))
        self.assertEqual(result, 2)


class SinkDirTests(SynchronousTestCase):
    """Where a sink asked for through the control API may write."""

    def setUp(self) -> None:
        self.top = temp_dir(self)
        self.sinks = self.top / "sinks"
        self.sinks.mkdir()
        self.outside = self.top / "precious"
        self.outside.write_text("keep me")

    def refused(self, path: str, sink_dir: Path | None = None) -> str:
        with pytest.raises(OutsideSinkDir) as caught:
            check_sink_dir(path, str(sink_dir or self.sinks))
        return str(caught.value)

    def test_a_file_inside_the_directory_is_allowed(self) -> None:
        check_sink_dir(f"{self.sinks}/new.jsonl", str(self.sinks))
        (self.sinks / "old.jsonl").write_text("")
        check_sink_dir(f"{self.sinks}/old.jsonl", str(self.sinks))
        (self.sinks / "team").mkdir()
        check_sink_dir(f"{self.sinks}/team/a.jsonl", str(self.sinks))
        check_sink_dir(f"{self.sinks}/missing/a.jsonl", str(self.sinks))

    def test_paths_outside_are_refused(self) -> None:
        self.assertIn("not inside", self.refused(str(self.outside)))
        self.assertIn("not inside", self.refused(f"{self.sinks}x/a.jsonl"))
        self.assertIn("not inside", self.refused("/etc/passwd"))
        self.assertIn("'..'", self.refused(f"{self.sinks}/../precious"))
        self.assertIn("'..'", self.refused(f"{self.sinks}/./a.jsonl"))
        self.assertIn("'..'", self.refused(f"{self.sinks}//a.jsonl"))

    def test_symbolic_links_are_not_followed(self) -> None:
        (self.sinks / "link").symlink_to(self.outside)
        self.assertIn("symbolic link", self.refused(f"{self.sinks}/link"))
        (self.sinks / "dir").symlink_to(self.top)
        self.assertIn("symbolic link", self.refused(f"{self.sinks}/dir/precious"))
        # Even a link that stays inside: nothing is resolved below the directory.
        (self.sinks / "inner").symlink_to(self.sinks / "a.jsonl")
        self.assertIn("symbolic link", self.refused(f"{self.sinks}/inner"))
        self.assertEqual(self.outside.read_text(), "keep me")

    def test_the_directory_itself_may_be_a_link(self) -> None:
        alias = self.top / "alias"
        alias.symlink_to(self.sinks)
        check_sink_dir(f"{alias}/a.jsonl", str(alias))
        check_sink_dir(f"{self.sinks}/a.jsonl", str(alias))

    def test_only_regular_files(self) -> None:
        (self.sinks / "sub").mkdir()
        self.assertIn("not a regular file", self.refused(f"{self.sinks}/sub"))
        self.assertIn("not inside", self.refused(str(self.sinks)))


class AnswerRecordingTests(SynchronousTestCase):
    """C{"answers": true}: the active outbound's answer goes with each request."""

    def build(self, options: dict[str, Any]) -> FileSink:
        directory = temp_dir(self)
        config = parse_outbound(
            "foo", "rec", {"addr": f"file://{directory}/t.jsonl", **options}
        )
        clock = Clock()
        context: Any = type("Context", (), {"reactor": clock, "inbound": "foo"})()
        sink = FileSinkFactory().build(config, context)
        assert isinstance(sink, FileSink)
        return sink

    def test_the_option_sets_records_answers(self) -> None:
        for options, expected in (({}, False), ({"answers": True}, True)):
            sink = self.build(options)
            self.assertIs(sink.records_answers, expected)
            self.successResultOf(sink.close())

    def test_the_option_must_be_a_boolean(self) -> None:
        for value in ("yes", 1, None):
            config = parse_outbound(
                "foo", "rec", {"addr": "file:///t.jsonl", "answers": value}
            )
            with pytest.raises(ConfigError) as caught:
                factory_for("foo", config, {"file": FileSinkFactory()})
            self.assertIn('key "answers": expected true or false', str(caught.value))
            self.assertTrue(
                str(caught.value).startswith('inbound "foo": outbound "rec": ')
            )

    def test_the_answer_is_written_with_the_request(self) -> None:
        sink = self.build({"answers": True})
        answer = CapturedAnswer(
            code=201,
            headers=((b"Content-Type", b"application/json"),),
            body=b'{"id": 7}',
            length=9,
        )
        self.successResultOf(sink.send(attrs.evolve(request(1), answer=answer), False))
        self.successResultOf(sink.send(request(2), False))
        self.successResultOf(sink.close())
        written = lines(Path(sink.path))
        self.assertEqual(
            written[0]["answer"],
            {
                "status": 201,
                "headers": [["Content-Type", "application/json"]],
                "body": '{"id": 7}',
                "body_base64": False,
                "truncated": False,
                "length": 9,
                "error": None,
            },
        )
        self.assertNotIn("answer", written[1])
        recorded = decode_record(Path(sink.path).read_bytes().splitlines()[0])
        self.assertEqual(recorded.answer, answer)


def test_a_worker_writes_its_own_file_named_after_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WORKER_ENV, "2")
    config = parse_outbound(
        "foo", "rec", {"addr": f"file://{tmp_path}/traffic.jsonl", "maxBytes": 10}
    )
    context: Any = type("Context", (), {"reactor": Clock(), "inbound": "foo"})()
    sink = FileSinkFactory().build(config, context)
    assert isinstance(sink, FileSink)
    assert sink.path == f"{tmp_path}/traffic.w2.jsonl"
    sink.send(request(1), False)
    sink.send(request(2), False)  # past maxBytes: the worker's own file rotates
    sink.close()
    assert sorted(os.listdir(tmp_path)) == ["traffic.w2.jsonl", "traffic.w2.jsonl.1"]
    assert [line["uri"] for line in lines(tmp_path / "traffic.w2.jsonl.1")] == [
        "/items/1?x=1"
    ]
    assert [line["uri"] for line in lines(tmp_path / "traffic.w2.jsonl")] == [
        "/items/2?x=1"
    ]


def test_a_single_process_writes_the_file_named_in_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WORKER_ENV, raising=False)
    config = parse_outbound("foo", "rec", f"file://{tmp_path}/traffic.jsonl")
    context: Any = type("Context", (), {"reactor": Clock(), "inbound": "foo"})()
    sink = FileSinkFactory().build(config, context)
    assert isinstance(sink, FileSink)
    assert sink.path == f"{tmp_path}/traffic.jsonl"
    sink.close()


@pytest.mark.parametrize(
    ("path", "worker", "expected"),
    [
        ("/var/log/traffic.jsonl", "1", "/var/log/traffic.w1.jsonl"),
        ("/var/log/traffic", "3", "/var/log/traffic.w3"),
        ("/var/log/traffic.2026.jsonl", "12", "/var/log/traffic.2026.w12.jsonl"),
        ("/var/log/.hidden", "1", "/var/log/.hidden.w1"),
        ("/var/log/traffic.jsonl", None, "/var/log/traffic.jsonl"),
        ("/var/log/traffic.jsonl", "", "/var/log/traffic.jsonl"),
    ],
)
def test_the_worker_index_goes_before_the_suffix(
    path: str, worker: str | None, expected: str
) -> None:
    assert worker_file_path(path, worker) == expected


def test_the_workers_files_of_an_api_sink_are_checked_too(tmp_path: Path) -> None:
    sinks = tmp_path / "sinks"
    sinks.mkdir()
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    (sinks / "traffic.w1.jsonl").write_text("")
    (sinks / "traffic.w10.jsonl").write_text("")
    (sinks / "other.w2.jsonl").symlink_to(precious)  # another sink's: not ours
    check_sink_dir(f"{sinks}/traffic.jsonl", str(sinks))
    (sinks / "traffic.w2.jsonl").symlink_to(precious)
    with pytest.raises(OutsideSinkDir) as caught:
        check_sink_dir(f"{sinks}/traffic.jsonl", str(sinks))
    assert str(caught.value) == (
        f"{sinks}/traffic.w2.jsonl goes through a symbolic link "
        f"({sinks}/traffic.w2.jsonl): not followed"
    )
    (sinks / "traffic.w2.jsonl").unlink()
    (sinks / "traffic.w3.jsonl").mkdir()
    with pytest.raises(OutsideSinkDir, match=r"traffic\.w3\.jsonl exists and is not"):
        check_sink_dir(f"{sinks}/traffic.jsonl", str(sinks))
    assert precious.read_text() == "keep me"
