"""Serving `telemetryctl tail`: events streamed to clients as the journal writer writes them.

Each following client has a :class:`Subscription`, registered as a listener of the
journal: the writer hands it every group it has written (the same bytes object, not a
copy) and moves on. A subscription buffers at most ``MAX_BUFFERED_BYTES`` of groups
(one group more when it is empty); past that, groups are dropped and counted, and the
client later gets a ``{"dropped": N}`` line where they would have been. So a client that
reads slowly, or not at all, never slows the writer or ingest, and costs bounded memory.

Filters (type, session, source) are applied in the client's own task, not in the
writer: each line's ``type``, ``session_id`` and ``source`` are decoded with a Struct
that holds only those. The backlog (``-n``) comes from the current segment only, read
backwards from where the writer was when the client subscribed, so that no event is
both in the backlog and streamed, and none falls between them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque

import anyio
import msgspec
from anyio.abc import SocketStream

from telemetryd import wire
from telemetryd.daemon.journal import Journal

log = logging.getLogger(__name__)

MAX_BUFFERED_BYTES = 4 * 1024 * 1024  # per subscription
_BLOCK = 256 * 1024  # backlog read size
_SEND_LINES = 1000  # backlog lines per send


class _Envelope(msgspec.Struct):
    """The fields tail filters on; the rest of the line is skipped."""

    type: str = ""
    session_id: str | None = None
    source: str | None = None


_DECODER = msgspec.json.Decoder(_Envelope)


class Filter:
    """Which events a tail request wants: each non-empty list must contain the field."""

    def __init__(self, request: wire.TailRequest) -> None:
        self.types = frozenset(request.types)
        self.sessions = frozenset(request.sessions)
        self.sources = frozenset(request.sources)
        self.everything = not (self.types or self.sessions or self.sources)

    def matches(self, line: bytes) -> bool:
        if self.everything:
            return True
        try:
            event = _DECODER.decode(line)
        except msgspec.DecodeError:
            return False
        return (
            (not self.types or event.type in self.types)
            and (not self.sessions or event.session_id in self.sessions)
            and (not self.sources or event.source in self.sources)
        )

    def select(self, data: bytes) -> bytes:
        """The matching lines of ``data`` (whole lines, each ending in a newline)."""
        if self.everything:
            return data
        return b"".join([line + b"\n" for line in data.split(b"\n") if line and self.matches(line)])


class Subscription:
    """The groups written since the client subscribed, up to a byte budget; called by the
    journal writer (never blocks), drained by the client's task with :meth:`get`."""

    def __init__(self, max_bytes: int = MAX_BUFFERED_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: deque[bytes | int] = deque()  # groups, and dropped counts between them
        self._bytes = 0
        self._dropped = 0
        self._wakeup = anyio.Event()

    def __call__(self, data: bytes, count: int) -> None:
        if self._bytes and self._bytes + len(data) > self.max_bytes:
            self._dropped += count
            return
        if self._dropped:
            self._items.append(self._dropped)
            self._dropped = 0
        self._items.append(data)
        self._bytes += len(data)
        self._wakeup.set()

    async def get(self) -> bytes | int:
        """The next group, or the number of events dropped before it (or since the last)."""
        while True:
            if self._items:
                item = self._items.popleft()
                if isinstance(item, bytes):
                    self._bytes -= len(item)
                return item
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                return dropped
            self._wakeup = anyio.Event()
            await self._wakeup.wait()


def read_backlog(path: str, end: int, wanted: Filter, count: int) -> list[bytes]:
    """The last ``count`` matching lines in bytes [0, end) of ``path``, oldest first."""
    found: list[bytes] = []
    if count <= 0 or not path:
        return found
    try:
        f = open(path, "rb")  # noqa: SIM115  (closed below; the segment may be gone)
    except FileNotFoundError:
        return found
    with f:
        pos, carry = end, b""
        while pos > 0 and len(found) < count:
            start = max(0, pos - _BLOCK)
            lines = (os.pread(f.fileno(), pos - start, start) + carry).split(b"\n")
            pos = start
            carry = lines.pop(0) if start > 0 else b""  # maybe cut: completed by the next read
            for line in reversed(lines):
                if line and wanted.matches(line):
                    found.append(line + b"\n")
                    if len(found) == count:
                        break
    found.reverse()
    return found


class Tails:
    """Every tail client of one daemon."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.stopping = False
        self._scopes: set[anyio.CancelScope] = set()

    @property
    def following(self) -> int:
        """Clients following now."""
        return len(self._scopes)

    def stop(self) -> None:
        """End every tail: the daemon is shutting down."""
        self.stopping = True
        for scope in self._scopes:
            scope.cancel()

    async def serve(self, request: wire.TailRequest, stream: SocketStream) -> None:
        """Answer one tail request on ``stream``; returns when done, or when the client goes."""
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._serve(request, stream)  # (those: the client went away)

    async def _serve(self, request: wire.TailRequest, stream: SocketStream) -> None:
        if self.stopping:
            await stream.send(_shutting_down())
            return
        wanted = Filter(request)
        # Subscribe and note where the writer is in one step (no await between): every
        # event is then either before that point (backlog) or handed to the subscription.
        subscription = Subscription() if request.follow else None
        if subscription is not None:
            self.journal.listeners.add(subscription)
        try:
            segment, end = self.journal.written_to
            backlog = await anyio.to_thread.run_sync(
                read_backlog, segment, end, wanted, request.backlog
            )
            for start in range(0, len(backlog), _SEND_LINES):
                await stream.send(b"".join(backlog[start : start + _SEND_LINES]))
            if subscription is None:
                await stream.send(wire.encode_line(wire.TailDone(ok=True, events=len(backlog))))
                return
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_until_closed, stream, tg.cancel_scope)
                        await _follow(subscription, wanted, stream)
                finally:
                    self._scopes.discard(scope)
            if self.stopping:
                with anyio.move_on_after(1.0):
                    await stream.send(_shutting_down())
        finally:
            if subscription is not None:
                self.journal.listeners.discard(subscription)


async def _follow(subscription: Subscription, wanted: Filter, stream: SocketStream) -> None:
    while True:
        item = await subscription.get()
        if isinstance(item, int):
            await stream.send(wire.encode_line(wire.TailDropped(item)))
            continue
        data = wanted.select(item)
        if data:
            # No timeout: a client that stops reading (a paused pager) only has events
            # dropped until it reads again.
            await stream.send(data)


async def _until_closed(stream: SocketStream, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the client closes its end (it sends nothing after the request)."""
    try:
        while await stream.receive(4096):
            pass
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    scope.cancel()


def _shutting_down() -> bytes:
    return wire.encode_line(wire.Closing(wire.SHUTTING_DOWN, "the daemon is shutting down"))
