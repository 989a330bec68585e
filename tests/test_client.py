"""The protocol client library (telemetryd.client.protocol): framing, the typed replies,
the errors each error line stands for, and the exchanges, against real Unix sockets
served by a thread in the test, then against the real daemon."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import Daemon, exchange
from telemetryd import wire
from telemetryd.client import control, delivery, protocol, store_process
from telemetryd.client.protocol import (
    Closing,
    GcReport,
    QueryColumns,
    QueryDone,
    QueryRows,
    Rejected,
    Status,
    Summary,
    TailDone,
    TailDropped,
    TailEvents,
)
from telemetryd.errors import (
    DaemonBusy,
    DaemonError,
    DaemonUnavailable,
    ProtocolError,
    StoreUnavailable,
)

CLIENT = Path(protocol.__file__).parent


def line(message: msgspec.Struct | dict[str, Any]) -> bytes:
    """A reply line as the daemon writes it (its own Structs, its own encoder)."""
    if isinstance(message, msgspec.Struct):
        return wire.encode_line(message)
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Peer:
    """A Unix socket served by a thread: each connection gets ``serve(conn)``. The test
    ends every connection: the thread is joined, each socket has a timeout."""

    def __init__(self, tmp_path: Path, serve: Callable[[socket.socket], None]) -> None:
        self.path = str(tmp_path / "peer.sock")
        self.serve = serve
        self.errors: list[BaseException] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    self.serve(conn)
                except OSError:
                    pass  # the client went away: its side of the test says what it saw
                except BaseException as exc:
                    self.errors.append(exc)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(10)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Callable[[Callable[[socket.socket], None]], Peer]]:
    made: list[Peer] = []

    def make(serve: Callable[[socket.socket], None]) -> Peer:
        made.append(Peer(tmp_path, serve))
        return made[-1]

    yield make
    for p in made:
        p.close()


def read_line(conn: socket.socket) -> bytes:
    """One request line from the client (bounded: requests are small)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        assert len(data) < 1 << 20
    return data


def read_all(conn: socket.socket) -> bytes:
    """Everything the client sends until it half-closes."""
    parts = []
    while chunk := conn.recv(1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def answering(*replies: bytes, requests: int = 1) -> Callable[[socket.socket], None]:
    """Serve ``requests`` request lines, then send ``replies`` (and close)."""

    def serve(conn: socket.socket) -> None:
        for _ in range(requests):
            read_line(conn)
        conn.sendall(b"".join(replies))

    return serve


# -- the protocol's numbers are wire.py's ---------------------------------------------------


def test_the_clients_numbers_and_codes_are_the_protocols() -> None:
    assert protocol.MAX_REPLY_LINE == wire.MAX_REPLY_LINE
    assert protocol.MAX_QUERY_TIMEOUT == wire.MAX_QUERY_TIMEOUT
    assert protocol.MAX_TAIL_BACKLOG == wire.MAX_TAIL_BACKLOG
    for name in [
        "TOO_MANY_CONNECTIONS",
        "FORBIDDEN_PEER",
        "IDLE_TIMEOUT",
        "SHUTTING_DOWN",
        "JOURNAL_UNAVAILABLE",
        "BAD_REQUEST",
        "QUERY_FAILED",
        "QUERY_TIMEOUT",
    ]:
        assert getattr(protocol, name) == getattr(wire, name), name


# -- framing ------------------------------------------------------------------------------


def pair() -> tuple[socket.socket, socket.socket]:
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)
    return left, right


def test_lines_sent_a_byte_at_a_time_arrive_whole() -> None:
    left, right = pair()
    with left, right:
        data = line(wire.Summary(True, 1, 1, 0, 0)) + line({"rows": [[1, "x"]]})
        replies = protocol.Replies(right)
        got: list[bytes] = []
        for i in range(len(data)):
            left.sendall(data[i : i + 1])
            lines = replies.read()  # each read takes the one byte there is
            assert lines is not None
            got.extend(lines)
        left.shutdown(socket.SHUT_WR)
        assert replies.read() is None
        assert got == data.split(b"\n")[:-1]
        assert not replies.cut


def test_a_last_line_without_newline_is_never_returned() -> None:
    left, right = pair()
    with left, right:
        left.sendall(b'{"ok":true}\n{"ok":tr')
        left.shutdown(socket.SHUT_WR)
        replies = protocol.Replies(right)
        assert list(replies.lines()) == [b'{"ok":true}']
        assert replies.cut


def test_a_line_over_the_limit_is_refused_before_it_is_all_read() -> None:
    left, right = pair()
    with left, right:
        left.sendall(b'{"rows":[["' + b"x" * 5000)  # no newline yet, and more to come
        replies = protocol.Replies(right, max_line=1000)
        with pytest.raises(ProtocolError, match="over 1000 bytes"):
            list(replies.lines())
        left.sendall(b"x" * 100 + b"\n")


def test_a_long_line_among_short_ones_is_refused() -> None:
    left, right = pair()
    with left, right:
        left.sendall(b"{}\n" + b"y" * 2000 + b"\n{}\n")
        with pytest.raises(ProtocolError, match="over 1000 bytes"):
            list(protocol.Replies(right, max_line=1000).lines())


def test_a_read_past_the_deadline_times_out() -> None:
    left, right = pair()
    with left, right:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            list(protocol.Replies(right, deadline=time.monotonic() + 0.2).lines())
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "data", [b"not json", b"[1,2]", b'"text"', b"\xff\xfe", b"", b'{"a":1} {"b":2}', b"{"]
)
def test_a_line_that_is_not_one_object_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed reply line"):
        protocol.read_reply(data)


# -- every reply, typed -------------------------------------------------------------------

CODES = [
    wire.TOO_MANY_CONNECTIONS,
    wire.FORBIDDEN_PEER,
    wire.IDLE_TIMEOUT,
    wire.JOURNAL_UNAVAILABLE,
    wire.SHUTTING_DOWN,
    wire.BAD_REQUEST,
    wire.QUERY_FAILED,
    wire.QUERY_TIMEOUT,
    protocol.STORE_UNAVAILABLE,
    "gc_failed",
    "rebuild_failed",
    "a_code_from_a_later_version",
]


def reply(data: bytes) -> dict[str, Any]:
    return protocol.read_reply(data.rstrip(b"\n"))


def test_events_socket_replies() -> None:
    rejected = reply(line(wire.Rejected(3, "invalid_event", "no `tool`", "$")))
    assert protocol.event_reply(rejected) == Rejected(3, "invalid_event", "no `tool`", "$")
    long = reply(line(wire.Rejected(4, "line_too_long", "line is longer than 200 bytes")))
    assert protocol.event_reply(long) == Rejected(
        4, "line_too_long", "line is longer than 200 bytes"
    )
    summary = protocol.event_reply(reply(line(wire.Summary(True, 16, 3, 12, 1))))
    assert summary == Summary(16, 3, 12, 1)
    assert isinstance(summary, Summary)
    assert summary.as_dict() == json.loads(line(wire.Summary(True, 16, 3, 12, 1)))
    for code in CODES:
        closing = protocol.event_reply(reply(line(wire.Closing(code, f"because {code}"))))
        assert closing == Closing(code, f"because {code}")


@pytest.mark.parametrize("code", CODES)
def test_each_error_line_stands_for_one_exception(code: str) -> None:
    exc = Closing(code, "the words").exception()
    if code == wire.TOO_MANY_CONNECTIONS:
        assert type(exc) is DaemonBusy and str(exc) == "the daemon is busy: the words"
    elif code == wire.SHUTTING_DOWN:
        assert type(exc) is DaemonUnavailable and str(exc) == "the words"
    else:
        expected = StoreUnavailable if code == protocol.STORE_UNAVAILABLE else DaemonError
        assert type(exc) is expected
        assert isinstance(exc, DaemonError) and (exc.code, exc.message) == (code, "the words")
        assert not isinstance(exc, DaemonUnavailable)


def test_query_replies() -> None:
    columns = protocol.query_reply(reply(line(wire.QueryColumns([("a", "INTEGER")]))))
    assert columns == QueryColumns([["a", "INTEGER"]])
    rows = protocol.query_reply(reply(line(wire.QueryRows([(1, "x", None), (2, "y", 1.5)]))))
    assert rows == QueryRows([[1, "x", None], [2, "y", 1.5]])
    done = protocol.query_reply(reply(line(wire.QueryDone(True, 2, 3.5))))
    assert done == QueryDone(2, 3.5, None)
    warned = protocol.query_reply(reply(line(wire.QueryDone(True, 2, 3.5, "not loaded: disk"))))
    assert warned == QueryDone(2, 3.5, "not loaded: disk")
    failed = protocol.query_reply(reply(line(wire.Closing(wire.QUERY_FAILED, "no such table"))))
    assert failed == Closing(wire.QUERY_FAILED, "no such table")


def test_tail_replies() -> None:
    event = b'{"type":"custom","v":1,"id":"x","name":"n"}'
    assert protocol.is_event(event)
    assert not protocol.is_event(line(wire.TailDropped(5)))
    assert protocol.tail_reply(reply(line(wire.TailDropped(5)))) == TailDropped(5)
    assert protocol.tail_reply(reply(line(wire.TailDone(True, 7)))) == TailDone(7)
    closing = protocol.tail_reply(reply(line(wire.Closing(wire.SHUTTING_DOWN, "stopping"))))
    assert closing == Closing(wire.SHUTTING_DOWN, "stopping")


def test_one_line_answers() -> None:
    gc = {
        "ok": True,
        "dry_run": False,
        "deleted": ["a.jsonl"],
        "compressed": ["b.jsonl"],
        "events_deleted": 4,
        "bytes_before": 100,
        "bytes_after": 40,
        "at": "2026-01-01T00:00:00Z",
    }
    report = GcReport.read(gc)
    assert isinstance(report, GcReport) and report == gc  # the answer as it came
    assert (report.deleted, report.compressed, report.events_deleted) == (
        ["a.jsonl"],
        ["b.jsonl"],
        4,
    )
    assert (report.bytes_before, report.bytes_after, report.dry_run) == (100, 40, False)
    dry = GcReport.read({**gc, "dry_run": True, "events_deleted": None, "bytes_after": None})
    assert isinstance(dry, GcReport) and dry.events_deleted is None and dry.bytes_after is None
    flushed = protocol.Flushed.read({"ok": True, "materialized": 3})
    assert isinstance(flushed, protocol.Flushed) and flushed.materialized == 3
    plain = protocol.Flushed.read({"ok": True})
    assert isinstance(plain, protocol.Flushed) and plain.materialized is None
    rebuilt = protocol.Rebuilt.read({"ok": True, "events": 300})
    assert isinstance(rebuilt, protocol.Rebuilt) and rebuilt.events == 300
    status = Status.read({"ok": True, "version": "0.1.0", "pid": 7, "journal": {}})
    assert isinstance(status, Status) and (status.version, status.pid) == ("0.1.0", 7)
    assert Status.read({"error": "forbidden_peer", "message": "uid 5"}) == Closing(
        "forbidden_peer", "uid 5"
    )


@pytest.mark.parametrize(
    "read, value",
    [
        (protocol.event_reply, {"ok": True, "lines": 1, "accepted": 1, "rejected": 0}),
        (protocol.event_reply, {"ok": True, "lines": 1, "accepted": True, "rejected": 0}),
        (protocol.event_reply, {"line": "3", "error": "x", "message": "m"}),
        (protocol.event_reply, {"line": 3, "error": "x", "message": "m", "path": 5}),
        (protocol.event_reply, {"ok": False}),
        (protocol.event_reply, {"error": 5, "message": "m"}),
        (protocol.event_reply, {"error": "x"}),
        (protocol.query_reply, {"rows": 5}),
        (protocol.query_reply, {"rows": [[1], 2]}),
        (protocol.query_reply, {"columns": [["a"]]}),
        (protocol.query_reply, {"columns": [["a", 1]]}),
        (protocol.query_reply, {"ok": True, "row_count": 1}),
        (protocol.query_reply, {"ok": True, "row_count": 1, "elapsed_ms": "1"}),
        (protocol.query_reply, {"ok": True, "row_count": 1, "elapsed_ms": 1, "warning": 3}),
        (protocol.query_reply, {"something": "else"}),
        (protocol.tail_reply, {"dropped": "many"}),
        (protocol.tail_reply, {"ok": True}),
        (protocol.tail_reply, {"ok": 1, "events": 2}),
        (Status.read, {"ok": True}),
        (Status.read, {"ok": True, "version": "1", "pid": "7", "journal": {}}),
        (protocol.Rebuilt.read, {"ok": True}),
        (protocol.Flushed.read, {"ok": True, "materialized": "3"}),
        (GcReport.read, {"ok": True, "dry_run": False, "deleted": [1], "compressed": []}),
        (GcReport.read, {"ok": "yes"}),
    ],
)
def test_a_reply_of_another_shape_makes_no_sense(
    read: Callable[[dict[str, Any]], Any], value: dict[str, Any]
) -> None:
    with pytest.raises(ProtocolError, match="reply is not"):
        read(value)


# -- connecting ---------------------------------------------------------------------------


def test_no_socket_and_a_stale_socket_are_not_running(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnavailable, match="no daemon socket at") as missing:
        protocol.connect(str(tmp_path / "none.sock"), 1.0)
    assert not isinstance(missing.value, DaemonBusy)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    with pytest.raises(DaemonUnavailable, match="nothing is listening on") as refused:
        control.Control(str(tmp_path / "stale.sock"))
    assert not isinstance(refused.value, DaemonBusy)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):  # (a socket path set wrong: say what it is)
        with pytest.raises(DaemonUnavailable, match=f"^{path} is not a socket$"):
            protocol.connect(str(path), 1.0)


# -- one-line control requests --------------------------------------------------------------

STATUS = {"ok": True, "version": "9", "pid": 42, "journal": {"segments": 1}, "tail_clients": 0}


def test_requests_and_answers_on_one_connection(peer: Callable[..., Peer]) -> None:
    seen: list[dict[str, Any]] = []

    def serve(conn: socket.socket) -> None:
        for answer in [
            line(STATUS),
            line(wire.Closing(wire.BAD_REQUEST, "Object contains unknown field `x`")),
            line({"ok": True, "materialized": 2}),
            line({"ok": True, "events": 5}),
        ]:
            seen.append(json.loads(read_line(conn)))
            conn.sendall(answer[:5])  # a reply in two pieces
            conn.sendall(answer[5:])

    p = peer(serve)
    with control.Control(p.path) as ctl:
        status = ctl.status()
        assert isinstance(status, Status) and status == STATUS and status.pid == 42
        with pytest.raises(DaemonError) as bad:
            ctl.answer({"op": "status", "x": 1})
        assert bad.value.code == wire.BAD_REQUEST and "unknown field" in bad.value.message
        assert ctl.flush().materialized == 2  # the connection goes on after bad_request
        assert ctl.rebuild().events == 5
    assert seen == [{"op": "status"}, {"op": "status", "x": 1}, {"op": "flush"}, {"op": "rebuild"}]


def test_control_helpers_send_the_wire_requests(peer: Callable[..., Peer]) -> None:
    seen: list[bytes] = []
    gc = {"ok": True, "dry_run": True, "deleted": [], "compressed": ["a"], "bytes_before": 9}

    def serve(conn: socket.socket) -> None:
        seen.append(read_line(conn))
        conn.sendall(line(gc))

    p = peer(serve)
    report = control.gc(p.path, dry_run=True)
    assert isinstance(report, GcReport) and report.compressed == ["a"]
    assert isinstance(control.request(p.path, wire.GcRequest(dry_run=True)), GcReport)
    request = msgspec.json.decode(seen[0], type=wire.ControlRequest)
    assert request == wire.GcRequest(dry_run=True)
    assert seen[1] == seen[0]


@pytest.mark.parametrize(
    "answer, error, words",
    [
        (line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 64")), DaemonBusy, "busy: over 64"),
        (line(wire.Closing(wire.FORBIDDEN_PEER, "uid 7 may not connect")), DaemonError, "uid 7"),
        (line(wire.Closing(wire.SHUTTING_DOWN, "stopping")), DaemonUnavailable, "stopping"),
        (b"", DaemonUnavailable, "without answering"),
        (b'{"ok":tr', DaemonUnavailable, "without answering"),  # cut: never read
        (b"not json\n", ProtocolError, "malformed reply line"),
        (line(wire.QueryColumns([("a", "INTEGER")])), ProtocolError, "not an answer to status"),
    ],
)
def test_what_a_status_request_can_meet(
    peer: Callable[..., Peer], answer: bytes, error: type[Exception], words: str
) -> None:
    p = peer(answering(answer))
    with pytest.raises(error, match=words) as raised:
        control.status(p.path)
    assert type(raised.value) is error


def test_a_peer_that_never_answers_is_busy_within_the_timeout(
    peer: Callable[..., Peer],
) -> None:
    release = threading.Event()

    def serve(conn: socket.socket) -> None:
        read_line(conn)
        release.wait(10)

    p = peer(serve)
    started = time.monotonic()
    try:
        with pytest.raises(DaemonBusy, match=r"did not answer within 0\.3 s"):
            control.status(p.path, timeout=0.3)
    finally:
        release.set()
    assert time.monotonic() - started < 5


def test_a_refusal_after_the_request_could_not_be_sent_is_still_busy(
    peer: Callable[..., Peer],
) -> None:
    """The daemon refuses at once and closes: the request may meet a closed socket."""

    def serve(conn: socket.socket) -> None:
        conn.sendall(line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 64")))
        conn.shutdown(socket.SHUT_RDWR)

    p = peer(serve)
    with control.Control(p.path) as ctl, pytest.raises(DaemonBusy):
        ctl.answer({"op": "status", "padding": "x" * 1_000_000})


# -- queries ------------------------------------------------------------------------------


def test_a_query_answer_in_order_with_its_warning(peer: Callable[..., Peer]) -> None:
    """The client asks for the line that says the daemon has the query, reads it first
    (the answer's deadline follows its timeout), then the answer in its order."""
    seen: list[bytes] = []
    answer = (
        line(wire.QueryAccepted(accepted=True, timeout=2.5))
        + line(wire.QueryColumns([("m", "VARCHAR"), ("n", "BIGINT")]))
        + line(wire.QueryRows([("a", 1)]))
        + line(wire.QueryRows([("b", 2), ("c", None)]))
        + line(wire.QueryDone(True, 3, 1.5, "1 event not loaded"))
    )

    def serve(conn: socket.socket) -> None:
        seen.append(read_line(conn))
        for i in range(0, len(answer), 7):  # partial lines all the way
            conn.sendall(answer[i : i + 7])

    p = peer(serve)
    with control.Control(p.path) as ctl:
        replies = list(ctl.query("select $x", {"x": 1}, timeout=2.5))
    assert replies == [
        QueryColumns([["m", "VARCHAR"], ["n", "BIGINT"]]),
        QueryRows([["a", 1]]),
        QueryRows([["b", 2], ["c", None]]),
        QueryDone(3, 1.5, "1 event not loaded"),
    ]
    request = msgspec.json.decode(seen[0], type=wire.ControlRequest)
    assert request == wire.QueryRequest(
        sql="select $x", params={"x": 1}, timeout=2.5, accepted=True
    )


COLUMNS = line(wire.QueryColumns([("a", "INTEGER")]))


@pytest.mark.parametrize(
    "answer, error, words",
    [
        (line(wire.Closing(wire.QUERY_FAILED, "no table")), DaemonError, "no table"),
        (line(wire.Closing(wire.QUERY_TIMEOUT, "longer than its 1 s")), DaemonError, "1 s"),
        (COLUMNS + line(wire.Closing(wire.QUERY_FAILED, "row 2 over")), DaemonError, "row 2"),
        (line(wire.Closing(protocol.STORE_UNAVAILABLE, "locked")), StoreUnavailable, "locked"),
        (line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over")), DaemonBusy, "busy"),
        (line(wire.Closing(wire.SHUTTING_DOWN, "stopping")), DaemonUnavailable, "stopping"),
        (b"", DaemonUnavailable, "without answering"),
        (COLUMNS + b'{"rows":[[1]', DaemonUnavailable, "closed the connection early"),
        (line(wire.QueryRows([(1,)])), ProtocolError, "before the columns"),
        (line(wire.QueryDone(True, 0, 1.0)), ProtocolError, "before the columns"),
        (COLUMNS + COLUMNS, ProtocolError, "columns twice"),
        (COLUMNS + line(wire.TailDropped(3)), ProtocolError, "not the end of a result"),
        (COLUMNS + b"\xff\n", ProtocolError, "malformed"),
    ],
)
def test_what_a_query_can_meet(
    peer: Callable[..., Peer], answer: bytes, error: type[Exception], words: str
) -> None:
    p = peer(answering(answer))
    with control.Control(p.path) as ctl, pytest.raises(error, match=words) as raised:
        list(ctl.query("select 1"))
    assert type(raised.value) is error


def test_a_query_waits_no_longer_than_its_deadline(peer: Callable[..., Peer]) -> None:
    release = threading.Event()

    def serve(conn: socket.socket) -> None:
        read_line(conn)
        conn.sendall(COLUMNS)
        release.wait(10)

    p = peer(serve)
    started = time.monotonic()
    try:
        with control.Control(p.path) as ctl:
            replies = ctl.query("select 1", timeout=0.2, deadline=time.monotonic() + 0.3)
            assert next(replies) == QueryColumns([["a", "INTEGER"]])
            with pytest.raises(DaemonBusy):
                next(replies)
    finally:
        release.set()
    assert time.monotonic() - started < 5


def test_a_huge_row_arrives_whole(peer: Callable[..., Peer]) -> None:
    value = "v" * 3_000_000
    answer = COLUMNS + line({"rows": [[value]]}) + line(wire.QueryDone(True, 1, 1.0))
    p = peer(answering(answer))
    with control.Control(p.path) as ctl:
        rows = [r for r in ctl.query("select 1") if isinstance(r, QueryRows)]
    assert rows == [QueryRows([[value]])]


# -- tails --------------------------------------------------------------------------------


def event(name: str) -> bytes:
    return b'{"type":"custom","v":1,"id":"' + name.encode() + b'","name":"n"}\n'


def test_a_tail_in_runs_of_events_then_the_connection_goes_on(
    peer: Callable[..., Peer],
) -> None:
    second = threading.Event()

    def serve(conn: socket.socket) -> None:
        read_line(conn)
        conn.sendall(event("e1") + event("e2") + line(wire.TailDropped(4)) + event("e3"))
        second.wait(10)  # the client has taken the first read
        conn.sendall(event("e4") + line(wire.TailDone(True, 4)) + line(STATUS))
        read_line(conn)  # the status request: already answered above

    p = peer(serve)
    plain = [event(name).rstrip(b"\n") for name in ("e1", "e2", "e3", "e4")]
    with control.Control(p.path) as ctl:
        replies = ctl.tail({"op": "tail", "backlog": 10, "follow": False})
        first = [next(replies), next(replies), next(replies)]
        assert first == [TailEvents(plain[:2]), TailDropped(4), TailEvents(plain[2:3])]
        second.set()
        assert list(replies) == [TailEvents(plain[3:]), TailDone(4)]
        assert ctl.status() == STATUS  # the line after TailDone was kept for it


@pytest.mark.parametrize(
    "answer, error, words",
    [
        (
            event("e1") + line(wire.Closing(wire.SHUTTING_DOWN, "stopping")),
            DaemonUnavailable,
            "ping",
        ),
        (event("e1"), DaemonUnavailable, "closed the connection"),
        (line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over")), DaemonBusy, "busy"),
        (line(wire.Closing(wire.BAD_REQUEST, "`$.backlog`")), DaemonError, "backlog"),
        (line({"ok": True}), ProtocolError, "end of a tail"),
        (b"[]\n", ProtocolError, "malformed"),
    ],
)
def test_what_a_tail_can_meet(
    peer: Callable[..., Peer], answer: bytes, error: type[Exception], words: str
) -> None:
    p = peer(answering(answer))
    got: list[Any] = []
    with control.Control(p.path) as ctl, pytest.raises(error, match=words) as raised:
        got.extend(ctl.tail({"op": "tail"}))
    assert type(raised.value) is error


# -- events -------------------------------------------------------------------------------

LINES = b"".join(b'{"type":"custom","name":"n%d"}\n' % i for i in range(3))


def test_a_delivery_with_its_rejections(peer: Callable[..., Peer]) -> None:
    received: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        received.append(read_all(conn))
        conn.sendall(line(wire.Rejected(2, "invalid_event", "bad", "$.name")))
        conn.sendall(line(wire.Summary(True, 3, 2, 1, 0)))

    p = peer(serve)
    sent = delivery.deliver(p.path, LINES, 5.0)
    assert sent.failure is None
    assert sent.summary == Summary(3, 2, 1, 0)
    assert sent.rejected == [Rejected(2, "invalid_event", "bad", "$.name")]
    assert sent.acknowledged == 3
    assert received == [LINES]


@pytest.mark.parametrize(
    "answer, error, words, acknowledged",
    [
        (line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 2")), DaemonBusy, "busy", 0),
        (line(wire.Closing(wire.FORBIDDEN_PEER, "uid 3")), DaemonError, "uid 3", 0),
        (line(wire.Closing(wire.JOURNAL_UNAVAILABLE, "disk full")), DaemonError, "disk", 0),
        (line(wire.Closing(wire.IDLE_TIMEOUT, "60 s")), DaemonError, "60 s", 0),
        (
            line(wire.Summary(True, 1, 1, 0, 0)) + line(wire.Closing(wire.SHUTTING_DOWN, "bye")),
            DaemonUnavailable,
            "bye",
            1,
        ),
        (b"", DaemonUnavailable, "without a summary", 0),
        (line(wire.Summary(True, 3, 3, 0, 0))[:-1], DaemonUnavailable, "without a summary", 0),
        (line(wire.Summary(True, 2, 2, 0, 0)), ProtocolError, "acknowledged 2 of 3 lines", 2),
        (b"garbage\n", ProtocolError, "malformed", 0),
    ],
)
def test_what_a_delivery_can_meet(
    peer: Callable[..., Peer],
    answer: bytes,
    error: type[Exception],
    words: str,
    acknowledged: int,
) -> None:
    def serve(conn: socket.socket) -> None:
        read_all(conn)
        conn.sendall(answer)

    p = peer(serve)
    sent = delivery.deliver(p.path, LINES, 5.0)
    assert sent.summary is None
    assert type(sent.failure) is error and words in str(sent.failure), sent.failure
    assert sent.acknowledged == acknowledged


def test_a_refusal_before_the_lines_are_read_is_busy(peer: Callable[..., Peer]) -> None:
    """`too_many_connections` comes at once and the daemon closes: what was sent meets
    a closed connection, and the refusal is still what the client reports."""

    def serve(conn: socket.socket) -> None:
        conn.sendall(line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 2")))
        conn.shutdown(socket.SHUT_RDWR)

    p = peer(serve)
    big = LINES * 200_000  # 6 MB: more than the socket buffers take
    sent = delivery.deliver(p.path, big, 5.0)
    assert type(sent.failure) is DaemonBusy, sent.failure


def test_the_whole_delivery_fits_in_its_timeout(peer: Callable[..., Peer]) -> None:
    release = threading.Event()

    def serve(conn: socket.socket) -> None:
        read_all(conn)
        conn.sendall(line(wire.Rejected(1, "invalid_event", "bad")))
        release.wait(10)  # never the summary

    p = peer(serve)
    started = time.monotonic()
    try:
        sent = delivery.deliver(p.path, LINES, 0.4)
    finally:
        release.set()
    assert time.monotonic() - started < 3
    assert type(sent.failure) is DaemonBusy
    assert str(sent.failure) == "the daemon did not answer within 0.4 s"
    assert sent.rejected == [Rejected(1, "invalid_event", "bad")]


def test_replies_are_read_while_writing(peer: Callable[..., Peer]) -> None:
    """A peer that answers every line at length before reading the next one: a client
    that only wrote until the end would block both sides."""
    count = 20_000  # 4 MB of lines, 2 MB of replies: far more than the socket buffers

    def serve(conn: socket.socket) -> None:
        number = 0
        for lines in protocol.Replies(conn).batches():
            for _ in lines:
                number += 1
                conn.sendall(line(wire.Rejected(number, "invalid_event", "x" * 40)))
        conn.sendall(line(wire.Summary(True, number, 0, number, 0)))

    p = peer(serve)
    payload = b"".join(b'{"type":"custom","name":"%s"}\n' % (b"n" * 170) for _ in range(count))
    with delivery.EventStream(p.path, timeout=10.0) as stream:
        stream.write(payload)
        summary = stream.finish()
    assert summary == Summary(count, 0, count, 0)
    assert [r.line for r in stream.rejected] == list(range(1, count + 1))


def test_lines_added_are_sent_in_chunks(peer: Callable[..., Peer]) -> None:
    received: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        received.append(read_all(conn))
        conn.sendall(line(wire.Summary(True, 1000, 1000, 0, 0)))

    p = peer(serve)
    with delivery.EventStream(p.path, timeout=10.0) as stream:
        for i in range(1000):
            stream.add(b'{"type":"custom","name":"%d"}' % i)
        assert stream.sent_lines == 0  # still buffered
        assert stream.finish(timeout=10.0) == Summary(1000, 1000, 0, 0)
    assert received[0].count(b"\n") == 1000


def test_queued_lines_count_as_sent_once_their_newline_is(
    peer: Callable[..., Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines queued (with their count, or counted there) are sent by pump(): sent_lines,
    what the daemon's acknowledgement is held against, counts those whose newline has
    left, a line cut by a short send included only once it is whole."""
    received: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        received.append(read_all(conn))
        conn.sendall(line(wire.Summary(True, 3, 3, 0, 0)))

    p = peer(serve)
    with delivery.EventStream(p.path, timeout=10.0) as stream:
        stream.queue(b'{"type":"custom","name":"a"}\n{"type":"custom","name":"b"}\n', 2)
        stream.queue(b'{"type":"custom","name":"c"}\n')
        assert stream.sent_lines == 0 and stream.queued > 0
        monkeypatch.setattr(delivery, "SEND_CHUNK", 40)
        stream.pump(False, True)  # 40 bytes: the first line and part of the second
        assert stream.sent_lines == 1
        while stream.queued:
            stream.pump(False, True)
        assert stream.sent_lines == 3
        assert stream.finish(timeout=10.0) == Summary(3, 3, 0, 0)
    assert received[0].count(b"\n") == 3


def test_a_peer_that_closes_while_the_client_writes(peer: Callable[..., Peer]) -> None:
    def serve(conn: socket.socket) -> None:
        conn.recv(100)

    p = peer(serve)
    sent = delivery.deliver(p.path, LINES * 400_000, 5.0)
    assert isinstance(sent.failure, DaemonUnavailable)
    assert not isinstance(sent.failure, DaemonBusy)


# -- the one-shot store process -------------------------------------------------------------


def fake_store(tmp_path: Path, body: str) -> list[str]:
    """A command that reads the request line, keeps it in ``request.json`` and runs
    ``body`` (Python, with ``out(line)`` writing one reply line)."""
    script = tmp_path / "fake_store.py"
    script.write_text(
        "import sys, time\n"
        f"open({str(tmp_path / 'request.json')!r}, 'wb').write(sys.stdin.buffer.readline())\n"
        "def out(text):\n"
        "    sys.stdout.write(text + '\\n'); sys.stdout.flush()\n" + body
    )
    return [sys.executable, str(script)]


def test_the_store_process_gets_the_query_request_and_is_read_like_the_socket(
    tmp_path: Path,
) -> None:
    command = fake_store(
        tmp_path,
        'out(\'{"columns":[["a","INTEGER"]]}\')\n'
        "out('{\"rows\":[[1],[2]]}')\n"
        'out(\'{"ok":true,"row_count":2,"elapsed_ms":3.0,"warning":"stale"}\')\n',
    )
    replies = list(store_process.query(command, "select $n", {"n": 2}, 7.0))
    assert replies == [
        QueryColumns([["a", "INTEGER"]]),
        QueryRows([[1], [2]]),
        QueryDone(2, 3.0, "stale"),
    ]
    request = msgspec.json.decode(
        (tmp_path / "request.json").read_bytes(), type=wire.ControlRequest
    )
    assert request == wire.QueryRequest(sql="select $n", params={"n": 2}, timeout=7.0)


@pytest.mark.parametrize(
    "body, error, words",
    [
        (
            'out(\'{"error":"query_failed","message":"Catalog Error: no t"}\'); sys.exit(1)',
            DaemonError,
            "Catalog Error",
        ),
        (
            'out(\'{"error":"store_unavailable","message":"lock held"}\'); sys.exit(3)',
            StoreUnavailable,
            "lock held",
        ),
        ("sys.exit(3)", StoreUnavailable, "could not open the database"),
        ("sys.exit(1)", ProtocolError, "ended without answering (exit status 1)"),
        ('out(\'{"columns":[["a","INTEGER"]]}\'); sys.exit(1)', ProtocolError, "ended early"),
        ("out('nonsense')", ProtocolError, "malformed"),
    ],
)
def test_what_the_store_process_can_answer(
    tmp_path: Path, body: str, error: type[Exception], words: str
) -> None:
    command = fake_store(tmp_path, body + "\n")
    with pytest.raises(error, match=re.escape(words)) as raised:
        list(store_process.query(command, "select 1", None, 5.0))
    assert type(raised.value) is error


def test_a_store_process_past_its_timeout_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_process, "GRACE", 0.2)
    pid_file = tmp_path / "pid"
    command = fake_store(
        tmp_path,
        f"open({str(pid_file)!r}, 'w').write(str(__import__('os').getpid()))\n"
        'out(\'{"columns":[["a","INTEGER"]]}\')\n'
        "time.sleep(60)\n",
    )
    started = time.monotonic()
    replies = store_process.query(command, "select 1", None, 0.3)
    assert next(replies) == QueryColumns([["a", "INTEGER"]])
    with pytest.raises(DaemonError, match=r"the query ran longer than its 0\.3 s") as raised:
        next(replies)
    assert raised.value.code == wire.QUERY_TIMEOUT
    assert time.monotonic() - started < 10
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped


def test_a_store_command_that_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="cannot start"):
        list(store_process.query([str(tmp_path / "missing")], "select 1", None, 1.0))


# -- against the real daemon ----------------------------------------------------------------


def test_every_exchange_with_the_real_daemon(running_daemon: Daemon) -> None:
    good = b'{"type":"custom","id":"c1","name":"one"}\n'
    bad = b'{"type":"custom","id":"c2"}\n'
    sent = delivery.deliver(running_daemon.events_socket, good + bad + good, 10.0)
    assert sent.failure is None
    assert sent.summary == Summary(3, 1, 1, 1)
    [rejected] = sent.rejected
    assert (rejected.line, rejected.error) == (2, "invalid_event")
    with control.Control(running_daemon.control_socket) as ctl:
        status = ctl.status()
        assert status.pid == running_daemon.proc.pid  # type: ignore[union-attr]
        assert status["accepted"] == 1
        replies = list(ctl.query("select id, name from events where id = $i", {"i": "c1"}))
        assert replies[:2] == [
            QueryColumns([["id", "VARCHAR"], ["name", "VARCHAR"]]),
            QueryRows([["c1", "one"]]),
        ]
        assert isinstance(replies[2], QueryDone) and replies[2].row_count == 1
        with pytest.raises(DaemonError) as failed:
            list(ctl.query("select nope"))
        assert failed.value.code == wire.QUERY_FAILED
        tail = list(ctl.tail({"op": "tail", "backlog": 5, "follow": False}))
        assert [json.loads(e)["id"] for e in tail[0].lines] == ["c1"]  # type: ignore[union-attr]
        assert tail[1:] == [TailDone(1)]
        with pytest.raises(DaemonError) as bad_request:
            ctl.answer({"op": "nope"})
        assert bad_request.value.code == wire.BAD_REQUEST
        assert isinstance(ctl.flush().materialized, int)
        report = ctl.gc(dry_run=True)
        assert report.dry_run and report.deleted == [] and report.events_deleted is None
        assert ctl.rebuild().events == 1
    assert running_daemon.stop() == 0
    with pytest.raises(DaemonUnavailable):
        control.Control(running_daemon.control_socket)


def test_a_tail_hears_the_daemon_stop(running_daemon: Daemon) -> None:
    exchange(running_daemon.events_socket, b'{"type":"custom","id":"t1","name":"x"}\n')
    with control.Control(running_daemon.control_socket) as ctl:
        replies = ctl.tail({"op": "tail", "backlog": 1})
        first = next(replies)
        assert isinstance(first, TailEvents) and b'"t1"' in first.lines[0]
        assert running_daemon.stop() == 0
        with pytest.raises(DaemonUnavailable, match="shutting down") as stopped:
            next(replies)
        assert not isinstance(stopped.value, DaemonBusy)


# -- who talks to the daemon -------------------------------------------------------------------


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


LIBRARY = {"protocol.py", "delivery.py", "control.py", "store_process.py"}


def test_only_the_client_library_talks_and_nothing_imports_the_store() -> None:
    """The commands reach the daemon through the library alone: no other client module
    opens a socket, starts the store process, or reads a reply line."""
    modules = sorted(CLIENT.glob("*.py"))
    assert len(modules) > 10 and {m.name for m in modules} >= LIBRARY
    sockets = {"socket", "_socket", "select"}
    talking = sorted(m.name for m in modules if imports(m) & sockets)
    assert talking == ["delivery.py", "protocol.py", "stdin_json.py", "store_process.py"]
    # (stdin_json.py waits on stdin, the agent's pipe, with select: it opens no socket)
    assert imports(CLIENT / "stdin_json.py") & sockets == {"select"}
    readers = {"telemetryd.client.protocol.Replies", "telemetryd.client.protocol.read_reply"}
    reading = sorted(m.name for m in modules if m.name not in LIBRARY and imports(m) & readers)
    assert reading == ["query.py"]  # named there for the tests of the reply reader only
    assert "Replies(" not in (CLIENT / "query.py").read_text()
    upward = {
        f"{m.name}: {name}"
        for m in modules
        for name in imports(m)
        if name.startswith(("telemetryd.store", "telemetryd.daemon"))
    }
    assert upward == set()


def test_the_library_imports_nothing_heavy() -> None:
    code = (
        "import sys; import telemetryd.client.protocol, telemetryd.client.delivery; "
        "import telemetryd.client.control, telemetryd.client.store_process; "
        "heavy = ('msgspec', 'click', 'duckdb', 'asyncio', 'anyio', 're', 'json', 'typing', "
        "'socket', 'subprocess', 'telemetryd.store', 'telemetryd.daemon', 'telemetryd.wire'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
