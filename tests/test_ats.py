"""Agentic telemetry spec (ATS) tool metadata: found in tool inputs, checked against the
spec (its own JSON Schemas, run by jsonschema, are the reference), kept as attrs.ats of
tool events, flagged when it does not follow the spec, and read back through the views
and ab_results(). The spec's files are in tests/fixtures/ats/ (README.md there)."""

from __future__ import annotations

import copy
import http.client
import json
import random
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from conftest import TELEMETRYCTL, Daemon, ctl, exchange
from telemetryd import events, schema
from telemetryd.adapters import ats
from telemetryd.adapters.otel import mapping
from telemetryd.adapters.otel.records import LogRecord, Scope, Span
from telemetryd.store.database import Store

FIXTURES = Path(__file__).parent / "fixtures" / "ats"
EXAMPLES = sorted((FIXTURES / "examples").glob("tier*.json"))
PUBLISHED = Path(__file__).resolve().parent.parent / "schemas" / schema.ATS_FILENAME
# The tool each example is written for (its file name and caption name it).
EXAMPLE_TOOLS = {
    "tier1-ask-user-question.json": "AskUserQuestion",
    "tier2-bash.json": "Bash",
    "tier3-read.json": "Read",
}
TIER1_TOOLS = ("AskUserQuestion", "Task", "Skill")  # tools/*.schema.json require koth, decision
LIMITS = {"max_attrs_bytes": 16 * 1024, "max_attrs_depth": 8}  # the daemon's defaults
FORBIDDEN_ON_HOOK_PATH = ("msgspec", "click", "duckdb", "asyncio", "anyio", "re", "json")


def example(path: Path) -> dict[str, Any]:
    """An example file's metadata: the file without its `_comment` caption."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("_comment")
    return dict(data)


# -- the reference: the spec's own JSON Schemas -------------------------------------------


def _inline(node: Any, base: Path) -> Any:
    """``node`` with each ``$ref`` to another file of the spec replaced by that file."""
    if isinstance(node, list):
        return [_inline(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = (base / node["$ref"]).resolve()
        loaded = json.loads(target.read_text(encoding="utf-8"))
        loaded.pop("$id", None)
        loaded.pop("$schema", None)
        return _inline(loaded, target.parent)
    return {key: _inline(value, base) for key, value in node.items()}


RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def rfc3339(value: object) -> bool:
    """RFC 3339 date-time, by its grammar and the calendar (independent of adapters/ats.py)."""
    if not isinstance(value, str):
        return True
    match = RFC3339.fullmatch(value)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(match[n]) for n in range(1, 7))
    if match[9] is not None and (int(match[9]) > 23 or int(match[10]) > 59):
        return False
    try:
        datetime(year, month, day)
    except ValueError:
        return False
    return hour <= 23 and minute <= 59 and second <= 60


def reference() -> Draft202012Validator:
    base = FIXTURES / "schemas" / "base" / "base-metadata.schema.json"
    document = _inline(json.loads(base.read_text(encoding="utf-8")), base.parent)
    checker = FormatChecker(["uuid"])
    checker.checks("date-time")(rfc3339)
    Draft202012Validator.check_schema(document)
    return Draft202012Validator(document, format_checker=checker)


REFERENCE = reference()


def _where(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def reference_errors(meta: Any, tool: str) -> list[str]:
    """Where ``meta`` breaks the spec: its JSON Schemas, and the rules its documents state
    in words (the tool schemas' required blocks, docs/03-koth-oracle.md's conditional
    fields, docs/02-ab-testing.md's fields required in an active experiment)."""
    found = [_where(e.absolute_path) for e in REFERENCE.iter_errors(meta)]
    if isinstance(meta, dict):
        if tool in TIER1_TOOLS:
            found += [key for key in ("koth", "decision") if key not in meta]
        koth = meta.get("koth")
        if isinstance(koth, dict) and koth.get("oracle_consulted") is True:
            for key in ("oracle_recommended_agent", "oracle_recommendation_confidence"):
                if koth.get(key) is None:
                    found.append(f"koth.{key}")
        experiment = meta.get("experiment")
        if isinstance(experiment, dict):
            ids = [experiment.get(k) is not None for k in ("experiment_id", "variant_id")]
            if ids[0] != ids[1]:
                found.append("experiment")
    return found


def is_legacy(meta: Any) -> bool:
    """A pre-spec caller's {"source": "..."} (docs/05-backward-compat.md)."""
    return isinstance(meta, dict) and list(meta) == ["source"] and isinstance(meta["source"], str)


PUBLISHED_SCHEMA = Draft202012Validator(
    json.loads(PUBLISHED.read_text(encoding="utf-8")),
    format_checker=FormatChecker(["uuid"]),
)


def checked(meta: Any, tool: str) -> dict[str, Any]:
    """ats.check, with what must hold of every result: it agrees with the reference,
    names each reference error's place, follows the published schema, and fits an
    event's attrs under the daemon's default limits."""
    found = ats.check(meta, tool)
    expected = reference_errors(meta, tool)
    assert found["valid"] is (not expected or is_legacy(meta)), (meta, expected, found)
    if not found["valid"] and "more_errors" not in found:
        for where in expected:
            assert any(error.startswith(where) for error in found["errors"]), (where, found)
    assert list(PUBLISHED_SCHEMA.iter_errors(found)) == [], found
    event = {"type": "tool_call", "tool": {"name": tool or "x"}, "attrs": {"ats": found}}
    line = json.dumps(event).encode()
    assert events.check_producer_rules(events.decode(line), line, **LIMITS) is None
    return found


# -- checking, without a daemon ------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_tier_example_is_checked_as_the_spec_schemas_check_it(path: Path) -> None:
    meta = example(path)
    tool = EXAMPLE_TOOLS[path.name]
    found = checked(meta, tool)
    assert found["tier"] == int(path.name[4])
    assert found["metadata"] == meta  # every key is the spec's: all of it kept as sent
    assert found["at"] == "metadata" and found["has_legacy_compat"] is False


def test_the_tier2_example_breaks_the_koth_domain_enum() -> None:
    """The spec's Bash example uses a koth_domain its koth schema does not list: kept,
    flagged with the reason (tests/fixtures/ats/README.md)."""
    meta = example(FIXTURES / "examples" / "tier2-bash.json")
    found = checked(meta, "Bash")
    assert found["valid"] is False
    assert len(found["errors"]) == 1 and found["errors"][0].startswith("koth.koth_domain: ")
    assert meta["koth"]["koth_domain"] in found["errors"][0]
    assert found["metadata"]["koth"]["koth_domain"] == meta["koth"]["koth_domain"]


# Values to put where the examples have theirs: the right types and wrong ones, patterns
# met and missed, enum members and strangers, formats good and bad.
VALUE_LIST: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    0.5,
    1.5,
    -1,
    "",
    "x",
    "skill:a:b",
    "robot:x",
    "main:",
    "agent:a\nb",
    "123e4567-e89b-12d3-a456-426614174000",
    "123e4567e89b12d3a456426614174000",
    "2026-02-19T14:30:22.123456Z",
    "2026-02-30T00:00:00Z",
    "2026-02-19 14:30:22Z",
    "2026-12-31T23:59:60+01:00",
    "dec_20260219_143022_123456",
    "dec_2026219_143022_123456",
    "a3f9b2c1",
    "A3F9B2C1",
    "1.2.0",
    "1.2",
    "v1.2.0",
    "editing",
    "devops",
    "win",
    "pending",
    "treatment",
    "oracle_guided",
    "agent",
    "hook",
    [],
    ["a", "b"],
    [1],
    {},
    {"caller_type": "main", "caller_name": "orchestrator"},
    {"caller_type": "bot", "caller_name": 3},
    [{"caller_type": "agent", "caller_name": "x", "agent_id": None}],
    [{"caller_type": "agent"}, "x"],
    {"schema_version": "1.0.0"},
    {"tool_name": "T", "old_schema_version": "0.9.0", "migration_date": "2026-02-19T10:30:00Z"},
]
VALUES = st.sampled_from(VALUE_LIST)
TOOLS = st.sampled_from(["AskUserQuestion", "Task", "Bash", "Read", "TaskCreate", "mcp__x__y"])


def _places(meta: dict[str, Any]) -> list[tuple[str, ...]]:
    out = []
    for key, value in meta.items():
        out.append((key,))
        if isinstance(value, dict):
            out += [(key, inner) for inner in value]
    return out


@st.composite
def variations(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """An example with a few changes: a value replaced, a key removed or added."""
    meta = copy.deepcopy(example(draw(st.sampled_from(EXAMPLES))))
    meta.setdefault(
        "_compat",
        {"schema_version": "1.0.0", "legacy_source": None, "migrated_from": None},
    )
    for _ in range(draw(st.integers(0, 3))):
        places = _places(meta)
        place = draw(st.sampled_from(places)) if places else ("source",)
        action = draw(st.sampled_from(["set", "set", "drop", "add"]))
        target = meta
        for key in place[:-1]:
            target = target[key]
        if action == "set":
            target[place[-1]] = draw(VALUES)
        elif action == "drop":
            target.pop(place[-1], None)
        elif isinstance(target, dict):
            target[draw(st.sampled_from(["extra", "experiment", "koth", "is_legacy_compat"]))] = (
                draw(VALUES)
            )
    return meta, draw(TOOLS)


def test_every_value_at_every_place_is_checked_as_the_spec_schemas_check_it() -> None:
    """Each value of VALUES at each place of the full example (with a _compat block and a
    caller chain): one change at a time, every combination."""
    full = example(FIXTURES / "examples" / "tier1-ask-user-question.json")
    full["provenance"]["caller_chain"] = [{"caller_type": "main", "caller_name": "o"}]
    full["_compat"] = {
        "schema_version": "1.0.0",
        "legacy_source": "remember",
        "migrated_from": {
            "tool_name": "AskUserQuestion",
            "old_schema_version": "0.9.0",
            "migration_date": "2026-02-19T10:30:00Z",
        },
        "is_legacy_compat": False,
    }
    places: list[tuple[Any, ...]] = [
        *_places(full),
        ("provenance", "caller_chain", 0, "caller_type"),
        ("provenance", "caller_chain", 0, "agent_id"),
        ("_compat", "migrated_from", "old_schema_version"),
        ("_compat", "migrated_from", "migration_date"),
    ]
    verdicts = set()
    for place in places:
        for value in VALUE_LIST:
            meta = copy.deepcopy(full)
            target: Any = meta
            for key in place[:-1]:
                target = target[key]
            target[place[-1]] = copy.deepcopy(value)
            for tool in ("AskUserQuestion", "Bash"):
                verdicts.add(checked(meta, tool)["valid"])
    assert verdicts == {True, False}


@given(variations())
def test_checks_agree_with_the_spec_schemas(case: tuple[dict[str, Any], str]) -> None:
    meta, tool = case
    found = checked(meta, tool)
    kept = json.dumps(found.get("metadata"))
    # a key the spec does not define is named, its value never kept
    assert '"extra"' not in kept
    if "extra" in meta:
        assert any(e.startswith("extra: ") for e in found["errors"])


@given(st.sampled_from(EXAMPLES), st.sampled_from(["not an object", 7, ["a"]]))
def test_metadata_that_is_no_object_is_flagged(path: Path, meta: Any) -> None:
    found = ats.from_tool_input(EXAMPLE_TOOLS[path.name], {"metadata": meta})
    assert found is not None and found["valid"] is False
    assert found["errors"] == [f"metadata is {ats._kind(meta)}, not an object"]
    assert "metadata" not in found


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-19T14:30:22.123456Z",
        "2026-02-19t14:30:22z",
        "2024-02-29T00:00:00+05:30",
        "2023-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-02-19T24:00:00Z",
        "2026-02-19T23:59:60Z",
        "2026-02-19T23:59:59+24:00",
        "2026-02-19T23:59:59",
        "2026-02-19T23:59:59.Z",
        "2026-02-19T23:59:59.5-03:00",
        "26-02-19T23:59:59Z",
        "2026-2-19T23:59:59Z",
        "2026-02-19T23:59:5Z",
        "2026-02-19T23:59:59+0300",
        "２０２６-02-19T23:59:59Z",
    ],
)
def test_dates_are_checked_as_rfc_3339_says(text: str) -> None:
    assert ats.is_datetime(text) is rfc3339(text)


def test_what_is_not_ats_metadata_is_left_alone() -> None:
    # TaskCreate's own user data, without _dgm
    assert ats.from_tool_input("TaskCreate", {"metadata": {"ticket": "T-1"}}) is None
    # a tool of another kind with a `metadata` parameter of its own
    assert ats.from_tool_input("mcp__db__insert", {"metadata": {"source": "web"}}) is None
    assert ats.from_tool_input("Bash", {"command": "ls"}) is None
    assert ats.from_tool_input("Bash", "ls") is None
    assert ats.from_arguments("Bash", '{"command": "ls"}') is None
    assert ats.from_arguments("Bash", '{"metadata": {"source": "ma') is None  # cut short
    # ...but the same tool with the spec's blocks is
    meta = example(FIXTURES / "examples" / "tier3-read.json")
    found = ats.from_tool_input("mcp__db__insert", {"metadata": meta})
    assert found is not None and found["valid"] and found["tier"] == 3
    assert ats.from_arguments("mcp__db__insert", json.dumps({"metadata": meta})) == found


def test_legacy_source_alone_is_the_spec_s_legacy_shape() -> None:
    found = checked({"source": "remember"}, "AskUserQuestion")
    assert found == {
        "v": 1,
        "at": "metadata",
        "tier": 3,
        "valid": True,
        "has_legacy_compat": True,
        "metadata": {"source": "remember"},
    }
    meta = example(FIXTURES / "examples" / "tier3-read.json")
    meta["_compat"] = {"schema_version": "1.0.0", "is_legacy_compat": True}
    assert checked(meta, "Read")["has_legacy_compat"] is True


def test_task_create_keeps_user_keys_out() -> None:
    dgm = example(FIXTURES / "examples" / "tier3-read.json")
    tool_input = {
        "subject": "s",
        "metadata": {"_dgm": dgm, "custom_field": "user secret", "another_field": 42},
    }
    found = ats.from_tool_input("TaskCreate", tool_input)
    assert found is not None
    assert found["at"] == "metadata._dgm" and found["valid"] and found["metadata"] == dgm
    assert "user secret" not in json.dumps(found) and "another_field" not in json.dumps(found)


def test_big_metadata_is_cut_to_fit_and_still_flagged() -> None:
    meta = example(FIXTURES / "examples" / "tier1-ask-user-question.json")
    meta["koth"]["agents_in_options"] = [f"agent-{n}-" + "x" * 300 for n in range(500)]
    meta["provenance"]["caller_chain"] = [
        {"caller_type": "agent", "caller_name": "y" * 5000, "agent_id": None, "junk": "z" * 9000}
    ] * 200
    meta["nested"] = {"a": {"b": {"c": {"d": {"e": ["deep"] * 10000}}}}}
    found = checked(meta, "AskUserQuestion")
    assert found["truncated"] is True and found["valid"] is False
    assert len(json.dumps(found).encode()) <= ats.MAX_BYTES
    assert found["metadata"]["decision"] == meta["decision"]  # short values whole
    assert "zzz" not in json.dumps(found)  # an unknown field's value is never kept
    # the unknown key `nested`, and `junk` in each of the 200 callers
    assert found["more_errors"] == 1 + 200 - ats.MAX_ERRORS


# -- through a real daemon -------------------------------------------------------------------


def query(sql: str) -> list[dict[str, Any]]:
    result = ctl("query", "--format", "json", sql)
    assert result.returncode == 0, result.stderr.decode()
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def payloads(
    session: str, use_id: str, tool: str, tool_input: dict[str, Any], *, failed: bool = False
) -> list[dict[str, Any]]:
    """A PreToolUse and the PostToolUse (or PostToolUseFailure) of one tool use."""
    common = {
        "session_id": session,
        "transcript_path": "/nonexistent/t.jsonl",
        "cwd": "/work/project",
        "tool_name": tool,
        "tool_use_id": use_id,
        "tool_input": tool_input,
    }
    pre = {"hook_event_name": "PreToolUse", **common}
    if failed:
        post = {"hook_event_name": "PostToolUseFailure", "error": "exit status 1", **common}
    else:
        post = {"hook_event_name": "PostToolUse", "tool_response": {"ok": 1}, **common}
    post["duration_ms"] = 250
    return [pre, post]


class Http:
    """Claude Code's `http` hooks: a POST per payload to the daemon's hook endpoint."""

    def __init__(self, daemon: Daemon) -> None:
        host, port = daemon.http_address().rsplit(":", 1)
        self.host, self.port = host, int(port)
        token = daemon.home / "http-token"
        self.token = token.read_text().strip() if token.exists() else ""

    def post(self, agent: str, payload: dict[str, Any]) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(
                "POST",
                f"/v1/hooks/{agent}",
                body=json.dumps(payload).encode(),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {self.token}",
                },
            )
            response = conn.getresponse()
            assert response.status == 200, response.read()
        finally:
            conn.close()


ROUTES = (("command", "claude-code"), ("command", "codex"), ("http", "claude-code"))


def deliver(route: tuple[str, str], payload: dict[str, Any], http_hooks: Http) -> None:
    kind, agent = route
    if kind == "http":
        http_hooks.post(agent, payload)
        return
    result = ctl("hook", agent, input=json.dumps(payload).encode())
    assert result.returncode == 0 and result.stdout == b""
    assert result.stderr == b"", result.stderr.decode()


def by_use(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["tool_use_id"]: row for row in rows}


def test_tier_examples_through_the_hooks_give_their_rows(running_daemon: Daemon) -> None:
    """Each example as a tool's metadata, through `telemetryctl hook` (Claude Code and
    Codex) and the HTTP hook endpoint, PreToolUse then PostToolUse: one row each in the
    views, with the example's values."""
    http_hooks = Http(running_daemon)
    sent: dict[str, tuple[Path, tuple[str, str], bool]] = {}
    for n, route in enumerate(ROUTES):
        for path in EXAMPLES:
            use_id = f"toolu_{n}_{path.stem}"
            failed = path.name.startswith("tier2")  # a failed Bash: outcome 'loss'
            tool_input = {"command": "git push", "metadata": example(path)}
            for payload in payloads(
                f"s-{route[0]}-{route[1]}",
                use_id,
                EXAMPLE_TOOLS[path.name],
                tool_input,
                failed=failed,
            ):
                deliver(route, payload, http_hooks)
            sent[use_id] = (path, route, failed)

    uses = by_use(query("select * from ats_tool_uses"))
    provenance = by_use(query("select * from ats_provenance"))
    experiments = by_use(query("select * from ats_experiments"))
    koth = by_use(query("select * from ats_koth"))
    decisions = by_use(query("select * from ats_decisions"))
    assert sorted(uses) == sorted(sent) == sorted(provenance)
    for use_id, (path, route, failed) in sent.items():
        meta = example(path)
        tool = EXAMPLE_TOOLS[path.name]
        use = uses[use_id]
        problems = reference_errors(meta, tool)
        assert use["ats_valid"] is (not problems), (use_id, use["ats_errors"])
        assert len(use["ats_errors"]) == len(problems)
        assert use["tier"] == int(path.name[4]) and use["tool_name"] == tool
        assert use["session_id"] == f"s-{route[0]}-{route[1]}"
        assert use["success"] is (not failed) and use["duration_ms"] == 250
        assert json.loads(use["metadata"]) == meta
        assert use["ats_source"] == meta["source"] and use["ats_at"] == "metadata"

        prov = provenance[use_id]
        p = meta["provenance"]
        assert prov["caller_type"] == p["caller_type"]
        assert prov["caller_name"] == p["caller_name"]
        assert prov["agent_id"] == p.get("agent_id")
        assert prov["provenance_session_id"] == p["session_id"]
        assert prov["project_path_hash"] == p.get("project_path_hash")
        assert prov["timestamp_utc"] == p.get("timestamp_utc")
        assert prov["chain_depth"] == len(p.get("caller_chain", []))
        links = [f"{c['caller_type']}:{c['caller_name']}" for c in p.get("caller_chain", [])]
        path_text = " > ".join([*links, f"{p['caller_type']}:{p['caller_name']}", f"tool:{tool}"])
        assert prov["chain_path"] == path_text

        outcome = "loss" if failed else "win"
        if "experiment" in meta:
            x = experiments[use_id]
            for key, value in meta["experiment"].items():
                assert x[key] == value, key
            assert x["outcome_signal"] == outcome
        else:
            assert use_id not in experiments
        if "koth" in meta:
            k = koth[use_id]
            assert k["oracle_consulted"] == meta["koth"]["oracle_consulted"]
            assert k["recommended_agent"] == meta["koth"]["oracle_recommended_agent"]
            assert k["confidence"] == meta["koth"]["oracle_recommendation_confidence"]
            assert k["agents_in_options"] == meta["koth"]["agents_in_options"]
            assert k["domain"] == meta["koth"]["koth_domain"]
            assert k["question_type"] == meta["koth"]["question_type"]
            assert k["declared_outcome_signal"] == meta["koth"]["outcome_signal"]
            assert k["outcome_signal"] == outcome  # 'pending' at the call, settled by the result
        else:
            assert use_id not in koth
        if "decision" in meta:
            d = decisions[use_id]
            for key, value in meta["decision"].items():
                assert d[key] == value, key
        else:
            assert use_id not in decisions


def test_task_create_user_metadata_stays_out(running_daemon: Daemon) -> None:
    dgm = example(FIXTURES / "examples" / "tier3-read.json")
    secret = "customer-4711-private-note"
    with_dgm = {"subject": "a", "metadata": {"_dgm": dgm, "note": secret, "n": 42}}
    without = {"taskId": "1", "metadata": {"note": secret}}
    for payload in payloads("s-task", "toolu_create", "TaskCreate", with_dgm):
        assert ctl("hook", "claude-code", input=json.dumps(payload).encode()).returncode == 0
    for payload in payloads("s-task", "toolu_update", "TaskUpdate", without):
        assert ctl("hook", "claude-code", input=json.dumps(payload).encode()).returncode == 0
    (row,) = query("select * from ats_tool_uses")
    assert row["tool_use_id"] == "toolu_create" and row["ats_at"] == "metadata._dgm"
    assert row["ats_valid"] is True and json.loads(row["metadata"]) == dgm
    (prov,) = query("select * from ats_provenance")
    assert prov["caller_name"] == dgm["provenance"]["caller_name"]
    # the user's keys are nowhere: not in the views, not in the journal
    assert secret not in json.dumps(query("select attrs from events"))
    assert secret not in json.dumps(running_daemon.journal_events())
    assert len(query("select id from events where type like 'tool_%'")) == 4


def test_malformed_metadata_is_kept_and_flagged(running_daemon: Daemon) -> None:
    meta = example(FIXTURES / "examples" / "tier1-ask-user-question.json")
    meta["provenance"]["caller_type"] = "robot"
    meta["koth"]["oracle_recommendation_confidence"] = "very high"
    meta["koth"]["oracle_consulted"] = "yes"
    meta["decision"]["decision_id"] = "dec_2026_1"
    meta["experiment"]["template_version"] = 2
    for payload in payloads("s-bad", "toolu_bad", "AskUserQuestion", {"metadata": meta}):
        assert ctl("hook", "claude-code", input=json.dumps(payload).encode()).returncode == 0
    for payload in payloads("s-bad", "toolu_str", "Bash", {"command": "ls", "metadata": "x"}):
        assert ctl("hook", "claude-code", input=json.dumps(payload).encode()).returncode == 0

    journal = [e for e in running_daemon.journal_events() if e["type"].startswith("tool_")]
    assert len(journal) == 4  # every event accepted
    uses = by_use(query("select * from ats_tool_uses"))
    bad = uses["toolu_bad"]
    assert bad["ats_valid"] is False
    places = sorted(e.split(":")[0] for e in bad["ats_errors"])
    assert places == [
        "decision.decision_id",
        "experiment.template_version",
        "koth.oracle_consulted",
        "koth.oracle_recommendation_confidence",
        "provenance.caller_type",
    ]
    assert sorted(places) == sorted(reference_errors(meta, "AskUserQuestion"))
    assert json.loads(bad["metadata"]) == meta  # kept as sent
    (prov,) = query("select * from ats_provenance where tool_use_id = 'toolu_bad'")
    assert prov["caller_type"] == "robot" and prov["ats_valid"] is False
    (k,) = query("select * from ats_koth")
    assert k["confidence"] is None and k["oracle_consulted"] is None  # not of the spec's type
    (d,) = query("select * from ats_decisions")
    assert d["decision_id"] == "dec_2026_1"
    assert uses["toolu_str"]["ats_valid"] is False and uses["toolu_str"]["metadata"] is None
    assert uses["toolu_str"]["ats_errors"] == ["metadata is string, not an object"]
    # an invalid run is no A/B result unless asked for
    experiment = meta["experiment"]["experiment_id"]
    assert query(f"select * from ab_results('{experiment}')") == []
    (row,) = query(f"select * from ab_results('{experiment}', include_invalid := true)")
    assert row["variant_id"] == meta["experiment"]["variant_id"] and row["runs"] == 1


def test_a_lone_surrogate_in_metadata_keeps_the_event(running_daemon: Daemon) -> None:
    """A hook payload holding a lone UTF-16 surrogate escape in the metadata (a value, a
    key) or in a failure's error: every event is kept, the surrogate as U+FFFD (the daemon
    refuses the escape: the events were lost)."""
    meta = example(FIXTURES / "examples" / "tier2-bash.json")
    meta["provenance"]["caller_name"] = "SURROGATE-x"
    meta["SURROGATE-key"] = 1
    for payload in payloads("s-sur", "toolu_sur", "Bash", {"command": "ls", "metadata": meta}):
        if payload["hook_event_name"] == "PostToolUse":
            payload["hook_event_name"], payload["error"] = "PostToolUseFailure", "SURROGATE!"
        text = json.dumps(payload).replace("SURROGATE", "\\ud800")
        result = ctl("hook", "claude-code", input=text.encode())
        assert result.returncode == 0, result.stderr
    journal = [e for e in running_daemon.journal_events() if e["type"].startswith("tool_")]
    assert len(journal) == 2
    result = next(e for e in journal if e["type"] == "tool_result")
    assert result["tool"]["error"] == "\ufffd!"
    kept = result["attrs"]["ats"]
    assert kept["metadata"]["provenance"]["caller_name"] == "\ufffd-x"
    assert any(error.startswith("\ufffd-key") for error in kept["errors"])


def test_metadata_in_any_script_is_measured_as_stored() -> None:
    """The 4 KiB bound is on attrs.ats in UTF-8, as stored: metadata of accented text
    that fits is kept whole (it was measured in ASCII escapes, 6 bytes an "é", and left
    out, experiment and all); past the bound, the blocks the views join on stay."""
    meta = example(FIXTURES / "examples" / "tier2-bash.json")
    meta["experiment"] = {"experiment_id": "exp-é", "variant_id": "A"}
    meta["provenance"]["caller_name"] = "é" * 200
    found = ats.from_tool_input("Bash", {"command": "ls", "metadata": meta})
    assert found is not None and "truncated" not in found
    assert found["metadata"] == meta and len(json.dumps(found, ensure_ascii=False).encode()) < 4096
    meta["provenance"]["caller_chain"] = [
        {"caller_type": "skill", "caller_name": "é" * 250} for _ in range(30)
    ]
    meta["source"] = "skill:" + "é" * 200
    cut = ats.from_tool_input("Bash", {"command": "ls", "metadata": meta})
    assert cut is not None and cut["truncated"] is True
    assert len(json.dumps(cut, ensure_ascii=False).encode()) <= ats.MAX_BYTES
    assert cut["metadata"]["experiment"] == meta["experiment"]
    assert cut["metadata"]["decision"] == meta["decision"]


def test_join_ids_survive_the_cut_whole() -> None:
    """Big metadata is cut to fit, but an experiment's or a decision's id cut short would
    join nothing: the other blocks are cut first, and the join blocks kept whole."""
    meta = example(FIXTURES / "examples" / "tier1-ask-user-question.json")
    meta["experiment"]["experiment_id"] = "exp-" + "long-name-" * 10  # (104 characters)
    meta["provenance"]["caller_chain"] = [
        {"caller_type": "skill", "caller_name": "x" * 250} for _ in range(30)
    ]
    cut = ats.from_tool_input("AskUserQuestion", {"questions": [], "metadata": meta})
    assert cut is not None and cut["truncated"] is True
    assert len(json.dumps(cut, ensure_ascii=False).encode()) <= ats.MAX_BYTES
    assert cut["metadata"]["experiment"] == meta["experiment"]
    assert cut["metadata"]["decision"] == meta["decision"]


def test_the_hook_with_metadata_imports_nothing_heavy(running_daemon: Daemon) -> None:
    meta = example(FIXTURES / "examples" / "tier1-ask-user-question.json")
    (payload, _) = payloads("s-imports", "toolu_imp", "AskUserQuestion", {"metadata": meta})
    result = subprocess.run(
        [sys.executable, "-X", "importtime", TELEMETRYCTL, "hook", "claude-code"],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == b""
    imported = set()
    for line in result.stderr.decode().splitlines():
        assert line.startswith("import time:"), line
        imported.add(line.rsplit("|", 1)[1].strip())
    assert "telemetryd.adapters.ats" in imported
    assert sorted({m.split(".")[0] for m in imported} & set(FORBIDDEN_ON_HOOK_PATH)) == []
    (event,) = running_daemon.journal_events()
    assert event["attrs"]["ats"]["valid"] is True


# -- OTLP ----------------------------------------------------------------------------------


def test_claude_code_tool_result_event_keeps_the_metadata() -> None:
    """Claude Code's tool_result log event with the tool's input (OTEL_LOG_TOOL_DETAILS):
    the metadata is kept as attrs.ats, the rest of the input dropped as content, and the
    metadata survives the attrs budget whole."""
    meta = example(FIXTURES / "examples" / "tier2-bash.json")
    scope = Scope(resource={"service.name": "claude-code", "big": "r" * 30000})
    record = LogRecord(
        time_ns=1_771_500_000_000_000_000,
        body="claude_code.tool_result",
        attrs={
            "event.name": "tool_result",
            "session.id": "s-otlp",
            "tool_name": "Bash",
            "tool_use_id": "toolu_otlp",
            "success": "true",
            "duration_ms": "12",
            "tool_input": json.dumps({"command": "git push --force", "metadata": meta}),
            **{f"extra.{n}": ["v" * 100] * 60 for n in range(40)},
        },
    )
    (event,) = mapping.log_events(scope, record)
    assert event["type"] == "tool_result"
    assert event["attrs"]["ats"] == ats.check(meta, "Bash")
    assert "git push" not in json.dumps(event)
    line = json.dumps(event).encode()
    assert events.check_producer_rules(events.decode(line), line, **LIMITS) is None
    assert "otel.dropped" in event["attrs"]  # the rest was cut to make room


def test_genai_execute_tool_span_keeps_the_metadata() -> None:
    meta = example(FIXTURES / "examples" / "tier3-read.json")
    span = Span(
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba90003",
        name="execute_tool Read",
        start_ns=1_771_500_000_000_000_000,
        end_ns=1_771_500_000_050_000_000,
        attrs={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "Read",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.call.arguments": json.dumps({"file_path": "/a", "metadata": meta}),
        },
        status_code=1,
    )
    produced = mapping.span_events(Scope(resource={"service.name": "github-copilot"}), span)
    (tool,) = [e for e in produced if e["type"] == "tool_result"]
    assert tool["attrs"]["ats"] == ats.check(meta, "Read")
    assert tool["attrs"]["ats"]["valid"] is True
    assert all("ats" not in e.get("attrs", {}) for e in produced if e is not tool)


# -- ab_results -----------------------------------------------------------------------------


EXPERIMENT = "exp-ab-test"
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class World:
    """Sessions with tool uses assigned to variants, their results and the sessions'
    model requests, and the answers computed here, not by SQL."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []  # what ab_results should count (valid ones)
        self.invalid_runs: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        n = 0
        for s in range(8):
            session = f"ab-s{s}"
            t = T0 + timedelta(hours=s)
            variants = ["control-a", "treat-b", "treat-c"]
            for _ in range(rng.randint(2, 6)):
                n += 1
                variant = rng.choice(variants)
                experiment = EXPERIMENT if rng.random() < 0.85 else "exp-other"
                duration = rng.randint(100, 5000)
                kind = rng.choice(["ok", "ok", "failed", "pending", "declared"])
                invalid = rng.random() < 0.15
                meta = example(FIXTURES / "examples" / "tier1-ask-user-question.json")
                meta["experiment"].update(
                    experiment_id=experiment,
                    variant_id=variant,
                    treatment_group="control" if variant.startswith("control") else "treatment",
                )
                declared = rng.choice(["win", "loss", "draw"]) if kind == "declared" else "pending"
                meta["koth"]["outcome_signal"] = declared
                if invalid:
                    meta["decision"]["decision_id"] = "not-a-decision-id"
                attrs = {"ats": ats.from_tool_input("Task", {"metadata": meta})}
                use_id = f"toolu_ab_{n}"
                start, end = t, t + timedelta(milliseconds=duration)
                self.events.append(self._tool("tool_call", session, use_id, start, attrs))
                if kind != "pending":
                    result = self._tool("tool_result", session, use_id, end, attrs)
                    result["tool"]["success"] = kind != "failed"
                    result["duration_ms"] = duration
                    self.events.append(result)
                # requests: one inside the run, one just after it
                for offset, cost in (
                    (duration // 2, rng.randint(1, 900) / 1000),
                    (duration + 1, 0.5),
                ):
                    self._request(session, t + timedelta(milliseconds=offset), cost)
                if rng.random() < 0.3:  # a request whose cost is unknown
                    self._request(session, t + timedelta(milliseconds=duration // 3), None)
                run = {
                    "variant": variant,
                    "session": session,
                    "start": start,
                    "end": None if kind == "pending" else end,
                    "duration": None if kind == "pending" else duration,
                    "outcome": (
                        declared
                        if kind == "declared"
                        else {"ok": "win", "failed": "loss", "pending": "pending"}[kind]
                    ),
                    "treatment": meta["experiment"]["treatment_group"],
                }
                if experiment == EXPERIMENT:
                    (self.invalid_runs if invalid else self.runs).append(run)
                t = end + timedelta(seconds=5)
        self.events.extend(self.requests)

    def _tool(
        self, kind: str, session: str, use_id: str, ts: datetime, attrs: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "type": kind,
            "id": f"{kind}-{use_id}",
            "ts": iso(ts),
            "source": "claude-code",
            "session_id": session,
            "tool": {"name": "Task", "use_id": use_id},
            "attrs": attrs,
        }

    def _request(self, session: str, ts: datetime, cost: float | None) -> None:
        event: dict[str, Any] = {
            "type": "api_request",
            "id": f"req-{len(self.requests)}",
            "ts": iso(ts),
            "source": "claude-code",
            "session_id": session,
            "agent": {"model": "claude-sonnet-4-5", "provider": "anthropic"},
            "tokens": {"source": "actual", "input": 10, "output": 5},
        }
        if cost is not None:
            event["cost_usd"] = cost
            event["cost_source"] = "reported"
        else:  # a model without a price: the store leaves its cost unknown
            event["agent"] = {"model": "model-nobody-prices", "provider": "nobody"}
        self.requests.append(event)

    def expected(self, include_invalid: bool = False) -> list[dict[str, Any]]:
        runs = self.runs + (self.invalid_runs if include_invalid else [])
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for run in runs:
            grouped[run["variant"]].append(run)
        out = []
        for variant in sorted(grouped):
            mine = grouped[variant]
            outcomes = [r["outcome"] for r in mine]
            wins, losses, draws = (outcomes.count(o) for o in ("win", "loss", "draw"))
            sessions = {r["session"] for r in mine}
            session_cost = sum(
                q.get("cost_usd", 0) for q in self.requests if q["session_id"] in sessions
            )
            inside = {
                q["id"]: q.get("cost_usd", 0)
                for r in mine
                if r["end"] is not None
                for q in self.requests
                if q["session_id"] == r["session"] and iso(r["start"]) <= q["ts"] <= iso(r["end"])
            }
            durations = [r["duration"] for r in mine if r["duration"] is not None]
            treatments = [r["treatment"] for r in mine]
            out.append(
                {
                    "variant_id": variant,
                    "treatment_group": max(set(treatments), key=treatments.count),
                    "runs": len(mine),
                    "successes": wins,
                    "failures": losses,
                    "draws": draws,
                    "pending": outcomes.count("pending"),
                    "success_rate": wins / (wins + losses + draws)
                    if wins + losses + draws
                    else None,
                    "sessions": len(sessions),
                    "session_cost_usd": pytest.approx(session_cost),
                    "run_cost_usd": pytest.approx(sum(inside.values())),
                    "total_duration_ms": sum(durations) if durations else None,
                    "avg_duration_ms": pytest.approx(sum(durations) / len(durations))
                    if durations
                    else None,
                }
            )
        return out


@pytest.fixture(scope="module")
def ab_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, World]]:
    tmp = tmp_path_factory.mktemp("ab")
    world = World(seed=14)
    journal = tmp / "journal"
    journal.mkdir()
    lines = []
    for event in world.events:
        raw = json.dumps(event).encode()
        decoded = events.decode(raw)
        assert events.check_producer_rules(decoded, raw, **LIMITS) is None
        lines.append(events.ENCODER.encode(decoded) + b"\n")
    (journal / "20260301T100000Z-000001.jsonl").write_bytes(b"".join(lines))
    with Store(str(tmp / "telemetry.duckdb")) as store:
        assert store.materialize(str(journal)) == len(world.events)
        yield store, world


def rows(store: Store, sql: str) -> list[dict[str, Any]]:
    with store.cursor() as cur:
        result = cur.execute(sql)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def test_the_ab_world_covers_every_case(ab_store: tuple[Store, World]) -> None:
    _, world = ab_store
    outcomes = {r["outcome"] for r in world.runs}
    assert outcomes == {"win", "loss", "draw", "pending"}
    assert world.invalid_runs
    per_session = defaultdict(set)
    for run in world.runs:
        per_session[run["session"]].add(run["variant"])
    assert any(len(v) > 1 for v in per_session.values())  # a session in two variants
    assert len({r["variant"] for r in world.runs}) == 3


@pytest.mark.parametrize("include_invalid", [False, True])
def test_ab_results_counts_as_computed_here(
    ab_store: tuple[Store, World], include_invalid: bool
) -> None:
    store, world = ab_store
    flag = "true" if include_invalid else "false"
    found = rows(store, f"select * from ab_results('{EXPERIMENT}', include_invalid := {flag})")
    assert found == world.expected(include_invalid)
    assert rows(store, "select * from ab_results('exp-nobody')") == []


def test_ab_results_is_listed_as_a_report(running_daemon: Daemon) -> None:
    result = ctl("reports", "--json")
    assert result.returncode == 0, result.stderr.decode()
    listed = {r["name"]: r for r in json.loads(result.stdout)}
    assert listed["ab_results"]["parameters"] == [
        {"name": "experiment_id", "default": None},
        {"name": "include_invalid", "default": "false"},
    ]
    assert "experiment" in listed["ab_results"]["description"]


def test_every_stored_ats_follows_the_published_schema(ab_store: tuple[Store, World]) -> None:
    store, _ = ab_store
    found = rows(
        store, "select json_extract(attrs, '$.ats') as ats from events where type like 'tool_%'"
    )
    assert found
    for row in found:
        assert list(PUBLISHED_SCHEMA.iter_errors(json.loads(row["ats"]))) == []
    Draft202012Validator.check_schema(json.loads(PUBLISHED.read_text(encoding="utf-8")))


def test_sending_ats_events_over_the_socket_keeps_them(running_daemon: Daemon) -> None:
    """A producer may send attrs.ats itself (as `telemetryctl send` or nc): accepted as is."""
    found = ats.from_tool_input("Read", {"metadata": example(EXAMPLES[-1])})
    event = {"type": "tool_call", "session_id": "s-nc", "tool": {"name": "Read", "use_id": "u1"}}
    event["attrs"] = {"ats": found}
    replies = exchange(running_daemon.events_socket, json.dumps(event).encode() + b"\n")
    assert replies[-1]["accepted"] == 1
    (row,) = query("select tool_use_id, ats_valid, tier from ats_tool_uses")
    assert row == {"tool_use_id": "u1", "ats_valid": True, "tier": 3}
