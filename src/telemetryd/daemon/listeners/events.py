"""The events socket: producers write events, one JSON object per line.

Each connection is a :class:`Connection` on its raw non-blocking socket, driven by
event-loop callbacks (readable, writable, timers, the journal's) rather than a task of
its own: a producer that connects, writes one event and half-closes (a hook) costs
the daemon a few system calls and callbacks, not a task, cancel scopes and a reader
registration per wait. It reads chunks, hands them to its
:class:`~telemetryd.daemon.ingest.Feed`, answers rejected lines at once, queues the
accepted events in the journal (and stops reading while the queue is full, so the
kernel pushes back on the client) and, on a sync request or the client's
half-close, answers with a summary once the journal holds everything it accepted.
A connection idle for ``ingest.idle-timeout`` is closed (acknowledged first if it
sent anything); past ``ingest.max-connections`` a new one is refused.
:meth:`EventsListener.stop` stops accepting and reading: every connection then
acknowledges what it read, says ``shutting_down`` and closes.

Replies are best effort (:class:`~telemetryd.daemon.listeners.sockets.Conn` has the
same rule): a client that does not read them, or shut its read side, is still a
producer; it is not read from while a reply waits to be sent, and after
``SEND_TIMEOUT`` seconds without progress its replies are dropped.

The callbacks need an asyncio event loop (uvloop or the standard one): the loop's
``add_reader`` / ``add_writer`` / ``call_later``. :meth:`EventsListener.serve` is an
ordinary task: it returns once every connection has finished, and closes any left
when it is cancelled.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from telemetryd import wire
from telemetryd.config import Ingest
from telemetryd.daemon.ingest import Batch, Checked, Feed, Ingestor
from telemetryd.daemon.ingest_worker import Answer
from telemetryd.daemon.ingest_workers import FULL, OFFLOAD_MIN_BYTES, TAKEN, Workers
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners.sockets import SEND_TIMEOUT, Peers, closing
from telemetryd.errors import JournalError

log = logging.getLogger(__name__)

ACCEPTS_PER_WAKEUP = 64  # then the connections already open get their turn
# Reads of ``ingest.read-size`` a connection makes before its lines are processed: fewer
# hand-overs to ingest workers (and their answers) per event when a producer streams.
READS_PER_WAKEUP = 4
_LINGER_SECONDS = 1.0  # a refused client gets this long to stop sending
_LINGER_READS = 16
_ACCEPT_PAUSE = 0.1  # after a failed accept (out of file descriptors, say)
# Accepted sockets stay in blocking mode (one system call less per connection): every
# receive and send says it must not block.
_DONTWAIT = socket.MSG_DONTWAIT


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
        workers: Workers | None = None,
    ) -> None:
        self.sock = sock
        self.config = config
        self.ingestor = ingestor
        self.journal = journal
        self.peers = peers
        self.connections = 0  # open now, served (refused ones are not counted)
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.open: set[Connection] = set()  # every connection not closed yet
        self._accepting = False
        self._finished = anyio.Event()  # stopping, and no connection left
        self._flush_scheduled = False
        # Processes that check big chunks (daemon/ingest_workers.py), started when needed.
        self.workers = Workers() if workers is None else workers

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept until :meth:`stop`, then return once every connection is done."""
        self.loop = asyncio.get_running_loop()
        self._finished = anyio.Event()
        async with anyio.create_task_group() as tg:
            if self.workers.count:
                await tg.start(self.workers.run)
            if not self.stopping:
                self._accepting = True
                self.loop.add_reader(self.sock.fileno(), self._accept)
            task_status.started()
            try:
                self._check_finished()
                await self._finished.wait()
            finally:
                self._stop_accepting()
                for conn in list(self.open):  # cut off (cancelled: the drain deadline passed)
                    conn.close()
                self.workers.stop()

    def stop(self) -> None:
        """Stop accepting and reading: each connection acknowledges what it has and closes."""
        self.stopping = True
        self._stop_accepting()
        for conn in list(self.open):
            conn.stop()
        self._check_finished()

    def _stop_accepting(self) -> None:
        if self._accepting and self.loop is not None:
            self._accepting = False
            with contextlib.suppress(ValueError, OSError):  # (the socket was closed already)
                self.loop.remove_reader(self.sock.fileno())

    def _check_finished(self) -> None:
        if self.stopping and not self.open:
            self._finished.set()

    def _accept(self) -> None:
        """As many connections per wake-up as are waiting (up to a bound)."""
        for _ in range(ACCEPTS_PER_WAKEUP):
            if self.stopping:
                return
            try:
                # The socket module's accept() and socket class cost more (in Python) than
                # the system call: take the descriptor and wrap it in the bare C type.
                fd, _ = self.sock._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors, say: keep serving the others
                log.error("cannot accept a connection: %s", exc)
                self._stop_accepting()
                assert self.loop is not None
                self.loop.call_later(_ACCEPT_PAUSE, self._resume_accepting)
                return
            try:
                sock = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fd)
            except OSError:
                os.close(fd)
                raise
            try:
                Connection(self, sock).start()
            except Exception:
                log.exception("events connection failed; closing it")
                sock.close()

    def _resume_accepting(self) -> None:
        if not self.stopping and not self._accepting and self.loop is not None:
            self._accepting = True
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def flush_soon(self) -> None:
        """Have the journal write what the connections queued, once this turn of the event
        loop is over: the connections served in one turn share one write."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        try:
            self.journal.write_now()
        except Exception:  # (its callbacks guard themselves; this would be a bug here)
            log.exception("writing the journal from the events listener failed")
            self.journal.wake()

    def closed(self, conn: Connection) -> None:
        self.open.discard(conn)
        self._check_finished()


_QUEUED, _SENT, _CHECKED, _LOCAL = range(4)  # where a _Lines is


class _Lines:
    """Complete lines a connection handed to the ingest workers: waiting for one with
    room (``_QUEUED``), with one (``_SENT``), ``_CHECKED`` by it, or to be checked in
    the daemon after all (``_LOCAL``: no worker ready, or the worker went)."""

    __slots__ = ("checked", "overlong", "region", "state")

    def __init__(self, region: bytes, overlong: bool) -> None:
        self.region = region
        self.overlong = overlong  # a line over the limit follows them
        self.state = _QUEUED
        self.checked: Checked | None = None


class Connection:
    """One producer's connection, served by callbacks until it is closed.

    What it does next is decided in :meth:`advance`: offer a batch the journal had no
    room for, answer a sync request once settled, finish (acknowledge and close) once
    settled, or read. It reads only when nothing else is pending: no batch waiting for
    room, no reply waiting to be sent, no lines with an ingest worker, no sync request
    or end waiting for the journal.
    """

    __slots__ = (
        "_last_input",
        "_last_sent",
        "_reader",
        "_refusing",
        "_send_timer",
        "_timer",
        "_wake",
        "_wake_soon",
        "_writer",
        "counted",
        "deaf",
        "ended",
        "ending",
        "fd",
        "feed",
        "finish",
        "held",
        "idle",
        "linger_reads",
        "listener",
        "loop",
        "out",
        "outbox",
        "size",
        "sock",
    )

    def __init__(self, listener: EventsListener, sock: _socket.socket) -> None:
        assert listener.loop is not None
        self.listener = listener
        self.loop = listener.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.feed = Feed(listener.ingestor)
        self.idle = listener.config.idle_timeout
        self.size = listener.config.read_size
        self.counted = False  # counted in listener.connections
        self.deaf = False  # replies are dropped: the client does not read them
        self.held: Batch | None = None  # accepted events waiting for room in the journal
        # Lines handed to the ingest workers and not applied yet (no reading meanwhile).
        self.out: _Lines | None = None
        self.outbox: list[bytes] = []  # reply bytes the socket did not take yet
        self.finish: str | None = None  # "eof", "stop", "idle": what ends the connection
        self.ending = False  # the last reply is out (or in the outbox): close once sent
        self.ended = False  # the client half-closed: feed.end() is due
        self.linger_reads = 0
        self._refusing = False
        self._reader = False
        self._writer = False
        self._timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._last_input = self._last_sent = self.loop.time()
        # (Bound once: registered with the journal often.) A batch that became durable
        # is answered from the writer's own callback; room in the queue (more reading)
        # waits for the loop's next turn.
        self._wake = self._advance_now
        self._wake_soon = self._advance_soon

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        listener = self.listener
        listener.open.add(self)
        refusal = listener.peers.refusal(self.sock)
        limit = listener.config.max_connections
        if refusal is None and listener.connections >= limit:
            refusal = closing(wire.TOO_MANY_CONNECTIONS, f"over the limit of {limit} connections")
        if refusal is not None:
            self._refuse(refusal)
            return
        listener.connections += 1
        self.counted = True
        self._guarded(self._on_readable)  # a hook's event and half-close are usually there

    def stop(self) -> None:
        """The daemon stops: no more reading; acknowledge what was read, then close."""
        if self._refusing or self.finish is not None:
            return
        self.finish = "stop"
        if self._reader:  # waiting for input: finish now (else once what is pending is done)
            self._stop_reading()
            self._guarded(self.advance)

    def close(self) -> None:
        """Close the socket now (and forget the connection)."""
        if self.fd < 0:
            return
        self._stop_reading()
        self._stop_writing()
        for timer in (self._timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._send_timer = None
        self.sock.close()
        self.fd = -1
        self.outbox.clear()
        if self.held is not None:  # never queued: anyone told its ids were duplicates
            self.held.failed = True  # must not wait for it
            self.held = None
        if self.counted:
            self.counted = False
            self.listener.connections -= 1
        self.listener.closed(self)

    # -- what to do next --------------------------------------------------------------

    def _advance_now(self) -> None:
        if self.fd >= 0:
            self._guarded(self.advance)

    def _advance_soon(self) -> None:
        if self.fd >= 0:
            self.loop.call_soon(self._guarded, self.advance)

    def _guarded(self, step: Callable[..., object], *args: object) -> None:
        """Run ``step``; a journal failure ends the connection with its reason, and a
        bug costs this connection (which gets no acknowledgement), never the daemon."""
        if self.fd < 0:
            return
        try:
            step(*args)
        except JournalError as exc:
            self._end_with(closing(wire.JOURNAL_UNAVAILABLE, str(exc)))
        except Exception:
            log.exception("events connection failed; closing it")
            self.close()

    def advance(self) -> None:
        """Do what can be done now, and arrange to be called again for the rest."""
        journal = self.listener.journal
        feed = self.feed
        while self.fd >= 0:
            if self.held is not None:
                if not journal.offer(self.held):
                    journal.call_when_space(self._wake_soon)
                    return
                self.held = None
                self.listener.flush_soon()
            if self.outbox:
                return  # (called again once it is sent or dropped)
            if feed.sync_requested:
                if not self._settled():
                    return
                self._send(feed.summary())
                self._deliver(*feed.resume())
                continue
            lines = self.out
            if lines is not None:
                if lines.state == _QUEUED or lines.state == _SENT:
                    return  # (called again with the answer)
                self.out = None
                self._apply(lines)
                continue
            if self.ended:  # the client half-closed: its last line, if it has no newline
                self.ended = False
                self._deliver(*feed.end())
                continue
            if self.finish is None and self.listener.stopping:
                self.finish = "stop"
            if self.finish is not None:
                self._finish()
            else:
                self._start_reading()
            return

    def _finish(self) -> None:
        feed = self.feed
        if self.finish == "idle":
            if feed.lines:
                if not self._settled():
                    return
                self._send(feed.summary())
            self._end_with(
                closing(wire.IDLE_TIMEOUT, f"nothing received for {self.idle:g} s"),
            )
            return
        if not self._settled():
            return
        reply = feed.summary()
        if self.listener.stopping:
            # `lines` in the summary says how far the daemon read; the rest was not taken.
            reply += closing(wire.SHUTTING_DOWN, "the daemon is shutting down")
        self._end_with(reply)

    def _settled(self) -> bool:
        """Whether everything the feed accepted (or was told is a duplicate) is journaled;
        if not, the journal calls :meth:`advance` again later. Raises JournalError if
        writing any of it failed."""
        journal = self.listener.journal
        durable = journal.durable_seq
        feed = self.feed
        batch = feed.last
        if batch is not None and not self._durable(batch, durable):
            return False
        if feed.waiting:
            for batch in feed.waiting.values():
                if not self._durable(batch, durable):
                    return False
            feed.waiting.clear()
        return True

    def _durable(self, batch: Batch, durable: int) -> bool:
        if batch.failed:
            journal = self.listener.journal
            raise JournalError(journal.failed or "the journal could not be written")
        seq = batch.seq
        if seq is not None and seq <= durable:
            return True
        self.listener.journal.call_when_durable(seq, self._wake)
        return False

    def _deliver(self, batch: Batch | None, rejections: list[bytes]) -> None:
        if batch is not None:
            if self.listener.journal.offer(batch):
                self.listener.flush_soon()
            else:
                self.held = batch
        if rejections:
            self._send(b"".join(rejections))

    def _end_with(self, reply: bytes) -> None:
        """Send ``reply`` and close once it is sent (or dropped)."""
        self.finish = self.finish or "eof"
        self.ending = True
        self._stop_reading()
        self._send(reply)
        if not self.outbox:
            self.close()

    # -- reading ----------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reader:
            self._reader = True
            self._last_input = self.loop.time()  # the idle timeout counts from here
            if self._timer is None:  # armed the first time the connection waits for input
                self._timer = self.loop.call_later(self.idle, self._on_idle)
            self.loop.add_reader(self.fd, self._guarded, self._on_readable)

    def _stop_reading(self) -> None:
        if self._reader:
            self._reader = False
            self.loop.remove_reader(self.fd)

    def _recv(self) -> bytes | None:
        """What is buffered (b"" at EOF), or None when nothing is."""
        try:
            return self.sock.recv(self.size, _DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:  # ECONNRESET and the like: the client is gone
            self.deaf = True
            return b""

    def _on_readable(self) -> None:
        """Read what is there (up to ``READS_PER_WAKEUP`` reads: a hook's half-close
        usually follows its event, a streaming producer has more) and process the
        complete lines: here, or by an ingest worker when there are enough of them."""
        if self._refusing:
            self._linger()
            return
        feed = self.feed
        regions: list[bytes] = []
        eof = False
        # (What is read at once becomes one batch: the journal's queue may pass its bound
        # by a batch per connection, so they stay small next to it.)
        budget = max(self.size, self.listener.config.max_pending_bytes // 16)
        got = 0
        for _ in range(READS_PER_WAKEUP):
            if self.listener.stopping or got >= budget:
                break
            chunk = self._recv()
            if chunk is None:
                break
            self._last_input = self.loop.time()
            if not chunk:  # the client half-closed: the rest is its last line, if any
                eof = True
                break
            got += len(chunk)
            region = feed.frame(chunk)
            if region:
                regions.append(region)
            if feed.overlong:  # (its rejection comes right after the lines before it)
                break
        if regions or feed.overlong:
            region = regions[0] if len(regions) == 1 else b"".join(regions)
            overlong, feed.overlong = feed.overlong, False
            if len(region) >= OFFLOAD_MIN_BYTES and self.listener.workers.count:
                self.out = _Lines(region, overlong)
                self._submit(self.out)
            else:
                self._deliver(*feed.applied(region, feed.check(region), overlong))
        if eof:
            self._stop_reading()
            self.finish = "eof"
            if self.out is not None or self.held is not None or feed.sync_requested:
                self.ended = True  # (feed.end() once the lines before are done: advance())
            else:
                self._deliver(*feed.end())
        if (
            self.held
            or self.outbox
            or self.out is not None
            or feed.sync_requested
            or self.finish
            or self.listener.stopping
        ):
            self._stop_reading()
            self.advance()
        elif not self._reader:
            self._start_reading()

    def _submit(self, lines: _Lines) -> None:
        """Have an ingest worker check ``lines`` (or wait for one with room; or, when none
        is ready, check them here)."""
        config = self.listener.config
        workers = self.listener.workers
        done = workers.submit(
            lines.region,
            self.feed.lines,
            config.max_line_bytes,
            config.max_attrs_bytes,
            config.max_attrs_depth,
            functools.partial(self._checked, lines),
        )
        if done == TAKEN:
            lines.state = _SENT
        elif done == FULL:
            lines.state = _QUEUED
            workers.call_when_free(functools.partial(self._retry, lines))
        else:
            lines.state = _LOCAL

    def _retry(self, lines: _Lines) -> None:
        """A worker has room (or none is left): hand ``lines`` over again."""
        if self.fd < 0 or self.out is not lines:
            self.listener.workers.pass_turn()  # (closed meanwhile)
            return
        self._guarded(self._submit, lines)  # (a bug here costs this connection only,
        if self.fd < 0:
            self.listener.workers.pass_turn()  # not the turn of those waiting after it)
        elif lines.state == _LOCAL:
            self._guarded(self.advance)

    def _checked(self, lines: _Lines, answer: Answer | None) -> None:
        """A worker's answer (None: the worker is gone, check the lines here)."""
        if answer is None:
            lines.state = _LOCAL
        else:
            lines.state, lines.checked = _CHECKED, answer.checked
        if self.fd >= 0 and self.out is lines:
            self._guarded(self.advance)

    def _apply(self, lines: _Lines) -> None:
        """Take the lines back from the ingest workers, checked (here if need be)."""
        feed = self.feed
        checked = lines.checked if lines.checked is not None else feed.check(lines.region)
        self._deliver(*feed.applied(lines.region, checked, lines.overlong))

    def _on_idle(self) -> None:
        """The idle timer: only a connection waiting for input idles out."""
        self._timer = None
        if self.fd < 0 or self.finish is not None:
            return
        left = self._last_input + self.idle - self.loop.time()
        if left > 0 or not self._reader:
            self._timer = self.loop.call_later(max(left, self.idle / 10), self._on_idle)
            return
        self._stop_reading()
        self.finish = "idle"
        self._guarded(self.advance)

    # -- replies ----------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.deaf or not data:
            return
        if self.outbox:
            self.outbox.append(data)
            return
        try:
            sent = self.sock.send(data, _DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:  # EPIPE, ECONNRESET: nobody is listening any more
            self.deaf = True
            return
        if sent < len(data):
            self.outbox.append(data[sent:])
            self._last_sent = self.loop.time()
            self._stop_reading()  # no reading while a reply waits (the client is pushed back)
            self._writer = True
            self.loop.add_writer(self.fd, self._guarded, self._on_writable)
            self._send_timer = self.loop.call_later(SEND_TIMEOUT, self._on_send_timeout)

    def _on_writable(self) -> None:
        outbox = self.outbox
        while outbox:
            data = outbox[0]
            try:
                sent = self.sock.send(data, _DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                self._drop_replies()
                return
            self._last_sent = self.loop.time()
            if sent < len(data):
                outbox[0] = data[sent:]
                return
            outbox.pop(0)
        self._sent()

    def _on_send_timeout(self) -> None:
        self._send_timer = None
        if self.fd < 0 or not self.outbox:
            return
        left = self._last_sent + SEND_TIMEOUT - self.loop.time()
        if left > 0:
            self._send_timer = self.loop.call_later(left, self._on_send_timeout)
            return
        self._guarded(self._drop_replies)

    def _drop_replies(self) -> None:
        self.deaf = True
        self.outbox.clear()
        self._sent()

    def _sent(self) -> None:
        """The outbox is empty (sent or dropped): go on with what waited for it."""
        self._stop_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self.ending:
            self.close()
        else:
            self.advance()

    def _stop_writing(self) -> None:
        if self._writer:
            self._writer = False
            self.loop.remove_writer(self.fd)

    # -- refusing ---------------------------------------------------------------------

    def _refuse(self, reason: bytes) -> None:
        """Send ``reason`` and close without a reset: closing a socket with unread input
        makes the kernel reset the connection, and the client would never see why."""
        self._refusing = True
        with contextlib.suppress(OSError):  # a new connection's buffer takes a short line
            self.sock.send(reason, _DONTWAIT)
            self.sock.shutdown(socket.SHUT_WR)
        self._timer = self.loop.call_later(_LINGER_SECONDS, self.close)
        self._start_reading()

    def _linger(self) -> None:
        """Drop what a refused client still sends, up to a bound."""
        chunk = self._recv()
        self.linger_reads += 1
        if chunk == b"" or self.linger_reads >= _LINGER_READS:
            self.close()
