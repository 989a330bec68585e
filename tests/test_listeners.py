"""The listeners in-process: real Unix sockets in the test's state directory, a real
journal writer, no daemon subprocess.

- sockets.py: binding (modes, stale and live sockets), the instance lock, peer uids;
- events.py: acknowledgements, rejections, limits, idle timeout, stopping;
- control.py: the connection limits (idle eviction, status-only slots), timeouts,
  stopping;
- dispatch.py: whole reply lines; the table, bad requests, and the error codes;
- operations.py: each handler failing for real gets its own code; typed replies keep
  the keys the replies had before they were typed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, get_args

import anyio
import msgspec
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from conftest import summary
from telemetryd import config, paths, wire
from telemetryd.daemon.ingest import Ingestor
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners import control, dispatch, sockets
from telemetryd.daemon.listeners.control import ControlListener
from telemetryd.daemon.listeners.dispatch import Dispatch, Operation, Replies, ReplyLost
from telemetryd.daemon.listeners.events import EventsListener
from telemetryd.daemon.listeners.operations import Operations
from telemetryd.daemon.listeners.sockets import Peers, acquire_lock, bind_unix
from telemetryd.daemon.store_worker import StoreClient, StoreUnavailable, StoreWorker
from telemetryd.daemon.tail import Tails
from telemetryd.errors import AlreadyRunning, JournalError, PathError, TelemetryError
from telemetryd.store.queries import Queries

TIMEOUT = 20.0  # no test here should come near it

# The reply shapes as the daemon sent them before replies were typed (keys in order).
STATUS_KEYS = [
    "ok",
    "version",
    "pid",
    "uptime_s",
    "connections",
    "control_connections",
    "queries",
    "tail_clients",
    "accepted",
    "rejected",
    "duplicates",
    "events_per_s",
    "journal",
    "store",
    "retention",
    "paths",
    "ingest_workers",
    "http",
    "analyzer",
    "forward",
    "export",
    "config",
]
JOURNAL_KEYS = [
    "segments",
    "bytes",
    "current_segment",
    "events_written",
    "events_failed",
    "queued_bytes",
    "durability",
    "write_error",
    "ignored_files",
]
QUERIES_KEYS = ["slots", "running", "waiting"]
PATHS_KEYS = [
    "events_socket",
    "control_socket",
    "journal_dir",
    "spool_dir",
    "quarantine_dir",
    "database",
    "config_file",
    "lock_file",
    "runtime_dir",
    "state_dir",
    "http_token_file",
]
STORE_KEYS = [
    "path",
    "schema_version",
    "needs_rebuild",
    "events",
    "segments",
    "segments_complete",
    "last_materialized",
    "last_loaded",
    "database_bytes",
    "batch_bytes",
    "salvaged",
    "bad_lines",  # lines loads left out (not JSON), per segment
    "open",
    "pending_bytes",
    "error",
    "worker",  # the daemon's view of the store worker (daemon/store_worker.py) and of its figures
    "as_of",
    "pending_events",
    "yielding_since",  # a timed load waiting while ingest is busy (store.yield-max)
    "yields",
]
GC_KEYS = [
    "ok",
    "dry_run",
    "deleted",
    "compacted",
    "compressed",
    "events_deleted",
    "usage_deleted",
    "warning",
    "bytes_before",
    "bytes_after",
    "at",
    "failed",
]


def event(name: str) -> bytes:
    return json.dumps({"type": "custom", "name": name}).encode() + b"\n"


class Client:
    """A client on a real connection: request lines out, reply lines in."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.buffered = BufferedByteReceiveStream(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def ask(self, message: dict[str, Any] | bytes) -> dict[str, Any]:
        line = message if isinstance(message, bytes) else json.dumps(message).encode()
        await self.send(line + b"\n")
        return await self.reply()

    async def reply(self) -> dict[str, Any]:
        line = await self.buffered.receive_until(b"\n", wire.MAX_REPLY_LINE)
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply

    async def rest(self) -> list[dict[str, Any]]:
        """Every reply line until the other end closes."""
        out = []
        while True:
            try:
                out.append(await self.reply())
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                return out  # (broken: closed with our input unread, a reset after the lines)

    async def aclose(self) -> None:
        await self.stream.aclose()


class Daemon:
    """The parts a listener needs, on real files and sockets under the state home."""

    def __init__(self, settings: config.Config) -> None:
        self.paths = paths.resolve()
        self.config = settings
        self.ingestor = Ingestor(settings.ingest)
        os.makedirs(self.paths.state_dir, exist_ok=True)
        self.journal = Journal(
            self.paths.journal_dir,
            self.paths.quarantine_dir,
            settings.journal,
            max_pending_bytes=settings.ingest.max_pending_bytes,
        )
        self.journal.open(self.ingestor.dedup)
        self.tails = Tails(self.journal)
        self.events: EventsListener | None = None
        self.control: ControlListener | None = None
        self.operations: Operations | None = None
        self.clients: list[Client] = []  # closed when the block of `running` ends

    def counts(self) -> tuple[int, int]:
        return (
            self.events.connections if self.events else 0,
            self.control.connections if self.control else 0,
        )

    def make_operations(self, store: StoreClient | None = None) -> Operations:
        self.operations = Operations(
            self.paths,
            self.config,
            self.ingestor,
            self.journal,
            self.tails,
            self.counts,
            store,
        )
        return self.operations

    async def connect(self, path: str) -> Client:
        client = Client(await anyio.connect_unix(path))
        self.clients.append(client)
        return client

    async def journal_one(self, name: str) -> None:
        """Send one event and wait for its acknowledgement."""
        client = await self.connect(self.paths.events_socket)
        await client.send(event(name))
        await client.stream.send_eof()
        assert await client.rest() == [summary(1, 1)]


@asynccontextmanager
async def running(
    settings: config.Config | None = None,
    *,
    peers: Peers | None = None,
    store: bool = False,
) -> AsyncIterator[Daemon]:
    """The journal writer, both listeners and (optionally) the store, a real store worker
    process, running until the block ends; then stopped as the daemon stops them."""
    daemon = Daemon(settings or config.Config())
    peers = peers or Peers()
    worker = None
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.journal.run)
            client = None
            if store:
                worker = StoreWorker(daemon.paths, daemon.config)
                await tg.start(worker.run)
                client = StoreClient(worker, daemon.journal, daemon.config)
            operations = daemon.make_operations(client)
            daemon.events = EventsListener(
                bind_unix(daemon.paths.events_socket),
                daemon.config.ingest,
                daemon.ingestor,
                daemon.journal,
                peers,
            )
            daemon.control = ControlListener(
                bind_unix(daemon.paths.control_socket),
                daemon.config.ingest,
                peers,
                operations.dispatch(),
            )
            async with anyio.create_task_group() as listening:
                await listening.start(daemon.events.serve)
                await listening.start(daemon.control.serve)
                try:
                    yield daemon
                finally:
                    daemon.events.stop()
                    daemon.control.stop()
                    daemon.tails.stop()
            for connection in daemon.clients:
                await connection.aclose()
            daemon.events.sock.close()
            daemon.journal.close_when_drained()
            if worker is not None:
                await worker.stop()


async def until(condition: Callable[[], bool]) -> None:
    """Let the listeners run until ``condition`` holds (bounded by the test's timeout)."""
    while not condition():
        await anyio.sleep(0.01)


# -- sockets.py ---------------------------------------------------------------------------


def test_bind_makes_a_private_socket_in_a_private_directory(state_home: Path) -> None:
    run = state_home / "run"
    run.mkdir(mode=0o755)
    os.chmod(run, 0o755)
    sock = bind_unix(str(run / "x.sock"))
    try:
        assert stat.S_IMODE(os.stat(run / "x.sock").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(run).st_mode) == 0o700
        assert not sock.getblocking()
    finally:
        sock.close()


def test_bind_replaces_a_stale_socket_and_never_a_live_one(state_home: Path) -> None:
    path = str(state_home / "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays; nothing answers on it
    bind_unix(path).close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        os.unlink(path)
        live.bind(path)
        live.listen()
        inode = os.stat(path).st_ino
        with pytest.raises(AlreadyRunning, match="live process"):
            bind_unix(path)
        assert os.stat(path).st_ino == inode
    (state_home / "f.sock").write_text("not a socket")
    with pytest.raises(PathError, match="not a socket"):
        bind_unix(str(state_home / "f.sock"))


def test_one_lock_holder_per_state_directory(state_home: Path) -> None:
    path = str(state_home / "telemetryd.lock")
    fd = acquire_lock(path)
    try:
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
            acquire_lock(path)
    finally:
        os.close(fd)
    os.close(acquire_lock(path))  # free again


def test_peers_allow_the_daemons_own_uid_by_default() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert sockets.peer_uid(a) == os.getuid()
        assert Peers().refusal(a) is None
        assert Peers([os.getuid()]).refusal(a) is None
        refusal = Peers([os.getuid() + 4242]).refusal(a)
        assert refusal is not None
        assert json.loads(refusal) == {
            "error": wire.FORBIDDEN_PEER,
            "message": f"uid {os.getuid()} may not connect",
        }


# -- events.py ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_events_are_acknowledged_once_journaled() -> None:
    async with running() as daemon:
        client = await daemon.connect(daemon.paths.events_socket)
        await client.send(event("one") + b"not json\n" + event("two") + wire.SYNC_REQUEST)
        rejected = await client.reply()
        assert rejected["line"] == 2 and rejected["error"] == wire.INVALID_JSON
        assert await client.reply() == summary(4, 2, 1)
        await client.send(event("three"))
        await client.stream.send_eof()
        assert await client.rest() == [summary(5, 3, 1)]
    lines = b"".join(p.read_bytes() for p in sorted(Path(daemon.paths.journal_dir).iterdir()))
    assert [json.loads(line)["name"] for line in lines.splitlines()] == ["one", "two", "three"]


@pytest.mark.asyncio
async def test_events_connections_over_the_limit_are_refused() -> None:
    settings = config.Config(ingest=config.Ingest(max_connections=1))
    async with running(settings) as daemon:
        held = await daemon.connect(daemon.paths.events_socket)
        await held.send(wire.SYNC_REQUEST)
        assert await held.reply() == summary(1, 0)  # served: it holds the one slot
        refused = await daemon.connect(daemon.paths.events_socket)
        assert await refused.rest() == [
            {"error": wire.TOO_MANY_CONNECTIONS, "message": "over the limit of 1 connections"}
        ]
        # The control socket has its own budget.
        control_client = await daemon.connect(daemon.paths.control_socket)
        assert (await control_client.ask({"op": "status"}))["connections"] == 1
        await held.aclose()
        await until(lambda: daemon.events is not None and daemon.events.connections == 0)
        again = await daemon.connect(daemon.paths.events_socket)
        await again.send(event("later"))
        await again.stream.send_eof()
        assert await again.rest() == [summary(1, 1)]


@pytest.mark.asyncio
async def test_an_idle_events_connection_is_acknowledged_then_closed() -> None:
    settings = config.Config(ingest=config.Ingest(idle_timeout=0.2))
    async with running(settings) as daemon:
        quiet = await daemon.connect(daemon.paths.events_socket)
        await quiet.send(event("then-quiet"))
        assert await quiet.rest() == [
            summary(1, 1),
            {"error": wire.IDLE_TIMEOUT, "message": "nothing received for 0.2 s"},
        ]


@pytest.mark.asyncio
async def test_stopping_acknowledges_what_each_connection_read() -> None:
    async with running() as daemon:
        client = await daemon.connect(daemon.paths.events_socket)
        await client.send(event("a") + wire.SYNC_REQUEST)
        assert await client.reply() == summary(2, 1)
        assert daemon.events is not None
        daemon.events.stop()
        assert await client.rest() == [
            summary(2, 1),
            {"error": wire.SHUTTING_DOWN, "message": "the daemon is shutting down"},
        ]


@pytest.mark.asyncio
async def test_a_slow_journal_pushes_back_on_producers_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The journal stalls (a slow disk): connections stop reading once its queue is full,
    so the kernel pushes back on the producers and the daemon holds a bounded number of
    bytes (the queue, and per connection one chunk's events waiting for room and one
    chunk with an ingest worker); once the journal moves, everything is acknowledged."""
    release = threading.Event()
    real_write = Journal._write

    def slow_write(self: Journal, data: bytes) -> None:
        release.wait(TIMEOUT)
        real_write(self, data)

    monkeypatch.setattr(Journal, "_write", slow_write)
    settings = config.Config(
        ingest=config.Ingest(max_pending_bytes=64 * 1024),
        journal=config.Journal(durability="always"),  # (every write on the writer's thread)
    )
    producers, events = 3, 20_000
    line = json.dumps({"type": "custom", "name": "n", "attrs": {"pad": "x" * 200}}).encode()
    data = (line + b"\n") * events
    sent = [0] * producers

    def produce(n: int) -> list[dict[str, Any]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(paths.resolve().events_socket)
            for start in range(0, len(data), 65536):
                sent[n] += sock.send(data[start : start + 65536])
            sock.sendall(data[sent[n] :])
            sent[n] = len(data)
            sock.shutdown(socket.SHUT_WR)
            replies = b""
            while chunk := sock.recv(65536):
                replies += chunk
        return [json.loads(reply) for reply in replies.splitlines()]

    async with running(settings) as daemon:
        results: list[list[dict[str, Any]]] = [[] for _ in range(producers)]

        async def run(n: int) -> None:
            results[n] = await anyio.to_thread.run_sync(produce, n)

        async with anyio.create_task_group() as tg:
            for n in range(producers):
                tg.start_soon(run, n)
            await anyio.sleep(1.0)  # the journal is stuck: everyone fills up and stops
            assert daemon.events is not None
            read_size = settings.ingest.read_size
            held = sum(
                len(conn.held.data if conn.held is not None else b"")
                + len(conn.out.region if conn.out is not None else b"")
                for conn in daemon.events.open
            )
            assert daemon.journal._pending_bytes <= settings.ingest.max_pending_bytes + read_size
            # A batch of events waiting for room, and a chunk read after it (a chunk's
            # events are a bit bigger than its lines).
            assert held <= producers * 3 * read_size
            assert all(n < len(data) for n in sent)  # pushed back: still sending
            release.set()
        assert results == [[summary(events, events)]] * producers
    assert daemon.journal.events_written == producers * events


@pytest.mark.asyncio
async def test_peers_of_other_uids_are_refused_on_both_sockets() -> None:
    async with running(peers=Peers([os.getuid() + 4242])) as daemon:
        forbidden = {"error": wire.FORBIDDEN_PEER, "message": f"uid {os.getuid()} may not connect"}
        for path in (daemon.paths.events_socket, daemon.paths.control_socket):
            client = await daemon.connect(path)
            await client.send(event("intruder"))
            assert await client.rest() == [forbidden]
        assert daemon.journal.events_written == 0


# -- control.py: connections --------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_idle_control_client_makes_room_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(control, "MAX_CONTROL", 2)
    async with running() as daemon:
        first = await daemon.connect(daemon.paths.control_socket)
        second = await daemon.connect(daemon.paths.control_socket)
        for client in (first, second):  # answered, and now waiting for the next request
            assert (await client.ask({"op": "status"}))["ok"]
        third = await daemon.connect(daemon.paths.control_socket)
        assert (await third.ask({"op": "status"}))["ok"]
        [closed] = await first.rest()  # the one idle the longest
        assert closed["error"] == wire.TOO_MANY_CONNECTIONS
        assert "closed while idle: all 2 control connections were in use" in closed["message"]
        assert (await second.ask({"op": "status"}))["ok"]


@pytest.mark.asyncio
async def test_status_answers_past_the_limit_and_others_hear_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(control, "MAX_CONTROL", 2)
    monkeypatch.setattr(control, "STATUS_RESERVE", 1)
    async with running() as daemon:
        listener = daemon.control
        assert listener is not None
        tails = [await daemon.connect(daemon.paths.control_socket) for _ in range(2)]
        for tail in tails:  # two following tails: neither is idle
            await tail.send(b'{"op":"tail"}\n')
        await until(lambda: daemon.tails.following == 2)
        reserve = await daemon.connect(daemon.paths.control_socket)  # the status-only slot
        await until(lambda: listener._status_only == 1)
        refused = await daemon.connect(daemon.paths.control_socket)
        [line] = await refused.rest()
        assert line == {
            "error": wire.TOO_MANY_CONNECTIONS,
            "message": "over the limit of 2 control connections, all busy",
        }
        status = await reserve.ask({"op": "status"})
        assert status["ok"] and status["control_connections"] == 2
        assert await reserve.rest() == [
            {
                "error": wire.TOO_MANY_CONNECTIONS,
                "message": "over the limit of 2 control connections, all busy: "
                "only this status request was answered",
            }
        ]
        other = await daemon.connect(daemon.paths.control_socket)
        assert await other.ask({"op": "flush"}) == {
            "error": wire.TOO_MANY_CONNECTIONS,
            "message": "over the limit of 2 control connections, all busy",
        }


@pytest.mark.asyncio
async def test_control_timeouts_limits_and_stopping() -> None:
    settings = config.Config(ingest=config.Ingest(idle_timeout=0.2))
    async with running(settings) as daemon:
        idle = await daemon.connect(daemon.paths.control_socket)
        assert await idle.rest() == [
            {"error": wire.IDLE_TIMEOUT, "message": "nothing received for 0.2 s"}
        ]
        long = await daemon.connect(daemon.paths.control_socket)
        await long.send(b"[" * (wire.MAX_REQUEST_BYTES + 10) + b"\n")
        assert await long.rest() == [
            {"error": wire.BAD_REQUEST, "message": "request over 65536 bytes"}
        ]
        settings.ingest.idle_timeout = 60.0  # a reload: for new connections
        waiting = await daemon.connect(daemon.paths.control_socket)
        assert (await waiting.ask({"op": "status"}))["ok"]
        assert daemon.control is not None
        daemon.control.stop()
        assert await waiting.rest() == [
            {"error": wire.SHUTTING_DOWN, "message": "the daemon is shutting down"}
        ]


# -- dispatch.py and operations.py: whole lines, the table ---------------------------------


@pytest.mark.asyncio
async def test_a_reply_line_goes_out_whole_or_the_connection_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "SEND_TIMEOUT", 0.2)
    monkeypatch.setattr(dispatch, "MIN_REPLY_RATE", 1 << 40)  # no time for the length
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stream = await anyio.abc.UNIXSocketStream.from_socket(ours)
        async with stream:
            replies = Replies(stream)
            with anyio.fail_after(TIMEOUT):
                await replies.send(b'{"ok":true}\n')
                with pytest.raises(ReplyLost, match="did not read its reply in time"):
                    await replies.send(b"x" * (2 << 20) + b"\n")  # never read
                with pytest.raises(ReplyLost, match="earlier reply line was cut short"):
                    await replies.send(b'{"ok":true}\n')
                await replies.close_with(wire.BAD_REQUEST, "nothing is sent after a cut line")


def test_every_request_type_has_an_operation() -> None:
    daemon = Daemon(config.Config())
    table = daemon.make_operations().dispatch().operations
    assert set(table) == set(get_args(wire.ControlRequest))
    codes = {kind.__name__: operation.failed for kind, operation in table.items()}
    assert codes == {
        "StatusRequest": wire.STATUS_FAILED,
        "FlushRequest": wire.FLUSH_FAILED,
        "RebuildRequest": wire.REBUILD_FAILED,
        "GcRequest": wire.GC_FAILED,
        "QueryRequest": wire.QUERY_FAILED,
        "TailRequest": wire.TAIL_FAILED,
        "TotalsRequest": wire.TOTALS_FAILED,
        "RepriceRequest": wire.REPRICE_FAILED,
        "ExportRequest": wire.EXPORT_FAILED,
    }


@pytest.mark.asyncio
async def test_unknown_and_malformed_requests_get_bad_request() -> None:
    async with running() as daemon:
        client = await daemon.connect(daemon.paths.control_socket)
        for line, message in [
            (b"", "empty request line"),
            (b"nonsense", "JSON is malformed"),
            (b'{"op":"nope"}', "Invalid value 'nope' - at `$.op`"),
            (b'{"op":"status","x":1}', "Object contains unknown field `x`"),
            (b'{"op":"gc","dry_run":"yes"}', "at `$.dry_run`"),
            (b"[" * 30_000, "Expected `object`, got `array`"),
        ]:
            reply = await client.ask(line)
            assert reply["error"] == wire.BAD_REQUEST and message in reply["message"], line
        assert (await client.ask({"op": "status"}))["ok"]  # the connection goes on


async def _dispatch_one(table: Dispatch, request: wire.Request) -> list[dict[str, Any]]:
    """Run ``request`` through ``table`` on a real socket pair; its reply lines."""
    ours, theirs = socket.socketpair()
    with theirs:
        async with await anyio.abc.UNIXSocketStream.from_socket(ours) as stream:
            await table.run(request, Replies(stream))
        theirs.settimeout(TIMEOUT)
        data = b""
        while chunk := theirs.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


@pytest.mark.asyncio
async def test_parts_that_are_down_have_their_own_codes_whatever_the_operation() -> None:
    async def journal_down(request: Any, replies: Replies) -> None:
        raise JournalError("disk full")

    async def store_down(request: Any, replies: Replies) -> None:
        raise StoreUnavailable(wire.STORE_UNAVAILABLE, "the database is not open yet (opening)")

    async def in_a_group(request: Any, replies: Replies) -> None:
        async with anyio.create_task_group():
            raise ValueError("inside a task group")

    for handler, code, message in [
        (journal_down, wire.JOURNAL_UNAVAILABLE, "disk full"),
        (store_down, wire.STORE_UNAVAILABLE, "the database is not open yet (opening)"),
        (in_a_group, wire.FLUSH_FAILED, "ValueError: inside a task group"),
    ]:
        table = Dispatch(
            {wire.FlushRequest: Operation(handler, wire.FLUSH_FAILED)},
            {StoreUnavailable: wire.STORE_UNAVAILABLE},
        )
        assert await _dispatch_one(table, wire.FlushRequest()) == [
            {"error": code, "message": message}
        ]
    unserved = await _dispatch_one(table, wire.StatusRequest())
    assert unserved[0]["error"] == wire.BAD_REQUEST


@pytest.mark.asyncio
async def test_each_operation_that_fails_says_which() -> None:
    async with running(store=True) as daemon:
        client = await daemon.connect(daemon.paths.control_socket)
        await daemon.journal_one("e")
        assert (await client.ask({"op": "flush"})) == {"ok": True, "materialized": 1}
        # tail: the segment to read the backlog from is not a file any more.
        segment = daemon.journal.segment
        os.rename(segment, segment + ".moved")
        os.mkdir(segment)
        reply = await client.ask({"op": "tail", "backlog": 1, "follow": False})
        assert reply["error"] == wire.TAIL_FAILED and "IsADirectoryError" in reply["message"]
        os.rmdir(segment)
        os.rename(segment + ".moved", segment)
        # The store worker's batch directory is a file: every load fails there.
        load = Path(daemon.paths.state_dir) / "load"
        shutil.rmtree(load)
        load.write_bytes(b"")
        await daemon.journal_one("f")
        for request, code in [
            ({"op": "flush"}, wire.FLUSH_FAILED),
            ({"op": "rebuild"}, wire.REBUILD_FAILED),
        ]:
            reply = await client.ask(request)
            assert reply["error"] == code, (request, reply)
            assert "load" in reply["message"], reply
        load.unlink()
        await client.aclose()


@pytest.mark.asyncio
async def test_a_daemon_without_a_database_says_store_unavailable() -> None:
    async with running() as daemon:
        client = await daemon.connect(daemon.paths.control_socket)
        for request in ({"op": "rebuild"}, {"op": "gc"}, {"op": "query", "sql": "select 1"}):
            assert await client.ask(request) == {
                "error": wire.STORE_UNAVAILABLE,
                "message": "this daemon has no database",
            }
        assert await client.ask({"op": "flush"}) == {"ok": True}
        status = await client.ask({"op": "status"})
        assert status["store"] is None and status["retention"] is None


# -- operations.py: typed replies ---------------------------------------------------------


@pytest.mark.asyncio
async def test_typed_replies_keep_the_keys_of_the_replies_before_them() -> None:
    async with running(store=True) as daemon:
        client = await daemon.connect(daemon.paths.control_socket)
        assert await client.ask({"op": "flush"}) == {"ok": True, "materialized": 0}
        status = await client.ask({"op": "status"})  # the store worker runs: its figures
        assert list(status) == STATUS_KEYS
        assert list(status["journal"]) == JOURNAL_KEYS
        assert list(status["queries"]) == QUERIES_KEYS
        assert list(status["paths"]) == PATHS_KEYS
        assert list(status["store"]) == STORE_KEYS
        assert status["retention"] is None
        await daemon.journal_one("e")
        assert await client.ask({"op": "flush"}) == {"ok": True, "materialized": 1}
        dry = await client.ask({"op": "gc", "dry_run": True})
        assert list(dry) == GC_KEYS
        assert dry["dry_run"] is True and dry["events_deleted"] is None
        assert dry["bytes_after"] is None
        gc = await client.ask({"op": "gc"})
        assert list(gc) == GC_KEYS and gc["events_deleted"] == 0
        assert await client.ask({"op": "rebuild"}) == {
            "ok": True, "events": 1, "events_before": 1, "salvaged": [], "bad_lines": [],
        }  # fmt: skip
        status = await client.ask({"op": "status"})
        assert status["retention"] == {key: gc[key] for key in GC_KEYS[1:]}
        assert status["accepted"] == 1 and status["store"]["events"] == 1
        await client.aclose()


def test_typed_replies_round_trip_and_follow_their_producers(state_home: Path) -> None:
    daemon = Daemon(config.Config())
    stats = daemon.journal.stats()
    # Each typed part has exactly the keys its producer makes, in its order.
    assert list(stats) == JOURNAL_KEYS == list(wire.JournalStatus.__struct_fields__)
    assert list(daemon.paths.as_dict()) == PATHS_KEYS == list(wire.PathsStatus.__struct_fields__)
    assert list(Queries().stats()) == QUERIES_KEYS == list(wire.QueryStats.__struct_fields__)
    assert list(wire.StatusReply.__struct_fields__) == STATUS_KEYS
    assert list(wire.GcReply.__struct_fields__) == GC_KEYS
    replies: list[wire.Reply] = [
        wire.StatusReply(
            version="0.1.0",
            pid=1,
            uptime_s=0.5,
            connections=0,
            control_connections=1,
            queries=msgspec.convert(Queries().stats(), wire.QueryStats),
            tail_clients=0,
            accepted=1,
            rejected=0,
            duplicates=0,
            events_per_s=0.0,
            journal=msgspec.convert(stats, wire.JournalStatus),
            store={"open": False, "error": None},
            retention=None,
            paths=msgspec.convert(daemon.paths.as_dict(), wire.PathsStatus),
        ),
        wire.FlushReply(materialized=3),
        wire.FlushReply(),
        wire.RebuildReply(events=7),
        wire.GcReply(
            dry_run=True,
            deleted=[],
            compressed=["x.jsonl"],
            events_deleted=None,
            bytes_before=10,
            bytes_after=None,
            at="2026-12-04T19:41:11Z",
        ),
    ]
    for reply in replies:
        line = wire.encode_line(reply)
        assert line.endswith(b"}\n") and line.count(b"\n") == 1
        assert msgspec.json.decode(line, type=type(reply)) == reply
    assert wire.encode_line(wire.FlushReply()) == b'{"ok":true}\n'
    assert wire.encode_line(wire.RebuildReply(events=7)) == (
        b'{"ok":true,"events":7,"events_before":null,"salvaged":[],"bad_lines":[]}\n'
    )
    status = json.loads(wire.encode_line(replies[0]))
    assert status["store"] == {"open": False, "error": None}


def test_operations_raise_telemetry_errors_with_plain_messages() -> None:
    daemon = Daemon(config.Config())
    table = daemon.make_operations().dispatch()
    operation = table.operations[wire.GcRequest]
    assert table.failure(operation, TelemetryError("this daemon runs no retention")) == (
        wire.GC_FAILED,
        "this daemon runs no retention",
    )
    assert table.failure(operation, OSError(5, "Input/output error")) == (
        wire.GC_FAILED,
        "OSError: [Errno 5] Input/output error",
    )


def test_the_protocol_document_shows_the_replies_as_typed() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    shapes: dict[str, type[wire.Reply]] = {
        '{"ok":true,"version"': wire.StatusReply,
        '{"ok":true,"materialized"': wire.FlushReply,
        '{"ok":true,"dry_run"': wire.GcReply,
    }
    shown = set()
    for line in text.splitlines():
        for start, kind in shapes.items():
            if line.startswith(start):
                msgspec.json.decode(line, type=kind)
                assert list(json.loads(line)) == list(kind.__struct_fields__), line[:60]
                shown.add(kind)
    assert shown == set(shapes.values())
    for code in [
        wire.STORE_UNAVAILABLE,
        wire.JOURNAL_UNAVAILABLE,
        wire.STATUS_FAILED,
        wire.FLUSH_FAILED,
        wire.REBUILD_FAILED,
        wire.GC_FAILED,
        wire.TAIL_FAILED,
        wire.QUERY_FAILED,
        wire.QUERY_TIMEOUT,
        wire.BAD_REQUEST,
    ]:
        assert f"\n| `{code}` | " in text, code
