"""The events socket, over real Unix sockets against the real daemon.

Every test talks to `telemetryd` in a subprocess through its real socket (and a few
through real `nc` / `socat` processes) and checks the journal files it wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, connect, ctl, exchange, read_replies, summary

DaemonFactory = Callable[..., Daemon]

MAX_LINE = 1024
MAX_ATTRS_BYTES = 256
MAX_ATTRS_DEPTH = 3
LIMITS = [
    "--set",
    f"ingest.max-line-bytes={MAX_LINE}",
    "--set",
    f"ingest.max-attrs-bytes={MAX_ATTRS_BYTES}",
    "--set",
    f"ingest.max-attrs-depth={MAX_ATTRS_DEPTH}",
]
SYNC = b'{"op":"sync"}\n'
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def event(type_: str = "custom", **fields: Any) -> bytes:
    """One compact JSON event line."""
    return json.dumps({"type": type_, **fields}, separators=(",", ":")).encode() + b"\n"


def custom(name: str, **fields: Any) -> bytes:
    return event("custom", name=name, **fields)


def names(daemon: Daemon) -> list[str]:
    return [e.get("name", "") for e in daemon.journal_events()]


def assert_serving(daemon: Daemon, name: str = "later") -> None:
    """A new connection is served and its event journaled."""
    replies = exchange(daemon.events_socket, custom(name))
    assert replies == [summary(1, 1)]
    assert names(daemon).count(name) == 1


def complete_lines(daemon: Daemon) -> int:
    """How many whole lines the journal holds (a line being written is not counted)."""
    return sum(p.read_bytes().count(b"\n") for p in daemon.journal_dir.glob("*.jsonl"))


def poll(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """For the few cases without an acknowledgement to wait on (a client that reads nothing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Replies:
    """Reply lines from one connection, read one at a time (blocking, with the socket timeout)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before a full reply line: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        result: dict[str, Any] = json.loads(line)
        return result

    def rest(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buf.splitlines()] + read_replies(self.sock)


@pytest.fixture(scope="module")
def limited() -> Iterator[Daemon]:
    """One daemon with small limits on line size and on attrs size and depth, shared by the
    bad-input tests (each uses its own event names): a start per case would dominate."""
    home = Path(tempfile.mkdtemp(prefix="td-", dir="/tmp"))
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("TELEMETRYD_") or name == "NOTIFY_SOCKET":
                env.delenv(name)
        daemon = Daemon(home, LIMITS).start()
    yield daemon
    try:
        assert daemon.stop() == 0, daemon.log()
    finally:
        daemon.close()
        shutil.rmtree(home, ignore_errors=True)


def tagged(daemon: Daemon, tag: str) -> list[str]:
    """The journaled names that start with ``tag`` (one test's events in a shared daemon)."""
    return [name for name in names(daemon) if name.startswith(tag)]


# -- bad input in the middle of a stream of good events ----------------------------------


def test_good_and_bad_lines_in_one_stream(running_daemon: Daemon) -> None:
    payload = b"".join(
        [
            b'{"type":"custom","name":"a"}\n',
            b'{"type":"bogus"}\n',
            b'{"type":"custom","name":"b"}\n',
        ]
    )
    replies = exchange(running_daemon.events_socket, payload)
    assert replies[0]["line"] == 2 and replies[0]["error"] == "invalid_event"
    assert replies[-1] == {"ok": True, "lines": 3, "accepted": 2, "rejected": 1, "duplicates": 0}
    assert names(running_daemon) == ["a", "b"]


# (id, bad line, error code, path (None: not checked), fragment the message must contain)
BAD_LINES: list[tuple[str, bytes, str, str | None, str]] = [
    ("invalid-json", b'{"type":"custom","name":', "invalid_json", "$", "invalid JSON"),
    ("invalid-utf8", b'{"type":"custom","name":"caf\xe9"}', "invalid_utf8", "$", "byte 28"),
    ("not-an-object", b'["custom","x"]', "invalid_event", "$", "Expected `object`, got `array`"),
    ("a-string", b'"custom"', "invalid_event", "$", "Expected `object`, got `str`"),
    ("missing-type", b'{"name":"x"}', "invalid_event", "$", "`type`"),
    ("unknown-type", b'{"type":"bogus","name":"x"}', "invalid_event", "$.type", "'bogus'"),
    (
        "unknown-field",
        b'{"type":"custom","name":"x","colour":"red"}',
        "invalid_event",
        "$",
        "`colour`",
    ),
    (
        "wrong-type",
        b'{"type":"api_request","tokens":{"source":"actual","input":"12","output":3}}',
        "invalid_event",
        "$.tokens.input",
        "Expected `int",
    ),
    (
        "wrong-type-top",
        b'{"type":"tool_call","tool":{"name":"Bash"},"duration_ms":-5}',
        "invalid_event",
        "$.duration_ms",
        ">= 0",
    ),
    (
        "actual-without-output",
        b'{"type":"api_request","tokens":{"source":"actual","input":12}}',
        "invalid_event",
        "$.tokens",
        "`output`",
    ),
    (
        "estimated-without-tokenizer",
        b'{"type":"api_request","tokens":{"source":"estimated","estimated_total":40}}',
        "invalid_event",
        "$.tokens",
        "`tokenizer`",
    ),
    (
        "received-at",
        b'{"type":"custom","name":"x","received_at":"2025-01-01T00:00:00Z"}',
        "received_at_set",
        "$.received_at",
        "received_at",
    ),
    (
        "nan",
        b'{"type":"metric","name":"m","value":NaN,"kind":"gauge"}',
        "invalid_json",
        "$",
        "invalid JSON",
    ),
    (
        "infinity",
        b'{"type":"metric","name":"m","value":Infinity,"kind":"gauge"}',
        "invalid_json",
        "$",
        "invalid JSON",
    ),
    (
        "1e999",
        b'{"type":"metric","name":"m","value":1e999,"kind":"gauge"}',
        "invalid_event",
        "$.value",
        "out of range",
    ),
    (
        "1e999-in-attrs",
        b'{"type":"custom","name":"x","attrs":{"big":-1e999}}',
        "invalid_event",
        None,
        "out of range",
    ),
    (
        "attrs-too-large",
        b'{"type":"custom","name":"x","attrs":{"blob":"' + b"x" * 400 + b'"}}',
        "attrs_too_large",
        "$.attrs",
        f"limit of {MAX_ATTRS_BYTES}",
    ),
    (
        "attrs-too-deep",
        b'{"type":"custom","name":"x","attrs":{"a":{"b":{"c":{"d":1}}}}}',
        "attrs_too_deep",
        "$.attrs",
        f"limit of {MAX_ATTRS_DEPTH}",
    ),
    (
        "log-fields-too-deep",
        b'{"type":"log","level":"info","component":"c","event":"e",'
        b'"fields":{"a":{"b":{"c":{"d":1}}}}}',
        "attrs_too_deep",
        "$.fields",
        f"limit of {MAX_ATTRS_DEPTH}",
    ),
    (
        "line-too-long",
        b'{"type":"custom","name":"' + b"x" * (MAX_LINE + 10) + b'"}',
        "line_too_long",
        None,
        f"limit of {MAX_LINE} bytes",
    ),
]


@pytest.mark.parametrize(
    ("case", "bad", "code", "path", "fragment"), BAD_LINES, ids=[case[0] for case in BAD_LINES]
)
def test_bad_line_mid_stream_is_answered_and_costs_no_good_event(
    limited: Daemon, case: str, bad: bytes, code: str, path: str | None, fragment: str
) -> None:
    tag = f"{case}:"
    with connect(limited.events_socket) as sock:
        replies = Replies(sock)
        sock.sendall(custom(f"{tag}before-1") + custom(f"{tag}before-2") + bad + b"\n")
        # The rejection comes at once, before the client half-closes.
        rejected = replies.next()
        assert rejected["line"] == 3
        assert rejected["error"] == code
        assert fragment in rejected["message"]
        if path is not None:
            assert rejected["path"] == path
        sock.sendall(custom(f"{tag}after-1") + custom(f"{tag}after-2"))
        sock.shutdown(socket.SHUT_WR)
        assert replies.rest() == [summary(5, 4, rejected=1)]
    assert tagged(limited, tag) == [
        f"{tag}{n}" for n in ("before-1", "before-2", "after-1", "after-2")
    ]
    assert_serving(limited, f"{tag}later")


def test_every_bad_line_in_one_stream_gets_its_own_line_number(limited: Daemon) -> None:
    tag = "all-in-one:"
    payload = b""
    expected: list[tuple[int, str]] = []
    good: list[str] = []
    lineno = 0
    for index, (_, bad, code, _, _) in enumerate(BAD_LINES):
        payload += custom(f"{tag}{index}") + bad + b"\n"
        good.append(f"{tag}{index}")
        lineno += 2
        expected.append((lineno, code))
    payload += custom(f"{tag}last")
    good.append(f"{tag}last")
    replies = exchange(limited.events_socket, payload)
    assert [(r["line"], r["error"]) for r in replies[:-1]] == expected
    assert replies[-1] == summary(lineno + 1, len(good), rejected=len(BAD_LINES))
    assert tagged(limited, tag) == good
    assert_serving(limited, f"{tag}later")


def test_limits_are_inclusive(limited: Daemon) -> None:
    """A line of exactly max-line-bytes and attrs exactly max-attrs-depth deep are accepted."""
    tag = "inclusive:"
    head = b'{"type":"custom","name":"' + tag.encode()
    padding = "x" * (MAX_LINE - len(head) - 2)
    exact = head + padding.encode() + b'"}'
    assert len(exact) == MAX_LINE
    deep = custom(f"{tag}deep", attrs={"a": {"b": {"c": 1}}})
    replies = exchange(limited.events_socket, exact + b"\n" + deep)
    assert replies == [summary(2, 2)]
    assert tagged(limited, tag) == [tag + padding, f"{tag}deep"]


def test_client_that_never_sends_a_newline(limited: Daemon) -> None:
    """A line over the limit is rejected as soon as the limit is passed, before its newline;
    the rest of it is skipped and the connection stays usable."""
    tag = "no-newline:"
    with connect(limited.events_socket) as sock:
        replies = Replies(sock)
        sock.sendall(custom(f"{tag}first") + b'{"type":"custom","name":"' + b"y" * (2 * MAX_LINE))
        rejected = replies.next()
        assert rejected["line"] == 2
        assert rejected["error"] == "line_too_long"
        assert str(MAX_LINE) in rejected["message"]
        sock.sendall(b"z" * (3 * MAX_LINE))  # still the same line
        sock.sendall(b'"}\n' + custom(f"{tag}after"))
        sock.shutdown(socket.SHUT_WR)
        assert replies.rest() == [summary(3, 2, rejected=1)]
    assert tagged(limited, tag) == [f"{tag}first", f"{tag}after"]
    assert_serving(limited, f"{tag}later")


def test_over_long_line_cut_off_by_eof(limited: Daemon) -> None:
    tag = "eof-long:"
    payload = custom(f"{tag}first") + b"{" + b" " * (2 * MAX_LINE)
    replies = exchange(limited.events_socket, payload)
    assert replies[0]["line"] == 2 and replies[0]["error"] == "line_too_long"
    assert replies[-1] == summary(2, 1, rejected=1)
    assert tagged(limited, tag) == [f"{tag}first"]


def test_ts_out_of_range_in_utc_is_rejected_not_fatal(running_daemon: Daemon) -> None:
    """A ts that is valid with its offset but outside datetime's range once in UTC."""
    payload = b"".join(
        [
            custom("before"),
            custom("late", ts="9999-12-31T23:59:59-01:00"),
            custom("early", ts="0001-01-01T00:30:00+01:00"),
            custom("after"),
        ]
    )
    replies = exchange(running_daemon.events_socket, payload)
    assert [(r.get("line"), r.get("error"), r.get("path")) for r in replies[:-1]] == [
        (2, "invalid_event", "$.ts"),
        (3, "invalid_event", "$.ts"),
    ]
    assert replies[-1] == summary(4, 2, rejected=2)
    assert names(running_daemon) == ["before", "after"]


def test_deeply_nested_json_is_rejected(running_daemon: Daemon) -> None:
    nested = b'{"type":"custom","name":"x","attrs":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    replies = exchange(running_daemon.events_socket, custom("a") + nested + b"\n" + custom("b"))
    assert replies[0]["line"] == 2 and replies[0]["error"] == "invalid_json"
    assert "nested" in replies[0]["message"]
    assert replies[-1] == summary(3, 2, rejected=1)
    assert names(running_daemon) == ["a", "b"]


def test_blank_lines_and_crlf(running_daemon: Daemon) -> None:
    payload = b"".join(
        [
            b"\n",
            custom("one").replace(b"\n", b"\r\n"),
            b"\r\n",
            b"   \n",
            b'{"type":"bogus"}\r\n',
            custom("two").replace(b"\n", b"\r\n"),
        ]
    )
    replies = exchange(running_daemon.events_socket, payload)
    assert replies[0]["line"] == 5 and replies[0]["error"] == "invalid_event"
    assert replies[-1] == summary(6, 2, rejected=1)
    assert names(running_daemon) == ["one", "two"]


def test_final_line_without_newline_is_an_event(running_daemon: Daemon) -> None:
    replies = exchange(running_daemon.events_socket, custom("a") + custom("b").rstrip(b"\n"))
    assert replies == [summary(2, 2)]
    assert names(running_daemon) == ["a", "b"]


def test_invalid_final_line_without_newline_is_answered(running_daemon: Daemon) -> None:
    replies = exchange(running_daemon.events_socket, custom("a") + b'{"type":"custom"')
    assert replies[0]["line"] == 2 and replies[0]["error"] == "invalid_json"
    assert replies[-1] == summary(2, 1, rejected=1)


# -- sync and duplicates ------------------------------------------------------------------


def test_sync_mid_stream(running_daemon: Daemon) -> None:
    with connect(running_daemon.events_socket) as sock:
        replies = Replies(sock)
        sock.sendall(custom("a") + custom("b") + SYNC)
        assert replies.next() == summary(3, 2)
        # Acknowledged means journaled.
        assert names(running_daemon) == ["a", "b"]
        sock.sendall(b"nope\n" + custom("c") + b'{ "op" : "sync" }\r\n')
        rejected = replies.next()
        assert rejected["line"] == 4 and rejected["error"] == "invalid_json"
        assert replies.next() == summary(6, 3, rejected=1)
        assert names(running_daemon) == ["a", "b", "c"]
        sock.sendall(SYNC)  # nothing new: the same counts, one more line
        assert replies.next() == summary(7, 3, rejected=1)
        sock.sendall(custom("d"))
        sock.shutdown(socket.SHUT_WR)
        assert replies.rest() == [summary(8, 4, rejected=1)]
    assert names(running_daemon) == ["a", "b", "c", "d"]


def test_sync_then_more_events_in_the_same_write(running_daemon: Daemon) -> None:
    replies = exchange(
        running_daemon.events_socket, custom("a") + SYNC + custom("b") + SYNC + custom("c")
    )
    assert replies == [summary(2, 1), summary(4, 2), summary(5, 3)]
    assert names(running_daemon) == ["a", "b", "c"]


def test_duplicates_in_one_connection(running_daemon: Daemon) -> None:
    payload = custom("x", id="dup-1") + custom("y", id="dup-2") + custom("x", id="dup-1")
    replies = exchange(running_daemon.events_socket, payload + SYNC + custom("x", id="dup-1"))
    assert replies == [summary(4, 2, duplicates=1), summary(5, 2, duplicates=2)]
    ids = [e["id"] for e in running_daemon.journal_events()]
    assert ids == ["dup-1", "dup-2"]


def test_duplicates_across_connections(running_daemon: Daemon) -> None:
    sock_path = running_daemon.events_socket
    assert exchange(sock_path, custom("x", id="same")) == [summary(1, 1)]
    assert exchange(sock_path, custom("x", id="same") + custom("z")) == [
        summary(2, 1, duplicates=1)
    ]
    assert exchange(sock_path, custom("x", id="same")) == [summary(1, 0, duplicates=1)]
    journal = running_daemon.journal_events()
    assert [e["id"] for e in journal].count("same") == 1
    assert [e["name"] for e in journal] == ["x", "z"]


def test_duplicates_across_concurrent_connections(running_daemon: Daemon) -> None:
    """Clients racing with the same ids: each id is journaled once, each client is told
    `accepted` or `duplicate` for every one, and only once it is in the journal."""
    clients, count = 8, 100
    payload = b"".join(custom("race", id=f"race-{n}") for n in range(count))

    def send(_: int) -> dict[str, Any]:
        (reply,) = exchange(running_daemon.events_socket, payload)
        # Acknowledged (as new or as duplicate) means journaled.
        assert complete_lines(running_daemon) == count
        return reply

    with ThreadPoolExecutor(clients) as pool:
        replies = list(pool.map(send, range(clients)))
    for reply in replies:
        assert reply["lines"] == count and reply["rejected"] == 0
        assert reply["accepted"] + reply["duplicates"] == count
    assert sum(r["accepted"] for r in replies) == count
    ids = [e["id"] for e in running_daemon.journal_events()]
    assert sorted(ids) == sorted(f"race-{n}" for n in range(count))


def test_duplicate_of_a_rejected_line_is_not_a_duplicate(running_daemon: Daemon) -> None:
    replies = exchange(
        running_daemon.events_socket,
        custom("x", id="r1", colour="red") + custom("x", id="r1"),
    )
    assert replies[0]["line"] == 1
    assert replies[-1] == summary(2, 1, rejected=1)
    assert [e["id"] for e in running_daemon.journal_events()] == ["r1"]


# -- connections: idle, limits, concurrency -----------------------------------------------


def test_idle_client_is_closed_while_others_are_served(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--set", "ingest.idle-timeout=0.5"]).start()
    with connect(daemon.events_socket) as idle, connect(daemon.events_socket) as quiet:
        quiet.sendall(custom("then-quiet"))
        assert exchange(daemon.events_socket, custom("busy")) == [summary(1, 1)]
        # The idle client gets one closing line, then the daemon closes.
        (closing,) = read_replies(idle)
        assert closing["error"] == "idle_timeout" and "0.5" in closing["message"]
        # A client that sent events and went quiet is acknowledged first.
        last = read_replies(quiet)
        assert last[0] == summary(1, 1)
        assert last[1]["error"] == "idle_timeout"
    assert sorted(names(daemon)) == ["busy", "then-quiet"]
    assert_serving(daemon)
    assert daemon.stop() == 0


def test_max_connections(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--set", "ingest.max-connections=2"]).start()
    path = daemon.events_socket
    with connect(path) as first, connect(path) as second:
        for sock in (first, second):  # a sync answer proves the connection is being served
            sock.sendall(custom("held") + SYNC)
            assert Replies(sock).next() == summary(2, 1)
        with connect(path) as third:
            (refused,) = read_replies(third)
            assert refused["error"] == "too_many_connections" and "2" in refused["message"]
        first.shutdown(socket.SHUT_WR)
        assert read_replies(first) == [summary(2, 1)]
        # A slot is free again.
        assert exchange(path, custom("fourth")) == [summary(1, 1)]
    assert names(daemon) == ["held", "held", "fourth"]
    daemon.stop()


def test_control_socket_answers_while_events_connections_are_at_the_limit(
    daemon_factory: DaemonFactory,
) -> None:
    """`max-connections` limits the events socket; `status` must still say the daemon is up."""
    daemon = daemon_factory(["--set", "ingest.max-connections=2"]).start()
    path = daemon.events_socket
    with connect(path) as first, connect(path) as second:
        for sock in (first, second):
            sock.sendall(SYNC)
            assert Replies(sock).next() == summary(1, 0)
        status = ctl("status", "--json")
        assert status.returncode == 0, status.stderr.decode()
        assert json.loads(status.stdout)["connections"] >= 2
    daemon.stop()


def test_many_concurrent_clients(running_daemon: Daemon) -> None:
    clients, per_client = 16, 200

    def send(client: int) -> list[dict[str, Any]]:
        payload = b"".join(
            custom("load", id=f"c{client}-{n}", attrs={"n": n}) for n in range(per_client)
        )
        return exchange(running_daemon.events_socket, payload)

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(send, range(clients)))
    assert results == [[summary(per_client, per_client)]] * clients
    ids = [e["id"] for e in running_daemon.journal_events()]
    expected = {f"c{c}-{n}" for c in range(clients) for n in range(per_client)}
    assert len(ids) == len(expected)
    assert set(ids) == expected
    # Each client's events keep their order in the journal.
    for client in range(clients):
        mine = [int(i.split("-")[1]) for i in ids if i.startswith(f"c{client}-")]
        assert mine == list(range(per_client))


# -- sockets and instances ----------------------------------------------------------------


def test_socket_modes(daemon_factory: DaemonFactory, state_home: Path) -> None:
    run = state_home / "run"
    run.mkdir(mode=0o755)
    os.chmod(run, 0o755)
    daemon = daemon_factory().start()
    for path in (daemon.events_socket, daemon.control_socket):
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o700
    daemon.stop()


def test_second_daemon_on_the_same_home_refuses(running_daemon: Daemon) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "telemetryd"],
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert second.returncode != 0
    assert b"another telemetryd" in second.stderr
    assert stat.S_ISSOCK(os.stat(running_daemon.events_socket).st_mode)
    assert running_daemon.proc is not None and running_daemon.proc.poll() is None
    assert_serving(running_daemon)
    assert ctl("status").returncode == 0


def test_stale_socket_is_replaced(daemon_factory: DaemonFactory, state_home: Path) -> None:
    run = state_home / "run"
    run.mkdir(mode=0o700)
    for name in ("events.sock", "control.sock"):  # as a killed daemon leaves them
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(run / name))
        stale.listen()
        stale.close()
        assert (run / name).exists()
    daemon = daemon_factory().start()
    assert_serving(daemon)
    assert ctl("status").returncode == 0
    daemon.stop()


def test_live_socket_is_never_stolen(daemon_factory: DaemonFactory, state_home: Path) -> None:
    run = state_home / "run"
    run.mkdir(mode=0o700)
    path = str(run / "events.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(path)
        live.listen()
        inode = os.stat(path).st_ino
        daemon = daemon_factory().start(wait=False)
        assert daemon.proc is not None
        assert daemon.proc.wait(30) != 0
        assert "live process" in daemon.log()
        assert os.stat(path).st_ino == inode
        with connect(path) as client:  # still ours
            live.settimeout(10)
            peer, _ = live.accept()
            peer.close()
            client.close()


# -- nc and socat -------------------------------------------------------------------------


def test_fire_and_forget_with_nc(running_daemon: Daemon) -> None:
    result = subprocess.run(
        ["sh", "-c", 'printf \'%s\\n\' "$EV" | nc -NU "$SOCK"'],
        env=dict(
            os.environ,
            EV='{"type":"tool_call","session_id":"s1","tool":{"name":"Bash"}}',
            SOCK=running_daemon.events_socket,
        ),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == summary(1, 1)
    (journaled,) = running_daemon.journal_events()
    assert journaled["tool"] == {"name": "Bash"} and journaled["session_id"] == "s1"


def test_socat_sees_rejections_and_summary(running_daemon: Daemon) -> None:
    result = subprocess.run(
        ["socat", "-t", "30", "-", f"UNIX-CONNECT:{running_daemon.events_socket}"],
        input=custom("via-socat") + b'{"type":"custom"}\n' + custom("again"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    replies = [json.loads(line) for line in result.stdout.splitlines()]
    assert replies[0]["line"] == 2 and "`name`" in replies[0]["message"]
    assert replies[1] == summary(3, 2, rejected=1)
    assert names(running_daemon) == ["via-socat", "again"]


def test_socat_write_only_fire_and_forget(running_daemon: Daemon) -> None:
    """`socat -u` writes and closes without reading any reply."""
    result = subprocess.run(
        ["socat", "-u", "-", f"UNIX-CONNECT:{running_daemon.events_socket}"],
        input=custom("ff-1") + custom("ff-2"),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert poll(lambda: complete_lines(running_daemon) == 2)
    assert names(running_daemon) == ["ff-1", "ff-2"]


def test_client_that_reads_nothing_loses_no_good_event_to_a_bad_line(
    daemon_factory: DaemonFactory,
) -> None:
    """A fire-and-forget producer that never reads (here: SHUT_RD, so the daemon's reply to
    the bad line cannot be delivered) must still get the good events around it journaled."""
    daemon = daemon_factory().start()
    with connect(daemon.events_socket) as sock:
        sock.shutdown(socket.SHUT_RD)
        sock.sendall(custom("ff-before") + b"not json\n" + custom("ff-after", id="ff-after"))
    assert poll(lambda: complete_lines(daemon) == 2)
    assert names(daemon) == ["ff-before", "ff-after"]
    assert_serving(daemon)
    assert daemon.stop() == 0


def test_id_seen_on_a_dropped_connection_is_not_lost(daemon_factory: DaemonFactory) -> None:
    """The same situation, then the producer resends the event with the same id: it must end
    up in the journal exactly once, and the resend must be acknowledged."""
    daemon = daemon_factory().start()
    with connect(daemon.events_socket) as sock:
        sock.shutdown(socket.SHUT_RD)
        sock.sendall(b"not json\n" + custom("resent", id="resent-1"))
    with connect(daemon.events_socket) as sock:
        sock.sendall(custom("resent", id="resent-1"))
        sock.shutdown(socket.SHUT_WR)
        (reply,) = read_replies(sock)
    assert reply["accepted"] + reply["duplicates"] == 1
    assert [e["id"] for e in daemon.journal_events()] == ["resent-1"]
    assert daemon.stop() == 0


# -- what the daemon sets -----------------------------------------------------------------


def _parse_ts(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def test_daemon_set_fields(running_daemon: Daemon) -> None:
    payload = custom("no-id") + custom("given", id="my-id-1") + custom("no-id-2")
    assert exchange(running_daemon.events_socket, payload) == [summary(3, 3)]
    first, given, second = running_daemon.journal_events()
    for journaled in (first, given, second):
        assert journaled["v"] == 1
        received = _parse_ts(journaled["received_at"])
        assert received.tzinfo is not None and received.utcoffset() is not None
        assert received.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert received.microsecond % 1000 == 0
        # ts defaults to the time of receipt
        assert _parse_ts(journaled["ts"]) == received
    assert given["id"] == "my-id-1"
    for assigned in (first, second):
        assert UUID7.match(assigned["id"]), assigned["id"]
        unix_ms = int(assigned["id"].replace("-", "")[:12], 16)
        assert unix_ms == int(_parse_ts(assigned["received_at"]).timestamp() * 1000)
    assert first["id"] != second["id"]
    assert first["id"] < second["id"]  # UUIDv7 sorts by time, and within a chunk by order


def test_ts_is_normalised_to_utc_ms(running_daemon: Daemon) -> None:
    payload = b"".join(
        [
            custom("offset", ts="2025-05-06T07:08:09.123456+01:00"),
            custom("zulu", ts="2025-05-06T07:08:09Z"),
            custom("negative", ts="2025-05-06T23:30:00.5-02:30"),
        ]
    )
    assert exchange(running_daemon.events_socket, payload) == [summary(3, 3)]
    stamps = {e["name"]: _parse_ts(e["ts"]) for e in running_daemon.journal_events()}
    assert stamps == {
        "offset": datetime(2025, 5, 6, 6, 8, 9, 123000, tzinfo=UTC),
        "zulu": datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC),
        "negative": datetime(2025, 5, 7, 2, 0, 0, 500000, tzinfo=UTC),
    }


def test_canonical_encoding_ignores_key_order_and_whitespace(running_daemon: Daemon) -> None:
    one = (
        b'{"type":"api_request","agent":{"model":"m1","provider":"p"},"tokens":'
        b'{"source":"actual","input":10,"output":5,"cache_read":2},"cost_usd":0.25,'
        b'"attrs":{"b":1,"a":{"y":[1,2],"x":null}},"session_id":"s"}\n'
    )
    two = (
        b'{ "session_id" : "s",\t"attrs": {"a": {"x": null, "y": [1, 2]}, "b": 1},\n'.replace(
            b"\n", b" "
        )
        + b'"cost_usd": 0.25, "tokens": {"output": 5, "cache_read": 2, "input": 10, '
        b'"source": "actual"}, "agent": {"provider": "p", "model": "m1"}, '
        b'"type": "api_request" }\r\n'
    )
    assert exchange(running_daemon.events_socket, one + two) == [summary(2, 2)]
    lines = b"".join(p.read_bytes() for p in sorted(running_daemon.journal_dir.glob("*.jsonl")))
    first, second = lines.splitlines()
    strip = re.compile(rb'"(id|ts|received_at)":"[^"]*",?')
    assert strip.sub(b"", first) == strip.sub(b"", second)
    assert b'"attrs":{"a":{"x":null,"y":[1,2]},"b":1}' in first
    assert json.loads(first)["tokens"]["total"] == 17  # derived, and part of the encoding


# -- stopping -----------------------------------------------------------------------------


def test_sigterm_right_after_ready_is_a_clean_stop(daemon_factory: DaemonFactory) -> None:
    """READY=1 tells a service manager that SIGTERM now means a clean stop (exit 0, sockets
    removed), so the signal handler must be in place before READY=1 is sent."""
    daemon = daemon_factory()
    for _ in range(5):
        daemon.start()
        assert daemon.stop() == 0, daemon.log()
        assert not os.path.exists(daemon.events_socket)
        assert not os.path.exists(daemon.control_socket)


def test_sigterm_acknowledges_an_open_connection(running_daemon: Daemon) -> None:
    with connect(running_daemon.events_socket) as sock:
        replies = Replies(sock)
        sock.sendall(custom("open-1") + custom("open-2") + SYNC)
        assert replies.next() == summary(3, 2)
        sock.sendall(custom("open-3"))
        assert running_daemon.stop() == 0
        # What was read gets journaled and acknowledged before the daemon exits; then it says
        # why it closes (`lines` in the summary tells how far it read).
        last, closing = replies.rest()
        assert closing["error"] == "shutting_down"
    assert last["ok"] is True and last["accepted"] in (2, 3)
    assert names(running_daemon) == ["open-1", "open-2", "open-3"][: last["accepted"]]


def test_peers_of_other_uids_are_refused(daemon_factory: DaemonFactory) -> None:
    """SO_PEERCRED: only allowed uids may connect. Here the allowed uid is not ours."""
    other = os.getuid() + 4242
    daemon = daemon_factory(["--set", f"ingest.allowed-uids=[{other}]"]).start()
    replies = exchange(daemon.events_socket, custom("intruder"))
    assert replies == [{"error": "forbidden_peer", "message": f"uid {os.getuid()} may not connect"}]
    status = ctl("status", "--socket", daemon.control_socket)
    assert (
        status.returncode == 1
        and b"running but answered with an error: forbidden_peer" in status.stderr
    )
    assert b"may not connect" in status.stderr
    assert daemon.journal_events() == []
    assert daemon.stop() == 0
