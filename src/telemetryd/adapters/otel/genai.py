"""GitHub Copilot and any producer of the OpenTelemetry GenAI semantic conventions.

Copilot CLI (``service.name`` ``github-copilot``) and Copilot Chat in VS Code
(``copilot-chat``) export a span tree per agent turn: ``invoke_agent`` over
``chat`` (one model call) and ``execute_tool`` spans, with
``gen_ai.operation.name``, ``gen_ai.provider.name`` (older producers:
``gen_ai.system``), ``gen_ai.request.model`` / ``gen_ai.response.model``,
``gen_ai.response.id`` and ``gen_ai.usage.*`` (github/docs Copilot CLI
reference "OpenTelemetry monitoring"; microsoft/vscode
``extensions/copilot/docs/monitoring/agent_monitoring.md``; the GenAI
semantic conventions). ``gen_ai.usage.input_tokens`` includes the cached
tokens; ``cache_read.input_tokens`` and ``cache_creation.input_tokens`` (newer:
``cache_write.input_tokens``) are parts of it, and
``reasoning.output_tokens`` is part of ``output_tokens``.

==========================  ====================================================
span / event                becomes (besides the ``span`` event of every span)
==========================  ====================================================
chat span                   ``api_request``: input = input − cache reads − cache
                            writes, cache_read, cache_creation, output (reasoning
                            included, also kept as ``reasoning``); id from
                            ``gen_ai.response.id``, else the span's ids
execute_tool span           ``tool_result`` (tool name, call id, success from the
                            status, ``error.type``, duration; agentic telemetry
                            spec metadata in ``gen_ai.tool.call.arguments`` as
                            ``attrs.ats``)
invoke_agent span           ``agent_start`` at its start and ``agent_stop`` at its
                            end (agent name as ``agent.type``; the turn's token
                            totals on the stop: they add up the chat spans, so
                            they are never an ``api_request``)
gen_ai.client.inference.    ``api_request`` with the chat span's id rule (one row
operation.details log       with the span) when it has ``gen_ai.response.id``,
                            else a ``log`` event
copilot_chat.session.start  ``session_start``
anything else               a ``log`` event
==========================  ====================================================

``github.copilot.cost`` stays in attrs: its unit is not documented as US
dollars (telemetryd computes the cost from its price table instead).
"""

from __future__ import annotations

from typing import Any

from telemetryd.adapters import ats, ids
from telemetryd.adapters import usage as usage_mod
from telemetryd.adapters.otel import common as c
from telemetryd.adapters.otel.records import LogRecord, Scope, Span

COPILOT = "copilot"
PREFIXES = ("gen_ai.", "copilot_chat.", "github.copilot.")
OPERATIONS = ("chat", "text_completion", "generate_content", "execute_tool", "invoke_agent")
MODEL_CALLS = frozenset({"chat", "text_completion", "generate_content"})


def is_copilot(service: str) -> bool:
    return "copilot" in service


def matches(service: str, name: str) -> bool:
    return is_copilot(service) or name.startswith(PREFIXES)


def operation(span: Span) -> str:
    """The GenAI operation of a span: ``gen_ai.operation.name``, else its name's first word."""
    return operation_of(span.name, span.attrs)


def operation_of(name: str, attrs: dict[str, Any]) -> str:
    """:func:`operation` of a span's name and attributes."""
    op = c.text(attrs.get("gen_ai.operation.name"))
    if op:
        return op
    word = name.split(" ", 1)[0]
    return word if word in OPERATIONS else ""


def matches_span(span: Span) -> bool:
    return operation(span) in OPERATIONS


def provider(attrs: dict[str, Any]) -> str | None:
    return c.text(attrs.get("gen_ai.provider.name")) or c.text(attrs.get("gen_ai.system"))


def model(attrs: dict[str, Any]) -> str | None:
    return c.text(attrs.get("gen_ai.response.model")) or c.text(attrs.get("gen_ai.request.model"))


def _first_count(attrs: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        found = c.count(attrs.get(key))
        if found is not None:
            return found
    return None


def tokens(attrs: dict[str, Any]) -> dict[str, Any]:
    """``gen_ai.usage.*`` in the model's convention (input includes both caches). Some
    Copilot CLI versions name the caches with underscores
    (``gen_ai.usage.cache_read_input_tokens``, ``cache_creation_input_tokens``: seen in
    their file exports by tokscale, junhoyeo/tokscale's Copilot parser tests): read too."""
    cache_write = _first_count(
        attrs,
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    )
    cache_read = _first_count(
        attrs, "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"
    )
    reasoning = c.count(attrs.get("gen_ai.usage.reasoning.output_tokens"))
    if reasoning is None:
        reasoning = c.count(attrs.get("gen_ai.usage.reasoning_tokens"))
    return usage_mod.input_with_caches(
        input=c.count(attrs.get("gen_ai.usage.input_tokens")),
        output=c.count(attrs.get("gen_ai.usage.output_tokens")),
        cache_read=cache_read or 0,
        cache_write=cache_write or 0,
        reasoning=reasoning,
    )


def _source(scope: Scope) -> str:
    service = scope.service
    if is_copilot(service):
        return COPILOT
    return c.cut(service, 100) if service else "otlp"


def log_events(scope: Scope, record: LogRecord, name: str) -> list[dict[str, Any]] | None:
    """The events of a GenAI or Copilot log record; None for a generic ``log`` event."""
    raw = record.attrs
    if name == "gen_ai.client.inference.operation.details":
        response_id = c.text(raw.get("gen_ai.response.id"))
        if not response_id:
            return None
        event = c.envelope(
            "api_request",
            source=_source(scope),
            ts=c.log_ts(record),
            attrs=raw,
            trace_id=record.trace_id,
            span_id=record.span_id,
        )
        name_of_provider = provider(raw)
        event["agent"] = c.agent(model(raw) or "unknown", name_of_provider)
        event["id"] = ids.request_event_id(name_of_provider or "unknown", response_id)
        event["tokens"] = tokens(raw)
        error = c.text(raw.get("error.type"))
        event["success"] = error is None
        if error:
            event["error"] = c.cut(error, c.MAX_ERROR)
        return [c.finish(event, c.with_resource(raw, scope.resource))]
    if name == "copilot_chat.session.start":
        event = c.envelope(
            "session_start",
            source=_source(scope),
            ts=c.log_ts(record),
            attrs=raw,
            trace_id=record.trace_id,
            span_id=record.span_id,
        )
        event["id"] = c.record_id("otel-gen-", scope.service, name, str(record.time_ns), raw)
        agent = c.agent(model(raw), None, type=c.text(raw.get("gen_ai.agent.name")))
        if agent:
            event["agent"] = agent
        return [c.finish(event, c.with_resource(raw, scope.resource))]
    return None


def _span_envelope(
    event_type: str, span: Span, source: str, ts: str | None, suffix: str
) -> dict[str, Any]:
    event = c.envelope(
        event_type,
        source=source,
        ts=ts,
        attrs=span.attrs,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
    )
    event["id"] = ids.bounded(f"otel-{suffix}-{span.trace_id}-{span.span_id}", f"otel-{suffix}-")
    return event


def _outcome(span: Span) -> tuple[bool | None, str | None]:
    error = c.text(span.attrs.get("error.type"))
    if span.status_code == 2 or error:
        return False, c.cut(error or span.status_message or "error", c.MAX_ERROR)
    if span.status_code == 1:
        return True, None
    return None, None


def span_events(
    scope: Scope, span: Span, source: str, attrs: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The events a GenAI span stands for besides its ``span`` event (``attrs``: the span's
    attrs as ``c.with_resource`` gives them, when the caller has them already: the events
    take that dict)."""
    op = operation(span)
    raw = span.attrs
    start, end = c.iso(span.start_ns), c.iso(span.end_ns) or c.iso(span.start_ns)
    duration = c.duration_ms(span.start_ns, span.end_ns)
    success, error = _outcome(span)
    if attrs is None:
        attrs = c.with_resource(raw, scope.resource)
    attrs["otel.from_span"] = True
    out = []
    if op in MODEL_CALLS:
        event = _span_envelope("api_request", span, source, end, "req")
        name_of_provider = provider(raw)
        event["agent"] = c.agent(model(raw) or "unknown", name_of_provider)
        response_id = c.text(raw.get("gen_ai.response.id"))
        if response_id:
            event["id"] = ids.request_event_id(name_of_provider or "unknown", response_id)
        event["tokens"] = tokens(raw)
        if duration is not None:
            event["duration_ms"] = duration
        if success is not None:
            event["success"] = success
        if error:
            event["error"] = error
        out.append(c.finish(event, attrs))
    elif op == "execute_tool":
        event = _span_envelope("tool_result", span, source, end, "tool")
        name = c.text(raw.get("gen_ai.tool.name")) or span.name.removeprefix("execute_tool ")
        tool: dict[str, Any] = {"name": c.cut(name or "unknown", 200)}
        use_id = c.text(raw.get("gen_ai.tool.call.id"))
        if use_id:
            tool["use_id"] = use_id
            event["id"] = ids.tool_event_id("tool_result", event.get("session_id", ""), use_id)
        if success is not None:
            tool["success"] = success
        if error:
            tool["error"] = error
        event["tool"] = tool
        if duration is not None:
            event["duration_ms"] = duration
        metadata = ats.from_arguments(tool["name"], raw.get("gen_ai.tool.call.arguments"))
        if metadata is not None:
            attrs["ats"] = metadata
        out.append(c.finish(event, attrs))
    elif op == "invoke_agent":
        agent = c.agent(
            model(raw),
            provider(raw),
            type=c.text(raw.get("gen_ai.agent.name")),
            id=c.text(raw.get("gen_ai.agent.id")),
        )
        begin = _span_envelope("agent_start", span, source, start, "agent-start")
        stop = _span_envelope("agent_stop", span, source, end, "agent-stop")
        for event in (begin, stop):
            if agent:
                event["agent"] = dict(agent)
        totals = tokens(raw)
        if totals.get("source") == "actual":
            stop["tokens"] = totals
        if duration is not None:
            stop["duration_ms"] = duration
        if success is not None:
            stop["success"] = success
        out.append(c.finish(begin, dict(attrs)))
        out.append(c.finish(stop, attrs))
    return out
