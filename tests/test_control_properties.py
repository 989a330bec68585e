"""Property-based tests of the control path (Hypothesis).

Generated control requests (every op with its fields type-confused, nested, huge up
to 1 MB, empty, not UTF-8, unknown ops) go to one real daemon per test, reused across
examples, one connection per example. Every request line gets a reply line that is
JSON (or, past a closing line, the connection ends), the daemon stays up and answers
`status`, and its log holds no traceback. The reply encoder and the clients' reply
reader are checked in-process on generated rows and bytes.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Daemon, connect
from telemetryd import wire
from telemetryd.client import query as query_client
from telemetryd.errors import DaemonBusy, ProtocolError
from telemetryd.store import queries as daemon_query

pytestmark = pytest.mark.properties

OPS = ["status", "flush", "rebuild", "gc", "query", "tail", "sync", "nope", "", "STATUS"]
FIELDS = [
    "sql",
    "params",
    "timeout",
    "dry_run",
    "types",
    "sessions",
    "sources",
    "backlog",
    "follow",
    "op",
    "x",
]
SQL = [
    "select 1",
    "select * from events",
    "select repeat('x', 200000) as v",
    "select $a as a",
    "select count(*) from range(100000000000)",
    "copy events to '/tmp/x.csv'",
    "update extensions",
    "pragma version",
    "",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def nested(draw: st.DrawFn) -> Raw:
    """A value nested a few to tens of thousands of levels deep."""
    depth = draw(st.integers(min_value=2, max_value=30_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return Raw(opener * depth + "1" + closer * depth)


class Raw:
    """JSON text put into a request as it is (too deep for the json module to write)."""

    def __init__(self, text: str) -> None:
        self.text = text


def render(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return json.dumps(value)


field_values = (
    json_values
    | st.sampled_from(SQL)
    | nested()
    | st.text(min_size=1000, max_size=5000)
    | st.builds(lambda n: "x" * n, st.integers(min_value=60_000, max_value=1_000_000))
)


# Each op's fields, with values of the right type (confused ones come from field_values).
VALID = {
    "status": {},
    "flush": {},
    "rebuild": {},
    "gc": {"dry_run": st.booleans()},
    "query": {
        "sql": st.sampled_from(SQL),
        "params": st.dictionaries(st.sampled_from(["a", "b"]), json_values, max_size=2),
        "timeout": st.floats(min_value=0.05, max_value=2),
    },
    "tail": {
        "types": st.lists(st.sampled_from(["custom", "skill", ""]), max_size=2),
        "sessions": st.lists(st.text(max_size=5), max_size=2),
        "sources": st.lists(st.text(max_size=5), max_size=2),
        "backlog": st.integers(min_value=0, max_value=100),
        "follow": st.just(False),
    },
}


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One request line, without its newline (never containing one)."""
    kind = draw(st.sampled_from(["op"] * 6 + ["object", "bytes", "empty", "json"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ")
    if kind == "empty":
        return draw(st.sampled_from([b"", b" ", b"\r", b"\t \t"]))
    if kind == "json":
        return render(draw(json_values | nested())).encode()
    message: dict[str, Any] = {}
    if kind == "op":  # a real op, each field absent, right, or of a confused type
        op = draw(st.sampled_from(sorted(VALID)))
        message["op"] = op
        for name, valid in VALID[op].items():
            choice = draw(st.sampled_from(["absent", "valid", "valid", "confused"]))
            if choice != "absent":
                message[name] = draw(valid if choice == "valid" else field_values)
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            message[draw(st.sampled_from(FIELDS))] = draw(field_values)
    else:
        if draw(st.integers(min_value=0, max_value=9)):
            message["op"] = draw(st.sampled_from(OPS) | json_values)
        for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
            message[name] = draw(field_values)
    if message.get("op") == "tail" and message.get("follow", True) is True:
        message["follow"] = False  # a following tail answers only when events come
    timeout = message.get("timeout")
    if message.get("op") == "query" and (
        timeout is None or (type(timeout) in (int, float) and timeout > 2)
    ):
        message["timeout"] = 2  # the endless queries end soon
    return render(message).encode()


def replies_to(sock: socket.socket, count: int) -> tuple[list[dict[str, Any]], bool]:
    """Reply lines until ``count`` requests were answered (a reply ends with a line that
    has ``ok`` or ``error``), or the daemon closed the connection after a closing line.
    Returns the replies and whether the connection was closed."""
    data = b""
    out: list[dict[str, Any]] = []
    answered = 0
    while answered < count:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:  # closed with our input unread: same as a close
            chunk = b""
        if not chunk:
            assert not data, f"a cut reply line: {data[:200]!r}"
            assert out and "error" in out[-1], f"closed without a closing line after {out}"
            return out, True
        lines = (data + chunk).split(b"\n")
        data = lines.pop()
        for line in lines:
            reply = json.loads(line)
            assert isinstance(reply, dict), reply
            out.append(reply)
            if "ok" in reply or "error" in reply:
                answered += 1
    return out, False


@given(lines=st.lists(requests(), min_size=1, max_size=4))
def test_every_control_request_gets_a_reply(running_daemon: Daemon, lines: list[bytes]) -> None:
    with connect(running_daemon.control_socket, timeout=30) as sock:
        payload = b"".join(line + b"\n" for line in lines)

        def send() -> None:
            # (An over-long request closes the connection: its reply is waiting.)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)

        sender = threading.Thread(target=send)  # replies are read while it sends
        sender.start()
        try:
            replies, closed = replies_to(sock, len(lines))
        finally:
            sender.join(30)
        if closed:
            assert replies[-1]["error"] in (wire.BAD_REQUEST, wire.TOO_MANY_CONNECTIONS)
        for reply in replies:
            if "error" in reply:
                assert isinstance(reply["message"], str) and reply["message"]
                assert "ExceptionGroup" not in reply["message"]
    assert running_daemon.proc is not None and running_daemon.proc.poll() is None
    with connect(running_daemon.control_socket) as sock:
        sock.sendall(b'{"op":"status"}\n')
        [status], _ = replies_to(sock, 1)
        assert status["ok"]
    assert "Traceback" not in running_daemon.log()


# -- the reply encoder ---------------------------------------------------------------------

row_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50)
    | st.builds(lambda n: "t" * n, st.integers(min_value=0, max_value=200_000))
    | st.lists(st.text(max_size=30), max_size=5)
)


@given(
    width=st.integers(min_value=1, max_value=4),
    data=st.data(),
    first=st.integers(min_value=0, max_value=10**6),
)
def test_rows_lines_hold_every_row_once_in_order_and_bounded(
    width: int, data: st.DataObject, first: int
) -> None:
    rows = data.draw(
        st.lists(st.tuples(*[row_values] * width), min_size=1, max_size=30), label="rows"
    )
    lines = daemon_query.encode_rows(rows, daemon_query.Sizer(width=width), first)
    decoded: list[list[Any]] = []
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        batch = json.loads(line)["rows"]
        assert batch
        if len(batch) > 1:
            assert len(line) <= 2 * daemon_query.REPLY_LINE_BYTES
        decoded.extend(batch)
    assert decoded == json.loads(json.dumps([list(row) for row in rows]))


# -- the clients' reply reader -----------------------------------------------------------------


@given(chunks=st.lists(st.binary(max_size=300), max_size=12))
def test_the_reply_reader_takes_any_bytes(chunks: list[bytes]) -> None:
    """Whatever arrives, in whatever pieces: whole lines, parsed or refused as malformed
    (a clear error, never another exception); a last line without newline is dropped."""
    left, right = socket.socketpair()
    with left, right:
        right.settimeout(5)
        for chunk in chunks:
            left.sendall(chunk)
        left.shutdown(socket.SHUT_WR)
        replies = query_client.Replies(right, max_line=1000)
        data = b"".join(chunks)
        try:
            lines = list(replies.lines())
        except ProtocolError as exc:
            assert "over 1000 bytes" in str(exc)
            return
        assert lines == data.split(b"\n")[:-1]
        assert replies.cut == (not data.endswith(b"\n") and bool(data))
        for line in lines:
            try:
                assert isinstance(query_client.read_reply(line), dict)
            except (ProtocolError, DaemonBusy) as exc:
                assert str(exc)
