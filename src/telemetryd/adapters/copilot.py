"""GitHub Copilot CLI session events (``~/.copilot/session-state/<session>/events.jsonl``)
-> api_request records.

Copilot CLI appends one JSON object per line to each session's ``events.jsonl``:
``{"type", "id", "timestamp", "parentId", "data"}`` with types such as
``session.start``, ``user.message``, ``assistant.message``,
``tool.execution_start``/``_complete`` and, when the CLI exits,
``session.shutdown``. Only the shutdown carries token counts: ``data.modelMetrics``
maps each model the process used to ``{"requests": {"count", "cost"}, "usage":
{"inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens",
"reasoningTokens"}}`` (and, since GitHub's AI Credits billing, ``totalNanoAiu``).
A shutdown's counts are the process's running totals: a second shutdown of the same
process counts what it adds to the first. A session resumed later (``session.resume``)
appends another shutdown. Without the CLI's usage accounting the new process's counts
start again, and its shutdown counts whole; with it they total the session so far, and
it counts what it adds to the previous one (:class:`Shutdowns`). Each model of a
shutdown is one record.

As ccusage reads these files (its session-state adapter, ccusage PR #1174):

- a line is a shutdown when its decoded top-level ``type`` is ``session.shutdown``
  (the string inside a tool's arguments is not one); the event needs its ``id`` and
  ``timestamp`` strings, and counts that are non-negative integers, else it is
  skipped whole;
- tokens by :func:`usage.copilot`: ``inputTokens`` includes both cache reads and
  writes; reasoning is part of the output, except for ``gemini-*`` models;
- a model row without tokens is not a request (ccusage keeps such rows when they
  carry premium requests or AI credits, for its cost: their tokens are zero);
- a later shutdown of a session counts what it adds to the one before (ccusage issue
  #1721, in ccusage 20: "session.shutdown records are cumulative"), except where
  this reads a new process's totals that started again (above: ccusage counts none
  of counts that went down, and only the growth of a resumed process's);
- the session is the directory's name; the time the shutdown's ``timestamp`` (the
  file's mtime when it does not parse); the model the row's key, unchanged;
- the key is (session, event id, model): the event id of a record is a hash of it,
  so a copy of the same file, or an import run again, gives the same ids.

``data.tokenDetails`` is not read (ccusage found it diverging from ``usage``).
The premium requests and AI credits of a row are kept in the event's ``attrs``.

The OpenTelemetry file export. With ``COPILOT_OTEL_FILE_EXPORTER_PATH`` set, Copilot
CLI "writes all signals to this file as JSON-lines" (GitHub's CLI command reference,
"OpenTelemetry monitoring"); there is no default path (tools that read these files,
such as tokscale, look in ``~/.copilot/otel/``, and so does the importer). Each line
is one object: a span as the OpenTelemetry JavaScript SDK holds it, ``{"type":
"span", "traceId", "spanId", "parentSpanId", "name", "kind", "startTime", "endTime",
"attributes", "status": {"code", "message"}, "events", "resource": {"attributes"},
"instrumentationScope": {"name", "version"}}`` with times as ``[seconds,
nanoseconds]``, attributes as a plain object and ``kind`` the SDK's (0 internal, 1
server, 2 client, 3 producer, 4 consumer: OTLP's number less one), or a metric,
``{"type": "metric", "name", "dataPoints", ...}`` (line shapes as tokscale's Copilot
parser reads them, junhoyeo/tokscale ``crates/tokscale-core/src/sessions/copilot.rs``,
and its tests). :class:`Spans` turns a span line into the records of the OTLP
decoders (:mod:`telemetryd.adapters.otel.records`), and the GenAI mapper
(:mod:`telemetryd.adapters.otel.genai`) makes the same events of it as of the same
span exported over OTLP, with the same ids: a ``chat`` span is an ``api_request``
whose id comes from ``gen_ai.response.id``. Metrics are not read (the spans carry
every count). A span without ``service.name`` is Copilot CLI's default,
``github-copilot``.

One session in both places: a ``session.shutdown`` totals what one process of the
session used, per model, and the OpenTelemetry file has each of that process's
model calls (the exporter is set when the process starts, so it covers a process
whole). They cannot share ids, so a shutdown whose session (``gen_ai.conversation.id``
is the session id) has model calls in the file since its previous shutdown is left
out (:func:`covered`): its requests are counted from the file, one by one. So is one
whose calls the store holds already, sent live over OTLP (the importer asks the store:
``importer.stored_model_calls``).

Plain dicts, no imports beyond the adapters' own (and msgspec: a span line is decoded
into :class:`SpanLine`).
"""

from __future__ import annotations

import bisect
from datetime import datetime
from typing import Annotated, Any

import msgspec

from telemetryd.adapters import ids
from telemetryd.adapters import usage as usage_mod
from telemetryd.adapters.otel import common as otel_common
from telemetryd.adapters.otel import genai, mapping
from telemetryd.adapters.otel.records import Scope, Span, SpanEvent

SOURCE = "copilot-cli"
PROVIDER = "github-copilot"
ID_PREFIX = "cp:"
SHUTDOWN = "session.shutdown"
OTEL_FILE_ENV = "COPILOT_OTEL_FILE_EXPORTER_PATH"
OTEL_SERVICE = "github-copilot"  # Copilot CLI's default service.name
_USAGE = ("inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens", "reasoningTokens")


def _count(value: Any) -> int | None:
    """A count as ccusage's u64 fields take it: a non-negative integer (absent: 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _time(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


_Counts = tuple[int, int, int, int, int, int, float | None, float | None]


def _counts(metrics: Any) -> _Counts | None:
    """One model's counts: the five of ``usage`` (:data:`_USAGE`), the premium requests,
    their cost and the AI credits (``totalNanoAiu``) as written; None when the whole
    event does not decode."""
    if not isinstance(metrics, dict):
        return None
    usage = metrics.get("usage")
    usage = {} if usage is None else usage
    requests = metrics.get("requests")
    requests = {} if requests is None else requests
    if not isinstance(usage, dict) or not isinstance(requests, dict):
        return None
    counts = [_count(usage.get(name)) for name in _USAGE]
    request_count = _count(requests.get("count"))
    if request_count is None or any(c is None for c in counts):
        return None
    inp, out, read, write, reasoning = (c or 0 for c in counts)
    cost = requests.get("cost")
    nano_aiu = metrics.get("totalNanoAiu")
    return (
        inp,
        out,
        read,
        write,
        reasoning,
        request_count,
        cost if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
        nano_aiu if isinstance(nano_aiu, (int, float)) and not isinstance(nano_aiu, bool) else None,
    )


# A shutdown's model metrics of the usual types, typed: a value of another type (a count
# that is not a whole number from 0, a usage that is not an object) fails the decoding,
# and the line is read whole by Shutdowns.records instead, so both give the same records.
_Count = Annotated[int, msgspec.Meta(ge=0)]


class _Usage(msgspec.Struct):
    inputTokens: _Count | None = None  # (Copilot CLI's names)
    outputTokens: _Count | None = None
    cacheReadTokens: _Count | None = None
    cacheWriteTokens: _Count | None = None
    reasoningTokens: _Count | None = None


class _Requests(msgspec.Struct):
    count: _Count | None = None
    cost: Any = None


class ModelMetrics(msgspec.Struct):
    """One model's ``modelMetrics`` entry of the usual types (:meth:`Shutdowns.typed`)."""

    usage: _Usage | None = None
    requests: _Requests | None = None
    totalNanoAiu: Any = None


_NO_USAGE = _Usage()
_NO_REQUESTS = _Requests()


def _typed_counts(metrics: ModelMetrics) -> _Counts:
    """:func:`_counts` of a typed entry (its counts are whole numbers from 0 already)."""
    usage = metrics.usage or _NO_USAGE
    requests = metrics.requests or _NO_REQUESTS
    cost, nano_aiu = requests.cost, metrics.totalNanoAiu
    return (
        usage.inputTokens or 0,
        usage.outputTokens or 0,
        usage.cacheReadTokens or 0,
        usage.cacheWriteTokens or 0,
        usage.reasoningTokens or 0,
        requests.count or 0,
        cost if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
        nano_aiu if isinstance(nano_aiu, (int, float)) and not isinstance(nano_aiu, bool) else None,
    )


def _since(counts: _Counts, before: _Counts | None) -> _Counts | None:
    """``counts`` less ``before`` (a session's totals at its previous shutdown), or None
    when a count went down (totals that started again: ``counts`` are new)."""
    if before is None or any(now < then for now, then in zip(counts[:6], before[:6], strict=True)):
        return None
    inp, out, read, write, reasoning, requests = (
        now - then for now, then in zip(counts[:6], before[:6], strict=True)
    )
    cost, nano_aiu = (
        None if now is None else now - (then or 0)
        for now, then in zip(counts[6:], before[6:], strict=True)
    )
    return (inp, out, read, write, reasoning, requests, cost, nano_aiu)


def _row(model: str, counts: _Counts) -> dict[str, Any]:
    """One model's tokens (:func:`usage.copilot`) and billing attributes."""
    inp, out, read, write, reasoning, request_count, cost, nano_aiu = counts
    tokens = usage_mod.copilot(
        input=inp,
        output=out,
        cache_read=read,
        cache_write=write,
        reasoning=reasoning,
        reasoning_apart=model.startswith("gemini-"),
    )
    attrs: dict[str, Any] = {}
    if request_count:
        attrs["premium_requests"] = request_count
    if cost is not None and cost >= 0:
        attrs["premium_request_cost"] = cost
    if nano_aiu is not None and nano_aiu > 0:
        attrs["nano_aiu"] = int(nano_aiu)
    return {"tokens": tokens, "attrs": attrs}


# Events of the CLI's usage accounting (a usage receipt per model call, and checkpoints
# of the totals "for reconstructing aggregate accounting on resume"), and the keys of a
# shutdown's data that come with it (Copilot CLI's session-events.schema.json, 1.0.102).
ACCOUNTING_EVENTS = frozenset({"session.usage_record", "session.usage_checkpoint"})
# Events that begin a process of the session (its totals start again without the accounting).
PROCESS_EVENTS = frozenset({"session.start", "session.resume"})
ACCOUNTING_KEYS = ("usageAccountingWatermarks", "accountingSnapshot", "providerModelMetrics")


class Shutdowns:
    """The ``session.shutdown`` events of one session's ``events.jsonl``, read in order,
    as records (:meth:`records`).

    A shutdown's ``modelMetrics`` are the running totals of the process that writes
    it: its usage tracker only adds (the Copilot SDK's ``usageMetrics``, as tokscale
    PR 1032 read it), so a shutdown that follows another with no
    :data:`PROCESS_EVENTS` between them, in the same process, counts its difference
    from it, per model. A new process (``session.resume``) of a CLI without the usage
    accounting (no :data:`ACCOUNTING_EVENTS` in the file, none of
    :data:`ACCOUNTING_KEYS` in the shutdown) starts its totals again, so its
    shutdown counts whole (the CLI's issues 524 and 3994: after a resume, /usage
    shows the new process's usage alone). With the accounting, a resume rebuilds the
    session's totals ("for reconstructing aggregate accounting on resume"), and its
    shutdown counts its difference from the previous one. A model whose counts went
    down counts whole: its totals started again.
    """

    def __init__(self) -> None:
        self.accounted = False  # an accounting event was met in the file
        self._new_process = False  # a process event since the last shutdown
        self._totals: dict[str, _Counts] | None = None  # per model, at the last shutdown

    def seen(self, event_type: Any) -> None:
        """A line of another type was read (it may be one of the accounting's, or start
        a process)."""
        if event_type in ACCOUNTING_EVENTS:
            self.accounted = True
        elif event_type in PROCESS_EVENTS:
            self._new_process = True

    def records(
        self, line: dict[str, Any], session_id: str, fallback_ts: str | None
    ) -> list[dict[str, Any]]:
        """The records of one decoded line (none unless it is a shutdown with usage).

        A record: ``key`` (session, event id, model), ``tokens``, ``model``, ``ts``,
        ``session_id``, ``attrs`` (premium requests, AI credits)."""
        if line.get("type") != SHUTDOWN:
            self.seen(line.get("type"))
            return []
        event_id, ts, data = line.get("id"), line.get("timestamp"), line.get("data")
        if not isinstance(event_id, str) or not isinstance(ts, str):
            return []
        data = {} if data is None else data
        if not isinstance(data, dict):
            return []
        metrics = data.get("modelMetrics")
        metrics = {} if metrics is None else metrics
        if not isinstance(metrics, dict):
            return []
        counts = {model: _counts(m) for model, m in metrics.items()}
        if any(c is None for c in counts.values()):
            return []  # one field of the wrong type: ccusage's decoder drops the event
        accounting = any(data.get(key) is not None for key in ACCOUNTING_KEYS)
        return self._records(event_id, ts, counts, accounting, session_id, fallback_ts)  # type: ignore[arg-type]

    def typed(
        self,
        event_id: Any,
        ts: Any,
        metrics: dict[str, ModelMetrics] | None,
        accounting: bool,
        session_id: str,
        fallback_ts: str | None,
    ) -> list[dict[str, Any]]:
        """:meth:`records` of a shutdown whose ``data`` was decoded typed: its ``id`` and
        ``timestamp``, its model metrics (:class:`ModelMetrics`), and whether any of
        :data:`ACCOUNTING_KEYS` is there (``accounting``)."""
        if not isinstance(event_id, str) or not isinstance(ts, str):
            return []
        counts = {model: _typed_counts(m) for model, m in (metrics or {}).items()}
        return self._records(event_id, ts, counts, accounting, session_id, fallback_ts)

    def _records(
        self,
        event_id: str,
        ts: str,
        counts: dict[str, _Counts],
        accounting: bool,
        session_id: str,
        fallback_ts: str | None,
    ) -> list[dict[str, Any]]:
        running = not self._new_process or self.accounted or accounting
        before = self._totals if running else None
        # (a model a shutdown leaves out keeps its totals: one with no metrics resets none)
        self._totals = {**(before or {}), **counts}
        self._new_process = False
        when = ts if _time(ts) else fallback_ts
        found = []
        for model, total in counts.items():
            since = _since(total, before.get(model)) if before is not None else None
            row = _row(model, total if since is None else since)
            if not row["tokens"].get("total"):  # (none, or counts past any request's)
                continue
            if since is not None:
                row["attrs"]["since_shutdown"] = True  # (the difference from the last)
            found.append(
                {
                    "key": (session_id, event_id, model),
                    "tokens": row["tokens"],
                    "model": model,
                    "ts": when,
                    "session_id": session_id,
                    "attrs": row["attrs"],
                }
            )
        return found


def event_id(record: dict[str, Any]) -> str:
    """``cp:`` and a hash of the session, the shutdown event's id and the model."""
    return ids.hashed_id(ID_PREFIX, *record["key"])


def api_request_event(record: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The ``api_request`` event of one model's usage in one shutdown."""
    event: dict[str, Any] = {"type": "api_request", "id": event_id}
    if record["ts"]:
        event["ts"] = record["ts"]
    event["source"] = SOURCE
    event["session_id"] = record["session_id"]
    event["agent"] = {"model": record["model"] or "unknown", "provider": PROVIDER}
    event["tokens"] = record["tokens"]
    event["attrs"] = {"imported": True, **record["attrs"]}
    return event


# -- the OpenTelemetry file export ---------------------------------------------------------


def _ns(value: Any) -> int:
    """``[seconds, nanoseconds]`` as nanoseconds since the epoch (0: not a time)."""
    if value.__class__ is list and len(value) == 2:
        seconds, nanos = value
        # (decoded JSON: an int's class is int; a bool's is not)
        if seconds.__class__ is int and nanos.__class__ is int and seconds >= 0 and nanos >= 0:
            return seconds * 1_000_000_000 + nanos
    return 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class SpanLine(msgspec.Struct):
    """A line of the file export with a span's fields, each as the line has it (anything
    else on the line is skipped). The resource and the instrumentation scope are kept as
    their JSON text: the spans of one process repeat them, and :class:`Spans` decodes
    each text once (empty: the line has none)."""

    type: Any = None
    name: Any = None
    traceId: Any = None
    spanId: Any = None
    parentSpanId: Any = None
    kind: Any = None
    startTime: Any = None
    endTime: Any = None
    attributes: Any = None
    status: Any = None
    events: Any = None
    resource: msgspec.Raw = msgspec.Raw(b"")
    instrumentationScope: msgspec.Raw = msgspec.Raw(b"")


SPAN_LINE = msgspec.json.Decoder(SpanLine)
_ANY = msgspec.json.Decoder()


def _decoded(text: msgspec.Raw) -> Any:
    """A :class:`SpanLine`'s JSON text decoded (None when the line has none). (The line
    decoded whole, so its parts do too.)"""
    return _ANY.decode(text) if text else None


class Spans:
    """The span lines of one export file as OTLP records (:meth:`records`). The lines
    written by one process share their resource and scope: while they are the same text
    as the line before's, the same :class:`Scope` is given (the mappers then clean its
    resource once, see ``common.with_resource``)."""

    def __init__(self) -> None:
        self._texts: tuple[msgspec.Raw, msgspec.Raw] | None = None
        self._scope = Scope(resource={})

    def records(self, line: SpanLine) -> tuple[Scope, Span] | None:
        """A span line as OTLP records; None for anything else (metrics, lines of another
        shape). A line without ``type`` is a span when it has a name and a trace or span
        id (VS Code's Copilot Chat writes them so)."""
        name = _span_name(line)
        if name is None:
            return None
        texts = (line.resource, line.instrumentationScope)
        if texts != self._texts:
            self._texts, self._scope = texts, _scope(*map(_decoded, texts))
        status = _object(line.status)
        code = status.get("code")
        kind = line.kind
        events = []
        raw_events = line.events
        for item in raw_events if isinstance(raw_events, list) else ():
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                events.append(
                    SpanEvent(
                        name=item["name"],
                        time_ns=_ns(item.get("time")),
                        attrs=_object(item.get("attributes")),
                    )
                )
        # (the attributes are the line's own dicts, decoded for this span: not copied)
        span = Span(
            trace_id=_hex(line.traceId),
            span_id=_hex(line.spanId),
            name=name,
            start_ns=_ns(line.startTime),
            end_ns=_ns(line.endTime),
            attrs=_object(line.attributes),
            parent_span_id=_hex(line.parentSpanId),
            kind=kind + 1 if isinstance(kind, int) and 0 <= kind <= 4 else 0,
            status_code=code if code in (0, 1, 2) else 0,
            status_message=_text(status.get("message")),
            events=events,
        )
        return self._scope, span


def _scope(resource: Any, scope_of: Any) -> Scope:
    """The :class:`Scope` of a span line's decoded ``resource`` and ``instrumentationScope``
    (a resource without ``service.name`` is Copilot CLI's)."""
    attributes = dict(_object(_object(resource).get("attributes")))
    attributes.setdefault("service.name", OTEL_SERVICE)
    scope_of = _object(scope_of)
    return Scope(
        resource=attributes,
        name=_text(scope_of.get("name")),
        version=_text(scope_of.get("version")),
    )


def _span_name(line: SpanLine) -> str | None:
    """The name of a span line (:meth:`Spans.records`), None for any other line."""
    kind_of_line = line.type
    name = line.name
    if not isinstance(name, str):
        return None
    if kind_of_line != "span" and (
        kind_of_line is not None
        or not (isinstance(line.traceId, str) or isinstance(line.spanId, str))
    ):
        return None
    return name


def _hex(value: Any) -> str:
    """An id as the OTLP records keep it: lowercase, ``""`` when absent or all zeros."""
    text = _text(value).lower()
    return "" if not text.strip("0") else text


def otel_events(scope: Scope, span: Span) -> list[dict[str, Any]]:
    """The events of one span of the file, as the OTLP listener makes them (the span's
    own ``span`` event, and an ``api_request``, ``tool_result`` or agent activation),
    each marked ``attrs.imported``."""
    out = mapping.span_events(scope, span)
    for event in out:
        event.setdefault("attrs", {})["imported"] = True
    return out


def model_call(line: SpanLine) -> tuple[str, float] | None:
    """(session id, end time in epoch seconds) of a span line (:meth:`Spans.records`) that
    is a model call with a session; None for any other line. Read off the line, without
    building the span: the importer runs it on every line of the exports first."""
    name = _span_name(line)
    if name is None:
        return None
    attrs = _object(line.attributes)
    if genai.operation_of(name, attrs) not in genai.MODEL_CALLS:
        return None
    session = otel_common.first(attrs, otel_common.SESSION_KEYS)
    when = _ns(line.endTime) or _ns(line.startTime)
    if not session or not when:
        return None
    return session, when / 1e9


def covered(calls: dict[str, list[float]], session: str, after: float | None, until: float) -> bool:
    """Whether ``calls`` (session -> the sorted times of its model calls in OpenTelemetry
    files) has one of ``session`` after ``after`` (None: any time before) and at or
    before ``until``: the shutdown at ``until`` is then counted from those calls."""
    times = calls.get(session)
    if not times:
        return False
    first = 0 if after is None else bisect.bisect_right(times, after)
    return first < len(times) and times[first] <= until
