"""Listeners and connections: the events socket and the control socket.

Each connection runs in its own task. An events connection reads chunks,
hands them to its :class:`~telemetryd.daemon.ingest.Feed`, answers rejected
lines at once, queues the accepted events in the journal (waiting there when
the queue is full, so the kernel pushes back on the client) and, on a sync
request or the client's half-close, answers with a summary once the journal
holds everything it accepted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from telemetryd import __version__, wire
from telemetryd.config import Config
from telemetryd.daemon.ingest import Batch, Feed, Ingestor
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.spool import SpoolIntake
from telemetryd.daemon.tail import Tails
from telemetryd.daemon.worker import StoreClient, WorkerError
from telemetryd.errors import AlreadyRunning, JournalError, PathError, TelemetryError
from telemetryd.paths import Paths, check_socket_path

log = logging.getLogger(__name__)

IDLE_QUERIES = {"slots": 4, "running": 0, "waiting": 0}  # store/queries.py QUERY_SLOTS

_SEND_TIMEOUT = 10.0
_MAX_CONTROL = 64  # control connections at once (an idle one is closed to make room)
_STATUS_RESERVE = 8  # connections past that limit that may still ask for `status`
_STATUS_ONLY_WAIT = 2.0  # seconds such a connection gets to send its request
_REPLY_CHUNK = 256 * 1024  # control replies are handed to the socket this much at a time
_MIN_REPLY_RATE = 1024 * 1024  # bytes/s a control client must read a long reply line at
_LINGER_SECONDS = 1.0  # a refused client gets this long to stop sending
_LINGER_READS = 16


# -- sockets and the instance lock ------------------------------------------


def acquire_lock(path: str) -> int:
    """Hold an exclusive lock on ``path`` for the life of the process (one daemon per state dir)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"another telemetryd (pid {holder}) holds {path}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _private_dir(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.stat(directory)
    if info.st_uid != os.getuid():
        raise PathError(f"{directory} belongs to uid {info.st_uid}, not to this user")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)


def bind_unix(path: str, backlog: int = 1024) -> socket.socket:
    """Bind a listening socket at ``path`` (0600, in a 0700 directory).

    A socket file that still answers belongs to a live daemon and is never
    taken over; one that refuses connections is stale and replaced.
    """
    check_socket_path(path)
    _private_dir(os.path.dirname(path))
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise PathError(f"{path} exists and is not a socket; not touching it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("replacing stale socket %s", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        except OSError as exc:
            raise AlreadyRunning(f"{path} exists and cannot be probed: {exc}") from None
        else:
            raise AlreadyRunning(f"a live process is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (SO_PEERCRED, or LOCAL_PEERCRED on macOS/BSD)."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[1])
    if sys.platform == "darwin" or "bsd" in sys.platform:
        # getpeereid() reads struct xucred {u_int cr_version; uid_t cr_uid; ...}
        # via getsockopt(SOL_LOCAL=0, LOCAL_PEERCRED=1).
        xucred = sock.getsockopt(0, getattr(socket, "LOCAL_PEERCRED", 1), 76)
        return int(struct.unpack_from("2I", xucred)[1])
    return None


# -- the server -------------------------------------------------------------


class Server:
    def __init__(
        self,
        paths: Paths,
        config: Config,
        ingestor: Ingestor,
        journal: Journal,
        store: StoreClient | None = None,
    ) -> None:
        self.paths = paths
        self.store = store
        self.rate = Rate()
        self.config = config
        self.ingestor = ingestor
        self.journal = journal
        self.started = time.time()
        self.connections = 0  # events connections
        self.control_connections = 0
        self._idle: dict[anyio.CancelScope, None] = {}  # control connections between requests
        self._status_only = 0  # connections past the control limit, allowed one `status`
        self.stopping = False
        self._reading: set[anyio.CancelScope] = set()
        self.tails = Tails(journal)
        self.spool = SpoolIntake(paths, config, ingestor, journal, self.settle)
        uids = config.ingest.allowed_uids
        self._allowed = frozenset(uids) if uids else frozenset({os.getuid()})

    def stop(self) -> None:
        """Stop reading: each connection acknowledges what it has and closes."""
        self.stopping = True
        for scope in self._reading:
            scope.cancel()
        for scope in self._idle:  # control clients between requests: told, and closed
            scope.cancel()
        self.tails.stop()

    async def accept_events(self, listener: socket.socket, connections: TaskGroup) -> None:
        """Accept producers on the raw listening socket, as many per wake-up as are waiting."""
        while True:
            await anyio.wait_readable(listener)
            while True:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:  # out of file descriptors, say: keep serving the others
                    log.error("cannot accept a connection: %s", exc)
                    await anyio.sleep(0.1)
                    break
                sock.setblocking(False)
                connections.start_soon(self._events_guard, _Conn(sock))

    async def _events_guard(self, conn: _Conn) -> None:
        with conn.sock:
            refusal = self._refusal(conn.sock, self.connections, self.config.ingest.max_connections)
            if refusal is not None:
                await conn.refuse(refusal)
                return
            self.connections += 1
            try:
                await self.events_connection(conn)
            except JournalError as exc:
                await conn.send(_closing(wire.JOURNAL_UNAVAILABLE, str(exc)))
            except Exception:
                # A bug must cost one connection (which got no ack), never the daemon.
                log.exception("events connection failed; closing it")
            finally:
                self.connections -= 1

    def _forbidden(self, sock: socket.socket) -> bytes | None:
        uid = peer_uid(sock)
        if uid is not None and uid not in self._allowed:
            log.warning("refused a connection from uid %s", uid)
            return _closing(wire.FORBIDDEN_PEER, f"uid {uid} may not connect")
        return None

    def _refusal(self, sock: socket.socket, count: int, limit: int) -> bytes | None:
        forbidden = self._forbidden(sock)
        if forbidden is not None:
            return forbidden
        if count >= limit:
            return _closing(wire.TOO_MANY_CONNECTIONS, f"over the limit of {limit} connections")
        return None

    async def accept_control(self, sock: socket.socket, connections: TaskGroup) -> None:
        listener = await anyio.abc.SocketListener.from_socket(sock)
        async with listener:
            while True:
                stream = await listener.accept()
                connections.start_soon(self._control_guard, stream)

    async def _control_guard(self, stream: SocketStream) -> None:
        async with stream:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            refusal = self._forbidden(raw)
            # Control clients have their own budget, so they can never lock out producers.
            # Full: make room by closing the connection idle the longest; if none is
            # idle, a few more clients may still ask for `status` (never "down" while
            # the daemon is up), and the rest are told it is busy.
            full = self.control_connections >= _MAX_CONTROL
            if refusal is None and full and not self._evict_idle():
                if self._status_only < _STATUS_RESERVE:
                    await self._status_only_connection(stream)
                    return
                message = f"over the limit of {_MAX_CONTROL} control connections, all busy"
                refusal = _closing(wire.TOO_MANY_CONNECTIONS, message)
            if refusal is not None:
                await _Conn(raw).refuse(refusal)
                return
            self.control_connections += 1
            try:
                await self.control_connection(stream)
            except ReplyLost:
                pass  # the client stopped reading, or went away: nothing more can be said
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            except Exception:
                log.exception("control connection failed; closing it")
            finally:
                self.control_connections -= 1

    def _evict_idle(self) -> bool:
        """Close the control connection idle the longest; False if none is idle."""
        for scope in self._idle:  # oldest first
            del self._idle[scope]
            scope.cancel()
            return True
        return False

    async def _status_only_connection(self, stream: SocketStream) -> None:
        """Past the limit: answer one `status` request, refuse anything else, close."""
        self._status_only += 1
        replies = Replies(stream)
        busy = f"over the limit of {_MAX_CONTROL} control connections, all busy"
        try:
            line = b""
            with anyio.move_on_after(_STATUS_ONLY_WAIT):
                line = await BufferedByteReceiveStream(stream).receive_until(
                    b"\n", wire.MAX_REQUEST_BYTES
                )
            if isinstance(decode_request(line), wire.StatusRequest):
                await replies.send(wire.ENCODER.encode(await self.status()) + b"\n")
                busy += ": only this status request was answered"
            await replies.close_with(wire.TOO_MANY_CONNECTIONS, busy)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound):
            await replies.close_with(wire.TOO_MANY_CONNECTIONS, busy)
        except (ReplyLost, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        except Exception as exc:  # status could not be gathered (reported in the log)
            log.warning("status for a connection past the limit failed: %s", innermost(exc))
            await replies.close_with(wire.TOO_MANY_CONNECTIONS, busy)
        finally:
            self._status_only -= 1

    # -- events ---------------------------------------------------------------

    async def events_connection(self, conn: _Conn) -> None:
        feed = Feed(self.ingestor)
        idle = self.config.ingest.idle_timeout
        size = self.config.ingest.read_size
        while not self.stopping:
            chunk = conn.recv_now(size)
            if chunk is None:  # nothing buffered: wait, within the idle timeout
                with anyio.move_on_after(idle) as scope:
                    self._reading.add(scope)
                    try:
                        await anyio.wait_readable(conn.sock)
                    finally:
                        self._reading.discard(scope)
                if scope.cancelled_caught:
                    if self.stopping:
                        break
                    if feed.lines:
                        await self.settle(feed)
                        await conn.send(feed.summary())
                    await conn.send(_closing(wire.IDLE_TIMEOUT, f"nothing received for {idle:g} s"))
                    return
                continue
            if not chunk:  # the client half-closed: the rest is its last line, if any
                await self._deliver(conn, *feed.end())
                break
            await self._deliver(conn, *feed.feed(chunk))
            while feed.sync_requested:
                await self.settle(feed)
                await conn.send(feed.summary())
                await self._deliver(conn, *feed.resume())
            if len(chunk) == size:  # more may be waiting: let the other connections run first
                await anyio.lowlevel.checkpoint()
        await self.settle(feed)
        await conn.send(feed.summary())
        if self.stopping:
            # `lines` in the summary says how far the daemon read; the rest was not taken.
            await conn.send(_closing(wire.SHUTTING_DOWN, "the daemon is shutting down"))

    async def _deliver(self, conn: _Conn, batch: Batch | None, rejections: list[bytes]) -> None:
        if batch is not None:
            await self.journal.submit(batch)
        if rejections:
            await conn.send(b"".join(rejections))

    async def settle(self, feed: Feed) -> None:
        """Wait until everything ``feed`` accepted (or was told is a duplicate) is journaled."""
        if feed.last is not None:
            await self.journal.wait(feed.last)
        for batch in feed.waiting.values():
            await self.journal.wait(batch)
        feed.waiting.clear()

    # -- control --------------------------------------------------------------

    async def control_connection(self, stream: SocketStream) -> None:
        """Answer requests until the client closes, idles out, is evicted or stops reading."""
        buffered = BufferedByteReceiveStream(stream)
        replies = Replies(stream)
        idle = self.config.ingest.idle_timeout
        while not self.stopping:
            line = b""
            problem: tuple[str, str] | None = None
            with anyio.CancelScope() as waiting:  # cancelled: evicted, or the daemon stops
                self._idle[waiting] = None
                try:
                    with anyio.fail_after(idle):
                        line = await buffered.receive_until(b"\n", wire.MAX_REQUEST_BYTES)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return
                except TimeoutError:
                    problem = (wire.IDLE_TIMEOUT, f"nothing received for {idle:g} s")
                except anyio.DelimiterNotFound:
                    problem = (wire.BAD_REQUEST, f"request over {wire.MAX_REQUEST_BYTES} bytes")
                finally:
                    self._idle.pop(waiting, None)
            if waiting.cancelled_caught and self.stopping:
                problem = (wire.SHUTTING_DOWN, "the daemon is shutting down")
            elif waiting.cancelled_caught:
                problem = (
                    wire.TOO_MANY_CONNECTIONS,
                    f"closed while idle: all {_MAX_CONTROL} control connections were in use "
                    "and another client needed one",
                )
            if problem is not None:
                await replies.close_with(*problem)
                return
            await self.control_request(line, replies)
        await replies.close_with(wire.SHUTTING_DOWN, "the daemon is shutting down")

    async def control_request(self, line: bytes, replies: Replies) -> None:
        """Answer one request line: every line gets a reply (or the connection is lost)."""
        request = decode_request(line)
        if isinstance(request, str):
            await replies.send(_closing(wire.BAD_REQUEST, request))
            return
        handler = self._handlers[type(request)]
        try:
            reply = await handler(request, replies)
        except ReplyLost:
            raise
        except Exception as exc:  # the store failed, say; the daemon keeps serving
            error = innermost(exc)
            if isinstance(error, TelemetryError):
                message = str(error)
            else:
                message = f"{type(error).__name__}: {error}"
            log.warning("%s request failed: %s", type(request).__name__, message)
            code = error.code if isinstance(error, WorkerError) else wire.QUERY_FAILED
            reply = {"error": code, "message": message}
        if reply is not None:
            await replies.send(wire.ENCODER.encode(reply) + b"\n")

    @property
    def _handlers(self) -> dict[type[wire.Request], Handler]:
        return {
            wire.StatusRequest: self._on_status,
            wire.FlushRequest: self._on_flush,
            wire.TailRequest: self._on_tail,
            wire.RebuildRequest: self._on_rebuild,
            wire.GcRequest: self._on_gc,
            wire.QueryRequest: self._on_query,
        }

    async def _on_status(self, request: Any, replies: Replies) -> dict[str, Any]:
        return await self.status()

    async def _on_flush(self, request: Any, replies: Replies) -> dict[str, Any]:
        # Everything accepted so far: fsynced, and in the database.
        await self.journal.flush()
        return {"ok": True, "materialized": await self._store().refresh()}

    async def _on_tail(self, request: Any, replies: Replies) -> None:
        await self.tails.serve(request, replies.stream)

    async def _on_rebuild(self, request: Any, replies: Replies) -> dict[str, Any]:
        return {"ok": True, "events": await self._store().rebuild()}

    async def _on_gc(self, request: Any, replies: Replies) -> dict[str, Any]:
        return {"ok": True, **await self._store().collect(dry_run=request.dry_run)}

    async def _on_query(self, request: Any, replies: Replies) -> None:
        # The store worker loads what was acknowledged before the query first (or ends
        # the answer with a warning saying what is missing, and why).
        await self._store().query(request, replies.send)

    def _store(self) -> StoreClient:
        if self.store is None:
            raise TelemetryError("this daemon has no database")
        return self.store

    async def status(self) -> dict[str, Any]:
        counters = self.ingestor.counters
        store = await self.store.stats() if self.store else None
        return {
            "ok": True,
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "connections": self.connections,
            "control_connections": self.control_connections,
            "tail_clients": self.tails.following,
            "accepted": counters.accepted,
            "rejected": counters.rejected,
            "duplicates": counters.duplicates,
            "events_per_s": self.rate.per_second(counters.accepted),
            # These list and stat files, or ask DuckDB: off the event loop.
            "journal": await anyio.to_thread.run_sync(self.journal.stats),
            "store": store,
            # The query slots are the store worker's (idle ones while it is stopped).
            "queries": (store or {}).pop("queries", None) or {**IDLE_QUERIES},
            "retention": self.store.last if self.store else None,
            "paths": self.paths.as_dict(),
        }

    # -- spool ----------------------------------------------------------------

    async def ingest_spool(self) -> int:
        """Journal the events clients left in the spool (daemon/spool.py)."""
        return await self.spool.ingest_spool()

    async def spool_loop(self) -> None:
        await self.spool.spool_loop()


class Rate:
    """Events per second over the time since the previous `status` (at least a second)."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._count = 0
        self._rate = 0.0

    def per_second(self, count: int) -> float:
        now = time.monotonic()
        if now - self._at >= 1.0:
            self._rate = (count - self._count) / (now - self._at)
            self._at, self._count = now, count
        return round(self._rate, 1)


class _Conn:
    """An events connection on its raw non-blocking socket.

    Replies are best effort: a client that stops reading (or shut its read side)
    is still a producer, so its events are journaled and its replies dropped.
    """

    __slots__ = ("deaf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deaf = False

    def recv_now(self, size: int) -> bytes | None:
        """What is buffered (b"" at EOF), or None when nothing is."""
        try:
            return self.sock.recv(size)
        except BlockingIOError:
            return None
        except OSError:  # ECONNRESET and the like: the client is gone
            self.deaf = True
            return b""

    async def refuse(self, reason: bytes) -> None:
        """Send ``reason`` and close without a reset: closing a socket with unread input
        makes the kernel reset the connection, and the client would never see why."""
        await self.send(reason)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        with anyio.move_on_after(_LINGER_SECONDS):
            for _ in range(_LINGER_READS):  # drop what the client still sends, up to a bound
                chunk = self.recv_now(65536)
                if chunk is None:
                    await anyio.wait_readable(self.sock)
                elif not chunk:
                    break

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.deaf:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                with anyio.move_on_after(_SEND_TIMEOUT) as scope:
                    await anyio.wait_writable(self.sock)
                self.deaf = scope.cancelled_caught
            except OSError:  # EPIPE, ECONNRESET: nobody is listening any more
                self.deaf = True


def _closing(code: str, message: str) -> bytes:
    return wire.encode_line(wire.Closing(code, message))


Handler = Callable[[Any, "Replies"], Awaitable[dict[str, Any] | None]]


class ReplyLost(Exception):
    """A reply line could not be sent whole: the connection can take no more lines."""


class Replies:
    """The reply side of a control connection. A line goes out whole or the connection
    is given up: it must be sent within ``_SEND_TIMEOUT`` seconds plus one per MiB, in
    chunks (so the socket's buffer stays small); a line cut short by a timeout, a
    broken pipe or cancellation marks the connection lost, and nothing more is written
    to it (a client never sees a line with another glued to its cut end)."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.lost = False

    async def send(self, line: bytes) -> None:
        if self.lost:
            raise ReplyLost("an earlier reply line was cut short")
        self.lost = True  # until the whole line is out
        try:
            with anyio.fail_after(_SEND_TIMEOUT + len(line) / _MIN_REPLY_RATE):
                if len(line) <= _REPLY_CHUNK:
                    await self.stream.send(line)
                else:
                    for start in range(0, len(line), _REPLY_CHUNK):
                        await self.stream.send(line[start : start + _REPLY_CHUNK])
        except TimeoutError:
            raise ReplyLost("the client did not read its reply in time") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ReplyLost(f"the client went away ({type(exc).__name__})") from None
        self.lost = False

    async def close_with(self, code: str, message: str) -> None:
        """Send a Closing line, if the connection can still take one."""
        with contextlib.suppress(ReplyLost):
            await self.send(_closing(code, message))


def decode_request(line: bytes) -> wire.ControlRequest | str:
    """The request on ``line``, or what is wrong with it (for a bad_request reply)."""
    if not line.strip():
        return 'empty request line: expected a JSON object such as {"op":"status"}'
    try:
        return wire.CONTROL_DECODER.decode(line)
    except msgspec.DecodeError as exc:
        return str(exc)
    except RecursionError:
        return "the request nests too deeply"


def innermost(exc: BaseException) -> BaseException:
    """The error inside task-group wrappers: the first leaf of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
