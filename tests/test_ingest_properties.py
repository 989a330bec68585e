"""The ingest path under hostile input: each line costs only itself (issue 8).

Regressions first (the real daemon, real sockets, `nc` / `socat` where a user would use
them), then property-based tests (Hypothesis, marked ``properties``): generated lines of
every kind (valid events of every type, events with a field type-confused, deleted or
added, nested, huge, empty, non-UTF-8, lone surrogates, non-objects, sync requests) go

- through :class:`~telemetryd.daemon.ingest.Feed` in-process, split at arbitrary points;
- through one real daemon per test function, one connection per example;
- into the spool of one real daemon per test function, one file per example.

The properties: every line is accepted, rejected with a reply naming its line, or (blank
lines and sync requests) neither; the counts add up to the lines sent; every valid
neighbour is journaled; the connection ends with a summary; everything journaled
satisfies the JSON Schema in ``schemas/``; the daemon logs no traceback.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from conftest import ROOT, Daemon, connect, ctl, read_replies, summary
from telemetryd import events as ev
from telemetryd import schema
from telemetryd.config import Ingest
from telemetryd.daemon.ingest import Feed, Ingestor

DaemonFactory = Callable[..., Daemon]

MAX_LINE = 8192  # the daemons here: huge lines stay cheap to generate
WAIT = 30.0
VALIDATOR = Draft202012Validator(
    json.loads((ROOT / "schemas" / schema.FILENAME).read_text(encoding="utf-8"))
)


def dumps(event: Any) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def custom(event_id: str, **fields: Any) -> bytes:
    return dumps({"type": "custom", "id": event_id, "name": "n", **fields}) + b"\n"


def nc(sock: str, payload: bytes) -> list[dict[str, Any]]:
    """Send ``payload`` with `nc -N` (half-close at EOF) and return the replies."""
    result = subprocess.run(
        ["nc", "-NU", sock], input=payload, capture_output=True, timeout=WAIT, check=False
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_schema_valid(events: list[dict[str, Any]]) -> None:
    for event in events:
        errors = [e.message for e in VALIDATOR.iter_errors(event)]
        assert not errors, (event, errors)


def assert_no_traceback(daemon: Daemon) -> None:
    log = daemon.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-4000:]


# -- regressions on the real daemon -------------------------------------------------------


POISON_HOOK = """
from datetime import timedelta

from telemetryd import events

_to_utc_ms = events.to_utc_ms


def to_utc_ms(ts):
    if ts.utcoffset() == timedelta(hours=5, minutes=17):
        raise RuntimeError("poisoned by the test")
    return _to_utc_ms(ts)


events.to_utc_ms = to_utc_ms
"""


def test_a_line_that_fails_unexpectedly_costs_only_itself(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """Finding 7 of issue 8, as a bug would cause it: processing one line raises. The line
    is rejected as `internal_error` naming it; its neighbours are journaled, the connection
    stays usable and ends with a summary. (A `sitecustomize` makes the daemon's conversion
    of times to UTC raise for one offset.)"""
    (tmp_path / "sitecustomize.py").write_text(POISON_HOOK)
    daemon = daemon_factory().start(env={"PYTHONPATH": str(tmp_path)})
    poison = {
        "type": "api_request",
        "id": "poison",
        "ts": "2026-01-01T00:00:00.000+05:17",
        "agent": {"model": "m"},
        "tokens": {"source": "actual", "input": 1, "output": 1},
    }
    with connect(daemon.events_socket) as sock:
        sock.sendall(
            custom("good-1") + dumps(poison) + b"\n" + custom("good-2") + b'{"op":"sync"}\n'
        )
        replies = sock.makefile("rb")
        rejected = json.loads(replies.readline())
        assert rejected["line"] == 2 and rejected["error"] == "internal_error"
        assert "RuntimeError: poisoned by the test" in rejected["message"]
        assert json.loads(replies.readline()) == summary(4, 2, rejected=1)
        sock.sendall(custom("good-3"))  # the same connection, still served
        sock.shutdown(socket.SHUT_WR)
        assert json.loads(replies.readline()) == summary(5, 3, rejected=1)
    assert [e["id"] for e in daemon.journal_events()] == ["good-1", "good-2", "good-3"]
    # Its id was not taken: once the bug is gone, the event goes in.
    assert daemon.stop() == 0
    daemon.start()
    assert nc(daemon.events_socket, dumps({**poison, "ts": "2026-01-01T00:00:00Z"}) + b"\n") == [
        summary(1, 1)
    ]
    assert daemon.log().count("line 2 could not be processed") == 1


def test_deeply_nested_lines_get_a_reply_naming_them(daemon_factory: DaemonFactory) -> None:
    """Issue 8: 200,000 levels of nesting (under a raised line limit) is rejected naming its
    line, without a RecursionError costing the connection; the neighbours are journaled."""
    daemon = daemon_factory(["--set", "ingest.max-line-bytes=2097152"]).start()
    depth = 200_000
    arrays = b'{"type":"custom","id":"deep-a","name":"d","attrs":{"a":' + b"[" * depth
    arrays += b"]" * depth + b"}}\n"
    objects = b'{"type":"custom","id":"deep-o","name":"d","attrs":' + b'{"a":' * depth
    objects += b"1" + b"}" * depth + b"}\n"
    bare = b"[" * depth + b"]" * depth + b"\n"
    payload = custom("before") + arrays + objects + bare + custom("after")
    replies = nc(daemon.events_socket, payload)
    assert [(r.get("line"), r.get("error")) for r in replies[:3]] == [
        (2, "invalid_json"),
        (3, "invalid_json"),
        (4, "invalid_event"),
    ]
    assert "nested too deeply" in replies[0]["message"]
    assert replies[3] == summary(5, 2, rejected=3)
    assert [e["id"] for e in daemon.journal_events()] == ["before", "after"]
    assert_no_traceback(daemon)


def test_lone_surrogates_and_oversized_numbers_are_named(running_daemon: Daemon) -> None:
    """Issue 8: a lone surrogate was "Input data was truncated"; a count of 2^63 - 1 was
    journaled with a total past the schema's maximum."""
    tokens = {"source": "actual", "input": 9223372036854775807, "output": 2}
    near = {"source": "actual", "input": 2**53 - 1, "output": 2}
    payload = (
        custom("s-1")
        + rb'{"type":"custom","id":"s-2","name":"\ud800"}' + b"\n"
        + dumps({"type": "api_request", "id": "s-3", "tokens": tokens}) + b"\n"
        + dumps({"type": "api_request", "id": "s-4", "tokens": near}) + b"\n"
        + dumps({"type": "skill", "id": "s-5", "name": "k", "duration_ms": 2**64}) + b"\n"
        + custom("s-6")
    )  # fmt: skip
    replies = nc(running_daemon.events_socket, payload)
    assert [(r.get("line"), r.get("path")) for r in replies[:4]] == [
        (2, "$.name"),
        (3, "$.tokens.input"),
        (4, "$.tokens"),
        (5, "$.duration_ms"),
    ]
    assert "lone UTF-16 surrogate" in replies[0]["message"]
    assert "9007199254740991" in replies[1]["message"]
    assert replies[4] == summary(6, 2, rejected=4)
    journaled = running_daemon.journal_events()
    assert [e["id"] for e in journaled] == ["s-1", "s-6"]
    assert_schema_valid(journaled)


AT_THE_LIMITS = [
    {
        "type": "api_request",
        "id": "max",
        "tokens": {"source": "actual", "input": ev.MAX_INT, "output": 0, "cache_read": 0},
        "cost_usd": ev.MAX_COST,  # (the most a cost may be: sums of them stay finite)
        "duration_ms": ev.MAX_INT,
    },
    {
        "type": "api_request",
        "id": "given-total",
        "tokens": {"source": "actual", "input": ev.MAX_INT, "output": ev.MAX_INT, "total": 1},
    },
    {"type": "metric", "id": "low", "name": "m", "kind": "gauge", "value": -1.7976931348623157e308,
     "ts": "0001-01-01T00:00:00Z"},
    {"type": "metric", "id": "high", "name": "m", "kind": "gauge", "value": 5e-324,
     "ts": "9999-12-31T23:59:59.999Z"},
    {"type": "run", "id": "run", "attempt_id": "a", "attempt_index": ev.MAX_INT,
     "retry_count": {"same_model": ev.MAX_INT, "reroute": ev.MAX_INT},
     "elapsed_ms": {"wall": ev.MAX_INT, "llm": ev.MAX_INT, "tools": 0},
     "tokens": {"source": "estimated", "estimated_total": ev.MAX_INT, "tokenizer": "t"},
     "outcome": "done"},
    {"type": "prompt", "id": "nul", "length": ev.MAX_INT, "session_id": "a\u0000b",
     "attrs": {"k\u0000": [1e308, -1e308, 2**100]}},
    {"type": "tool_result", "id": "tool", "tool": {"name": "x"}, "duration_ms": ev.MAX_INT},
    {"type": "session_end", "id": "end", "session_id": "s", "duration_ms": ev.MAX_INT},
]  # fmt: skip


def test_events_at_every_limit_load_into_the_store(running_daemon: Daemon) -> None:
    """Whatever is journaled loads into the DuckDB columns (BIGINT, DOUBLE, TIMESTAMP)
    and its views, sums of several counts included."""
    payload = b"".join(dumps(event) + b"\n" for event in AT_THE_LIMITS)
    assert nc(running_daemon.events_socket, payload) == [summary(8, 8)]
    assert_schema_valid(running_daemon.journal_events())

    def query(sql: str) -> list[dict[str, Any]]:
        result = ctl("query", "--format", "json", sql)
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    rows = query("select id, tokens_total, duration_ms, value from events order by id")
    assert {row["id"] for row in rows} == {event["id"] for event in AT_THE_LIMITS}
    by_id = {row["id"]: row for row in rows}
    assert by_id["max"]["tokens_total"] == by_id["max"]["duration_ms"] == ev.MAX_INT
    assert by_id["given-total"]["tokens_total"] == 1
    assert by_id["low"]["value"] == -1.7976931348623157e308
    for view in ("api_requests", "runs", "sessions", "tool_calls"):
        assert query(f"select count(*) as n from {view}")[0]["n"] >= 1, view
    (run,) = query("select retries from runs")
    assert run["retries"] == 2 * ev.MAX_INT
    assert_no_traceback(running_daemon)


# -- generated lines ----------------------------------------------------------------------

ID = "@ID@"  # replaced by a unique id per line and example (Hypothesis replays examples)
TEXT = st.text(max_size=12)
NAME = st.text(min_size=1, max_size=12)
COUNT = st.integers(0, 10**12)
TS = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
    st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)),
    st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
ATTRS = st.dictionaries(
    TEXT,
    st.one_of(SCALAR, st.lists(SCALAR, max_size=3), st.dictionaries(TEXT, SCALAR, max_size=3)),
    max_size=4,
)
ANY_JSON = st.recursive(
    st.one_of(SCALAR, st.integers(-(2**80), 2**80)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)
TOKENS = st.one_of(
    st.just({"source": "unknown"}),
    st.fixed_dictionaries(
        {"source": st.just("actual"), "input": COUNT, "output": COUNT},
        optional={"cache_read": COUNT, "cache_creation": COUNT, "total": COUNT},
    ),
    st.fixed_dictionaries(
        {"source": st.just("estimated"), "estimated_total": COUNT, "tokenizer": NAME}
    ),
)
MODEL = st.one_of(st.sampled_from(["claude-sonnet-4-5", "gpt-5", "gemini-2.5-pro"]), TEXT)
ENVELOPE: dict[str, st.SearchStrategy[Any]] = {
    "ts": TS,
    "source": TEXT,
    "session_id": TEXT,
    "trace_id": TEXT,
    "agent": st.fixed_dictionaries({}, optional={"model": MODEL, "provider": TEXT}),
    "task": st.fixed_dictionaries({}, optional={"id": TEXT, "attempt_index": COUNT}),
    # Pricing hints, of the right type and not.
    "attrs": ATTRS
    | st.fixed_dictionaries({"cache_creation_1h": ANY_JSON, "speed": ANY_JSON | st.just("fast")}),
}
TOOL = st.fixed_dictionaries({"name": NAME}, optional={"use_id": TEXT, "success": st.booleans()})
SESSION = {"cwd": TEXT, "reason": TEXT, "duration_ms": COUNT, "success": st.booleans()}
ACTIVATION = {"duration_ms": COUNT, "tokens": TOKENS, "success": st.booleans()}
TYPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "session_start": ({}, SESSION),
    "session_end": ({}, SESSION),
    "agent_start": ({}, ACTIVATION),
    "agent_stop": ({}, ACTIVATION),
    "api_request": (
        {"tokens": TOKENS},
        {"cost_usd": st.floats(0, 1e6), "duration_ms": COUNT, "error": TEXT},
    ),
    "tool_call": ({"tool": TOOL}, {"duration_ms": COUNT}),
    "tool_result": ({"tool": TOOL}, {"duration_ms": COUNT}),
    "skill": ({"name": NAME}, {"success": st.booleans(), "duration_ms": COUNT}),
    "error": ({"message": TEXT}, {"category": TEXT, "confidence": st.floats(0, 1)}),
    "run": (
        {
            "attempt_id": TEXT,
            "attempt_index": COUNT,
            "retry_count": st.fixed_dictionaries({}, optional={"same_model": COUNT}),
            "elapsed_ms": st.fixed_dictionaries({"wall": COUNT}, optional={"llm": COUNT}),
            "tokens": TOKENS,
            "outcome": st.sampled_from(["done", "blocked", "redo"]),
        },
        {"outcome_reason": TEXT},
    ),
    "log": (
        {
            "level": st.sampled_from(["trace", "debug", "info", "warning", "error"]),
            "component": TEXT,
            "event": TEXT,
        },
        {"fields": ATTRS},
    ),
    "metric": (
        {
            "name": NAME,
            "value": st.floats(allow_nan=False, allow_infinity=False),
            "kind": st.sampled_from(["counter", "gauge", "histogram"]),
        },
        {"unit": TEXT},
    ),
    "alert": (
        {"severity": st.sampled_from(["info", "critical"]), "kind": TEXT, "message": TEXT},
        {},
    ),
    "prompt": ({}, {"length": COUNT}),
    "custom": ({"name": NAME}, {}),
}


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    type_ = draw(st.sampled_from(sorted(TYPES)))
    required, optional = TYPES[type_]
    fields = draw(st.fixed_dictionaries(required, optional={**ENVELOPE, **optional}))
    return {"type": type_, "id": ID, **fields}


# An api_request with pricing hints of any type in its free-form attrs (finding 7 of
# issue 8): always valid, whatever the hints hold (the store prices it: test_pricing.py).
PRICED = st.fixed_dictionaries(
    {
        "type": st.just("api_request"),
        "id": st.just(ID),
        "agent": st.fixed_dictionaries(
            {"model": st.sampled_from(["claude-sonnet-4-5", "claude-opus-4-1", "gpt-5"])}
        ),
        "tokens": st.fixed_dictionaries(
            {"source": st.just("actual"), "input": COUNT, "output": COUNT},
            optional={"cache_creation": COUNT, "cache_read": COUNT},
        ),
        "attrs": st.fixed_dictionaries(
            {},
            optional={
                "cache_creation_1h": st.one_of(
                    COUNT, st.floats(allow_nan=False, allow_infinity=False), ANY_JSON
                ),
                "speed": st.one_of(st.just("fast"), ANY_JSON),
            },
        ),
    }
)


def _slots(event: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Every (object, key) of ``event``, nested objects included."""
    stack = [event]
    while stack:
        current = stack.pop()
        for key, value in current.items():
            yield current, key
            if isinstance(value, dict):
                stack.append(value)


CONFUSION = st.one_of(
    ANY_JSON,
    st.integers(2**53, 2**70),
    st.integers(max_value=-1),
    st.floats(),
    st.text(max_size=40),
    st.integers(2, 40).map(lambda depth: json.loads("[" * depth + "]" * depth)),
)


@st.composite
def confused_events(draw: st.DrawFn) -> bytes:
    """A valid event with one field replaced by a value of another kind, deleted, or added."""
    event = copy.deepcopy(draw(valid_events()))
    slots = list(_slots(event))
    target, key = slots[draw(st.integers(0, len(slots) - 1))]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        target[key] = draw(CONFUSION)
    elif action == "delete":
        del target[key]
    else:
        target[draw(NAME)] = draw(CONFUSION)
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode()


@st.composite
def raw_lines(draw: st.DrawFn) -> bytes:
    """Lines broken below the level of fields: bytes, escapes, nesting, size."""
    base = dumps(draw(valid_events()))
    kind = draw(
        st.sampled_from(
            ["utf8", "surrogate", "truncated", "deep", "object", "huge", "bare", "bytes", "type"]
        )
    )
    if kind == "utf8":
        at = draw(st.integers(0, len(base)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
        return base[:at] + bad + base[at:]
    if kind == "surrogate":
        escape = draw(st.sampled_from([rb"\ud800", rb"\udfff", rb"\uD83D", rb"\ud800\u0041"]))
        return b'{"type":"custom","id":"' + ID.encode() + b'","name":"a' + escape + b'b"}'
    if kind == "truncated":
        return base[: draw(st.integers(1, len(base) - 1))]
    if kind == "deep":
        depth = draw(st.sampled_from([9, 64, 999, 1001, 3000]))
        head = b'{"type":"custom","id":"' + ID.encode() + b'","name":"d","attrs":{"a":'
        return head + b"[" * depth + b"]" * depth + b"}}"
    if kind == "object":
        depth = draw(st.sampled_from([9, 500, 1200]))
        head = b'{"type":"custom","id":"' + ID.encode() + b'","name":"d","attrs":'
        return head + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    if kind == "huge":
        return (
            b'{"type":"custom","name":"' + b"x" * draw(st.integers(MAX_LINE, 3 * MAX_LINE)) + b'"}'
        )
    if kind == "bare":
        return draw(st.sampled_from([b"[1,2]", b"5", b'"s"', b"null", b"true", b"{}", b"[]"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64)).replace(b"\n", b"")
    return b'{"type":' + dumps(draw(ANY_JSON)) + b"}"


@dataclass
class Line:
    kind: str  # valid, repeat, other, blank, sync
    data: bytes


LINES = st.one_of(
    valid_events().map(lambda event: Line("valid", dumps(event))),
    PRICED.map(lambda event: Line("valid", dumps(event))),
    st.just(Line("repeat", b"")),  # the last valid line again: a duplicate
    confused_events().map(lambda data: Line("other", data)),
    raw_lines().map(lambda data: Line("other", data)),
    st.sampled_from([b"", b"   ", b"\r", b"\t"]).map(lambda data: Line("blank", data)),
    st.sampled_from([b'{"op":"sync"}', b'{ "op" : "sync" }\r']).map(
        lambda data: Line("sync", data)
    ),
)

_examples = itertools.count()


@dataclass
class Payload:
    """One example's lines, with unique ids filled in."""

    lines: list[bytes]
    kinds: list[str]
    ids: list[str | None]  # the id filled into each line, if it has one
    valid: set[str]  # the ids that must be journaled

    @property
    def data(self) -> bytes:
        return b"".join(line + b"\n" for line in self.lines)

    def silent(self) -> int:
        """Lines that get neither a reply nor a count: blank lines and sync requests."""
        return sum(
            kind == "sync" or not line.strip()
            for kind, line in zip(self.kinds, self.lines, strict=True)
        )


def payload(generated: list[Line]) -> Payload:
    example = next(_examples)
    out = Payload([], [], [], set())
    last_valid: bytes | None = None
    for number, line in enumerate(generated, 1):
        event_id = f"{os.getpid()}-{example}-{number}"
        data, kind, filled = line.data, line.kind, None
        if kind == "repeat":
            if last_valid is None:
                continue
            data = last_valid
        elif ID.encode() in data:
            data, filled = data.replace(ID.encode(), event_id.encode()), event_id
        if kind == "valid":
            out.valid.add(event_id)
            last_valid = data
        out.lines.append(data)
        out.kinds.append(kind)
        out.ids.append(filled)
    return out


class JournalReader:
    """The events journaled since the last call (complete lines only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[str, int] = {}

    def new(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.directory.glob("*.jsonl")):
            start = self.offsets.get(path.name, 0)
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
            data = data[: data.rfind(b"\n") + 1]
            self.offsets[path.name] = start + len(data)
            out.extend(json.loads(line) for line in data.splitlines())
        return out


def check_journaled(example: Payload, journaled: list[dict[str, Any]]) -> set[str]:
    """Every valid line's event is journaled, once; everything journaled is schema-valid."""
    assert_schema_valid(journaled)
    ids = [event["id"] for event in journaled]
    assert example.valid <= set(ids), example.valid - set(ids)
    assert all(ids.count(event_id) == 1 for event_id in example.valid)
    return set(ids)


# -- in-process: Feed ---------------------------------------------------------------------


def feed_all(feed: Feed, chunks: list[bytes]) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Run ``chunks`` through ``feed`` as a connection would: (events, replies)."""
    encoded: list[bytes] = []
    replies: list[dict[str, Any]] = []

    def take(result: tuple[Any, list[bytes]]) -> None:
        batch, rejections = result
        if batch is not None:
            encoded.extend(batch.data.splitlines())
        replies.extend(json.loads(reply) for reply in rejections)

    for chunk in chunks:
        take(feed.feed(chunk))
        while feed.sync_requested:
            replies.append(json.loads(feed.summary()))
            take(feed.resume())
    take(feed.end())
    replies.append(json.loads(feed.summary()))
    return encoded, replies


def check_replies(example: Payload, replies: list[dict[str, Any]]) -> set[int]:
    """Replies name lines that exist and may be rejected, once each; the counts add up; a
    summary comes last. Returns the rejected line numbers."""
    final = replies[-1]
    assert final.keys() == summary(0, 0).keys(), replies
    rejected = [reply["line"] for reply in replies if "line" in reply]
    # A line may be the producer's fault, never the daemon's.
    assert not [reply for reply in replies if reply.get("error") == ev.INTERNAL_ERROR], replies
    assert all(
        set(reply) <= {"line", "error", "message", "path"} for reply in replies if "line" in reply
    )
    assert len(rejected) == len(set(rejected)) == final["rejected"]
    for number in rejected:
        assert 1 <= number <= len(example.lines)
        assert example.kinds[number - 1] in ("other", "repeat"), (number, example.lines[number - 1])
    assert final["lines"] == len(example.lines)
    counted = final["accepted"] + final["rejected"] + final["duplicates"]
    assert counted + example.silent() == len(example.lines), (final, example.lines)
    return set(rejected)


@pytest.mark.properties
@given(st.lists(LINES, min_size=1, max_size=25), st.lists(st.integers(1, 97), max_size=12))
def test_feed_accounts_for_every_line_however_the_bytes_are_split(
    generated: list[Line], cuts: list[int]
) -> None:
    example = payload(generated)
    data = example.data
    whole, whole_replies = feed_all(Feed(Ingestor(Ingest(max_line_bytes=MAX_LINE))), [data])
    chunks, at = [], 0
    for size in itertools.cycle(cuts or [len(data) or 1]):
        if at >= len(data):
            break
        chunks.append(data[at : at + size])
        at += size
    split, split_replies = feed_all(Feed(Ingestor(Ingest(max_line_bytes=MAX_LINE))), chunks)

    rejected = check_replies(example, whole_replies)
    # The same lines rejected for the same reasons, the same events accepted.
    assert [(r.get("line"), r.get("error")) for r in split_replies if "line" in r] == [
        (r.get("line"), r.get("error")) for r in whole_replies if "line" in r
    ]
    events = [json.loads(line) for line in whole]
    assert len(split) == len(whole)
    for number in rejected:
        assert example.ids[number - 1] not in {event["id"] for event in events}
    check_journaled(example, events)


def test_an_event_that_cannot_be_encoded_costs_only_its_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The encoder never fails on a decoded event; if it did, only that line would go."""

    class Encoder:
        def encode_lines(self, events: list[Any]) -> bytes:
            raise TypeError("the batch fails")

        def encode(self, event: Any) -> bytes:
            if event.id == "bad":
                raise TypeError("this one fails")
            return real.encode(event)

    real = ev.ENCODER
    monkeypatch.setattr(ev, "ENCODER", Encoder())
    ingestor = Ingestor(Ingest())
    feed = Feed(ingestor)
    batch, replies = feed.feed(custom("good-1") + custom("bad") + b'{"type":"custom","name":"x"}\n')
    assert batch is not None and batch.count == 2
    assert [json.loads(line)["name"] for line in batch.data.splitlines()] == ["n", "x"]
    (reply,) = [json.loads(r) for r in replies]
    assert (reply["line"], reply["error"]) == (2, "internal_error")
    assert ingestor.dedup.get("bad") is None and ingestor.dedup.get("good-1") is batch
    assert len(ingestor.dedup) == 2  # good-1 and the assigned id
    assert json.loads(feed.summary()) == summary(3, 2, rejected=1)


# -- the real daemon: one per test function, one connection per example --------------------


@dataclass
class Live:
    """A real daemon for the examples of one test function, and what it journaled so far."""

    daemon: Daemon
    journal: JournalReader


def run_live(daemon_factory: DaemonFactory) -> Iterator[Live]:
    """The body of a ``live`` fixture (test_spool.py has one too)."""
    daemon = daemon_factory(
        ["--set", f"ingest.max-line-bytes={MAX_LINE}", "--set", "spool.scan-interval=0.1"]
    ).start()
    yield Live(daemon, JournalReader(daemon.journal_dir))
    assert daemon.stop() == 0
    assert_no_traceback(daemon)


@pytest.fixture
def live(daemon_factory: DaemonFactory) -> Iterator[Live]:
    yield from run_live(daemon_factory)


@pytest.mark.properties
@given(generated=st.lists(LINES, min_size=1, max_size=25))
def test_every_line_over_the_socket_is_answered_and_every_good_one_journaled(
    live: Live, generated: list[Line]
) -> None:
    example = payload(generated)
    with connect(live.daemon.events_socket, timeout=WAIT) as sock:
        sock.sendall(example.data)
        sock.shutdown(socket.SHUT_WR)
        replies = read_replies(sock)
    rejected = check_replies(example, replies)
    journaled = check_journaled(example, live.journal.new())
    assert replies[-1]["accepted"] == len(journaled)
    for number in rejected:
        assert example.ids[number - 1] not in journaled
    assert_no_traceback(live.daemon)
