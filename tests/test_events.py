"""The event model (`telemetryd.events`), in-process: decoding, canonical encoding, rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from telemetryd import events as ev

# A minimal valid event of every type (only the required fields).
MINIMAL: dict[str, dict[str, Any]] = {
    "session_start": {},
    "session_end": {},
    "agent_start": {},
    "agent_stop": {},
    "api_request": {"tokens": {"source": "unknown"}},
    "tool_call": {"tool": {"name": "Bash"}},
    "tool_result": {"tool": {"name": "Bash"}},
    "skill": {"name": "pdf"},
    "error": {"message": "boom"},
    "run": {
        "attempt_id": "a1",
        "attempt_index": 0,
        "retry_count": {},
        "elapsed_ms": {"wall": 10},
        "tokens": {"source": "unknown"},
        "outcome": "done",
    },
    "log": {"level": "info", "component": "sched", "event": "tick"},
    "metric": {"name": "queue_depth", "value": 3, "kind": "gauge"},
    "alert": {"severity": "warning", "kind": "budget", "message": "80% spent"},
    "prompt": {},
    "span": {"name": "chat gpt-4o"},
    "custom": {"name": "anything"},
}

LIMITS = {"max_attrs_bytes": 16 * 1024, "max_attrs_depth": 8}


def line(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def invalid(raw: bytes) -> ev.Invalid:
    with pytest.raises(ev.Invalid) as caught:
        ev.decode(raw)
    return caught.value


def test_every_type_has_a_minimal_example() -> None:
    assert set(MINIMAL) == set(ev.EVENT_TYPES)
    assert len(ev.EVENT_TYPES) == len(set(ev.EVENT_TYPES))


@pytest.mark.parametrize("type_", ev.EVENT_TYPES)
def test_minimal_event_decodes_and_round_trips(type_: str) -> None:
    raw = line({"type": type_, **MINIMAL[type_]})
    event = ev.decode(raw)
    assert type(event).__struct_config__.tag == type_
    encoded = ev.ENCODER.encode(event)
    assert encoded.startswith(b'{"type":"' + type_.encode() + b'"')
    assert ev.decode(encoded) == event
    assert ev.ENCODER.encode(ev.decode(encoded)) == encoded


@pytest.mark.parametrize("type_", [t for t in ev.EVENT_TYPES if MINIMAL[t]])
def test_a_required_field_missing_names_it(type_: str) -> None:
    fields = dict(MINIMAL[type_])
    missing = next(iter(fields))
    del fields[missing]
    problem = invalid(line({"type": type_, **fields}))
    assert problem.code == ev.INVALID_EVENT
    assert f"`{missing}`" in problem.message


def test_unset_optional_fields_are_omitted() -> None:
    event = ev.decode(b'{"name":"x","type":"custom"}')
    assert ev.ENCODER.encode(event) == b'{"type":"custom","name":"x"}'


def test_encoding_is_deterministic() -> None:
    one = (
        b'{"type":"tool_result","tool":{"success":true,"name":"Edit"},"attrs":{"z":1,"a":'
        b'{"d":[3,{"y":1,"x":2}],"c":null}},"agent":{"provider":"anthropic","model":"m"},'
        b'"ts":"2025-01-02T03:04:05.678Z","session_id":"s"}'
    )
    two = (
        b'{ "session_id": "s", "ts": "2025-01-02T03:04:05.678Z", "agent": {"model": "m", '
        b'"provider": "anthropic"}, "attrs": {"a": {"c": null, "d": [3, {"x": 2, "y": 1}]}, '
        b'"z": 1}, "tool": {"name": "Edit", "success": true}, "type": "tool_result" }'
    )
    first, second = ev.decode(one), ev.decode(two)
    encoded = ev.ENCODER.encode(first)
    assert encoded == ev.ENCODER.encode(second)
    assert encoded == ev.ENCODER.encode(ev.decode(one))
    # Struct order for fields, sorted keys inside attrs (at every depth).
    assert encoded == (
        b'{"type":"tool_result","ts":"2025-01-02T03:04:05.678000Z","session_id":"s",'
        b'"agent":{"model":"m","provider":"anthropic"},'
        b'"attrs":{"a":{"c":null,"d":[3,{"x":2,"y":1}]},"z":1},'
        b'"tool":{"name":"Edit","success":true}}'
    )
    assert ev.ENCODER.encode_lines([first, second]) == encoded + b"\n" + encoded + b"\n"


# -- tokens -------------------------------------------------------------------------------


def tokens(**fields: Any) -> ev.Tokens:
    return msgspec.convert(fields, ev.Tokens)


def test_actual_total_is_derived() -> None:
    assert tokens(source="actual", input=10, output=5).total == 15
    assert (
        tokens(source="actual", input=10, output=5, cache_read=100, cache_creation=7).total == 122
    )
    # A reported total is kept as reported.
    assert tokens(source="actual", input=10, output=5, total=99).total == 99
    event = ev.decode(b'{"type":"api_request","tokens":{"source":"actual","input":1,"output":2}}')
    assert b'"total":3' in ev.ENCODER.encode(event)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"source": "actual", "input": 10}, "`output`"),
        ({"source": "actual", "output": 10}, "`input`"),
        ({"source": "actual", "input": 1, "output": 5, "reasoning": 6}, "`reasoning`"),
        ({"source": "estimated", "estimated_total": 40}, "`tokenizer`"),
        ({"source": "estimated", "tokenizer": "cl100k"}, "`estimated_total`"),
        ({"source": "actual", "input": -1, "output": 5}, ">= 0"),
        ({"source": "measured", "input": 1, "output": 5}, "Invalid enum value 'measured'"),
        ({"input": 1, "output": 5}, "`source`"),
    ],
)
def test_token_rules_are_enforced(fields: dict[str, Any], fragment: str) -> None:
    problem = invalid(line({"type": "api_request", "tokens": fields}))
    assert problem.code == ev.INVALID_EVENT
    assert problem.path.startswith("$.tokens")
    assert fragment in problem.message


def test_token_rules_that_pass() -> None:
    assert tokens(source="actual", input=1, output=5, reasoning=5).reasoning == 5
    estimated = tokens(source="estimated", estimated_total=40, tokenizer="cl100k")
    assert estimated.total is None and estimated.estimated_total == 40
    unknown = tokens(source="unknown")
    assert unknown.input is None and unknown.total is None
    # unknown never fails, whatever else is (not) there
    assert tokens(source="unknown", input=3).total is None


# -- errors -------------------------------------------------------------------------------


def test_invalid_json() -> None:
    problem = invalid(b'{"type":"custom",')
    assert problem.code == ev.INVALID_JSON
    assert problem.message.startswith("invalid JSON")
    for raw in (b"", b"NaN", b'{"type":"metric","value":Infinity}', b"{'type':'custom'}"):
        assert invalid(raw).code == ev.INVALID_JSON, raw


def test_too_deeply_nested_json() -> None:
    raw = b'{"type":"custom","name":"x","attrs":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    problem = invalid(raw)
    assert problem.code == ev.INVALID_JSON
    assert "nested too deeply" in problem.message


def test_invalid_utf8_names_the_byte() -> None:
    problem = invalid(b'{"type":"custom","name":"caf\xe9"}')
    assert problem.code == ev.INVALID_UTF8
    assert problem.message == "invalid UTF-8 at byte 28"
    assert invalid(b"\xff{}").message == "invalid UTF-8 at byte 0"


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        (
            b'{"type":"api_request","tokens":{"source":"actual","input":"1","output":2}}',
            "$.tokens.input",
            "Expected `int",
        ),
        (b'{"type":"tool_call","tool":{"name":7}}', "$.tool.name", "Expected `str`"),
        (b'{"type":"custom","name":"x","agent":{"model":1}}', "$.agent.model", "Expected `str"),
        (b'{"type":"bogus"}', "$.type", "unknown event type 'bogus'"),
        (b'{"type":"custom","name":"x","extra":1}', "$", "`extra`"),
        (b'{"type":"custom","name":"x","tokens":{}}', "$", "`tokens`"),
        (b'{"type":"custom","name":"x","agent":{"modle":"m"}}', "$.agent", "`modle`"),
        (b'{"type":"custom","name":"x","ts":"2025-01-01T00:00:00"}', "$.ts", "timezone"),
        (b'{"type":"custom","name":"x","ts":"yesterday"}', "$.ts", "datetime"),
        (b'{"type":"custom","name":"x","id":""}', "$.id", "length >= 1"),
        (b'{"type":"custom","name":"x","id":"' + b"i" * 129 + b'"}', "$.id", "length <= 128"),
        (b'{"type":"custom","name":"x","v":2}', "$.v", "<= 1"),
        (b'{"type":"error","message":"m","confidence":1.5}', "$.confidence", "<= 1.0"),
        (b'{"type":"metric","name":"m","value":1e999,"kind":"gauge"}', "$.value", "range"),
        (b'{"type":"metric","name":"m","value":1,"kind":"meter"}', "$.kind", "'meter'"),
        (b"[]", "$", "Expected `object`"),
        (b"{}", "$", "`type`"),
    ],
)
def test_invalid_event_names_the_path(raw: bytes, path: str, fragment: str) -> None:
    problem = invalid(raw)
    assert problem.code == ev.INVALID_EVENT
    assert problem.path == path
    assert fragment in problem.message
    assert str(problem) == f"{path}: {problem.message}"


def test_unknown_field_points_to_attrs() -> None:
    assert "`attrs`" in invalid(b'{"type":"custom","name":"x","colour":"red"}').message


def test_explain_maps_each_exception() -> None:
    with pytest.raises(msgspec.ValidationError) as validation:
        msgspec.json.decode(b'{"type":"skill"}', type=ev.AnyEvent)
    explained = ev.explain(validation.value, b'{"type":"skill"}')
    assert (explained.code, explained.path) == (ev.INVALID_EVENT, "$")
    assert "`name`" in explained.message
    with pytest.raises(msgspec.DecodeError) as malformed:
        msgspec.json.decode(b"{,}")
    assert ev.explain(malformed.value, b"{,}").code == ev.INVALID_JSON
    with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)) as bad_utf8:
        msgspec.json.decode(b'"\xc3\x28"')
    utf8 = ev.explain(bad_utf8.value, b'"\xc3\x28"')
    assert (utf8.code, utf8.message) == (ev.INVALID_UTF8, "invalid UTF-8 at byte 1")


def test_valid_envelope_fields_decode() -> None:
    event = ev.decode(
        b'{"type":"run","v":1,"id":"r-1","ts":"2025-01-01T10:00:00+02:00","source":"kano",'
        b'"session_id":"s","trace_id":"t","span_id":"sp","parent_span_id":"p",'
        b'"agent":{"model":"m","provider":"p","type":"main","id":"a","variant":"v"},'
        b'"task":{"id":"T-1","title":"fix","attempt_id":"a1","attempt_index":2},'
        b'"attempt_id":"a1","attempt_index":2,"retry_count":{"same_model":1,"reroute":0},'
        b'"elapsed_ms":{"wall":1000,"llm":600,"tools":300},'
        b'"tokens":{"source":"estimated","estimated_total":9,"tokenizer":"tk"},'
        b'"outcome":"redo","outcome_reason":"tests failed"}'
    )
    assert isinstance(event, ev.Run)
    assert event.ts == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    assert event.task is not None and event.task.attempt_index == 2
    assert event.retry_count.same_model == 1


# -- producer rules -----------------------------------------------------------------------


def check(raw: bytes, **limits: int) -> ev.Invalid | None:
    return ev.check_producer_rules(ev.decode(raw), raw, **{**LIMITS, **limits})


def test_producer_rules_pass() -> None:
    assert check(b'{"type":"custom","name":"x"}') is None
    assert check(b'{"type":"custom","name":"x","attrs":{"a":{"b":[1]}}}', max_attrs_depth=3) is None
    # A long line with small attrs is fine: the limit is on attrs.
    raw = b'{"type":"custom","name":"' + b"n" * 500 + b'","attrs":{"k":"v"}}'
    assert check(raw, max_attrs_bytes=64) is None


def test_received_at_is_the_daemons() -> None:
    problem = check(b'{"type":"custom","name":"x","received_at":"2025-01-01T00:00:00Z"}')
    assert problem is not None
    assert (problem.code, problem.path) == (ev.RECEIVED_AT_SET, "$.received_at")


def test_attrs_too_deep() -> None:
    problem = check(b'{"type":"custom","name":"x","attrs":{"a":{"b":[1]}}}', max_attrs_depth=2)
    assert problem is not None
    assert (problem.code, problem.path) == (ev.ATTRS_TOO_DEEP, "$.attrs")
    assert "limit of 2" in problem.message
    lists = check(b'{"type":"custom","name":"x","attrs":{"a":[[[]]]}}', max_attrs_depth=3)
    assert lists is not None and lists.code == ev.ATTRS_TOO_DEEP


def test_attrs_too_large() -> None:
    raw = b'{"type":"custom","name":"x","attrs":{"blob":"' + b"b" * 100 + b'"}}'
    problem = check(raw, max_attrs_bytes=64)
    assert problem is not None
    assert (problem.code, problem.path) == (ev.ATTRS_TOO_LARGE, "$.attrs")
    assert "limit of 64" in problem.message
    assert str(len(b'{"blob":"' + b"b" * 100 + b'"}')) in problem.message


def test_to_utc_ms() -> None:
    plus_one = timezone(timedelta(hours=1))
    assert ev.to_utc_ms(datetime(2025, 3, 4, 5, 6, 7, 891234, tzinfo=plus_one)) == datetime(
        2025, 3, 4, 4, 6, 7, 891000, tzinfo=UTC
    )
    already = datetime(2025, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
    minus_one = timezone(timedelta(hours=-1))
    with pytest.raises(ev.Invalid) as caught:
        ev.to_utc_ms(datetime(9999, 12, 31, 23, 59, 59, tzinfo=minus_one))
    assert (caught.value.code, caught.value.path) == (ev.INVALID_EVENT, "$.ts")
    assert ev.to_utc_ms(already) == already
    assert ev.to_utc_ms(already).tzinfo is UTC


# -- issue 8: lone surrogates, numbers past what a journal line may hold ------------------


@pytest.mark.parametrize(
    ("raw", "escape", "path"),
    [
        (rb'{"type":"custom","name":"\ud800"}', r"\ud800", "$.name"),
        (rb'{"type":"custom","name":"a\udfffb"}', r"\udfff", "$.name"),
        (rb'{"type":"custom","name":"\ud800\u0041"}', r"\ud800", "$.name"),
        (rb'{"type":"custom","name":"x","attrs":{"k":[1,"\udc00"]}}', r"\udc00", "$.attrs.k[1]"),
        (rb'{"type":"custom","name":"x","attrs":{"a b":"\uD83D"}}', r"\uD83D", '$.attrs["a b"]'),
        (rb'{"type":"custom","name":"x","attrs":{"\ud800":1}}', r"\ud800", "$.attrs"),
        (rb'{"type":"custom","name":"\ud800"', r"\ud800", "$"),  # and truncated
    ],
)
def test_a_lone_surrogate_is_named_as_such(raw: bytes, escape: str, path: str) -> None:
    problem = invalid(raw)
    assert problem.code == ev.INVALID_JSON
    assert "truncated" not in problem.message
    assert f"invalid unicode escape `{escape}`" in problem.message
    assert "lone UTF-16 surrogate" in problem.message
    assert problem.path == path


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    pair = ev.decode(rb'{"type":"custom","name":"\ud83d\ude00"}')
    assert isinstance(pair, ev.Custom) and pair.name == "\U0001f600"
    escaped = ev.decode(rb'{"type":"custom","name":"\\ud800"}')
    assert isinstance(escaped, ev.Custom) and escaped.name == "\\ud800"
    # A truncated line without a surrogate stays a truncated line.
    truncated = invalid(b'{"type":"custom","name":"x')
    assert truncated.message == "invalid JSON: Input data was truncated"


BIG = 2**53 - 1


@pytest.mark.parametrize(
    ("fields", "path", "fragment"),
    [
        ({"type": "api_request", "tokens": {"source": "actual", "input": 2**63 - 1, "output": 1}},
         "$.tokens.input", f"<= {BIG}"),
        ({"type": "api_request", "tokens": {"source": "actual", "input": BIG, "output": 1}},
         "$.tokens", "over the largest count"),
        ({"type": "api_request", "tokens": {"source": "actual", "input": 1, "output": 1,
                                            "cache_read": BIG}}, "$.tokens", "largest count"),
        ({"type": "run", "attempt_id": "a", "attempt_index": 0, "retry_count": {},
          "elapsed_ms": {"wall": 2**64}, "tokens": {"source": "unknown"}, "outcome": "done"},
         "$.elapsed_ms.wall", "<= "),
        ({"type": "skill", "name": "s", "duration_ms": BIG + 1}, "$.duration_ms", f"<= {BIG}"),
        ({"type": "prompt", "length": -1}, "$.length", ">= 0"),
        ({"type": "api_request", "tokens": {"source": "unknown"}, "cost_usd": -0.5},
         "$.cost_usd", ">= 0"),
        # (two of 1e308 summed to infinity: the model's total and the daily cost lost them)
        ({"type": "api_request", "tokens": {"source": "unknown"}, "cost_usd": 1e308},
         "$.cost_usd", "<= 1000000000"),
    ],
)  # fmt: skip
def test_numbers_are_bounded_so_every_journal_line_fits_its_column(
    fields: dict[str, Any], path: str, fragment: str
) -> None:
    problem = invalid(line(fields))
    assert (problem.code, problem.path) == (ev.INVALID_EVENT, path)
    assert fragment in problem.message


def test_numbers_at_the_limits_are_accepted() -> None:
    at_limit = {"source": "actual", "input": BIG, "output": 0}
    event = ev.decode(line({"type": "api_request", "tokens": at_limit}))
    assert isinstance(event, ev.ApiRequest) and event.tokens.total == BIG
    given = {"source": "actual", "input": BIG, "output": BIG, "total": BIG}
    assert ev.decode(line({"type": "api_request", "tokens": given})) is not None
    assert ev.decode(line({"type": "api_request", "tokens": {"source": "unknown"},
                           "cost_usd": ev.MAX_COST})) is not None  # fmt: skip
    for number in (b"1e999", b"-1e999", b"1e400"):
        raw = b'{"type":"api_request","tokens":{"source":"unknown"},"cost_usd":' + number + b"}"
        assert invalid(raw).path == "$.cost_usd"
    assert ev.MAX_INT == BIG


def test_the_limit_is_the_same_in_the_adapters() -> None:
    from telemetryd.adapters import pricing, usage

    assert usage.MAX_COUNT == pricing._MAX_COUNT == ev.MAX_INT
    assert usage.MAX_COST == ev.MAX_COST
