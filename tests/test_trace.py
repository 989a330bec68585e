"""`telemetryctl trace` on the real daemon: spans exported by the OpenTelemetry SDK (a
GenAI agent turn whose `chat` spans are also api_requests), shown as a tree with
durations, tokens and cost checked against figures computed here from the span
attributes and the published prices; the tree's order held to the trace() macro's."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, ctl, exchange, summary
from telemetryd.client import traces
from test_http import Client

# Published prices, USD per million tokens: OpenAI (openai.com/api/pricing) GPT-5 mini $0.25
# input, $0.025 cached input, $2 output; Anthropic (anthropic.com/pricing#api) Claude Sonnet
# 4.5 $3 input, $15 output, $0.30 cache read, $3.75 cache write.
PRICES = {
    "gpt-5-mini": {"input": 0.25, "output": 2.0, "cache_read": 0.025},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
}
MS = 1_000_000  # nanoseconds
SESSION = "sess-trace"

# (name, parent, start ms, end ms, attributes, error) of the first trace's spans.
CHAT_A = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-5-mini",
    "gen_ai.provider.name": "openai",
    "gen_ai.usage.input_tokens": 1200,  # 200 of them read from the cache
    "gen_ai.usage.cache_read.input_tokens": 200,
    "gen_ai.usage.output_tokens": 300,
}
CHAT_B = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.usage.input_tokens": 6000,  # 1,000 of them written to the cache
    "gen_ai.usage.cache_creation.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 800,
}
AGENT = {
    "gen_ai.operation.name": "invoke_agent",
    "gen_ai.agent.name": "planner",
    "gen_ai.request.model": "gpt-5-mini",
    # the turn's totals: an agent_stop that must not add to the tokens again
    "gen_ai.usage.input_tokens": 7200,
    "gen_ai.usage.output_tokens": 1100,
}
TOOL = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "Bash"}
SPANS = [
    ("turn", None, 0, 1500, {}, None),
    ("invoke_agent planner", "turn", 10, 1200, AGENT, None),
    ("chat gpt-5-mini", "invoke_agent planner", 20, 470, CHAT_A, None),
    ("execute_tool Bash", "invoke_agent planner", 500, 512, TOOL, "exit status 1"),
    ("chat claude-sonnet-4-5", "invoke_agent planner", 600, 1100, CHAT_B, None),
    ("sibling", "turn", 1300, 1303, {}, None),
]
TREE = [
    (0, "turn"),
    (1, "invoke_agent planner"),
    (2, "chat gpt-5-mini"),
    (2, "execute_tool Bash"),
    (2, "chat claude-sonnet-4-5"),
    (1, "sibling"),
]
LABELS = [
    "turn",
    "├─ invoke_agent planner (gpt-5-mini)",
    "│  ├─ chat gpt-5-mini",
    "│  ├─ execute_tool Bash",
    "│  └─ chat claude-sonnet-4-5",
    "└─ sibling",
]


def usage_of(attrs: dict[str, Any]) -> dict[str, int]:
    """The event model's tokens of a GenAI chat span: input without the cached parts."""
    read = attrs.get("gen_ai.usage.cache_read.input_tokens", 0)
    written = attrs.get("gen_ai.usage.cache_creation.input_tokens", 0)
    return {
        "input": attrs["gen_ai.usage.input_tokens"] - read - written,
        "output": attrs["gen_ai.usage.output_tokens"],
        "cache_read": read,
        "cache_creation": written,
    }


def cost_of(attrs: dict[str, Any]) -> float:
    """Dollars from the published prices, per million tokens (all prompts are small)."""
    price = PRICES[attrs["gen_ai.request.model"]]
    used = usage_of(attrs)
    return (
        used["input"] * price["input"]
        + used["output"] * price["output"]
        + used["cache_read"] * price.get("cache_read", 0)
        + used["cache_creation"] * price.get("cache_write", 0)
    ) / 1e6


def export(
    client: Client, spans: list[tuple[Any, ...]], start_ns: int
) -> tuple[str, dict[str, str]]:
    """Export ``spans`` as one trace through the SDK's OTLP/HTTP exporter; the trace id
    and each span's id (lowercase hex, as the daemon keeps them)."""
    from opentelemetry import trace as otel
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    provider = TracerProvider(resource=Resource({"service.name": "trace-test"}))
    exporter = OTLPSpanExporter(
        endpoint=f"http://{client.address}/v1/traces", headers=client.auth()
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    made: dict[str, Any] = {}
    for name, parent, begin, _, attrs, error in spans:
        context = otel.set_span_in_context(made[parent]) if parent else None
        span = tracer.start_span(
            name,
            context=context,
            attributes={"session.id": SESSION, **attrs},
            start_time=start_ns + begin * MS,
        )
        span.set_status(Status(StatusCode.ERROR, error) if error else Status(StatusCode.OK))
        made[name] = span
    for name, _, _, end, _, _ in spans:  # children end before parents export
        made[name].end(end_time=start_ns + end * MS)
    provider.shutdown()
    first = next(iter(made.values()))
    trace_id = format(first.get_span_context().trace_id, "032x")
    ids = {name: format(s.get_span_context().span_id, "016x") for name, s in made.items()}
    return trace_id, ids


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@pytest.fixture
def exported(running_daemon: Daemon) -> dict[str, Any]:
    """Two traces of one session: the agent turn (and two events in it without a span:
    a note and a model request reported by a hook), then a later one-span trace whose
    model has no price."""
    client = Client(running_daemon)
    start = (time.time_ns() // MS - 120_000) * MS
    trace_id, ids = export(client, SPANS, start)
    unpriced = {**CHAT_A, "gen_ai.request.model": "mystery-model-1"}
    later_id, later_ids = export(
        client, [("chat mystery", None, 0, 50, unpriced, None)], start + 60_000 * MS
    )
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start // 1_000_000_000 + 1))
    extra = [
        {
            "type": "custom",
            "name": "note",
            "trace_id": trace_id,
            "session_id": SESSION,
            "ts": when + ".100Z",
        },
        {
            "type": "api_request",
            "trace_id": trace_id,
            "session_id": SESSION,
            "ts": when + ".200Z",
            "agent": {"model": "claude-haiku-4-5"},
            "tokens": {"source": "actual", "input": 100, "output": 10},
            "cost_usd": 0.25,
        },
    ]
    payload = "".join(json.dumps(e) + "\n" for e in extra).encode()
    assert exchange(running_daemon.events_socket, payload) == [summary(2, 2)]
    return {"trace_id": trace_id, "ids": ids, "later_id": later_id, "later_ids": later_ids}


def walk(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for span in spans:
        out.append(span)
        out.extend(walk(span["children"]))
    return out


def test_a_trace_as_a_tree_with_durations_tokens_and_cost(
    running_daemon: Daemon, exported: dict[str, Any]
) -> None:
    trace_id = exported["trace_id"]
    result = ctl("trace", trace_id)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith(f"trace {trace_id}  session {SESSION}  started ")
    assert lines[0].endswith("6 spans  1.50 s")
    assert cells(lines[1]) == [
        "span", "duration", "input", "output", "cache read", "cache write", "cost"
    ]  # fmt: skip
    cut = lines[1].index("duration") - 2  # where the tree's column ends
    rows = [[row[:cut].rstrip(), *cells(row[cut:])] for row in lines[2:8]]
    assert [row[0] for row in rows] == LABELS
    durations = [row[1] for row in rows]
    assert durations == ["1.50 s", "1.19 s", "450 ms", "12 ms", "500 ms", "3 ms"]
    for row, attrs in ((rows[2], CHAT_A), (rows[4], CHAT_B)):
        used = usage_of(attrs)
        assert row[2:] == [
            f"{used['input']:,}",
            f"{used['output']:,}",
            f"{used['cache_read']:,}",
            f"{used['cache_creation']:,}",
            f"${cost_of(attrs):.4f}",
            "✓",
        ]
    assert rows[3][2:] == ["✗ exit status 1"]  # no tokens: not a model call
    assert rows[1][2:] == ["✓"]  # the agent's own totals are not added again
    assert lines[8] == "events without a span:"
    assert re.fullmatch(r"  \S+Z  custom  note", lines[9]), lines[9]
    pattern = r"  \S+Z  api_request  claude-haiku-4-5  100 input, 10 output  \$0\.2500"
    assert re.fullmatch(pattern, lines[10]), lines[10]
    assert set(lines[11]) == {"-"}
    # the totals: both chat spans and the request without a span
    a, b = usage_of(CHAT_A), usage_of(CHAT_B)
    cost = cost_of(CHAT_A) + cost_of(CHAT_B) + 0.25
    assert cells(lines[12]) == [
        "total (3 requests)",
        "1.50 s",
        f"{a['input'] + b['input'] + 100:,}",
        f"{a['output'] + b['output'] + 10:,}",
        f"{a['cache_read'] + b['cache_read']:,}",
        f"{a['cache_creation'] + b['cache_creation']:,}",
        f"${cost:.4f}",
    ]
    assert len(lines) == 13


def test_json_is_the_same_tree_nested(running_daemon: Daemon, exported: dict[str, Any]) -> None:
    trace_id, ids = exported["trace_id"], exported["ids"]
    result = ctl("trace", "--json", trace_id)
    assert result.returncode == 0, result.stderr.decode()
    body = json.loads(result.stdout)
    assert list(body) == ["traces"] and len(body["traces"]) == 1
    found = body["traces"][0]
    assert (found["trace_id"], found["session_ids"], found["duration_ms"]) == (
        trace_id,
        [SESSION],
        1500,
    )
    assert len(found["spans"]) == 1  # one root, the rest nested under it
    upper = ctl("trace", "--json", trace_id.upper())  # a trace id pasted in capitals
    assert json.loads(upper.stdout) == body
    spans = walk(found["spans"])
    assert [(s["depth"], s["name"]) for s in spans] == TREE
    by_name = {s["name"]: s for s in spans}
    for name, parent, begin, end, attrs, error in SPANS:
        span = by_name[name]
        assert span["span_id"] == ids[name]
        assert span["parent_span_id"] == (ids[parent] if parent else None)
        assert span["duration_ms"] == end - begin
        assert (span["success"], span["error"]) == ((False, error) if error else (True, None))
        if attrs.get("gen_ai.operation.name") == "chat":
            used = usage_of(attrs)
            assert span["model"] == attrs["gen_ai.request.model"]
            assert span["usage"] == {
                "requests": 1,
                "input_tokens": used["input"],
                "output_tokens": used["output"],
                "cache_read_tokens": used["cache_read"],
                "cache_creation_tokens": used["cache_creation"],
                "cost_usd": pytest.approx(cost_of(attrs), rel=1e-9),
                "unpriced_requests": 0,
            }
            assert sorted(e["type"] for e in span["events"]) == ["api_request", "span"]
        else:
            assert span["usage"] is None
    agent_events = sorted(e["type"] for e in by_name["invoke_agent planner"]["events"])
    assert agent_events == ["agent_start", "agent_stop", "span"]
    assert [e["type"] for e in found["unspanned"]] == ["custom", "api_request"]
    totals = found["totals"]
    assert totals["requests"] == 3 and totals["unpriced_requests"] == 0
    assert totals["cost_usd"] == pytest.approx(cost_of(CHAT_A) + cost_of(CHAT_B) + 0.25)
    assert totals["input_tokens"] == usage_of(CHAT_A)["input"] + usage_of(CHAT_B)["input"] + 100

    # The same order as the trace() macro's (its events, one span after another).
    sql = "select span_id from trace($t) where span_id is not null"
    macro = ctl("query", "--format", "json", "--param", f"t={trace_id}", sql)
    assert macro.returncode == 0, macro.stderr.decode()
    order = list(dict.fromkeys(r["span_id"] for r in json.loads(macro.stdout)))
    assert order == [s["span_id"] for s in spans]


def test_a_spans_parent_is_the_same_in_the_macro_and_the_cli(running_daemon: Daemon) -> None:
    """Two paths disagree on span c's parent: its `span` event names p1, a model request
    of the same span p2 (and came first). The CLI put c under p1, the macro under p2."""
    trace = "b" * 32

    def event(n: int, kind: str, span: str, parent: str | None) -> dict[str, Any]:
        found = {"type": kind, "id": f"par{n}", "ts": f"2026-01-01T00:00:0{n}.000Z"}
        found |= {"trace_id": trace, "span_id": span * 16, "session_id": "parents"}
        if kind == "api_request":
            found |= {"agent": {"model": "m-x"}, "tokens": {"source": "unknown"}}
        else:
            found["name"] = f"span {span}"
        return found | ({"parent_span_id": parent * 16} if parent else {})

    sent = [
        event(1, "span", "1", None),
        event(2, "span", "2", "1"),
        event(3, "api_request", "c", "2"),
        event(4, "span", "c", "1"),
    ]
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in sent)
    assert exchange(running_daemon.events_socket, payload) == [summary(4, 4)]
    shown = ctl("trace", "--json", trace)
    assert shown.returncode == 0, shown.stderr.decode()
    root = json.loads(shown.stdout)["traces"][0]["spans"][0]
    assert [s["span_id"] for s in root["children"]] == ["2" * 16, "c" * 16]
    sql = "select distinct depth, span_id from trace($t) order by all"
    macro = ctl("query", "--format", "json", "--param", f"t={trace}", sql)
    assert macro.returncode == 0, macro.stderr.decode()
    depths = [(r["depth"], r["span_id"]) for r in json.loads(macro.stdout)]
    assert depths == [(0, "1" * 16), (1, "2" * 16), (1, "c" * 16)]


def test_every_trace_of_a_session(running_daemon: Daemon, exported: dict[str, Any]) -> None:
    result = ctl("trace", "--session", SESSION, "--json")
    assert result.returncode == 0, result.stderr.decode()
    body = json.loads(result.stdout)
    assert body["session_id"] == SESSION
    ids = [t["trace_id"] for t in body["traces"]]
    assert ids == [exported["trace_id"], exported["later_id"]]  # by start time
    later = body["traces"][1]
    assert later["totals"]["unpriced_requests"] == 1 and later["totals"]["cost_usd"] is None

    text = ctl("trace", "--session", SESSION)
    assert text.returncode == 0, text.stderr.decode()
    out = text.stdout.decode()
    blocks = out.split("\n\n")
    assert blocks[0].startswith(f"trace {exported['trace_id']}")
    assert blocks[1].startswith(f"trace {exported['later_id']}")
    assert cells(blocks[1].splitlines()[2])[0] == "chat mystery (mystery-model-1)"
    assert cells(blocks[1].splitlines()[2])[-2:] == ["$?", "✓"]
    assert blocks[2].startswith("all 2 traces: 4 requests, ")
    assert blocks[2].rstrip().endswith(f"${cost_of(CHAT_A) + cost_of(CHAT_B) + 0.25:.4f}+")


def test_unknown_ids_and_usage_errors(running_daemon: Daemon) -> None:
    result = ctl("trace", "0" * 32)
    assert result.returncode == 1
    assert result.stderr.decode() == f"Error: no trace {'0' * 32} in the database\n"
    result = ctl("trace", "--session", "nobody")
    assert result.returncode == 1
    assert b"no trace with an event of session nobody" in result.stderr
    for args in ([], ["abc", "--session", "s"]):
        result = ctl("trace", *args)
        assert result.returncode == 2
        assert b"give a TRACE_ID or --session ID" in result.stderr


def test_with_the_daemon_stopped_the_file_answers(
    running_daemon: Daemon, exported: dict[str, Any]
) -> None:
    trace_id = exported["trace_id"]
    before = ctl("trace", trace_id)
    assert before.returncode == 0, before.stderr.decode()
    assert running_daemon.stop() == 0
    after = ctl("trace", trace_id)
    assert after.returncode == 0, after.stderr.decode()
    assert after.stdout == before.stdout
    assert b"warning: telemetryd is not running" in after.stderr


def test_without_daemon_or_database() -> None:
    result = ctl("trace", "abc")
    assert result.returncode == 3
    assert b"telemetryd is not running" in result.stderr
    assert b"no database" in result.stderr


def test_durations_for_people() -> None:
    assert [traces.duration_text(ms) for ms in (None, 0, 999, 1000, 1250, 59_999)] == [
        "", "0 ms", "999 ms", "1.00 s", "1.25 s", "60.00 s"
    ]  # fmt: skip
    assert traces.duration_text(125_000) == "2m 05s"
    assert traces.duration_text(3_720_000) == "1h 02m"


def test_costs_for_people() -> None:
    """A trace without model requests cost nothing: it was totalled as `$?`, the mark of
    requests the price table does not know."""
    row = {f"tokens_{n}": 1 for n in ("input", "output", "cache_read", "cache_creation")}
    none, unknown, some = traces.Usage(), traces.Usage(), traces.Usage()
    unknown.add({**row, "cost_usd": None})
    some.add({**row, "cost_usd": None})
    some.add({**row, "cost_usd": 0.5})
    assert [traces.cost_text(u) for u in (none, unknown, some)] == ["$0.0000", "$?", "$0.5000+"]
    got = [traces.usage_dict(u)["cost_usd"] for u in (none, unknown, some)]
    assert got == [0.0, None, 0.5]


def test_spans_in_a_loop_are_still_shown() -> None:
    """Parents that form a loop (a producer's bug) reach no root: each loop is shown
    from its first span, as one more root."""

    def row(span: str, parent: str | None, ts: str) -> dict[str, Any]:
        return {
            "trace_id": "t", "span_id": span, "parent_span_id": parent, "ts": ts,
            "type": "span", "what": span, "kind": None, "duration_ms": 5, "success": None,
            "error": None, "model": None, "tokens_input": None, "tokens_output": None,
            "tokens_cache_read": None, "tokens_cache_creation": None, "cost_usd": None,
            "session_id": None, "source": None, "id": span,
        }  # fmt: skip

    rows = [
        row("r", None, "2026-01-01T00:00:00.000Z"),
        row("a", "b", "2026-01-01T00:00:01.000Z"),
        row("b", "a", "2026-01-01T00:00:02.000Z"),
    ]
    (found,) = traces.build(rows)
    assert [(s.depth, s.span_id) for s in found.spans()] == [(0, "r"), (0, "a"), (1, "b")]
    assert found.duration_ms == 2005


def test_a_database_that_cannot_be_opened(state_home: Path) -> None:
    """The daemon is stopped and the file is no database: exit 3, saying so."""
    from telemetryd import paths

    database = Path(paths.resolve().database)
    database.parent.mkdir(parents=True, exist_ok=True)
    database.write_bytes(b"not a duckdb file" * 100)
    result = ctl("trace", "abc")
    assert result.returncode == 3, result.stderr.decode()
    assert b"Error: the database cannot be opened: " in result.stderr


def test_a_chain_thousands_of_spans_deep_is_shown(running_daemon: Daemon) -> None:
    """Nested spans 1,500 deep (a producer's bug, or a long agent loop): the tree, its
    JSON (on one line past 100 levels) and every other trace of the session are shown,
    where the recursive walks stopped with a RecursionError."""
    trace = "d" * 32
    chain = [
        {
            "type": "span",
            "id": f"deep{n}",
            "ts": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
            "session_id": "deep-session",
            "trace_id": trace,
            "span_id": f"{n + 1:016x}",
            **({"parent_span_id": f"{n:016x}"} if n else {}),
            "name": f"step {n}",
            "duration_ms": 5,
        }
        for n in range(1500)
    ]
    other = {**chain[0], "id": "shallow", "trace_id": "e" * 32, "span_id": "f" * 16}
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in [*chain, other])
    assert exchange(running_daemon.events_socket, payload) == [summary(1501, 1501)]
    shown = ctl("trace", "--session", "deep-session")
    assert shown.returncode == 0, shown.stderr.decode()
    lines = shown.stdout.decode().splitlines()
    assert sum(line.startswith(("trace ", "trace\t")) for line in lines) == 2
    assert any(line.strip().startswith("└─ step 1499") for line in lines)
    as_json = ctl("trace", "--json", trace)
    assert as_json.returncode == 0, as_json.stderr.decode()
    assert as_json.stdout.count(b"\n") == 1  # (one line: indented, the spaces grow as n²)
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # (json.loads recurses too)
    try:
        body = json.loads(as_json.stdout)
    finally:
        sys.setrecursionlimit(limit)
    span, depth = body["traces"][0]["spans"][0], 0
    while span["children"]:
        [span] = span["children"]
        depth += 1
        assert span["depth"] == depth
    assert (depth, span["name"]) == (1499, "step 1499")


def test_the_json_writer_writes_what_the_json_module_writes() -> None:
    values: list[Any] = [
        {"a": [], "b": {}, "c": [1, {"x": "é", "y": None, "z": [True, 1.5, -0.0]}], "d": 'q"\n'},
        [], {}, "s", [[[]]], [{"k": {"l": [1, [2, [3]]]}}],
    ]  # fmt: skip
    for value in values:
        assert traces.json_text(value) == json.dumps(value, indent=2, ensure_ascii=False)
        assert traces.json_text(value, None) == json.dumps(
            value, separators=(",", ":"), ensure_ascii=False
        )
