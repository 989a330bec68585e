"""The committed JSON Schema: no drift from the code, and agreement with the decoder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator

from telemetryd import events, schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schemas" / schema.FILENAME
EVENTS_DOC = ROOT / "docs" / "events.md"
TS = "2026-03-01T12:00:00.250Z"

VALID: list[dict[str, Any]] = [
    {"type": "session_start", "session_id": "s1", "cwd": "/src/app", "reason": "startup"},
    {
        "type": "session_end",
        "v": 1,
        "id": "e-2",
        "ts": "2026-03-01T13:00:00+01:00",
        "session_id": "s1",
        "reason": "exit",
        "duration_ms": 3600000,
        "success": True,
    },
    {"type": "agent_start", "agent": {"type": "subagent", "id": "a1", "model": "m"}},
    {"type": "agent_stop", "duration_ms": 5, "tokens": {"source": "unknown"}, "success": False},
    {
        "type": "api_request",
        "ts": TS,
        "source": "claude-code",
        "agent": {"model": "claude-sonnet-4", "provider": "anthropic"},
        "tokens": {
            "source": "actual",
            "input": 12,
            "output": 900,
            "cache_read": 20000,
            "cache_creation": 1500,
            "reasoning": 300,
        },
        "cost_usd": 0.0123,
        "cost_source": "computed",
        "duration_ms": 4200,
        "success": True,
    },
    {
        "type": "api_request",
        "tokens": {"source": "estimated", "estimated_total": 1234, "tokenizer": "o200k_base"},
        "success": False,
        "error": "overloaded",
    },
    {"type": "api_request", "tokens": {"source": "unknown"}},
    {"type": "tool_call", "tool": {"name": "Bash", "use_id": "toolu_1"}},
    {
        "type": "tool_result",
        "tool": {"name": "Bash", "use_id": "toolu_1", "success": False, "error": "exit 1"},
        "duration_ms": 412,
    },
    {"type": "skill", "name": "pdf", "success": True, "duration_ms": 30},
    {"type": "error", "message": "rate limited", "category": "api", "confidence": 0.5},
    {
        "type": "run",
        "task": {"id": "T-7", "title": "fix the parser", "attempt_id": "r1", "attempt_index": 0},
        "attempt_id": "r1",
        "attempt_index": 0,
        "retry_count": {"same_model": 1, "reroute": 0},
        "elapsed_ms": {"wall": 90000, "llm": 60000, "tools": 20000},
        "tokens": {"source": "actual", "input": 1000, "output": 200},
        "outcome": "done",
    },
    {
        "type": "run",
        "attempt_id": "r2",
        "attempt_index": 1,
        "retry_count": {},
        "elapsed_ms": {"wall": 1},
        "tokens": {"source": "unknown"},
        "outcome": "blocked",
        "outcome_reason": "needs credentials",
    },
    {
        "type": "log",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "level": "warning",
        "component": "scheduler",
        "event": "slow_tick",
        "fields": {"lag_ms": 250, "queue": [1, 2]},
    },
    {"type": "metric", "name": "queue_depth", "value": 3, "kind": "gauge", "unit": "events"},
    {"type": "metric", "name": "latency", "value": 0.25, "kind": "histogram"},
    {"type": "alert", "severity": "critical", "kind": "budget", "message": "over budget"},
    {"type": "prompt", "session_id": "s1", "length": 42, "attrs": {"prompt_id": "p-1"}},
    {
        "type": "span",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "name": "chat gpt-4o",
        "kind": "client",
        "duration_ms": 3000,
        "success": False,
        "error": "timeout",
    },
    {"type": "custom", "name": "deploy", "attrs": {"env": "prod", "nested": {"ok": [1, None]}}},
    {"type": "custom", "name": "nulls", "source": None, "agent": None, "attrs": None},
]

INVALID: dict[str, dict[str, Any]] = {
    "unknown type": {"type": "bogus"},
    "type not a string": {"type": 5, "name": "x"},
    "missing type": {"name": "x"},
    "unknown top-level field": {"type": "custom", "name": "x", "colour": "red"},
    "unknown nested field": {"type": "tool_call", "tool": {"name": "Bash", "exit": 1}},
    "missing required field": {"type": "skill"},
    "string for an integer": {"type": "skill", "name": "x", "duration_ms": "5"},
    "boolean for an integer": {"type": "skill", "name": "x", "duration_ms": True},
    "string for a boolean": {"type": "skill", "name": "x", "success": "yes"},
    "string for a number": {"type": "metric", "name": "m", "value": "1", "kind": "gauge"},
    "attrs not an object": {"type": "custom", "name": "x", "attrs": [1]},
    "negative duration": {"type": "skill", "name": "x", "duration_ms": -1},
    "negative cost": {"type": "api_request", "tokens": {"source": "unknown"}, "cost_usd": -1},
    "confidence over 1": {"type": "error", "message": "m", "confidence": 1.5},
    "v from the future": {"type": "custom", "name": "x", "v": 2},
    "empty id": {"type": "custom", "name": "x", "id": ""},
    "negative input tokens": {
        "type": "api_request",
        "tokens": {"source": "actual", "input": -1, "output": 1},
    },
    "negative cache_read tokens": {
        "type": "agent_stop",
        "tokens": {"source": "unknown", "cache_read": -5},
    },
    "unknown token source": {"type": "api_request", "tokens": {"source": "guessed"}},
    "tokens without source": {"type": "api_request", "tokens": {"input": 1, "output": 1}},
    "actual tokens without output": {
        "type": "api_request",
        "tokens": {"source": "actual", "input": 1},
    },
    "actual tokens with null input": {
        "type": "api_request",
        "tokens": {"source": "actual", "input": None, "output": 1},
    },
    "estimated tokens without tokenizer": {
        "type": "api_request",
        "tokens": {"source": "estimated", "estimated_total": 10},
    },
    "estimated tokens without estimated_total": {
        "type": "run",
        "attempt_id": "r",
        "attempt_index": 0,
        "retry_count": {},
        "elapsed_ms": {"wall": 1},
        "tokens": {"source": "estimated", "tokenizer": "cl100k_base"},
        "outcome": "done",
    },
    "api_request without tokens": {"type": "api_request"},
    "bad outcome": {
        "type": "run",
        "attempt_id": "r",
        "attempt_index": 0,
        "retry_count": {},
        "elapsed_ms": {"wall": 1},
        "tokens": {"source": "unknown"},
        "outcome": "failed",
    },
    "bad metric kind": {"type": "metric", "name": "m", "value": 1, "kind": "summary"},
    "bad log level": {"type": "log", "level": "warn", "component": "c", "event": "e"},
    "bad severity": {"type": "alert", "severity": "fatal", "kind": "k", "message": "m"},
    "span without name": {"type": "span", "trace_id": "t", "span_id": "s"},
    "bad span kind": {"type": "span", "name": "n", "kind": "Client"},
    "ts without offset": {"type": "custom", "name": "x", "ts": "2026-03-01T12:00:00"},
    "ts date only": {"type": "custom", "name": "x", "ts": "2026-03-01"},
    "ts not a time": {"type": "custom", "name": "x", "ts": "yesterday"},
    "ts as a number": {"type": "custom", "name": "x", "ts": 1767225600},
    "ts month 13": {"type": "custom", "name": "x", "ts": "2026-13-01T00:00:00Z"},
    "ts hour 24": {"type": "custom", "name": "x", "ts": "2026-03-01T24:00:00Z"},
    "ts leap second": {"type": "custom", "name": "x", "ts": "2026-12-31T23:59:60Z"},
    "ts offset without minutes": {"type": "custom", "name": "x", "ts": "2026-03-01T12:00:00+05"},
    "not an object": [{"type": "custom", "name": "x"}],  # type: ignore[dict-item]
}

# Where the schema and the decoder knowingly differ: (event, schema says valid, decoder says
# valid). docs/events.md ("What the schema cannot say") explains each one.
KNOWN_GAPS: dict[str, tuple[dict[str, Any], bool, bool]] = {
    "reasoning over output": (
        {
            "type": "api_request",
            "tokens": {"source": "actual", "input": 1, "output": 5, "reasoning": 6},
        },
        True,
        False,
    ),
    "ts on a day the month lacks": (
        {"type": "custom", "name": "x", "ts": "2026-02-30T00:00:00Z"},
        True,
        False,
    ),
    "derived total past 2^53 - 1": (
        {
            "type": "api_request",
            "tokens": {"source": "actual", "input": 2**53 - 1, "output": 1},
        },
        True,
        False,
    ),
    "lone surrogate": ({"type": "custom", "name": "\ud800"}, True, False),
    "integer written as 1.0": ({"type": "skill", "name": "x", "duration_ms": 1.0}, True, False),
    "ts with a space for T": (
        {"type": "custom", "name": "x", "ts": "2026-03-01 12:00:00Z"},
        False,
        True,
    ),
    "ts offset without a colon": (
        {"type": "custom", "name": "x", "ts": "2026-03-01T12:00:00+0530"},
        False,
        True,
    ),
}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    document = json.loads(schema.generate())
    Draft202012Validator.check_schema(document)
    return Draft202012Validator(document)


def decodes(event: Any) -> bool:
    try:
        events.decode(json.dumps(event).encode())
    except events.Invalid:
        return False
    return True


def test_committed_schema_matches_the_code() -> None:
    committed = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
    assert committed == schema.generate(), (
        f"{SCHEMA_FILE.name} is out of date with telemetryd/events.py: run `make schema` "
        "and commit the result"
    )


def test_main_writes_the_schema_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert schema.main([str(tmp_path)]) == 0
    written = tmp_path / f"event-v{events.SCHEMA_VERSION}.schema.json"
    ats_written = tmp_path / "ats-v1.schema.json"
    assert capsys.readouterr().out.split() == [str(written), str(ats_written)]
    assert written.read_text(encoding="utf-8") == schema.generate()
    assert ats_written.read_text(encoding="utf-8") == schema.generate_ats()


def test_committed_ats_schema_matches_the_code() -> None:
    path = ROOT / "schemas" / schema.ATS_FILENAME
    committed = path.read_text(encoding="utf-8") if path.exists() else ""
    assert committed == schema.generate_ats(), (
        f"{path.name} is out of date with telemetryd/adapters/ats.py: run `make schema` "
        "and commit the result"
    )


def test_schema_names_every_event_type(validator: Draft202012Validator) -> None:
    mapping = validator.schema["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(events.EVENT_TYPES)


def test_examples_cover_every_type_and_token_state() -> None:
    assert {e["type"] for e in VALID} == set(events.EVENT_TYPES)
    states = {e["tokens"]["source"] for e in VALID if "tokens" in e}
    assert states == {"actual", "estimated", "unknown"}


@pytest.mark.parametrize("event", VALID, ids=[f"{n}-{e['type']}" for n, e in enumerate(VALID)])
def test_valid_for_schema_and_decoder(validator: Draft202012Validator, event: Any) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(event)]
    assert errors == []
    events.decode(json.dumps(event).encode())


@pytest.mark.parametrize("event", INVALID.values(), ids=list(INVALID))
def test_invalid_for_schema_and_decoder(validator: Draft202012Validator, event: Any) -> None:
    assert not validator.is_valid(event), "the schema accepts it"
    with pytest.raises(events.Invalid) as caught:
        events.decode(json.dumps(event).encode())
    assert caught.value.code == events.INVALID_EVENT


@pytest.mark.parametrize("case", KNOWN_GAPS.values(), ids=list(KNOWN_GAPS))
def test_known_gaps(validator: Draft202012Validator, case: tuple[Any, bool, bool]) -> None:
    event, schema_valid, decoder_valid = case
    assert validator.is_valid(event) is schema_valid
    assert decodes(event) is decoder_valid


def test_received_at_is_read_only_and_refused_from_producers(
    validator: Draft202012Validator,
) -> None:
    """Journal lines carry `received_at`, so the schema allows it (marked readOnly); the
    daemon refuses it from producers with its own code."""
    received = validator.schema["$defs"]["Custom"]["properties"]["received_at"]
    assert received["readOnly"] is True
    line = json.dumps({"type": "custom", "name": "x", "received_at": TS}).encode()
    problem = events.check_producer_rules(
        events.decode(line), line, max_attrs_bytes=1024, max_attrs_depth=8
    )
    assert problem is not None and problem.code == events.RECEIVED_AT_SET


# docs/events.md: its field tables and examples follow the code.


def documented_fields() -> dict[str, dict[str, bool]]:
    """``{struct name: {field: required}}`` from the tables after ``<!-- fields: Name -->``."""
    lines = EVENTS_DOC.read_text(encoding="utf-8").splitlines()
    tables: dict[str, dict[str, bool]] = {}
    for index, line in enumerate(lines):
        marker = re.fullmatch(r"<!-- fields: (\w+) -->", line)
        if marker is None:
            continue
        rows: dict[str, bool] = {}
        for row in lines[index + 1 :]:
            if row.startswith("<!--"):
                continue
            if not row.startswith("|"):
                break
            cells = [cell.strip() for cell in row.split("|")]
            if cells[1].startswith("`"):
                rows[cells[1].strip("`")] = cells[3] == "yes"
        tables[marker.group(1)] = rows
    return tables


def model_fields(cls: type[msgspec.Struct]) -> dict[str, bool]:
    envelope = {f.name for f in msgspec.structs.fields(events.Event)}
    fields = {f.name: f.required for f in msgspec.structs.fields(cls)}
    if cls is events.Event:
        return {"type": True, **fields}
    if issubclass(cls, events.Event):
        return {name: req for name, req in fields.items() if name not in envelope}
    return fields


def test_events_doc_tables_match_the_model() -> None:
    nested = [events.Agent, events.Task, events.Tokens, events.Tool, events.RetryCount]
    structs = [events.Event, *nested, events.Elapsed, *events.AnyEvent.__args__]
    expected = {cls.__name__: model_fields(cls) for cls in structs}
    assert documented_fields() == expected


def test_events_doc_examples_are_valid_events(validator: Draft202012Validator) -> None:
    text = EVENTS_DOC.read_text(encoding="utf-8")
    examples = re.findall(r"```json\n(.*?)\n```", text, re.S)
    assert len(examples) >= 2 * len(events.EVENT_TYPES)
    for example in examples:
        assert validator.is_valid(json.loads(example)), example
        events.decode(example.encode())
