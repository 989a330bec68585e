"""Claude Code's OTLP events and spans -> events of the model.

Claude Code (``service.name`` ``claude-code`` or ``claude-code-desktop``) logs
each event with the body ``claude_code.<name>`` and the attribute
``event.name`` = ``<name>`` (docs: code.claude.com/docs/en/monitoring-usage).
Token counts arrive as numbers (older versions: strings). ``input_tokens``
already excludes the cache reads and writes (Anthropic's usage split).

========================  ===================================================
event                     becomes
========================  ===================================================
api_request               ``api_request``: tokens, ``cost_usd`` (reported),
                          duration; id from ``request_id`` (the transcript's
                          ``requestId``: imports of the same request are the
                          same row)
api_error                 ``api_request`` with ``success: false``, the error,
                          unknown tokens; status code and attempt in attrs
user_prompt               ``prompt`` (length; the text only with prompt_text)
tool_decision             ``tool_call`` (decision and its source in attrs), the
                          hook's PreToolUse id
tool_result               ``tool_result`` (success, error type, duration), the
                          hook's PostToolUse id
skill_activated           ``skill``
subagent_completed        ``agent_stop`` (type, model, duration; its
                          ``total_tokens`` is the final request's footprint,
                          not the run's, so it stays in attrs)
compaction                ``custom`` ``compaction``
anything else             a ``log`` event (mapping.generic_log)
========================  ===================================================

Spans (beta tracing): every span is a ``span`` event (mapping.py); a
``claude_code.llm_request`` span with a ``request_id`` is also the
``api_request`` of that request, with the id its log event has, so logs and
traces together still count it once (whichever arrives first is kept; the log
event carries the reported cost, the span does not).
"""

from __future__ import annotations

from typing import Any

from telemetryd.adapters import ids
from telemetryd.adapters import usage as usage_mod
from telemetryd.adapters.otel import common as c
from telemetryd.adapters.otel.records import LogRecord, Scope, Span

SOURCE = "claude-code"
PROVIDER = "anthropic"
PREFIX = "claude_code."
SERVICES = frozenset({"claude-code", "claude-code-desktop"})


def matches(service: str, name: str, body: Any = None) -> bool:
    return (
        service in SERVICES
        or name.startswith(PREFIX)
        or (isinstance(body, str) and body.startswith(PREFIX))
    )


def short_name(name: str, body: Any) -> str:
    """``api_request`` from ``claude_code.api_request`` or ``api_request``."""
    if not name and isinstance(body, str) and body.startswith(PREFIX):
        name = body
    return name.removeprefix(PREFIX)


def full_name(name: str, body: Any) -> str:
    short = short_name(name, body)
    return PREFIX + short if short else ""


def tokens(attrs: dict[str, Any]) -> dict[str, Any]:
    """Claude Code's counts in the model's convention (its input is uncached already):
    Anthropic's usage split, as :func:`telemetryd.adapters.usage.tokens_from_usage`
    reads it (a test ties the two)."""
    get = attrs.get
    uncached = get("input_tokens")
    output = get("output_tokens")
    read = get("cache_read_tokens")
    written = get("cache_creation_tokens")
    if (
        type(uncached) is int
        and type(output) is int
        and (read is None or type(read) is int)
        and (written is None or type(written) is int)
    ):
        # (the usual record: usage_mod.anthropic's result, without its general case)
        read = read or 0
        written = written or 0
        total = uncached + output + read + written
        if uncached >= 0 and output >= 0 and read >= 0 and written >= 0 and total <= c.MAX_COUNT:
            return usage_mod.split(uncached, output, read, written)
    count = c.count
    return usage_mod.anthropic(
        input=count(get("input_tokens")),
        output=count(get("output_tokens")),
        cache_read=count(get("cache_read_tokens")),
        cache_creation=count(get("cache_creation_tokens")),
    )


def _agent(attrs: dict[str, Any]) -> dict[str, Any]:
    """c.agent(model, PROVIDER, type="subagent" with an agent id, id=agent id)."""
    out: dict[str, Any] = {}
    model = attrs.get("model")
    if isinstance(model, str) and model:
        out["model"] = model
    out["provider"] = PROVIDER
    agent_id = attrs.get("agent_id")
    if isinstance(agent_id, str) and agent_id:
        out["type"] = "subagent"
        out["id"] = agent_id
    return out


def _request_id(prefix: str, scope: Scope, record: LogRecord, short: str) -> str:
    request_id = c.text(record.attrs.get("request_id"))
    if request_id:
        return ids.request_event_id(PROVIDER, request_id)
    return _record_id(prefix, scope, record, short)


def _record_id(prefix: str, scope: Scope, record: LogRecord, short: str) -> str:
    """A log record's id, from its time and attributes (which hold the session and
    its ``event.sequence``): the same record exported twice gets the same id."""
    return c.record_id(
        prefix,
        scope.service,
        short,
        str(record.time_ns),
        record.attrs,
    )


def _base(event_type: str, ts: str | None, record: LogRecord) -> dict[str, Any]:
    return c.envelope(
        event_type,
        source=SOURCE,
        ts=ts,
        attrs=record.attrs,
        trace_id=record.trace_id,
        span_id=record.span_id,
    )


def log_events(
    scope: Scope, record: LogRecord, name: str, *, prompt_text: bool = False
) -> list[dict[str, Any]] | None:
    """The events of one of Claude Code's log records; None for one without a
    mapping of its own (it becomes a generic log event)."""
    short = short_name(name, record.body)
    raw = record.attrs
    attrs = c.with_resource(raw, scope.resource, record.plain)
    ts = c.log_ts(record)

    if short in ("api_request", "api_error"):
        # (c.envelope's fields, inline: the record every request gives)
        event: dict[str, Any] = {"type": "api_request"}
        if ts:
            event["ts"] = ts
        event["source"] = SOURCE
        session = raw.get("session.id")
        if not (isinstance(session, str) and session):
            session = c.first(raw, c.SESSION_KEYS)
        if session:
            event["session_id"] = session
        if record.trace_id:
            event["trace_id"] = record.trace_id
        if record.span_id:
            event["span_id"] = record.span_id
        agent = _agent(raw)
        agent.setdefault("model", "unknown")
        event["agent"] = agent
        event["id"] = _request_id("otel-cc-", scope, record, short)
        duration = raw.get("duration_ms")
        if type(duration) is not int or not 0 <= duration <= c.MAX_COUNT:
            duration = c.count(duration)
        if duration is not None:
            event["duration_ms"] = duration
        if short == "api_request":
            event["tokens"] = tokens(raw)
            cost = raw.get("cost_usd")
            cost = cost if type(cost) is float and cost - cost == 0.0 else c.number(cost)
            if cost is None and c.count(raw.get("cost_usd_micros")) is not None:
                cost = c.count(raw.get("cost_usd_micros")) / 1_000_000  # type: ignore[operator]
            if cost is not None and 0 <= cost <= usage_mod.MAX_COST:
                event["cost_usd"] = cost
                event["cost_source"] = "reported"
            event["success"] = True
        else:
            event["tokens"] = dict(usage_mod.UNKNOWN)
            event["success"] = False
            event["error"] = c.cut(c.text(raw.get("error")) or "API error", c.MAX_ERROR)
        return [c.finish(event, attrs)]
    if short == "user_prompt":
        event = _base("prompt", ts, record)
        event["id"] = _record_id("otel-cc-", scope, record, short)
        c.prompt(event, attrs, raw, prompt_text)
        return [c.finish(event, attrs)]
    if short in ("tool_result", "tool_decision"):
        kind = "tool_result" if short == "tool_result" else "tool_call"
        event = _base(kind, ts, record)
        use_id = c.tool(
            event, attrs, raw, use_id_key="tool_use_id", error_keys=("error", "error_type")
        )
        session = event.get("session_id", "")
        event["id"] = (
            ids.tool_event_id(kind, session, use_id)
            if use_id
            else _record_id("otel-cc-", scope, record, short)
        )
        return [c.finish(event, attrs)]
    if short == "skill_activated":
        event = _base("skill", ts, record)
        event["id"] = _record_id("otel-cc-", scope, record, short)
        event["name"] = c.cut(c.text(raw.get("skill.name")) or "unknown", 200)
        return [c.finish(event, attrs)]
    if short == "subagent_completed":
        event = _base("agent_stop", ts, record)
        agent_id = c.text(raw.get("agent_id"))
        event["agent"] = c.agent(
            c.text(raw.get("final_model")) or c.text(raw.get("model")),
            PROVIDER,
            type=c.text(raw.get("agent_type")) or "subagent",
            id=agent_id,
        )
        duration = c.count(raw.get("duration_ms"))
        if duration is not None:
            event["duration_ms"] = duration
        event["id"] = (
            ids.agent_event_id("agent_stop", event.get("session_id", ""), agent_id)
            if agent_id
            else _record_id("otel-cc-", scope, record, short)
        )
        return [c.finish(event, attrs)]
    if short == "compaction":
        event = _base("custom", ts, record)
        event["id"] = _record_id("otel-cc-", scope, record, short)
        event["name"] = "compaction"
        return [c.finish(event, attrs)]
    return None


def span_events(scope: Scope, span: Span) -> list[dict[str, Any]]:
    """What a Claude Code span stands for besides its ``span`` event: the
    ``api_request`` of an ``llm_request`` span that names its request id."""
    raw = span.attrs
    request_id = c.text(raw.get("request_id")) or c.text(raw.get("gen_ai.response.id"))
    if span.name != "claude_code.llm_request" or not request_id:
        return []
    event = c.envelope(
        "api_request",
        source=SOURCE,
        ts=c.iso(span.end_ns) or c.iso(span.start_ns),
        attrs=raw,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
    )
    agent = _agent(raw)
    agent.setdefault("model", c.text(raw.get("gen_ai.request.model")) or "unknown")
    event["agent"] = agent
    event["id"] = ids.request_event_id(PROVIDER, request_id)
    event["tokens"] = tokens(raw)
    duration = c.count(raw.get("duration_ms"))
    if duration is None:
        duration = c.duration_ms(span.start_ns, span.end_ns)
    if duration is not None:
        event["duration_ms"] = duration
    success = c.flag(raw.get("success"))
    if success is None and span.status_code in (1, 2):
        success = span.status_code == 1
    if success is not None:
        event["success"] = success
    error = c.text(raw.get("error"))
    if error and success is False:
        event["error"] = c.cut(error, c.MAX_ERROR)
    attrs = c.with_resource(raw, scope.resource)
    attrs["otel.from_span"] = True
    return [c.finish(event, attrs)]
