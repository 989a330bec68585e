"""OTLP records -> events (adapters/otel): each agent's records, built like its real
exports (tests/fixtures/otlp/README.md), map to valid events with the project's token
convention, no content, bounded attrs and deterministic ids."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from telemetryd import events
from telemetryd.adapters import claude_code, ids
from telemetryd.adapters.otel import mapping
from telemetryd.adapters.otel.records import LogRecord, Point, Scope, Span, SpanEvent
from telemetryd.client import importer

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
SAMPLES = Path("/work/shared/samples")  # (as tests/test_import.py reads them)
TRANSCRIPT = SAMPLES / "claude-code" / "transcripts" / "spotter_short_session_v2.1.38.jsonl"
LIMITS = {"max_attrs_bytes": 16 * 1024, "max_attrs_depth": 8}


# -- OTLP/JSON -> records (a minimal reader for the fixtures; the listener has its own) ---


def _value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return value["boolValue"]
    if "bytesValue" in value:
        return value["bytesValue"]
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attrs(value["kvlistValue"].get("values", []))
    return None


def _attrs(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    return {pair["key"]: _value(pair.get("value", {})) for pair in pairs}


def _scope(resource: dict[str, Any], scope: dict[str, Any]) -> Scope:
    return Scope(
        resource=_attrs(resource.get("attributes", [])),
        name=scope.get("name", ""),
        version=scope.get("version", ""),
    )


def load_logs(name: str) -> list[tuple[Scope, LogRecord]]:
    data = json.loads((FIXTURES / name).read_text())
    out = []
    for group in data["resourceLogs"]:
        for scoped in group["scopeLogs"]:
            scope = _scope(group["resource"], scoped.get("scope", {}))
            for rec in scoped["logRecords"]:
                time_ns = int(rec.get("timeUnixNano") or 0) or int(
                    rec.get("observedTimeUnixNano") or 0
                )
                body = rec.get("body")
                out.append(
                    (
                        scope,
                        LogRecord(
                            time_ns=time_ns,
                            attrs=_attrs(rec.get("attributes", [])),
                            body=_value(body) if body else None,
                            severity_number=rec.get("severityNumber", 0),
                            severity_text=rec.get("severityText", ""),
                            trace_id=rec.get("traceId", "").lower(),
                            span_id=rec.get("spanId", "").lower(),
                        ),
                    )
                )
    return out


def load_spans(name: str) -> list[tuple[Scope, Span]]:
    data = json.loads((FIXTURES / name).read_text())
    out = []
    for group in data["resourceSpans"]:
        for scoped in group["scopeSpans"]:
            scope = _scope(group["resource"], scoped.get("scope", {}))
            for sp in scoped["spans"]:
                status = sp.get("status", {})
                out.append(
                    (
                        scope,
                        Span(
                            trace_id=sp["traceId"],
                            span_id=sp["spanId"],
                            parent_span_id=sp.get("parentSpanId", ""),
                            name=sp["name"],
                            kind=sp.get("kind", 0),
                            start_ns=int(sp["startTimeUnixNano"]),
                            end_ns=int(sp["endTimeUnixNano"]),
                            attrs=_attrs(sp.get("attributes", [])),
                            status_code=status.get("code", 0),
                            status_message=status.get("message", ""),
                            events=[
                                SpanEvent(
                                    name=e["name"],
                                    time_ns=int(e["timeUnixNano"]),
                                    attrs=_attrs(e.get("attributes", [])),
                                )
                                for e in sp.get("events", [])
                            ],
                        ),
                    )
                )
    return out


def valid(produced: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event decodes as the daemon's checker does, and passes the producer rules."""
    for event in produced:
        line = msgspec.json.encode(event)
        decoded = events.decode(line)
        assert events.check_producer_rules(decoded, line, **LIMITS) is None, event
        assert "id" in event and len(event["id"]) <= 128
        ts = event.get("ts")
        assert ts is None or (ts.endswith("Z") and len(ts) == len("2026-02-10T21:11:59.186Z"))
    return produced


def mapped_logs(name: str, **options: Any) -> list[dict[str, Any]]:
    out = []
    for scope, record in load_logs(name):
        out += mapping.log_events(scope, record, **options)
    return valid(out)


def digest(value: Any) -> str:
    """A tool input's digest, computed here: blake2b-128 of its JSON with sorted keys."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def by_type(produced: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in produced if e["type"] == event_type]


def text_of(produced: list[dict[str, Any]]) -> str:
    return json.dumps(produced)


# -- Claude Code --------------------------------------------------------------------------


def test_claude_code_logs_map_to_the_model() -> None:
    produced = mapped_logs("claude_code_logs.json")
    assert [e["type"] for e in produced] == [
        "prompt",
        "api_request",
        "tool_call",
        "tool_result",
        "api_request",
        "skill",
        "agent_stop",
        "custom",
        "log",
        "log",
    ]
    session = "55604662-cf2a-4331-851a-ec234028f8ca"
    assert all(e["source"] == "claude-code" and e["session_id"] == session for e in produced)
    ok, failed = by_type(produced, "api_request")
    # Claude's input already excludes the cache: the counts go through unchanged.
    assert ok["tokens"] == {
        "source": "actual",
        "input": 3,
        "output": 13,
        "cache_read": 11515,
        "cache_creation": 13835,
        "total": 3 + 13 + 11515 + 13835,
    }
    assert ok["cost_usd"] == 0.2645 and ok["cost_source"] == "reported"
    assert ok["duration_ms"] == 3120 and ok["success"] is True
    assert ok["agent"] == {"model": "claude-opus-4-6", "provider": "anthropic"}
    assert ok["ts"] == "2026-02-10T21:11:59.186Z"
    assert ok["attrs"]["speed"] == "normal" and ok["attrs"]["query_source"] == "repl_main_thread"
    assert ok["attrs"]["resource"]["os.type"] == "linux"
    assert ok["id"] == "req:anthropic:req_011CY15QS2LGwAeBxdfa6e1V"
    assert failed["success"] is False and failed["error"] == "Overloaded"
    assert failed["tokens"] == {"source": "unknown"}
    assert failed["attrs"]["status_code"] == 529 and failed["attrs"]["attempt"] == 3

    prompt = by_type(produced, "prompt")[0]
    assert prompt["length"] == 42 and "prompt" not in prompt["attrs"]

    call, result = by_type(produced, "tool_call")[0], by_type(produced, "tool_result")[0]
    assert call["tool"] == {"name": "Bash", "use_id": "toolu_01AbCdEf"}
    assert call["attrs"]["decision"] == "accept" and call["attrs"]["decision_source"] == "config"
    parameters = {"bash_command": "git", "full_command": "git push origin main"}
    assert result["tool"] == {
        "name": "Bash",
        "use_id": "toolu_01AbCdEf",
        "input_digest": digest({**parameters, "description": "Push"}),
        "success": False,
        "error": "ShellError",
    }
    assert result["duration_ms"] == 412
    # tool input is content: dropped, its length kept
    assert "git push" not in text_of(produced)
    assert result["attrs"]["tool_parameters_length"] > 0

    skill = by_type(produced, "skill")[0]
    assert skill["name"] == "pdf"
    stop = by_type(produced, "agent_stop")[0]
    assert stop["agent"] == {
        "model": "claude-haiku-4-5",
        "provider": "anthropic",
        "type": "Explore",
    }
    assert stop["duration_ms"] == 90000 and "tokens" not in stop
    assert by_type(produced, "custom")[0]["name"] == "compaction"
    logs = by_type(produced, "log")
    assert [e["event"] for e in logs] == [
        "claude_code.hook_execution_complete",
        "claude_code.api_refusal",
    ]
    assert all(e["level"] == "info" for e in logs)


def test_a_cost_past_any_request_is_no_cost_and_keeps_its_request() -> None:
    """A reported cost of 1e308 (two summed to infinity) is past events.MAX_COST: the
    daemon would refuse the event, so the request is kept without it (the store prices
    it from its tokens)."""
    records = load_logs("claude_code_logs.json")
    out = []
    for scope, record in records:
        if record.attrs.get("event.name") == "api_request" and "cost_usd" in record.attrs:
            record.attrs["cost_usd"] = 1e308
        out += mapping.log_events(scope, record)
    ok = by_type(valid(out), "api_request")[0]
    assert ok["tokens"]["total"] == 3 + 13 + 11515 + 13835 and "cost_usd" not in ok


def test_claude_code_tool_ids_are_the_hook_adapters() -> None:
    """A tool use reported by the PreToolUse / PostToolUse hooks and by OTLP is one row each."""
    produced = mapped_logs("claude_code_logs.json")
    session = "55604662-cf2a-4331-851a-ec234028f8ca"
    for kind, hook in (("tool_call", "PreToolUse"), ("tool_result", "PostToolUse")):
        (hook_event,) = claude_code.hook_events(
            {
                "hook_event_name": hook,
                "session_id": session,
                "tool_name": "Bash",
                "tool_use_id": "toolu_01AbCdEf",
            }
        )
        assert by_type(produced, kind)[0]["id"] == hook_event["id"]


class _Sink:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def add(self, line: bytes) -> None:
        self.lines.append(line)


def test_a_claude_request_through_otlp_and_a_transcript_import_has_one_id() -> None:
    sink = _Sink()
    run = importer.Importer("claude-code", sink=sink)  # type: ignore[arg-type]
    run.read_file(TRANSCRIPT)
    imported = {
        e["id"]: e for e in (json.loads(line) for line in sink.lines) if e["type"] == "api_request"
    }
    produced = by_type(mapped_logs("claude_code_logs.json"), "api_request")
    otlp = produced[0]
    assert otlp["id"] in imported
    assert imported[otlp["id"]]["tokens"] == otlp["tokens"]
    assert otlp["id"] == ids.request_event_id("anthropic", "req_011CY15QS2LGwAeBxdfa6e1V")


def test_claude_code_prompt_text_only_when_asked() -> None:
    scope = Scope(resource={"service.name": "claude-code"})
    record = LogRecord(
        time_ns=1_770_757_919_186_000_000,
        body="claude_code.user_prompt",
        attrs={"event.name": "user_prompt", "session.id": "s1", "prompt": "please fix it"},
    )
    (plain,) = valid(mapping.log_events(scope, record))
    assert "please fix it" not in text_of([plain])
    assert plain["length"] == len("please fix it")
    (asked,) = valid(mapping.log_events(scope, record, prompt_text=True))
    assert asked["attrs"]["prompt"] == "please fix it"
    assert asked["id"] == plain["id"]


def test_claude_code_llm_request_span_is_the_same_api_request_as_its_log_event() -> None:
    scope = Scope(resource={"service.name": "claude-code"})
    span = Span(
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        parent_span_id="00f067aa0ba902b7",
        name="claude_code.llm_request",
        kind=3,
        start_ns=1_770_757_916_000_000_000,
        end_ns=1_770_757_919_120_000_000,
        attrs={
            "span.type": "llm_request",
            "session.id": "55604662-cf2a-4331-851a-ec234028f8ca",
            "model": "claude-opus-4-6",
            "gen_ai.system": "anthropic",
            "input_tokens": 3,
            "output_tokens": 13,
            "cache_read_tokens": 11515,
            "cache_creation_tokens": 13835,
            "request_id": "req_011CY15QS2LGwAeBxdfa6e1V",
            "success": "true",
            "duration_ms": 3120,
        },
    )
    span_event, request = valid(mapping.span_events(scope, span))
    assert span_event["type"] == "span" and span_event["name"] == "claude_code.llm_request"
    assert span_event["kind"] == "client" and span_event["duration_ms"] == 3120
    log_request = by_type(mapped_logs("claude_code_logs.json"), "api_request")[0]
    assert request["id"] == log_request["id"]
    assert request["tokens"] == log_request["tokens"]
    assert request["trace_id"] == span.trace_id and request["span_id"] == span.span_id


# -- Codex ----------------------------------------------------------------------------------


def test_codex_logs_map_to_the_model() -> None:
    produced = mapped_logs("codex_logs.json")
    # the text delta is dropped; the successful HTTP attempt is a log event
    assert [e["type"] for e in produced] == [
        "session_start",
        "prompt",
        "log",
        "api_request",
        "tool_call",
        "tool_result",
        "api_request",
    ]
    assert all(e["session_id"] == "019c8bfe-ec25-79e0-97d7-bda6a9c575ff" for e in produced)
    ok, failed = by_type(produced, "api_request")
    # counts as Codex sends them: input and output as strings, cached and reasoning as ints;
    # input includes the cached tokens, output includes the reasoning.
    input_, cached, output, reasoning = 21463, 18944, 1120, 704
    assert ok["tokens"] == {
        "source": "actual",
        "input": input_ - cached,
        "output": output,
        "cache_read": cached,
        "reasoning": reasoning,
        "total": input_ + output,
    }
    assert ok["agent"] == {"model": "gpt-5.3-codex", "provider": "openai"}
    assert failed["success"] is False and "timed out" in failed["error"]
    assert failed["tokens"] == {"source": "unknown"} and failed["duration_ms"] == 30001
    prompt = by_type(produced, "prompt")[0]
    assert prompt["length"] == 42 and "prompt" not in prompt["attrs"]
    call, result = by_type(produced, "tool_call")[0], by_type(produced, "tool_result")[0]
    assert call["tool"] == {"name": "shell", "use_id": "call_Yj3kq1"}
    assert result["tool"] == {
        "name": "shell",
        "use_id": "call_Yj3kq1",
        "success": True,
        "input_digest": digest({"command": ["bash", "-lc", "cargo test"]}),
    }
    assert result["duration_ms"] == 2318
    assert result["id"] == ids.tool_event_id(
        "tool_result", "019c8bfe-ec25-79e0-97d7-bda6a9c575ff", "call_Yj3kq1"
    )
    # tool arguments and output are content
    assert "cargo test" not in text_of(produced) and "12 passed" not in text_of(produced)
    assert result["attrs"]["output_length"] == len("test result: ok. 12 passed")
    start = by_type(produced, "session_start")[0]
    assert start["agent"]["provider"] == "OpenAI"


# -- Gemini CLI -----------------------------------------------------------------------------


def test_gemini_logs_map_to_the_model() -> None:
    produced = mapped_logs("gemini_logs.json")
    assert [e["type"] for e in produced] == [
        "prompt",
        "api_request",
        "log",  # the semantic-convention twin of api_response is not counted again
        "tool_result",
        "api_request",
    ]
    ok, failed = by_type(produced, "api_request")
    prompt, output, cached, thoughts, tool = 12480, 310, 8192, 512, 40
    assert ok["tokens"] == {
        "source": "actual",
        "input": prompt + tool - cached,
        "output": output + thoughts,
        "cache_read": cached,
        "reasoning": thoughts,
        "total": prompt + tool + output + thoughts,
    }
    assert ok["tokens"]["total"] == 13342  # Gemini's own total_token_count
    assert ok["agent"] == {"model": "gemini-3-flash-preview", "provider": "google"}
    assert failed["success"] is False and failed["error"].startswith("Resource has been")
    # the prompt (Gemini CLI logs it by default) and the response text are content
    assert "flaky" not in text_of(produced) and "The test fails" not in text_of(produced)
    assert by_type(produced, "prompt")[0]["length"] == 17
    tool_result = by_type(produced, "tool_result")[0]
    assert tool_result["tool"] == {"name": "read_file", "success": True}
    assert "/src/app/test_x.py" not in text_of(produced)
    asked = mapped_logs("gemini_logs.json", prompt_text=True)
    assert by_type(asked, "prompt")[0]["attrs"]["prompt"] == "fix the flaky test"


def test_gemini_logs_map_the_same_under_a_service_name_of_the_users() -> None:
    """OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES rename Gemini CLI's service; its
    scope stays `gemini-cli` (its loggers are named so). The semantic-convention twin of
    api_response must still not be a second request."""
    renamed = []
    for scope, record in load_logs("gemini_logs.json"):
        assert scope.name == "gemini-cli"
        mine = Scope(resource={**scope.resource, "service.name": "my-gemini"}, name=scope.name)
        renamed += mapping.log_events(mine, record)
    produced = mapped_logs("gemini_logs.json")
    assert [e["type"] for e in valid(renamed)] == [e["type"] for e in produced]
    assert {e["source"] for e in renamed} == {"gemini-cli"}
    assert [e["tokens"] for e in by_type(renamed, "api_request")] == [
        e["tokens"] for e in by_type(produced, "api_request")
    ]


@pytest.mark.parametrize("service", ["codex_cli_rs", "Codex Desktop", "codex-exec"])
def test_codex_is_known_by_its_service_in_any_case(service: str) -> None:
    span = Span("ab" * 16, "cd" * 8, "handle_responses", 1_000, 2_000, attrs={})
    (event,) = mapping.span_events(Scope(resource={"service.name": service}), span)
    assert event["source"] == "codex"


# -- Copilot and GenAI spans ----------------------------------------------------------------


def test_copilot_spans_map_to_spans_requests_tools_and_agents() -> None:
    produced = []
    for scope, span in load_spans("copilot_traces.json"):
        produced += mapping.span_events(scope, span)
    valid(produced)
    spans = by_type(produced, "span")
    assert [s["name"] for s in spans] == [
        "invoke_agent copilot",
        "chat claude-sonnet-4.5",
        "execute_tool readFile",
    ]
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert all(s["trace_id"] == trace for s in spans)
    parents = [s.get("parent_span_id") for s in spans]
    assert parents == [None, "00f067aa0ba90001", "00f067aa0ba90001"]
    assert spans[0]["id"] == f"otel-span-{trace}-00f067aa0ba90001"
    assert spans[2]["success"] is False and spans[2]["error"] == "ENOENT: no such file"
    assert spans[0]["attrs"]["events"][0]["name"] == "github.copilot.session.shutdown"

    (request,) = by_type(produced, "api_request")
    # input includes both caches: input = 15000 - 12000 - 2100
    assert request["tokens"] == {
        "source": "actual",
        "input": 15000 - 12000 - 2100,
        "output": 250,
        "cache_read": 12000,
        "cache_creation": 2100,
        "total": 15000 + 250,
    }
    assert request["agent"] == {"model": "claude-sonnet-4.5", "provider": "github"}
    assert request["id"] == ids.request_event_id("github", "msg_01Copilot0001")
    assert request["span_id"] == "00f067aa0ba90002" and request["trace_id"] == trace
    assert "cost_usd" not in request and request["attrs"]["github.copilot.cost"] == 1
    assert "secret prompt" not in text_of(produced)
    assert request["attrs"]["gen_ai.input.messages_length"] > 0

    (tool,) = by_type(produced, "tool_result")
    assert tool["tool"] == {
        "name": "readFile",
        "use_id": "call_abc123",
        "success": False,
        "error": "FileNotFoundError",
    }
    assert tool["duration_ms"] == 50

    (start,) = by_type(produced, "agent_start")
    (stop,) = by_type(produced, "agent_stop")
    assert stop["agent"]["type"] == "copilot" and stop["duration_ms"] == 15000
    assert stop["tokens"]["input"] == 30500 - 24000 - 4200
    assert start["ts"] < stop["ts"]
    # the turn's totals are never an api_request: only the chat span is
    assert len(by_type(produced, "api_request")) == 1


def test_genai_inference_details_log_shares_the_chat_spans_id() -> None:
    scope = Scope(resource={"service.name": "copilot-chat"})
    record = LogRecord(
        time_ns=1_770_757_919_186_000_000,
        attrs={
            "event.name": "gen_ai.client.inference.operation.details",
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "github",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.id": "chatcmpl-abc123",
            "gen_ai.usage.input_tokens": 1500,
            "gen_ai.usage.output_tokens": 250,
        },
    )
    (event,) = valid(mapping.log_events(scope, record))
    assert event["type"] == "api_request" and event["source"] == "copilot"
    assert event["id"] == ids.request_event_id("github", "chatcmpl-abc123")
    assert event["tokens"]["input"] == 1500


# -- any other producer ----------------------------------------------------------------------


def test_unknown_records_become_log_and_span_events() -> None:
    upstream = Path(__file__).parent / "fixtures" / "otlp-upstream" / "logs.json"
    data = json.loads(upstream.read_text())
    rec = data["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    scope = Scope(resource={"service.name": "my.service"}, name="my.library", version="1.0.0")
    record = LogRecord(
        time_ns=int(rec["timeUnixNano"]),
        attrs=_attrs(rec["attributes"]),
        body=_value(rec["body"]),
        severity_number=rec["severityNumber"],
        severity_text=rec["severityText"],
        trace_id=rec["traceId"].lower(),
        span_id=rec["spanId"].lower(),
    )
    (event,) = valid(mapping.log_events(scope, record))
    assert event["type"] == "log" and event["source"] == "my.service"
    assert event["level"] == "info" and event["component"] == "my.library"
    assert event["event"] == "log" and event["attrs"]["otel.body"] == "Example log record"
    assert event["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert event["ts"] == "2018-12-13T14:51:00.300Z"

    warn = LogRecord(time_ns=1, attrs={"event.name": "cache.miss"}, severity_number=13)
    (warned,) = valid(mapping.log_events(scope, warn))
    assert warned["event"] == "cache.miss" and warned["level"] == "warning"

    span = Span(
        trace_id="5b8efff798038103d269b633813fc60c",
        span_id="eee19b7ec3c1b174",
        parent_span_id="eee19b7ec3c1b173",
        name="I'm a server span",
        kind=2,
        start_ns=1544712660000000000,
        end_ns=1544712661000000000,
        attrs={"my.span.attr": "some value"},
        events=[
            SpanEvent(
                name="exception",
                time_ns=1544712660500000000,
                attrs={"exception.type": "ValueError", "exception.message": "bad"},
            )
        ],
        status_code=2,
        status_message="bad",
    )
    (span_event,) = valid(mapping.span_events(scope, span))
    assert span_event == {
        "type": "span",
        "ts": "2018-12-13T14:51:00.000Z",
        "source": "my.service",
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "span_id": "eee19b7ec3c1b174",
        "parent_span_id": "eee19b7ec3c1b173",
        "id": "otel-span-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174",
        "name": "I'm a server span",
        "kind": "server",
        "duration_ms": 1000,
        "success": False,
        "error": "bad",
        "attrs": {
            "my.span.attr": "some value",
            "resource": {"service.name": "my.service"},
            "events": [
                {
                    "name": "exception",
                    "at_ms": 500,
                    "attrs": {"exception.type": "ValueError", "exception.message": "bad"},
                }
            ],
        },
    }


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_map_to_metric_events() -> None:
    scope = Scope(resource={"service.name": "claude-code"}, name="com.anthropic.claude_code")
    token = Point(
        metric="claude_code.token.usage",
        kind="sum",
        time_ns=1_770_757_979_186_000_000,
        start_ns=1_770_757_919_186_000_000,
        attrs={"session.id": "s1", "type": "cacheRead", "model": "claude-opus-4-6"},
        unit="tokens",
        temporality="delta",
        monotonic=True,
        value=11515,
    )
    (event,) = valid(mapping.metric_events(scope, token))
    assert event["name"] == "claude_code.token.usage" and event["kind"] == "counter"
    assert event["value"] == 11515 and event["unit"] == "tokens"
    assert event["session_id"] == "s1" and event["agent"] == {"model": "claude-opus-4-6"}
    assert event["attrs"]["temporality"] == "delta" and event["attrs"]["type"] == "cacheRead"
    assert event["source"] == "claude-code"

    gauge = Point(metric="queue", kind="sum", time_ns=5, attrs={}, monotonic=False, value=3)
    assert valid(mapping.metric_events(scope, gauge))[0]["kind"] == "gauge"
    histogram = Point(
        metric="gemini_cli.api.request.latency",
        kind="histogram",
        time_ns=5,
        attrs={"model": "gemini-3-flash-preview"},
        unit="ms",
        temporality="cumulative",
        count=4,
        sum=9120.0,
        min=800.0,
        max=4000.0,
    )
    (hist,) = valid(
        mapping.metric_events(Scope(resource={"service.name": "gemini-cli"}), histogram)
    )
    assert hist["kind"] == "histogram" and hist["value"] == 9120.0
    assert hist["attrs"]["count"] == 4 and hist["attrs"]["max"] == 4000.0
    assert hist["source"] == "gemini-cli"
    assert mapping.metric_events(scope, Point(metric="x", kind="gauge", time_ns=5, attrs={})) == []


# -- bounds and ids -------------------------------------------------------------------------


def test_attrs_stay_bounded_whatever_the_record_holds() -> None:
    nested: Any = "deep"
    for _ in range(20):
        nested = {"a": [nested]}
    scope = Scope(resource={"service.name": "svc", "big": "r" * 50_000})
    record = LogRecord(
        time_ns=1_770_757_919_186_000_000,
        attrs={
            "huge": "x" * 100_000,
            "many": [str(n) * 50 for n in range(1000)],
            "nested": nested,
            **{f"k{n}": "v" * 900 for n in range(40)},
            "blob": base64.b64encode(b"\0" * 30_000).decode(),
        },
    )
    (event,) = valid(mapping.log_events(scope, record))
    assert len(msgspec.json.encode(event["attrs"])) <= 12 * 1024
    assert len(msgspec.json.encode(event)) < 64 * 1024
    assert "otel.dropped" in event["attrs"]


def test_ids_are_deterministic_and_distinct() -> None:
    first = [mapped_logs(name) for name in ("claude_code_logs.json", "codex_logs.json")]
    again = [mapped_logs(name) for name in ("claude_code_logs.json", "codex_logs.json")]
    assert first == again
    every = [e["id"] for group in first for e in group]
    assert len(every) == len(set(every))
    spans = [mapping.span_events(s, sp) for s, sp in load_spans("copilot_traces.json")]
    assert spans == [mapping.span_events(s, sp) for s, sp in load_spans("copilot_traces.json")]


def test_long_provider_ids_are_hashed_to_the_id_limit() -> None:
    long_id = ids.request_event_id("anthropic", "r" * 300)
    assert len(long_id) <= 128 and long_id.startswith("req:")
    assert long_id == ids.request_event_id("anthropic", "r" * 300)
    assert long_id != ids.request_event_id("anthropic", "r" * 301)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12),
        (12, 12),
        (12.0, 12),
        ("-1", None),
        ("x", None),
        (True, None),
        (2**60, None),
        ("²", None),
        ("1²", None),
        (" 7 ", 7),
    ],
)
def test_counts_accept_strings_and_numbers(value: Any, expected: int | None) -> None:
    from telemetryd.adapters.otel import common

    assert common.count(value) == expected


# -- the fast paths give what the general ones give ------------------------------------------


def test_clean_copies_a_plain_record_whole_and_cuts_the_rest_the_same_way() -> None:
    """clean() copies a record whose keys it has met and whose values are short scalars
    whole (the second time round); anything else still takes the general way. The
    expected values are written out here, not computed by clean()."""
    from telemetryd.adapters.otel import common

    plain = {"p.a": "x", "p.b": 7, "p.c": 1.5, "p.d": True, "p.e": None}
    first, second = common.clean(plain), common.clean(plain)
    assert first == second == plain and second is not plain
    assert {"p.a", "p.b"} <= common._PLAIN_KEYS
    # The same keys again, each with a value the fast path must not copy as it is.
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({**plain, "p.a": "y" * 1500}, {**plain, "p.a": "y" * 999 + "…"}),
        ({**plain, "p.c": float("nan")}, {**plain, "p.c": "nan"}),
        ({**plain, "p.c": float("-inf")}, {**plain, "p.c": "-inf"}),
        ({**plain, "p.b": [1, "z" * 1200]}, {**plain, "p.b": [1, "z" * 999 + "…"]}),
        ({**plain, "prompt": "secret words"}, {**plain, "prompt_length": 12}),
        ({**plain, "k" * 250: 1}, {**plain, "k" * 199 + "…": 1}),
    ]
    for attrs, expected in cases:
        assert common.clean(attrs) == expected
        assert common.clean(attrs) == expected  # (and again, its keys met by now)
    assert "prompt" not in common._PLAIN_KEYS and "k" * 250 not in common._PLAIN_KEYS


def test_the_known_keys_stay_bounded() -> None:
    from telemetryd.adapters.otel import common

    for n in range(common._PLAIN_KEYS_MAX + 500):
        common.clean({f"bound-{n}": n})
    assert len(common._PLAIN_KEYS) <= common._PLAIN_KEYS_MAX
    assert common.clean({"bound-99999": "v"}) == {"bound-99999": "v"}


def test_a_scope_resource_is_cleaned_once_and_each_event_gets_its_own_copy() -> None:
    from telemetryd.adapters.otel import common

    resource = {"service.name": "claude-code", "host.arch": "amd64", "prompt": "no"}
    one = common.with_resource({"a": 1}, resource)
    two = common.with_resource({"a": 2}, resource)
    expected = {"service.name": "claude-code", "host.arch": "amd64", "prompt_length": 2}
    assert one["resource"] == two["resource"] == expected
    assert one["resource"] is not two["resource"]
    one["resource"]["host.arch"] = "changed"
    assert common.with_resource({"a": 3}, resource)["resource"] == expected
    other = {"service.name": "codex"}
    assert common.with_resource({}, other)["resource"] == {"service.name": "codex"}


@pytest.mark.parametrize(
    "counts",
    [
        {"input_tokens": 12, "output_tokens": 345, "cache_read_tokens": 20_000},
        {"input_tokens": "12", "output_tokens": "3", "cache_creation_tokens": 1_500},
        {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0},
        {"input_tokens": 5},
        {"output_tokens": 5, "cache_read_tokens": 1},
        {"input_tokens": 2**53 - 10, "output_tokens": 20},
        {"input_tokens": 1.0, "output_tokens": 2.5},
    ],
)
def test_claude_code_tokens_are_anthropic_usage_as_tokens_from_usage_reads_it(
    counts: dict[str, Any],
) -> None:
    from telemetryd.adapters import usage
    from telemetryd.adapters.otel import claude_code as cc_otel
    from telemetryd.adapters.otel import common

    as_usage = {
        "input_tokens": common.count(counts.get("input_tokens")),
        "output_tokens": common.count(counts.get("output_tokens")),
        "cache_read_input_tokens": common.count(counts.get("cache_read_tokens")),
        "cache_creation_input_tokens": common.count(counts.get("cache_creation_tokens")),
    }
    assert cc_otel.tokens(counts) == usage.tokens_from_usage(as_usage)


def test_iso_times_across_seconds() -> None:
    from telemetryd.adapters.otel import common

    base = 1_770_757_919 * 1_000_000_000
    got = [common.iso(base + n * 400_000_000) for n in range(6)]
    assert got == [
        "2026-02-10T21:11:59.000Z",
        "2026-02-10T21:11:59.400Z",
        "2026-02-10T21:11:59.800Z",
        "2026-02-10T21:12:00.200Z",
        "2026-02-10T21:12:00.600Z",
        "2026-02-10T21:12:01.000Z",
    ]
    assert common.iso(base - 60 * 1_000_000_000 + 7_000_000) == "2026-02-10T21:10:59.007Z"
    assert common.iso(0) is None and common.iso(10**30) is None
    assert common.iso(base) == "2026-02-10T21:11:59.000Z"
    # (written from the day's date and the time's parts: the text datetime gives)
    last = 253_402_300_799  # 9999-12-31T23:59:59, the last second datetime has
    assert common.iso(last * 1_000_000_000 + 999_999_999) == "9999-12-31T23:59:59.999Z"
    assert common.iso((last + 1) * 1_000_000_000) is None
    assert common.iso(1) == "1970-01-01T00:00:00.000Z"
    assert common.iso(86_400 * 1_000_000_000 - 1) == "1970-01-01T23:59:59.999Z"
