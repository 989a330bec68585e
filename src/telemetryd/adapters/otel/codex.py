"""Codex's OTLP log events -> events of the model.

Codex (openai/codex, ``codex-rs/otel/src/events/session_telemetry.rs``) names
each log event in the ``event.name`` attribute (``codex.sse_event``, ...) and
puts ``conversation.id`` (the session), ``model``, ``slug``, ``app.version``,
``auth_mode`` and ``originator`` on every one. Several values are formatted
with Rust's ``%`` (``Display``), so they arrive as strings: ``duration_ms``,
``prompt_length``, ``input_token_count``, ``output_token_count``,
``tool_token_count``, ``success``; ``cached_token_count`` and
``reasoning_token_count`` are integers.

===============================  ==============================================
event                            becomes
===============================  ==============================================
codex.sse_event, event.kind      ``api_request``: input includes the cached
``response.completed``           tokens (OpenAI usage), so input = input −
                                 cached, cache_read = cached; reasoning is part
                                 of the output and also kept as ``reasoning``;
                                 with ``error.message``: ``success: false``
codex.sse_event, other kinds     nothing (one per server-sent event: every
                                 text delta) unless it carries an error, which
                                 becomes a ``log`` event
codex.api_request                a failed HTTP attempt (``error.message`` or a
                                 non-2xx status): ``api_request`` with
                                 ``success: false``; a successful one is a
                                 ``log`` event (its tokens come with the
                                 ``response.completed`` event)
codex.conversation_starts        ``session_start`` (provider, policies in attrs)
codex.user_prompt                ``prompt`` (length; the text only when asked
                                 and Codex's ``log_user_prompt`` sent it)
codex.tool_decision              ``tool_call`` (decision and its source in
                                 attrs), the hook adapter's id for ``call_id``
codex.tool_result                ``tool_result`` (success, duration), the hook
                                 adapter's id for ``call_id``
anything else                    a ``log`` event
===============================  ==============================================

No Codex event carries a response id: an ``api_request`` gets a hash of its
record (the same export twice is one row). Codex's spans (``handle_responses``
with ``gen_ai.usage.*``) and the span events its ``log_and_trace_event!``
writes repeat the same counts without an id to join them by, so they stay
``span`` events and are not counted again. Codex rollouts imported with
``telemetryctl import codex`` are keyed differently: the import leaves out a
request this export brought already, matching it by session, counts and time
(docs/counting.md, R21).
"""

from __future__ import annotations

from typing import Any

from telemetryd.adapters import ids
from telemetryd.adapters import usage as usage_mod
from telemetryd.adapters.otel import common as c
from telemetryd.adapters.otel.records import LogRecord, Scope

SOURCE = "codex"
PROVIDER = "openai"  # Codex's default model provider; the events do not name it
PREFIX = "codex."


def matches(service: str, name: str) -> bool:
    """Codex's record: its event names' prefix, or a service named ``codex...`` in any case
    (``codex_cli_rs``, ``Codex Desktop``)."""
    return name.startswith(PREFIX) or service[:5].lower() == "codex"


def tokens(attrs: dict[str, Any]) -> dict[str, Any]:
    """Codex's counts in the model's convention (its input includes the cached tokens)."""
    return usage_mod.tokens_from_usage(
        {
            "input_tokens": c.count(attrs.get("input_token_count")),
            "cached_input_tokens": c.count(attrs.get("cached_token_count")) or 0,
            "output_tokens": c.count(attrs.get("output_token_count")),
            "reasoning_output_tokens": c.count(attrs.get("reasoning_token_count")),
        }
    )


def log_events(
    scope: Scope, record: LogRecord, name: str, *, prompt_text: bool = False
) -> list[dict[str, Any]] | None:
    """The events of one of Codex's log records; None for one that becomes a generic
    ``log`` event, ``[]`` for one that is dropped."""
    raw = record.attrs
    error = c.text(raw.get("error.message"))

    def base(event_type: str) -> dict[str, Any]:
        event = c.envelope(
            event_type,
            source=SOURCE,
            ts=c.log_ts(record),
            attrs=raw,
            trace_id=record.trace_id,
            span_id=record.span_id,
        )
        event["id"] = c.record_id("otel-cx-", scope.service, name, str(record.time_ns), raw)
        model = c.text(raw.get("model"))
        if event_type == "api_request":
            model = model or "unknown"
        event["agent"] = c.agent(model, PROVIDER)
        return event

    attrs = c.with_resource(raw, scope.resource, record.plain)
    if name == "codex.sse_event":
        if raw.get("event.kind") != "response.completed":
            return None if error else []
        event = base("api_request")
        if error:
            event["tokens"] = dict(usage_mod.UNKNOWN)
            event["success"] = False
            event["error"] = c.cut(error, c.MAX_ERROR)
        else:
            event["tokens"] = tokens(raw)
            event["success"] = True
        return [c.finish(event, attrs)]
    if name == "codex.api_request":
        status = c.count(raw.get("http.response.status_code"))
        if not error and status is not None and 200 <= status <= 299:
            return None
        event = base("api_request")
        event["tokens"] = dict(usage_mod.UNKNOWN)
        event["success"] = False
        event["error"] = c.cut(error or f"HTTP status {status or 'none'}", c.MAX_ERROR)
        duration = c.count(raw.get("duration_ms"))
        if duration is not None:
            event["duration_ms"] = duration
        return [c.finish(event, attrs)]
    if name == "codex.conversation_starts":
        event = base("session_start")
        provider = c.text(raw.get("provider_name"))
        if provider:
            event["agent"]["provider"] = provider
        return [c.finish(event, attrs)]
    if name == "codex.user_prompt":
        event = base("prompt")
        c.prompt(event, attrs, raw, prompt_text)
        return [c.finish(event, attrs)]
    if name in ("codex.tool_decision", "codex.tool_result"):
        kind = "tool_call" if name == "codex.tool_decision" else "tool_result"
        event = base(kind)
        use_id = c.tool(event, attrs, raw, use_id_key="call_id")
        if use_id:
            event["id"] = ids.tool_event_id(kind, event.get("session_id", ""), use_id)
        return [c.finish(event, attrs)]
    return None
