"""The control socket under load and abuse, against the real daemon on real sockets.

Slow query readers must never delay acknowledgements; `status` must answer while the
control connections are all taken; every request gets a reply, and every reply line
is whole; clients report a busy daemon as busy and a malformed reply as an error,
never with a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import TELEMETRYCTL, Daemon, connect, ctl, summary
from telemetryd import wire
from telemetryd.client import control, importer, output
from telemetryd.client import query as query_client
from telemetryd.errors import DaemonBusy
from telemetryd.store import queries as daemon_query

DaemonFactory = Callable[..., Daemon]

# A result that never ends, in rows of 1000 bytes: a client that does not read it
# keeps its query waiting to send.
ENDLESS = "select repeat('x', 1000) as v from range(1000000000)"
SLOW = "select count(*) from range(100000000000)"


def request(sock: socket.socket, message: dict[str, Any] | bytes) -> None:
    line = message if isinstance(message, bytes) else json.dumps(message).encode()
    sock.sendall(line + b"\n")


def reply_lines(sock: socket.socket, terminal: int = 1) -> list[dict[str, Any]]:
    """Reply lines until ``terminal`` lines that end a reply (``ok`` or ``error``) came."""
    data = b""
    out: list[dict[str, Any]] = []
    while terminal:
        chunk = sock.recv(1 << 16)
        assert chunk, f"the daemon closed the connection; had {out} and {data[:200]!r}"
        lines = (data + chunk).split(b"\n")
        data = lines.pop()
        for line in lines:
            reply = json.loads(line)
            out.append(reply)
            if "ok" in reply or "error" in reply:
                terminal -= 1
    assert not data
    return out


def ask(path: str, message: dict[str, Any] | bytes, timeout: float = 10.0) -> dict[str, Any]:
    with connect(path, timeout) as sock:
        request(sock, message)
        return reply_lines(sock)[-1]


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` (a status question: there is no event to wait on) until true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def held() -> Iterator[list[socket.socket]]:
    """Sockets a test keeps open; all closed at the end."""
    socks: list[socket.socket] = []
    yield socks
    for sock in socks:
        sock.close()


def open_control(daemon: Daemon, held: list[socket.socket], count: int) -> list[socket.socket]:
    made = []
    for _ in range(count):
        sock = connect(daemon.control_socket)
        held.append(sock)
        made.append(sock)
    return made


def slow_queries(daemon: Daemon, held: list[socket.socket], count: int) -> None:
    """``count`` clients asking for an endless result and reading none of it."""
    for sock in open_control(daemon, held, count):
        # A small receive buffer: the daemon's sends block sooner.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request(sock, {"op": "query", "sql": ENDLESS, "timeout": 600})


def status(daemon: Daemon) -> dict[str, Any]:
    return control.request(daemon.control_socket, wire.StatusRequest())


# -- finding 5: slow query clients and acknowledgements -----------------------------------


def test_slow_query_readers_never_delay_acknowledgements(
    daemon_factory: DaemonFactory, state_home: Path, held: list[socket.socket]
) -> None:
    # With `always`, every journal write goes through a worker thread: the writer's own.
    daemon = daemon_factory(["--set", "journal.durability=always"]).start()
    slow_queries(daemon, held, 44)  # more than anyio's 40 default worker threads
    slots = daemon_query.QUERY_SLOTS
    wait_until(
        lambda: (
            status(daemon)["queries"] == {"slots": slots, "running": slots, "waiting": 44 - slots}
        )
    )
    for n in range(20):
        with connect(daemon.events_socket, timeout=2.0) as sock:  # acks well within 2 s
            sock.sendall(json.dumps({"type": "custom", "name": f"e{n}"}).encode() + b"\n")
            sock.sendall(wire.SYNC_REQUEST)
            assert json.loads(sock.recv(4096)) == summary(2, 1)
    for n in range(3):
        sent = ctl("send", "--type", "custom", "--name", f"cli{n}", timeout=10)
        assert sent.returncode == 0 and not sent.stderr, sent.stderr
    assert not list((state_home / "spool").glob("*")), "send spooled: no ack within 1 s"
    assert len(daemon.journal_events()) == 23
    # Every slow client still holds its place; a fast one waits for a slot, in its timeout.
    waited = ctl("query", "--timeout", "0.5", "select 1")
    assert waited.returncode == 1
    assert b"no query slot came free within the query's 0.5 s" in waited.stderr
    for sock in held:
        sock.close()
    held.clear()
    wait_until(lambda: status(daemon)["queries"] == {"slots": 4, "running": 0, "waiting": 0})
    assert ctl("query", "--format", "csv", "select 42 as a").stdout == b"a\n42\n"
    assert "Traceback" not in daemon.log()


def test_a_reader_that_stops_reading_loses_its_query_slot(
    running_daemon: Daemon, held: list[socket.socket]
) -> None:
    [sock] = open_control(running_daemon, held, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request(sock, {"op": "query", "sql": ENDLESS, "timeout": 3600})
    wait_until(lambda: status(running_daemon)["queries"]["running"] == 1)
    # It never reads: the line it is sent cannot go out within the send timeout, so the
    # daemon gives the connection up (long before the query's own 3600 s).
    wait_until(lambda: status(running_daemon)["queries"]["running"] == 0, timeout=60)
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(1 << 20):  # what was sent before it gave up, then the end
        data += chunk
    lines = data.split(b"\n")
    assert len(lines) > 2
    for line in lines[:-1]:  # whole lines; the last one may be cut, with nothing glued on
        assert json.loads(line).keys() <= {"columns", "rows"}
    assert b"error" not in lines[-1]


# -- finding 5: status with every control connection taken --------------------------------


def test_status_answers_when_idle_clients_hold_every_control_connection(
    running_daemon: Daemon, held: list[socket.socket]
) -> None:
    idle = open_control(running_daemon, held, 70)
    assert ask(running_daemon.control_socket, {"op": "status"}, timeout=5)["ok"]
    up = ctl("status")
    assert up.returncode == 0 and b"is up" in up.stdout, up.stderr
    assert ctl("query", "--format", "csv", "select 1 as one").stdout == b"one\n1\n"
    # To make room, the clients that had waited longest were told why and closed.
    idle[0].settimeout(5)
    closing = json.loads(idle[0].recv(4096))
    assert closing["error"] == wire.TOO_MANY_CONNECTIONS
    assert "closed while idle" in closing["message"]


def test_an_idle_control_client_does_not_hold_up_shutdown(
    running_daemon: Daemon, held: list[socket.socket]
) -> None:
    [sock] = open_control(running_daemon, held, 1)
    request(sock, {"op": "status"})
    assert reply_lines(sock)[0]["ok"]  # served, and now waiting for its next request
    started = time.monotonic()
    assert running_daemon.stop() == 0
    assert time.monotonic() - started < 8  # not cut off at the 10 s drain deadline
    assert json.loads(sock.recv(4096)) == {
        "error": wire.SHUTTING_DOWN,
        "message": "the daemon is shutting down",
    }


def test_status_answers_and_others_hear_busy_when_every_connection_works(
    running_daemon: Daemon, held: list[socket.socket]
) -> None:
    for sock in open_control(running_daemon, held, 64):  # 64 tails: none of them idle
        request(sock, {"op": "tail", "follow": True})
    wait_until(lambda: status(running_daemon)["tail_clients"] == 64)
    up = ctl("status", "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["control_connections"] == 64
    busy = ctl("query", "select 1")
    assert busy.returncode == 3
    assert b"busy" in busy.stderr and b"Traceback" not in busy.stderr
    tail = ctl("tail", "-n", "0")
    assert tail.returncode == 3 and b"busy" in tail.stderr


def test_clients_say_busy_not_down_when_refused_for_load(tmp_path: Path) -> None:
    refusal = b'{"error":"too_many_connections","message":"over the limit of 64"}\n'
    with FakeDaemon(tmp_path, lambda conn: conn.sendall(refusal)) as fake:
        result = ctl("status", "--socket", fake.path)
        assert result.returncode == 3
        assert result.stderr.startswith(b"telemetryd is up but busy:"), result.stderr
        with pytest.raises(DaemonBusy):
            control.request(fake.path, wire.StatusRequest())
        queried = ctl("query", "--socket", fake.path, "select 1")
        assert queried.returncode == 3 and b"busy" in queried.stderr
        assert b"reading the database file" not in queried.stderr


def test_a_status_line_and_a_copilot_import_say_busy_not_down(state_home: Path) -> None:
    """A busy daemon (DaemonBusy is a DaemonUnavailable too): the status line said
    "telemetryd down", and the Copilot import counted the sessions' shutdown totals as if
    the store held none of their model calls, which could count them twice."""
    refusal = b'{"error":"too_many_connections","message":"over the limit of 64"}\n'
    run = state_home / "run"
    run.mkdir(mode=0o700)
    with FakeDaemon(run, lambda conn: conn.sendall(refusal), name="control.sock"):
        line = subprocess.run(
            [TELEMETRYCTL, "statusline", "--no-record"],
            input=b"{}", capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert line.returncode == 0 and line.stdout == b"telemetryd busy\n", line
        with pytest.raises(DaemonBusy, match="Copilot model calls"):
            importer.stored_model_calls(["a-session"], str(run / "events.sock"))
    assert importer.stored_model_calls(["a-session"], str(run / "events.sock")) == {}  # none


# -- finding 10: replies and limits ----------------------------------------------------


def test_a_long_value_arrives_whole(running_daemon: Daemon) -> None:
    result = ctl("query", "--format", "csv", "select repeat('x', 30000000) as v, 7 as n")
    assert result.returncode == 0, result.stderr[:500]
    assert result.stdout == b"v,n\n" + b"x" * 30_000_000 + b",7\n"


def test_rows_lines_are_bounded_in_bytes(running_daemon: Daemon) -> None:
    with connect(running_daemon.control_socket) as sock:
        request(sock, {"op": "query", "sql": "select repeat('y', 100000) from range(60)"})
        replies = reply_lines(sock)
    rows = [reply["rows"] for reply in replies if "rows" in reply]
    assert sum(map(len, rows)) == 60 and replies[-1]["row_count"] == 60
    assert len(rows) > 2  # 6 MB of rows: more than one line
    for batch in rows:
        assert len(json.dumps(batch)) <= daemon_query.REPLY_LINE_BYTES + 100_010


def test_a_row_over_the_limit_is_refused_naming_it(running_daemon: Daemon) -> None:
    sql = (
        "select case when i = 0 then 'a' else repeat('z', 80 * 1024 * 1024) end as v "
        "from range(2) t(i)"
    )
    with connect(running_daemon.control_socket, timeout=60) as sock:
        request(sock, {"op": "query", "sql": sql})
        replies = reply_lines(sock)
        assert replies[0] == {"columns": [["v", "VARCHAR"]]}
        assert replies[1] == {"rows": [["a"]]}
        assert replies[2]["error"] == wire.QUERY_FAILED
        assert "row 2 of the result is over 64 MiB" in replies[2]["message"]
        request(sock, {"op": "status"})  # the connection goes on
        assert reply_lines(sock)[0]["ok"]


def test_a_value_over_the_limit_costs_no_copy_of_it(running_daemon: Daemon) -> None:
    value = 80 * 1024 * 1024
    # The store opens in the background at start: let it, so that DuckDB's own
    # footprint is not counted against the value.
    assert ctl("query", "select 1").returncode == 0
    before = vm(running_daemon, "VmRSS")
    refused = ctl("query", f"select repeat('z', {value}) as v", timeout=60)
    assert refused.returncode == 1
    assert b"over 64 MiB" in refused.stderr and b"limit for one row" in refused.stderr
    # DuckDB makes the value and hands it over as a Python string: about 4 copies of
    # it. Refused before it is encoded, it costs no more (encoding, framing and the
    # socket's buffer took 3 more copies before).
    peak = vm(running_daemon, "VmHWM")
    assert peak - before < 5.5 * value, f"the daemon grew by {(peak - before) / value:.1f} values"
    assert ctl("query", "--format", "csv", "select 1 as one").stdout == b"one\n1\n"


def vm(daemon: Daemon, field: str) -> int:
    """A memory figure of the daemon process, in bytes (/proc/PID/status)."""
    assert daemon.proc is not None
    text = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    return int(text.split(f"{field}:")[1].split()[0]) * 1024


def test_deeply_nested_and_malformed_requests_get_a_reply(running_daemon: Daemon) -> None:
    depth = 30_000  # under the 64 KiB request limit
    deep = b'{"op":"query","sql":"select 1","params":{"a":' + b"[" * depth + b"]" * depth + b"}}"
    with connect(running_daemon.control_socket) as sock:
        for line, message in [
            (deep, "nests too deeply"),
            (b"[" * depth, "Expected `object`, got `array`"),
            (b"", "empty request line"),
            (b"\xff\xfe\x00", "JSON is malformed"),
            (b'{"op":"query","sql":"select 1","timeout":-1}', "`$.timeout`"),
            (b'{"op":"query","sql":"select 1","timeout":0}', "`$.timeout`"),
            (b'{"op":"query","sql":"select 1","timeout":"5"}', "`$.timeout`"),
            (b'{"op":"nope"}', "`$.op`"),
        ]:
            request(sock, line)
            [reply] = reply_lines(sock)
            assert reply["error"] == wire.BAD_REQUEST and message in reply["message"], line[:40]
        request(sock, {"op": "status"})
        assert reply_lines(sock)[0]["ok"]
    with connect(running_daemon.control_socket) as sock:  # far past the request limit
        sock.sendall(b"[" * 200_000 + b"\n")
        [reply] = reply_lines(sock)
        assert reply == {"error": wire.BAD_REQUEST, "message": "request over 65536 bytes"}
    assert "Traceback" not in running_daemon.log()


def test_no_control_failure_answers_with_an_exception_group(running_daemon: Daemon) -> None:
    path = running_daemon.control_socket
    for sql in ["update extensions", "select * from no_such_table", "select 1; select 2"]:
        reply = ask(path, {"op": "query", "sql": sql})
        assert reply["error"] == wire.QUERY_FAILED
        assert "ExceptionGroup" not in reply["message"] and "TaskGroup" not in reply["message"]
    slow = ask(path, {"op": "query", "sql": SLOW, "timeout": 0.3})
    assert slow == {"error": wire.QUERY_TIMEOUT, "message": "the query ran longer than its 0.3 s"}


def test_negative_timeout_is_a_usage_error() -> None:
    for value in ["-1", "0", "nan", "inf", "soon"]:
        result = ctl("query", "--timeout", value, "select 1")
        assert result.returncode == 2, value
        assert b"--timeout expects a number of seconds above 0" in result.stderr


# -- the clients: one reader of replies, clear errors --------------------------------------


class FakeDaemon:
    """A control socket that answers every connection with ``serve(conn)``."""

    def __init__(
        self, tmp: Path, serve: Callable[[socket.socket], None], name: str = "fake.sock"
    ) -> None:
        self.path = str(tmp / name)
        self.serve = serve
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeDaemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(10)

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                conn.recv(65536)
                with contextlib.suppress(OSError):
                    self.serve(conn)


@pytest.mark.parametrize(
    "reply",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"columns": [["a", "INTEGER"]]}\n\xff\xfe\n',
        b'{"columns": [["a", "INTEGER"]]}\n{"rows": [[1]]}\n{"ok": tr',
    ],
)
def test_a_malformed_reply_is_an_error_not_a_traceback(tmp_path: Path, reply: bytes) -> None:
    with FakeDaemon(tmp_path, lambda conn: conn.sendall(reply)) as fake:
        result = ctl("query", "--socket", fake.path, "select 1")
        tail = ctl("tail", "--socket", fake.path)
        status_ = ctl("status", "--socket", fake.path)
    for done in (result, tail, status_):
        assert done.returncode in (1, 3), done
        assert b"Traceback" not in done.stderr and done.stderr.count(b"\n") == 1, done.stderr
    assert b"malformed reply" in result.stderr or b"closed the connection early" in result.stderr


def test_a_long_reply_line_is_read_in_linear_time(tmp_path: Path) -> None:
    """A 30 MB line in 4 KiB pieces: joined once, not once per piece."""
    value = "v" * 30_000_000
    line = json.dumps({"rows": [[value]]}).encode() + b"\n"

    def serve(conn: socket.socket) -> None:
        conn.sendall(b'{"columns": [["v", "VARCHAR"]]}\n')
        for start in range(0, len(line), 4096):
            conn.sendall(line[start : start + 4096])
        conn.sendall(b'{"ok": true, "row_count": 1, "elapsed_ms": 1.0}\n')

    collected = Collect()
    with FakeDaemon(tmp_path, serve) as fake:
        opts = query_client.parse(["--socket", fake.path, "select"])
        assert query_client.ask_daemon(opts, collected) == query_client.EXIT_OK
    assert collected.collected == [[value]]


def test_a_reply_line_over_the_limit_is_refused(tmp_path: Path) -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b'{"rows": [["' + b"w" * (query_client.MAX_REPLY_LINE + 1))

    with FakeDaemon(tmp_path, serve) as fake:
        result = ctl("query", "--socket", fake.path, "select 1")
    assert result.returncode == 1
    assert b"reply line from the daemon is over" in result.stderr


def test_the_clients_limits_are_the_protocols() -> None:
    assert query_client.MAX_REPLY_LINE == wire.MAX_REPLY_LINE
    assert query_client.MAX_TIMEOUT == wire.MAX_QUERY_TIMEOUT


class Collect(output.Writer):
    def __init__(self) -> None:
        import io

        super().__init__(io.StringIO())
        self.collected: list[list[Any]] = []

    def rows(self, rows: list[list[Any]]) -> None:
        self.collected.extend(rows)


# -- finding 6, the client side: the daemon-down query obeys its timeout ------------------


def test_a_query_of_the_file_stops_at_its_timeout(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory().start()
    assert ctl("query", "select 1").returncode == 0  # the store worker makes the database
    assert daemon.stop() == 0  # and leaves the file behind
    started = time.monotonic()
    slow = ctl("query", "--timeout", "0.5", SLOW)
    assert slow.returncode == 1, slow.stderr
    assert b"the query ran longer than its 0.5 s" in slow.stderr
    assert time.monotonic() - started < 20
    # The file is free again: the daemon starts.
    daemon.start()
    assert status(daemon)["ok"]


def test_a_query_of_the_file_has_the_daemons_default_timeout(
    daemon_factory: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = daemon_factory().start()
    assert ctl("query", "select 1").returncode == 0  # the store worker makes the database
    assert daemon.stop() == 0
    assert query_client.DEFAULT_TIMEOUT == daemon_query.DEFAULT_TIMEOUT
    monkeypatch.setattr(query_client, "DEFAULT_TIMEOUT", 0.3)
    opts = query_client.parse([SLOW])
    assert opts.timeout is None
    collected = Collect()
    assert query_client.ask_file(opts, collected) == query_client.EXIT_FAILED
    assert os.path.exists(daemon.home / "telemetry.duckdb")
