"""Running totals of API usage per UTC day and per session, kept by the daemon.

What a status line needs (this session's cost, today's) must not wait for the store
worker, or start it: the daemon keeps these totals in memory. They cost ingest
nothing: :meth:`Totals.refresh` reads the journal from where it stopped last time
(complete lines only; a closed segment is never read twice) and adds up the
``api_request`` events it finds, picked out by their canonical first bytes without
decoding the others. The first refresh reads the last :data:`DAYS` days of segments
(by their last write), so the totals are whole after a restart too.

Each total counts requests, the four token counts, the cost of the requests that
have one, and the requests whose cost is unknown (a sum that leaves them out must
say so). Days older than :data:`DAYS` and all but the :data:`SESSIONS` most recently
active sessions are dropped; memory stays bounded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import msgspec

from telemetryd import wire
from telemetryd.daemon import segments
from telemetryd.wire import UsageTotals

log = logging.getLogger(__name__)

DAYS = 7  # days of totals kept (and read back from the journal at start)
SESSIONS = 10_000  # sessions kept, the most recently active
_API = b'{"type":"api_request"'
_BLOCK = 4 * 1024 * 1024


class _Tokens(msgspec.Struct):
    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_creation: int | None = None


class _Request(msgspec.Struct):
    ts: datetime | None = None
    session_id: str | None = None
    tokens: _Tokens | None = None
    cost_usd: float | None = None


_DECODER = msgspec.json.Decoder(_Request)


def _add(tally: UsageTotals, request: _Request, when: str | None) -> None:
    tally.requests += 1
    tokens = request.tokens
    if tokens is not None:
        tally.input += tokens.input or 0
        tally.output += tokens.output or 0
        tally.cache_read += tokens.cache_read or 0
        tally.cache_creation += tokens.cache_creation or 0
    if request.cost_usd is None:
        tally.unknown_cost += 1
    else:
        tally.cost_usd += request.cost_usd
    if when is not None:
        if tally.first is None or when < tally.first:
            tally.first = when
        if tally.last is None or when > tally.last:
            tally.last = when


class Totals:
    """Per-day and per-session tallies of the journal's API requests."""

    def __init__(self, journal_dir: str, *, clock: Any = time.time) -> None:
        self.journal_dir = journal_dir
        self._clock = clock
        self._read: dict[int, int] = {}  # seq -> bytes read (plain segments)
        self._done: set[int] = set()  # segments read to their end, never read again
        self._started = False
        self.days: dict[str, UsageTotals] = {}
        self.sessions: OrderedDict[str, UsageTotals] = OrderedDict()

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
        for line in data.split(b"\n"):
            if not line.startswith(_API):
                continue
            try:
                request = _DECODER.decode(line)
            except msgspec.DecodeError:
                continue
            when = _rfc3339(request.ts)
            day = when[:10] if when else None
            if day is not None:
                _add(self.days.setdefault(day, UsageTotals()), request, when)
            session = request.session_id
            if session is not None:
                tally = self.sessions.get(session)
                if tally is None:
                    tally = self.sessions[session] = UsageTotals()
                else:
                    self.sessions.move_to_end(session)
                _add(tally, request, when)

    def _trim(self) -> None:
        oldest = datetime.fromtimestamp(self._clock() - DAYS * 86_400, UTC).date().isoformat()
        for day in [day for day in self.days if day < oldest]:
            del self.days[day]
        while len(self.sessions) > SESSIONS:
            self.sessions.popitem(last=False)

    def today(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).date().isoformat()

    def answer(self, session: str | None = None) -> wire.TotalsReply:
        """Today's totals, every day kept, and the session's (when asked: None if the
        daemon saw none of its requests)."""
        reply = wire.TotalsReply(
            day=self.today(),
            today=self.days.get(self.today(), UsageTotals()),
            days=dict(sorted(self.days.items())),
            sessions_tracked=len(self.sessions),
        )
        if session is not None:
            reply.session = self.sessions.get(session)
        return reply


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError, OverflowError):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return None
