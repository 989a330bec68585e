"""Sending events on the events socket (docs/protocol.md, "Sending events").

:class:`EventStream` is one connection, written in large chunks while the daemon's
replies are read (so that neither side can block the other), then half-closed for
the Summary: `import` streams a backfill through it. :func:`deliver` sends one
payload within one deadline and never raises for the daemon's sake: `send` and
`hook` spool what it could not deliver. Standard library only (``select`` is
imported when the first write happens).
"""

from __future__ import annotations

import _socket
import time

from telemetryd.client.protocol import (
    Closing,
    Rejected,
    Replies,
    Summary,
    connect,
    event_reply,
    read_reply,
)
from telemetryd.errors import DaemonBusy, DaemonUnavailable, ProtocolError, TelemetryError

SEND_CHUNK = 1 << 20  # bytes per write


class EventStream:
    """One connection to the events socket.

    :meth:`write` sends event lines while reading the daemon's replies as they come
    (neither side can block the other); :meth:`finish` half-closes and returns the
    Summary once every line sent is acknowledged. ``rejected`` holds the Rejected lines
    so far, ``summary`` the latest Summary. Each wait lasts at most ``timeout`` seconds,
    and with a ``deadline`` (time.monotonic()) every wait ends by it.
    """

    def __init__(self, path: str, timeout: float, deadline: float | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.deadline = deadline
        self.rejected: list[Rejected] = []
        self.summary: Summary | None = None
        self.closing: Closing | None = None
        self._lines = 0  # lines handed to this stream (add, queue, write)
        self._buffer = bytearray()
        self.sock = connect(path, self._wait())
        self._replies = Replies(self.sock)
        self._eof = False

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _wait(self) -> float:
        if self.deadline is None:
            return self.timeout
        remaining = min(self.timeout, self.deadline - time.monotonic())
        if remaining <= 0:
            raise self._late()
        return remaining

    def _late(self) -> DaemonBusy:
        return DaemonBusy(f"the daemon did not answer within {self.timeout:g} s")

    @property
    def sent_lines(self) -> int:
        """Lines sent so far (or being sent by :meth:`write`): those handed over, less
        those still queued. (Counted when asked, which is rare, rather than at each send.)"""
        return self._lines - self._buffer.count(b"\n")

    def add(self, line: bytes) -> None:
        """Queue one event line (without its newline); written in large chunks."""
        self._buffer += line
        self._buffer += b"\n"
        self._lines += 1
        if len(self._buffer) >= SEND_CHUNK:
            self.flush()

    def queue(self, lines: bytes, count: int | None = None) -> None:
        """Queue event lines, each with its newline (``count`` of them, when the caller
        knows), to be sent by :meth:`pump` (or :meth:`flush`, :meth:`finish`): never waits."""
        self._buffer += lines
        self._lines += lines.count(b"\n") if count is None else count

    @property
    def queued(self) -> int:
        """Bytes queued and not sent yet."""
        return len(self._buffer)

    def fileno(self) -> int:
        return self.sock.fileno()

    def pump(self, readable: bool, writable: bool) -> None:
        """Without waiting: read the replies there are (``readable``, as select said)
        and send what the socket takes of the queued lines (``writable``)."""
        try:
            if readable:
                self._read()
                if self._eof:
                    raise DaemonUnavailable("the daemon closed the connection")
            if writable and self._buffer:
                sent = self.sock.send(memoryview(self._buffer)[:SEND_CHUNK], _socket.MSG_DONTWAIT)
                del self._buffer[:sent]
        except BlockingIOError:
            pass
        except OSError as exc:
            self._drain()
            raise DaemonUnavailable(f"lost the daemon: {exc.strerror or exc}") from None

    def flush(self) -> None:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._send(data)

    def write(self, data: bytes) -> None:
        """Send ``data`` (whole lines), reading replies meanwhile; raises what an error
        line from the daemon means as soon as one comes."""
        self._lines += data.count(b"\n")
        self._send(data)

    def _send(self, data: bytes) -> None:
        """:meth:`write`'s sending (``data``'s lines are counted already)."""
        import select

        view = memoryview(data)
        sent = 0
        try:
            while sent < len(view):
                wait = self._wait()
                readable, writable, _ = select.select([self.sock], [self.sock], [], wait)
                if not readable and not writable:
                    raise self._late()
                if readable:
                    self._read()
                if writable:
                    sent += self.sock.send(view[sent : sent + SEND_CHUNK])
        except OSError as exc:  # the daemon closed the connection: was it saying why?
            self._drain()
            raise DaemonUnavailable(f"lost the daemon: {exc.strerror or exc}") from None
        finally:
            view.release()

    def _read(self) -> None:
        """Handle the reply lines of one read; at the end of the replies, the error line
        among them (if any) is raised."""
        lines = self._replies.read()
        if lines is None:
            self._eof = True
            if self.closing is not None and self.summary is None:
                raise self.closing.exception()
            return
        for line in lines:
            reply = event_reply(read_reply(line))
            if isinstance(reply, Rejected):
                self.rejected.append(reply)
            elif isinstance(reply, Summary):
                self.summary = reply
            else:
                self.closing = reply
                if self.summary is None or self.summary.lines < self.sent_lines:
                    raise reply.exception()

    def _drain(self) -> None:
        """After a failed write: read what the daemon said before it closed the
        connection (an error line among it is raised), for a second at most."""
        give_up = time.monotonic() + 1.0
        while not self._eof:
            try:
                wait = min(self._wait(), give_up - time.monotonic())
            except DaemonBusy:
                return
            if wait <= 0:
                return
            self.sock.settimeout(wait)
            try:
                self._read()
            except (OSError, ProtocolError):
                return

    def finish(self, timeout: float | None = None) -> Summary:
        """Half-close, read the replies to the end and return the Summary that covers
        every line sent. ``timeout`` replaces the stream's for these waits."""
        self.flush()
        if timeout is not None:
            self.timeout = timeout
        try:
            self.sock.shutdown(_socket.SHUT_WR)
            while not self._eof:
                self.sock.settimeout(self._wait())
                self._read()
        except TimeoutError:
            raise self._late() from None
        except OSError as exc:
            self._drain()
            raise DaemonUnavailable(f"lost the daemon: {exc.strerror or exc}") from None
        if self.summary is None:
            if self.closing is not None:
                raise self.closing.exception()
            raise DaemonUnavailable("the daemon closed the connection without a summary")
        if self.summary.lines < self.sent_lines:
            if self.closing is not None:
                raise self.closing.exception()
            raise ProtocolError(
                f"the daemon acknowledged {self.summary.lines} of {self.sent_lines} lines"
            )
        return self.summary


def wait(fds: list[int], stream: EventStream | None = None) -> list[int]:
    """Wait until one of ``fds`` (pipes, say) is readable and return those that are;
    meanwhile send ``stream``'s queued lines and read its replies (:meth:`EventStream.pump`),
    so that a process that feeds the daemon from other processes waits for both at once
    (client/import_pool.py)."""
    import select

    watched = list(fds)
    writing = []
    if stream is not None:
        watched.append(stream.fileno())
        if stream.queued:
            writing.append(stream.fileno())
    readable, writable, _ = select.select(watched, writing, [])
    if stream is not None:
        stream.pump(stream.fileno() in readable, bool(writable))
    return [fd for fd in readable if fd in fds]


class Delivery:
    """What came of sending events on one connection: ``summary`` when every line was
    acknowledged, else ``failure`` says why not (a DaemonUnavailable, DaemonBusy,
    DaemonError or ProtocolError). ``rejected`` holds the lines the daemon refused,
    ``acknowledged`` how many lines (from the first) a Summary covered even so."""

    __slots__ = ("acknowledged", "failure", "rejected", "summary")

    def __init__(self) -> None:
        self.summary: Summary | None = None
        self.failure: TelemetryError | None = None
        self.rejected: list[Rejected] = []
        self.acknowledged = 0


def deliver(path: str, payload: bytes, timeout: float) -> Delivery:
    """Send ``payload`` (whole event lines), half-close and wait for the Summary, all
    within ``timeout`` seconds. Never raises for the daemon's sake: see Delivery."""
    delivery = Delivery()
    stream = None
    try:
        stream = EventStream(path, timeout, deadline=time.monotonic() + timeout)
        stream.write(payload)
        delivery.summary = stream.finish()
    except TelemetryError as exc:
        delivery.failure = exc
    finally:
        if stream is not None:
            stream.close()
            delivery.rejected = stream.rejected
            if stream.summary is not None:
                delivery.acknowledged = stream.summary.lines
    return delivery
