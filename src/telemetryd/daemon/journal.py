"""The journal: the append-only source of truth.

On disk::

    journal/20261121T233532Z-000007.jsonl   one canonical event per line, "\\n"-terminated
    quarantine/20261121T233532Z-000007.jsonl.torn   bytes cut off a torn last line

Segment names are ``<UTC time the segment was opened>-<sequence>.jsonl``; the
sequence grows by one per segment across restarts, and ordering uses it, not
the time. Each daemon start opens a new segment at its first write; a segment is
closed when it passes ``segment-max-bytes`` or when the UTC day changes (or when the
daemon stops), and is never written again after that: it is made read-only (0400)
then, and later retention may compress it to ``.jsonl.gz``.
daemon/segments.py holds the naming rules that every reader shares.
Every line is a complete event encoded by ``telemetryd.events.ENCODER`` and
carries its schema version in ``v``.

One writer: batches of already-encoded events are queued by the connections
and written in queue order, many at once (group commit), from a worker thread.
A batch is acknowledged ("durable") once written, and also fsynced first when
``durability = "always"``. With ``interval`` the file is fsynced at most every
``fsync-interval-ms``; with ``never``, only when a segment is closed.

A line is written whole or, after a crash mid-write, torn at the end of the
last segment; such a line was never acknowledged, and startup moves it to
``quarantine/``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from anyio.abc import TaskStatus

from telemetryd.config import Journal as JournalConfig
from telemetryd.daemon.ingest import JOURNALED, Batch, Dedup
from telemetryd.daemon.segments import (  # noqa: F401  (SUFFIX, GZ_SUFFIX: the journal's names)
    CLOSED_MODE,
    GZ_SUFFIX,
    READ_ERRORS,
    SUFFIX,
    iter_ids,
    last_line_end,
    list_segments,
    pick,
    segment_seq,
    strays,
)
from telemetryd.errors import JournalError

log = logging.getLogger(__name__)

GROUP_MAX_BYTES = 8 * 1024 * 1024
# Groups up to this size are written from the event loop (a copy into the page cache,
# well under a millisecond); bigger ones on the writer's thread. An OTLP batch of 512
# records is some 500 KB of events: the hop to the thread cost more than its write
# (bench/otlp.py, A/B: 4-5% more records a second than with 256 KB).
INLINE_WRITE_MAX = 2 * 1024 * 1024


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _newest_ids(segments: list[tuple[int, str]], budget: int) -> list[str]:
    """The ids of the newest ``budget`` events in ``segments``, oldest first."""
    chunks: list[list[str]] = []
    chosen = pick(segments)  # one file per segment: the one readers read
    for _, path in reversed(chosen):
        if budget <= 0:
            break
        ids: list[str] = []
        try:
            ids.extend(iter_ids(path))
        except READ_ERRORS as exc:  # a damaged .gz, say: the ids of its good prefix
            log.warning("cannot read all the ids in %s (%s)", path, exc)
        ids = ids[-budget:]
        chunks.append(ids)
        budget -= len(ids)
    return [event_id for ids in reversed(chunks) for event_id in ids]


def _cut_torn_tail(path: str, quarantine_dir: str, newest: bool = True) -> int:
    """Move a last line without its newline to quarantine; return the bytes moved.
    In the ``newest`` segment that is a write a crash cut short (never acknowledged);
    in an older one, which was closed whole, damage done to the file since."""
    with open(path, "rb") as f:  # a closed segment is read-only: open it for writing
        size = f.seek(0, os.SEEK_END)  # only when there is something to cut
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
    keep = last_line_end(path, 0, size)
    if not os.stat(path).st_mode & stat.S_IWUSR:
        os.chmod(path, 0o600)  # its writer is gone; a damaged end is cut all the same
    with open(path, "r+b") as f:
        f.seek(keep)
        torn = f.read()
        os.makedirs(quarantine_dir, mode=0o700, exist_ok=True)
        target = os.path.join(quarantine_dir, os.path.basename(path) + ".torn")
        with open(target, "ab") as q:
            q.write(torn)
            q.flush()
            os.fsync(q.fileno())
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    if newest:
        log.warning(
            "journal %s ended in a torn line (%d bytes, never acknowledged); moved to %s",
            path,
            len(torn),
            target,
        )
    else:
        log.error(
            "journal %s, closed whole, now ends in a torn line: the file was damaged or "
            "cut since (%d bytes moved to %s; the lines before are kept, whatever was "
            "after is lost)",
            path,
            len(torn),
            target,
        )
    return len(torn)


def _close_mode(path: str) -> None:
    """Make a segment found at start read-only, as a closed one is. One that cannot be
    (not this user's file, say) stays as it is: the store then copies it, never links it."""
    try:
        if os.stat(path).st_mode & 0o777 != CLOSED_MODE:
            os.chmod(path, CLOSED_MODE)
    except OSError as exc:
        log.warning("journal %s: cannot make it read-only: %s", path, exc)


class Journal:
    """The segment series in one directory, and its single writer."""

    def __init__(
        self,
        directory: str,
        quarantine_dir: str,
        config: JournalConfig,
        *,
        max_pending_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self._clock = clock  # wall-clock seconds: segment names and the UTC-day rotation
        self.quarantine_dir = quarantine_dir
        self.config = config
        self._max_pending = max_pending_bytes
        self._pending: deque[Batch] = deque()
        self._pending_bytes = 0
        self._queued_seq = 0
        self.durable_seq = 0
        self._changed = anyio.Event()  # set (and replaced) whenever durable_seq moves
        self._changed_waits = 0  # tasks waiting on it (none: nothing to set or replace)
        self._work = anyio.Event()  # set (and replaced) when a batch is queued
        self._space = anyio.Event()  # set (and replaced) when queued bytes drain
        self._space_waits = 0
        self._closing = False
        self._sync_asked: anyio.Event | None = None  # set once a flush's fsync is done
        self._fd = -1
        self._segment = ""
        self._segment_ends = 0.0  # Unix time of the UTC midnight that closes the segment
        self._segment_size = 0
        self._next_seq = 1
        self._dirty = False
        self._reopen = False  # start a new segment at the next write (SIGHUP)
        self.events_written = 0
        # Events of batches that were never written (a write error, or the journal
        # closing): their senders were told so, and `status` does not count them accepted.
        self.events_failed = 0
        self.failed: str | None = None  # the last write error, until a write succeeds
        # Called on the event loop with (bytes, event count) of each group once written;
        # they must neither block nor raise (`telemetryctl tail`, daemon/tail.py).
        self.listeners: set[Callable[[bytes, int], None]] = set()
        self.written_to = ("", 0)  # (segment, size) after the last group written
        # Callbacks of connections that do not wait in a task (daemon/listeners/events.py):
        # (seq, tie-break, callback), called once that seq is durable (or failed); and those
        # waiting for room in the queue. Each is called at most once, on the event loop.
        self._durable_waiters: list[tuple[int, int, Callable[[], object]]] = []
        self._space_waiters: list[Callable[[], object]] = []
        self._tie = itertools.count()
        self._stopped = False  # the writer has returned: waiters are called at once
        self._writing = False  # a group is being written on the writer's thread
        self._writes = 0  # writes so far (an fsync clears _dirty only if none came meanwhile)
        self._dedup: Dedup | None = None  # the window open() filled (renew_dedup reads it again)

    # -- startup (blocking; runs before the event loop serves anything) --------

    def open(self, dedup: Dedup) -> None:
        """Create directories, repair a torn tail, remember recent ids. Every segment
        found is closed (read-only from now on, even one a crashed daemon left
        writable); the new segment is opened by the first write, so a start that fails
        later (or writes nothing) leaves no empty segment behind."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        segments = list_segments(self.directory)
        for index, (_, path) in enumerate(segments):
            if path.endswith(SUFFIX):
                _cut_torn_tail(path, self.quarantine_dir, newest=index == len(segments) - 1)
                _close_mode(path)
        self._seed(dedup, segments)
        if segments:
            self._next_seq = segments[-1][0] + 1
            newest = segments[-1][1]
            if newest.endswith(SUFFIX):  # where `tail` finds the latest events until a write
                self.written_to = (newest, os.stat(newest).st_size)

    def _seed(self, dedup: Dedup, segments: list[tuple[int, str]]) -> None:
        """Remember the ids of the newest events, so resent events are not journaled twice."""
        self._dedup = dedup
        for event_id in _newest_ids(segments, dedup.window):
            dedup.add(event_id, JOURNALED)

    async def renew_dedup(self) -> None:
        """Read the dedup window's ids on disk again, after retention deleted segments:
        an id of a deleted event is no longer a duplicate (usage deleted for the size
        limit comes back when its files are imported again, without a restart). Batches
        not yet written when the reading starts keep their place."""
        dedup = self._dedup
        if dedup is None:
            return
        since = self.durable_seq + 1
        try:
            ids = await anyio.to_thread.run_sync(
                lambda: _newest_ids(list_segments(self.directory), dedup.window)
            )
        except OSError as exc:  # (the window stays as it was: at worst, too many ids)
            log.warning("cannot read the journal's ids again after retention: %s", exc)
            return
        dedup.renew(ids, since)

    def _open_segment(self, now: datetime) -> None:
        name = f"{now:%Y%m%dT%H%M%SZ}-{self._next_seq:06d}{SUFFIX}"
        path = os.path.join(self.directory, name)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)  # (deleted while running)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        # All of the new segment's state before anything else can fail (never one name twice).
        self._next_seq += 1
        self._segment = path
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        self._segment_ends = (midnight + timedelta(days=1)).timestamp()
        self._segment_size = 0
        self._reopen = False
        _fsync_dir(self.directory)
        log.debug("journal segment %s opened", path)

    def _close_segment(self) -> None:
        if self._fd >= 0:
            # Never written again: read-only from now on (the store may then hard-link
            # it for a load instead of copying it; store/database.py).
            with contextlib.suppress(OSError):  # a file system without modes: as it is
                os.fchmod(self._fd, CLOSED_MODE)
            os.fsync(self._fd)  # a closed segment is always on disk
            os.close(self._fd)
            self._fd = -1
            self._dirty = False

    # -- the writer's blocking half ----------------------------------------------

    def _must_rotate(self, size: int) -> bool:
        """Whether ``size`` more bytes need a new segment first (full, or a new UTC day)."""
        if self._fd < 0 or self._reopen or self._clock() >= self._segment_ends:
            return True
        return (
            bool(self._segment_size) and self._segment_size + size > self.config.segment_max_bytes
        )

    def _write(self, data: bytes) -> None:
        if self._fd >= 0 and os.fstat(self._fd).st_nlink == 0:
            # Deleted while open (an operator's `rm`): what is written to it now would be
            # acknowledged and lost. A new segment (and journal directory) takes it.
            log.error(
                "journal segment %s was deleted while open; continuing in a new one",
                self._segment,
            )
            self._reopen = True
        if self._must_rotate(len(data)):
            self._close_segment()
            self._open_segment(datetime.fromtimestamp(self._clock(), UTC))
        view = memoryview(data)
        start = self._segment_size
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self._segment_size += written
            if self.config.durability == "always":
                os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)
        except OSError:
            # What was written of a failed group (a torn line after ENOSPC, or lines
            # whose fsync failed) is cut off: the group was not acknowledged.
            self._cut_back(start)
            raise
        self._dirty = self.config.durability != "always"
        self._writes += 1

    def _cut_back(self, size: int) -> None:
        """Truncate the segment to ``size`` bytes; if even that fails, abandon the segment
        (its torn tail is cut off into quarantine at the next start) for a new one."""
        if self._segment_size == size:
            return
        try:
            os.ftruncate(self._fd, size)
            self._segment_size = size
        except OSError as exc:
            log.error(
                "cannot cut %s back to %d bytes (%s); abandoning it", self._segment, size, exc
            )
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def _sync(self) -> None:
        if self._dirty and self._fd >= 0:
            writes = self._writes
            try:
                os.fsync(self._fd)
            except OSError as exc:  # EIO: already acknowledged; say so, keep serving
                self.failed = f"cannot fsync {self._segment}: {exc.strerror or exc}"
                log.error("%s", self.failed)
                return
            # (A write on the event loop meanwhile, by write_now(), may have missed it.)
            self._dirty = self._writes != writes

    @property
    def segment(self) -> str:
        """The path of the segment being written (the newest one)."""
        return self._segment

    def reopen(self) -> None:
        """Close the current segment at the next write and continue in a new one (SIGHUP)."""
        self._reopen = True

    # -- the event-loop half ----------------------------------------------------

    async def submit(self, batch: Batch) -> None:
        """Queue ``batch`` for writing; waits while too many bytes are queued (backpressure)."""
        try:
            if self._closing:
                raise JournalError("the journal is closing")
            while self._pending_bytes >= self._max_pending:
                await self._wait_space()
        except BaseException:
            # Never queued: anyone told its ids were duplicates must not wait for it.
            batch.failed = True
            self.events_failed += batch.count
            raise
        self._queue(batch)

    def _queue(self, batch: Batch, *, wake: bool = True) -> None:
        self._queued_seq += 1
        batch.seq = self._queued_seq
        self._pending.append(batch)
        self._pending_bytes += len(batch.data)
        if wake:
            self._work.set()

    def offer(self, batch: Batch) -> bool:
        """Queue ``batch`` if there is room, without waiting: False when the queue is full
        (then :meth:`call_when_space`). Raises JournalError once the journal is closing.

        The writer is not woken: call :meth:`write_now` soon after (once per turn of the
        event loop is enough), which writes or wakes it."""
        if self._closing:
            batch.failed = True  # never queued: nobody told its ids were duplicates may wait
            self.events_failed += batch.count
            raise JournalError("the journal is closing")
        if self._pending_bytes >= self._max_pending:
            return False
        self._queue(batch, wake=False)
        return True

    def call_when_space(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (once) when queued bytes drain, or when the writer stops."""
        if self._stopped:
            callback()
        else:
            self._space_waiters.append(callback)

    def call_when_durable(self, seq: int | None, callback: Callable[[], object]) -> None:
        """Call ``callback`` (once) when batch ``seq`` is durable or failed; for ``None``
        (a batch not queued yet), after the next batch queued from now is written."""
        if seq is None:
            seq = self._queued_seq + 1
        if seq <= self.durable_seq or self._stopped:
            callback()
        else:
            heapq.heappush(self._durable_waiters, (seq, next(self._tie), callback))

    async def wait(self, batch: Batch) -> None:
        """Return once ``batch`` is durable; raise JournalError if writing it failed."""
        while batch.seq is None or batch.seq > self.durable_seq:
            if batch.failed:
                raise JournalError(self.failed or "the journal could not be written")
            await self._wait_changed()
        if batch.failed:
            raise JournalError(self.failed or "the journal could not be written")

    async def changed(self) -> None:
        """Return after the next write (or failed write) of the writer."""
        await self._wait_changed()

    async def wait_seq(self, seq: int) -> None:
        while seq > self.durable_seq:
            await self._wait_changed()

    async def flush(self) -> None:
        """Return once everything queued so far is written and fsynced."""
        await self.wait_seq(self._queued_seq)
        if self._sync_asked is None:
            self._sync_asked = anyio.Event()
        done = self._sync_asked
        self._work.set()
        await done.wait()

    def close_when_drained(self) -> None:
        """Ask the writer to finish what is queued, fsync, close and return."""
        self._closing = True
        self._work.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The writer: group commit of queued batches, periodic fsync, clean close.

        Its blocking work (big writes, fsync, rotation) runs on a worker thread of its
        own (a limiter of one token that nothing else borrows): never queued behind
        queries or other blocking work of the daemon."""
        thread = anyio.CapacityLimiter(1)
        periodic = self.config.durability == "interval"
        next_sync = math.inf
        task_status.started()
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        break
                    if periodic and self._dirty and next_sync == math.inf:
                        # (Written by write_now() since: the fsync is due all the same.)
                        next_sync = anyio.current_time() + self.config.fsync_interval_ms / 1000
                    if next_sync == math.inf and self._sync_asked is None:
                        await self._work.wait()  # (no deadline: no cancel scope to pay for)
                    else:
                        with anyio.move_on_after(max(0.0, next_sync - anyio.current_time())):
                            await self._work.wait()
                    self._work = anyio.Event()
                if self._pending:
                    await self._write_group(self._take_group(), thread)
                    if periodic and next_sync == math.inf:
                        next_sync = anyio.current_time() + self.config.fsync_interval_ms / 1000
                # Checked after every write too, so a steady flood cannot postpone it.
                asked = self._sync_asked
                if asked is not None or (self._dirty and anyio.current_time() >= next_sync):
                    await anyio.to_thread.run_sync(self._sync, limiter=thread)
                    next_sync = math.inf
                    if asked is not None:
                        self._sync_asked = None
                        asked.set()
        finally:
            self._stopped = True
            self._call_waiters()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close_segment, limiter=thread)

    def wake(self) -> None:
        """Have the writer look at the queue (after :meth:`offer`, instead of write_now)."""
        self._work.set()

    def write_now(self) -> None:
        """Write the queued batches at once, on the event loop, when that is cheap: the
        writer is not busy, they are small, no rotation or fsync is due with them. Else
        wake the writer for them. (For :meth:`offer`, which leaves the writer asleep so
        that the connections of one turn of the loop share one write without a task
        switch: connection per event pays for little else.)"""
        if not self._pending:
            return
        size = self._pending_bytes
        if (
            self._writing
            or self._closing
            or size > INLINE_WRITE_MAX
            or self.config.durability == "always"
            or self._must_rotate(size)
        ):
            self._work.set()
            return
        group = self._take_group()
        data = b"".join([batch.data for batch in group])
        was_dirty = self._dirty
        try:
            self._write(data)
        except OSError as exc:
            self._fail(group, exc)
        else:
            self._written(group, data)
        self._announce()
        if self._dirty and not was_dirty:
            self._work.set()  # the writer schedules the periodic fsync

    async def _write_group(self, group: list[Batch], thread: anyio.CapacityLimiter) -> None:
        data = b"".join([batch.data for batch in group])
        try:
            if (
                len(data) <= INLINE_WRITE_MAX
                and self.config.durability != "always"
                and not self._must_rotate(len(data))
            ):
                # A small append to the page cache costs less than the hop to a worker
                # thread (which dominated connection-per-event ingest); anything that
                # may block for long (fsync, rotation, big groups) still goes there.
                self._write(data)
            else:
                self._writing = True  # (write_now() leaves the queue alone meanwhile)
                try:
                    await anyio.to_thread.run_sync(self._write, data, limiter=thread)
                finally:
                    self._writing = False
        except OSError as exc:
            self._fail(group, exc)
        else:
            self._written(group, data)
        self._announce()

    def _written(self, group: list[Batch], data: bytes) -> None:
        self.failed = None
        count = 0
        for batch in group:
            batch.data = b""  # the dedup window keeps batches; not their bytes
            count += batch.count
        self.events_written += count
        self.durable_seq = group[-1].seq  # type: ignore[assignment]
        self.written_to = (self._segment, self._segment_size)
        for listener in self.listeners:
            listener(data, count)

    def _take_group(self) -> list[Batch]:
        group = [self._pending.popleft()]
        size = len(group[0].data)
        while self._pending and size + len(self._pending[0].data) <= GROUP_MAX_BYTES:
            batch = self._pending.popleft()
            size += len(batch.data)
            group.append(batch)
        self._pending_bytes -= size
        if self._space_waits:  # (else nobody to wake: the same event serves the next)
            space, self._space = self._space, anyio.Event()
            space.set()
        if self._space_waiters:
            waiters, self._space_waiters = self._space_waiters, []
            for callback in waiters:
                callback()
        return group

    def _fail(self, group: list[Batch], exc: OSError) -> None:
        self.failed = f"cannot write {self._segment}: {exc.strerror or exc}"
        # (A rotation that failed after closing the old segment left _fd at -1:
        # the next write tries to open a segment again.)
        lost = sum(b.count for b in group)
        log.error("%s; %d events not journaled", self.failed, lost)
        self.events_failed += lost
        for batch in group:
            batch.failed = True
            batch.data = b""
        # The failed batches are behind us: later ones may still succeed.
        self.durable_seq = group[-1].seq  # type: ignore[assignment]

    async def _wait_changed(self) -> None:
        self._changed_waits += 1
        try:
            await self._changed.wait()
        finally:
            self._changed_waits -= 1

    async def _wait_space(self) -> None:
        self._space_waits += 1
        try:
            await self._space.wait()
        finally:
            self._space_waits -= 1

    def _announce(self) -> None:
        if self._changed_waits:  # (else nobody to wake: the same event serves the next)
            changed, self._changed = self._changed, anyio.Event()
            changed.set()
        waiters = self._durable_waiters
        while waiters and waiters[0][0] <= self.durable_seq:
            heapq.heappop(waiters)[2]()

    def _call_waiters(self) -> None:
        """The writer stopped: every waiter looks again (and finds the journal closed)."""
        durable, self._durable_waiters = self._durable_waiters, []
        space, self._space_waiters = self._space_waiters, []
        for _, _, callback in durable:
            callback()
        for callback in space:
            callback()

    def stats(self) -> dict[str, Any]:
        try:
            segments = list_segments(self.directory)
        except FileNotFoundError:  # deleted: made again at the next write (_open_segment)
            segments = []
        size = 0
        for _, path in segments:
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(path).st_size
        return {
            "segments": len(segments),
            "bytes": size,
            "current_segment": os.path.basename(self._segment),
            "events_written": self.events_written,
            "events_failed": self.events_failed,
            "queued_bytes": self._pending_bytes,
            "durability": self.config.durability,
            "write_error": self.failed,
            "ignored_files": strays(self.directory),
        }
