"""From bytes to journal-ready events: framing, validation, stamping, dedup.

A :class:`Feed` is one byte stream (a socket connection or a spool file). It
splits what it reads into lines, decodes each with the typed decoder, stamps the
fields the daemon owns (``v``, ``id`` when the client chose none, ``ts`` when
absent, ``received_at``), drops ids it has already journaled, and hands the
canonical encoding of a chunk's events to the journal as one :class:`Batch`.
This is the per-event hot path: keep work out of the loop in
:meth:`Feed._process`.

A line can only ever cost itself: whatever goes wrong while processing it (a bug
included) becomes a rejection of that line (``internal_error`` when it is not the
line's fault), and the lines around it and the connection carry on.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime

import msgspec

from telemetryd import events as ev
from telemetryd import wire
from telemetryd.adapters.pricing import Table
from telemetryd.config import Ingest

log = logging.getLogger(__name__)

_DecodeErrors = ev.DECODE_ERRORS


class Batch(msgspec.Struct, gc=False):
    """A chunk's canonical events on their way into the journal.

    ``seq`` is set when the journal queues it (batches are written in ``seq``
    order); ``failed`` when writing it failed, so its events were not journaled.
    Compared by identity only. (A Struct without garbage-collector tracking: the
    dedup window holds up to 2 x ``dedup-window`` of them, one per connection of
    a hook, and they never hold a reference to anything but bytes and numbers.)
    """

    data: bytes = b""
    count: int = 0
    seq: int | None = None
    failed: bool = False


JOURNALED = Batch()  # stands for "already on disk" (ids read back from the journal)
JOURNALED.seq = 0


class Dedup:
    """The ids of at least the last ``window`` journaled events, and the batch that carried each.

    Ids the daemon assigned are recorded too, so that the window means the same
    while running as after a restart, when it is refilled from the journal.

    Two generations of dicts: lookups check both, and when the newer one holds
    ``window`` ids it becomes the older one. Memory stays bounded (at most
    2 x ``window`` ids); an id older than that is no longer recognised (the
    store deduplicates again).
    """

    def __init__(self, window: int) -> None:
        self.window = max(1, window)
        self._new: dict[str, Batch] = {}
        self._old: dict[str, Batch] = {}

    def get(self, event_id: str) -> Batch | None:
        batch = self._new.get(event_id)
        return self._old.get(event_id) if batch is None else batch

    def add(self, event_id: str, batch: Batch) -> None:
        self._new[event_id] = batch
        if len(self._new) >= self.window:
            self._old, self._new = self._new, {}

    def add_all(self, event_ids: list[str], batch: Batch) -> None:
        self._new.update(dict.fromkeys(event_ids, batch))
        if len(self._new) >= self.window:
            self._old, self._new = self._new, {}

    def discard(self, event_id: str, batch: Batch) -> None:
        """Forget ``event_id`` if ``batch`` carries it (its event was not journaled after all)."""
        for generation in (self._new, self._old):
            if generation.get(event_id) is batch:
                del generation[event_id]

    def __len__(self) -> int:
        return len(self._new) + len(self._old)


class IdMaker:
    """UUIDv7 ids (RFC 9562 §5.7) for events whose client chose none.

    Each call to :meth:`start` (once per millisecond, from :meth:`Ingestor.now`)
    draws fresh random bits for the fixed part; events then take consecutive
    values of a counter that starts at a random 47-bit value, so ids are unique
    and sort by time. The hot loop in :meth:`Feed._process` inlines :meth:`next`.
    """

    __slots__ = ("counter", "prefix")

    def __init__(self) -> None:
        self.prefix = ""
        self.counter = 0

    def start(self, unix_ms: int) -> None:
        rand = int.from_bytes(os.urandom(10), "big")
        hi = f"{unix_ms & 0xFFFFFFFFFFFF:012x}"
        rand_a = (rand >> 64) & 0xFFF
        variant = 0x8000 | ((rand >> 48) & 0x3FFF)
        self.prefix = f"{hi[:8]}-{hi[8:]}-7{rand_a:03x}-{variant:04x}-"
        self.counter = rand & 0x7FFFFFFFFFFF

    def next(self) -> str:
        self.counter += 1
        return f"{self.prefix}{self.counter & 0xFFFFFFFFFFFF:012x}"


class Counters:
    """Daemon-wide totals, reported by `status`; ``internal_errors`` counts the lines
    rejected because processing them failed unexpectedly (each is also in ``rejected``)."""

    __slots__ = ("accepted", "duplicates", "internal_errors", "rejected")

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.duplicates = 0
        self.internal_errors = 0


class Ingestor:
    """What all feeds share: limits, the id maker, the dedup window, the counters, and
    the prices that give an api_request without a reported cost its computed one."""

    def __init__(self, config: Ingest, prices: Table | None = None) -> None:
        self.config = config
        self.prices = prices
        self.ids = IdMaker()
        self.dedup = Dedup(config.dedup_window)
        self.counters = Counters()
        self._ms = -1
        self._now = datetime.fromtimestamp(0, UTC)

    def now(self) -> datetime:
        """The receive time (UTC, ms). A new millisecond also renews the id prefix."""
        unix_ms = time.time_ns() // 1_000_000
        if unix_ms != self._ms:
            self._ms = unix_ms
            self._now = datetime.fromtimestamp(unix_ms / 1000, UTC)
            self.ids.start(unix_ms)
        return self._now


def _reject(line: int, error: str, message: str, path: str | None = None) -> bytes:
    return wire.encode_line(wire.Rejected(line=line, error=error, message=message, path=path))


def _internal_error(counters: Counters, line: int, exc: BaseException) -> bytes:
    """The reply for a line whose processing raised ``exc``, which is logged (with its
    traceback the 1st, 2nd, 4th, 8th ... time, so that a flood of them stays readable)."""
    counters.internal_errors += 1
    count = counters.internal_errors
    if count & (count - 1) == 0:
        log.error(
            "line %d could not be processed (%d such lines so far); rejected it",
            line,
            count,
            exc_info=exc,
        )
    detail = f"{type(exc).__name__}: {exc}"
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return _reject(line, ev.INTERNAL_ERROR, f"the daemon failed to process this line ({detail})")


class Feed:
    """One stream of lines. Call :meth:`feed` with each chunk read and :meth:`end` at EOF;
    both return the batch to hand to the journal (or None) and the rejection replies."""

    def __init__(self, ingestor: Ingestor) -> None:
        self._ingestor = ingestor
        self._carry = b""
        self._skipping = False  # inside a line that is over the size limit
        self.lines = 0
        self.accepted = 0
        self.rejected = 0
        self.duplicates = 0
        # What must be journaled before this feed may acknowledge: its own last
        # batch (batches are written in order, so it covers the earlier ones), and
        # the batches that carried the ids it dropped as duplicates: each is checked
        # itself, since a write that failed must not be acknowledged through a
        # duplicate. Keyed by identity, one entry per batch (not per event).
        self.last: Batch | None = None
        self.waiting: dict[int, Batch] = {}
        self.sync_requested = False
        self._rest: list[bytes | None] = []

    def summary(self) -> bytes:
        return wire.encode_line(
            wire.Summary(
                ok=True,
                lines=self.lines,
                accepted=self.accepted,
                rejected=self.rejected,
                duplicates=self.duplicates,
            )
        )

    def feed(self, chunk: bytes) -> tuple[Batch | None, list[bytes]]:
        """Process the complete lines in ``chunk``: the batch to journal and the rejections.

        When a sync request is among the lines, processing stops after it and
        ``sync_requested`` is set; answer it, then call :meth:`resume`.
        """
        return self._run(self._frame(chunk))

    def end(self) -> tuple[Batch | None, list[bytes]]:
        """The stream ended: a final line without a newline is still an event."""
        last, self._carry = self._carry, b""
        if self._skipping or not last:
            self._skipping = False
            return None, []
        return self._run([last])

    def resume(self) -> tuple[Batch | None, list[bytes]]:
        """Process the lines that followed a sync request."""
        self.sync_requested = False
        rest, self._rest = self._rest, []
        return self._run(rest)

    def _frame(self, chunk: bytes) -> list[bytes | None]:
        """Split into complete lines; ``None`` stands for a line over the size limit."""
        if self._skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                return []
            self._skipping = False
            chunk = chunk[cut + 1 :]
        lines: list[bytes | None] = chunk.split(b"\n")  # type: ignore[assignment]
        if self._carry:
            lines[0] = self._carry + lines[0]  # type: ignore[operator]
        self._carry = lines.pop()  # type: ignore[assignment]
        if len(self._carry) > self._ingestor.config.max_line_bytes + 1:  # +1: a CR may follow
            # No newline yet and already too long: reject it now and drop the
            # rest of it as it arrives; the connection stays usable.
            self._carry = b""
            self._skipping = True
            lines.append(None)
        return lines

    def _run(self, lines: list[bytes | None]) -> tuple[Batch | None, list[bytes]]:
        replies: list[bytes] = []
        batch, done = self._process(lines, replies)
        self._rest = lines[done:]
        if batch is not None:
            self.last = batch
        return batch, replies

    def _process(self, lines: list[bytes | None], replies: list[bytes]) -> tuple[Batch | None, int]:
        ingestor = self._ingestor
        config = ingestor.config
        max_line = config.max_line_bytes
        max_attrs = config.max_attrs_bytes
        max_depth = config.max_attrs_depth
        dedup = ingestor.dedup
        decode = ev.DECODER.decode
        log_type = ev.Log
        api_type = ev.ApiRequest
        prices = ingestor.prices
        utc = UTC
        version = ev.SCHEMA_VERSION
        counters = ingestor.counters

        now = ingestor.now()
        ids = ingestor.ids
        id_prefix = ids.prefix
        id_counter = ids.counter
        batch = Batch()
        out: list[ev.AnyEvent] = []
        numbers: list[int] = []  # the line number of each event in ``out``
        assigned: list[str] = []
        lineno = self.lines
        rejected = duplicates = 0
        done = len(lines)
        append = out.append
        number = numbers.append
        first = lineno
        for line in lines:
            lineno += 1
            # Everything that can go wrong with one line costs that line only. Fallible
            # work comes before the id is recorded in the dedup window.
            try:
                if line is None or (len(line) > max_line and not _crlf_at_limit(line, max_line)):
                    rejected += 1
                    replies.append(
                        _reject(
                            lineno,
                            ev.LINE_TOO_LONG,
                            f"line is longer than the limit of {max_line} bytes",
                        )
                    )
                    continue
                try:
                    event = decode(line)
                except _DecodeErrors as exc:
                    if not line.strip():
                        continue  # blank lines (and a lone \r) are allowed
                    if _is_sync(line):
                        self.sync_requested = True
                        done = lineno - first
                        break
                    rejected += 1
                    invalid = ev.explain(exc, line)
                    replies.append(_reject(lineno, invalid.code, invalid.message, invalid.path))
                    continue
                attrs = event.attrs
                suspect = event.received_at is not None or event.__class__ is log_type
                if attrs is not None and not suspect:
                    suspect = len(line) > max_attrs
                    for value in attrs.values():  # inline: this runs for most events
                        if value.__class__ is dict or value.__class__ is list:
                            # The brackets in the line bound the depth: exact check only past it.
                            suspect = suspect or line.count(b"{") + line.count(b"[") > max_depth
                            break
                if suspect:
                    problem = ev.check_producer_rules(
                        event, line, max_attrs_bytes=max_attrs, max_attrs_depth=max_depth
                    )
                    if problem is not None:
                        rejected += 1
                        replies.append(_reject(lineno, problem.code, problem.message, problem.path))
                        continue
                ts = event.ts
                if ts is None:
                    event.ts = now
                elif ts.tzinfo is not utc or ts.microsecond % 1000:
                    try:
                        event.ts = ev.to_utc_ms(ts)
                    except ev.Invalid as invalid:
                        rejected += 1
                        replies.append(_reject(lineno, invalid.code, invalid.message, invalid.path))
                        continue
                if event.__class__ is api_type and prices is not None:
                    prices.price_request(event)
                event_id = event.id
                if event_id is None:
                    id_counter += 1
                    event.id = event_id = f"{id_prefix}{id_counter & 0xFFFFFFFFFFFF:012x}"
                    assigned.append(event_id)
                else:
                    previous = dedup.get(event_id)
                    if previous is not None and not previous.failed:
                        duplicates += 1
                        self._depend_on(previous, batch)
                        continue
                    dedup.add(event_id, batch)
                event.received_at = now
                event.v = version
                append(event)
                number(lineno)
            except Exception as exc:  # a bug: reject this line, keep the others
                rejected += 1
                replies.append(_internal_error(counters, lineno, exc))

        ids.counter = id_counter
        self.lines = lineno
        data = b""
        if out:
            try:
                data = ev.ENCODER.encode_lines(out)
            except Exception:  # never seen: find the event(s) at fault, keep the rest
                data, lost = self._encode_each(out, numbers, batch, replies)
                rejected += len(lost)
                assigned = [event_id for event_id in assigned if event_id not in lost]
                out = [event for event in out if event.id not in lost]
        self.rejected += rejected
        self.duplicates += duplicates
        counters.rejected += rejected
        counters.duplicates += duplicates
        if not out:
            return None, done
        if assigned:
            dedup.add_all(assigned, batch)
        batch.data = data
        batch.count = len(out)
        self.accepted += batch.count
        counters.accepted += batch.count
        return batch, done

    def _encode_each(
        self, out: list[ev.AnyEvent], numbers: list[int], batch: Batch, replies: list[bytes]
    ) -> tuple[bytes, set[str]]:
        """Encode event by event: the lines of those that fail are rejected, and their
        ids forgotten again. Returns the encoding of the others and the ids left out."""
        encode = ev.ENCODER.encode
        parts: list[bytes] = []
        lost: set[str] = set()
        for event, lineno in zip(out, numbers, strict=True):
            try:
                parts.append(encode(event) + b"\n")
            except Exception as exc:
                event_id = str(event.id)
                lost.add(event_id)
                self._ingestor.dedup.discard(event_id, batch)
                replies.append(_internal_error(self._ingestor.counters, lineno, exc))
        return b"".join(parts), lost

    def _depend_on(self, previous: Batch, current: Batch) -> None:
        """An id this feed sent came in ``previous``: acknowledge only once that is journaled."""
        if previous is not current and previous is not JOURNALED:
            self.waiting[id(previous)] = previous


def _crlf_at_limit(line: bytes, limit: int) -> bool:
    """A line of exactly ``limit`` bytes sent with CRLF: the ``\\r`` is framing, not content."""
    return len(line) == limit + 1 and line[-1] == 13


def _is_sync(line: bytes) -> bool:
    try:
        wire.SYNC_DECODER.decode(line)
    except _DecodeErrors:
        return False
    return True
