"""Gemini CLI's OTLP log events -> events of the model.

Gemini CLI (google-gemini/gemini-cli, ``packages/core/src/telemetry/types.ts``
and ``loggers.ts``; resource ``service.name`` ``gemini-cli``) names its events
``gemini_cli.<name>`` in the ``event.name`` attribute (a few without the
prefix) and puts ``session.id`` and ``installation.id`` on every one.

================================  =============================================
event                             becomes
================================  =============================================
gemini_cli.api_response           ``api_request``: ``input_token_count`` is the
                                  prompt (cached included) and
                                  ``tool_token_count`` tool-use prompt tokens:
                                  input = input + tool − cached, cache_read =
                                  cached; ``thoughts_token_count`` is not part
                                  of ``output_token_count``: output = output +
                                  thoughts, also kept as ``reasoning``
gemini_cli.api_error              ``api_request`` with ``success: false``
gemini_cli.user_prompt            ``prompt`` (length; the text only when asked:
                                  Gemini CLI sends it by default)
gemini_cli.tool_call              ``tool_result`` (function name, success,
                                  decision, duration; no call id to key it by)
gen_ai.client.inference.          a ``log`` event: Gemini CLI writes it next to
operation.details                 each api_response / api_error with fewer
                                  counts (no cache, no thoughts)
anything else                     a ``log`` event
================================  =============================================

The api_response event has no response id (only the semantic-convention
record has ``gen_ai.response.id``), so its id is a hash of the record; an import
of the chat recordings leaves out the requests this export brought already, matched by
session, counts and time (docs/counting.md, R21).
"""

from __future__ import annotations

from typing import Any

from telemetryd.adapters import usage as usage_mod
from telemetryd.adapters.otel import common as c
from telemetryd.adapters.otel.records import LogRecord, Scope

SOURCE = "gemini-cli"
PROVIDER = "google"
PREFIX = "gemini_cli."


SCOPE_NAME = "gemini-cli"  # its loggers' and tracers' scope, whatever the service is called


def matches(service: str, name: str, scope_name: str = "") -> bool:
    """Gemini CLI's record: by its service name, its event names' prefix, or its scope
    (OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES may rename the service)."""
    return service == "gemini-cli" or scope_name == SCOPE_NAME or name.startswith(PREFIX)


def tokens(attrs: dict[str, Any]) -> dict[str, Any]:
    """Gemini's counts in the model's convention (the Gemini API's usageMetadata rules)."""
    return usage_mod.tokens_from_usage(
        {
            "promptTokenCount": c.count(attrs.get("input_token_count")),
            "candidatesTokenCount": c.count(attrs.get("output_token_count")),
            "cachedContentTokenCount": c.count(attrs.get("cached_content_token_count")),
            "thoughtsTokenCount": c.count(attrs.get("thoughts_token_count")),
            "toolUsePromptTokenCount": c.count(attrs.get("tool_token_count")),
            "totalTokenCount": c.count(attrs.get("total_token_count")),
        }
    )


def log_events(
    scope: Scope, record: LogRecord, name: str, *, prompt_text: bool = False
) -> list[dict[str, Any]] | None:
    """The events of one of Gemini CLI's log records; None for a generic ``log`` event."""
    raw = record.attrs
    short = name.removeprefix(PREFIX)
    if short not in ("api_response", "api_error", "user_prompt", "tool_call"):
        return None
    event_type = {"user_prompt": "prompt", "tool_call": "tool_result"}.get(short, "api_request")
    event = c.envelope(
        event_type,
        source=SOURCE,
        ts=c.log_ts(record),
        attrs=raw,
        trace_id=record.trace_id,
        span_id=record.span_id,
    )
    event["id"] = c.record_id("otel-gm-", scope.service, name, str(record.time_ns), raw)
    model = c.text(raw.get("model"))
    attrs = c.with_resource(raw, scope.resource, record.plain)
    duration = c.count(raw.get("duration_ms"))
    if event_type == "api_request":
        event["agent"] = c.agent(model or "unknown", PROVIDER)
        if duration is not None:
            event["duration_ms"] = duration
        if short == "api_response":
            event["tokens"] = tokens(raw)
            event["success"] = True
        else:
            event["tokens"] = dict(usage_mod.UNKNOWN)
            event["success"] = False
            error = c.text(raw.get("error")) or c.text(raw.get("error.message")) or "API error"
            event["error"] = c.cut(error, c.MAX_ERROR)
    elif event_type == "prompt":
        c.prompt(event, attrs, raw, prompt_text)
    else:
        if model:
            event["agent"] = c.agent(model, PROVIDER)
        tool: dict[str, Any] = {"name": c.cut(c.text(raw.get("function_name")) or "unknown", 200)}
        success = c.flag(raw.get("success"))
        if success is not None:
            tool["success"] = success
        error_type = c.text(raw.get("error_type")) or c.text(raw.get("error.type"))
        if error_type and success is not True:
            tool["error"] = c.cut(error_type, c.MAX_ERROR)
        event["tool"] = tool
        if duration is not None:
            event["duration_ms"] = duration
    return [c.finish(event, attrs)]
