"""The counting rules of docs/counting.md, each against the way a peer got it wrong.

Every expected number is computed here from the raw lines (or written out by hand), never
read back from the code under test. docs/counting.md names, per rule, the tests that prove
it; the last test keeps that table and the tests together.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from telemetryd.adapters import claude_code, codex, usage
from telemetryd.client import importer
from test_import import assistant, jsonl

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path("/work/shared/samples")
TRANSCRIPTS = SAMPLES / "claude-code" / "transcripts"
TOOL_HEAVY = TRANSCRIPTS / "spotter_tool_heavy_session_v2.1.38.jsonl"
SHORT = TRANSCRIPTS / "spotter_short_session_v2.1.38.jsonl"
SUBAGENT = TRANSCRIPTS / "spotter_subagent_agent-aac57f5_v2.1.39.jsonl"
KINDS = ("input", "output", "cache_read", "cache_creation")


def usage_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, line) of every transcript line whose message carries a usage."""
    out = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        line = json.loads(text)
        message = line.get("message")
        if isinstance(message, dict) and isinstance(message.get("usage"), dict):
            out.append((number, line))
    return out


def anthropic_counts(raw: dict[str, Any]) -> dict[str, int]:
    """An Anthropic usage object in the model's kinds (input excludes both caches)."""
    return {
        "input": raw["input_tokens"],
        "output": raw["output_tokens"],
        "cache_read": raw.get("cache_read_input_tokens") or 0,
        "cache_creation": raw.get("cache_creation_input_tokens") or 0,
    }


def summed(rows: list[dict[str, int]]) -> dict[str, int]:
    return {kind: sum(row[kind] for row in rows) for kind in KINDS}


def imported(summary: importer.Summary) -> dict[str, int]:
    """The four kinds summed over every model of an import."""
    return {kind: sum(getattr(t, kind) for t in summary.by_model.values()) for kind in KINDS}


# -- Claude Code ----------------------------------------------------------------------------


def test_claude_streaming_snapshots_keep_the_complete_one() -> None:
    lines = dict(usage_lines(TOOL_HEAVY))
    # The sample's two snapshots of one response: output 25, then 173.
    first, last = lines[34], lines[37]
    assert claude_code.request_key(first) == claude_code.request_key(last)
    assert (
        first["message"]["usage"]["output_tokens"],
        last["message"]["usage"]["output_tokens"],
    ) == (
        25,
        173,
    )
    # By hand: per (message.id, requestId), the copy with the largest token total.
    best: dict[tuple[str, str], dict[str, int]] = {}
    for line in lines.values():
        key = (line["message"]["id"], line["requestId"])
        counts = anthropic_counts(line["message"]["usage"])
        if key not in best or sum(counts.values()) > sum(best[key].values()):
            best[key] = counts
    summary = importer.run("claude-code", [TOOL_HEAVY], dry_run=True)
    assert summary.requests == len(best) == 4
    assert imported(summary) == summed(list(best.values()))
    # Keeping the first snapshot would have lost 173 - 25 output tokens.
    assert imported(summary)["output"] == 27 + 1 + 11 + 173


def test_claude_one_response_over_several_content_block_lines_counts_once() -> None:
    lines = usage_lines(SHORT)
    # Lines 5, 6, 7, 8 and 10: text, thinking, text and tool_use blocks of one response,
    # each repeating its usage.
    assert [number for number, _ in lines] == [5, 6, 7, 8, 10]
    assert len({claude_code.request_key(line) for _, line in lines}) == 1
    summary = importer.run("claude-code", [SHORT], dry_run=True)
    assert (summary.requests, summary.repeats) == (1, 4)
    assert imported(summary) == anthropic_counts(lines[0][1]["message"]["usage"])


def test_claude_sidechain_replay_of_a_parents_request_counts_once(tmp_path: Path) -> None:
    # The parent: the real short session. Its sub-agent transcript replays the parent's
    # response (same message.id and requestId, isSidechain true), then makes its own
    # requests: the real sub-agent sample's.
    parent = [json.loads(text) for text in SHORT.read_text().splitlines()]
    replay = [{**line, "isSidechain": True} for _, line in usage_lines(SHORT)]
    own = [json.loads(text) for text in SUBAGENT.read_text().splitlines()]
    project = tmp_path / "projects" / "-p"
    jsonl(project / "sess.jsonl", parent)
    jsonl(project / "sess" / "subagents" / "agent-aac57f5.jsonl", [*replay, *own])

    parent_response = anthropic_counts(usage_lines(SHORT)[0][1]["message"]["usage"])
    own_responses: dict[tuple[str, str], dict[str, int]] = {}
    for _, line in usage_lines(SUBAGENT):  # its repeated lines are one response each
        own_responses[(line["message"]["id"], line["requestId"])] = anthropic_counts(
            line["message"]["usage"]
        )
    summary = importer.run("claude-code", [tmp_path], dry_run=True)
    assert summary.requests == 1 + len(own_responses) == 4
    assert imported(summary) == summed([parent_response, *own_responses.values()])


def test_claude_a_sidechain_copy_loses_to_the_parents() -> None:
    # In one file, the sidechain copy first, then the parent's with the same usage: the
    # parent's is kept (not a sub-agent request); a larger total still wins first.
    side = assistant("m1", "r1", "2026-03-01T00:00:00Z", inp=3, out=7, sidechain=True)
    main = assistant("m1", "r1", "2026-03-01T00:00:00Z", inp=3, out=7)
    dedup = claude_code.Dedup()
    for line in (side, main):
        entry = claude_code.usage_entry(line)
        assert entry is not None
        dedup.add(entry)
    (kept,) = dedup.flush()
    assert kept["sidechain"] is False
    assert "type" not in claude_code.api_request_event(kept, "x")["agent"]

    bigger_side = assistant("m1", "r1", "2026-03-01T00:00:01Z", inp=3, out=9, sidechain=True)
    dedup = claude_code.Dedup()
    for line in (main, bigger_side):
        entry = claude_code.usage_entry(line)
        assert entry is not None
        dedup.add(entry)
    (kept,) = dedup.flush()
    assert kept["tokens"]["output"] == 9


# -- Codex: re-emitted totals, forks and sub-agents -------------------------------------------

PARENT = "11111111-1111-1111-1111-111111111111"
CHILD = "22222222-2222-2222-2222-222222222222"
FORK_AT = "2026-05-01T12:00:00.000Z"


def cx_usage(inp: int, cached: int, out: int, reasoning: int = 0) -> dict[str, int]:
    return {
        "input_tokens": inp,
        "cached_input_tokens": cached,
        "output_tokens": out,
        "reasoning_output_tokens": reasoning,
        "total_tokens": inp + out,
    }


def token_count(ts: str, total: dict[str, int], last: dict[str, int] | None) -> dict[str, Any]:
    info: dict[str, Any] = {"total_token_usage": total}
    if last is not None:
        info["last_token_usage"] = last
    return {"timestamp": ts, "type": "event_msg", "payload": {"type": "token_count", "info": info}}


def meta(ts: str, session: str, **extra: Any) -> dict[str, Any]:
    payload = {"id": session, "timestamp": ts, "cwd": "/src/x", "model_provider": "openai", **extra}
    return {"timestamp": ts, "type": "session_meta", "payload": payload}


def turn(ts: str) -> dict[str, Any]:
    return {"timestamp": ts, "type": "turn_context", "payload": {"model": "gpt-5-codex"}}


# The parent's two requests, as its own rollout has them (cumulative totals and lasts).
P1_LAST = cx_usage(1000, 200, 100, 30)
P1_TOTAL = P1_LAST
P2_LAST = cx_usage(1500, 1000, 150, 40)
P2_TOTAL = cx_usage(2500, 1200, 250, 70)
# The fork's own request, on top of the inherited context.
C1_LAST = cx_usage(1500, 1200, 80, 10)
C1_TOTAL = cx_usage(4000, 2400, 330, 80)


def parent_rollout(root: Path) -> Path:
    return jsonl(
        root / f"rollout-2026-05-01T11-00-00-{PARENT}.jsonl",
        [
            meta("2026-05-01T11:00:00.000Z", PARENT),
            turn("2026-05-01T11:00:01.000Z"),
            token_count("2026-05-01T11:00:10.000Z", P1_TOTAL, P1_LAST),
            token_count("2026-05-01T11:00:11.000Z", P1_TOTAL, P1_LAST),  # re-emitted
            token_count("2026-05-01T11:05:00.000Z", P2_TOTAL, P2_LAST),
        ],
    )


def fork_rollout(root: Path, child_meta: dict[str, Any], *, last: bool = True) -> Path:
    """A child rollout as Codex writes a fork: its own session_meta, then the parent's
    history copied in (its session_meta and token_counts) re-stamped to the fork instant,
    then the child's own turn half a minute later."""
    return jsonl(
        root / f"rollout-2026-05-01T12-00-00-{CHILD}.jsonl",
        [
            child_meta,
            meta("2026-05-01T12:00:00.001Z", PARENT),
            turn("2026-05-01T12:00:00.001Z"),
            token_count("2026-05-01T12:00:00.002Z", P1_TOTAL, P1_LAST),
            token_count("2026-05-01T12:00:00.002Z", P1_TOTAL, P1_LAST),
            token_count("2026-05-01T12:00:00.003Z", P2_TOTAL, P2_LAST),
            turn("2026-05-01T12:00:20.000Z"),
            token_count("2026-05-01T12:00:31.000Z", C1_TOTAL, C1_LAST if last else None),
        ],
    )


def openai_kinds(raw: dict[str, int]) -> dict[str, int]:
    """Codex counts in the model's kinds: cached input out of input, reasoning in output."""
    return {
        "input": raw["input_tokens"] - raw["cached_input_tokens"],
        "output": raw["output_tokens"],
        "cache_read": raw["cached_input_tokens"],
        "cache_creation": 0,
    }


def test_codex_forked_rollout_skips_the_parents_replayed_counts(tmp_path: Path) -> None:
    fork = fork_rollout(tmp_path, meta(FORK_AT, CHILD, forked_from_id=PARENT))
    alone = importer.run("codex", [fork], dry_run=True)
    # Only the child's own request, even with the parent's rollout gone.
    assert alone.requests == 1
    assert imported(alone) == openai_kinds(C1_LAST)
    # 3 copied token_counts (1 of them a re-emission) are repeats, not requests.
    assert alone.repeats == 3

    parent_rollout(tmp_path)
    both = importer.run("codex", [tmp_path], dry_run=True)
    assert both.requests == 2 + 1
    assert imported(both) == summed(
        [openai_kinds(P1_LAST), openai_kinds(P2_LAST), openai_kinds(C1_LAST)]
    )


def test_codex_fork_counts_from_the_first_delta_after_the_replay(tmp_path: Path) -> None:
    # Without last_token_usage, the child's request is its total less the replayed one.
    fork = fork_rollout(tmp_path, meta(FORK_AT, CHILD, forked_from_id=PARENT), last=False)
    summary = importer.run("codex", [fork], dry_run=True)
    delta = {field: C1_TOTAL[field] - P2_TOTAL[field] for field in C1_TOTAL}
    assert summary.requests == 1
    assert imported(summary) == openai_kinds(delta)
    assert summary.by_model["gpt-5-codex"].reasoning == 80 - 70


def test_codex_subagent_rollout_skips_the_parents_replayed_counts(tmp_path: Path) -> None:
    spawn = {"subagent": {"thread_spawn": {"parent_thread_id": PARENT, "depth": 1}}}
    fork = fork_rollout(tmp_path, meta(FORK_AT, CHILD, source=spawn))
    summary = importer.run("codex", [fork], dry_run=True)
    assert summary.requests == 1
    assert imported(summary) == openai_kinds(C1_LAST)
    # The SubagentStop hook sums the sub-agent's rollout with the same rule.
    found = codex.rollout_usage(fork.read_text().splitlines())
    assert found["requests"] == 1
    assert found["tokens"]["input"] == 1500 - 1200 and found["tokens"]["output"] == 80


def test_codex_a_long_replay_is_one_burst() -> None:
    # A copy that takes a while to write: each copied count within 2 s of the previous
    # one, the last 3 s after the fork instant. The child's request 20 s later counts.
    rollout = codex.Rollout()
    lines = [
        meta(FORK_AT, CHILD, forked_from_id=PARENT),
        token_count("2026-05-01T12:00:01.500Z", P1_TOTAL, P1_LAST),
        token_count("2026-05-01T12:00:03.000Z", P2_TOTAL, P2_LAST),
        token_count("2026-05-01T12:00:23.000Z", C1_TOTAL, C1_LAST),
        token_count("2026-05-01T12:00:23.500Z", cx_usage(4100, 2400, 340), cx_usage(100, 0, 10)),
    ]
    records = [r for line in lines if (r := rollout.feed(line))]
    assert rollout.replayed == 2
    assert [r["tokens"]["input"] for r in records] == [1500 - 1200, 100]
    assert [r["tokens"]["output"] for r in records] == [80, 10]


def test_codex_fork_keeps_its_own_session_id(tmp_path: Path) -> None:
    fork = fork_rollout(tmp_path, meta(FORK_AT, CHILD, forked_from_id=PARENT))
    rollout = codex.Rollout()
    records = [r for line in fork.read_text().splitlines() if (r := rollout.feed(json.loads(line)))]
    assert [r["session_id"] for r in records] == [CHILD]


def test_codex_a_rollout_that_is_not_a_fork_counts_its_first_seconds() -> None:
    # No forked_from_id, no parent thread: a request stamped right after the meta counts.
    rollout = codex.Rollout()
    lines = [
        meta(FORK_AT, CHILD),
        turn(FORK_AT),
        token_count("2026-05-01T12:00:00.500Z", P1_TOTAL, P1_LAST),
    ]
    records = [r for line in lines if (r := rollout.feed(line))]
    assert len(records) == 1 and rollout.replayed == 0


def test_codex_fork_without_a_readable_time_skips_nothing() -> None:
    rollout = codex.Rollout()
    child = meta(FORK_AT, CHILD, forked_from_id=PARENT)
    child["timestamp"] = "not a time"
    child["payload"]["timestamp"] = None
    lines = [
        child,
        token_count(FORK_AT, P1_TOTAL, P1_LAST),
        token_count(FORK_AT, P2_TOTAL, P2_LAST),
    ]
    assert len([r for line in lines if (r := rollout.feed(line))]) == 2


# -- OpenAI-style usage ----------------------------------------------------------------------


def test_openai_cache_writes_stay_inside_input() -> None:
    # Newer Codex totals name cache writes apart; they are part of input_tokens (and of
    # its uncached part), so they add nothing: total = input_tokens + output_tokens.
    raw = {
        "input_tokens": 1000,
        "cached_input_tokens": 600,
        "cache_write_input_tokens": 300,
        "output_tokens": 50,
        "reasoning_output_tokens": 20,
        "total_tokens": 1050,
    }
    tokens = usage.tokens(raw)
    assert (tokens["input"], tokens["cache_read"], tokens["output"]) == (1000 - 600, 600, 50)
    assert tokens["reasoning"] == 20
    assert tokens["total"] == 1050
    assert tokens.get("cache_creation", 0) == 0


# -- the table in docs/counting.md -----------------------------------------------------------


def test_every_rule_in_docs_counting_names_tests_that_exist() -> None:
    text = (ROOT / "docs" / "counting.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| \*\*R\d+\*\*", line)]
    assert len(rows) >= 10
    defined: dict[str, set[str]] = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        refs = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", cells[-1])
        assert refs, f"rule without a test: {cells[0]}"
        assert re.search(r"`src/telemetryd/[\w/]+\.py", cells[-2]), f"no code: {cells[0]}"
        for path, name in refs:
            if path not in defined:
                tree = ast.parse((ROOT / path).read_text())
                defined[path] = {
                    node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                }
            assert name in defined[path], f"{path}::{name} named in docs/counting.md"
