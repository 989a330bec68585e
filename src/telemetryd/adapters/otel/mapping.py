"""OTLP records -> events of the model: the entry points and the generic fallback.

The listener calls one function per record: :func:`log_events`,
:func:`span_events` and :func:`metric_events`. Each dispatches on the
resource's ``service.name`` and the record's event name to the agent's module
(:mod:`.claude_code`, :mod:`.codex`, :mod:`.gemini`, :mod:`.genai` for Copilot
and any GenAI semantic-convention producer); what no agent module maps
becomes a generic event:

- a log record -> a ``log`` event named after its event name (``event_name``,
  else the ``event.name`` attribute, else a short body), level from its
  severity, ``component`` the instrumentation scope (else the service);
- a span -> a ``span`` event with its trace, span and parent ids (so the
  ``trace(trace_id)`` macro rebuilds the tree), its kind, duration and status;
  the span's own events (exceptions, retries) go into ``attrs.events``;
- a metric data point -> a ``metric`` event: a monotonic sum is a
  ``counter``, a gauge or non-monotonic sum a ``gauge``, a histogram or summary
  a ``histogram`` whose ``value`` is the sum (``count``, ``min``, ``max`` in
  attrs); ``temporality`` (delta or cumulative) in attrs.

Every event carries ``source`` (the agent, else the service name), the session
id and model when the record names them, and ``attrs`` with the record's
attributes and the resource's (under ``resource``), without content and
bounded (:mod:`.common`). Ids are deterministic (:mod:`telemetryd.adapters.ids`):
the same record mapped twice gets the same id, and a real thing seen through
two paths (OTLP and a hook, OTLP and a transcript) gets one id. docs/events.md
("OTLP mapping") has the table of what each agent's records become.
"""

from __future__ import annotations

from typing import Any

from telemetryd.adapters import ids
from telemetryd.adapters.otel import claude_code, codex, gemini, genai
from telemetryd.adapters.otel import common as c
from telemetryd.adapters.otel.records import LogRecord, Point, Scope, Span


def source_of(scope: Scope, name: str = "") -> str:
    """The producer: the agent, else the service name, else ``otlp``."""
    service = scope.service
    if claude_code.matches(service, name):
        return claude_code.SOURCE
    if codex.matches(service, name):
        return codex.SOURCE
    if gemini.matches(service, name, scope.name):
        return gemini.SOURCE
    if genai.is_copilot(service):
        return genai.COPILOT
    return c.cut(service, 100) if service else "otlp"


def event_name(record: LogRecord) -> str:
    """The record's event name: ``event_name``, the ``event.name`` attribute, or a
    body that is a name (no spaces, at most 200 characters)."""
    for candidate in (record.event_name, record.attrs.get("event.name")):
        if isinstance(candidate, str) and candidate:
            return c.cut(candidate, 200)
    body = record.body
    if isinstance(body, str) and body and len(body) <= 200 and " " not in body:
        return body
    return ""


def log_events(
    scope: Scope, record: LogRecord, *, prompt_text: bool = False
) -> list[dict[str, Any]]:
    """The events of one log record."""
    name = record.event_name or record.attrs.get("event.name")
    if not (type(name) is str and name and len(name) <= 200):
        name = event_name(record)  # (the usual name, without the call)
    service = scope.service
    found: list[dict[str, Any]] | None = None
    if claude_code.matches(service, name, record.body):
        found = claude_code.log_events(scope, record, name, prompt_text=prompt_text)
        if found is None:
            name = claude_code.full_name(name, record.body)
    elif codex.matches(service, name):
        found = codex.log_events(scope, record, name, prompt_text=prompt_text)
    elif gemini.matches(service, name, scope.name):
        found = gemini.log_events(scope, record, name, prompt_text=prompt_text)
    elif genai.matches(service, name):
        found = genai.log_events(scope, record, name)
    if found is not None:
        return found
    return [generic_log(scope, record, name, source_of(scope, name))]


def log_events_with_text(scope: Scope, record: LogRecord) -> list[dict[str, Any]]:
    """:func:`log_events` with ``prompt_text``."""
    return log_events(scope, record, prompt_text=True)


def span_events(scope: Scope, span: Span) -> list[dict[str, Any]]:
    """The events of one span: always its ``span`` event, and for spans an agent
    module knows, the events they stand for (an ``api_request`` of a model call, a
    ``tool_result``, an agent activation)."""
    source = source_of(scope, span.name)
    service = scope.service
    if claude_code.matches(service, span.name):
        return [generic_span(scope, span, source), *claude_code.span_events(scope, span)]
    if codex.matches(service, span.name) or gemini.matches(service, span.name, scope.name):
        # their counts come from their log events (docs/events.md: OTLP mapping)
        return [generic_span(scope, span, source)]
    if genai.matches_span(span):
        # (the span's attrs cleaned once for both: each event gets a copy to add to)
        attrs = c.with_resource(span.attrs, scope.resource)
        return [
            generic_span(scope, span, source, dict(attrs)),
            *genai.span_events(scope, span, source, attrs),
        ]
    return [generic_span(scope, span, source)]


def metric_events(scope: Scope, point: Point) -> list[dict[str, Any]]:
    """The ``metric`` event of one data point (none for a point without a finite value)."""
    if point.kind in ("sum", "gauge"):
        value = c.number(point.value)
        kind = "counter" if point.kind == "sum" and point.monotonic else "gauge"
    else:
        value = c.number(point.sum) if point.sum is not None else 0.0
        kind = "histogram"
    if value is None:
        return []
    attrs = c.with_resource(point.attrs, scope.resource)
    extra: dict[str, Any] = {"otel.kind": point.kind}
    if point.temporality:
        extra["temporality"] = point.temporality
    if point.kind not in ("sum", "gauge"):
        extra["count"] = point.count
        if point.sum is None:
            extra["sum_missing"] = True
        for key in ("min", "max"):
            bound = c.number(getattr(point, key))
            if bound is not None:
                extra[key] = bound
    start = c.iso(point.start_ns)
    if start:
        extra["start"] = start
    attrs.update(extra)
    source = source_of(scope, point.metric)
    event = c.envelope("metric", source=source, ts=c.iso(point.time_ns), attrs=point.attrs)
    model = c.first(point.attrs, c.MODEL_KEYS)
    if model:
        event["agent"] = c.agent(model, None)
    # (the whole resource and the value too: points of one metric at one time from two
    # hosts or processes, which differ in their resource only, are two points; so are
    # two values at one time)
    event["id"] = c.record_id(
        "otel-metric-",
        scope.service,
        point.metric,
        str(point.start_ns),
        str(point.time_ns),
        point.attrs,
        scope.resource,
        [point.value, point.count, point.sum, point.min, point.max],
    )
    event["name"] = c.cut(point.metric or "metric", 200)
    event["value"] = value
    event["kind"] = kind
    if point.unit:
        event["unit"] = c.cut(point.unit, 50)
    return [c.finish(event, attrs)]


# -- the generic events ------------------------------------------------------------------


def generic_log(scope: Scope, record: LogRecord, name: str, source: str) -> dict[str, Any]:
    """A ``log`` event for a record no agent module maps."""
    attrs = c.with_resource(record.attrs, scope.resource, record.plain)
    body = record.body
    if isinstance(body, str):
        if body and body != name:
            attrs["otel.body"] = c.cut(body)
    elif body is not None:
        attrs["otel.body"] = c.value_of(body)
    event = c.envelope(
        "log",
        source=source,
        ts=c.log_ts(record),
        attrs=record.attrs,
        trace_id=record.trace_id,
        span_id=record.span_id,
    )
    model = c.first(record.attrs, c.MODEL_KEYS)
    if model:
        event["agent"] = c.agent(model, None)
    event["id"] = c.record_id(
        "otel-log-",
        scope.service,
        str(record.time_ns),
        name,
        str(record.severity_number),
        record.trace_id,
        record.span_id,
        record.body,
        record.attrs,
        scope.resource,
    )
    event["level"] = c.level(record.severity_number, record.severity_text)
    event["component"] = c.cut(scope.name or scope.service or source, 200)
    event["event"] = name or "log"
    return c.finish(event, attrs)


def span_id_of(span: Span) -> str:
    if span.trace_id and span.span_id:
        return ids.bounded(f"otel-span-{span.trace_id}-{span.span_id}", "otel-span-")
    return c.record_id("otel-span-", span.name, str(span.start_ns), span.attrs)


def generic_span(
    scope: Scope, span: Span, source: str, attrs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``span`` event of a span (``attrs``: the span's attrs as ``c.with_resource``
    gives them, when the caller has them already: the event takes that dict)."""
    if attrs is None:
        attrs = c.with_resource(span.attrs, scope.resource)
    if span.events:
        attrs["events"] = [_span_event(item, span.start_ns) for item in span.events[:20]]
        if len(span.events) > 20:
            attrs["events_dropped"] = len(span.events) - 20
    event = c.envelope(
        "span",
        source=source,
        ts=c.iso(span.start_ns),
        attrs=span.attrs,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
    )
    model = c.first(span.attrs, c.MODEL_KEYS)
    if model:
        event["agent"] = c.agent(model, None)
    event["id"] = span_id_of(span)
    event["name"] = c.cut(span.name or "span", 200)
    kind = c.SPAN_KINDS.get(span.kind)
    if kind:
        event["kind"] = kind
    duration = c.duration_ms(span.start_ns, span.end_ns)
    if duration is not None:
        event["duration_ms"] = duration
    if span.status_code in (1, 2):
        event["success"] = span.status_code == 1
    if span.status_code == 2 and span.status_message:
        event["error"] = c.cut(span.status_message, c.MAX_ERROR)
    return c.finish(event, attrs)


def _span_event(item: Any, start_ns: int) -> dict[str, Any]:
    """One event of a span, for its ``attrs.events``: name, milliseconds after the span's
    start, and attributes (content dropped; all of them for a content event)."""
    out: dict[str, Any] = {"name": c.cut(item.name, 200)}
    offset = c.duration_ms(start_ns, item.time_ns)
    if offset is not None:
        out["at_ms"] = offset
    if item.name in c.CONTENT_EVENTS:
        lengths = {f"{k}_length": n for k, v in item.attrs.items() if (n := c.length_of(v))}
        if lengths:
            out["attrs"] = lengths
    elif item.attrs:
        cleaned = c.clean(item.attrs)
        # one level less: the span event's attributes sit two levels inside attrs
        out["attrs"] = {
            key: c.cut(c.encode(value).decode("utf-8", "replace"))
            if isinstance(value, (list, dict))
            else value
            for key, value in cleaned.items()
        }
    return out
