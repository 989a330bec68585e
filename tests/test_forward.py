"""[forward]: one telemetryd ships its journal to another over OTLP/HTTP (daemon/forward.py).

Two real daemons in subprocesses, A forwarding to B's HTTP listener; B is killed and
restarted, A is killed and restarted mid-stream, and B must end with every event of
A exactly once, byte for byte (received_at included). Also: the OTLP form round-trips
in-process (JSON, and protobuf as a Collector would re-encode it), the token is sent,
``status`` shows the backlog, refused events are kept, bad settings are clear errors.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from conftest import Daemon, ctl, exchange, short_home
from telemetryd.adapters.otel import export, forwarded, wire
from telemetryd.client import control


def _events(start: int, count: int) -> bytes:
    """``count`` events of several types; every third one without an id (A assigns it)."""
    lines = []
    for i in range(start, start + count):
        kind = i % 4
        if kind == 0:
            event: dict[str, Any] = {
                "type": "api_request",
                "session_id": f"s-{i // 100}",
                "agent": {"model": "claude-sonnet-4-5"},
                "tokens": {"source": "actual", "input": i, "output": 2 * i},
                "cost_usd": 0.001 * (i % 7),
            }
        elif kind == 1:
            event = {"type": "tool_call", "tool": {"name": "Bash", "use_id": f"tu-{i}"}}
        elif kind == 2:
            event = {
                "type": "custom",
                "name": f"thing-{i}",
                "attrs": {
                    "quote": 'a "b" \\ c',
                    "unicode": "é ✓ 😀",
                    "n": i,
                    "x": [1, {"y": None}],
                },
            }
        else:
            event = {
                "type": "span",
                "name": "op",
                "trace_id": f"{i:032x}",
                "span_id": f"{i + 1:016x}",
                "duration_ms": i % 50,
            }
        if i % 3:
            event["id"] = f"ev-{i}"
        lines.append(json.dumps(event))
    return ("\n".join(lines) + "\n").encode()


def _send(daemon: Daemon, data: bytes) -> None:
    replies = exchange(daemon.events_socket, data)
    assert replies[-1]["accepted"] == data.count(b"\n"), replies[-5:]


def _status(daemon: Daemon) -> dict[str, Any]:
    return control.status(daemon.control_socket)


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``check`` (an observable state of a daemon) until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _caught_up(daemon: Daemon) -> bool:
    forward = _status(daemon)["forward"]
    return bool(forward["state"] == "caught up" and forward["behind_events"] == 0)


def _rows(daemon: Daemon) -> list[str]:
    """Every stored event, as ndjson rows ordered by id (every column: the canonical event)."""
    done = ctl("flush", "--socket", daemon.control_socket)
    assert done.returncode == 0, done.stderr
    result = ctl(
        "query",
        "--socket",
        daemon.control_socket,
        "--format",
        "ndjson",
        "select * from events order by id",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()


@pytest.fixture
def home_b() -> Iterator[Path]:
    yield from short_home("tdb-")


def _forwarding(
    daemon_factory: Any, endpoint: str, token: str, *more: str
) -> tuple[Daemon, list[str]]:
    args = [
        "--set",
        f'forward.endpoint="{endpoint}"',
        "--set",
        f'forward.headers={{Authorization="Bearer {token}"}}',
        "--set",
        "forward.max-retry-interval=0.3",
        "--set",
        "http.enabled=false",
    ]
    for setting in more:
        args += ["--set", setting]
    return daemon_factory(args), args


def _started_pair(daemon_factory: Any, home_b: Path) -> tuple[Daemon, Daemon]:
    """B (a plain daemon in ``home_b``) and A forwarding to it with B's token, started."""
    b = daemon_factory(home=home_b).start()
    token = (home_b / "http-token").read_text().strip()
    a, _ = _forwarding(daemon_factory, f"http://{b.http_address()}", token)
    return a.start(), b


def test_b_ends_with_every_event_of_a_exactly_once(daemon_factory: Any, home_b: Path) -> None:
    b = daemon_factory(home=home_b).start()
    address = b.http_address()
    token = (home_b / "http-token").read_text().strip()
    a, _ = _forwarding(daemon_factory, f"http://{address}", token, "forward.batch-events=300")
    a.start()
    sent = 0

    # 1. Forwarding as events come.
    _send(a, _events(sent, 3000))
    sent += 3000
    _wait("A to catch up", lambda: _caught_up(a))

    # 2. B is down: A keeps the backlog and says so.
    b.kill()
    _send(a, _events(sent, 2000))
    sent += 2000

    def retrying() -> bool:
        forward = _status(a)["forward"]
        return bool(forward["state"] == "retrying" and forward["failures"] >= 2)

    _wait("A to retry", retrying)
    forward = _status(a)["forward"]
    assert forward["behind_events"] == 2000, forward
    assert forward["behind_bytes"] == sum(len(line) + 1 for line in _journal_lines(a)[-2000:]), (
        forward
    )
    assert forward["last_error"] and "Connection refused" in forward["last_error"], forward
    text = ctl("status").stdout.decode()
    assert "forward: retrying to http://" in text and "2000 events" in text, text

    # 3. B is back on the same address: A catches up by itself.
    b.start(env={"TELEMETRYD_HTTP_ADDRESS": address})
    _wait("A to catch up after B's restart", lambda: _caught_up(a))

    # 4. A killed mid-stream (its position a second old at most), then stopped mid-stream.
    _send(a, _events(sent, 20_000))
    sent += 20_000
    a.kill()
    a.start()
    _send(a, _events(sent, 20_000))
    sent += 20_000
    assert a.stop() == 0
    position = json.loads((a.home / "forward" / "position.json").read_text())
    assert position["endpoint"] == f"http://{address}" and position["seq"] >= 1, position
    # Stopped mid-stream: the saved position is short of the journal's end.
    last = sorted(a.journal_dir.glob("*.jsonl"))[-1]
    end = (int(last.stem.rsplit("-", 1)[1]), last.stat().st_size)
    assert (position["seq"], position["offset"]) < end, (position, end)
    a.start()
    _wait("A to catch up after its restarts", lambda: _caught_up(a))

    # B has every event of A, each once, identical to A's (received_at included).
    a_lines = _journal_lines(a)
    b_lines = _journal_lines(b)
    assert len(a_lines) == sent
    a_ids = [json.loads(line)["id"] for line in a_lines]
    b_ids = [json.loads(line)["id"] for line in b_lines]
    assert len(set(a_ids)) == sent and sorted(b_ids) == sorted(a_ids)  # B journaled each once
    assert sorted(b_lines) == sorted(a_lines)  # byte for byte
    a_rows, b_rows = _rows(a), _rows(b)
    assert len(a_rows) == sent and b_rows == a_rows
    forward = _status(a)["forward"]
    assert forward["behind_bytes"] == 0 and forward["refused_events"] == 0, forward


def _journal_lines(daemon: Daemon) -> list[bytes]:
    out: list[bytes] = []
    for path in sorted(daemon.journal_dir.glob("*.jsonl")):
        out.extend(path.read_bytes().splitlines())
    return out


def test_the_token_is_sent_and_a_refusal_is_reported_not_skipped(
    daemon_factory: Any, home_b: Path
) -> None:
    b = daemon_factory(home=home_b).start()
    address = b.http_address()
    a, _ = _forwarding(daemon_factory, f"http://{address}", "not-the-token")
    a.start()
    _send(a, _events(0, 10))

    def refused() -> bool:
        return bool((_status(a)["forward"]["last_error"] or "").startswith("the endpoint refuses"))

    _wait("A to report the 401", refused)
    forward = _status(a)["forward"]
    assert "401" in forward["last_error"] and forward["state"] == "retrying", forward
    assert forward["behind_events"] == 10 and forward["sent_events"] == 0, forward
    assert _status(b)["accepted"] == 0
    assert _status(b)["http"]["requests"] >= 1  # (it was asked, and said no)


class _Holding(http.server.BaseHTTPRequestHandler):
    """A proxy in front of a real telemetryd (``target``) that answers any request
    holding the event ``hold-me`` with a 503 while ``holding`` is set, and passes every
    other request on (then each batch after the held one is answered first)."""

    target: ClassVar[str] = ""
    holding: ClassVar[threading.Event] = threading.Event()
    passed: ClassVar[list[int]] = []  # events in each request passed on and answered 200

    def do_POST(self) -> None:
        import http.client

        body = self.rfile.read(int(self.headers["Content-Length"]))
        plain = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if self.holding.is_set() and b"hold-me" in plain:
            status, answer = 503, b'{"code":14,"message":"held"}'
        else:
            host, port = self.target.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            conn.request("POST", self.path, body, headers)
            response = conn.getresponse()
            status, answer = response.status, response.read()
            conn.close()
            if status == 200:
                self.passed.append(plain.count(b'"logRecords"') and plain.count(b'"eventName"'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_batches_in_flight_answered_out_of_order_never_move_the_position_past_a_gap(
    daemon_factory: Any, home_b: Path
) -> None:
    """Several batches are posted at a time; the first one is held (503) while the later
    ones are answered. The saved position must not pass the held batch, and after a
    restart B has every event of A exactly once."""
    b = daemon_factory(home=home_b).start()
    token = (home_b / "http-token").read_text().strip()
    _Holding.target = b.http_address()
    _Holding.holding.set()
    _Holding.passed = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Holding)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        a, _ = _forwarding(
            daemon_factory, f"http://127.0.0.1:{port}", token, "forward.batch-events=100"
        )
        a.start()
        held = b'{"type":"custom","name":"held","id":"hold-me"}\n'
        data = held + _events(0, 999)  # 10 batches of 100; the first holds hold-me
        _send(a, data)
        # Batches after the held one are answered (at least 2: several were in flight) ...
        _wait("later batches to be answered", lambda: _status(a)["forward"]["sent_events"] >= 200)
        forward = _status(a)["forward"]
        assert "503" in (forward["last_error"] or "") and forward["sent_events"] >= 200, forward
        # ... but the position stays before the held batch, and so does the saved one.
        first = sorted(a.journal_dir.glob("*.jsonl"))[0].name
        assert (forward["segment"], forward["offset"]) == (first, 0), forward
        assert forward["behind_events"] == 1000, forward
        assert _status(b)["accepted"] == sum(_Holding.passed) >= 200
        assert a.stop() == 0
        saved = a.home / "forward" / "position.json"
        if saved.exists():
            assert json.loads(saved.read_text())["offset"] == 0, saved.read_text()
        # Released, A sends the journal again from the held batch: B keeps each event once.
        _Holding.holding.clear()
        a.start()
        _wait("A to catch up", lambda: _caught_up(a))
        a_lines, b_lines = _journal_lines(a), _journal_lines(b)
        assert len(a_lines) == 1000 and sorted(b_lines) == sorted(a_lines)
        assert sum(_Holding.passed) > 1000  # (the batches answered before were sent again)
        assert _status(b)["duplicates"] == sum(_Holding.passed) - 1000
    finally:
        server.shutdown()
        server.server_close()


def test_batches_answered_before_one_retried_are_saved_and_not_resent_after_a_kill(
    daemon_factory: Any, home_b: Path
) -> None:
    """Two batches are answered, then the next one fails for long (503). Their place is
    saved all the same within a second, so a kill -9 resends none of them (it was saved
    only once the failing batch was answered: the docs promise at most the last second's
    batches and those in flight)."""
    b = daemon_factory(home=home_b).start()
    token = (home_b / "http-token").read_text().strip()
    _Holding.target = b.http_address()
    _Holding.holding.set()
    _Holding.passed = []
    with serving(_Holding) as port:
        a, _ = _forwarding(
            daemon_factory, f"http://127.0.0.1:{port}", token, "forward.batch-events=100"
        )
        a.start()
        _send(a, _events(0, 100))
        _wait("A to catch up", lambda: _caught_up(a))  # (and save its position)
        held = b'{"type":"custom","name":"held","id":"hold-me"}\n'
        _send(a, _events(100, 200) + held + _events(300, 99))  # 3 batches; the third held
        _wait("the two batches before the held one", lambda: sum(_Holding.passed) == 300)
        segment = sorted(a.journal_dir.glob("*.jsonl"))[0]
        data = segment.read_bytes()
        before_held = data.rindex(b"\n", 0, data.index(b'"hold-me"')) + 1
        saved = a.home / "forward" / "position.json"

        def saved_before_held() -> bool:
            return bool(json.loads(saved.read_text())["offset"] == before_held)

        _wait("the position before the held batch to be saved", saved_before_held, timeout=5)
        assert "503" in (_status(a)["forward"]["last_error"] or "")
        a.kill()
        _Holding.holding.clear()
        a.start()
        _wait("A to catch up", lambda: _caught_up(a) and sum(_Holding.passed) >= 400)
    assert sorted(_journal_lines(b)) == sorted(_journal_lines(a))
    assert sum(_Holding.passed) == 400 and _status(b)["duplicates"] == 0  # nothing resent


class _Refusing(http.server.BaseHTTPRequestHandler):
    """An OTLP endpoint that refuses (400) any request holding a poisoned event."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if b"poison" in body:
            self.send_response(400)
            answer = b'{"code":3,"message":"poison found"}'
        else:
            self.received.append(body)
            self.send_response(200)
            answer = b"{}"
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """An HTTP endpoint of ``handler`` on a free port, served on a thread; its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_an_event_refused_for_good_is_kept_and_the_rest_goes_through(
    daemon_factory: Any,
) -> None:
    _Refusing.received = []
    with serving(_Refusing) as port:
        a, _ = _forwarding(daemon_factory, f"http://127.0.0.1:{port}", "t")
        a.start()
        data = (
            _events(0, 99) + b'{"type":"custom","name":"x","id":"bad-1","attrs":{"p":"poison"}}\n'
        )
        _send(a, data)
        _wait("A to catch up", lambda: _caught_up(a))
        forward = _status(a)["forward"]
        assert forward["refused_events"] == 1 and forward["sent_events"] == 99, forward
        refused = [
            json.loads(line) for line in Path(forward["refused_file"]).read_text().splitlines()
        ]
        assert len(refused) == 1 and refused[0]["event"]["id"] == "bad-1", refused
        assert refused[0]["status"] == 400 and "poison found" in refused[0]["error"]
        got = []
        for body in _Refusing.received:
            for group in wire.decode("logs", "json", body):
                got.extend(json.loads(r.body)["id"] for r in group.logs)
        expected = [json.loads(line)["id"] for line in _journal_lines(a) if b"poison" not in line]
        assert sorted(set(got)) == sorted(expected)  # every other event, halves resent at most


class _RefusingAndFlaky(_Refusing):
    """Refuses the poisoned event for good, and fails (500) the first requests that hold
    the flaky one: the batch is retried whole."""

    flaky_left: ClassVar[int] = 0

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        plain = body
        if self.headers.get("Content-Encoding") == "gzip":
            plain = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if b"poison" not in plain and b"flaky" in plain and _RefusingAndFlaky.flaky_left > 0:
            _RefusingAndFlaky.flaky_left -= 1
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.rfile = io.BytesIO(body)  # (read again by _Refusing)
        super().do_POST()


def test_a_refused_event_is_kept_once_however_often_its_batch_is_retried(
    daemon_factory: Any,
) -> None:
    """A 400 found the refused event (kept in refused.jsonl), then another part of the
    batch failed for the moment (500): the batch was retried whole, and the refused event
    was kept (and counted) again at every try, the taken parts counted again as sent."""
    _RefusingAndFlaky.received = []
    _RefusingAndFlaky.flaky_left = 2
    with serving(_RefusingAndFlaky) as port:
        a, _ = _forwarding(daemon_factory, f"http://127.0.0.1:{port}", "t")
        a.start()
        lines = _events(0, 100).splitlines(keepends=True)
        lines[10] = b'{"type":"custom","name":"x","id":"bad-1","attrs":{"p":"poison"}}\n'
        lines[90] = b'{"type":"custom","name":"x","id":"flaky-1","attrs":{"p":"flaky"}}\n'
        _send(a, b"".join(lines))
        _wait("A to catch up", lambda: _caught_up(a))
        forward = _status(a)["forward"]
        assert _RefusingAndFlaky.flaky_left == 0  # (the batch was retried)
        assert forward["refused_events"] == 1 and forward["sent_events"] == 99, forward
        refused = Path(forward["refused_file"]).read_text().splitlines()
        assert [json.loads(line)["event"]["id"] for line in refused] == ["bad-1"]


class _Closable(http.server.BaseHTTPRequestHandler):
    """An OTLP endpoint that answers 503 (no Retry-After) while ``closed`` is set, 200
    otherwise; it notes when each batch (by the id of its first event) was tried, and
    the ids of the events it took."""

    closed: ClassVar[threading.Event] = threading.Event()
    tries: ClassVar[dict[str, list[float]]] = {}
    taken: ClassVar[list[str]] = []

    @classmethod
    def reset(cls) -> None:
        cls.closed.set()
        cls.tries, cls.taken = {}, []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        records = [
            r for g in wire.decode("logs", "json", zlib.decompress(body, 31)) for r in g.logs
        ]
        ids = [json.loads(record.body)["id"] for record in records]
        self.tries.setdefault(ids[0], []).append(time.monotonic())
        if self.closed.is_set():
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.taken.extend(ids)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_batches_failing_side_by_side_each_wait_1_then_2_s_and_are_counted_once(
    daemon_factory: Any,
) -> None:
    """Three batches fail side by side: each waits 1 s, then 2 s (its own failures set
    its wait), and `failures` counts the failures in a row of one batch. One count grew
    for all three: `status` said 9 failures in a row after three tries, and the batches'
    waits came from each other's failures (1, 2, 4 s for the first try)."""
    _Closable.reset()
    with serving(_Closable) as port:
        a, _ = _forwarding(
            daemon_factory,
            f"http://127.0.0.1:{port}",
            "t",
            "forward.batch-events=10",
            "forward.max-retry-interval=30",
        )
        a.start()
        _send(a, _events(0, 30))  # three batches, posted side by side
        tries = _Closable.tries

        def tried(count: int) -> bool:
            return len(tries) == 3 and all(len(times) >= count for times in list(tries.values()))

        _wait("each batch to be tried twice", lambda: tried(2), timeout=30)
        waits = [times[1] - times[0] for times in list(tries.values())]
        assert all(0.7 <= wait < 1.6 for wait in waits), waits  # (0.8 to 1 times 1 s)
        _wait(
            "each batch to fail three times",
            lambda: tried(3) and _status(a)["forward"]["failures"] >= 3,
            timeout=30,
        )
        forward = _status(a)["forward"]
        most = max(len(times) for times in list(tries.values()))  # (tries after the status)
        assert forward["state"] == "retrying" and forward["failures"] <= most, forward
        assert "3 failures in a row" in ctl("status", "--socket", a.control_socket).stdout.decode()
        waits = [times[2] - times[1] for times in list(tries.values())]
        assert all(1.5 <= wait < 3.0 for wait in waits), waits  # (0.8 to 1 times 2 s)


def test_a_partial_success_is_counted(daemon_factory: Any, home_b: Path) -> None:
    b = daemon_factory(["--set", "ingest.max-attrs-bytes=200"], home=home_b).start()
    address = b.http_address()
    token = (home_b / "http-token").read_text().strip()
    a, _ = _forwarding(daemon_factory, f"http://{address}", token)
    a.start()
    big = json.dumps({"type": "custom", "name": "big", "id": "big", "attrs": {"x": "y" * 500}})
    _send(a, _events(0, 20) + big.encode() + b"\n")
    _wait("A to catch up", lambda: _caught_up(a))
    forward = _status(a)["forward"]
    assert forward["partial_rejected"] == 1 and forward["sent_events"] == 21, forward
    assert _status(b)["accepted"] == 20


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ('forward.endpoint="ftp://example.com"', "`$.forward.endpoint`"),
        ('forward.endpoint="http://user:pw@example.com"', "credentials in `headers`"),
        ('forward.headers={"Content-Length"="1"}', "`$.forward.headers`"),
        ('forward.headers={"bad name"="1"}', "not an HTTP header name"),
        ('forward.signals=["logz"]', "'logz' is not one of logs, traces, metrics"),
        ('forward.types=["nope"]', "'nope' is not an event type"),
        ("forward.batch-events=0", "`$.forward.batch-events`"),
        ('forward.endpoint="http://ex ample.com"', "has a space or a control character"),
        ('forward.endpoint="http://h/a\\u0000b"', "has a space or a control character"),
        ('forward.signals=["logs", "logs"]', "names a signal twice"),
        ('forward.headers={"X-A"="a\\u0001b"}', "has a control character"),
    ],
)
def test_bad_settings_are_clear_errors(setting: str, named: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "telemetryd", "--check", "--set", setting],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert named.encode() in result.stderr, result.stderr


# -- the OTLP form, in-process --------------------------------------------------------


def _canonical(data: bytes) -> bytes:
    """Lines as the daemon journals them (checked, stamped, canonically encoded)."""
    from telemetryd.config import Ingest
    from telemetryd.daemon.ingest import Ingestor

    checked = Ingestor(Ingest()).checker.check(data, 0, 65536, 16384, 8)
    assert checked.rejected == 0, checked.replies
    return checked.data


def test_a_forwarded_event_round_trips_to_the_same_line() -> None:
    lines = _canonical(_events(0, 200))
    resource = forwarded.resource({"user.name": "ana"}, "host-1", "0.1.0")
    requests = forwarded.encode(
        lines, signals=forwarded.SIGNALS, types=frozenset(), resource_json=resource
    )
    assert requests.records["logs"] == 200 and requests.events == 200
    assert requests.records["traces"] == 50  # every 4th is a span, with OTLP ids
    mapped = export.to_events("logs", "json", requests.bodies["logs"], limit=1 << 30)
    assert mapped.lines == lines and mapped.forwarded == 200 and mapped.unmapped == 0
    # A Collector in between may send it on as protobuf: the same lines come out.
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    # (protobuf's own JSON mapping has ids in base64, OTLP/JSON in hex)
    request = json.loads(requests.bodies["logs"])
    for record in request["resourceLogs"][0]["scopeLogs"][0]["logRecords"]:
        for key in ("traceId", "spanId"):
            if key in record:
                record[key] = base64.b64encode(bytes.fromhex(record[key])).decode()
    message = json_format.ParseDict(request, ExportLogsServiceRequest())
    again = export.to_events("logs", "protobuf", message.SerializeToString(), limit=1 << 30)
    assert again.lines == lines
    record = message.resource_logs[0].scope_logs[0].log_records[1]
    first = json.loads(lines.splitlines()[1])
    attrs = {kv.key: kv.value.string_value for kv in record.attributes}
    assert attrs[forwarded.ID_KEY] == first["id"] and attrs[forwarded.TYPE_KEY] == "tool_call"
    resource_attrs = {kv.key for kv in message.resource_logs[0].resource.attributes}
    assert {"service.name", "host.name", "user.name"} <= resource_attrs
    # Spans: valid OTLP that a receiving telemetryd maps to no events (the logs carry them).
    spans = export.to_events("traces", "json", requests.bodies["traces"], limit=1 << 30)
    assert spans.records == 50 and spans.lines == b"" and spans.unmapped == 0
    decoded = [s for g in wire.decode("traces", "json", requests.bodies["traces"]) for s in g.spans]
    span_events = [json.loads(x) for x in lines.splitlines() if b'"type":"span"' in x]
    assert [(s.trace_id, s.span_id) for s in decoded] == [
        (e["trace_id"], e["span_id"]) for e in span_events
    ]
    assert [s.end_ns - s.start_ns for s in decoded] == [
        e.get("duration_ms", 0) * 1_000_000 for e in span_events
    ]


@pytest.mark.parametrize("good", [3, 300])  # (a small request: the daemon; big: a worker)
def test_a_receiver_rejects_bad_forwarded_records_and_keeps_the_others(
    daemon_factory: Any, home_b: Path, good: int
) -> None:
    """Forwarded records whose body is no event, or an event that fails the checks, are
    rejected through partialSuccess; every good record around them is journaled as it
    was sent (received_at included), and the request is not refused."""
    import http.client

    b = daemon_factory(home=home_b).start()
    token = (home_b / "http-token").read_text().strip()
    lines = _canonical(_events(0, good)).splitlines(keepends=True)
    resource = forwarded.resource({}, "host-1", "0.1.0")
    request = json.loads(
        forwarded.encode(
            b"".join(lines), signals=("logs",), types=frozenset(), resource_json=resource
        ).bodies["logs"]
    )
    records = request["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    not_an_event = {**records[0], "body": {"stringValue": "not an event"}}
    no_tokens = {**records[0], "body": {"stringValue": '{"type":"api_request","id":"bad"}'}}
    no_body = {key: value for key, value in records[0].items() if key != "body"}
    middle = len(records) // 2
    records[middle:middle] = [not_an_event, no_tokens, no_body]
    body = json.dumps(request).encode()
    assert (len(body) >= 16 * 1024) == (good == 300)
    host, port = b.http_address().rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn.request("POST", "/v1/logs", body, headers)
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    assert response.status == 200
    assert answer["partialSuccess"]["rejectedLogRecords"] == "3", answer
    assert "not an event" in answer["partialSuccess"]["errorMessage"], answer
    assert sorted(_journal_lines(b)) == sorted(line.rstrip(b"\n") for line in lines)
    assert _status(b)["rejected"] == 1  # (the event that failed the checks; 2 unmapped)


def test_metric_events_become_data_points_and_types_filter() -> None:
    data = _canonical(
        b'{"type":"metric","name":"m.count","value":3,"kind":"counter","unit":"1"}\n'
        b'{"type":"metric","name":"m.gauge","value":1.5,"kind":"gauge"}\n'
        b'{"type":"custom","name":"other"}\n'
    )
    resource = forwarded.resource({}, "h", "0")
    requests = forwarded.encode(
        data, signals=("metrics",), types=frozenset({"metric"}), resource_json=resource
    )
    assert requests.events == 2 and requests.lines == 3 and set(requests.bodies) == {"metrics"}
    points = [
        p for g in wire.decode("metrics", "json", requests.bodies["metrics"]) for p in g.points
    ]
    assert [(p.metric, p.kind, p.value, p.monotonic) for p in points] == [
        ("m.count", "sum", 3.0, True),
        ("m.gauge", "gauge", 1.5, False),
    ]
    assert msgspec.json.decode(data.splitlines()[0])["id"] == points[0].attrs[forwarded.ID_KEY]


def test_the_saved_position_serves_every_spelling_of_its_endpoint(tmp_path: Path) -> None:
    """A trailing slash, the host's case or the default port written out name the same
    endpoint: the position stays (else the whole journal would be sent again)."""
    from telemetryd.daemon.forward import Position, load_position, save_position

    path = str(tmp_path / "position.json")
    save_position(path, Position(endpoint="http://127.0.0.1:4318", seq=7, offset=123))
    for same in ("http://127.0.0.1:4318/", "HTTP://127.0.0.1:4318", "http://127.0.0.1:4318//"):
        assert (load_position(path, same).seq, load_position(path, same).offset) == (7, 123)
    save_position(path, Position(endpoint="http://Collector.lan/otlp/", seq=3, offset=9))
    assert load_position(path, "http://collector.lan:80/otlp").seq == 3
    for other in ("http://127.0.0.1:4319", "https://collector.lan/otlp", "http://collector.lan/x"):
        assert (load_position(path, other).seq, load_position(path, other).offset) == (0, 0)


def test_segments_deleted_before_the_first_send_are_reported(daemon_factory: Any) -> None:
    """Forwarding starts at the oldest segment there is, and says so in its position: one
    that retention's size limit deletes before anything was forwarded is reported as
    skipped (unreported before, the position being "from the oldest, whichever")."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    a, _ = _forwarding(
        daemon_factory,
        f"http://127.0.0.1:{port}",
        "x",
        "journal.segment-max-bytes=100000",
        "retention.max-bytes=300000",
        "retention.interval=3600",
        "retention.compress=false",  # (gzipped, the journal would fit: nothing deleted)
    )
    a.start()
    for start in range(0, 3000, 500):
        assert exchange(a.events_socket, _events(start, 500))[-1]["accepted"] == 500
    loaded = ctl("query", "--socket", a.control_socket, "select count(*) from events")
    assert loaded.returncode == 0, loaded.stderr
    gc = ctl("gc", "--socket", a.control_socket, "--json")
    assert gc.returncode == 0, gc.stderr
    deleted = json.loads(gc.stdout)["deleted"]
    assert deleted, gc.stdout
    # (the batch being retried was read before: the loss shows at the next read, here
    # after a restart, which before started again from the oldest segment left)
    assert a.stop() == 0
    a.start()
    deadline = time.monotonic() + 20
    while not (skipped := control.status(a.control_socket)["forward"]["skipped"]):
        assert time.monotonic() < deadline, a.log()
        time.sleep(0.1)
    assert skipped == [f"segments 1 to {len(deleted)}" if len(deleted) > 1 else "segment 1"]
    assert "deleted before it was forwarded" in a.log()


def _segment_ids(daemon: Daemon) -> list[list[str]]:
    """The event ids of each segment of ``daemon``'s journal, oldest first."""
    return [
        [json.loads(line)["id"] for line in path.read_bytes().splitlines()]
        for path in sorted(daemon.journal_dir.glob("*.jsonl"))
    ]


def test_a_segment_deleted_while_its_last_batch_is_retried_is_not_reported(
    daemon_factory: Any,
) -> None:
    """The batch that ends a segment is retried while retention's size limit deletes the
    segment, and the next one (never read): the batch is delivered all the same, so only
    the next segment is reported (both were, "segments 1 to 2")."""
    _Closable.reset()
    with serving(_Closable) as port:
        a, _ = _forwarding(
            daemon_factory,
            f"http://127.0.0.1:{port}",
            "t",
            "journal.segment-max-bytes=4096",
            "retention.max-bytes=1000",
            "retention.interval=3600",
            "retention.compress=false",
        )
        a.start()
        _send(a, _events(0, 30))  # segment 1, the writer's: read whole, then retried
        _wait("the batch to be retried", lambda: _status(a)["forward"]["failures"] >= 1)
        _send(a, _events(30, 30))  # segment 2 (the first is full)
        _send(a, _events(60, 30))  # segment 3, the writer's
        ids = _segment_ids(a)
        assert [len(some) for some in ids] == [30, 30, 30]
        assert ctl("flush", "--socket", a.control_socket).returncode == 0
        gc = ctl("gc", "--socket", a.control_socket, "--json")
        assert gc.returncode == 0, gc.stderr
        assert len(json.loads(gc.stdout)["deleted"]) == 2, gc.stdout  # segments 1 and 2
        _Closable.closed.clear()
        _wait("A to catch up", lambda: _caught_up(a))
        forward = _status(a)["forward"]
        assert forward["skipped"] == ["segment 2"], forward
        assert sorted(_Closable.taken) == sorted(ids[0] + ids[2])
        assert "segment 2 deleted before it was forwarded" in a.log()


def test_segments_missing_when_forwarding_began_are_not_reported(daemon_factory: Any) -> None:
    """Retention had deleted a middle segment for its age (it held no usage) before
    `[forward]` was set: nothing of it was owed to the endpoint, and it is not reported
    as skipped, after a restart either (status said "deleted before they were
    forwarded: segment 2" for ever, an ERROR in the log)."""
    _Closable.reset()
    with serving(_Closable) as port:
        a, forwarding = _forwarding(
            daemon_factory, f"http://127.0.0.1:{port}", "t", "journal.segment-max-bytes=4096"
        )
        a.args = ["--set", "journal.segment-max-bytes=4096", "--set", "http.enabled=false"]
        a.start()  # (without [forward] first)
        _send(a, _events(0, 30))
        custom = "".join(f'{{"type":"custom","name":"c","id":"c-{i}"}}\n' for i in range(90))
        _send(a, custom.encode())  # segment 2: no usage
        _send(a, _events(30, 30))
        ids = _segment_ids(a)
        assert [len(some) for some in ids] == [30, 90, 30]
        assert ctl("flush", "--socket", a.control_socket).returncode == 0
        middle = sorted(a.journal_dir.glob("*.jsonl"))[1]
        aged = time.time() - 40 * 86400
        os.utime(middle, (aged, aged))
        gc = ctl("gc", "--socket", a.control_socket)
        assert gc.returncode == 0 and not middle.exists(), gc.stdout
        assert a.stop() == 0
        a.args = forwarding
        a.start()
        _wait("the first batch to be retried", lambda: _status(a)["forward"]["failures"] >= 1)
        assert a.stop() == 0
        _Closable.closed.clear()
        a.start()
        _wait("A to catch up", lambda: _caught_up(a))
        forward = _status(a)["forward"]
        assert forward["skipped"] == [], forward
        assert sorted(_Closable.taken) == sorted(ids[0] + ids[2])
        assert "deleted before it was forwarded" not in a.log()


def test_skipped_segments_are_named_by_runs_without_the_absent_ones() -> None:
    from telemetryd.daemon.forward import _gaps, _gone

    assert _gaps([1, 2, 4, 8, 9]) == [(3, 3), (5, 7)]
    assert _gone(1, 4, []) == ["segments 1 to 3"]
    assert _gone(1, 10, [(2, 2), (5, 7)]) == ["segment 1", "segments 3 to 4", "segments 8 to 9"]
    assert _gone(3, 8, [(3, 3), (5, 7)]) == ["segment 4"]
    assert _gone(5, 8, [(3, 9)]) == []


def test_status_names_the_segment_the_position_moved_to(daemon_factory: Any, home_b: Path) -> None:
    """After a restart A writes a new segment; its forwarder moves to it before it has read
    a line of it, and stays there while B is down. status names that segment (it gave "")."""
    a, b = _started_pair(daemon_factory, home_b)
    _send(a, _events(0, 100))
    _wait("A to catch up", lambda: _caught_up(a))
    b.kill()
    assert a.stop() == 0
    a.start()
    _send(a, _events(100, 10))  # into a new segment, which B cannot take

    def retrying() -> bool:
        forward = _status(a)["forward"]
        return bool(forward["state"] == "retrying" and forward["failures"] >= 2)

    _wait("A to retry", retrying)
    newest = sorted(a.journal_dir.glob("*.jsonl"))
    assert len(newest) == 2, newest
    forward = _status(a)["forward"]
    assert (forward["segment"], forward["offset"], forward["behind_events"]) == (
        newest[-1].name,
        0,
        10,
    ), forward


class _Trickling:
    """A raw-socket endpoint (one connection at a time, in a thread) that answers each
    request with a status line and headers announcing a long body, then ``reply`` one
    byte every 0.2 s for as long as the client reads: within any read timeout, never
    done."""

    def __init__(self, reply: bytes, head: bytes = b"") -> None:
        import socket

        self.reply = reply
        self.head = head  # sent at once, before the trickle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]
        self.asked = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    self.asked.set()
                    conn.sendall(self.head)
                    for byte in self.reply:
                        if self.stopping.is_set():
                            break
                        conn.sendall(bytes([byte]))
                        time.sleep(0.2)
                except OSError:
                    continue

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(10)


_SLOW = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000


def test_a_trickling_answer_ends_at_the_timeout_and_hides_control_characters() -> None:
    """`timeout` bounded each read, so an answer a byte at a time held the sender (and the
    daemon's exit) for ever; now it bounds the whole request. What a broken endpoint says
    reaches `status` without its control characters (no terminal escapes)."""
    from telemetryd import config
    from telemetryd.daemon.forward import Sender

    slow = _Trickling(_SLOW)
    garbage = _Trickling(b"\x1b[31mNOT HTTP\x00\r\n\r\n")
    try:
        sender = Sender(config.Forward(endpoint=f"http://127.0.0.1:{slow.port}", timeout=1.0))
        started = time.monotonic()
        answer = sender.post("logs", b"{}")
        assert time.monotonic() - started < 5  # (1 s, and a retry would double it)
        assert answer.status == 0 and "no answer within 1 s" in answer.message
        # A 200 whose body (to the connection's end) trickles: the timeout cuts it short,
        # and that is no answer (it was taken for a success, the batch for sent).
        cut = _Trickling(b"x" * 1000, head=b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        try:
            sender = Sender(config.Forward(endpoint=f"http://127.0.0.1:{cut.port}", timeout=1.0))
            answer = sender.post("logs", b"{}")
            assert answer.status == 0 and "no answer within 1 s" in answer.message, answer
        finally:
            cut.close()
        sender = Sender(config.Forward(endpoint=f"http://127.0.0.1:{garbage.port}", timeout=10))
        answer = sender.post("logs", b"{}")
        assert answer.status == 0 and "NOT HTTP" in answer.message, answer
        assert answer.message.isprintable() and "\x1b" not in answer.message
    finally:
        slow.close()
        garbage.close()


def test_an_aborted_post_is_not_sent_again_on_a_new_connection() -> None:
    """abort() (the daemon stopping) before the endpoint's first byte read as a closed
    kept-alive connection, so the post was sent again on a new one, which nothing shut
    down: the daemon's stop then waited out the whole timeout (once in a few runs of the
    test below)."""
    import socket

    from telemetryd import config
    from telemetryd.daemon.forward import Sender

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    connections: list[socket.socket] = []
    asked = threading.Event()
    stopping = threading.Event()

    def serve() -> None:  # reads each request and never answers
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            connections.append(conn)
            conn.recv(65536)
            asked.set()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    port = listener.getsockname()[1]
    sender = Sender(config.Forward(endpoint=f"http://127.0.0.1:{port}", timeout=30.0))
    answers: list[Any] = []
    poster = threading.Thread(target=lambda: answers.append(sender.post("logs", b"{}")))
    try:
        poster.start()
        assert asked.wait(10)
        sender.abort()
        poster.join(5)
        assert not poster.is_alive(), "the post went on after abort()"
        assert answers[0].status == 0 and len(connections) == 1
        assert sender.post("logs", b"{}").status == 0 and len(connections) == 1
    finally:
        stopping.set()
        listener.close()
        for conn in connections:
            conn.close()
        poster.join(35)
        server.join(5)


@pytest.mark.parametrize("stage", ["connect", "handshake"])
def test_a_post_still_setting_up_its_connection_is_abandoned_at_once(stage: str) -> None:
    """abort() found no socket to shut down while the connection was being set up (a
    host that drops packets; a TLS endpoint that never answers the handshake), so the
    daemon's stop waited out the whole timeout."""
    import socket

    from telemetryd import config
    from telemetryd.daemon.forward import Sender

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    if stage == "connect":  # its accept queue full: the next SYN is dropped
        listener.listen(0)
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            held.append(filler)
        scheme = "http"
    else:  # accepted (by the kernel), never a word of TLS
        listener.listen(8)
        scheme = "https"
    sender = Sender(config.Forward(endpoint=f"{scheme}://127.0.0.1:{port}", timeout=30.0))
    answers: list[Any] = []
    poster = threading.Thread(target=lambda: answers.append(sender.post("logs", b"{}")))
    try:
        poster.start()
        time.sleep(1.0)  # (well into the connect or the handshake)
        assert poster.is_alive()
        started = time.monotonic()
        sender.abort()
        poster.join(5)
        assert not poster.is_alive(), f"the {stage} went on after abort()"
        assert time.monotonic() - started < 2 and answers[0].status == 0
    finally:
        listener.close()
        for filler in held:
            filler.close()
        poster.join(35)


def test_the_daemon_stops_at_once_while_an_endpoint_trickles(daemon_factory: Any) -> None:
    slow = _Trickling(_SLOW)
    try:
        a, _ = _forwarding(daemon_factory, f"http://127.0.0.1:{slow.port}", "t")
        a.start()
        _send(a, _events(0, 3))
        assert slow.asked.wait(30)
        started = time.monotonic()
        assert a.stop(timeout=20) == 0
        assert time.monotonic() - started < 10  # (forward.timeout is 30 s)
    finally:
        slow.close()


@pytest.mark.parametrize(
    ("position", "problem"),
    [
        ({"seq": 999, "offset": 0}, "past the journal's newest"),
        ({"seq": 1, "offset": 99_999_999}, "past the end of"),
        ({"seq": 1, "offset": -5}, "cannot be read"),
        ({"v": 99, "seq": 1, "offset": 0}, "of version 99"),
    ],
)
def test_a_position_past_the_journal_is_set_aside_and_everything_is_sent(
    daemon_factory: Any, home_b: Path, position: dict[str, Any], problem: str
) -> None:
    """A saved position past the journal's end stopped forwarding for good while `status`
    said caught up (and a negative offset restarted the forwarder for ever): it is now
    named in the log, moved aside, and the journal sent from its start."""
    a, b = _started_pair(daemon_factory, home_b)
    _send(a, _events(0, 5))
    _wait("A to forward the first events", lambda: _caught_up(a))
    assert a.stop() == 0
    saved = a.home / "forward" / "position.json"
    written = json.loads(saved.read_text())
    saved.write_text(json.dumps({**written, **position}))
    a.start()
    _send(a, _events(5, 5))
    _wait("A to forward every event", lambda: _caught_up(a) and _status(b)["accepted"] >= 10)
    assert len(_rows(b)) == 10
    assert problem in a.log() and saved.with_name("position.json.bad").exists()


def test_forwarding_to_its_own_listener_is_refused(daemon_factory: Any) -> None:
    """An endpoint that is the daemon's own HTTP listener (by another name) sent its
    journal back into itself: forwarding is off, and `status` says why."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    a, _ = _forwarding(
        daemon_factory, f"http://localhost:{port}/", "t", f'http.address="127.0.0.1:{port}"',
        "http.enabled=true",
    )  # fmt: skip
    a.start()
    _send(a, _events(0, 3))
    _wait("forwarding to give up", lambda: bool(_status(a)["forward"]["last_error"]))
    forward = _status(a)["forward"]
    assert forward["state"] == "off" and forward["failures"] == 0, forward
    assert "own HTTP listener" in forward["last_error"] and forward["sent_events"] == 0
    assert _status(a)["http"].get("requests", 0) == 0  # (nothing was posted to it)
    # status says so plainly (it said "stopped; counting" for ever, "0 failures in a row")
    text = ctl("status", "--socket", a.control_socket).stdout.decode()
    lines = [line for line in text.splitlines() if line.startswith("forward:")]
    assert lines == [
        f"forward: off until a restart: http://localhost:{port}/ is this daemon's own HTTP "
        "listener (its journal would be sent back into itself)"
    ], text
    # Forwarding that is off holds nothing back from retention: an aged segment is
    # compacted as without [forward] (it held every segment for good).
    assert a.proc is not None
    a.notifications.clear()
    a.proc.send_signal(signal.SIGHUP)  # (the next event opens a new segment)
    a.wait_for("READY=1")
    _send(a, _events(3, 1))
    assert ctl("flush", "--socket", a.control_socket).returncode == 0
    first = sorted(a.journal_dir.glob("*.jsonl"))[0]
    aged = time.time() - 40 * 86400
    os.utime(first, (aged, aged))
    plan = json.loads(ctl("gc", "--dry-run", "--json", "--socket", a.control_socket).stdout)
    assert first.name in plan["compacted"] + plan["deleted"], plan


def test_its_own_listener_is_known_by_any_of_its_addresses() -> None:
    """[::ffff:127.0.0.1] is 127.0.0.1, and a listener on every address is reached at
    any of the machine's (both went past the first check)."""
    from telemetryd import config
    from telemetryd.daemon.forward import Forwarder

    def to_itself(endpoint: str, own: tuple[str, int]) -> bool:
        forwarder = Forwarder.__new__(Forwarder)  # (the check alone: no journal needed)
        forwarder.config = config.Forward(endpoint=endpoint)
        forwarder.own_listener = own
        return forwarder._to_itself()

    assert to_itself("http://[::ffff:127.0.0.1]:4999", ("127.0.0.1", 4999))
    assert to_itself("http://localhost:4999", ("0.0.0.0", 4999))
    assert to_itself("http://127.0.0.2:4999", ("0.0.0.0", 4999))  # (loopback: this machine)
    assert not to_itself("http://127.0.0.2:4999", ("127.0.0.1", 4999))  # (another listener)
    assert not to_itself("http://198.51.100.7:4999", ("0.0.0.0", 4999))  # (TEST-NET-2)
    assert not to_itself("http://127.0.0.1:4998", ("127.0.0.1", 4999))


def test_a_receivers_export_has_each_forwarded_event_once_after_a_resend(
    daemon_factory: Any, home_b: Path, tmp_path: Path
) -> None:
    """A forgets its position and forwards its whole journal again, past B's dedup
    window: B's store keeps each event once, and so does B's incremental Parquet export
    (the resent copies carry the received_at of the first, so before they matched the
    stored rows and the next run exported every event a second time)."""
    import duckdb

    # (a dedup window of one id: B journals each resent event again)
    b = daemon_factory(["--set", "ingest.dedup-window=1"], home=home_b).start()
    token = (home_b / "http-token").read_text().strip()
    a = _forwarding(daemon_factory, f"http://{b.http_address()}", token)[0].start()
    _send(a, _events(0, 1500))
    _wait("A to catch up", lambda: _caught_up(a))
    out = tmp_path / "parquet"
    socket = str(home_b / "run" / "control.sock")

    def export() -> dict[str, Any]:
        result = ctl("export", "parquet", str(out), "--json", "--socket", socket, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
        reply: dict[str, Any] = json.loads(result.stdout)
        return reply

    assert export()["events"] == 1500
    assert a.stop() == 0
    (a.home / "forward" / "position.json").unlink()
    a.start()
    _send(a, _events(1500, 10))
    _wait("A to catch up", lambda: _caught_up(a))
    assert len(_journal_lines(b)) == 1500 * 2 + 10  # every event journaled again
    assert export()["events"] == 10
    ids = (
        duckdb.connect()
        .execute(
            "SELECT id FROM read_parquet($glob, hive_partitioning = true)",
            {"glob": f"{out}/**/*.parquet"},
        )
        .fetchall()
    )
    assert len(ids) == len(set(ids)) == 1510
