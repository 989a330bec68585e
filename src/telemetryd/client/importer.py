"""Backfill ``api_request`` events from Claude Code transcripts, Codex rollouts,
Gemini CLI chat recordings, GitHub Copilot CLI session events, OpenCode's messages
(its SQLite database and older message files) and Amp's thread files (both read by
:mod:`telemetryd.client.agent_files`); from Claude Code
transcripts also the rest of each session (tool calls and results, prompts by length,
sub-agent runs: see :class:`_ClaudeSession`), with the hooks' ids.

Streaming, in bounded memory, whatever the size of the files: each file is read
line by line (a line longer than :data:`MAX_LINE` is skipped and counted), each
line decoded with msgspec into a small Struct that skips the message content,
and each event sent at once over one connection to the events socket (the
daemon answers with one summary after everything is journaled: the sync at the
end). What stays in memory is one file's window of pending requests (see
:class:`~telemetryd.adapters.claude_code.Dedup`) and a bounded set of the
request keys already sent.

Event ids are derived from the source: Claude Code's ``requestId`` (the rule of
:func:`telemetryd.adapters.ids.request_event_id`, shared with the OTLP mappers, so
a request exported over OTLP and imported from its transcript is one row; lines
without a ``message.id`` and ``requestId`` are keyed by their line), Codex's
session and cumulative token counts, Gemini CLI's session and message ids (a
message Gemini CLI re-appends is one request), Copilot CLI's session, shutdown
event id and model, OpenCode's message ids, Amp's thread and ledger event (or
message) ids. Importing the same
data again, or a copy of it, sends the same ids, which the daemon and the store
drop as duplicates. On top of that, files that did not change since the last
complete import (same size, mtime and inode; a database's write-ahead log too; recorded in
``<state dir>/import/<agent>.json`` once the daemon confirmed) are not read again, and
of a file of lines that only grew since, only the events of the new lines are sent
(``Importer.imported_sizes``).

Malformed lines (not JSON) are counted and skipped; they never stop an import.
Gemini CLI's older recordings are one JSON document per session: such a file is
read whole (one at a time, at most :data:`MAX_LINE` bytes, its messages decoded
without their content), and a file that is not JSON counts as one malformed line.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, TypeVar

import msgspec

from telemetryd import paths
from telemetryd.adapters import claude_code, codex, copilot, gemini, ids, pricing
from telemetryd.adapters.otel import genai
from telemetryd.client import agent_files
from telemetryd.client.delivery import EventStream
from telemetryd.errors import DaemonBusy, DaemonUnavailable, TelemetryError

if TYPE_CHECKING:
    from telemetryd.client.import_pool import Pool

MAX_LINE = 64 << 20  # bytes; longer lines are skipped (and counted as malformed)
READ_BLOCK = 256 << 10  # bytes per read of a file of lines
OUTBOX_BYTES = 1 << 20  # bytes of event lines a reader process sends at once
SEEN_GENERATION = 500_000  # keys per generation of the sent-keys set (two are kept)
DEDUP_WINDOW = 2048  # pending requests per file (Claude Code)
# A request whose file and latest copy were written in the last SETTLE_S seconds may still
# be streaming: it is held back until the next import (see Importer.live_after)
SETTLE_S = 600
# the agents whose files rewrite a request as it grows
HOLDS_BACK = ("claude-code", "gemini", "opencode")
# An OpenCode message not marked complete is held back (in a file being written) unless it
# was created longer ago than this: its session ended without completing it
OPEN_MESSAGE_S = 6 * 3600
# The agents whose files of lines only grow: one read again because it grew sends only the
# events of its new lines (see Importer.imported_sizes)
APPEND_ONLY = ("claude-code", "codex", "gemini", "copilot")
# An event time as the daemon reads it (events.Timestamp, not imported: it costs a start),
# checked by decoding the time as a JSON string: the parser of ``msgspec.convert(ts,
# ...)``, without convert's lookup of the type at each call
_TIMES = msgspec.json.Decoder(Annotated[datetime, msgspec.Meta(tz=True)])
PENDING_TOOLS = 4096  # tool uses per file waiting for their result (Claude Code)
STATE_VERSION = 1
AGENTS = ("claude-code", "codex", "gemini", "copilot", "opencode", "amp")

Progress = Callable[[int], None]

# What an event a reader process built was (client/import_pool.py): the counts to take
# back when it turns out to repeat an event of an earlier file. EARLY_*: before --since,
# not sent (only its key travels).
(REQUEST, EARLY_REQUEST, TOOL_CALL, TOOL_RESULT, PROMPT, AGENT_STOP, SESSION, EARLY,
 SPAN) = range(1, 10)  # fmt: skip
_SESSION_CODES = {"tool_call": TOOL_CALL, "tool_result": TOOL_RESULT, "prompt": PROMPT,
                  "agent_stop": AGENT_STOP, "span": SPAN}  # fmt: skip


# -- what the lines are decoded into (everything else is skipped) ---------------------


class _ClaudeBlock(msgspec.Struct):
    """A content block: a ``tool_use`` or ``tool_result`` is read (a result's own
    content only when it is an error); text, thinking and tool inputs are skipped."""

    type: Any = None
    id: Any = None
    name: Any = None
    tool_use_id: Any = None
    is_error: Any = None
    content: msgspec.Raw = msgspec.Raw(b"")


class _ClaudeMessage(msgspec.Struct):
    id: Any = None
    model: Any = None
    usage: msgspec.Raw = msgspec.Raw(b"")  # decoded once per usage text (see _claude_dict)
    content: str | list[_ClaudeBlock] | None = None  # a string: a user's prompt


class _ClaudeLine(msgspec.Struct):
    type: Any = None
    timestamp: Any = None
    sessionId: Any = None
    requestId: Any = None
    isSidechain: Any = None
    agentId: Any = None
    costUSD: Any = None
    uuid: Any = None
    cwd: Any = None
    isMeta: Any = None
    message: _ClaudeMessage | None = None


class _CodexPayload(msgspec.Struct):
    type: Any = None
    id: Any = None
    timestamp: Any = None
    forked_from_id: Any = None
    source: Any = None
    model: Any = None
    model_provider: Any = None
    cwd: Any = None
    info: Any = None


class _CodexLine(msgspec.Struct):
    timestamp: Any = None
    type: Any = None
    payload: _CodexPayload | None = None


class _GeminiRecord(msgspec.Struct):
    """A chat recording's header or message line (its content is skipped)."""

    id: Any = None
    type: Any = None
    timestamp: Any = None
    created_at: Any = None
    model: Any = None
    tokens: Any = None
    sessionId: Any = None
    session_id: Any = None
    startTime: Any = None
    lastUpdated: Any = None


class _GeminiDocument(_GeminiRecord):
    """An older single-JSON session file."""

    messages: list[_GeminiRecord] | None = None


_GEMINI_FIELDS = tuple(_GeminiRecord.__struct_fields__)


class _CopilotData(msgspec.Struct):
    # (of the usual types: a line with others is read whole, see copilot.ModelMetrics)
    modelMetrics: dict[str, copilot.ModelMetrics] | None = None
    # (whether the usage accounting's keys are there: copilot.ACCOUNTING_KEYS)
    usageAccountingWatermarks: msgspec.Raw | None = None
    accountingSnapshot: msgspec.Raw | None = None
    providerModelMetrics: msgspec.Raw | None = None


class _CopilotLine(copilot.SpanLine):
    """A line of Copilot CLI's files: a session event, of whose ``data`` only a shutdown's
    model metrics are read, or a line of an OpenTelemetry file export (the fields of
    :class:`copilot.SpanLine`), so that a span is decoded once."""

    id: Any = None
    timestamp: Any = None
    data: _CopilotData | None = None


_CLAUDE = msgspec.json.Decoder(_ClaudeLine)
_CODEX = msgspec.json.Decoder(_CodexLine)
_GEMINI = msgspec.json.Decoder(_GeminiRecord)
_GEMINI_DOCUMENT = msgspec.json.Decoder(_GeminiDocument)
_COPILOT = msgspec.json.Decoder(_CopilotLine)
_ANY = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()

_Line = TypeVar("_Line")


def _typed(decoder: msgspec.json.Decoder[_Line], raw: bytes) -> _Line:
    """``raw`` by ``decoder``, repaired where it can be (:func:`agent_files.lenient`):
    lone UTF-16 surrogate escapes, and nesting deeper than the decoder goes (one line of
    that is then not the loss of the whole file). Raises msgspec.DecodeError."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError:
        raise
    except (msgspec.DecodeError, RecursionError):  # (the rare path: decode again)
        return agent_files.lenient(decoder.decode, raw)


def _whole(raw: bytes) -> Any:
    """A line that is not of its importer's shape, decoded whole (a dict, a list, ...),
    or None when it is not JSON (msgspec may find a wrong type before it finds that the
    rest of the line is not JSON at all)."""
    try:
        return _typed(_ANY, raw)
    except msgspec.DecodeError:
        return None


_UsageParts = tuple[dict[str, Any], str | None, int | None]
USAGE_CACHE = 1024  # usage texts whose reading is kept (per file)


def _claude_dict(
    line: _ClaudeLine, usages: dict[bytes, _UsageParts | None]
) -> tuple[dict[str, Any], _UsageParts] | None:
    """The parts of a decoded line that :func:`claude_code.usage_entry` reads, and what
    its usage says (:func:`claude_code.usage_parts`, kept in ``usages`` by the usage's
    text: the lines of one response repeat it); None when it has no usage of counts."""
    message = line.message
    if message is None or not message.usage:
        return None
    text = bytes(message.usage)
    if text in usages:
        parts = usages[text]
    else:
        usage = _ANY.decode(text)
        parts = claude_code.usage_parts(usage) if isinstance(usage, dict) else None
        if len(usages) >= USAGE_CACHE:
            usages.clear()
        usages[text] = parts
    if parts is None:
        return None
    return {
        "timestamp": line.timestamp,
        "sessionId": line.sessionId,
        "requestId": line.requestId,
        "isSidechain": line.isSidechain,
        "agentId": line.agentId,
        "costUSD": line.costUSD,
        "uuid": line.uuid,
        "message": {"id": message.id, "model": message.model},
    }, parts


_CODEX_KINDS = ("session_meta", "turn_context", "event_msg")


def _codex_dict(line: _CodexLine) -> dict[str, Any] | None:
    payload = line.payload
    if line.type not in _CODEX_KINDS or payload is None:
        return None
    if line.type == "event_msg" and payload.type != "token_count":
        return None
    return {
        "timestamp": line.timestamp,
        "type": line.type,
        "payload": {
            "type": payload.type,
            "id": payload.id,
            "timestamp": payload.timestamp,
            "forked_from_id": payload.forked_from_id,
            "source": payload.source,
            "model": payload.model,
            "model_provider": payload.model_provider,
            "cwd": payload.cwd,
            "info": payload.info,
        },
    }


def _gemini_dict(record: _GeminiRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _GEMINI_FIELDS}


# -- discovery -------------------------------------------------------------------------


def claude_roots(environ: dict[str, str] | None = None) -> list[Path]:
    """Where Claude Code keeps transcripts, as ccusage (and Claude Code) finds them:
    ``<dir>/projects`` for each entry of the comma-separated ``CLAUDE_CONFIG_DIR``
    (only those, when it is set: another account's files may be in ~/.claude), else
    ``~/.claude/projects`` and ``~/.config/claude/projects``."""
    env = os.environ if environ is None else environ
    given = [entry.strip() for entry in (env.get("CLAUDE_CONFIG_DIR") or "").split(",")]
    if any(given):
        return [Path(entry).expanduser() / "projects" for entry in given if entry]
    home = Path(env.get("HOME") or Path.home())
    return [home / ".claude" / "projects", home / ".config" / "claude" / "projects"]


def codex_roots(environ: dict[str, str] | None = None) -> list[Path]:
    """``$CODEX_HOME/sessions`` and ``archived_sessions`` (``CODEX_HOME`` defaults to ~/.codex)."""
    env = os.environ if environ is None else environ
    base = env.get("CODEX_HOME")
    home = Path(base).expanduser() if base else Path(env.get("HOME") or Path.home()) / ".codex"
    return [home / "sessions", home / "archived_sessions"]


def gemini_roots(environ: dict[str, str] | None = None) -> list[Path]:
    """Where Gemini CLI keeps its chat recordings, as ccusage finds them: each directory of
    the comma-separated ``GEMINI_DATA_DIR`` (only those, when it is set), else
    ``~/.gemini/tmp`` (its ``<project hash>/chats/`` directories)."""
    env = os.environ if environ is None else environ
    given = env.get("GEMINI_DATA_DIR")
    if given is not None:
        return [Path(p.strip()).expanduser() for p in given.split(",") if p.strip()]
    return [Path(env.get("HOME") or Path.home()) / ".gemini" / "tmp"]


def copilot_roots(environ: dict[str, str] | None = None) -> list[Path]:
    """``<dir>/session-state`` of Copilot CLI's directory: ``COPILOT_HOME`` (Copilot CLI's
    own override) and ``COPILOT_CONFIG_DIR`` (ccusage's), each when set, else ~/.copilot."""
    return [base / "session-state" for base in agent_files.copilot_bases(environ)]


def roots(agent: str, environ: dict[str, str] | None = None) -> list[Path]:
    """The default locations of ``agent``'s files."""
    if agent == "claude-code":
        return claude_roots(environ)
    if agent == "codex":
        return codex_roots(environ)
    if agent == "copilot":
        return copilot_roots(environ)
    if agent == "opencode":
        return agent_files.opencode_roots(environ)
    if agent == "amp":
        return agent_files.amp_roots(environ)
    return gemini_roots(environ)


def patterns(agent: str) -> tuple[str, ...]:
    """The names of ``agent``'s files in a directory."""
    if agent == "copilot":
        return ("events.jsonl",)
    if agent == "amp":
        return ("*.json",)
    return ("*.json", "*.jsonl") if agent == "gemini" else ("*.jsonl",)


def found(agent: str, environ: dict[str, str] | None = None) -> bool:
    """Whether one of ``agent``'s default locations exists (``import`` with no name)."""
    if agent == "copilot" and any(p.exists() for p in agent_files.copilot_otel_paths(environ)):
        return True
    return any(root.is_dir() for root in roots(agent, environ))


def discover(
    given: Iterable[str | Path],
    roots: list[Path],
    globs: tuple[str, ...] = ("*.jsonl",),
    unreadable: list[str] | None = None,
) -> list[Path]:
    """The files matching ``globs`` under the given paths (files taken as they are), else
    under ``roots``; each once, in path order (a session before its sub-agents' files).
    (``unreadable``: as agent_files.walk has it.)"""
    found: set[str] = set()
    starts = [Path(p).expanduser() for p in given] or [r for r in roots if r.exists()]
    for start in starts:
        if start.is_file():
            found.add(str(start.resolve()))
        elif start.is_dir():
            found.update(resolved for resolved, _ in agent_files.walk(start, globs, unreadable))
        elif list(given):
            raise TelemetryError(f"{start}: no such file or directory")
    return [Path(p) for p in sorted(found)]


# -- the summary ---------------------------------------------------------------------------


_Counts = tuple[int, int, int, int, int, int, float | None]


def _counts(event: dict[str, Any]) -> _Counts:
    """What a request adds to :class:`Totals`: its token counts and its reported cost
    (None: it reported none)."""
    get = event["tokens"].get
    return (
        get("input") or 0,
        get("output") or 0,
        get("cache_read") or 0,
        get("cache_creation") or 0,
        get("reasoning") or 0,
        get("total") or 0,
        event.get("cost_usd"),
    )


# A request without a reported cost, as the summary prices it when the import ends
# (Summary.price): its model, provider, minute (of a UTC time; else its time as it is),
# speed, the band of its prompt's size among every tier start of the price data (within
# one band, every model's tier is the same: Pricer.tier_starts), and its day (by_day's).
# The requests of one key cost what their summed tokens cost, so one lookup prices them.
_PriceKey = tuple[str, str | None, str | None, str | None, int, str]
PRICE_SUMS = 6  # a key's sums: requests, input, output, cache read, cache write, 1-hour writes


@dataclass
class Totals:
    requests: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    reasoning: int = 0
    total: int = 0
    cost_reported_usd: float = 0.0
    cost_computed_usd: float = 0.0
    unpriced: int = 0  # requests whose cost is unknown (no reported cost, no price)

    def add_counts(self, sign: int, counts: _Counts) -> None:
        """Count one request's :func:`_counts` (``sign`` -1: take one back); its computed
        cost is added when the import ends (:meth:`Summary.price`)."""
        inp, out, read, creation, reasoning, total, cost = counts
        self.requests += sign
        self.input += sign * inp
        self.output += sign * out
        self.cache_read += sign * read
        self.cache_creation += sign * creation
        self.reasoning += sign * reasoning
        self.total += sign * total
        if cost is not None:
            self.cost_reported_usd += sign * cost

    def merge(self, other: Totals) -> None:
        for name, value in other.__dict__.items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Summary:
    """What an import read, built and sent. ``requests`` are the ``api_request``
    events built (``by_model`` and ``by_day`` total them, nothing else);
    ``repeats`` the lines that repeated a request already counted (streaming
    snapshots, copies in other files, Codex's re-emitted totals and a fork's copy of
    its parent's counts, Gemini CLI's re-appended messages). The rest of a Claude
    Code session is counted apart: ``tool_calls``, ``tool_results`` (``tool_errors``
    of them failed), ``prompts`` and ``agents`` (sub-agent activations, each an
    ``agent_start`` and an ``agent_stop``); ``spans`` the span events of Copilot CLI's
    OpenTelemetry exports. ``held_back``: requests and sub-agent runs of
    files still being written, left for the next import (see ``Importer.live_after``).
    ``earlier``: events of lines an earlier import sent, in a file that grew since
    (not built again). ``sent`` counts every event."""

    agent: str
    dry_run: bool = False
    files: int = 0
    files_unchanged: int = 0
    bytes: int = 0
    lines: int = 0
    malformed: int = 0
    malformed_files: list[str] = field(default_factory=list)  # "path: N": where they are
    requests: int = 0
    repeats: int = 0
    tool_calls: int = 0
    tool_results: int = 0
    tool_errors: int = 0
    prompts: int = 0
    agents: int = 0
    spans: int = 0
    before_since: int = 0
    held_back: int = 0
    held_files: list[str] = field(default_factory=list)  # the files of those held back
    earlier: int = 0  # events of lines that an earlier import sent (the file grew since)
    bad_times: int = 0  # events whose time could not be read (Importer._time)
    dropped_times: int = 0  # requests left out for their time's form (Amp, as ccusage)
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[str] = field(default_factory=list)
    by_model: dict[str, Totals] = field(default_factory=dict)
    by_day: dict[str, Totals] = field(default_factory=dict)
    # The requests to price when the import ends, by :data:`_PriceKey`: their summed
    # counts (:data:`PRICE_SUMS`); :meth:`price` adds their costs to by_model and by_day
    to_price: dict[_PriceKey, list[int]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def count(self, event: dict[str, Any], sign: int = 1, starts: tuple[int, ...] = ()) -> None:
        """Count one request (``sign`` -1: take back one counted before); ``starts``: the
        price data's tier starts (:data:`_PriceKey`)."""
        self.requests += sign
        counts = _counts(event)
        model = event["agent"]["model"]
        totals = self.by_model.get(model)
        if totals is None:
            totals = self.by_model[model] = Totals()
        totals.add_counts(sign, counts)
        day = (event.get("ts") or "unknown")[:10]
        by_day = self.by_day.get(day)
        if by_day is None:
            by_day = self.by_day[day] = Totals()
        by_day.add_counts(sign, counts)
        if counts[6] is not None:  # (a reported cost)
            return
        if event["tokens"].get("source") != "actual" or model.__class__ is not str:
            totals.unpriced += sign  # (nothing can price it)
            by_day.unpriced += sign
            return
        inp, out, read, creation = counts[:4]
        provider = event["agent"].get("provider")
        attrs = event.get("attrs")
        long, speed = 0, None
        if attrs.__class__ is dict and ("speed" in attrs or "cache_creation_1h" in attrs):
            long, speed = pricing.hints(attrs)
            long = min(long, creation)
        ts = event.get("ts")
        if ts.__class__ is str and ts[10:11] == "T" and ts[-1:] == "Z":
            ts = ts[:16]
        key = (
            model,
            provider if provider.__class__ is str else None,
            ts,
            speed,
            bisect.bisect_left(starts, inp + read + creation),
            day,
        )
        sums = self.to_price.get(key)
        if sums is None:
            self.to_price[key] = [sign, sign * inp, sign * out, sign * read, sign * creation,
                                  sign * long]  # fmt: skip
        else:
            sums[0] += sign
            sums[1] += sign * inp
            sums[2] += sign * out
            sums[3] += sign * read
            sums[4] += sign * creation
            sums[5] += sign * long

    def price(self, prices: pricing.Pricer, starts: tuple[int, ...]) -> None:
        """Add the computed costs of the requests counted (:attr:`to_price`) to by_model
        and by_day, and count those without a price as ``unpriced``. Each key's requests
        are priced as one, with the rates of their model at their time and the prices of
        their prompt's band (``starts``: those they were counted with)."""
        for key, (n, inp, out, read, creation, long) in self.to_price.items():
            if not n:
                continue
            model, provider, when, speed, band, day = key
            if when is not None and len(when) == 16:  # (the minute of a UTC time)
                rates = prices.minute_rates(model, provider, when, speed)
            else:
                exact = prices.varies_within_a_day(model, provider)
                rates = prices.rates(model, provider, pricing.time_of(when), speed,
                                     exact_time=exact)  # fmt: skip
            by_model, by_day = self.by_model[model], self.by_day[day]
            if rates is None:
                by_model.unpriced += n
                by_day.unpriced += n
                continue
            prompt = starts[band - 1] + 1 if band else 0  # (a prompt of the band)
            cost = rates.sum_cost(prompt, n, inp, out, read, creation, long)
            by_model.cost_computed_usd += cost
            by_day.cost_computed_usd += cost
        self.to_price = {}

    def uncount(
        self, code: int, event: dict[str, Any] | None, starts: tuple[int, ...] = ()
    ) -> None:
        """Take back what one event built by a reader process counted, found to repeat one
        of an earlier file (``code``: what it was, :data:`REQUEST` ...): the counts become
        those of reading the files one after the other in this process."""
        if code in (REQUEST, EARLY_REQUEST):
            self.repeats += 1
            if code == EARLY_REQUEST:
                self.before_since -= 1
            elif event is not None:
                self.count(event, -1, starts)
        elif code == TOOL_CALL:
            self.tool_calls -= 1
        elif code == TOOL_RESULT and event is not None:
            self.tool_results -= 1
            self.tool_errors -= event["tool"].get("success") is False
        elif code == PROMPT:
            self.prompts -= 1
        elif code == AGENT_STOP:
            self.agents -= 1
        elif code == SPAN:
            self.spans -= 1

    def merge(self, other: Summary) -> None:
        """Add the counts of ``other`` (one file's, or part of one, read by a reader
        process) to these."""
        for name, value in other.__dict__.items():
            if name in ("agent", "dry_run", "elapsed_s"):
                continue
            if name == "rejections":
                self.rejections += value
            elif name == "held_files":  # (parts of one database, read apart, name it again)
                self.held_files += [path for path in value if path not in self.held_files]
            elif name in ("by_model", "by_day"):
                mine = getattr(self, name)
                for key, totals in value.items():
                    if key in mine:
                        mine[key].merge(totals)
                    else:
                        mine[key] = totals
            elif name == "to_price":
                for key, sums in value.items():
                    known = self.to_price.get(key)
                    if known is None:
                        self.to_price[key] = sums
                    else:
                        known[:] = map(sum, zip(known, sums, strict=True))
            else:
                setattr(self, name, getattr(self, name) + value)

    def built(self) -> int:
        """The events built: requests and the rest of the sessions."""
        rest = self.tool_calls + self.tool_results + self.prompts + 2 * self.agents + self.spans
        return self.requests + rest

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v for k, v in self.__dict__.items() if k not in ("by_model", "by_day", "to_price")
        }
        out["by_model"] = {k: v.__dict__ for k, v in sorted(self.by_model.items())}
        out["by_day"] = {k: v.__dict__ for k, v in sorted(self.by_day.items())}
        return out


# -- sending -------------------------------------------------------------------------------


def connect(path: str) -> EventStream:
    """A connection to the events socket for one import (each wait up to a minute)."""
    try:
        return EventStream(path, timeout=60.0)
    except DaemonBusy:
        raise
    except DaemonUnavailable as exc:
        raise DaemonUnavailable(
            f"telemetryd is not running ({exc}); start it, or look first with --dry-run"
        ) from None


class _Seen:
    """The request keys sent so far, in two bounded generations (memory stays bounded;
    a repeat older than that is still dropped by the daemon, by its id)."""

    def __init__(self, generation: int = SEEN_GENERATION) -> None:
        self.generation = generation
        self.old: set[bytes] = set()
        self.new: set[bytes] = set()

    def add(self, key: bytes) -> bool:
        """Record ``key``; False when it was already there."""
        if key in self.new or key in self.old:
            return False
        self.new.add(key)
        if len(self.new) >= self.generation:
            self.old, self.new = self.new, set()
        return True

    def add_new(self, keys: list[bytes]) -> bool:
        """Record ``keys`` (distinct) at once, when none of them is there yet (and the
        generation does not turn over among them): False, recording nothing, otherwise."""
        new = self.new
        if len(new) + len(keys) >= self.generation:
            return False
        if not (new.isdisjoint(keys) and self.old.isdisjoint(keys)):
            return False
        new.update(keys)
        return True


# -- reading -------------------------------------------------------------------------------


def _lines(f: BinaryIO, summary: Summary, progress: Progress | None) -> Iterator[bytes]:
    """The lines of ``f`` (each with its newline; the last one may have none), read in
    blocks of READ_BLOCK bytes (about twice as fast as a ``readline`` per line); an
    over-long line is skipped (and counted as malformed)."""
    reported = 0
    position = 0
    tail = b""
    skipping = False  # within an over-long line
    read = f.read
    while block := read(READ_BLOCK):
        position += len(block)
        if skipping:
            end = block.find(b"\n")
            if end < 0:
                continue
            block, skipping = block[end + 1 :], False
        data = tail + block if tail else block
        start = 0
        find = data.find
        longest = MAX_LINE
        while (end := find(b"\n", start)) >= 0:
            if end - start > longest:
                summary.malformed += 1
            else:
                yield data[start : end + 1]
            start = end + 1
        tail = data[start:]
        if len(tail) > MAX_LINE:
            summary.malformed += 1
            tail, skipping = b"", True
        if progress is not None and position - reported >= 1 << 22:
            progress(position - reported)
            reported = position
    if tail:
        yield tail
    summary.bytes += position
    if progress is not None and position > reported:
        progress(position - reported)


def read_whole(f: BinaryIO) -> bytes:
    """What ``f.read(MAX_LINE + 1)`` gives (the whole file, or one byte past the limit),
    read by the file's size: a read of MAX_LINE bytes allocates that much first, which
    costs more than reading a small file."""
    try:
        size = min(os.fstat(f.fileno()).st_size, MAX_LINE)
    except (OSError, AttributeError, ValueError):
        size = MAX_LINE
    data = f.read(size + 1)
    if len(data) == size + 1 and len(data) <= MAX_LINE:  # it grew meanwhile: the rest
        data += f.read(MAX_LINE + 1 - len(data))
    return data


def _digest(event_id: str) -> bytes:
    """The key of an event id in the set of those sent."""
    return hashlib.blake2b(event_id.encode(), digest_size=16).digest()


class Outbox:
    """Where a reader process's :class:`Importer` puts the events it builds: per event its
    key, what it counted (:data:`REQUEST` ...) and its line (None: before --since);
    ``flush(keys, codes, lines)`` is called with each batch (the key bytes, one code byte
    per event, the lines joined with their newlines), at :data:`OUTBOX_BYTES` of lines."""

    def __init__(self, flush: Callable[[bytes, bytes, bytes], None]) -> None:
        self._flush = flush
        self.keys: list[bytes] = []
        self.codes = bytearray()
        self.lines = bytearray()

    def add(self, key: bytes, code: int, line: bytes | None) -> None:
        self.keys.append(key)
        self.codes.append(code)
        if line is not None:
            self.lines += line
            self.lines += b"\n"
            if len(self.lines) >= OUTBOX_BYTES:
                self.flush()

    def add_event(self, key: bytes, code: int, event: dict[str, Any]) -> None:
        """:meth:`add` with the event's line encoded in place (no copy of it)."""
        lines = self.lines
        mark = len(lines)
        try:
            _ENCODER.encode_into(event, lines, -1)
        except BaseException:  # (what it wrote of the event is taken back)
            del lines[mark:]
            raise
        lines.append(10)  # (a newline)
        self.keys.append(key)
        self.codes.append(code)
        if len(lines) >= OUTBOX_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.keys:
            self._flush(b"".join(self.keys), bytes(self.codes), bytes(self.lines))
            self.keys.clear()
            self.codes.clear()
            self.lines.clear()


def _event_id(prefix: str, text: str) -> tuple[str, bytes]:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return f"{prefix}-{digest.hex()}", digest


def _since_text(since: datetime | None) -> str | None:
    """``since`` as the ``YYYY-MM-DDTHH:MM:SS`` prefix of a UTC timestamp."""
    if since is None:
        return None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _readable(ts: Any) -> bool:
    """Whether ``ts`` is a time the daemon takes (see :data:`_TIMES`)."""
    if ts.__class__ is not str or '"' in ts or "\\" in ts:  # (no escapes to decode)
        return False
    try:
        _TIMES.decode(f'"{ts}"'.encode())
    except (msgspec.DecodeError, UnicodeEncodeError):  # (ValidationError is one)
        return False
    return True


def _before(ts: str | None, since: str | None) -> bool:
    if since is None or not ts:
        return False
    if ts.endswith("Z"):
        return ts[:19] < since
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") < since


class Importer:
    """One import run: :meth:`run` reads the files and feeds ``sink`` (None: dry run).

    ``live_after`` (epoch seconds, None: never): a file modified since then is *live*,
    still being written. Its last request is held back (not built, counted in
    ``held_back``) when its latest copy is that recent too, and so are its sub-agent
    runs seen that recently: Claude Code writes a response's line again as each of its
    content blocks ends, with the output counted so far (25, then 173), and Gemini CLI
    re-appends a message as it grows, all under one event id. Built now, the partial copy
    would be the one stored, for good (the first copy of an id wins, in the daemon and the
    store). The caller does not record a live file as imported, so the next import reads
    it again and takes what was held back once the file has settled.

    ``imported_sizes``: for a file of lines that grew since an earlier import sent all of
    it (same inode, larger: these agents only append), that import's size. The file is read
    whole (a request, a tool's result, a sub-agent's sums need what came before), but only
    events from lines past that size are built: the others were sent then (counted in
    ``earlier``). Sent again, they would be journaled again once the daemon's dedup
    window has forgotten their ids, and reported as new."""

    def __init__(
        self,
        agent: str,
        *,
        since: datetime | None = None,
        sink: EventStream | None = None,
        progress: Progress | None = None,
        prices: pricing.Pricer | None = None,
        live_after: float | None = None,
    ) -> None:
        if agent not in AGENTS:
            raise TelemetryError(f"unknown agent {agent!r}")
        self.agent = agent
        self.since_time = since
        self.since = _since_text(since)
        self.sink = sink
        self.progress = progress
        self.seen = _Seen()
        self._prices = prices
        # The price data's tier starts (Summary.count); a reader process is given them
        self._starts: tuple[int, ...] | None = None
        self.summary = Summary(agent=agent, dry_run=sink is None)
        self.live_after = live_after
        self.imported_sizes: dict[str, int] = {}
        self.sent_until = 0  # of the file being read: imported_sizes' entry, else 0
        self.path: Path | None = None  # the file being read
        self.live = False  # whether it is being written (modified since live_after)
        self.last_time: str | None = None  # the last event time read in it (Importer._time)
        # Copilot: session -> the sorted times of its model calls in OpenTelemetry exports
        self.model_calls: dict[str, list[float]] = {}
        # Codex, Gemini CLI: the requests the store holds from the agent's own OTLP
        # export (exported_key -> their times): an imported copy is left out (R21)
        self.exported: dict[str, list[float]] = {}
        # In a reader process (client/import_pool.py): every event built, with its key and
        # what it counted, goes there instead (the importing process sends it)
        self.outbox: Outbox | None = None

    @property
    def prices(self) -> pricing.Pricer:
        """The prices the summary's costs are computed with (the package's by default)."""
        if self._prices is None:
            self._prices = pricing.Pricer()
        return self._prices

    @property
    def tier_starts(self) -> tuple[int, ...]:
        """The tier starts of the price data (:data:`_PriceKey`): the data is read the
        first time they are asked for."""
        if self._starts is None:
            self._starts = self.prices.tier_starts()
        return self._starts

    @tier_starts.setter
    def tier_starts(self, starts: tuple[int, ...]) -> None:
        self._starts = starts

    def _time(self, event: dict[str, Any]) -> None:
        """Keep ``event``'s time when the daemon can read it (RFC 3339 with an offset).
        Else (no time, a number, text of another form) the daemon would stamp it with
        the time it arrives, or refuse the whole event at every import: it gets the last
        readable time of the file being read (the file's modification time before any),
        and ``attrs.unreadable_ts`` keeps what the file said (``"missing"`` when the adapter
        found no time as text)."""
        ts = event.get("ts")
        if ts is not None and _readable(ts):
            self.last_time = ts
            return
        self.summary.bad_times += 1
        if self.last_time is None:
            self.last_time = _mtime_ts(self.path) if self.path is not None else None
        event["ts"] = self.last_time
        attrs = event.get("attrs")
        if not isinstance(attrs, dict):
            attrs = event["attrs"] = {}
        if ts is None:
            attrs["unreadable_ts"] = "missing"
        else:
            attrs["unreadable_ts"] = ts if isinstance(ts, str) else repr(ts)

    def sent_before(self, end: int | None) -> bool:
        """Whether the line ending at byte ``end`` of the file being read was sent by an
        earlier import (see the class docstring)."""
        return end is not None and end <= self.sent_until

    def earlier(self, end: int | None) -> bool:
        """:meth:`sent_before`, counted when so."""
        if not self.sent_before(end):
            return False
        self.summary.earlier += 1
        return True

    def _emit(self, event: dict[str, Any], digest: bytes, end: int | None = None) -> None:
        """Price, count and send one request (``end``: where its line ends in the file)."""
        if self.earlier(end):
            return
        if not self.seen.add(digest):
            self.summary.repeats += 1
            return
        self._time(event)
        if self.since is not None and _before(event.get("ts"), self.since):
            self.summary.before_since += 1
            if self.outbox is not None:
                self.outbox.add(digest, EARLY_REQUEST, None)
            return
        if self.exported and _exported(self.exported, event):
            self.summary.repeats += 1
            return
        if event.get("cost_usd") is not None:
            event.setdefault("cost_source", "reported")
        self.summary.count(event, 1, self.tier_starts)
        if self.sink is not None:
            self.sink.add(_ENCODER.encode(event))
            self.summary.sent += 1
        elif self.outbox is not None:
            self.outbox.add_event(digest, REQUEST, event)

    def emit_keyed(self, event: dict[str, Any], end: int | None = None) -> None:
        """Price, count and send one request whose id identifies it (sent once per run)."""
        self._emit(event, hashlib.blake2b(event["id"].encode(), digest_size=16).digest(), end)

    def _fresh(self, event_id: str) -> bytes | None:
        """``event_id``'s key when it was not sent yet in this run (it is recorded as
        sent), else None: the same tool use or prompt in another copy of the session is
        built once."""
        key = _digest(event_id)
        return key if self.seen.add(key) else None

    def _emit_session(
        self, event: dict[str, Any], *, fresh: bytes | None = None, end: int | None = None
    ) -> None:
        """Send one event of a session other than a request (its id is set);
        ``fresh``: its key, when :meth:`_fresh` said yes already (and :meth:`earlier` no);
        ``end``: where its line ends in the file."""
        if fresh is None and self.earlier(end):
            return
        key = fresh or self._fresh(event["id"])
        if key is None:
            return
        self._time(event)
        if self.since is not None and _before(event.get("ts"), self.since):
            if self.outbox is not None:
                self.outbox.add(key, EARLY, None)
            return  # (``before_since`` counts requests)
        summary = self.summary
        kind = event["type"]
        if kind == "tool_call":
            summary.tool_calls += 1
        elif kind == "tool_result":
            summary.tool_results += 1
            summary.tool_errors += event["tool"].get("success") is False
        elif kind == "prompt":
            summary.prompts += 1
        elif kind == "agent_stop":
            summary.agents += 1
        elif kind == "span":
            summary.spans += 1
        if self.sink is not None:
            self.sink.add(_ENCODER.encode(event))
            summary.sent += 1
        elif self.outbox is not None:
            code = _SESSION_CODES.get(kind, SESSION)
            self.outbox.add_event(key, code, event)

    def read_or_note(self, path: Path, part: tuple[int, int, int] | None = None) -> bool:
        """:meth:`read_file`; a file that cannot be read (the file system failed, or what
        it holds broke the reading) is one problem in the summary, and False: the other
        files are read all the same, as reader processes do (client/import_reader.py)."""
        try:
            self.read_file(path, part)
        except OSError as exc:
            self.summary.rejections.append(f"{path}: {exc.strerror or exc}")
            return False
        except Exception as exc:
            self.summary.rejections.append(f"{path}: {type(exc).__name__}: {exc}")
            return False
        return True

    def read_file(self, path: Path, part: tuple[int, int, int] | None = None) -> None:
        """Read one file; ``part``: only rows ``(index, first, last)`` of a database
        (its first part counts the file)."""
        if part is None or part[0] == 0:
            self.summary.files += 1
        self.sent_until = self.imported_sizes.get(str(path), 0)
        self.path, self.last_time = path, None
        malformed = self.summary.malformed
        try:
            self._read(path, part)
        finally:
            found = self.summary.malformed - malformed
            if found:
                self.summary.malformed_files.append(f"{path}: {found}")

    def _read(self, path: Path, part: tuple[int, int, int] | None) -> None:
        with open(path, "rb") as f:
            live = self.live = self._is_live(path, os.fstat(f.fileno()).st_mtime)
            if self.agent == "claude-code":
                self._claude(f, path, live)
            elif self.agent == "codex":
                self._codex(f, path)
            elif self.agent == "copilot":
                self._copilot(f, path)
            elif self.agent == "opencode":
                agent_files.read_opencode(self, f, path, part)
            elif self.agent == "amp":
                agent_files.read_amp(self, f, path)
            elif path.suffix == ".jsonl":
                self._gemini_lines(f, path, live)
            else:
                self._gemini_document(f, path, live)

    def _is_live(self, path: Path, mtime: float) -> bool:
        """Whether ``path`` (modified at ``mtime``) was written since ``live_after``; a
        database counts its write-ahead log, where SQLite writes first."""
        if self.live_after is None:
            return False
        if mtime < self.live_after and path.suffix == ".db":
            with contextlib.suppress(OSError):
                mtime = max(mtime, os.stat(f"{path}-wal").st_mtime)
        return mtime >= self.live_after

    def still_open(self, record: dict[str, Any], path: Path) -> bool:
        """OpenCode: whether ``record``, a message OpenCode has not marked complete in a file
        being written, may still grow (it was created in the last :data:`OPEN_MESSAGE_S`):
        it is held back then (:meth:`hold`), as the last request of a live transcript is.
        OpenCode writes a message's counts again after each step and marks it complete
        once its turn ends."""
        if not self.live or record.get("completed", True):
            return False
        created = _epoch(record.get("ts"))
        if created is not None and created < time.time() - OPEN_MESSAGE_S:
            return False
        self.hold(path)
        return True

    def _settled(self, dedup: claude_code.Dedup, path: Path, live: bool) -> list[dict[str, Any]]:
        """The requests pending at the end of ``path`` (:meth:`claude_code.Dedup.flush`),
        but the last one when it may still be streaming (see the class docstring)."""
        finals = dedup.flush()
        if live and dedup.last is not None:
            for index, entry in enumerate(finals):
                if entry["key"] == dedup.last:
                    # (one an earlier import sent is built no more: nothing to hold)
                    if not self.sent_before(entry.get("end")) and self._recent(entry.get("ts")):
                        del finals[index]
                        self.hold(path)
                    break
        return finals

    def hold(self, path: Path) -> None:
        """Count one request or sub-agent run of ``path`` held back; the caller does not
        record the file as imported (it is read again next time)."""
        summary = self.summary
        summary.held_back += 1
        name = str(path)
        if name not in summary.held_files[-1:]:
            summary.held_files.append(name)

    def _recent(self, ts: str | None) -> bool:
        """Whether ``ts`` is after ``live_after`` (a time that cannot be read is taken
        as recent: the file is)."""
        when = _epoch(ts)
        return self.live_after is not None and (when is None or when >= self.live_after)

    def _claude(self, f: BinaryIO, path: Path, live: bool = False) -> None:
        summary = self.summary
        dedup = claude_code.Dedup(DEDUP_WINDOW)
        project = claude_project(path)
        session = _ClaudeSession(self, path, project)
        usages: dict[bytes, _UsageParts | None] = {}
        offset = 0
        for raw in _lines(f, summary, self.progress):
            offset += len(raw)
            if raw.isspace():  # (a blank line; _lines yields no empty one)
                continue
            summary.lines += 1
            parts = None
            try:
                decoded = _typed(_CLAUDE, raw)
                session.feed(decoded, offset)
                found = _claude_dict(decoded, usages)
                if found is None:
                    continue
                line, parts = found
            except msgspec.ValidationError:  # valid JSON of another shape: read it whole
                line = _whole(raw)
                if not isinstance(line, dict):  # (not JSON, or not an object: [...], 7)
                    summary.malformed += 1
                    continue
            except msgspec.DecodeError:
                summary.malformed += 1
                continue
            entry = claude_code.usage_entry(line, parts)
            if entry is None:
                continue
            if entry["key"] is None:  # no ids to deduplicate by: the line is the request
                entry["line_id"] = entry["uuid"] or f"{path.resolve()}\0{offset}"
            if project:
                entry["project"] = project
            entry["end"] = offset
            for final in dedup.add(entry):
                session.request(final)
                self._claude_emit(final)
        for final in self._settled(dedup, path, live):
            session.request(final)
            self._claude_emit(final)
        summary.repeats += dedup.repeats
        session.finish(live)

    def _claude_emit(self, entry: dict[str, Any]) -> None:
        if entry["key"] is not None:
            # The request id rule every path shares (adapters/ids.py): an OTLP export or
            # a hook of the same request gives the same id, so it is stored once.
            event_id = ids.request_event_id(claude_code.PROVIDER, entry["key"][1])
            digest = hashlib.blake2b(event_id.encode(), digest_size=16).digest()
        else:
            event_id, digest = _event_id("cc-line", entry["line_id"])
        self._emit(claude_code.api_request_event(entry, event_id), digest, entry["end"])

    def _codex(self, f: BinaryIO, path: Path) -> None:
        summary = self.summary
        named = codex.session_from_name(path.name)
        # (the file's path identifies the rollout only when it names no session)
        # (and its name is its events' session, as ccusage names such a session: not
        # one "unknown" session for every rollout without one)
        rollout = codex.Rollout(
            named,
            fallback="" if named else str(path.resolve()),
            label=None if named else path.name.removesuffix(".jsonl"),
        )
        offset = 0
        for raw in _lines(f, summary, self.progress):
            offset += len(raw)
            if raw.isspace():  # (a blank line; _lines yields no empty one)
                continue
            summary.lines += 1
            try:
                line = _codex_dict(_typed(_CODEX, raw))
            except msgspec.ValidationError:
                line = _whole(raw)
                if not isinstance(line, dict):  # (not JSON, or not an object: [...], 7)
                    summary.malformed += 1
                    continue
            except msgspec.DecodeError:
                summary.malformed += 1
                continue
            if line is None:
                continue
            record = rollout.feed(line)
            if record is not None:
                event_id, digest = _event_id("cx", codex.key_text(record))
                self._emit(codex.api_request_event(record, event_id), digest, offset)
        summary.repeats += rollout.reemitted + rollout.replayed

    def _gemini_lines(self, f: BinaryIO, path: Path, live: bool = False) -> None:
        summary = self.summary
        session = gemini.Session(path.stem, _mtime_ts(path))
        dedup = claude_code.Dedup(DEDUP_WINDOW)
        offset = 0
        for raw in _lines(f, summary, self.progress):
            offset += len(raw)
            if raw.isspace():  # (a blank line; _lines yields no empty one)
                continue
            summary.lines += 1
            try:
                line: Any = _gemini_dict(_typed(_GEMINI, raw))
            except msgspec.ValidationError:  # valid JSON of another shape
                line = _whole(raw)
                if not isinstance(line, dict):  # (not JSON, or not an object: [...], 7)
                    summary.malformed += 1
                    continue
            except msgspec.DecodeError:
                summary.malformed += 1
                continue
            record = session.feed(line)
            if record is None:
                continue
            if record["key"] is None:  # no message id: the line is the request
                record["line_id"] = f"{path.resolve()}\0{offset}"
            record["end"] = offset
            for final in dedup.add(record):
                self._gemini_emit(final)
        for final in self._settled(dedup, path, live):
            self._gemini_emit(final)
        summary.repeats += dedup.repeats

    def _gemini_document(self, f: BinaryIO, path: Path, live: bool = False) -> None:
        summary = self.summary
        data = read_whole(f)
        summary.bytes += len(data)
        if self.progress is not None:
            self.progress(len(data))
        if len(data) > MAX_LINE:
            summary.malformed += 1
            return
        if data.lstrip()[:1] == b"[":
            return  # another of Gemini CLI's files (logs.json, checkpoints): not decoded
        try:
            document: Any = _typed(_GEMINI_DOCUMENT, data)
            messages: Any = document.messages
            document = _gemini_dict(document)
            if messages is not None:
                messages = [_gemini_dict(m) for m in messages]
        except msgspec.ValidationError:  # valid JSON of another shape: read it whole
            document = _typed(_ANY, data)
            messages = document.get("messages") if isinstance(document, dict) else None
        except msgspec.DecodeError:
            summary.malformed += 1
            return
        if not isinstance(document, dict):
            return  # another file of Gemini CLI's (logs.json is a list)
        session = gemini.Session(path.stem, _mtime_ts(path))
        session.header(document, times=True)
        if isinstance(messages, list):
            records = messages
        elif document.get("type") == "gemini":  # one message alone
            records, session.fallback_ts = [document], _mtime_ts(path)
        else:
            return
        summary.lines += len(records)
        dedup = claude_code.Dedup(1 << 30)  # the file is in memory already
        for index, message in enumerate(records):
            record = session.feed(message, hint=False)
            if record is None:
                continue
            if record["key"] is None:
                record["line_id"] = f"{path.resolve()}\0#{index}"
            dedup.add(record)
        for final in self._settled(dedup, path, live):
            self._gemini_emit(final)
        summary.repeats += dedup.repeats

    def _gemini_emit(self, record: dict[str, Any]) -> None:
        if record["key"] is not None:
            event_id = gemini.event_id(record)
            digest = hashlib.blake2b(event_id.encode(), digest_size=16).digest()
        else:
            event_id, digest = _event_id("gm-line", record["line_id"])
        self._emit(gemini.api_request_event(record, event_id), digest, record.get("end"))

    def copilot_calls(self, paths: Iterable[Path]) -> None:
        """Note the model calls of Copilot's OpenTelemetry exports (:attr:`model_calls`),
        so that a session's shutdown totals they cover are left out (adapters/copilot.py)."""
        self.model_calls = model_calls(paths)

    def _copilot_span(
        self, spans: copilot.Spans, line: copilot.SpanLine, end: int | None = None
    ) -> None:
        """A line of an OpenTelemetry file export: a span's events, as the OTLP listener
        makes them (anything else, metrics included, is passed over)."""
        found = spans.records(line)
        if found is None:
            return
        for event in copilot.otel_events(*found):
            if event["type"] == "api_request":
                self.emit_keyed(event, end)
            else:
                self._emit_session(event, end=end)

    def _copilot(self, f: BinaryIO, path: Path) -> None:
        """A session's ``events.jsonl`` or an OpenTelemetry file export (each line is
        taken for what it is)."""
        summary = self.summary
        session = path.parent.name  # session-state/<session id>/events.jsonl
        fallback: list[str | None] = []  # the file's mtime, looked up when first needed
        previous: float | None = None  # the last shutdown's time
        shutdowns = copilot.Shutdowns()
        spans = copilot.Spans()
        offset = 0
        for raw in _lines(f, summary, self.progress):
            offset += len(raw)
            if raw.isspace():  # (a blank line; _lines yields no empty one)
                continue
            summary.lines += 1
            try:
                decoded = _typed(_COPILOT, raw)
            except msgspec.ValidationError:  # valid JSON of another shape
                line = _whole(raw)
                if not isinstance(line, dict):  # (not JSON, or not an object: [...], 7)
                    summary.malformed += 1
                    continue
            except msgspec.DecodeError:
                summary.malformed += 1
                continue
            else:
                if decoded.type != copilot.SHUTDOWN:
                    shutdowns.seen(decoded.type)
                    if decoded.type == "span" or (decoded.type is None and b"Id" in raw):
                        self._copilot_span(spans, decoded, offset)
                    continue
                if not fallback:
                    fallback.append(_mtime_ts(path))
                data = decoded.data or _NO_COPILOT_DATA
                found = shutdowns.typed(
                    decoded.id,
                    decoded.timestamp,
                    data.modelMetrics,
                    _copilot_accounting(data),
                    session,
                    fallback[0],
                )
                previous = self._copilot_shutdown(found, session, previous, offset)
                continue
            if line.get("type") != copilot.SHUTDOWN:
                shutdowns.seen(line.get("type"))
                # (a span whose other fields are not a session event's: JSON, decoded above)
                self._copilot_span(spans, _typed(copilot.SPAN_LINE, raw), offset)
                continue
            if not fallback:
                fallback.append(_mtime_ts(path))
            found = shutdowns.records(line, session, fallback[0])
            previous = self._copilot_shutdown(found, session, previous, offset)

    def _copilot_shutdown(
        self, found: list[dict[str, Any]], session: str, previous: float | None, end: int
    ) -> float | None:
        """Send the records of one shutdown (its line ends at byte ``end``), unless the
        exports' model calls of ``session`` since the previous shutdown (at ``previous``)
        counted them already; the time of this one (the next one's ``previous``)."""
        when = _epoch(found[0]["ts"]) if found else None
        if when is not None:
            if copilot.covered(self.model_calls, session, previous, when):
                self.summary.repeats += len(found)  # counted call by call from the export
                found = []
            previous = when
        for record in found:
            event_id = copilot.event_id(record)
            digest = hashlib.blake2b(event_id.encode(), digest_size=16).digest()
            self._emit(copilot.api_request_event(record, event_id), digest, end)
        return previous


_NO_COPILOT_DATA = _CopilotData()


def _copilot_accounting(data: _CopilotData) -> bool:
    """Whether a shutdown's data has any of the usage accounting's keys (their values are
    not read)."""
    return any(getattr(data, key) is not None for key in copilot.ACCOUNTING_KEYS)


def model_calls(paths: Iterable[Path]) -> dict[str, list[float]]:
    """The model calls of Copilot's OpenTelemetry exports ``paths``: per session, the
    sorted times of its calls."""
    calls: dict[str, list[float]] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                for raw in _lines(f, Summary(agent="copilot"), None):
                    if b'"span"' not in raw and b"traceId" not in raw:
                        continue
                    try:
                        call = copilot.model_call(_typed(copilot.SPAN_LINE, raw))
                    except msgspec.DecodeError:  # (not JSON, or not an object)
                        continue
                    if call:
                        calls.setdefault(call[0], []).append(call[1])
        except OSError:
            continue  # (reading it says why, when it is to be read)
    return {session: sorted(times) for session, times in calls.items()}


# The model calls of these sessions that Copilot's OpenTelemetry spans brought.
_STORED_CALLS = """
    SELECT session_id, epoch(ts) FROM events
    WHERE type = 'api_request' AND source = $spans
      AND session_id IN (SELECT unnest(CAST($sessions AS VARCHAR[])))
"""


def _ask_store(
    sql: str, params: dict[str, Any], socket_path: str | None, what: str
) -> list[dict[str, Any]]:
    """The rows of ``sql`` from the daemon, or while it is stopped its database file
    (``socket_path``: the events socket, beside the control socket); none with neither
    (nothing stored yet). A daemon too busy to answer is an error that says ``what`` was
    asked, and why it matters."""
    from telemetryd.client import fetch, protocol

    control = (
        os.path.join(os.path.dirname(socket_path), paths.CONTROL_SOCKET)
        if socket_path
        else protocol.control_socket()
    )
    try:
        rows, _, _ = fetch.query(sql, params, control)
    except DaemonBusy as busy:  # (a DaemonUnavailable too)
        raise DaemonBusy(f"{busy}: could not ask it {what}; import again later") from None
    except DaemonUnavailable:
        return []
    return rows


def stored_model_calls(sessions: list[str], socket_path: str | None) -> dict[str, list[float]]:
    """The model calls of Copilot CLI ``sessions`` the store already holds, per session
    (as :func:`model_calls`): those of Copilot's spans (source ``copilot``), which came
    over OTLP, live, or from an export file imported before. A shutdown totalling them
    is then left out, as one that this run's export files cover is: its requests are
    counted already, call by call. The daemon, or while it is stopped its database
    file, answers (``socket_path``: the events socket, beside the control socket); with
    neither (nothing stored yet), none. A daemon too busy to answer is an error:
    counting the shutdowns anyway could count those requests twice."""
    if not sessions:
        return {}
    rows = _ask_store(
        _STORED_CALLS,
        {"spans": genai.COPILOT, "sessions": sessions},
        socket_path,
        "which Copilot model calls it holds already (without that, the sessions' shutdown "
        "totals could count them twice)",
    )
    calls: dict[str, list[float]] = {}
    for row in rows:
        session, when = row.values()
        if isinstance(session, str) and isinstance(when, int | float):
            calls.setdefault(session, []).append(float(when))
    return {session: sorted(times) for session, times in calls.items()}


# R21: the agents whose OTLP export carries no id the import could share (Codex, Gemini
# CLI), the source and id prefix of the requests that export gives, and how far apart
# (seconds) the export's and the file's time of one request may be. A request is the
# same when its session and its three counts (input, cache read, output: each request's
# own, growing with the context) are, and its times are that close.
EXPORTED_BY = {"codex": ("codex", "otel-cx-"), "gemini": ("gemini-cli", "otel-gm-")}
EXPORTED_WINDOW_S = 600.0
_STORED_REQUESTS = """
    SELECT session_id, epoch(ts) AS at, tokens_input, tokens_cache_read, tokens_output
    FROM events
    WHERE type = 'api_request' AND source = $source AND starts_with(id, $prefix)
      AND tokens_source = 'actual' AND session_id IS NOT NULL
"""


def exported_key(session: Any, input: Any, cache_read: Any, output: Any) -> str:
    """What one request is matched by across the two paths (R21): its session and counts."""
    return f"{session}\0{input or 0}\0{cache_read or 0}\0{output or 0}"


def _exported(exported: dict[str, list[float]], event: dict[str, Any]) -> bool:
    """Whether the store holds ``event`` (an imported request) from the agent's OTLP
    export already (:data:`EXPORTED_BY`). The exported request it is taken for (the
    nearest in time) stands for no other: two requests of a session with the same
    counts, one of them exported, leave one out. (Another copy of the same request, in
    another file, has the same id: the importer's dedup takes it, or, read by another
    reader process, that reader's own copy of ``exported``.)"""
    tokens = event.get("tokens") or {}
    key = exported_key(
        event.get("session_id"), tokens.get("input"), tokens.get("cache_read"), tokens.get("output")
    )
    times = exported.get(key)
    if not times:
        return False
    when = _epoch(event.get("ts"))
    if when is None:
        return False
    low = bisect.bisect_left(times, when - EXPORTED_WINDOW_S)
    high = bisect.bisect_right(times, when + EXPORTED_WINDOW_S)
    if low == high:
        return False
    del times[min(range(low, high), key=lambda at: abs(times[at] - when))]
    return True


def stored_requests(agent: str, socket_path: str | None) -> dict[str, list[float]]:
    """The requests of ``agent`` (Codex, Gemini CLI) the store holds from its own OTLP
    export, as :attr:`Importer.exported` takes them; asked as :func:`stored_model_calls`
    asks (none when nothing is stored; a daemon too busy to answer is an error)."""
    source, prefix = EXPORTED_BY[agent]
    rows = _ask_store(
        _STORED_REQUESTS,
        {"source": source, "prefix": prefix},
        socket_path,
        f"which {agent} requests its OpenTelemetry export brought (without that, they could "
        "be counted twice)",
    )
    found: dict[str, list[float]] = {}
    for row in rows:
        session, at, input_, cache_read, output = row.values()
        if isinstance(at, int | float):
            found.setdefault(exported_key(session, input_, cache_read, output), []).append(at)
    return {key: sorted(times) for key, times in found.items()}


def _epoch(ts: str | None) -> float | None:
    """An RFC 3339 time as epoch seconds (None: none, or not a time)."""
    if not ts:
        return None
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _error_text(raw: msgspec.Raw) -> str | None:
    """A failed tool result's text: its content, a string or a list of text blocks."""
    try:
        content = _typed(_ANY, raw) if len(raw) else None
    except msgspec.DecodeError:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        ]
        return "\n".join(texts) or None
    return None


class _ClaudeSession:
    """One transcript's tool uses, prompts and sub-agents, as events (see
    :mod:`telemetryd.adapters.claude_code`): a tool use waits for its result (at most
    :data:`PENDING_TOOLS` of them, the oldest dropped first) for the tool name and
    the duration; a sub-agent's requests and timestamps are summed until the file ends."""

    def __init__(self, importer: Importer, path: Path, project: str | None) -> None:
        self.importer = importer
        self.project = project
        self.path = path
        # Claude Code 2.1 names a sub-agent's file after it: <session>/subagents/agent-<id>.jsonl
        stem = path.stem
        self.file_agent = stem[len("agent-") :] if stem.startswith("agent-") else None
        self.pending: dict[str, tuple[str | None, str | None]] = {}
        self.agents: dict[str, claude_code.AgentSums] = {}
        self.ends: dict[str, int] = {}  # sub-agent -> where its last line ends

    def _agent_id(self, agent_id: Any, sidechain: bool) -> str | None:
        if not sidechain:
            return None
        return _str(agent_id) or self.file_agent

    def feed(self, line: _ClaudeLine, offset: int) -> None:
        """One line, which ends at byte ``offset`` of the file."""
        agent_id = None
        if line.isSidechain is True:
            agent_id = _str(line.agentId) or self.file_agent
            if agent_id is not None:
                sums = self.agents.get(agent_id)
                if sums is None:
                    sums = self.agents[agent_id] = claude_code.AgentSums()
                sums.seen(_str(line.timestamp), _str(line.sessionId), _str(line.cwd))
                self.ends[agent_id] = offset
        message = line.message
        if message is None:
            return
        content = message.content
        kind = line.type
        if content.__class__ is list:
            if kind == "assistant":
                for block in content:
                    use_id = block.id
                    if block.type == "tool_use" and use_id.__class__ is str and use_id:
                        self._tool_use(line, block, use_id, agent_id, offset)
            elif kind == "user":
                for block in content:
                    use_id = block.tool_use_id
                    if block.type == "tool_result" and use_id.__class__ is str and use_id:
                        self._tool_result(line, block, use_id, agent_id, offset)
        elif content.__class__ is str and kind == "user":
            assert isinstance(content, str)
            meta, sidechain = line.isMeta is True, line.isSidechain is True
            if not claude_code.is_prompt(content, meta=meta, sidechain=sidechain):
                return
            if self.importer.earlier(offset):
                return
            session = _str(line.sessionId)
            line_id = _str(line.uuid) or f"{self.path.resolve()}\0{offset}"
            event_id = ids.hashed_id("cc:prompt:", session or "", line_id)
            key = self.importer._fresh(event_id)
            if key is not None:
                event = self._event("prompt", line, None)
                self.importer._emit_session(
                    claude_code.prompt_event(event, len(content), line_id), fresh=key
                )

    def _tool_use(
        self, line: _ClaudeLine, block: _ClaudeBlock, use_id: str, agent_id: str | None, end: int
    ) -> None:
        ts = _str(line.timestamp)
        name = _str(block.name)
        pending = self.pending
        if use_id not in pending:
            pending[use_id] = (ts, name)
            if len(pending) > PENDING_TOOLS:
                del pending[next(iter(pending))]
        if self.importer.earlier(end):
            return
        session = _str(line.sessionId)
        event_id = ids.tool_event_id("tool_call", session or "", use_id)
        key = self.importer._fresh(event_id)
        if key is None:
            return
        agent: dict[str, Any] = {"type": "subagent", "id": agent_id} if agent_id else {}
        model = _str(line.message.model) if line.message is not None else None
        if model and model != claude_code.SYNTHETIC_MODEL:
            agent["model"] = model
        event = self._event("tool_call", line, agent or None)
        event = claude_code.tool_call_event(event, name, use_id, event_id)
        self.importer._emit_session(event, fresh=key)

    def _tool_result(
        self, line: _ClaudeLine, block: _ClaudeBlock, use_id: str, agent_id: str | None, end: int
    ) -> None:
        started, name = self.pending.pop(use_id, (None, None))
        if self.importer.earlier(end):
            return
        session = _str(line.sessionId)
        event_id = ids.tool_event_id("tool_result", session or "", use_id)
        key = self.importer._fresh(event_id)
        if key is None:
            return
        failed = block.is_error is True
        ts = _str(line.timestamp)
        agent = {"type": "subagent", "id": agent_id} if agent_id else None
        event = claude_code.tool_result_event(
            self._event("tool_result", line, agent),
            name,
            use_id,
            error=_error_text(block.content) if failed else None,
            failed=failed,
            duration_ms=claude_code.duration_ms(started, ts),
            event_id=event_id,
        )
        self.importer._emit_session(event, fresh=key)

    def _event(self, kind: str, line: _ClaudeLine, agent: dict[str, Any] | None) -> dict[str, Any]:
        return claude_code.imported_event(
            kind,
            _str(line.timestamp),
            _str(line.sessionId),
            cwd=_str(line.cwd),
            project=self.project,
            agent=agent,
        )

    def request(self, entry: dict[str, Any]) -> None:
        """A request of this file, final: a sub-agent's counts toward its tokens."""
        agent_id = self._agent_id(entry["agent_id"], entry["sidechain"])
        if agent_id is not None:
            self.agents.setdefault(agent_id, claude_code.AgentSums()).usage.add(entry)

    def finish(self, live: bool = False) -> None:
        """Build the sub-agents' activations; in a live file, not those of a sub-agent seen
        lately (it may still run: they come with the next import)."""
        importer = self.importer
        for agent_id, sums in self.agents.items():
            end = self.ends.get(agent_id)
            if live and not importer.sent_before(end) and importer._recent(sums.last):
                importer.hold(self.path)
                continue
            for event in sums.events(agent_id, self.project):
                importer._emit_session(event, end=self.ends.get(agent_id))


def _mtime_ts(path: Path) -> str | None:
    """The file's modification time as an event time (for records that give none)."""
    try:
        when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except (OSError, ValueError):
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


# -- which files changed since the last import ------------------------------------------------


def claude_project(path: Path) -> str | None:
    """The project directory of a transcript: the name under ``projects/``
    (``projects/<project>/<session>.jsonl``, or deeper), as ccusage names it; None
    for a file outside a ``projects`` directory."""
    parts = path.parts
    for n in range(len(parts) - 3, -1, -1):
        if parts[n] == "projects":
            return parts[n + 1]
    return None


def state_file(agent: str) -> Path:
    return Path(paths.resolve().state_dir) / "import" / f"{agent}.json"


def _identity(path: Path) -> list[int]:
    return agent_files.identity(path)


TAIL_BYTES = 4096  # the end of what an import read, recorded to tell a grown file


def _grew(
    agent: str, path: Path, before: list[int] | None, now: list[int], tail: str | None
) -> bool:
    """Whether ``path``, recorded as ``before`` by an earlier import, only grew since: a
    file of lines of an agent that only appends, with the same inode, not smaller, and the
    same last :data:`TAIL_BYTES` before the recorded size (``tail``): a file rewritten in
    place, or another file with a recycled inode, is read as new."""
    if agent not in APPEND_ONLY or path.suffix != ".jsonl" or not before or tail is None:
        return False
    if len(before) != 3 or len(now) != 3 or before[2] != now[2] or not 0 < before[0] <= now[0]:
        return False
    return _tail(path, before[0]) == tail


def _tail(path: Path, size: int) -> str | None:
    """A digest of the :data:`TAIL_BYTES` of ``path`` before byte ``size`` (None: unread)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read(min(size, TAIL_BYTES))
    except OSError:
        return None
    if len(data) != min(size, TAIL_BYTES):
        return None
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def load_state(agent: str) -> tuple[dict[str, list[int]], dict[str, str | None]]:
    """The files an earlier import read (path -> identity) and their tails (path ->
    :func:`_tail` at the size recorded)."""
    try:
        data = json.loads(state_file(agent).read_text())
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return {}, {}
    files, tails = data.get("files"), data.get("tails")
    # (an entry of another shape, in a file edited or damaged, is as good as none)
    files = {
        name: identity
        for name, identity in (files.items() if isinstance(files, dict) else ())
        if isinstance(identity, list) and all(n.__class__ is int for n in identity)
    }
    tails = {
        name: tail
        for name, tail in (tails.items() if isinstance(tails, dict) else ())
        if isinstance(tail, str)
    }
    return files, tails


def save_state(agent: str, files: dict[str, list[int]], tails: dict[str, str | None]) -> None:
    path = state_file(agent)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    kept = {name: tail for name, tail in tails.items() if name in files and tail is not None}
    temp.write_text(json.dumps({"version": STATE_VERSION, "files": files, "tails": kept}))
    os.replace(temp, path)


def run(
    agent: str,
    given: Iterable[str | Path] = (),
    *,
    since: datetime | None = None,
    dry_run: bool = False,
    rescan: bool = False,
    socket_path: str | None = None,
    progress: Progress | None = None,
    on_files: Callable[[list[Path], int], None] | None = None,
    pool: Pool | None = None,
    settle: float = SETTLE_S,
    exported: dict[str, list[float]] | None = None,
) -> Summary:
    """Import ``agent``'s files (the default locations when ``given`` is empty).

    ``settle``: seconds. The last request of a file modified within them, when it is that
    recent too, may still be streaming: it is held back, and its file is not recorded as
    imported (see :class:`Importer`). 0 takes everything now.

    ``on_files(files, total_bytes)`` is called once the files to read are known
    (for a progress bar); ``progress(bytes)`` as they are read. Raises
    DaemonUnavailable when the daemon cannot take the events (nothing is recorded
    as imported then, so running it again is safe). With no file to read (none, or
    all unchanged since the last import) the daemon is not asked for anything.

    With much to read, the files are read by reader processes (``pool``, else a pool of
    its own for this run: client/import_pool.py), with the same events and summary.

    ``exported``: Codex's or Gemini CLI's requests the store holds from their OTLP export
    (:func:`stored_requests`), when asked already; else they are asked for when there
    is a file to read.
    """
    from telemetryd.client.import_pool import Pool

    own = pool is None
    pool = Pool() if pool is None else pool
    try:
        live_after = time.time() - settle if settle > 0 and agent in HOLDS_BACK else None
        return _run(
            agent,
            given,
            since,
            dry_run,
            rescan,
            socket_path,
            progress,
            on_files,
            pool,
            live_after,
            exported,
        )
    finally:
        if own:
            pool.close()


def _files_of(agent: str, given: Iterable[str | Path], unreadable: list[str]) -> list[Path]:
    """``agent``'s files to import, in the order they are read (``given``, else its
    default locations; ``unreadable`` gets the directories that could not be read)."""
    if agent == "opencode":  # a database first, then the message files, per directory
        return agent_files.opencode_files(list(given), roots(agent), unreadable)
    if agent == "copilot":  # OpenTelemetry exports, then the sessions' events
        return agent_files.copilot_files(list(given), roots(agent), unreadable=unreadable)
    return discover(list(given), roots(agent), patterns(agent), unreadable)


def _cut(since: datetime | None) -> float | None:
    """``--since`` as epoch seconds (a time without a zone is UTC's)."""
    if since is None:
        return None
    return (since.replace(tzinfo=UTC) if since.tzinfo is None else since).timestamp()


def has_new(agent: str, since: datetime | None = None, rescan: bool = False) -> bool:
    """Whether an import of ``agent``'s default files would read one (as :func:`run`
    chooses them: a file not imported as it is now), without reading any."""
    files = _files_of(agent, (), [])
    saved = {} if rescan else load_state(agent)[0]
    cut = _cut(since)
    for path in files:
        try:
            identity = _identity(path)
        except OSError:
            continue
        if (cut is None or identity[1] / 1e9 >= cut) and saved.get(str(path)) != identity:
            return True
    return False


def _run(
    agent: str,
    given: Iterable[str | Path],
    since: datetime | None,
    dry_run: bool,
    rescan: bool,
    socket_path: str | None,
    progress: Progress | None,
    on_files: Callable[[list[Path], int], None] | None,
    pool: Pool,
    live_after: float | None,
    exported: dict[str, list[float]] | None,
) -> Summary:
    from telemetryd.client import import_pool
    from telemetryd.client.import_pool import DB_BYTES, DB_ROWS

    started = time.monotonic()
    if agent not in AGENTS:
        raise TelemetryError(f"unknown agent {agent!r}")
    unreadable: list[str] = []  # directories that could not be read: problems
    files = _files_of(agent, given, unreadable)
    saved, tails = load_state(agent)
    state = {} if rescan else saved  # (--rescan reads every file, and records them too)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # (a date or time given without a zone is UTC's)
    since_cut = _cut(since)
    todo = []
    unchanged = 0
    identities: dict[str, list[int]] = {}
    grown: dict[str, int] = {}  # file -> the size an earlier import sent in full
    fresh: dict[str, str | None] = {}  # file -> its tail at the size in ``identities``
    for path in files:
        try:
            identity = _identity(path)
        except OSError:
            continue
        if since_cut is not None and identity[1] / 1e9 < since_cut:
            continue  # last written before --since: nothing in it is recent enough
        before = state.get(str(path))
        if before == identity:
            unchanged += 1
            continue
        if _grew(agent, path, before, identity, tails.get(str(path))):
            grown[str(path)] = before[0]  # type: ignore[index]
        identities[str(path)] = identity
        if agent in APPEND_ONLY and path.suffix == ".jsonl":  # (what _grew reads next time)
            # taken before the file is read: were it rewritten meanwhile, the next import
            # finds another tail and reads it whole
            fresh[str(path)] = _tail(path, identity[0])
        todo.append(path)
    total = sum(identities[str(p)][0] for p in todo)
    if on_files is not None:
        on_files(todo, total)
    if not todo:  # nothing new: no prices to load, nothing for the daemon
        summary = Summary(agent=agent, dry_run=dry_run, files_unchanged=unchanged)
        summary.rejections += unreadable
        summary.elapsed_s = time.monotonic() - started
        return summary
    prices = pricing.configured()
    sink = None
    if not dry_run:
        sink = connect(socket_path or paths.events_socket_fast())
    importer = Importer(
        agent, since=since, sink=sink, progress=progress, prices=prices, live_after=live_after
    )
    importer.imported_sizes = grown
    importer.summary.files_unchanged = unchanged
    importer.summary.rejections += unreadable
    failed: set[Path] = set()
    units = []
    if pool.wanted(total):
        sized: list[tuple[Path, tuple[int, int, int] | None, int]] = []
        for path in todo:
            size = identities[str(path)][0]
            parts = agent_files.opencode_parts(path, DB_ROWS) if path.suffix == ".db" else None
            sized += [(path, part, DB_BYTES) for part in parts] if parts else [(path, None, size)]
        units = import_pool.units(sized)
    if agent in EXPORTED_BY:
        importer.exported = stored_requests(agent, socket_path) if exported is None else exported
    if agent == "copilot" and not all(agent_files.is_copilot_otel(p) for p in todo):
        from concurrent.futures import ThreadPoolExecutor

        # Sessions' events to read: the model calls of every export, read or not this
        # time, and those the store holds (asked meanwhile: the daemon may have to start
        # its store worker to answer, a few tenths of a second the readers would wait)
        exports = [p for p in files if agent_files.is_copilot_otel(p)]
        sessions = sorted({p.parent.name for p in todo if not agent_files.is_copilot_otel(p)})
        with ThreadPoolExecutor(1, thread_name_prefix="stored-calls") as asking:
            stored = asking.submit(stored_model_calls, sessions, socket_path)
            if len(units) > 1:
                importer.model_calls = pool.copilot_calls(exports)
            else:
                importer.copilot_calls(exports)
            for session, times in stored.result().items():
                calls = importer.model_calls.get(session, [])
                importer.model_calls[session] = sorted(calls + times)
    try:
        if len(units) > 1:
            failed = pool.read(importer, units, sink, progress)
        else:
            for path in todo:
                if not importer.read_or_note(path):
                    failed.add(path)
        for path in failed:  # not imported: read again next time
            identities.pop(str(path), None)
        for name in importer.summary.held_files:  # still being written: read again next time
            identities.pop(name, None)
        if sink is not None:
            reply = sink.finish(timeout=600.0)
            importer.summary.accepted = reply.accepted
            importer.summary.duplicates = reply.duplicates
            importer.summary.rejected = reply.rejected
            importer.summary.rejections += [
                f"{r.error}: {r.path or '$'}: {r.message}" for r in sink.rejected[:20]
            ]
            if since is None and not importer.summary.rejected:
                recorded = {name: fresh.get(name) for name in identities}
                save_state(agent, {**saved, **identities}, {**tails, **recorded})
    finally:
        if sink is not None:
            sink.close()
    if importer.summary.to_price:  # (the price data is read only to price something)
        importer.summary.price(importer.prices, importer.tier_starts)
    importer.summary.elapsed_s = time.monotonic() - started
    return importer.summary
