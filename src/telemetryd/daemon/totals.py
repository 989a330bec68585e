"""Running totals of API usage per UTC day, per session and per quarter hour, kept by the daemon.

What a status line needs (this session's cost, today's, the active 5-hour window's)
must not wait for the store worker, or start it: the daemon keeps these totals in
memory. They cost ingest
nothing: :meth:`Totals.refresh` reads the journal from where it stopped last time
(complete lines only; a closed segment is never read twice) and adds up the
``api_request`` events it finds, picked out by their canonical first bytes without
decoding the others. The first refresh reads the last :data:`DAYS` days of segments
(by their last write), so the totals are whole after a restart too.

Each total counts requests, the four token counts, the cost of the requests that
have one, and the requests whose cost is unknown (a sum that leaves them out must
say so). Days older than :data:`DAYS` and all but the :data:`SESSIONS` most recently
active sessions are dropped; memory stays bounded.

Computed costs: the daemon never prices a request (the price data imports pydantic);
the store worker prices each ``api_request`` as it loads it. A request journaled
without a cost its producer reports (an OTLP export that carries none, `send` without
``--cost-usd``, or a cost marked ``computed`` or ``unknown``, as `telemetryctl import`
sends its own: the store prices those again, and a reprice after a price change too)
is counted as unknown and kept in :attr:`Totals.pending` by its id, with the tallies it
went into (its day, quarter hours and session), if it is no older than :data:`DAYS`
days. The daemon asks the store worker for the costs of the pending ids after a load
(:meth:`Totals.unpriced`, daemon/store_worker.py) and hands the answer to
:meth:`Totals.price`, which moves each found request from unknown to its computed
cost in every tally it is in, once: the id leaves ``pending`` then, so a second
answer for it changes nothing. A restart reads the journal back (every
cost-less request pending again) and asks again; an id the store has not loaded
after :data:`ASKS` answers stays unknown, and at most :data:`PENDING` ids wait.

Each request is counted once, as the store keeps one row per id: a line whose id was
counted already on the UTC day of its time (the same request journaled again, such as
a resend after the ingest's duplicate window forgot it: a copy's time is its
request's) adds nothing. The ids are kept per day, for the days kept, as 8-byte hashes
in sorted arrays (:class:`_Ids`), so a million requests in a week cost the daemon
about 20 MB; a session's total could count again a request older than the days kept.

Quarter hours (at most ``DAYS * 96`` of them, twice: all usage, and Claude's) answer
what the days cannot: the usage since a client's local midnight (every time zone's
offset is a whole number of quarter hours), and the 5-hour windows of Claude usage,
Claude's billing blocks as ccusage's ``blocks`` draws them: a window starts at the
hour of its first request and ends 5 h later; the next request after its end, or
after a gap of more than 5 h, starts the next one (a request exactly at its end, or
exactly 5 h after the one before, stays in it). A quarter hour never straddles a
window's end (windows start on the hour), and the Claude requests at the very
millisecond of an hour are kept apart from the rest of the quarter it begins, so
walking the quarters in order draws the same windows as walking the requests. The walk
starts at the oldest quarter kept, :data:`DAYS` days back: only 7 days of activity
without a 5-hour gap could place a window otherwise than ccusage does. It ends at the
daemon's clock (and :data:`SKEW` after it): a request stamped later (a producer's clock
off, a bad time in a transcript) is in its session's totals, but in no window and in no
"since" until its time comes, and days and quarters more than a day ahead are not kept. A request is
Claude usage when its source is ``claude-code``, its provider ``anthropic`` or its
model's name starts with ``claude``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import msgspec

from telemetryd import wire
from telemetryd.daemon import segments
from telemetryd.wire import UsageTotals

log = logging.getLogger(__name__)

DAYS = 7  # days of totals kept (and read back from the journal at start)
SESSIONS = 10_000  # sessions kept, the most recently active
QUARTER = 900  # seconds in one bucket of the quarter-hour tallies
WINDOW = 5 * 3600  # a billing window's length, and the gap that ends one early
PENDING = 50_000  # cost-less requests waiting for their computed cost, at most
ASKS = 3  # answers without an id before it stays unknown
IN_USE = 3600.0  # seconds after a totals request in which loads read the journal too
SKEW = 300  # seconds a request may be stamped after the daemon's clock and count as now
AHEAD = 86_400  # seconds ahead of the clock that days and quarter hours are kept
_API = b'{"type":"api_request"'
_BLOCK = 4 * 1024 * 1024


class _Tokens(msgspec.Struct):
    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_creation: int | None = None


class _Agent(msgspec.Struct):
    model: str | None = None
    provider: str | None = None


class _Request(msgspec.Struct):
    id: str | None = None
    ts: datetime | None = None
    source: str | None = None
    session_id: str | None = None
    agent: _Agent | None = None
    tokens: _Tokens | None = None
    cost_usd: float | None = None
    cost_source: str | None = None

    def reported(self) -> float | None:
        """The cost its producer reports (None: the store computes one)."""
        if self.cost_source is None or self.cost_source == "reported":
            return self.cost_usd
        return None

    def is_claude(self) -> bool:
        if self.source == "claude-code":
            return True
        agent = self.agent
        if agent is None:
            return False
        return agent.provider == "anthropic" or (agent.model or "").startswith("claude")


_DECODER = msgspec.json.Decoder(_Request)


def _add(tally: UsageTotals, request: _Request, cost: float | None, when: str | None) -> None:
    tally.requests += 1
    tokens = request.tokens
    if tokens is not None:
        tally.input += tokens.input or 0
        tally.output += tokens.output or 0
        tally.cache_read += tokens.cache_read or 0
        tally.cache_creation += tokens.cache_creation or 0
    if cost is None:
        tally.unknown_cost += 1
    else:
        tally.cost_usd += cost
    if when is not None:
        if tally.first is None or when < tally.first:
            tally.first = when
        if tally.last is None or when > tally.last:
            tally.last = when


class _Quarter:
    """One quarter hour's tally, with its first and last request's time (epoch seconds)."""

    __slots__ = ("first", "last", "tally")

    def __init__(self) -> None:
        self.tally = UsageTotals()
        self.first = float("inf")
        self.last = float("-inf")

    def note(self, epoch: float) -> None:
        self.first = min(self.first, epoch)
        self.last = max(self.last, epoch)


class _Ids:
    """The hashes of the ids counted on one day: a sorted array (8 bytes each) and a set
    of the latest few, merged into the array :data:`MERGE` at a time (a set costs ten
    times the memory per id)."""

    __slots__ = ("recent", "sorted")
    MERGE = 8192

    def __init__(self) -> None:
        self.sorted = array("q")
        self.recent: set[int] = set()

    def __contains__(self, key: int) -> bool:
        if key in self.recent:
            return True
        found = self.sorted
        at = bisect_left(found, key)
        return at < len(found) and found[at] == key

    def add(self, key: int) -> None:
        self.recent.add(key)
        if len(self.recent) >= self.MERGE:
            # (two sorted runs: the sort merges them in one pass)
            self.sorted = array("q", sorted(chain(self.sorted, sorted(self.recent))))
            self.recent.clear()


class _Pending:
    """A request counted without a cost: the tallies it is in, its time, asks so far."""

    __slots__ = ("asked", "epoch", "tallies")

    def __init__(self, tallies: tuple[UsageTotals, ...], epoch: float) -> None:
        self.tallies = tallies
        self.epoch = epoch
        self.asked = 0


def _merge(into: UsageTotals, tally: UsageTotals) -> None:
    into.requests += tally.requests
    into.input += tally.input
    into.output += tally.output
    into.cache_read += tally.cache_read
    into.cache_creation += tally.cache_creation
    into.cost_usd += tally.cost_usd
    into.unknown_cost += tally.unknown_cost
    if tally.first is not None and (into.first is None or tally.first < into.first):
        into.first = tally.first
    if tally.last is not None and (into.last is None or tally.last > into.last):
        into.last = tally.last


class Totals:
    """Per-day, per-session and per-quarter-hour tallies of the journal's API requests."""

    def __init__(self, journal_dir: str, *, clock: Any = time.time) -> None:
        self.journal_dir = journal_dir
        self._clock = clock
        self._read: dict[int, int] = {}  # seq -> bytes read (plain segments)
        self._done: set[int] = set()  # segments read to their end, never read again
        self._started = False
        self.days: dict[str, UsageTotals] = {}
        self.sessions: OrderedDict[str, UsageTotals] = OrderedDict()
        self.quarters: dict[int, _Quarter] = {}  # epoch // QUARTER -> all usage
        self.claude: dict[int, _Quarter] = {}  # the same, Claude usage only
        self.claude_on_the_hour: dict[int, _Quarter] = {}  # (its requests at xx:00:00.000)
        self.counted: dict[str, _Ids] = {}  # UTC day -> the ids counted
        self.pending: dict[str, _Pending] = {}  # id -> a request counted without a cost
        self.priced = 0  # requests whose computed cost was added
        self.asked_at = float("-inf")  # the clock when the totals were last asked for

    def refresh(self) -> None:
        """Add what was journaled since the last refresh (blocks: run it in a thread)."""
        found = segments.chosen(self.journal_dir)
        cutoff = self._clock() - DAYS * 86_400
        for index, (seq, path) in enumerate(found):
            if seq in self._done:
                continue
            newest = index == len(found) - 1
            try:
                if not self._started and os.stat(path).st_mtime < cutoff:
                    self._done.add(seq)  # older than any day kept
                    continue
                if segments.is_compressed(path):
                    self._read_compressed(seq, path)
                else:
                    self._read_plain(seq, path, closed=not newest)
            except FileNotFoundError:  # deleted meanwhile (retention)
                self._done.add(seq)
            except (OSError, *segments.DAMAGE_ERRORS) as exc:
                log.warning("totals: cannot read %s (%s); left out", path, exc)
                self._done.add(seq)
        self._started = True
        self._trim()

    def _read_plain(self, seq: int, path: str, *, closed: bool) -> None:
        start = self._read.get(seq, 0)
        with open(path, "rb") as f:
            f.seek(start)
            carry = b""
            while block := f.read(_BLOCK):
                data = carry + block
                cut = data.rfind(b"\n") + 1
                self._add_lines(data[:cut])
                start += cut
                carry = data[cut:]
        self._read[seq] = start
        if closed:
            self._done.add(seq)
            self._read.pop(seq, None)

    def _read_compressed(self, seq: int, path: str) -> None:
        skip = self._read.pop(seq, 0)  # (read as plain before it was compressed)
        with segments.open_content(path) as content:
            carry = b""
            position = 0
            while block := content.read(_BLOCK):
                data = carry + block
                cut = data.rfind(b"\n") + 1
                lines = data[:cut]
                if position + cut > skip:
                    self._add_lines(lines[max(0, skip - position) :])
                position += cut
                carry = data[cut:]
        self._done.add(seq)

    def _add_lines(self, data: bytes) -> None:
        if _API not in data:
            return
        pending = self.pending
        counted = self.counted
        cutoff = self._clock() - DAYS * 86_400
        for line in data.split(b"\n"):
            if not line.startswith(_API):
                continue
            try:
                request = _DECODER.decode(line)
            except msgspec.DecodeError:
                continue
            cost = request.reported()
            tallies: list[UsageTotals] = []
            when = _rfc3339(request.ts)
            epoch = None
            if when is not None and request.ts is not None:
                if request.id is not None:
                    key = hash(request.id)
                    ids = counted.get(when[:10])
                    if ids is None:
                        ids = counted[when[:10]] = _Ids()
                    elif key in ids:
                        continue  # the same request journaled again: counted once
                    ids.add(key)
                tallies.append(self.days.setdefault(when[:10], UsageTotals()))
                epoch = request.ts.timestamp()
                quarter = int(epoch // QUARTER)
                bucket = self.quarters.get(quarter)
                if bucket is None:
                    bucket = self.quarters[quarter] = _Quarter()
                bucket.note(epoch)
                tallies.append(bucket.tally)
                if request.is_claude():
                    on_the_hour = int(epoch * 1000) % 3_600_000 == 0  # (to the millisecond)
                    claude = self.claude_on_the_hour if on_the_hour else self.claude
                    bucket = claude.get(quarter)
                    if bucket is None:
                        bucket = claude[quarter] = _Quarter()
                    bucket.note(epoch)
                    tallies.append(bucket.tally)
            session = request.session_id
            if session is not None:
                tally = self.sessions.get(session)
                if tally is None:
                    tally = self.sessions[session] = UsageTotals()
                else:
                    self.sessions.move_to_end(session)
                tallies.append(tally)
            for tally in tallies:
                _add(tally, request, cost, when)
            if (
                cost is None
                and request.id is not None
                and epoch is not None
                and epoch >= cutoff
                and len(pending) < PENDING
            ):
                pending[request.id] = _Pending(tuple(tallies), epoch)

    def in_use(self) -> bool:
        """Whether the totals were asked for within the last :data:`IN_USE` seconds."""
        return bool(self._clock() - self.asked_at < IN_USE)

    def unasked(self) -> list[str]:
        """The pending ids not asked for after a load yet."""
        return [key for key, slot in self.pending.items() if not slot.asked]

    def oldest(self, ids: list[str]) -> float | None:
        """The time (epoch seconds) of the oldest of ``ids`` still pending (None: none is)."""
        times = [slot.epoch for key in ids if (slot := self.pending.get(key)) is not None]
        return min(times) if times else None

    def price(self, asked: list[str], costs: list[tuple[str, float | None, str | None]]) -> int:
        """The store's answer for the ``asked`` ids: (id, cost, cost_source) of each it
        holds. A ``computed`` cost moves its request from unknown to that cost in every
        tally; an ``unknown`` one stays unknown; a ``reported`` one (another copy of the
        request, with its cost, was stored first, and counted here already) adds nothing.
        Each id is taken once. Returns the costs added."""
        pending = self.pending
        added = 0
        for key, cost, source in costs:
            slot = pending.pop(key, None)
            if slot is None:
                continue
            if source == "unknown" or cost is None:
                continue
            for tally in slot.tallies:
                tally.unknown_cost -= 1
                if source == "computed":
                    tally.cost_usd += cost
            added += source == "computed"
        for key in asked:  # not loaded yet: asked again after the next load, a few times
            slot = pending.get(key)
            if slot is not None:
                slot.asked += 1
                if slot.asked >= ASKS:
                    del pending[key]
        if not pending:
            self.pending = {}  # (a dict keeps its size once grown)
        self.priced += added
        return added

    def _trim(self) -> None:
        oldest = datetime.fromtimestamp(self._clock() - DAYS * 86_400, UTC).date().isoformat()
        latest = datetime.fromtimestamp(self._clock() + AHEAD, UTC).date().isoformat()
        for by_day in (self.days, self.counted):
            for day in [day for day in by_day if not oldest <= day <= latest]:
                del by_day[day]
        first = int((self._clock() - DAYS * 86_400) // QUARTER)
        last = int((self._clock() + AHEAD) // QUARTER)
        for buckets in (self.quarters, self.claude, self.claude_on_the_hour):
            for quarter in [quarter for quarter in buckets if not first <= quarter <= last]:
                del buckets[quarter]
        while len(self.sessions) > SESSIONS:
            self.sessions.popitem(last=False)
        if self.pending:
            cutoff = self._clock() - DAYS * 86_400
            old = [key for key, slot in self.pending.items() if slot.epoch < cutoff]
            for key in old:
                del self.pending[key]

    def today(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).date().isoformat()

    def since(self, start: float) -> UsageTotals:
        """The usage from ``start`` (epoch seconds; exact on a quarter hour) on."""
        first = -(-start // QUARTER)  # the first whole quarter at or after start
        last = (self._clock() + SKEW) // QUARTER
        total = UsageTotals()
        for quarter, bucket in self.quarters.items():
            if first <= quarter <= last:
                _merge(total, bucket.tally)
        return total

    def window(self) -> wire.UsageWindow | None:
        """The active 5-hour window of Claude usage: None when the last one has ended
        (5 h after its start), or its last request is 5 h old."""
        start = last = None
        usage = UsageTotals()
        now = self._clock()
        latest = (now + SKEW) // QUARTER
        # (a quarter's requests at the very millisecond of its hour come before the rest)
        walk = sorted(
            [(quarter, 0, bucket) for quarter, bucket in self.claude_on_the_hour.items()]
            + [(quarter, 1, bucket) for quarter, bucket in self.claude.items()],
            key=lambda item: item[:2],
        )
        for quarter, _, bucket in walk:
            if quarter > latest:
                break  # (stamped ahead of the clock: in no window yet)
            if (
                start is None
                or last is None
                or bucket.first - start > WINDOW
                or (bucket.first - last > WINDOW)
            ):
                start = bucket.first // 3600 * 3600
                usage = UsageTotals()
            _merge(usage, bucket.tally)
            last = bucket.last
        if start is None or last is None or now >= start + WINDOW or now - last >= WINDOW:
            return None
        return wire.UsageWindow(start=_epoch(start), end=_epoch(start + WINDOW), usage=usage)

    def answer(self, session: str | None = None, since: float | None = None) -> wire.TotalsReply:
        """Today's totals, every day kept, the active window, the session's (when asked:
        None if the daemon saw none of its requests) and those since ``since`` (epoch
        seconds, when asked)."""
        self.asked_at = self._clock()
        reply = wire.TotalsReply(
            day=self.today(),
            today=self.days.get(self.today(), UsageTotals()),
            days=dict(sorted(self.days.items())),
            sessions_tracked=len(self.sessions),
            window=self.window(),
        )
        if session is not None:
            reply.session = self.sessions.get(session)
        if since is not None:
            reply.since = self.since(since)
        return reply


def _epoch(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError, OverflowError):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return None
