"""An import while a session is still being written (importer.Importer.live_after).

Claude Code writes a response's line again as each content block ends, with the output
counted so far; Gemini CLI re-appends a message as it grows. Every copy has the same event
id, and the first copy of an id is the one the daemon and the store keep. So the last
request of a file written in the last minutes is held back, and the file is read again by
the next import, until the file has settled. The expected totals are computed here from
the raw lines, apart from the importer's code.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon
from telemetryd.client import importer
from test_import import run_json

pytestmark = pytest.mark.usefixtures("agent_home")

TRANSCRIPTS = Path("/work/shared/samples/claude-code/transcripts")
TOOL_HEAVY = TRANSCRIPTS / "spotter_tool_heavy_session_v2.1.38.jsonl"
SUBAGENT = TRANSCRIPTS / "spotter_subagent_agent-aac57f5_v2.1.39.jsonl"
STREAMING = "msg_019BN3FRqb7NU4DgBN5jdsym"  # lines 34 and 37 of TOOL_HEAVY: output 25, 173


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def moved(sample: Path, end: datetime) -> list[str]:
    """The sample's lines with every timestamp moved by one amount, the last one to ``end``:
    the session as if it were being written now."""
    records = [json.loads(line) for line in sample.read_text().splitlines()]
    last = max(_time(r["timestamp"]) for r in records if "timestamp" in r)
    for record in records:
        if "timestamp" in record:
            when = _time(record["timestamp"]) + (end - last)
            record["timestamp"] = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return [json.dumps(record) + "\n" for record in records]


def output_by_response(lines: list[str]) -> dict[str, int]:
    """Each response's output tokens from its copy with the largest token total (R1)."""
    best: dict[str, tuple[int, int]] = {}
    for line in lines:
        record = json.loads(line)
        message = record.get("message")
        if record.get("type") != "assistant" or not isinstance(message, dict):
            continue
        usage = message["usage"]
        total = sum(usage.get(k) or 0 for k in ("input_tokens", "output_tokens"))
        total += usage.get("cache_read_input_tokens") or 0
        total += usage.get("cache_creation_input_tokens") or 0
        if message["id"] not in best or total > best[message["id"]][0]:
            best[message["id"]] = (total, usage["output_tokens"])
    return {mid: output for mid, (_, output) in best.items()}


def settled(path: Path) -> None:
    """The file as it is once nothing wrote to it for longer than the settling time."""
    old = time.time() - importer.SETTLE_S - 60
    os.utime(path, (old, old))


def stored_outputs(daemon: Daemon) -> dict[str, int]:
    requests = [e for e in daemon.journal_events() if e["type"] == "api_request"]
    assert len({e["id"] for e in requests}) == len(requests)  # no id journaled twice
    return {e["id"]: e["tokens"]["output"] for e in requests}


def test_a_response_still_streaming_is_held_back_until_its_file_settles(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    lines = moved(TOOL_HEAVY, datetime.now(UTC) - timedelta(seconds=30))
    expected = output_by_response(lines)
    assert (expected[STREAMING], sum(expected.values()), len(expected)) == (173, 212, 4)
    path = tmp_path / "projects" / "-home-u-app" / "live.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(lines[:34]))  # written up to the first copy (output 25)

    first = run_json("claude-code", str(tmp_path))
    assert (first["requests"], first["held_back"], first["held_files"]) == (3, 1, [str(path)])
    partial_outputs = sorted(stored_outputs(running_daemon).values())
    assert sorted(v for k, v in expected.items() if k != STREAMING) == partial_outputs

    again = run_json("claude-code", str(tmp_path))  # the file was not recorded as imported
    assert (again["files"], again["files_unchanged"], again["held_back"]) == (1, 0, 1)

    with path.open("a") as f:
        f.writelines(lines[34:])  # the response ends (output 173); the session goes on
    grown = run_json("claude-code", str(tmp_path))
    assert (grown["requests"], grown["held_back"]) == (3, 1)  # still the file's last request

    settled(path)
    last = run_json("claude-code", str(tmp_path))
    assert (last["requests"], last["held_back"], last["held_files"]) == (4, 0, [])
    outputs = stored_outputs(running_daemon)
    assert sorted(outputs.values()) == sorted(expected.values())  # 173 for STREAMING, not 25
    assert sum(outputs.values()) == 212
    recorded = run_json("claude-code", str(tmp_path))  # recorded now it is complete
    assert (recorded["files"], recorded["files_unchanged"]) == (0, 1)


def test_settle_zero_takes_the_last_request_now(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    lines = moved(TOOL_HEAVY, datetime.now(UTC) - timedelta(seconds=30))
    path.write_text("".join(lines[:34]))
    held = importer.run("claude-code", [path], dry_run=True)
    assert (held.requests, held.held_back) == (3, 1)
    now = importer.run("claude-code", [path], dry_run=True, settle=0)
    assert (now.requests, now.held_back) == (4, 0)
    # what was written so far, the partial copy too (output 25)
    partial = output_by_response(lines[:34])
    assert partial[STREAMING] == 25
    assert sum(t.output for t in now.by_model.values()) == sum(partial.values())


def test_an_old_session_copied_now_is_not_held_back(tmp_path: Path) -> None:
    """A fresh copy of an old transcript (a backup restored): its file is new, its requests
    are not, and none is held back."""
    path = tmp_path / "copy.jsonl"
    path.write_bytes(TOOL_HEAVY.read_bytes())  # timestamps of February 2026
    summary = importer.run("claude-code", [path], dry_run=True)
    assert (summary.requests, summary.held_back) == (4, 0)


def test_a_sub_agent_still_running_is_held_back(tmp_path: Path) -> None:
    path = tmp_path / "session" / "subagents" / "agent-aac57f5.jsonl"
    path.parent.mkdir(parents=True)
    lines = moved(SUBAGENT, datetime.now(UTC) - timedelta(seconds=5))
    path.write_text("".join(lines))
    expected = output_by_response(lines)
    live = importer.run("claude-code", [path], dry_run=True)
    # the last response and the sub-agent's run (its agent_stop would sum a partial run)
    assert (live.requests, live.agents, live.held_back) == (len(expected) - 1, 0, 2)
    settled(path)
    done = importer.run("claude-code", [path], dry_run=True)
    assert (done.requests, done.agents, done.held_back) == (len(expected), 1, 0)
    assert sum(t.output for t in done.by_model.values()) == sum(expected.values())


def test_a_gemini_message_still_growing_is_held_back(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    now = datetime.now(UTC)

    def message(mid: str, seconds_ago: int, **tokens: int) -> str:
        counts = {"input": 0, "output": 0, "cached": 0, "thoughts": 0, "tool": 0, **tokens}
        counts["total"] = sum(counts[k] for k in ("input", "output", "thoughts", "tool"))
        ts = (now - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        record = {"id": mid, "timestamp": ts, "type": "gemini", "model": "gemini-2.5-pro"}
        return json.dumps({**record, "content": "", "tokens": counts}) + "\n"

    path = tmp_path / "p" / "chats" / "session-live.jsonl"
    path.parent.mkdir(parents=True)
    header = json.dumps({"sessionId": "s-live", "projectHash": "p", "startTime": "x"}) + "\n"
    path.write_text(
        header + message("m0", 90, input=50, output=5) + message("m1", 20, input=1000, output=10)
    )
    first = run_json("gemini", str(tmp_path))
    assert (first["requests"], first["held_back"]) == (1, 1)  # m1 is still growing
    with path.open("a") as f:  # Gemini CLI appends the message again, complete
        f.write(message("m1", 2, input=1000, output=300, cached=200, thoughts=50))
    settled(path)
    second = run_json("gemini", str(tmp_path))
    assert (second["requests"], second["held_back"]) == (2, 0)
    requests = {
        e["id"]: e["tokens"] for e in running_daemon.journal_events() if e["type"] == "api_request"
    }
    assert len(requests) == 2
    # the complete copy: input without the cached part, thoughts in output
    assert {(t["input"], t["output"], t.get("cache_read", 0)) for t in requests.values()} == {
        (50, 5, 0),
        (800, 350, 200),
    }


def test_reader_processes_hold_back_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telemetryd.client import import_pool
    from telemetryd.client.import_pool import Pool

    monkeypatch.setattr(import_pool, "BATCH_FILES", 1)  # a batch per file: both readers read
    live = tmp_path / "live.jsonl"
    live.write_text("".join(moved(TOOL_HEAVY, datetime.now(UTC) - timedelta(seconds=30))[:34]))
    old = tmp_path / "old.jsonl"
    old.write_bytes(TRANSCRIPTS.joinpath("spotter_short_session_v2.1.38.jsonl").read_bytes())
    alone = importer.run("claude-code", [live, old], dry_run=True)
    with Pool(2, min_bytes=0) as pool:
        pooled = importer.run("claude-code", [live, old], dry_run=True, pool=pool)
        assert len(pool.readers) == 2
    assert (pooled.requests, pooled.held_back, pooled.held_files) == (4, 1, [str(live)])
    assert pooled.as_dict() | {"elapsed_s": 0} == alone.as_dict() | {"elapsed_s": 0}


def test_a_request_an_earlier_import_sent_is_not_reported_held(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    """After `--settle 0` took a live session's last request, a touch of the file (it grew by
    nothing) must not report that request as held back, nor keep the file from its record."""
    path = tmp_path / "projects" / "p" / "live.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(moved(TOOL_HEAVY, datetime.now(UTC) - timedelta(seconds=30))))
    now = run_json("claude-code", "--settle", "0", str(tmp_path))
    assert (now["requests"], now["held_back"]) == (4, 0)
    with path.open("a") as f:
        f.write("\n")  # (it grew: read again, its lines all sent before)
    again = run_json("claude-code", str(tmp_path))
    assert (again["held_back"], again["sent"], again["earlier"]) == (0, 0, now["sent"])
    assert run_json("claude-code", str(tmp_path))["files_unchanged"] == 1  # recorded


def test_a_held_file_keeps_its_earlier_record(running_daemon: Daemon, tmp_path: Path) -> None:
    """A session recorded by one import, then grown while live (its last request held): the
    next import still sends only what is past the first record, not the whole file."""
    lines = moved(TOOL_HEAVY, datetime.now(UTC) - timedelta(seconds=30))
    path = tmp_path / "projects" / "p" / "live.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(lines[:11]))
    settled(path)
    first = run_json("claude-code", str(tmp_path))
    assert first["held_back"] == 0 and first["sent"] > 0
    with path.open("a") as f:
        f.writelines(lines[11:34])
    live = run_json("claude-code", str(tmp_path))
    assert (live["held_back"], live["earlier"]) == (1, first["sent"])
    with path.open("a") as f:
        f.writelines(lines[34:])
    settled(path)
    done = run_json("claude-code", str(tmp_path))
    assert (done["held_back"], done["earlier"]) == (0, first["sent"])
    outputs = stored_outputs(running_daemon)
    assert sorted(outputs.values()) == sorted(output_by_response(lines).values())


def _opencode_message(mid: str, created_ms: int, output: int, *, completed: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "role": "assistant",
        "modelID": "claude-sonnet-4-5",
        "providerID": "anthropic",
        "tokens": {
            "input": 100,
            "output": output,
            "reasoning": 0,
            "cache": {"read": 0, "write": 0},
        },
        "time": {"created": created_ms},
    }
    if completed:
        data["time"]["completed"] = created_ms + 5_000
    return {"id": mid, "session_id": "ses_live", "time_created": created_ms,
            "time_updated": created_ms, "data": data}  # fmt: skip


def test_an_opencode_message_not_yet_complete_is_held_back(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    """OpenCode writes a message's counts again after each step and marks it complete
    (`time.completed`) when its turn ends. In a database being written (here only its
    write-ahead log, as while OpenCode runs), an open message is held back; one open for
    longer than importer.OPEN_MESSAGE_S (a session that ended without completing it) is
    not."""
    import sqlite3

    from test_import_opencode import create_database, insert_rows

    now_ms = int(time.time() * 1000)
    stale = now_ms - (importer.OPEN_MESSAGE_S + 600) * 1000
    path = tmp_path / "opencode" / "opencode.db"
    path.parent.mkdir()
    create_database(path, [_opencode_message("msg_done", now_ms - 60_000, 50, completed=True)])
    writer = sqlite3.connect(path)  # (OpenCode running: the log stays until it closes)
    try:
        writer.execute("pragma journal_mode=wal")
        opened = _opencode_message("msg_open", now_ms, 10, completed=False)
        insert_rows(writer, [opened, _opencode_message("msg_stale", stale, 20, completed=False)])
        old = time.time() - 3600
        os.utime(path, (old, old))  # (the database file itself: untouched for an hour)
        assert os.path.exists(f"{path}-wal")
        first = run_json("opencode", str(path.parent))
        assert (first["requests"], first["held_back"], first["held_files"]) == (2, 1, [str(path)])
        finished = _opencode_message("msg_open", now_ms, 300, completed=True)
        writer.execute(
            "update message set data = ? where id = 'msg_open'", [json.dumps(finished["data"])]
        )
        writer.commit()
        second = run_json("opencode", str(path.parent))
        assert (second["held_back"], second["accepted"]) == (0, 1)
    finally:
        writer.close()
    outputs = sorted(
        e["tokens"]["output"] for e in running_daemon.journal_events() if e["type"] == "api_request"
    )
    assert outputs == [20, 50, 300]  # the open message once complete, never its 10


def test_parts_of_one_held_database_name_it_once() -> None:
    """Reader processes read a big database in parts; each part that holds a message back
    names the file, and the import's summary names it once."""
    total = importer.Summary(agent="opencode")
    for _ in range(3):
        part = importer.Summary(agent="opencode", held_back=1, held_files=["/x/opencode.db"])
        total.merge(part)
    assert (total.held_back, total.held_files) == (3, ["/x/opencode.db"])
