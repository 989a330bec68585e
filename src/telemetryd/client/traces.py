"""Traces as span trees: what `telemetryctl trace` prints, as a Python API.

:func:`load` asks the daemon (or, while it is stopped, the database file read-only)
for every event of one trace, or of every trace a session's events belong to, in one
query, and :func:`build` turns the rows into :class:`Trace` trees.

The tree follows the same rules as the ``trace(trace_id)`` macro in
``sql/macros.sql`` (tests/test_trace.py holds the two to the same order): the events
with one span id are one span; a span's parent is its ``parent_span_id``; a span whose
parent is not in the trace is a root (depth 0); siblings, and roots, go by their start
(their earliest event's time), then by span id. Events without a span id are listed
after the tree, by time. (A span whose parents form a loop, which the macro leaves out
of its tree, is shown here as one more root.)

Tokens and cost: a span's own are those of the ``api_request`` events with its span
id, the model call it stands for (an OTLP GenAI ``chat`` span, say). Nothing else adds
to them: an ``invoke_agent`` span's ``agent_stop`` repeats the tokens its ``chat``
children already counted. A trace's totals are every ``api_request`` of the trace,
with a span id or without. Cost is the sum of the priced requests; requests without a
price (an unknown model) are counted in ``unpriced`` rather than guessed.

Import-light like the query path: no click, no duckdb.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from telemetryd.client.fetch import query

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

# One row per event of the picked traces. ``what`` is the trace() macro's.
_COLUMNS = """
    e.trace_id,
    e.span_id,
    e.parent_span_id,
    strftime(e.ts, '%Y-%m-%dT%H:%M:%S.%gZ') AS ts,
    e.type,
    coalesce(e.tool_name, e.name, e.event, e.message, e.agent_type) AS what,
    e.kind,
    e.duration_ms,
    coalesce(e.tool_success, e.success) AS success,
    coalesce(e.tool_error, e.error) AS error,
    e.agent_model AS model,
    e.tokens_input,
    e.tokens_output,
    e.tokens_cache_read,
    e.tokens_cache_creation,
    e.cost_usd,
    e.session_id,
    e.source,
    e.id
"""
# (OTLP trace ids are stored in lowercase hex: one pasted in capitals is found too.)
TRACE_SQL = (
    f"SELECT {_COLUMNS} FROM events AS e WHERE e.trace_id IN ($trace, lower($trace)) "
    "ORDER BY e.ts, e.id"
)
SESSION_SQL = f"""
SELECT {_COLUMNS}
FROM events AS e
WHERE e.trace_id IN (
    SELECT s.trace_id FROM events AS s WHERE s.session_id = $session AND s.trace_id IS NOT NULL
)
ORDER BY e.ts, e.id
"""


@dataclass
class Usage:
    """Tokens and cost of model requests (``api_request`` events)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0  # requests without a cost (a model the price table does not know)

    def add(self, row: dict[str, Any]) -> None:
        self.requests += 1
        self.input_tokens += row["tokens_input"] or 0
        self.output_tokens += row["tokens_output"] or 0
        self.cache_read_tokens += row["tokens_cache_read"] or 0
        self.cache_creation_tokens += row["tokens_cache_creation"] or 0
        if row["cost_usd"] is None:
            self.unpriced += 1
        else:
            self.cost_usd += row["cost_usd"]

    def merge(self, other: Usage) -> None:
        for name in (
            "requests",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_creation_tokens",
            "cost_usd",
            "unpriced",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Event:
    """One event of a trace, briefly."""

    id: str
    type: str
    ts: str
    what: str | None
    duration_ms: int | None
    success: bool | None
    error: str | None
    model: str | None = None
    usage: Usage | None = None  # an api_request's tokens and cost


@dataclass
class Span:
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str | None
    started: str
    depth: int
    duration_ms: int | None
    success: bool | None
    error: str | None
    model: str | None
    usage: Usage | None  # None: no api_request has this span id
    events: list[Event] = field(default_factory=list)
    children: list[Span] = field(default_factory=list)

    def walk(self) -> Iterator[Span]:
        """This span and every span under it, depth first (the printed order). (Walks
        here keep their own stack: a chain of spans may be thousands deep.)"""
        stack = [self]
        while stack:
            span = stack.pop()
            yield span
            stack.extend(reversed(span.children))


@dataclass
class Trace:
    trace_id: str
    session_ids: list[str]
    started: str
    duration_ms: int | None  # from the first start to the last end of its events
    roots: list[Span]
    unspanned: list[Event]  # events without a span id, by time
    totals: Usage

    def spans(self) -> Iterator[Span]:
        for root in self.roots:
            yield from root.walk()


@dataclass
class Result:
    traces: list[Trace]
    from_file: bool  # the daemon was down: read from the database file, maybe stale
    warning: str | None = None  # the daemon's: acknowledged events missing from the answer


# -- building the trees ------------------------------------------------------------------


def _event(row: dict[str, Any]) -> Event:
    usage = None
    if row["type"] == "api_request":
        usage = Usage()
        usage.add(row)
    return Event(
        id=row["id"],
        type=row["type"],
        ts=row["ts"],
        what=row["what"],
        duration_ms=row["duration_ms"],
        success=row["success"],
        error=row["error"],
        model=row["model"],
        usage=usage,
    )


def _ms(ts: str) -> int:
    """Milliseconds since the epoch of a stored time (UTC, millisecond precision)."""
    return round(datetime.fromisoformat(ts).timestamp() * 1000)


def _span(span_id: str, rows: list[dict[str, Any]]) -> Span:
    """One span from its events (``rows``, by time): the ``span`` event says what it
    is; without one, its first event does."""
    main = next((r for r in rows if r["type"] == "span"), rows[0])
    parent = main["parent_span_id"] or next(
        (r["parent_span_id"] for r in rows if r["parent_span_id"]), None
    )
    requests = [r for r in rows if r["type"] == "api_request"]
    usage = None
    if requests:
        usage = Usage()
        for row in requests:
            usage.add(row)
    success = main["success"]
    error = main["error"]
    if success is None and any(r["success"] is False for r in rows):
        failed = next(r for r in rows if r["success"] is False)
        success, error = False, failed["error"]
    duration = main["duration_ms"]
    if duration is None:
        duration = next((r["duration_ms"] for r in rows if r["duration_ms"] is not None), None)
    model = next((r["model"] for r in requests if r["model"]), None) or main["model"]
    return Span(
        span_id=span_id,
        parent_span_id=parent,
        name=main["what"] or main["type"],
        kind=main["kind"],
        started=min(r["ts"] for r in rows),
        depth=0,
        duration_ms=duration,
        success=success,
        error=error,
        model=model,
        usage=usage,
        events=[_event(r) for r in rows],
    )


def _order(spans: Iterable[Span]) -> list[Span]:
    return sorted(spans, key=lambda s: (s.started, s.span_id))


def _tree(spans: dict[str, Span]) -> list[Span]:
    """Link ``spans`` into trees; the roots, in order, depths set."""
    children: dict[str, list[Span]] = {}
    roots = []
    for span in spans.values():
        if span.parent_span_id is None or span.parent_span_id not in spans:
            roots.append(span)
        else:
            children.setdefault(span.parent_span_id, []).append(span)
    placed: set[str] = set()

    def place(root: Span) -> None:
        stack = [(root, 0)]
        while stack:
            span, depth = stack.pop()
            span.depth = depth
            placed.add(span.span_id)
            span.children = _order(children.get(span.span_id, ()))
            stack.extend((child, depth + 1) for child in span.children)

    roots = _order(roots)
    for root in roots:
        place(root)
    # Spans whose parents form a loop reach no root: each loop shown from its first span.
    if len(placed) < len(spans):
        for first in _order(s for s in spans.values() if s.span_id not in placed):
            if first.span_id in placed:
                continue  # (under an earlier loop's first span)
            if first.parent_span_id in children:
                children[first.parent_span_id].remove(first)
            roots.append(first)
            place(first)
    return roots


def _trace(trace_id: str, rows: list[dict[str, Any]]) -> Trace:
    by_span: dict[str, list[dict[str, Any]]] = {}
    unspanned = []
    totals = Usage()
    for row in rows:
        if row["type"] == "api_request":
            totals.add(row)
        if row["span_id"] is None:
            unspanned.append(_event(row))
        else:
            by_span.setdefault(row["span_id"], []).append(row)
    roots = _tree({span_id: _span(span_id, found) for span_id, found in by_span.items()})
    # From the first event to the last end: a span event's time is its start.
    start = min(_ms(r["ts"]) for r in rows)
    end = max(_ms(r["ts"]) + ((r["duration_ms"] or 0) if r["type"] == "span" else 0) for r in rows)
    return Trace(
        trace_id=trace_id,
        session_ids=sorted({r["session_id"] for r in rows if r["session_id"]}),
        started=min(r["ts"] for r in rows),
        duration_ms=end - start,
        roots=roots,
        unspanned=unspanned,
        totals=totals,
    )


def build(rows: Iterable[dict[str, Any]]) -> list[Trace]:
    """The traces of ``rows`` (the columns of :data:`TRACE_SQL`, ordered by time), each
    as its tree, the earliest first."""
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_trace.setdefault(row["trace_id"], []).append(row)
    traces = [_trace(trace_id, found) for trace_id, found in by_trace.items()]
    return sorted(traces, key=lambda t: (t.started, t.trace_id))


# -- asking the store --------------------------------------------------------------------


def load(
    trace_id: str | None = None,
    session_id: str | None = None,
    socket_path: str | None = None,
) -> Result:
    """One trace (``trace_id``) or every trace with an event of ``session_id``. An empty
    ``traces`` list when there is none; errors as :func:`query`'s."""
    if (trace_id is None) == (session_id is None):
        raise ValueError("give a trace id or a session id")
    if trace_id is not None:
        rows, from_file, warning = query(TRACE_SQL, {"trace": trace_id}, socket_path)
    else:
        rows, from_file, warning = query(SESSION_SQL, {"session": session_id}, socket_path)
    return Result(build(rows), from_file, warning)


# -- as JSON -----------------------------------------------------------------------------


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_creation_tokens": usage.cache_creation_tokens,
        "cost_usd": None if _unknown_cost(usage) else usage.cost_usd,
        "unpriced_requests": usage.unpriced,
    }


def _event_dict(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "ts": event.ts,
        "what": event.what,
        "duration_ms": event.duration_ms,
        "success": event.success,
        "error": event.error,
        "model": event.model,
        "usage": usage_dict(event.usage) if event.usage else None,
    }


def span_dict(span: Span) -> dict[str, Any]:
    """``span`` and the spans under it, nested (built without recursion)."""
    top = _span_fields(span)
    stack = [(span, top)]
    while stack:
        parent, made = stack.pop()
        for child in parent.children:
            below = _span_fields(child)
            made["children"].append(below)
            stack.append((child, below))
    return top


def _span_fields(span: Span) -> dict[str, Any]:
    return {
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "started": span.started,
        "depth": span.depth,
        "duration_ms": span.duration_ms,
        "success": span.success,
        "error": span.error,
        "model": span.model,
        "usage": usage_dict(span.usage) if span.usage else None,
        "events": [_event_dict(e) for e in span.events],
        "children": [],
    }


def trace_dict(trace: Trace) -> dict[str, Any]:
    return {
        "trace_id": trace.trace_id,
        "session_ids": trace.session_ids,
        "started": trace.started,
        "duration_ms": trace.duration_ms,
        "spans": [span_dict(s) for s in trace.roots],
        "unspanned": [_event_dict(e) for e in trace.unspanned],
        "totals": usage_dict(trace.totals),
    }


def json_text(value: Any, indent: int | None = 2) -> str:
    """``json.dumps(value, indent=indent, ensure_ascii=False)`` (``indent`` None: on one
    line, without spaces), without recursion: a trace's nested spans may be thousands
    deep, past the json module's limit."""
    out: list[str] = []
    work: list[tuple[Any, int, bool]] = [(value, 0, False)]  # (value or text, level, text?)
    colon = ": " if indent is not None else ":"
    while work:
        item, level, is_text = work.pop()
        if is_text:
            out.append(item)
        elif isinstance(item, (dict, list)) and item:
            inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
            opening, closing = ("{", "}") if isinstance(item, dict) else ("[", "]")
            parts: list[tuple[Any, int, bool]] = [(opening, level, True)]
            pairs = item.items() if isinstance(item, dict) else ((None, v) for v in item)
            for n, (key, below) in enumerate(pairs):
                head = ("," if n else "") + inner
                if key is not None:
                    head += json.dumps(key, ensure_ascii=False) + colon
                parts += [(head, level, True), (below, level + 1, False)]
            end = "" if indent is None else "\n" + " " * (indent * level)
            parts.append((end + closing, level, True))
            work.extend(reversed(parts))
        else:
            out.append(json.dumps(item, ensure_ascii=False))
    return "".join(out)


# -- as text -----------------------------------------------------------------------------

MAX_NAME = 60
HEADERS = ("span", "duration", "input", "output", "cache read", "cache write", "cost")


def duration_text(ms: int | None) -> str:
    """Milliseconds for people: ``850 ms``, ``1.25 s``, ``2m 05s``, ``1h 02m``."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _unknown_cost(usage: Usage) -> bool:
    """Whether there are requests and none of them has a price (none at all cost $0)."""
    return usage.requests > 0 and usage.requests == usage.unpriced


def cost_text(usage: Usage) -> str:
    """``$0.0123``; ``$?`` when no request of it has a price, a ``+`` when some lack one."""
    if _unknown_cost(usage):
        return "$?"
    return f"${usage.cost_usd:.4f}" + ("+" if usage.unpriced else "")


def _mark(success: bool | None, error: str | None) -> str:
    if success is False or (success is None and error):
        return "✗ " + (error or "failed").replace("\n", " ")[:120]
    return "✓" if success else ""


def _cut(text: str, limit: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _usage_cells(usage: Usage | None) -> list[str]:
    if usage is None:
        return ["", "", "", "", ""]
    return [
        f"{usage.input_tokens:,}",
        f"{usage.output_tokens:,}",
        f"{usage.cache_read_tokens:,}",
        f"{usage.cache_creation_tokens:,}",
        cost_text(usage),
    ]


def _label(span: Span, prefix: str) -> str:
    name = span.name
    if span.model and span.model not in name:
        name += f" ({span.model})"
    return prefix + _cut(name, MAX_NAME)


def _rows(root: Span) -> Iterator[list[str]]:
    """Table rows of ``root`` and its subtree: box-drawing lines show the tree."""
    stack = [(root, "", "")]
    while stack:
        span, lead, branch = stack.pop()
        yield [
            _label(span, lead + branch),
            duration_text(span.duration_ms),
            *_usage_cells(span.usage),
            _mark(span.success, span.error),
        ]
        below = lead + ("" if not branch else "   " if branch == "└─ " else "│  ")
        last = len(span.children) - 1
        stack.extend(
            (child, below, "└─ " if n == last else "├─ ")
            for n, child in reversed(list(enumerate(span.children)))
        )


def render(trace: Trace) -> list[str]:
    """The lines that show one trace: a heading, the span tree as a table (duration,
    tokens and cost per span, ✓ or ✗ with the error), the events without a span, and
    the trace's totals."""
    count = sum(1 for _ in trace.spans())
    heading = f"trace {trace.trace_id}"
    if trace.session_ids:
        heading += f"  session {', '.join(trace.session_ids)}"
    heading += (
        f"  started {trace.started}  {count} span{'s' if count != 1 else ''}"
        f"  {duration_text(trace.duration_ms)}"
    )
    table: list[list[str]] = [[*HEADERS, ""]]
    for root in trace.roots:
        table.extend(_rows(root))
    total = trace.totals
    requests = f"total ({total.requests} request{'s' if total.requests != 1 else ''})"
    table.append([requests, duration_text(trace.duration_ms), *_usage_cells(total), ""])
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]

    def line(cells: list[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(cells[1:-1], widths[1:], strict=True)]
        return ("  ".join(parts) + "  " + cells[-1]).rstrip()

    lines = [heading, line(table[0])]
    lines += [line(row) for row in table[1:-1]]
    if trace.unspanned:
        lines.append("events without a span:")
        for event in trace.unspanned:
            what = f"  {event.ts}  {event.type}"
            if event.what:
                what += f"  {_cut(event.what, MAX_NAME)}"
            if event.usage:
                used = event.usage
                what += f"  {event.model or 'unknown model'}  {used.input_tokens:,} input"
                what += f", {used.output_tokens:,} output"
                if used.cache_read_tokens or used.cache_creation_tokens:
                    what += f", {used.cache_read_tokens:,} cache read"
                    what += f", {used.cache_creation_tokens:,} cache write"
                what += f"  {cost_text(used)}"
            if event.duration_ms is not None:
                what += f"  {duration_text(event.duration_ms)}"
            lines.append((what + "  " + _mark(event.success, event.error)).rstrip())
    lines.append("-" * len(line(table[0])))
    lines.append(line(table[-1]))
    return lines
