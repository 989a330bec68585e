"""The OTLP fast path's checks are the events socket's checks.

An OTLP request's events leave the mappers with their ``attrs`` apart, encoded once
(adapters/otel/export.py), and the daemon's Checker puts them back into each checked line
(daemon/ingest.py). Here every export fixture (and a Claude Code batch shaped like the
benchmark's) goes both ways, apart and as whole lines, through the same Checker: the
same journal lines, the same rejections, whatever the limits. Also the dedup window's
one-step claim against its event-by-event loop."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from telemetryd import events as ev
from telemetryd.adapters.otel import export
from telemetryd.daemon.ingest import Batch, Checker, Dedup

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
_RECEIVED = re.compile(rb'"received_at":"[^"]*"')


def _signal(request: dict[str, Any]) -> str:
    for key, signal in (("resourceLogs", "logs"), ("resourceSpans", "traces")):
        if key in request:
            return signal
    return "metrics"


def _claude_code_batch(count: int) -> bytes:
    """Claude Code api_request records (as bench/otlp.py sends them), one with a nested
    attribute, one with a long string, one with content."""
    records = []
    for i in range(count):
        attrs: dict[str, Any] = {
            "event.name": "api_request",
            "session.id": "s-1",
            "model": "claude-sonnet-4-5",
            "input_tokens": 12 + i,
            "output_tokens": 345,
            "cache_read_tokens": 20_000,
            "cost_usd": 0.0123,
            "request_id": f"req_{i}",
        }
        if i == 1:
            attrs["deep"] = {"a": {"b": {"c": {"d": [1, [2, [3]]]}}}}
        if i == 2:
            attrs["long"] = "x" * 5000
        if i == 3:
            attrs["prompt"] = "the user's words"

        def value(v: Any) -> dict[str, Any]:
            if isinstance(v, str):
                return {"stringValue": v}
            if isinstance(v, float):
                return {"doubleValue": v}
            if isinstance(v, int):
                return {"intValue": str(v)}
            if isinstance(v, list):
                return {"arrayValue": {"values": [value(x) for x in v]}}
            pairs = [{"key": k, "value": value(x)} for k, x in v.items()]
            return {"kvlistValue": {"values": pairs}}

        records.append(
            {
                "timeUnixNano": str(1_790_000_000_000_000_000 + i),
                "body": {"stringValue": "claude_code.api_request"},
                "attributes": [{"key": k, "value": value(v)} for k, v in attrs.items()],
            }
        )
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "claude-code"}}]}
    request = {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": records}]}]}
    return json.dumps(request).encode()


def _requests() -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        body = path.read_bytes()
        out.append((_signal(json.loads(body)), body))
    out.append(("logs", _claude_code_batch(40)))
    return out


LIMITS = [
    (1 << 20, 16 * 1024, 32),  # the defaults
    (1 << 20, 300, 32),  # attrs over a small size limit
    (1 << 20, 16 * 1024, 2),  # ... over a small depth limit
    (700, 16 * 1024, 32),  # lines over a small length limit
]


@pytest.mark.parametrize(("max_line", "max_attrs", "max_depth"), LIMITS)
def test_attrs_apart_are_checked_and_journaled_as_whole_lines_are(
    max_line: int, max_attrs: int, max_depth: int
) -> None:
    checker = Checker()
    events = 0
    for signal, body in _requests():
        mapped = export.to_events(signal, "json", body, limit=1 << 24)  # type: ignore[arg-type]
        assert len(mapped.attrs) == mapped.lines.count(b"\n")
        whole = b"".join(line + b"\n" for line in export.whole_lines(mapped))
        apart = checker.check(mapped.lines, 0, max_line, max_attrs, max_depth, attrs=mapped.attrs)
        joined = checker.check(whole, 0, max_line, max_attrs, max_depth)
        assert _RECEIVED.sub(b"", apart.data) == _RECEIVED.sub(b"", joined.data), signal
        assert (apart.count, apart.rejected, apart.client_ids) == (
            joined.count,
            joined.rejected,
            joined.client_ids,
        )
        if max_line == 1 << 20:  # (a line's length differs by `,"attrs":` at most)
            assert apart.replies == joined.replies
        events += apart.count
        # Every line is canonical: decoded and encoded again, the same bytes.
        for line in apart.data.splitlines():
            assert ev.ENCODER.encode(ev.DECODER.decode(line)) == line
    if (max_attrs, max_depth) == (16 * 1024, 32) and max_line == 1 << 20:
        assert events > 60  # (the fixtures gave events at all)


def test_the_limits_reject_attrs_apart_with_the_usual_errors() -> None:
    checker = Checker()
    mapped = export.to_events("logs", "json", _claude_code_batch(4), limit=1 << 24)
    too_big = checker.check(mapped.lines, 0, 1 << 20, 600, 32, attrs=mapped.attrs)
    errors = [json.loads(reply)["error"] for reply in too_big.replies]
    assert "attrs_too_large" in errors
    too_deep = checker.check(mapped.lines, 0, 1 << 20, 16 * 1024, 3, attrs=mapped.attrs)
    assert [json.loads(r)["error"] for r in too_deep.replies] == ["attrs_too_deep"]
    assert json.loads(too_deep.replies[0])["line"] == 2  # (the record with the nested value)
    too_long = checker.check(mapped.lines, 0, 800, 16 * 1024, 32, attrs=mapped.attrs)
    assert {json.loads(r)["error"] for r in too_long.replies} == {"line_too_long"}
    # A line with attrs both in it and apart is a bug of the caller: that line's
    # internal error, the others go on.
    lines = mapped.lines.splitlines()
    both = lines[0][:-1] + b',"attrs":{"k":1}}'
    region = b"\n".join([both, *lines[1:]]) + b"\n"
    checked = checker.check(region, 0, 1 << 20, 16 * 1024, 32, attrs=mapped.attrs)
    assert checked.count == 3 and checked.internal_errors == 1


def test_the_journal_line_keeps_the_canonical_attrs() -> None:
    checker = Checker()
    mapped = export.to_events("logs", "json", _claude_code_batch(1), limit=1 << 24)
    line = checker.check(mapped.lines, 0, 1 << 20, 16 * 1024, 32, attrs=mapped.attrs).data
    event = json.loads(line)
    attrs = event["attrs"]
    assert list(attrs) == sorted(attrs)  # keys sorted, as events.ENCODER writes them
    assert attrs["request_id"] == "req_0" and attrs["resource"] == {"service.name": "claude-code"}
    assert event["tokens"]["cache_read"] == 20_000 and event["v"] == 1
    assert msgspec.json.encode(msgspec.json.decode(line)) == line.rstrip(b"\n")


def _claim_slowly(dedup: Dedup, ids: list[str], batch: Batch) -> list[tuple[int, Batch]]:
    """Dedup.claim's loop (its general case), id by id."""
    found = []
    for index, event_id in enumerate(ids):
        previous = dedup.get(event_id)
        if previous is None or previous.failed:
            dedup.add(event_id, batch)
        else:
            found.append((index, previous))
    return found


def test_a_chunk_of_new_ids_is_claimed_at_once_as_one_by_one() -> None:
    fast, slow = Dedup(1000), Dedup(1000)
    failed = Batch()
    failed.failed = True
    chunks = [
        [f"a{n}" for n in range(300)],  # all new
        [f"b{n}" for n in range(300)] + ["a5"],  # one already journaled
        ["c1", "c2", "c1"],  # one twice
        [f"d{n}" for n in range(600)],  # the window turns
        ["d599", "e1"],
    ]
    for chunk in chunks:
        batch = Batch()
        assert fast.claim(chunk, batch) == _claim_slowly(slow, chunk, batch)
        assert len(fast) == len(slow)
    assert fast.get("a5") is not None and fast.get("e1") is not None
    # An id whose batch failed is claimed again by the new batch.
    again = Batch()
    fast.claim(["f1"], failed)
    assert fast.claim(["f1"], again) == [] and fast.get("f1") is again


def test_a_data_point_without_a_finite_value_is_counted_rejected() -> None:
    """A gauge or sum point whose value is NaN, infinite or missing gives no event: the
    client is told so (a rejected data point in partialSuccess), and the others stay."""
    points = [
        {"timeUnixNano": "1700000000000000000", "asDouble": 1.5},
        {"timeUnixNano": "1700000000000000000", "asDouble": "NaN"},
        {"timeUnixNano": "1700000000000000000", "asDouble": "Infinity"},
        {"timeUnixNano": "1700000000000000000"},  # no value at all
        {"timeUnixNano": "1700000000000000000", "asInt": "7"},
    ]
    metric = {"name": "m", "gauge": {"dataPoints": points}}
    body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}
    mapped = export.to_events("metrics", "json", json.dumps(body).encode(), limit=1 << 20)
    assert (mapped.records, mapped.unmapped) == (5, 3)
    assert "finite" in mapped.problem
    lines = [msgspec.json.decode(line) for line in mapped.lines.splitlines()]
    assert sorted(line["value"] for line in lines) == [1.5, 7]
