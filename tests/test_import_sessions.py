"""`telemetryctl import claude-code`: the rest of a session (tool uses and their results,
prompts, sub-agents, the working directory), counted by hand from the raw samples."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, ctl
from telemetryd.adapters import claude_code, ids
from telemetryd.client import importer

pytestmark = pytest.mark.usefixtures("agent_home")

TRANSCRIPTS = Path("/work/shared/samples/claude-code/transcripts")
SUBAGENT = TRANSCRIPTS / "spotter_subagent_agent-aac57f5_v2.1.39.jsonl"
TOOL_HEAVY = TRANSCRIPTS / "spotter_tool_heavy_session_v2.1.38.jsonl"


class Sink:
    """Stands in for the events socket: keeps what the importer sends."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, data: bytes) -> None:
        self.events.append(json.loads(data))


def imported(*paths: Path) -> tuple[importer.Summary, list[dict[str, Any]]]:
    sink = Sink()
    run = importer.Importer("claude-code", sink=sink)  # type: ignore[arg-type]
    for path in importer.discover(list(paths), []):
        run.read_file(path)
    return run.summary, sink.events


def raw_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def millis(start: str, end: str) -> int:
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return int(delta.total_seconds() * 1000)


def expected_tools(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tool calls and results of a transcript, straight from its JSON: per use id,
    (name, ts) and (success, duration_ms)."""
    calls: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for line in raw_lines(path):
        content = (line.get("message") or {}).get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if line["type"] == "assistant" and block.get("type") == "tool_use":
                calls[block["id"]] = (block["name"], line["timestamp"])
            if line["type"] == "user" and block.get("type") == "tool_result":
                name, started = calls[block["tool_use_id"]]
                results[block["tool_use_id"]] = {
                    "name": name,
                    "success": block.get("is_error") is not True,
                    "duration_ms": millis(started, line["timestamp"]),
                }
    return calls, results


SAMPLES = sorted(p for p in TRANSCRIPTS.glob("*.jsonl"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_tool_calls_and_results_equal_the_raw_json(path: Path) -> None:
    summary, events = imported(path)
    calls, results = expected_tools(path)
    got_calls = {e["tool"]["use_id"]: e for e in events if e["type"] == "tool_call"}
    got_results = {e["tool"]["use_id"]: e for e in events if e["type"] == "tool_result"}
    assert {k: (e["tool"]["name"], e["ts"]) for k, e in got_calls.items()} == calls
    assert {
        k: {
            "name": e["tool"]["name"],
            "success": e["tool"]["success"],
            "duration_ms": e["duration_ms"],
        }
        for k, e in got_results.items()
    } == results
    assert summary.tool_calls == len(calls) and summary.tool_results == len(results)
    assert summary.tool_errors == sum(not r["success"] for r in results.values())
    for event in events:
        if event["type"] in ("tool_call", "tool_result"):  # the hook's id rule
            kind, use_id = event["type"], event["tool"]["use_id"]
            assert event["id"] == ids.tool_event_id(kind, event["session_id"], use_id)


def test_the_samples_tool_counts() -> None:
    # sniffly: 7 Bash uses, 2 rejected by the user; spotter short: Bash and Glob both
    # rejected; tool-heavy: 6 uses; the sub-agent: 6 WebSearch and 6 WebFetch.
    summary, events = imported(TRANSCRIPTS)
    assert (summary.tool_calls, summary.tool_results, summary.tool_errors) == (27, 27, 4)
    failed = [e for e in events if e["type"] == "tool_result" and not e["tool"]["success"]]
    assert {e["tool"]["name"] for e in failed} == {"Bash", "Glob"}
    for event in failed:  # the error is the result's text, as the failure hook gives it
        assert event["tool"]["error"].startswith("The user doesn't want to ")
    assert summary.requests == 15  # API requests only, as before


def test_prompts_are_typed_prompts_with_their_length_only() -> None:
    summary, events = imported(TRANSCRIPTS)
    expected = []
    for path in SAMPLES:
        for line in raw_lines(path):
            content = (line.get("message") or {}).get("content")
            if line.get("type") != "user" or not isinstance(content, str):
                continue
            if line.get("isMeta") or line.get("isSidechain") or content.startswith("<"):
                continue  # Claude Code's own lines, a sub-agent's task, /command wrappers
            expected.append((line["timestamp"], len(content)))
    prompts = [e for e in events if e["type"] == "prompt"]
    assert sorted((e["ts"], e["length"]) for e in prompts) == sorted(expected)
    assert summary.prompts == len(expected) == 5
    for event in prompts:
        assert set(event) == {"type", "id", "ts", "source", "session_id", "attrs", "length"}
        assert set(event["attrs"]) == {"imported", "cwd"}


def test_a_subagent_transcript_is_one_activation_with_the_hooks_tokens_and_ids() -> None:
    _, events = imported(SUBAGENT)
    start, stop = (e for e in events if e["type"] in ("agent_start", "agent_stop"))
    session = raw_lines(SUBAGENT)[0]["sessionId"]
    # What the SubagentStop hook records for the same sub-agent (its transcript summed).
    payload = {
        "hook_event_name": "SubagentStop",
        "session_id": session,
        "agent_id": "aac57f5",
        "agent_type": "general-purpose",
        "agent_transcript_path": str(SUBAGENT),
    }
    [hooked] = claude_code.hook_events(payload, subagent=claude_code.subagent_usage(payload))
    assert stop["id"] == hooked["id"] == ids.agent_event_id("agent_stop", session, "aac57f5")
    assert start["id"] == ids.agent_event_id("agent_start", session, "aac57f5")
    assert stop["tokens"] == hooked["tokens"]
    assert stop["duration_ms"] == hooked["duration_ms"]
    assert stop["agent"]["model"] == hooked["agent"]["model"] == "claude-sonnet-4-5-20250929"
    assert stop["attrs"]["requests"] == 3
    lines = raw_lines(SUBAGENT)
    assert (start["ts"], stop["ts"]) == (lines[0]["timestamp"], lines[-1]["timestamp"])
    # Its tool uses are the sub-agent's.
    tools = [e for e in events if e["type"] == "tool_call"]
    assert tools and all(e["agent"]["id"] == "aac57f5" for e in tools)


def test_the_working_directory_and_project(tmp_path: Path) -> None:
    where = tmp_path / "projects" / "-home-marco-projects-spotter" / TOOL_HEAVY.name
    where.parent.mkdir(parents=True)
    shutil.copy(TOOL_HEAVY, where)
    _, events = imported(where)
    for event in events:
        assert event["attrs"]["project"] == "-home-marco-projects-spotter"
        if event["type"] != "api_request":
            assert event["attrs"]["cwd"] == "/home/marco/projects/spotter"


def test_since_and_repeats(tmp_path: Path) -> None:
    # A resumed session repeats the tool uses of the first: the same ids, sent once.
    copy = tmp_path / "again.jsonl"
    shutil.copy(TOOL_HEAVY, copy)
    summary, events = imported(TOOL_HEAVY, copy)
    assert summary.tool_calls == 6 and len({e["id"] for e in events}) == len(events)
    late = importer.Importer(
        "claude-code", sink=Sink(), since=datetime.fromisoformat("2026-02-10T22:59:00+00:00")
    )  # type: ignore[arg-type]
    late.read_file(TOOL_HEAVY)
    assert (late.summary.tool_calls, late.summary.prompts) == (4, 1)


def query(sql: str) -> list[Any]:
    result = ctl("query", "--format", "json", sql)
    assert result.returncode == 0, result.stderr.decode()
    rows: list[Any] = json.loads(result.stdout)
    return rows


def test_a_hooked_tool_use_imported_again_is_one_row(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    lines = raw_lines(TOOL_HEAVY)
    session = lines[0].get("sessionId") or lines[1]["sessionId"]
    use_id = "toolu_018GZVh9ymkrdx1TnR8reg5Y"
    base = {"session_id": session, "cwd": "/home/marco/projects/spotter", "tool_name": "Bash"}
    for name in ("PreToolUse", "PostToolUse"):
        payload = {**base, "hook_event_name": name, "tool_use_id": use_id}
        hooked = ctl("hook", "claude-code", input=json.dumps(payload).encode())
        assert hooked.returncode == 0 and hooked.stderr == b"", hooked.stderr.decode()
    root = tmp_path / "claude"
    (root / "projects" / "-home-marco-projects-spotter").mkdir(parents=True)
    shutil.copy(TOOL_HEAVY, root / "projects" / "-home-marco-projects-spotter" / "s.jsonl")
    first = ctl("import", "claude-code", str(root), "--json")
    assert first.returncode == 0, first.stderr.decode()
    summary = json.loads(first.stdout)
    # The hooked call and result were there already.
    assert (summary["sent"], summary["duplicates"]) == (summary["accepted"] + 2, 2)
    rows = query(
        "select type, count(*) as n from events "
        f"where tool_use_id = '{use_id}' group by type order by type"
    )
    assert rows == [{"type": "tool_call", "n": 1}, {"type": "tool_result", "n": 1}]
    [row] = query(
        "select count(*) as n from events where type in ('tool_call', 'tool_result') "
        f"and session_id = '{session}'"
    )
    assert row["n"] == 12  # 6 uses, each a call and a result
    # Importing again (all read again) adds nothing.
    again = ctl("import", "claude-code", str(root), "--json", "--rescan")
    assert again.returncode == 0, again.stderr.decode()
    repeat = json.loads(again.stdout)
    assert repeat["accepted"] == 0 and repeat["duplicates"] == repeat["sent"] == summary["sent"]


def test_no_prompt_text_reaches_the_journal(running_daemon: Daemon, tmp_path: Path) -> None:
    root = tmp_path / "claude" / "projects" / "p"
    root.mkdir(parents=True)
    for path in SAMPLES:
        shutil.copy(path, root / path.name)
    result = ctl("import", "claude-code", str(root), "--json")
    assert result.returncode == 0, result.stderr.decode()
    journal = b"".join(p.read_bytes() for p in sorted(running_daemon.journal_dir.glob("*.jsonl")))
    assert journal.count(b'"type":"prompt"') == 5
    for path in SAMPLES:
        for line in raw_lines(path):
            content = (line.get("message") or {}).get("content")
            if line.get("type") == "user" and isinstance(content, str):
                assert content.encode() not in journal


def test_tool_durations_from_the_clock_match_the_datetimes() -> None:
    """claude_code.duration_ms's shortcut for two times of one UTC day, against the
    datetimes (invalid dates and clocks, other shapes and days take the long way)."""
    from datetime import datetime

    def slow(start: str, end: str) -> int | None:
        try:
            a = datetime.fromisoformat(start.replace("Z", "+00:00"))
            b = datetime.fromisoformat(end.replace("Z", "+00:00"))
        except ValueError:
            return None
        millis = int((b - a).total_seconds() * 1000)
        return millis if millis >= 0 else None

    day = "2026-03-15T"
    clocks = ["00:00:00.000", "00:00:01.005", "12:34:56.789", "23:59:59.999"]
    clocks += ["24:00:00.000", "12:60:00.000", "12:00:60.000", "1a:00:00.000"]
    clocks += ["12:00:00.1_0", "\u0661\u0662:00:00.000"]  # (digits, not ASCII ones)
    times = [f"{day}{c}Z" for c in clocks]
    times += ["2026-02-30T00:00:01.000Z", "2026-03-16T00:00:00.000Z"]
    times += ["2026-03-15T10:00:00.000+01:00", "2026-03-15T10:00:00Z"]
    for start in times:
        for end in times:
            assert claude_code.duration_ms(start, end) == slow(start, end), (start, end)
    assert claude_code.duration_ms("2026-02-30T00:00:00.000Z", "2026-02-30T00:00:01.000Z") is None
