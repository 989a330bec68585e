"""`telemetryctl import claude-code|codex`: totals per model and per day, computed by hand."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import Daemon, ctl
from telemetryd import events, wire
from telemetryd.client import importer
from test_client import Peer, read_all
from test_client import line as reply_line

pytestmark = pytest.mark.usefixtures("agent_home")

SAMPLES = Path("/work/shared/samples")
TRANSCRIPTS = SAMPLES / "claude-code" / "transcripts"
ROLLOUTS = SAMPLES / "codex"


def totals(**counts: float) -> dict[str, Any]:
    """A per-model / per-day row: unset counts are 0; total = the four token kinds."""
    out: dict[str, Any] = {
        "requests": 0,
        "input": 0,
        "output": 0,
        "cache_read": 0,
        "cache_creation": 0,
        "reasoning": 0,
        "total": 0,
        "cost_usd": 0.0,
    }
    out.update(counts)
    out["total"] = out["input"] + out["output"] + out["cache_read"] + out["cache_creation"]
    return out


def view(summary: importer.Summary) -> dict[str, Any]:
    """The summary as a dict, its rows with the reported cost as `cost_usd` (computed
    costs are tested in test_pricing.py)."""
    out = summary.as_dict()
    for table in ("by_model", "by_day"):
        for key, row in out[table].items():
            row = dict(row)
            row["cost_usd"] = row.pop("cost_reported_usd")
            del row["cost_computed_usd"], row["unpriced"]
            out[table][key] = row
    return out


def approx_rows(rows: dict[str, Any]) -> dict[str, Any]:
    return {k: {**v, "cost_usd": pytest.approx(v["cost_usd"])} for k, v in rows.items()}


def jsonl(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def run_json(*args: str) -> dict[str, Any]:
    result = ctl("import", *args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


# -- Claude Code: the real samples --------------------------------------------------------


def test_claude_samples_totals_by_model(agent_home: Path) -> None:
    summary = view(importer.run("claude-code", [TRANSCRIPTS], dry_run=True))
    assert summary["files"] == 5 and summary["malformed"] == 0
    # spotter short: 1 response (lines 5-10). spotter tool-heavy: 4 responses; lines 34 and
    # 37 are one response with output 25 then 173 (the larger is kept).
    opus_46 = totals(
        requests=5,
        input=3 + 3 + 1 + 3 + 47,
        output=13 + 27 + 1 + 11 + 173,
        cache_read=11515 + 17915 + 25798 + 18014 + 26504,
        cache_creation=13835 + 7883 + 208 + 8490 + 1115,
    )
    # sniffly: 4 responses (lines 3-5, 8-11, 17-18 with output 1 then 273, 21); ccusage's
    # synthetic chat: msg-alpha-1 and -3 with costUSD 0.12 and 0.56.
    sonnet_4 = totals(
        requests=4 + 2,
        input=4 + 72 + 4 + 8 + 100 + 300,
        output=3 + 1 + 273 + 1 + 50 + 125,
        cache_read=0 + 14363 + 14772 + 15409 + 10 + 40,
        cache_creation=14363 + 409 + 637 + 591 + 25 + 0,
        cost_usd=0.12 + 0.56,
    )
    opus_4 = totals(
        requests=1, input=200, output=75, cache_read=20, cache_creation=50, cost_usd=0.34
    )
    # The sub-agent transcript: 3 responses repeated over lines 2-8, 21-31 and 40.
    sonnet_45 = totals(
        requests=3,
        input=3 + 2326 + 79,
        output=3 + 3 + 1,
        cache_read=0 + 13838 + 15436,
        cache_creation=13838 + 1598 + 3378,
    )
    assert summary["by_model"] == approx_rows(
        {
            "claude-opus-4-6": opus_46,
            "claude-sonnet-4-20250514": sonnet_4,
            "claude-opus-4-20250514": opus_4,
            "claude-sonnet-4-5-20250929": sonnet_45,
        }
    )
    assert summary["requests"] == 15
    # 42 assistant lines with usage in all, 15 of them distinct responses.
    assert summary["repeats"] == 42 - 15


def test_claude_samples_totals_by_day(agent_home: Path) -> None:
    summary = view(importer.run("claude-code", [TRANSCRIPTS], dry_run=True))
    assert sorted(summary["by_day"]) == [
        "2025-06-10",
        "2026-01-09",
        "2026-01-10",
        "2026-02-10",
        "2026-02-12",
    ]
    day = summary["by_day"]
    assert day["2025-06-10"]["requests"] == 4  # sniffly
    assert (
        day["2026-01-09"]
        == approx_rows(
            {
                "d": totals(
                    requests=2,
                    input=100 + 200,
                    output=50 + 75,
                    cache_read=10 + 20,
                    cache_creation=25 + 50,
                    cost_usd=0.12 + 0.34,
                )
            }
        )["d"]
    )
    assert (
        day["2026-01-10"]
        == approx_rows(
            {"d": totals(requests=1, input=300, output=125, cache_read=40, cost_usd=0.56)}
        )["d"]
    )
    assert day["2026-02-10"]["requests"] == 5  # both spotter sessions, opus 4.6
    assert day["2026-02-12"]["input"] == 2408  # the sub-agent


# -- Claude Code: a hand-built fixture ---------------------------------------------------------


def assistant(
    msg: str,
    req: str | None,
    ts: str,
    *,
    inp: int,
    out: int,
    read: int = 0,
    write: int = 0,
    model: str = "claude-sonnet-4-5",
    session: str = "sess-a",
    sidechain: bool = False,
    cost: float | None = None,
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "type": "assistant",
        "sessionId": session,
        "isSidechain": sidechain,
        "timestamp": ts,
        "uuid": f"u-{msg}-{out}-{ts}",
        "message": {
            "id": msg,
            "model": model,
            "role": "assistant",
            "content": [{"type": "text", "text": "..."}],
            "usage": {
                "input_tokens": inp,
                "output_tokens": out,
                "cache_read_input_tokens": read,
                "cache_creation_input_tokens": write,
            },
        },
    }
    if req is not None:
        line["requestId"] = req
    if cost is not None:
        line["costUSD"] = cost
    return line


def claude_fixture(root: Path) -> Path:
    project = root / "projects" / "-home-u-app"
    jsonl(
        project / "sess-a.jsonl",
        [
            {"type": "summary", "summary": "a session"},
            {
                "type": "user",
                "sessionId": "sess-a",
                "timestamp": "2026-03-01T23:59:00.000Z",
                "message": {"role": "user", "content": "hello"},
            },
            # m1 streamed over three lines: output 5, 5, then 40 (the last is kept).
            assistant("m1", "r1", "2026-03-01T23:59:10.000Z", inp=10, out=5, read=1000, write=200),
            assistant("m1", "r1", "2026-03-01T23:59:11.000Z", inp=10, out=5, read=1000, write=200),
            "{not json at all",
            assistant("m1", "r1", "2026-03-01T23:59:12.000Z", inp=10, out=40, read=1000, write=200),
            # m2 as a sidechain copy first, then the main copy with the same usage: counted once.
            assistant(
                "m2", "r2", "2026-03-02T00:00:05.000Z", inp=3, out=7, read=1200, sidechain=True
            ),
            assistant("m2", "r2", "2026-03-02T00:00:05.000Z", inp=3, out=7, read=1200),
            # Claude Code's own placeholder: not an API request.
            assistant(
                "m-syn", "r-syn", "2026-03-02T00:00:06.000Z", inp=0, out=0, model="<synthetic>"
            ),
            # Another model, another day, with a reported cost.
            assistant(
                "m3",
                "r3",
                "2026-03-02T10:00:00.000Z",
                inp=100,
                out=60,
                write=50,
                model="claude-opus-4-6",
                cost=0.5,
            ),
            # An old-format line without ids: counted as itself.
            assistant("m4", None, "2026-03-02T11:00:00.000Z", inp=1, out=2),
        ],
    )
    # A resumed session repeats m1 (its final form) and adds m5.
    jsonl(
        project / "sess-b.jsonl",
        [
            assistant(
                "m1",
                "r1",
                "2026-03-01T23:59:12.000Z",
                inp=10,
                out=40,
                read=1000,
                write=200,
                session="sess-b",
            ),
            assistant(
                "m5", "r5", "2026-03-03T08:00:00.000Z", inp=20, out=30, read=500, session="sess-b"
            ),
        ],
    )
    # A sub-agent transcript.
    jsonl(
        project / "sess-a" / "subagents" / "agent-x.jsonl",
        [
            assistant(
                "m6",
                "r6",
                "2026-03-02T00:30:00.000Z",
                inp=4,
                out=8,
                read=300,
                write=100,
                sidechain=True,
                model="claude-haiku-4-5",
            ),
            assistant(
                "m6",
                "r6",
                "2026-03-02T00:30:01.000Z",
                inp=4,
                out=9,
                read=300,
                write=100,
                sidechain=True,
                model="claude-haiku-4-5",
            ),
        ],
    )
    return root


FIXTURE_BY_MODEL = {
    # m1 (10/40/1000/200), m2 (3/7/1200/0), m4 (1/2), m5 (20/30/500)
    "claude-sonnet-4-5": totals(
        requests=4,
        input=10 + 3 + 1 + 20,
        output=40 + 7 + 2 + 30,
        cache_read=1000 + 1200 + 500,
        cache_creation=200,
    ),
    "claude-opus-4-6": totals(requests=1, input=100, output=60, cache_creation=50, cost_usd=0.5),
    "claude-haiku-4-5": totals(requests=1, input=4, output=9, cache_read=300, cache_creation=100),
}
FIXTURE_BY_DAY = {
    "2026-03-01": totals(requests=1, input=10, output=40, cache_read=1000, cache_creation=200),
    # m2, m3, m4, m6
    "2026-03-02": totals(
        requests=4,
        input=3 + 100 + 1 + 4,
        output=7 + 60 + 2 + 9,
        cache_read=1200 + 300,
        cache_creation=50 + 100,
        cost_usd=0.5,
    ),
    "2026-03-03": totals(requests=1, input=20, output=30, cache_read=500),
}


def test_claude_fixture_totals(tmp_path: Path) -> None:
    root = claude_fixture(tmp_path / "claude")
    summary = view(importer.run("claude-code", [root], dry_run=True))
    assert summary["files"] == 3
    assert summary["malformed"] == 1
    # where it is, so that it can be found without importing file by file
    (where,) = summary["malformed_files"]
    path, _, count = where.rpartition(": ")
    assert count == "1" and Path(path).is_relative_to(root)
    assert "{not json at all" in Path(path).read_text()  # (the file that holds it)
    assert summary["requests"] == 6
    assert summary["by_model"] == approx_rows(FIXTURE_BY_MODEL)
    assert summary["by_day"] == approx_rows(FIXTURE_BY_DAY)


def test_claude_default_locations(
    agent_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    claude_fixture(agent_home / ".claude")  # ~/.claude/projects
    summary = view(importer.run("claude-code", dry_run=True))
    assert (summary["files"], summary["requests"]) == (3, 6)
    # CLAUDE_CONFIG_DIR (a second account, say) replaces ~/.claude, as for ccusage and
    # Claude Code: ~/.claude may hold the other account's usage
    other = tmp_path / "cfg"
    shutil.copytree(TRANSCRIPTS, other / "projects" / "p")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", f"{tmp_path / 'missing'},{other}")
    summary = view(importer.run("claude-code", dry_run=True, rescan=True))
    assert (summary["files"], summary["requests"]) == (5, 15)


def test_claude_since(tmp_path: Path) -> None:
    root = claude_fixture(tmp_path / "claude")
    summary = view(
        importer.run(
            "claude-code", [root], dry_run=True, since=datetime.fromisoformat("2026-03-02T05:00:00")
        )
    )
    assert sorted(summary["by_day"]) == ["2026-03-02", "2026-03-03"]
    assert summary["requests"] == 3  # m3, m4 and m5; m2 and m6 are before 05:00
    assert summary["before_since"] == 3  # m1, m2, m6


def test_the_dedup_window_is_bounded_and_still_exact(tmp_path: Path) -> None:
    # 3 x the window of distinct responses, each written twice in a row (output 1, then 2).
    n = importer.DEDUP_WINDOW * 3
    lines = []
    for i in range(n):
        ts = "2026-04-01T00:00:00.000Z"
        lines.append(assistant(f"m{i}", f"r{i}", ts, inp=1, out=1))
        lines.append(assistant(f"m{i}", f"r{i}", ts, inp=1, out=2))
    path = jsonl(tmp_path / "big.jsonl", lines)
    summary = view(importer.run("claude-code", [path], dry_run=True))
    assert summary["requests"] == n
    assert summary["by_model"]["claude-sonnet-4-5"]["output"] == 2 * n


def test_an_over_long_line_is_skipped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "MAX_LINE", 1000)
    path = jsonl(
        tmp_path / "long.jsonl",
        [
            assistant("m1", "r1", "2026-04-01T00:00:00.000Z", inp=1, out=1),
            {"type": "user", "message": {"content": "x" * 5000}},
            assistant("m2", "r2", "2026-04-01T00:00:00.000Z", inp=1, out=1),
        ],
    )
    summary = view(importer.run("claude-code", [path], dry_run=True))
    assert summary["malformed"] == 1
    assert summary["requests"] == 2


# -- sending, and importing twice ------------------------------------------------------------


def test_claude_import_into_the_daemon_and_again(running_daemon: Daemon, tmp_path: Path) -> None:
    root = claude_fixture(tmp_path / "claude")
    first = run_json("claude-code", str(root))
    # 6 requests, the prompt "hello", and agent-x's activation (agent_start, agent_stop).
    assert (first["sent"], first["accepted"], first["duplicates"], first["rejected"]) == (
        9,
        9,
        0,
        0,
    )
    assert (first["requests"], first["prompts"], first["agents"]) == (6, 1, 1)
    everything = running_daemon.journal_events()
    assert len(everything) == 9
    journaled = [e for e in everything if e["type"] == "api_request"]
    assert len(journaled) == 6
    m3 = next(e for e in journaled if e["agent"]["model"] == "claude-opus-4-6")
    assert m3 == {
        "type": "api_request",
        "v": 1,
        "id": m3["id"],
        "ts": "2026-03-02T10:00:00Z",
        "source": "claude-code",
        "session_id": "sess-a",
        "agent": {"model": "claude-opus-4-6", "provider": "anthropic"},
        "attrs": {"imported": True, "project": "-home-u-app"},
        "received_at": m3["received_at"],
        "tokens": {
            "source": "actual",
            "input": 100,
            "output": 60,
            "cache_creation": 50,
            "total": 210,
        },
        "cost_usd": 0.5,
        "cost_source": "reported",
    }
    haiku = next(e for e in journaled if e["agent"]["model"] == "claude-haiku-4-5")
    assert haiku["agent"]["type"] == "subagent"

    second = run_json("claude-code", str(root))  # unchanged files are not read again
    assert (second["files"], second["files_unchanged"], second["sent"]) == (0, 3, 0)
    third = run_json("claude-code", str(root), "--rescan")  # read again: same ids
    assert (third["sent"], third["accepted"], third["duplicates"]) == (9, 0, 9)
    assert {e["id"] for e in running_daemon.journal_events()} == {e["id"] for e in everything}
    assert len(running_daemon.journal_events()) == 9


def test_an_appended_session_sends_only_its_new_requests(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    root = claude_fixture(tmp_path / "claude")
    run_json("claude-code", str(root))
    path = root / "projects" / "-home-u-app" / "sess-b.jsonl"
    with path.open("a") as f:
        f.write(json.dumps(assistant("m7", "r7", "2026-03-04T00:00:00.000Z", inp=1, out=1)) + "\n")
    again = run_json("claude-code", str(root))
    # The file grew: only its new line's request is sent; the two events of the lines the
    # first import sent are not sent again.
    assert (again["files"], again["sent"], again["accepted"], again["duplicates"]) == (1, 1, 1, 0)
    assert (again["requests"], again["earlier"]) == (1, 2)
    assert len(running_daemon.journal_events()) == 10  # 7 requests, a prompt, agent-x's two


@pytest.mark.parametrize(
    ("agent", "sample", "cut"),
    [
        ("claude-code", TRANSCRIPTS / "spotter_tool_heavy_session_v2.1.38.jsonl", 11),
        (
            "codex",
            ROLLOUTS / "rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff.jsonl",
            None,
        ),
    ],
)
def test_a_session_that_grew_past_the_dedup_window_is_not_journaled_twice(
    daemon_factory: Any, tmp_path: Path, agent: str, sample: Path, cut: int | None
) -> None:
    """With a dedup window of one id, the daemon journals again anything sent again: an
    import of a grown file must send the events of its new lines only, and all of them."""
    daemon = daemon_factory(["--set", "ingest.dedup-window=1"]).start()
    lines = sample.read_text().splitlines(keepends=True)
    cut = cut or len(lines) // 2
    path = tmp_path / "sessions" / sample.name  # (a rollout's name gives its session)
    path.parent.mkdir()
    path.write_text("".join(lines[:cut]))
    first = run_json(agent, str(path.parent))
    with path.open("a") as f:
        f.writelines(lines[cut:])
    again = run_json(agent, str(path.parent))
    whole = importer.run(agent, [sample], dry_run=True)
    assert first["sent"] > 0 and again["sent"] > 0 and again["earlier"] == first["sent"]
    assert first["sent"] + again["sent"] == whole.built()
    assert first["requests"] + again["requests"] == whole.requests
    events = daemon.journal_events()
    assert len(events) == len({e["id"] for e in events}) == whole.built()


def test_a_file_rewritten_in_place_is_read_as_new(running_daemon: Daemon, tmp_path: Path) -> None:
    """Same inode, larger, but not the same beginning: nothing of it counts as sent."""
    short = (TRANSCRIPTS / "spotter_short_session_v2.1.38.jsonl").read_bytes()
    heavy = (TRANSCRIPTS / "spotter_tool_heavy_session_v2.1.38.jsonl").read_bytes()
    assert len(heavy) > len(short)
    path = tmp_path / "projects" / "p" / "s.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(short)
    inode = path.stat().st_ino
    first = run_json("claude-code", str(tmp_path))
    with path.open("r+b") as f:  # another session written over it, in the same file
        f.truncate(0)
        f.write(heavy)
    assert path.stat().st_ino == inode and path.stat().st_size > len(short)
    again = run_json("claude-code", str(tmp_path))
    whole = importer.run("claude-code", [path], dry_run=True, rescan=True)
    assert (again["earlier"], again["requests"]) == (0, whole.requests)
    assert again["sent"] == whole.built() and first["sent"] > 0
    requests = {e["id"] for e in running_daemon.journal_events() if e["type"] == "api_request"}
    assert len(requests) == first["requests"] + whole.requests


def test_a_rescan_of_one_directory_keeps_the_record_of_the_others(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    """`--rescan a` reads a's files again; b's stay recorded (they were forgotten, so the
    next import read them whole and sent all of their events again)."""
    for name in ("a", "b"):
        target = tmp_path / name / "s.jsonl"
        target.parent.mkdir()
        shutil.copy(TRANSCRIPTS / "spotter_short_session_v2.1.38.jsonl", target)
    run_json("claude-code", str(tmp_path / "a"), str(tmp_path / "b"))
    rescan = run_json("claude-code", "--rescan", str(tmp_path / "a"))
    assert (rescan["files"], rescan["files_unchanged"]) == (1, 0)
    both = run_json("claude-code", str(tmp_path / "a"), str(tmp_path / "b"))
    assert (both["files"], both["files_unchanged"], both["sent"]) == (0, 2, 0)


def test_a_time_that_cannot_be_read_keeps_its_request(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    """The daemon refuses an event whose time is not RFC 3339, at every import (and with a
    refusal the import records nothing), and stamps one with no time with the time it
    arrives: a request made months ago would count today, at today's price. The importer
    gives each the time of the event before and keeps what the file said."""
    path = tmp_path / "projects" / "p" / "s.jsonl"
    path.parent.mkdir(parents=True)
    shutil.copy(TRANSCRIPTS / "spotter_short_session_v2.1.38.jsonl", path)
    usage = next(json.loads(line) for line in path.read_text().splitlines() if '"usage"' in line)
    said = {"bad": "2026-13-45T99:00:00Z", "none": None, "number": 1773446400000}
    with path.open("a") as f:
        for name, when in said.items():
            usage.update(timestamp=when, requestId=f"req_{name}_time")
            if when is None:
                del usage["timestamp"]
            usage["message"]["id"] = f"msg_{name}_time"
            f.write(json.dumps(usage) + "\n")
    hour_ago = time.time() - 3600  # (a session written to now would hold its last request)
    os.utime(path, (hour_ago, hour_ago))
    first = run_json("claude-code", str(tmp_path))
    assert (first["rejected"], first["bad_times"], first["held_back"]) == (0, 3, 0)
    stored = [
        e
        for e in running_daemon.journal_events()
        if e["type"] == "api_request" and e["attrs"].get("unreadable_ts")
    ]
    said_there = sorted(e["attrs"]["unreadable_ts"] for e in stored)
    assert said_there == ["2026-13-45T99:00:00Z", "missing", "missing"]  # (a number: no text)
    written = [json.loads(line).get("timestamp") for line in path.read_text().splitlines()]
    times = [datetime.fromisoformat(t) for t in written if isinstance(t, str) and "-13-" not in t]
    for event in stored:
        # a time of the file's own: the event's before it
        assert min(times) <= datetime.fromisoformat(event["ts"]) <= max(times)
    assert run_json("claude-code", str(tmp_path))["files_unchanged"] == 1  # recorded


def test_a_damaged_state_file_is_as_good_as_none(running_daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    shutil.copy(TRANSCRIPTS / "spotter_short_session_v2.1.38.jsonl", path)
    state = importer.state_file("claude-code")
    state.parent.mkdir(parents=True, exist_ok=True)
    damaged = {"version": importer.STATE_VERSION, "files": {str(path): 5}, "tails": {str(path): 7}}
    state.write_text(json.dumps(damaged))
    first = run_json("claude-code", str(tmp_path))
    assert (first["files"], first["rejected"]) == (1, 0) and first["requests"] > 0
    assert run_json("claude-code", str(tmp_path))["files_unchanged"] == 1


def test_import_with_the_daemon_down_fails_and_records_nothing(
    state_home: Path, tmp_path: Path
) -> None:
    root = claude_fixture(tmp_path / "claude")
    result = ctl("import", "claude-code", str(root))
    assert result.returncode == 1
    assert b"not running" in result.stderr
    assert not (state_home / "import").exists()
    dry = run_json("claude-code", str(root), "--dry-run")
    assert dry["requests"] == 6 and dry["sent"] == 0


@pytest.mark.parametrize(
    "answer, words",
    [
        (reply_line(wire.Closing(wire.JOURNAL_UNAVAILABLE, "no space left")), "no space left"),
        (reply_line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 2")), "the daemon is busy"),
        (
            reply_line(wire.Summary(True, 2, 2, 0, 0))
            + reply_line(wire.Closing(wire.SHUTTING_DOWN, "the daemon is shutting down")),
            "the daemon is shutting down",
        ),
        (b"", "the daemon closed the connection without a summary"),
    ],
)
def test_an_import_the_daemon_did_not_take_fails_and_records_nothing(
    state_home: Path, tmp_path: Path, answer: bytes, words: str
) -> None:
    def serve(conn: Any) -> None:
        read_all(conn)
        conn.sendall(answer)

    peer = Peer(tmp_path, serve)
    try:
        root = claude_fixture(tmp_path / "claude")
        result = ctl("import", "claude-code", str(root), "--socket", peer.path)
    finally:
        peer.close()
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"Error: {words}"), result.stderr
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr
    assert not (state_home / "import").exists()


def test_human_summary(running_daemon: Daemon, tmp_path: Path) -> None:
    root = claude_fixture(tmp_path / "claude")
    result = ctl("import", "claude-code", str(root))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "3 files read" in text and "1 malformed" in text
    assert re.search(r"^  malformed in \S+\.jsonl: 1$", text, re.MULTILINE), text
    assert "6 requests (5 repeated lines merged), 0 tool calls, 0 tool results (0 failed)" in text
    assert "1 prompt, 1 sub-agent run; sent 9: 9 new, 0 already there, 0 rejected" in text
    assert "claude-opus-4-6" in text and "$0.50" in text


def test_options_belong_after_the_agent_but_the_environment_is_no_option(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    """`import --settle 0 claude-code` would drop the option without a word: it is a usage
    error. TELEMETRYD_SOCKET in the environment is no option given there (it was taken for
    one, and every `import NAME` failed)."""
    import subprocess

    from conftest import TELEMETRYCTL

    root = claude_fixture(tmp_path / "claude")
    for misplaced in (["--settle", "0"], ["--jobs", "0"], ["--dry-run"]):
        result = ctl("import", *misplaced, "claude-code", str(root))
        assert result.returncode == 2, result.stderr
        assert b"give the options after the agent" in result.stderr
    env = dict(os.environ, TELEMETRYD_SOCKET=running_daemon.events_socket)
    result = subprocess.run(
        [TELEMETRYCTL, "import", "claude-code", "--json", str(root)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accepted"] == 9


def test_a_missing_path_is_an_error(running_daemon: Daemon, tmp_path: Path) -> None:
    result = ctl("import", "claude-code", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert b"does not exist" in result.stderr


# -- Codex ----------------------------------------------------------------------------------


def test_codex_samples_skip_reemitted_totals(agent_home: Path) -> None:
    rollout = ROLLOUTS / "rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff.jsonl"
    summary = view(importer.run("codex", [rollout], dry_run=True))
    # 12 token_count lines: 1 with info null, 5 re-emitting an unchanged total, 6 requests.
    assert summary["requests"] == 6
    assert summary["repeats"] == 5
    # last_token_usage of the 6 requests; input excludes the cached part.
    inputs = [42772, 44218, 48969, 49326, 49647, 63441]
    cached = [3456, 42880, 44288, 49152, 49408, 49664]
    outputs = [204, 96, 245, 179, 113, 286]
    reasoning = [124, 17, 143, 81, 22, 96]
    assert summary["by_model"] == approx_rows(
        {
            "gpt-5.3-codex": totals(
                requests=6,
                input=sum(inputs) - sum(cached),
                cache_read=sum(cached),
                output=sum(outputs),
                reasoning=sum(reasoning),
            )
        }
    )
    # The six requests add up to the rollout's final cumulative total.
    assert summary["by_model"]["gpt-5.3-codex"]["total"] == 299496
    assert summary["by_day"]["2026-02-23"]["requests"] == 6


def test_codex_all_samples(agent_home: Path) -> None:
    summary = view(importer.run("codex", [ROLLOUTS], dry_run=True))
    assert summary["files"] == 4
    assert summary["by_model"]["gpt-5.3-codex"]["requests"] == 6 + 1 + 1
    # ccusage's synthetic session: its totals say reasoning is on top of output.
    assert (
        summary["by_model"]["gpt-5.2-codex"]
        == approx_rows(
            {"m": totals(requests=1, input=750, cache_read=250, output=200, reasoning=75)}
        )["m"]
    )
    # The rate-limit fixture has totals only: deltas 100 then 100, no model.
    assert summary["by_model"]["unknown"] == approx_rows({"m": totals(requests=2, input=200)})["m"]


def codex_fixture(root: Path) -> Path:
    def usage(i: int, c: int, o: int, r: int) -> dict[str, int]:
        return {
            "input_tokens": i,
            "cached_input_tokens": c,
            "output_tokens": o,
            "reasoning_output_tokens": r,
            "total_tokens": i + o,
        }

    def count(ts: str, total: dict[str, int] | None, last: dict[str, int] | None) -> Any:
        info = None if total is None else {"total_token_usage": total}
        if info is not None and last is not None:
            info["last_token_usage"] = last
        return {
            "timestamp": ts,
            "type": "event_msg",
            "payload": {"type": "token_count", "info": info, "rate_limits": {}},
        }

    path = (
        root
        / "sessions"
        / "2026"
        / "03"
        / "05"
        / ("rollout-2026-03-05T10-00-00-11111111-2222-3333-4444-555555555555.jsonl")
    )
    jsonl(
        path,
        [
            {
                "timestamp": "2026-03-05T10:00:00.000Z",
                "type": "session_meta",
                "payload": {
                    "id": "11111111-2222-3333-4444-555555555555",
                    "cwd": "/src/x",
                    "model_provider": "openai",
                },
            },
            {
                "timestamp": "2026-03-05T10:00:01.000Z",
                "type": "turn_context",
                "payload": {"model": "gpt-5-codex", "cwd": "/src/x"},
            },
            count("2026-03-05T10:00:02.000Z", None, None),  # rate limits only
            # request 1: last 1000 (cached 250), out 100 (reasoning 40)
            count("2026-03-05T10:00:03.000Z", usage(1000, 250, 100, 40), usage(1000, 250, 100, 40)),
            count("2026-03-05T10:00:04.000Z", usage(1000, 250, 100, 40), usage(1000, 250, 100, 40)),
            "{broken",
            # request 2: no last_token_usage -> the delta: 3000-1000, 1500-250, 160-100, 50-40
            count("2026-03-05T10:00:05.000Z", usage(3000, 1500, 160, 50), None),
            {
                "timestamp": "2026-03-06T09:00:00.000Z",
                "type": "turn_context",
                "payload": {"model": "gpt-5"},
            },
            # request 3, next day, other model: last 500 (cached 400), out 20
            count("2026-03-06T09:00:01.000Z", usage(3500, 1900, 180, 50), usage(500, 400, 20, 0)),
        ],
    )
    archived = root / "archived_sessions" / "rollout-old.jsonl"
    jsonl(
        archived,
        [
            {
                "timestamp": "2026-01-01T00:00:00.000Z",
                "type": "turn_context",
                "payload": {"model": "gpt-5"},
            },
            count("2026-01-01T00:00:01.000Z", usage(10, 0, 5, 0), usage(10, 0, 5, 0)),
        ],
    )
    return root


def test_codex_fixture_totals_from_the_default_locations(agent_home: Path) -> None:
    codex_fixture(agent_home / ".codex")
    summary = view(importer.run("codex", dry_run=True))
    assert summary["files"] == 2
    assert summary["malformed"] == 1
    assert summary["repeats"] == 1
    assert summary["by_model"] == approx_rows(
        {
            "gpt-5-codex": totals(
                requests=2,
                input=(1000 - 250) + (2000 - 1250),
                cache_read=250 + 1250,
                output=100 + 60,
                reasoning=40 + 10,
            ),
            "gpt-5": totals(requests=2, input=(500 - 400) + 10, cache_read=400, output=20 + 5),
        }
    )
    assert summary["by_day"] == approx_rows(
        {
            "2026-01-01": totals(requests=1, input=10, output=5),
            "2026-03-05": totals(
                requests=2, input=750 + 750, cache_read=1500, output=160, reasoning=50
            ),
            "2026-03-06": totals(requests=1, input=100, cache_read=400, output=20),
        }
    )


def test_codex_import_into_the_daemon_twice(running_daemon: Daemon, agent_home: Path) -> None:
    codex_fixture(agent_home / ".codex")
    first = run_json("codex")
    assert (first["sent"], first["accepted"]) == (4, 4)
    events = running_daemon.journal_events()
    request = next(e for e in events if e["ts"] == "2026-03-05T10:00:05Z")
    assert request["session_id"] == "11111111-2222-3333-4444-555555555555"
    assert request["agent"] == {"model": "gpt-5-codex", "provider": "openai"}
    assert request["tokens"] == {
        "source": "actual",
        "input": 750,
        "output": 60,
        "cache_read": 1250,
        "reasoning": 10,
        "total": 2060,
    }
    assert run_json("codex")["sent"] == 0
    again = run_json("codex", "--rescan")
    assert (again["sent"], again["accepted"], again["duplicates"]) == (4, 0, 4)
    assert len(running_daemon.journal_events()) == 4


def test_an_exported_request_stands_for_one_imported_request() -> None:
    """R21: one request exported over OTLP left out every imported request of its session
    with the same counts within the window; it stands for one, the nearest in time."""
    key = importer.exported_key("s", 1000, 0, 100)

    def request(ts: str) -> dict[str, Any]:
        tokens = {"source": "actual", "input": 1000, "output": 100}
        return {"session_id": "s", "ts": ts, "tokens": tokens}

    at = datetime.fromisoformat("2026-03-01T10:00:00+00:00").timestamp()
    exported = {key: [at - 500, at + 0.5]}
    assert importer._exported(exported, request("2026-03-01T10:00:00.000Z"))  # (takes +0.5)
    assert exported[key] == [at - 500]
    assert importer._exported(exported, request("2026-03-01T10:01:00.000Z"))  # (takes -500)
    assert not importer._exported(exported, request("2026-03-01T10:02:00.000Z"))
    other = {key: [at]}
    assert not importer._exported(other, request("2026-03-01T10:10:00.001Z"))  # (past 600 s)
    assert not importer._exported(other, {**request("2026-03-01T10:00:00Z"), "session_id": "t"})


def test_a_request_before_since_is_counted_so_even_when_exported(agent_home: Path) -> None:
    """--since: a request the export holds that is also before the cut was counted among
    the repeats, not in before_since."""
    rollout = ROLLOUTS / "rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff.jsonl"
    session = "019c8bfe-ec25-79e0-97d7-bda6a9c575ff"
    first = datetime.fromisoformat("2026-02-23T19:34:39.388+00:00").timestamp()
    key = importer.exported_key(session, 42772 - 3456, 3456, 204)
    late = datetime.fromisoformat("2026-02-24T00:00:00+00:00")
    cut = importer.run("codex", [rollout], dry_run=True, since=late, exported={key: [first]})
    assert (cut.requests, cut.before_since, cut.repeats) == (0, 6, 5)
    kept = importer.run("codex", [rollout], dry_run=True, exported={key: [first]})
    assert (kept.requests, kept.repeats) == (5, 6)  # (the exported one left out)


def test_nothing_new_needs_no_daemon(running_daemon: Daemon, tmp_path: Path) -> None:
    """With every file unchanged since the last import there is nothing to send: the
    import succeeds with the daemon stopped, and reads nothing."""
    root = claude_fixture(tmp_path / "claude")
    first = run_json("claude-code", str(root))
    assert (first["files"], first["accepted"]) == (3, 9)
    assert running_daemon.stop() == 0
    again = run_json("claude-code", str(root))
    assert (again["files"], again["files_unchanged"], again["sent"], again["bytes"]) == (0, 3, 0, 0)
    touched = root / "projects" / "-home-u-app" / "sess-a.jsonl"
    touched.write_bytes(touched.read_bytes() + b"\n")  # changed: to be read, so sent
    down = ctl("import", "claude-code", str(root))
    assert down.returncode == 1 and b"not running" in down.stderr


def _rglob_resolved(start: Path, globs: tuple[str, ...]) -> set[tuple[str, str]]:
    """What ``rglob`` and ``resolve`` find: the rule :func:`agent_files.walk` keeps."""
    found = set()
    for glob in globs:
        for path in start.rglob(glob):
            if path.is_file():
                found.add((str(path.resolve()), str(path)))
    return found


def test_walk_finds_what_rglob_finds(tmp_path: Path) -> None:
    """Files in nested and hidden directories, links to files (resolved to their
    target), a link to a directory (not followed, as rglob does not), a directory whose
    name matches, names that do not match, a start that is itself a link."""
    from telemetryd.client import agent_files

    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "target.jsonl").write_text("{}\n")
    (outside / "deep" / "linked-dir.jsonl").write_text("{}\n")
    tree = tmp_path / "real"
    (tree / "p" / "sess" / "subagents").mkdir(parents=True)
    (tree / ".hidden").mkdir()
    (tree / "p" / "a.jsonl").write_text("{}\n")
    (tree / "p" / "sess" / "subagents" / "agent-1.jsonl").write_text("{}\n")
    (tree / ".hidden" / "h.json").write_text("{}\n")
    (tree / "p" / "notes.txt").write_text("x")
    (tree / "p" / "dir.jsonl").mkdir()
    (tree / "p" / "link.jsonl").symlink_to(outside / "target.jsonl")
    (tree / "p" / "dangling.jsonl").symlink_to(tmp_path / "missing.jsonl")
    (tree / "p" / "outside-dir").symlink_to(outside / "deep", target_is_directory=True)
    start = tmp_path / "start"
    start.symlink_to(tree, target_is_directory=True)
    for globs in (("*.jsonl",), ("*.json", "*.jsonl"), ("agent-1.jsonl",)):
        want = _rglob_resolved(start, globs)
        got = set(agent_files.walk(start, globs))
        assert got == want and want
    paths = {resolved for resolved, _ in agent_files.walk(start, ("*.jsonl",))}
    assert str(outside / "target.jsonl") in paths
    assert not any("linked-dir" in p for p in paths)
    assert importer.discover([start], [], ("*.jsonl",)) == sorted(
        Path(r) for r, _ in _rglob_resolved(start, ("*.jsonl",))
    )


def test_import_runs_alone_as_it_runs_under_the_cli() -> None:
    """`telemetryctl import` goes straight to its group (client/main.py): its help,
    an agent's help and a usage error read as through the whole command line."""
    import subprocess
    import sys

    through_cli = (
        "import sys; from telemetryd.client.cli import cli; "
        "cli.main(args=sys.argv[1:], prog_name='telemetryctl')"
    )
    for args in (["--help"], ["-h"], ["codex", "--help"], ["nonsense"]):
        direct = ctl("import", *args)
        through = subprocess.run(
            [sys.executable, "-c", through_cli, "import", *args], capture_output=True, check=False
        )
        assert direct.returncode == through.returncode, args
        assert (direct.stdout, direct.stderr) == (through.stdout, through.stderr), args
        assert direct.stdout.startswith(b"Usage: telemetryctl import") or b"No such" in (
            direct.stderr
        )


# -- lines and files that are not what they should be --------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "7 garbage",  # a number, then not JSON: msgspec finds the wrong type first
        '"text" then more',
        "[1,",
        '[\n  {"type": "assistant"',  # a pretty-printed JSON array, cut into lines
        "\x00\x01\x02 binary",
        '[{"type": "assistant"}, {"type": "user"}]',  # JSON, but a minified array
        "null",
    ],
)
@pytest.mark.parametrize("agent", ["claude-code", "codex", "gemini", "copilot"])
def test_a_line_that_is_not_json_is_counted_and_the_rest_imported(
    agent: str, bad: str, tmp_path: Path
) -> None:
    """Whatever a line holds, it costs that line (counted as malformed: it is no JSON
    object), in the importing process as in the reader processes: the other lines and
    files are read."""
    good = {
        "claude-code": assistant("m1", "r1", "2026-04-01T00:00:00.000Z", inp=10, out=5),
        "codex": {"timestamp": "2026-04-01T00:00:00.000Z", "type": "session_meta",
                  "payload": {"id": "s1"}},
        "gemini": {"sessionId": "s1", "projectHash": "h", "startTime": "2026-04-01T00:00:00Z"},
        "copilot": {"type": "session.start", "id": "e1", "timestamp": "2026-04-01T00:00:00Z"},
    }[agent]  # fmt: skip
    name = {"claude-code": "s.jsonl", "codex": "rollout-2026-04-01T00-00-00-s1.jsonl",
            "gemini": "session-s1.jsonl", "copilot": "events.jsonl"}[agent]  # fmt: skip
    path = jsonl(tmp_path / "d" / name, [good, bad, good])
    other = jsonl(tmp_path / "e" / name, [good])
    summary = importer.run(agent, [path, other], dry_run=True)
    broken = bad.count("\n") + 1  # (the array's lines are each malformed)
    assert summary.malformed == broken, summary.as_dict()
    assert summary.lines == 3 + broken and summary.files == 2
    assert not summary.rejections


def test_a_lone_surrogate_escape_costs_nothing_of_its_line(tmp_path: Path) -> None:
    """JSON.stringify writes a string cut inside an emoji with a lone surrogate escape
    (valid to JavaScript's and Python's parsers, refused by msgspec): the request is
    read, the escape taken as U+FFFD; an escaped backslash before "ud83d" is left be."""
    lines = []
    for n, text in enumerate(["ok \\ud83d", "plain", "x \\udc80 y", "\\\\ud83d is text"]):
        line = json.dumps(assistant(f"m{n}", f"r{n}", "2026-04-01T00:00:00.000Z", inp=100, out=50))
        lines.append(line.replace('"text": "..."', f'"text": "{text}"'))
    path = jsonl(tmp_path / "s.jsonl", lines)
    json.loads(lines[0])  # (Python's own parser takes it)
    summary = view(importer.run("claude-code", [path], dry_run=True))
    assert (summary["requests"], summary["malformed"]) == (4, 0)
    assert summary["by_model"]["claude-sonnet-4-5"]["input"] == 400
    # (the repair itself: tests/test_fastjson.py)


def test_a_line_nested_past_the_decoder_costs_nothing_of_its_file(tmp_path: Path) -> None:
    """A tool input or a tool's result nested 3,000 deep (the decoder's recursion ends
    near 1,000) lost the whole file, every request in it; now its values past
    fastjson.MAX_DEPTH are read as "…" and the lines count as they should."""
    deep = "[" * 3000 + "]" * 3000
    call = assistant("m1", "r1", "2026-04-01T00:00:00.000Z", inp=100, out=50)
    call["message"]["content"] = [
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"x": "DEEP"}}
    ]
    block = {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True, "content": "DEEP"}
    result = {
        "type": "user",
        "sessionId": "sess-a",
        "timestamp": "2026-04-01T00:00:02.000Z",
        "uuid": "u-result",
        "message": {
            "role": "user",
            "content": [block],
        },
    }
    after = assistant("m2", "r2", "2026-04-01T00:00:05.000Z", inp=7, out=3)
    lines = [json.dumps(line).replace('"DEEP"', deep) for line in (call, result, after)]
    summary = view(importer.run("claude-code", [jsonl(tmp_path / "s.jsonl", lines)], dry_run=True))
    assert summary["rejections"] == [] and summary["malformed"] == 0
    assert (summary["requests"], summary["tool_calls"], summary["tool_errors"]) == (2, 1, 1)
    assert summary["by_model"]["claude-sonnet-4-5"]["input"] == 107


def test_an_unreadable_directory_is_a_problem(tmp_path: Path) -> None:
    """A directory the import cannot read is named among the problems (its files were
    passed over without a word before). Root reads every directory: the walk runs in a
    child process without the capabilities that let it."""
    import os
    import subprocess
    import sys

    root = tmp_path / "projects"
    for name in ("a", "b"):
        line = assistant(f"m{name}", f"r{name}", "2026-04-01T00:00:00.000Z", inp=1, out=1)
        jsonl(root / name / "s.jsonl", [line])
    hidden = root / "b"
    script = (
        "import json, sys; from telemetryd.client import importer; problems = []; "
        "found = importer.discover([sys.argv[1]], [], unreadable=problems); "
        "print(json.dumps([[p.parent.name for p in found], problems]))"
    )
    argv = [sys.executable, "-c", script, str(root)]
    if os.geteuid() == 0:
        argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
                *argv]  # fmt: skip
    hidden.chmod(0)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    finally:
        hidden.chmod(0o755)
    assert result.returncode == 0, result.stderr
    found, problems = json.loads(result.stdout)
    assert found == ["a"]
    assert problems == [f"{hidden}: the directory cannot be read: Permission denied"]


def test_since_without_a_zone_is_utc_whatever_the_local_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file last written at 03:00:30Z on the day given holds a request of that day: the
    file's mtime is compared with the day's start in UTC, not in local time."""
    import os
    import time

    line = assistant("m1", "r1", "2026-11-20T03:00:00.000Z", inp=1, out=1)
    path = jsonl(tmp_path / "s.jsonl", [line])
    when = datetime.fromisoformat("2026-11-20T03:00:30+00:00").timestamp()
    os.utime(path, (when, when))
    try:
        for zone in ("UTC", "America/Los_Angeles", "Asia/Tokyo"):
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            for since in ("2026-11-20", "0001-01-01"):
                summary = importer.run(
                    "claude-code", [path], dry_run=True, since=datetime.fromisoformat(since)
                )
                assert summary.requests == 1, (zone, since)
    finally:
        monkeypatch.undo()  # (the zone as it was, for the tests after this one)
        time.tzset()


def test_a_rollout_that_names_no_session_is_a_session_of_its_own(
    running_daemon: Daemon, agent_home: Path
) -> None:
    """Two rollouts without a session id (neither a session_meta line nor a uuid in the
    name) were one session "unknown" in `report session`; each is now the session its
    file's name says, as ccusage shows them. Their event ids are as before."""
    sessions = agent_home / ".codex" / "sessions"
    sessions.mkdir(parents=True)
    names = [
        "ccusage_synthetic_session-alpha.jsonl",
        "vibecodingtracker_synthetic_rate_limits.jsonl",
    ]
    for name in names:
        shutil.copyfile(ROLLOUTS / name, sessions / name)
    assert run_json("codex")["accepted"] == 4
    requests = [e for e in running_daemon.journal_events() if e["type"] == "api_request"]
    assert sorted(e["session_id"] for e in requests) == [
        "ccusage_synthetic_session-alpha",
        "ccusage_synthetic_session-alpha",
        "vibecodingtracker_synthetic_rate_limits",
        "vibecodingtracker_synthetic_rate_limits",
    ]


def test_an_import_that_finds_nothing_says_where_it_looked(
    state_home: Path, agent_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An override naming a directory that is not there read 0 files and said nothing
    of where it had looked."""
    missing = tmp_path / "backup" / "gemini"
    monkeypatch.setenv("GEMINI_DATA_DIR", str(missing))
    result = ctl("import", "gemini", "--dry-run")
    assert result.returncode == 0
    assert result.stderr.decode() == f"no gemini files found in: {missing} (does not exist)\n"
    chats = agent_home / ".gemini" / "tmp"
    chats.mkdir(parents=True)
    monkeypatch.delenv("GEMINI_DATA_DIR")
    empty = ctl("import", "gemini", "--dry-run")
    assert empty.stderr.decode() == f"no gemini files found in: {chats}\n"


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-05T12:34:56.789Z",
        "2026-11-05T12:34:56+02:00",
        "2026-11-05t12:34:56z",
        "2026-11-05T12:34:56",  # no offset
        "2026-11-05",
        "2026-13-45T99:00:00Z",
        "2026-11-05 12:34:56Z",
        "2026-11-05T12:34:56\\u005a",  # a time once its escape is decoded: not as it stands
        '2026-11-05T12:34:56Z"',
        "2026-11-05T12:34:56Z\n",
        "\ud800",
        "",
        7,
    ],
)
def test_the_importers_time_check_agrees_with_the_daemons(ts: Any) -> None:
    """The importer keeps an event's time only where the daemon's event model takes it
    (else the daemon would refuse the whole event); its quicker check decodes the string
    as JSON, so it must not let an escape or a quote change what it reads."""
    event = {
        "type": "log",
        "id": "t",
        "source": "s",
        "level": "info",
        "component": "c",
        "event": "e",
        "ts": ts,
    }
    try:
        events.DECODER.decode(msgspec.json.encode(event))
        daemon_takes = True
    except (msgspec.ValidationError, UnicodeEncodeError):  # (a lone surrogate: no line)
        daemon_takes = False
    assert importer._readable(ts) is daemon_takes
