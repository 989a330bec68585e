"""From bytes to journal-ready events: framing, validation, stamping, dedup.

A :class:`Feed` is one byte stream (a socket connection or a spool file). It
frames what it reads into lines; a :class:`Checker` decodes each with the typed
decoder, stamps the fields the daemon owns (``v``, ``id`` when the client chose
none, ``ts`` when absent, ``received_at``) and encodes the valid events
canonically; the feed then drops the ids already journaled (the dedup window,
shared by all feeds) and hands a chunk's events to the journal as one
:class:`Batch`. The checking is the per-event hot path (keep work out of the loop
in :meth:`Checker.check`) and needs no shared state, so an ingest worker process
can do it (daemon/ingest_workers.py); the dedup window stays in the daemon.

A line can only ever cost itself: whatever goes wrong while processing it (a bug
included) becomes a rejection of that line (``internal_error`` when it is not the
line's fault), and the lines around it and the connection carry on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from telemetryd import events as ev
from telemetryd import wire

if TYPE_CHECKING:  # (ingest workers import this module: no configuration loader there)
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
    while running as after a restart, when it is refilled from the journal. They are
    kept as runs (:meth:`add_run`: the ids a :class:`Checker` assigned to one chunk
    differ only in a counter), which costs one entry per chunk instead of one per
    event; every other id has its own entry.

    Two generations: lookups check both, and when the newer one holds ``window`` ids
    it becomes the older one. Memory stays bounded (at most 2 x ``window`` ids); an
    id older than that is no longer recognised (the store deduplicates again).
    """

    def __init__(self, window: int) -> None:
        self.window = max(1, window)
        self._new: dict[str, Batch] = {}
        self._old: dict[str, Batch] = {}
        # prefix -> [(first counter, count, batch)] (see IdMaker), per generation
        self._new_runs: dict[str, list[tuple[int, int, Batch]]] = {}
        self._old_runs: dict[str, list[tuple[int, int, Batch]]] = {}
        self._new_size = 0  # ids in the newer generation, its runs' included
        self._old_size = 0

    def get(self, event_id: str) -> Batch | None:
        batch = self._new.get(event_id)
        if batch is None:
            batch = self._old.get(event_id)
            if batch is None and len(event_id) == _ID_LENGTH:
                return self._in_runs(event_id)
        return batch

    def _in_runs(self, event_id: str) -> Batch | None:
        prefix = event_id[:_ID_PREFIX]
        for generation in (self._new_runs, self._old_runs):
            runs = generation.get(prefix)
            if runs:
                tail = event_id[_ID_PREFIX:]
                try:
                    counter = int(tail, 16)
                except ValueError:
                    return None
                if f"{counter:012x}" != tail:  # (exactly as IdMaker writes them)
                    return None
                for first, count, batch in runs:
                    if (counter - first) & _COUNTER_MASK < count:
                        return batch
        return None

    def add(self, event_id: str, batch: Batch) -> None:
        if event_id not in self._new:
            self._new_size += 1
        self._new[event_id] = batch
        if self._new_size >= self.window:
            self._turn()

    def claim(self, event_ids: list[str], batch: Batch) -> list[tuple[int, Batch]]:
        """Record ``batch`` as carrying each of ``event_ids`` that is not already in the
        window (or only in a batch whose write failed); return the others, as (index in
        ``event_ids``, the batch that carried it). An id twice in the list: the second is
        found in ``batch``."""
        new = self._new
        old = self._old
        runs = self._new_runs or self._old_runs
        if (
            not runs
            and new.keys().isdisjoint(event_ids)
            and old.keys().isdisjoint(event_ids)
            and len(unique := dict.fromkeys(event_ids, batch)) == len(event_ids)
        ):
            # (the usual chunk: ids never seen, each once; the loop below, in C)
            new.update(unique)
            self._new_size += len(unique)
            if self._new_size >= self.window:
                self._turn()
            return []
        found: list[tuple[int, Batch]] = []
        size = self._new_size
        for index, event_id in enumerate(event_ids):
            previous = new.get(event_id)
            if previous is None:
                previous = old.get(event_id)
                if previous is None and runs and len(event_id) == _ID_LENGTH:
                    previous = self._in_runs(event_id)
                if previous is None or previous.failed:
                    new[event_id] = batch
                    size += 1
                    continue
            elif previous.failed:
                new[event_id] = batch
                continue
            found.append((index, previous))
        self._new_size = size
        if size >= self.window:
            self._turn()
        return found

    def add_run(self, prefix: str, first: int, count: int, batch: Batch) -> None:
        """Record the ``count`` ids ``prefix`` + counter from ``first`` on (IdMaker's)."""
        self._new_runs.setdefault(prefix, []).append((first, count, batch))
        self._new_size += count
        if self._new_size >= self.window:
            self._turn()

    def renew(self, journaled: list[str], since: int) -> None:
        """Start again from ``journaled``, the ids on disk now (oldest first, at most
        ``window``: the journal read again after retention deleted segments, whose ids
        go), keeping the ids of batches queued from journal seq ``since`` on or not
        queued yet (not written when the reading began: the reading may not have them)."""

        def later(batch: Batch) -> bool:
            return batch.seq is None or batch.seq >= since

        kept = [
            (event_id, batch)
            for generation in (self._old, self._new)
            for event_id, batch in generation.items()
            if later(batch)
        ]
        runs = [
            (prefix, first, count, batch)
            for generation in (self._old_runs, self._new_runs)
            for prefix, found in generation.items()
            for first, count, batch in found
            if later(batch)
        ]
        self._new, self._old, self._new_runs, self._old_runs = {}, {}, {}, {}
        self._new_size = self._old_size = 0
        for event_id in journaled:
            self.add(event_id, JOURNALED)
        for event_id, batch in kept:
            self.add(event_id, batch)
        for prefix, first, count, batch in runs:
            self.add_run(prefix, first, count, batch)

    def _turn(self) -> None:
        self._old, self._new = self._new, {}
        self._old_runs, self._new_runs = self._new_runs, {}
        self._old_size, self._new_size = self._new_size, 0

    def __len__(self) -> int:
        return self._new_size + self._old_size


class IdMaker:
    """UUIDv7 ids (RFC 9562 §5.7) for events whose client chose none.

    Each call to :meth:`start` (once per millisecond, from :meth:`Checker.now`)
    draws fresh random bits for the fixed part (``prefix``, 24 characters); events
    then take consecutive values of a counter that starts at a random 47-bit value,
    written as its last 12 hex digits, so ids are unique and sort by time. The hot
    loop in :meth:`Checker.check` inlines :meth:`next`.
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
        return f"{self.prefix}{self.counter & _COUNTER_MASK:012x}"


# Nesting the decoder may reach (frames of recursion left to it), and the shortest line
# that could come near it (two brackets a level): see Checker.check.
_DECODE_DEPTH = 1000
_DEEP_LINE = 1600


def _stack_depth() -> int:
    frame: Any = sys._getframe(1)
    depth = 1
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


_ID_PREFIX = 24  # IdMaker's prefix: "01890a5d-ac96-774b-bcce-"
_ID_LENGTH = _ID_PREFIX + 12
_COUNTER_MASK = 0xFFFFFFFFFFFF
_HEX2 = [f"{n:02x}" for n in range(256)]


class Counters:
    """Daemon-wide totals, reported by `status`; ``internal_errors`` counts the lines
    rejected because processing them failed unexpectedly (each is also in ``rejected``)."""

    __slots__ = ("accepted", "duplicates", "internal_errors", "rejected")

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.duplicates = 0
        self.internal_errors = 0


class Checked(msgspec.Struct, array_like=True, gc=False):
    """What checking a run of lines found (:meth:`Checker.check`), for :meth:`Feed.applied`.

    ``data`` holds the canonical encoding of the valid events, one line each, in order;
    ``client_ids`` the ids their producers chose and ``client_at`` those events' places
    in ``data``; the others were given the ``id_count`` ids ``id_prefix`` + counter
    from ``id_first`` on (:class:`IdMaker`). ``sync`` is -1, or (when the
    checking stopped at a sync request) the offset just past that request's line in
    the bytes checked: the lines from there are checked after the summary.
    """

    lines: int = 0  # lines looked at (through the sync request, when one stopped it)
    sync: int = -1
    data: bytes = b""
    count: int = 0
    client_ids: list[str] = msgspec.field(default_factory=list)
    client_at: list[int] = msgspec.field(default_factory=list)
    id_prefix: str = ""
    id_first: int = 0
    id_count: int = 0
    replies: list[bytes] = msgspec.field(default_factory=list)
    rejected: int = 0
    internal_errors: int = 0


_EMPTY = Checked()


class Checker:
    """The per-event work on lines: decoding, validation, the fields the daemon sets
    (``v``, ``id`` when the client chose none, ``ts`` when absent, ``received_at``,
    ``cost_source`` reported on an api_request that carries its cost), canonical
    encoding. Costs are never computed here: the store worker prices each request as it
    loads it (store/pricing.py), so the daemon never imports the price data. It needs
    nothing shared between connections (the dedup window is applied afterwards, by
    :meth:`Feed.applied`), so an ingest worker process (daemon/ingest_workers.py) runs
    the same code on its own ``Checker``."""

    def __init__(self) -> None:
        self.ids = IdMaker()
        self.internal_errors = 0  # lines whose processing failed (a bug), for the log
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

    def check(
        self,
        region: bytes,
        lineno: int,
        max_line: int,
        max_attrs: int,
        max_depth: int,
        *,
        keep_received: bool = False,
        attrs: list[bytes] | None = None,
    ) -> Checked:
        """Check the lines of ``region`` (each ends in a newline), the first being line
        ``lineno + 1`` of its stream.

        ``attrs`` (the OTLP mappers' events: adapters/otel/export.py), one item per line:
        that line's ``attrs`` in the canonical encoding, left out of the line (b"": the
        line is whole). They are checked as if they were in the line, by the same limits
        (measured exactly, since the bytes are the canonical encoding; only attrs near a
        limit are decoded) and put into the event's line as they are.

        ``keep_received``: the lines are another telemetryd's journal lines (forwarded
        over OTLP: adapters/otel/forwarded.py), so an event that has a ``received_at``
        keeps it, and the price it was journaled with (none is computed here), instead
        of being rejected for it: the event stays the same event on every instance.

        How deep a line may nest before the decoder gives up ("nested too deeply") is
        the same wherever this runs (the daemon's event loop, an ingest worker): Python's
        recursion limit counts the frames below the caller too, so it is set relative to
        here while a region that could hold such a line is checked."""
        if len(region) < _DEEP_LINE and not attrs:
            return self._check(region, lineno, max_line, max_attrs, max_depth, keep_received)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(_stack_depth() + _DECODE_DEPTH)
        try:
            return self._check(region, lineno, max_line, max_attrs, max_depth, keep_received, attrs)
        finally:
            sys.setrecursionlimit(limit)

    def _check(
        self,
        region: bytes,
        lineno: int,
        max_line: int,
        max_attrs: int,
        max_depth: int,
        keep_received: bool = False,
        apart: list[bytes] | None = None,
    ) -> Checked:
        """:meth:`check`'s work (``apart``: its ``attrs``). This is the per-event hot path:
        keep work out of the loop."""
        if not region:
            return _EMPTY
        lines = region.split(b"\n")
        lines.pop()  # (after the last newline)
        decode = ev.DECODER.decode
        log_type = ev.Log
        api_type = ev.ApiRequest
        utc = UTC
        version = ev.SCHEMA_VERSION
        now = self.now()
        ids = self.ids
        id_prefix = ids.prefix
        id_start = id_counter = ids.counter
        hex2 = _HEX2
        # Ids are id_prefix + 12 hex digits of the counter: the first 10 change every
        # 256 ids (``id_head``), the last 2 come from a table.
        id_head = f"{id_prefix}{((id_counter + 1) & _COUNTER_MASK) >> 8:010x}"
        out: list[ev.AnyEvent] = []
        numbers: list[int] = []  # the line number of each event in ``out``
        client_ids: list[str] = []
        client_at: list[int] = []
        replies: list[bytes] = []
        sync = -1
        rejected = internal = 0
        first = lineno
        append = out.append
        number = numbers.append
        long_lines = len(region) > max_line  # (else none can be over the limit)
        raw = b""  # the line's attrs apart (``apart``)
        spliced = None
        raw_type = msgspec.Raw
        for index, line in enumerate(lines):
            lineno += 1
            # Everything that can go wrong with one line costs that line only.
            try:
                if apart is not None:
                    raw = apart[index]
                    if raw and len(line) + len(raw) + 9 > max_line:  # (9: `,"attrs":`)
                        rejected += 1
                        message = f"line is longer than the limit of {max_line} bytes"
                        replies.append(_reject(lineno, ev.LINE_TOO_LONG, message))
                        continue
                if long_lines and len(line) > max_line and not _crlf_at_limit(line, max_line):
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
                    if apart is None and _is_sync(line):
                        sync = _offset_after(lines, lineno - first)
                        break
                    rejected += 1
                    invalid = ev.explain(exc, line)
                    replies.append(_reject(lineno, invalid.code, invalid.message, invalid.path))
                    continue
                if raw:
                    if event.attrs is not None:
                        raise ValueError("attrs both in the line and apart")
                    if len(raw) > max_attrs or _brackets(raw) > max_depth:
                        # Near a limit: the exact checks below, on the value.
                        event.attrs = msgspec.json.decode(raw)
                        line = raw + line  # (bounds attrs' size and depth, as a line does)
                        spliced = None
                    else:
                        spliced = raw_type(raw)
                attrs = event.attrs
                kept = None
                if keep_received and event.received_at is not None:
                    kept, event.received_at = event.received_at, None
                suspect = event.received_at is not None or event.__class__ is log_type
                if attrs is not None and not suspect:
                    # The exact checks of attrs run only for a line that could fail them:
                    # its size bounds attrs' size, and its brackets bound attrs' depth
                    # (then it is suspect only if attrs nests at all).
                    suspect = len(line) > max_attrs
                    if not suspect and _brackets(line) > max_depth:
                        for value in attrs.values():
                            if value.__class__ is dict or value.__class__ is list:
                                suspect = True
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
                if kept is not None:
                    if kept.tzinfo is not utc or kept.microsecond % 1000:
                        try:
                            kept = ev.to_utc_ms(kept)
                        except ev.Invalid as invalid:
                            rejected += 1
                            replies.append(
                                _reject(lineno, invalid.code, invalid.message, "$.received_at")
                            )
                            continue
                elif (
                    event.__class__ is api_type
                    and event.cost_usd is not None
                    and event.cost_source is None
                ):
                    event.cost_source = "reported"
                event_id = event.id
                if event_id is None:
                    id_counter += 1
                    low = id_counter & 0xFF
                    if not low:
                        id_head = f"{id_prefix}{(id_counter & _COUNTER_MASK) >> 8:010x}"
                    event.id = id_head + hex2[low]
                else:
                    client_at.append(len(out))
                    client_ids.append(event_id)
                event.received_at = now if kept is None else kept
                event.v = version
                if spliced is not None:
                    # (encoded as they are: the canonical bytes of the dict they stand for)
                    event.attrs = spliced  # type: ignore[assignment]
                    spliced = None
                append(event)
                number(lineno)
            except Exception as exc:  # a bug: reject this line, keep the others
                rejected += 1
                internal += 1
                replies.append(self._internal_error(lineno, exc))
        ids.counter = id_counter
        checked = Checked(
            lineno - first,
            sync,
            b"",
            len(out),
            client_ids,
            client_at,
            id_prefix,
            (id_start + 1) & _COUNTER_MASK,
            id_counter - id_start,
            replies,
            rejected,
            internal,
        )
        if out:
            try:
                checked.data = ev.ENCODER.encode_lines(out)
            except Exception:  # never seen: find the event(s) at fault, keep the rest
                self._encode_each(out, numbers, checked)
        return checked

    def _encode_each(self, out: list[ev.AnyEvent], numbers: list[int], checked: Checked) -> None:
        """Encode event by event: the lines of those that fail are rejected. ``checked``
        then describes the others only (but for the ids assigned: their run stays whole,
        the lost ones included, which nobody was ever told)."""
        encode = ev.ENCODER.encode
        chosen = set(checked.client_ids)
        parts: list[bytes] = []
        checked.client_ids, checked.client_at = [], []
        for event, lineno in zip(out, numbers, strict=True):
            try:
                parts.append(encode(event) + b"\n")
            except Exception as exc:
                checked.rejected += 1
                checked.internal_errors += 1
                checked.replies.append(self._internal_error(lineno, exc))
                continue
            event_id = str(event.id)
            if event_id in chosen:
                checked.client_at.append(len(parts) - 1)
                checked.client_ids.append(event_id)
        checked.data = b"".join(parts)
        checked.count = len(parts)

    def _internal_error(self, line: int, exc: BaseException) -> bytes:
        """The reply for a line whose processing raised ``exc``, which is logged (with its
        traceback the 1st, 2nd, 4th, 8th ... time, so that a flood of them stays readable)."""
        self.internal_errors += 1
        count = self.internal_errors
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
        return _reject(
            line, ev.INTERNAL_ERROR, f"the daemon failed to process this line ({detail})"
        )


class Ingestor:
    """What all feeds share: limits, the dedup window, the counters, and the
    :class:`Checker` (with its id maker)."""

    def __init__(self, config: Ingest) -> None:
        self.config = config
        self.checker = Checker()
        self.dedup = Dedup(config.dedup_window)
        self.counters = Counters()


def _reject(line: int, error: str, message: str, path: str | None = None) -> bytes:
    return wire.encode_line(wire.Rejected(line=line, error=error, message=message, path=path))


def _offset_after(lines: list[bytes], count: int) -> int:
    """The offset just past the first ``count`` of ``lines`` (each followed by a newline)."""
    return sum(len(line) for line in lines[:count]) + count


class Feed:
    """One stream of lines. Call :meth:`feed` with each chunk read and :meth:`end` at EOF;
    both return the batch to hand to the journal (or None) and the rejection replies.

    :meth:`feed` is :meth:`frame`, :meth:`check` and :meth:`applied` in a row; a
    connection that has an ingest worker check the lines calls :meth:`frame`, sends
    what it returned, and calls :meth:`applied` with the worker's answer."""

    def __init__(self, ingestor: Ingestor) -> None:
        self._ingestor = ingestor
        self._carry = b""
        self._skipping = False  # inside a line that is over the size limit
        self.overlong = False  # a line over the limit follows the lines framed last
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
        self._rest = b""  # the lines after a sync request, checked once it is answered
        self._rest_overlong = False  # ... and whether a line over the limit followed them

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

    def feed(
        self, chunk: bytes, *, keep_received: bool = False, attrs: list[bytes] | None = None
    ) -> tuple[Batch | None, list[bytes]]:
        """Process the complete lines in ``chunk``: the batch to journal and the rejections.

        When a sync request is among the lines, processing stops after it and
        ``sync_requested`` is set; answer it, then call :meth:`resume`.
        ``keep_received``, ``attrs``: as :meth:`Checker.check`'s (forwarded events; the
        OTLP mappers' attrs apart, for a ``chunk`` of whole lines only).
        """
        region = self.frame(chunk)
        if attrs is not None and (len(region) != len(chunk) or self._carry):
            raise ValueError("attrs apart need a chunk of whole lines")
        return self.applied(region, self.check(region, keep_received=keep_received, attrs=attrs))

    def end(self) -> tuple[Batch | None, list[bytes]]:
        """The stream ended: a final line without a newline is still an event."""
        last, self._carry = self._carry, b""
        if self._skipping or not last:
            self._skipping = False
            return None, []
        region = last + b"\n"
        return self.applied(region, self.check(region))

    def resume(self) -> tuple[Batch | None, list[bytes]]:
        """Process the lines that followed a sync request."""
        self.sync_requested = False
        rest, self._rest = self._rest, b""
        return self.applied(rest, self.check(rest), self._rest_overlong)

    def frame(self, chunk: bytes) -> bytes:
        """The complete lines in ``chunk`` and before it, each ending in a newline (b""
        if none). A line still without its newline past the size limit is rejected
        now (by :meth:`applied`), and its rest dropped as it arrives."""
        if self._skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                return b""
            self._skipping = False
            chunk = chunk[cut + 1 :]
        cut = chunk.rfind(b"\n") + 1
        if cut:
            # (One copy: a slice of the chunk and a concatenation would be two.)
            region = (
                b"".join((self._carry, memoryview(chunk)[:cut])) if self._carry else chunk[:cut]
            )
            self._carry = chunk[cut:]
        else:
            region = b""
            self._carry += chunk
        if len(self._carry) > self._ingestor.config.max_line_bytes + 1:  # +1: a CR may follow
            # No newline yet and already too long: the connection stays usable.
            self._carry = b""
            self._skipping = True
            self.overlong = True
        return region

    def check(
        self, region: bytes, *, keep_received: bool = False, attrs: list[bytes] | None = None
    ) -> Checked:
        """Check ``region`` here, on the daemon's :class:`Checker`."""
        config = self._ingestor.config
        return self._ingestor.checker.check(
            region,
            self.lines,
            config.max_line_bytes,
            config.max_attrs_bytes,
            config.max_attrs_depth,
            keep_received=keep_received,
            attrs=attrs,
        )

    def applied(
        self,
        region: bytes,
        checked: Checked,
        overlong: bool | None = None,
    ) -> tuple[Batch | None, list[bytes]]:
        """Take the events ``checked`` found in ``region`` (from :meth:`frame`): drop the
        ids already journaled (or sent earlier), count, and return the batch to hand to
        the journal and the rejections.

        ``overlong``: whether a line over the limit followed ``region`` (by default what
        the last :meth:`frame` said). ``checked`` must have been checked from this feed's
        line count (:attr:`lines`), as :meth:`check` does."""
        ingestor = self._ingestor
        counters = ingestor.counters
        replies = checked.replies
        rejected = checked.rejected
        if overlong is None:
            overlong, self.overlong = self.overlong, False
        self.lines += checked.lines
        if checked.sync >= 0:
            self.sync_requested = True
            self._rest = region[checked.sync :]
            self._rest_overlong = overlong
        elif overlong:
            self.lines += 1
            rejected += 1
            limit = ingestor.config.max_line_bytes
            replies = [
                *replies,
                _reject(
                    self.lines, ev.LINE_TOO_LONG, f"line is longer than the limit of {limit} bytes"
                ),
            ]
        if checked.internal_errors:
            counters.internal_errors += checked.internal_errors
        if rejected:
            self.rejected += rejected
            counters.rejected += rejected
        count = checked.count
        if not count:
            return None, replies
        batch = Batch()
        data = checked.data
        dedup = ingestor.dedup
        if checked.client_ids:
            found = dedup.claim(checked.client_ids, batch)
            if found:
                client_at = checked.client_at
                dropped = set()
                for index, previous in found:
                    if previous is not batch and previous is not JOURNALED:
                        self.waiting[id(previous)] = previous
                    dropped.add(client_at[index])
                self.duplicates += len(dropped)
                counters.duplicates += len(dropped)
                count -= len(dropped)
                lines = data.split(b"\n")
                data = b"".join(
                    [line + b"\n" for at, line in enumerate(lines[:-1]) if at not in dropped]
                )
                if not count:  # (then none was assigned an id either)
                    return None, replies
        if checked.id_count:
            dedup.add_run(checked.id_prefix, checked.id_first, checked.id_count, batch)
        batch.data = data
        batch.count = count
        self.accepted += count
        counters.accepted += count
        self.last = batch
        return batch, replies


def _brackets(data: bytes) -> int:
    """How many ``{`` and ``[`` ``data`` holds (a bound on how deep its JSON nests). Most
    events have no list: ``[`` is looked for first (memchr) rather than counted."""
    if data.find(b"[") < 0:
        return data.count(b"{")
    return data.count(b"{") + data.count(b"[")


def _crlf_at_limit(line: bytes, limit: int) -> bool:
    """A line of exactly ``limit`` bytes sent with CRLF: the ``\\r`` is framing, not content."""
    return len(line) == limit + 1 and line[-1] == 13


def _is_sync(line: bytes) -> bool:
    try:
        wire.SYNC_DECODER.decode(line)
    except _DecodeErrors:
        return False
    return True
