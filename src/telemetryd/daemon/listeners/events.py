"""The events socket: producers write events, one JSON object per line.

Each connection runs in its own task on its raw non-blocking socket. It reads
chunks, hands them to its :class:`~telemetryd.daemon.ingest.Feed`, answers
rejected lines at once, queues the accepted events in the journal (waiting there
when the queue is full, so the kernel pushes back on the client) and, on a sync
request or the client's half-close, answers with a summary once the journal holds
everything it accepted. A connection idle for ``ingest.idle-timeout`` is closed
(acknowledged first if it sent anything); past ``ingest.max-connections`` a new
one is refused. :meth:`EventsListener.stop` stops accepting and reading: every
connection then acknowledges what it read, says ``shutting_down`` and closes.
"""

from __future__ import annotations

import logging
import socket

import anyio
from anyio.abc import TaskGroup, TaskStatus

from telemetryd import wire
from telemetryd.config import Ingest
from telemetryd.daemon.ingest import Batch, Feed, Ingestor
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners.sockets import Conn, Peers, closing
from telemetryd.errors import JournalError

log = logging.getLogger(__name__)


async def settle(journal: Journal, feed: Feed) -> None:
    """Wait until everything ``feed`` accepted (or was told is a duplicate) is journaled."""
    if feed.last is not None:
        await journal.wait(feed.last)
    for batch in feed.waiting.values():
        await journal.wait(batch)
    feed.waiting.clear()


class EventsListener:
    """Accepts producers on ``sock`` (a listening Unix socket) and serves each one.

    ``config`` is the running configuration's section (read at each use, so a
    reload applies to the limits and, for new connections, to the timeouts)."""

    def __init__(
        self,
        sock: socket.socket,
        config: Ingest,
        ingestor: Ingestor,
        journal: Journal,
        peers: Peers,
    ) -> None:
        self.sock = sock
        self.config = config
        self.ingestor = ingestor
        self.journal = journal
        self.peers = peers
        self.connections = 0  # open now
        self.stopping = False
        self._accepting = anyio.CancelScope()
        self._reading: set[anyio.CancelScope] = set()  # connections waiting for input

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept until :meth:`stop`, then return once every connection is done."""
        async with anyio.create_task_group() as connections:
            with self._accepting:
                task_status.started()
                await self._accept(connections)

    def stop(self) -> None:
        """Stop accepting and reading: each connection acknowledges what it has and closes."""
        self.stopping = True
        self._accepting.cancel()
        for scope in self._reading:
            scope.cancel()

    async def _accept(self, connections: TaskGroup) -> None:
        """As many connections per wake-up as are waiting."""
        while not self.stopping:
            await anyio.wait_readable(self.sock)
            while True:
                try:
                    sock, _ = self.sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:  # out of file descriptors, say: keep serving the others
                    log.error("cannot accept a connection: %s", exc)
                    await anyio.sleep(0.1)
                    break
                sock.setblocking(False)
                connections.start_soon(self._guard, Conn(sock))

    async def _guard(self, conn: Conn) -> None:
        with conn.sock:
            refusal = self.peers.refusal(conn.sock)
            limit = self.config.max_connections
            if refusal is None and self.connections >= limit:
                refusal = closing(
                    wire.TOO_MANY_CONNECTIONS, f"over the limit of {limit} connections"
                )
            if refusal is not None:
                await conn.refuse(refusal)
                return
            self.connections += 1
            try:
                await self.connection(conn)
            except JournalError as exc:
                await conn.send(closing(wire.JOURNAL_UNAVAILABLE, str(exc)))
            except Exception:
                # A bug must cost one connection (which got no ack), never the daemon.
                log.exception("events connection failed; closing it")
            finally:
                self.connections -= 1

    async def connection(self, conn: Conn) -> None:
        """Serve one producer until it half-closes, idles out or the daemon stops."""
        feed = Feed(self.ingestor)
        idle = self.config.idle_timeout
        size = self.config.read_size
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
                        await settle(self.journal, feed)
                        await conn.send(feed.summary())
                    await conn.send(closing(wire.IDLE_TIMEOUT, f"nothing received for {idle:g} s"))
                    return
                continue
            if not chunk:  # the client half-closed: the rest is its last line, if any
                await self._deliver(conn, *feed.end())
                break
            await self._deliver(conn, *feed.feed(chunk))
            while feed.sync_requested:
                await settle(self.journal, feed)
                await conn.send(feed.summary())
                await self._deliver(conn, *feed.resume())
            if len(chunk) == size:  # more may be waiting: let the other connections run first
                await anyio.lowlevel.checkpoint()
        await settle(self.journal, feed)
        await conn.send(feed.summary())
        if self.stopping:
            # `lines` in the summary says how far the daemon read; the rest was not taken.
            await conn.send(closing(wire.SHUTTING_DOWN, "the daemon is shutting down"))

    async def _deliver(self, conn: Conn, batch: Batch | None, rejections: list[bytes]) -> None:
        if batch is not None:
            await self.journal.submit(batch)
        if rejections:
            await conn.send(b"".join(rejections))
