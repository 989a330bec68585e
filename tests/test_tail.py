"""`telemetryctl tail`: events streamed as they are journaled, against the real daemon.

Synchronisation without sleeps: a tail asked for a backlog of one event prints an
event journaled before it subscribed; once that line is read, the subscription is in
place, so every event sent afterwards must reach it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from conftest import TELEMETRYCTL, Daemon, connect, ctl, exchange, summary
from telemetryd import wire
from telemetryd.client import control
from telemetryd.daemon import tail
from test_client import Peer, answering
from test_client import line as reply_line


def event(type_: str = "custom", **fields: Any) -> bytes:
    return json.dumps({"type": type_, **fields}, separators=(",", ":")).encode() + b"\n"


def send(daemon: Daemon, *lines: bytes) -> None:
    """Send ``lines`` on one connection; every one must be journaled (acknowledged)."""
    replies = exchange(daemon.events_socket, b"".join(lines))
    assert replies == [summary(len(lines), len(lines))], replies


class Tail:
    """`telemetryctl tail` in a subprocess; its stdout read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [TELEMETRYCTL, "tail", "--format", "ndjson", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.stdout: IO[bytes] = self.proc.stdout

    def events(self, count: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            line = self.stdout.readline()
            assert line, f"tail ended early: {self.finish()}"
            out.append(json.loads(line))
        return out

    def finish(self, sig: int | None = None) -> tuple[int, bytes]:
        if sig is not None:
            self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for t in started:
        t.close()


def start_tail(tails: list[Tail], *args: str) -> Tail:
    t = Tail(*args)
    tails.append(t)
    return t


def tail_clients(daemon: Daemon) -> int:
    return int(control.request(daemon.control_socket, wire.StatusRequest())["tail_clients"])


def wait_no_tail_clients(daemon: Daemon) -> None:
    """Ask `status` until the daemon has seen every tail client go (each ask is a round trip)."""
    for _ in range(5000):
        if tail_clients(daemon) == 0:
            return
    raise AssertionError("a tail client is still registered")


def test_follow_prints_events_sent_after_it_started_and_ctrl_c_ends_it(
    running_daemon: Daemon, tails: list[Tail]
) -> None:
    send(running_daemon, event(name="before", id="ev-before"))
    follower = start_tail(tails, "-f", "-n", "1")
    assert [e["id"] for e in follower.events(1)] == ["ev-before"]
    assert tail_clients(running_daemon) == 1
    send(running_daemon, *(event(name=f"n{i}", id=f"ev-{i}") for i in range(5)))
    send(running_daemon, event("skill", name="pdf", id="ev-skill", success=True))
    got = follower.events(6)
    assert [e["id"] for e in got] == [f"ev-{i}" for i in range(5)] + ["ev-skill"]
    assert got[-1] == next(e for e in running_daemon.journal_events() if e["id"] == "ev-skill")
    code, err = follower.finish(signal.SIGINT)
    assert (code, err) == (130, b"")
    wait_no_tail_clients(running_daemon)
    send(running_daemon, event(name="after"))  # the daemon is unaffected
    assert ctl("status").returncode == 0


def mixed() -> list[bytes]:
    """Events of three types, two sessions, two sources; ids say which."""
    lines = []
    for i in range(12):
        type_ = ("custom", "skill", "metric")[i % 3]
        session, source = f"s{i % 2}", ("codex", "claude-code")[i // 6]
        fields: dict[str, Any] = {"name": f"n{i}"}
        if type_ == "metric":
            fields.update(value=float(i), kind="gauge")
        lines.append(
            event(
                type_,
                id=f"{type_}.{session}.{source}.{i}",
                session_id=session,
                source=source,
                **fields,
            )
        )
    return lines


def ids(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["id"] for line in result.stdout.splitlines()]


def test_filters_select_the_backlog(running_daemon: Daemon) -> None:
    lines = mixed()
    send(running_daemon, *lines)
    every = [json.loads(line)["id"] for line in lines]

    def expect(keep: Any) -> list[str]:
        return [i for i in every if keep(*i.split(".")[:3])]

    tail_n = ("tail", "--format", "ndjson", "-n")
    assert ids(ctl(*tail_n, "100")) == every
    assert ids(ctl(*tail_n, "3")) == every[-3:]
    assert ids(ctl(*tail_n, "0")) == []
    assert ids(ctl(*tail_n, "100", "--type", "skill")) == expect(lambda t, s, src: t == "skill")
    assert ids(ctl(*tail_n, "100", "--type", "skill", "--type", "metric")) == expect(
        lambda t, s, src: t in ("skill", "metric")
    )
    assert ids(ctl(*tail_n, "100", "--session", "s1", "--source", "codex")) == expect(
        lambda t, s, src: s == "s1" and src == "codex"
    )
    assert (
        ids(ctl(*tail_n, "2", "--source", "claude-code", "--type", "custom"))
        == expect(lambda t, s, src: src == "claude-code" and t == "custom")[-2:]
    )
    assert ids(ctl(*tail_n, "100", "--session", "nobody")) == []


def test_filters_select_what_is_followed(running_daemon: Daemon, tails: list[Tail]) -> None:
    send(running_daemon, event("skill", name="first", id="first", session_id="s1"))
    follower = start_tail(tails, "-f", "-n", "1", "--type", "skill", "--session", "s1")
    assert [e["id"] for e in follower.events(1)] == ["first"]
    lines = mixed()
    send(running_daemon, *lines)
    send(running_daemon, event("skill", name="last", id="last", session_id="s1"))
    wanted = [json.loads(line)["id"] for line in lines if line.startswith(b'{"type":"skill"')]
    wanted = [i for i in wanted if i.split(".")[1] == "s1"] + ["last"]
    assert [e["id"] for e in follower.events(len(wanted))] == wanted


def test_a_client_that_never_reads_does_not_slow_ingest(running_daemon: Daemon) -> None:
    send(running_daemon, event(name="sync", id="sync"))
    with connect(running_daemon.control_socket, timeout=30) as deaf:
        deaf.sendall(b'{"op":"tail","backlog":1,"follow":true}\n')
        first = b""
        while not first.endswith(b"\n"):
            first += deaf.recv(1)
        assert json.loads(first)["id"] == "sync"
        # Now subscribed, and reading nothing while 50k events (~17 MB) are sent.
        padding = "x" * 200
        batch = [event(name=f"n{i}", attrs={"pad": padding}) for i in range(50_000)]
        send(running_daemon, *batch)
        status = control.request(running_daemon.control_socket, wire.StatusRequest())
        assert status["accepted"] == 50_001
        assert rss_mb(running_daemon) < 200
        # Everything written since is accounted for: sent, or counted as dropped.
        seen, dropped, carry = 0, 0, b""
        while seen + dropped < 50_000:
            chunk = deaf.recv(1 << 20)
            assert chunk, "the daemon closed the tail"
            *lines, carry = (carry + chunk).split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "dropped" in message:
                    dropped += message["dropped"]
                else:
                    assert message["name"].startswith("n")
                    seen += 1
        assert seen + dropped == 50_000 and dropped > 0 and carry == b""
        # The subscription goes on.
        send(running_daemon, event(name="later", id="later"))
        line = b""
        while not line.endswith(b"\n"):
            line += deaf.recv(1)
        assert json.loads(line)["id"] == "later"


def rss_mb(daemon: Daemon) -> float:
    assert daemon.proc is not None
    with open(f"/proc/{daemon.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_stopping_daemon_ends_its_tails(running_daemon: Daemon, tails: list[Tail]) -> None:
    send(running_daemon, event(name="before", id="before"))
    follower = start_tail(tails, "-f")
    assert [e["id"] for e in follower.events(1)] == ["before"]
    assert running_daemon.stop() == 0
    code, err = follower.finish()
    assert code == 3
    assert err == b"telemetryctl tail: the daemon is shutting down\n"


def test_tail_without_a_daemon_says_so() -> None:
    result = ctl("tail", "-f")
    assert result.returncode == 3
    assert b"the daemon is not running" in result.stderr


def test_usage_errors_and_help() -> None:
    assert ctl("tail", "-n", "many").returncode == 2
    assert ctl("tail", "--format", "csv").returncode == 2
    assert ctl("tail", "--bogus").returncode == 2
    shown = ctl("tail", "--help")
    assert shown.returncode == 0 and shown.stdout.startswith(b"Usage: telemetryctl tail")


def test_table_format(running_daemon: Daemon) -> None:
    send(
        running_daemon,
        event(
            "tool_result",
            session_id="sess-1",
            source="claude-code",
            tool={"name": "Bash", "success": False},
            duration_ms=412,
        ),
    )
    result = ctl("tail", "--format", "table")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.decode().splitlines()
    assert header.split() == ["time", "(UTC)", "type", "source", "session", "what"]
    assert row.split()[2:] == [
        "tool_result",
        "claude-code",
        "sess-1",
        "Bash",
        "failed",
        "412",
        "ms",
    ]


def test_backlog_lines_across_read_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "_BLOCK", 64)  # lines longer than a block, cut anywhere
    lines = [event(name="x" * (i * 7 % 150), id=f"e{i}", source=f"src{i % 3}") for i in range(40)]
    path = tmp_path / "segment.jsonl"
    path.write_bytes(b"".join(lines))
    size = path.stat().st_size
    everything = tail.Filter(wire.TailRequest())
    assert tail.read_backlog(str(path), size, everything, 100) == lines
    assert tail.read_backlog(str(path), size, everything, 7) == lines[-7:]
    end = size - len(lines[-1])  # where the writer was: the last line is not included
    assert tail.read_backlog(str(path), end, everything, 2) == lines[-3:-1]
    src1 = tail.Filter(wire.TailRequest(sources=["src1"]))
    assert tail.read_backlog(str(path), size, src1, 3) == [lines[i] for i in (31, 34, 37)]
    assert tail.read_backlog(str(tmp_path / "gone.jsonl"), 10, everything, 3) == []


def test_a_subscription_drops_past_its_budget_and_says_how_many() -> None:
    import anyio

    async def scenario() -> list[bytes | int]:
        sub = tail.Subscription(max_bytes=10)
        sub(b"a\n", 1)
        sub(b"b" * 9 + b"\n", 1)  # would pass 10 bytes: dropped
        sub(b"c\n", 1)  # fits
        sub(b"d" * 20 + b"\n", 2)  # dropped
        got = [await sub.get(), await sub.get(), await sub.get(), await sub.get()]
        sub(b"e" * 30 + b"\n", 1)  # an empty buffer takes one group of any size
        got.append(await sub.get())
        return got

    assert anyio.run(scenario) == [b"a\n", 1, b"c\n", 2, b"e" * 30 + b"\n"]


def test_a_client_that_half_closes_is_let_go(running_daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(running_daemon.control_socket)
        sock.sendall(b'{"op":"tail","follow":true}\n')
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # the daemon ends the tail and the connection
    wait_no_tail_clients(running_daemon)


# -- the client against each kind of answer --------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[[bytes], str]]:
    """A control socket (served by a thread) that answers the tail request with ``answer``."""
    made: list[Peer] = []

    def make(answer: bytes) -> str:
        made.append(Peer(tmp_path, answering(answer)))
        return made[-1].path

    yield make
    for peer in made:
        peer.close()


E1 = event(name="one", id="e1")
E2 = event(name="two", id="e2")


@pytest.mark.parametrize(
    "answer, code, out, err",
    [
        (
            E1 + reply_line(wire.TailDropped(3)) + E2 + reply_line(wire.TailDone(True, 2)),
            0,
            E1 + E2,
            b"telemetryctl tail: 3 events skipped (read too slowly)\n",
        ),
        (
            E1 + reply_line(wire.Closing(wire.SHUTTING_DOWN, "the daemon is shutting down")),
            3,
            E1,
            b"telemetryctl tail: the daemon is shutting down\n",
        ),
        (E1, 3, E1, b"telemetryctl tail: the daemon closed the connection\n"),
        (
            reply_line(wire.Closing(wire.BAD_REQUEST, "Expected `int` - at `$.backlog`")),
            1,
            b"",
            b"telemetryctl tail: Expected `int` - at `$.backlog`\n",
        ),
        (
            reply_line(wire.Closing(wire.FORBIDDEN_PEER, "uid 7 may not connect")),
            1,
            b"",
            b"telemetryctl tail: uid 7 may not connect\n",
        ),
        (
            reply_line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 64")),
            3,
            b"",
            b"telemetryctl tail: the daemon is busy: over 64; try again shortly\n",
        ),
        (E1 + b'{"ok":"yes"}\n', 1, E1, b"telemetryctl tail: the daemon's reply is not the end"),
    ],
)
def test_what_the_tail_client_does_with_each_answer(
    fake: Callable[[bytes], str], answer: bytes, code: int, out: bytes, err: bytes
) -> None:
    result = ctl("tail", "--format", "ndjson", "--socket", fake(answer))
    assert (result.returncode, result.stdout) == (code, out), result
    assert result.stderr.startswith(err) and result.stderr.count(b"\n") == 1, result.stderr
