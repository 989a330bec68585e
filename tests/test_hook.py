"""`telemetryctl hook claude-code`: every real hook sample in, the right events out."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import TELEMETRYCTL, Daemon, ctl, short_home, with_stdin_open
from telemetryd import wire
from telemetryd.adapters import claude_code, claude_settings
from telemetryd.client import hook, protocol
from test_client import Peer, read_line
from test_client import line as reply_line

SAMPLES = Path("/work/shared/samples")
HOOKS = SAMPLES / "claude-code" / "hooks"
TRANSCRIPTS = SAMPLES / "claude-code" / "transcripts"
FORBIDDEN_ON_HOOK_PATH = ("msgspec", "click", "duckdb", "asyncio", "anyio", "re", "json")


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test reads or writes the real home, Claude or Codex configuration."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(home / ".claude"))
    monkeypatch.setenv("CODEX_HOME", str(home / ".codex"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    yield home


def payloads(path: Path) -> list[dict[str, Any]]:
    """The hook payloads a sample file holds (RPD's failure logger wraps each in raw_input)."""
    items = json.loads(path.read_text())
    out = []
    for item in items:
        payload = item.get("raw_input", item)
        out.append({k: v for k, v in payload.items() if k != "logged_at"})  # logger's key
    return out


SAMPLE_FILES = sorted(HOOKS.glob("*.json"))


def run_hook(payload: Any, *args: str) -> subprocess.CompletedProcess[bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return ctl("hook", "claude-code", *args, input=data)


def run_ok(payload: Any, *args: str) -> None:
    result = run_hook(payload, *args)
    assert result.returncode == 0
    assert result.stdout == b"", "Claude Code reads stdout: it must stay empty"
    assert result.stderr == b"", result.stderr.decode()


def expected(payload: dict[str, Any]) -> dict[str, Any]:
    """The event fields a payload must produce, written out per hook event."""
    name = payload["hook_event_name"]
    base: dict[str, Any] = {"source": "claude-code", "session_id": payload["session_id"]}
    tool: dict[str, Any] = {"name": payload.get("tool_name")}
    if payload.get("tool_use_id"):
        tool["use_id"] = payload["tool_use_id"]
    if payload.get("tool_input") is not None:  # its digest: blake2b-128 of sorted JSON
        text = json.dumps(payload["tool_input"], sort_keys=True, separators=(",", ":"))
        tool["input_digest"] = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    if name == "SessionStart":
        return base | {"type": "session_start", "cwd": payload["cwd"], "reason": payload["source"]}
    if name == "SessionEnd":
        return base | {"type": "session_end", "cwd": payload["cwd"], "reason": payload["reason"]}
    if name == "UserPromptSubmit":
        return base | {"type": "prompt", "length": len(payload["prompt"])}
    if name == "PreToolUse":
        return base | {"type": "tool_call", "tool": tool}
    if name == "PostToolUse":
        return base | {"type": "tool_result", "tool": tool | {"success": True}}
    if name == "PostToolUseFailure":
        return base | {
            "type": "tool_result",
            "tool": tool | {"success": False, "error": payload["error"]},
            "duration_ms": payload["duration_ms"],
        }
    if name == "SubagentStart":
        agent = {"type": payload["agent_type"], "id": payload["agent_id"]}
        return base | {"type": "agent_start", "agent": agent}
    if name == "SubagentStop":
        out = base | {"type": "agent_stop", "tokens": {"source": "unknown"}}  # not on this disk
        agent = {k[6:]: payload[k] for k in ("agent_type", "agent_id") if k in payload}
        return out | ({"agent": agent} if agent else {})
    if name == "Stop":
        return base | {"type": "custom", "name": "stop"}
    if name == "PreCompact":
        return base | {"type": "custom", "name": "pre_compact"}
    if name == "Notification":
        kind = payload.get("notification_type", "notification")
        return base | {
            "type": "alert",
            "severity": "info",
            "kind": kind,
            "message": payload["message"],
        }
    raise AssertionError(f"no expectation for {name}")


def subset(event: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    return {key: event.get(key) for key in want}


def test_samples_cover_every_documented_payload_kind() -> None:
    names = {p["hook_event_name"] for f in SAMPLE_FILES for p in payloads(f)}
    assert names == {
        "SessionStart",
        "SessionEnd",
        "UserPromptSubmit",
        "PreToolUse",
        "PostToolUse",
        "PostToolUseFailure",
        "SubagentStart",
        "SubagentStop",
        "Stop",
        "PreCompact",
        "Notification",
    }


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_sample_maps_to_the_right_event(running_daemon: Daemon, path: Path) -> None:
    items = payloads(path)
    for payload in items:
        run_ok(payload)
    journaled = running_daemon.journal_events()
    assert len(journaled) == len(items)
    for payload, event in zip(items, journaled, strict=True):
        want = expected(payload)
        assert subset(event, want) == want, (payload, event)
        attrs = event.get("attrs", {})
        if payload["hook_event_name"] not in ("SessionStart", "SessionEnd"):
            assert attrs.get("cwd") == payload["cwd"]
        assert "prompt" not in attrs  # no content by default
        # Tool use and agent ids make the event id: a hook installed twice counts once.
        if payload.get("tool_use_id"):
            assert payload["tool_use_id"] in event["id"]
    assert not (running_daemon.home / "spool").exists() or not any(
        (running_daemon.home / "spool").iterdir()
    )


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_sample_with_the_daemon_down_exits_0_silently_and_spools(
    state_home: Path, path: Path
) -> None:
    items = payloads(path)
    for payload in items:
        result = run_hook(payload)
        assert result.returncode == 0
        assert result.stdout == b""
    spool = state_home / "spool"
    lines = [
        json.loads(line)
        for f in sorted(spool.glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert len(lines) == len(items)
    assert {e["type"] for e in lines} == {expected(p)["type"] for p in items}


def test_spooled_hook_events_reach_the_journal_when_the_daemon_starts(
    state_home: Path, daemon_factory: Any
) -> None:
    items = payloads(HOOKS / "SessionStart.kesslerio.json")
    for payload in items:
        assert run_hook(payload).returncode == 0
    daemon = daemon_factory().start()
    deadline = time.monotonic() + 20
    while list((state_home / "spool").glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.02)  # the daemon replays the spool after it is ready
    assert daemon.stop() == 0
    events = daemon.journal_events()
    assert [e["reason"] for e in events] == [p["source"] for p in items]


def test_the_same_tool_event_twice_is_journaled_once(running_daemon: Daemon) -> None:
    payload = payloads(HOOKS / "PreToolUse.rpd-skill.excerpt-3-5.json")[0]
    run_ok(payload)
    run_ok(payload)  # user and project settings both installed
    assert len(running_daemon.journal_events()) == 1


# -- tool durations --------------------------------------------------------------------


def tool_payloads(use_id: str = "toolu_duration") -> tuple[dict[str, Any], dict[str, Any]]:
    pre = payloads(HOOKS / "PreToolUse.rpd-skill.excerpt-3-5.json")[0] | {"tool_use_id": use_id}
    post = {k: v for k, v in pre.items() if k != "tool_input"}
    post |= {"hook_event_name": "PostToolUse", "tool_response": {"stdout": ""}}
    return pre, post


def test_post_tool_use_duration_from_the_pre_tool_use_state(
    running_daemon: Daemon, state_home: Path
) -> None:
    pre, post = tool_payloads()
    run_ok(pre)
    state = state_home / "run" / hook.STATE_DIR
    [left] = list(state.iterdir())
    assert left.name.startswith("tool-")
    run_ok(post)
    assert list(state.iterdir()) == []  # forgotten once used
    call, result = running_daemon.journal_events()
    assert call["type"] == "tool_call" and result["type"] == "tool_result"
    assert result["tool"]["success"] is True
    assert 0 <= result["duration_ms"] < 30_000


def test_duration_ms_in_the_payload_wins(running_daemon: Daemon, state_home: Path) -> None:
    pre, post = tool_payloads("toolu_own")
    run_ok(pre)
    run_ok(post | {"duration_ms": 4321})
    assert running_daemon.journal_events()[1]["duration_ms"] == 4321
    assert list((state_home / "run" / hook.STATE_DIR).iterdir()) == []


def test_post_tool_use_without_a_pre_has_no_duration(running_daemon: Daemon) -> None:
    _, post = tool_payloads("toolu_lonely")
    run_ok(post)
    [event] = running_daemon.journal_events()
    assert "duration_ms" not in event


def test_stale_timing_files_are_swept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old = state / "tool-old"
    new = state / "tool-new"
    old.write_text("1")
    new.write_text("2")
    os.utime(old, (0, 0))
    assert hook.sweep(str(state)) == 1
    assert [p.name for p in state.iterdir()] == ["tool-new"]


def test_tool_response_reporting_failure_is_a_failed_result() -> None:
    _, post = tool_payloads("toolu_fail")
    post["tool_response"] = {"success": False, "error": "no such file"}
    [event] = claude_code.hook_events(post)
    assert event["tool"] == {
        "name": "Read",
        "use_id": "toolu_fail",
        "success": False,
        "error": "no such file",
    }


# -- sub-agents ---------------------------------------------------------------------------


def test_subagent_stop_sums_the_agent_transcript(running_daemon: Daemon, tmp_path: Path) -> None:
    transcript = tmp_path / "agent-aac57f5.jsonl"
    shutil.copy(TRANSCRIPTS / "spotter_subagent_agent-aac57f5_v2.1.39.jsonl", transcript)
    payload = payloads(HOOKS / "SubagentStop.rpd-skill.excerpt-0.json")[0]
    payload["agent_transcript_path"] = str(transcript)
    run_ok(payload)
    [event] = running_daemon.journal_events()
    # Three API responses in the transcript (lines 2-8, 21-31 and 40 repeat them per
    # content block): input 3 + 2326 + 79, cache writes 13838 + 1598 + 3378, cache reads
    # 0 + 13838 + 15436, output 3 + 3 + 1.
    assert event["tokens"] == {
        "source": "actual",
        "input": 2408,
        "output": 7,
        "cache_read": 29274,
        "cache_creation": 18814,
        "total": 2408 + 7 + 29274 + 18814,
    }
    assert event["agent"] == {
        "model": "claude-sonnet-4-5-20250929",
        "type": "tools-programmer",
        "id": "a4c1f198bc1c68118",
    }
    assert event["attrs"]["requests"] == 3
    assert event["duration_ms"] == 32_526  # 14:12:32.522 to 14:13:05.048


def test_transcript_usage_keeps_the_last_streaming_snapshot() -> None:
    # sniffly lines 17 and 18: one message with output_tokens 1, then 273.
    lines = (TRANSCRIPTS / "sniffly_fed8ce56_session_v1.0.17.jsonl").read_text().splitlines()
    found = claude_code.transcript_usage(lines)
    # Four responses: (4, 14363 written, 0 read, 3 out), (72, 409, 14363, 1),
    # (4, 637, 14772, 273), (8, 591, 15409, 1).
    assert found["requests"] == 4
    assert found["tokens"] == {
        "source": "actual",
        "input": 4 + 72 + 4 + 8,
        "output": 3 + 1 + 273 + 1,
        "cache_read": 14363 + 14772 + 15409,
        "cache_creation": 14363 + 409 + 637 + 591,
        "total": 88 + 278 + 44544 + 16000,
    }
    assert found["model"] == "claude-sonnet-4-20250514"


def test_unreadable_transcript_gives_unknown_tokens(tmp_path: Path) -> None:
    payload = payloads(HOOKS / "SubagentStop.rpd-skill.excerpt-0.json")[0]
    payload["agent_transcript_path"] = str(tmp_path / "missing.jsonl")
    events = hook.events_for(payload, hook.parse(["claude-code"]), None)
    assert events[0]["tokens"] == {"source": "unknown"}


@pytest.mark.parametrize("agent", ["claude-code", "codex"])
@pytest.mark.parametrize("kind", ["/dev/zero", "/dev/urandom", "fifo", "directory", "link"])
def test_a_transcript_that_is_not_a_regular_file_is_not_read(
    running_daemon: Daemon, tmp_path: Path, agent: str, kind: str
) -> None:
    """A device never ends, a FIFO blocks: the hook must not read either, and must not
    hang. A link to a regular file is read (it is what it points to that counts)."""
    path = tmp_path / "agent.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "link":
        path.symlink_to(TRANSCRIPTS / "spotter_subagent_agent-aac57f5_v2.1.39.jsonl")
    else:
        path = Path(kind)
    payload = payloads(HOOKS / "SubagentStop.rpd-skill.excerpt-0.json")[0]
    payload["agent_transcript_path"] = str(path)
    started = time.monotonic()
    result = ctl("hook", agent, input=json.dumps(payload).encode(), timeout=15)
    assert time.monotonic() - started < 10
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b""
    [event] = running_daemon.journal_events()
    if kind == "link" and agent == "claude-code":
        assert event["tokens"]["total"] == 50503
    elif kind != "link":
        assert event["tokens"] == {"source": "unknown"}


def test_a_transcript_over_the_size_cap_is_not_read(tmp_path: Path) -> None:
    transcript = tmp_path / "agent.jsonl"
    shutil.copy(TRANSCRIPTS / "spotter_subagent_agent-aac57f5_v2.1.39.jsonl", transcript)
    size = transcript.stat().st_size
    assert claude_code.read_transcript_usage(str(transcript), max_bytes=size) is not None
    assert claude_code.read_transcript_usage(str(transcript), max_bytes=size - 1) is None
    lines = claude_code.regular_file_lines(str(transcript), max_bytes=size)
    first = next(lines)
    with transcript.open("ab") as f:  # it grows while it is read: reading stops at the cap
        f.write(b"x" * 10)
    with pytest.raises(OSError, match="grew over"):
        for _ in lines:
            pass
    assert first.startswith("{")


def test_a_payload_over_the_cap_is_skipped_without_reading_it_all(running_daemon: Daemon) -> None:
    """An endless stdin (a hook command wired to /dev/zero) must not make the hook grow:
    it reads one byte past the cap, says so on stderr, exits 0 and sends nothing."""
    with open("/dev/zero", "rb") as endless:
        result = subprocess.run(
            [TELEMETRYCTL, "hook", "claude-code"],
            stdin=endless,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0 and result.stdout == b""
    assert f"over {hook.MAX_PAYLOAD} bytes".encode() in result.stderr
    assert running_daemon.journal_events() == []


def hook_with_stdin_open(parts: list[bytes], wait: float) -> tuple[int, bytes, bytes, float]:
    return with_stdin_open([TELEMETRYCTL, "hook", "claude-code"], parts, wait)


def test_a_whole_payload_is_taken_while_stdin_stays_open(running_daemon: Daemon) -> None:
    """A writer that keeps its end of the pipe open (a wrapper script, or a child that
    inherited it) held the hook until the agent's hook timeout killed it, and the event
    was lost. The payload is taken as soon as it is one whole JSON object; one that never
    comes whole is given up after hook.STDIN_WAIT seconds, the hook exiting 0."""
    payload = {"hook_event_name": "Stop", "session_id": "s-open", "stop_hook_active": False}
    data = json.dumps(payload).encode()
    # (in two parts: the first is no whole object)
    status, out, _, _ = hook_with_stdin_open([data[:20], data[20:] + b"\n"], hook.STDIN_WAIT - 1)
    assert (status, out) == (0, b"")
    [event] = running_daemon.journal_events()
    assert (event["type"], event["session_id"]) == ("custom", "s-open")
    status, out, err, took = hook_with_stdin_open([data[:20]], hook.STDIN_WAIT + 10)
    assert (status, out) == (0, b"") and took >= hook.STDIN_WAIT - 0.5
    assert b"no whole payload on stdin within" in err
    assert len(running_daemon.journal_events()) == 1


# -- prompts, failures, other events ----------------------------------------------------------


def test_prompt_text_only_when_asked(running_daemon: Daemon) -> None:
    payload = payloads(HOOKS / "UserPromptSubmit.kesslerio.excerpt-5-6.json")[1]
    run_ok(payload)
    run_ok(payload, "--prompt-text")
    plain, with_text = running_daemon.journal_events()
    assert plain["length"] == with_text["length"] == len(payload["prompt"])
    assert "prompt" not in plain.get("attrs", {})
    assert with_text["attrs"]["prompt"] == payload["prompt"]


@pytest.mark.parametrize(
    ("payload", "want"),
    [
        (
            {
                "hook_event_name": "StopFailure",
                "error_type": "rate_limit",
                "error": "429",
                "error_message": "Rate limit exceeded",
            },
            {"type": "error", "message": "Rate limit exceeded", "category": "rate_limit"},
        ),
        (
            {"hook_event_name": "PostCompact", "trigger": "manual"},
            {"type": "custom", "name": "post_compact", "attrs": {"trigger": "manual"}},
        ),
        (
            {"hook_event_name": "PermissionRequest", "tool_name": "Bash"},
            {"type": "custom", "name": "permission_request"},
        ),
        (
            {"hook_event_name": "SessionStart", "source": "startup", "model": "claude-opus-4-6"},
            {"type": "session_start", "agent": {"model": "claude-opus-4-6"}},
        ),
        (
            {
                "hook_event_name": "PreToolUse",
                "tool_name": "Read",
                "tool_use_id": "t1",
                "agent_id": "a1",
                "agent_type": "Explore",
                "prompt_id": "p9",
            },
            {
                "type": "tool_call",
                "agent": {"type": "Explore", "id": "a1"},
                "attrs": {"prompt_id": "p9"},
            },
        ),
    ],
    ids=["stop-failure", "post-compact", "other", "model", "inside-subagent"],
)
def test_documented_payloads_without_samples(
    running_daemon: Daemon, payload: dict[str, Any], want: dict[str, Any]
) -> None:
    run_ok({"session_id": "s-doc", **payload})
    [event] = running_daemon.journal_events()
    assert subset(event, want) == want


@pytest.mark.parametrize("stdin", [b"", b"not json", b"[1, 2]", b"\xff\xfe"])
def test_garbage_on_stdin_exits_0_and_prints_nothing_on_stdout(
    running_daemon: Daemon, stdin: bytes
) -> None:
    result = run_hook(stdin)
    assert result.returncode == 0
    assert result.stdout == b""
    assert running_daemon.journal_events() == []


def test_unknown_agent_or_option_exits_0(running_daemon: Daemon) -> None:
    for args in (["hook", "nobody"], ["hook", "claude-code", "--frobnicate"], ["hook"]):
        result = ctl(*args, input=b"{}")
        assert result.returncode == 0
        assert result.stdout == b""
        assert b"telemetryctl hook" in result.stderr


def test_help() -> None:
    result = ctl("hook", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(b"Usage: telemetryctl hook")


def test_hook_imports_nothing_heavy(running_daemon: Daemon) -> None:
    payload = payloads(HOOKS / "PreToolUse.rpd-skill.excerpt-3-5.json")[0]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", TELEMETRYCTL, "hook", "claude-code"],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == b""
    imported = set()
    for line in result.stderr.decode().splitlines():
        assert line.startswith("import time:"), line
        imported.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "telemetryd" in imported
    assert sorted(imported & set(FORBIDDEN_ON_HOOK_PATH)) == []
    assert len(running_daemon.journal_events()) == 1


# -- SessionStart context ---------------------------------------------------------------------


def test_context_at_session_start(running_daemon: Daemon) -> None:
    request = {
        "type": "api_request",
        "id": "ctx-1",
        "agent": {"model": "claude-opus-4-6"},
        "tokens": {"source": "actual", "input": 1000, "output": 500},
        "cost_usd": 1.25,
        "session_id": "s-ctx",
    }
    failed = {
        "type": "tool_result",
        "id": "ctx-2",
        "session_id": "s-ctx",
        "tool": {"name": "Bash", "use_id": "u1", "success": False, "error": "exit 1"},
    }
    sent = ctl("send", "-", input=(json.dumps(request) + "\n" + json.dumps(failed)).encode())
    assert sent.returncode == 0, sent.stderr
    payload = payloads(HOOKS / "SessionStart.kesslerio.json")[0]
    result = run_hook(payload, "--context")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    text = output["hookSpecificOutput"]["additionalContext"]
    assert len(text) < 10_000
    assert "claude-opus-4-6: $1.25, 1.5k tokens, 1 requests" in text
    assert "Bash: 1 of 1 calls failed" in text
    assert "2 sessions" in text  # s-ctx and the one that just started


def test_context_prints_nothing_when_the_daemon_is_down(state_home: Path) -> None:
    payload = payloads(HOOKS / "SessionStart.kesslerio.json")[0]
    result = run_hook(payload, "--context")
    assert result.returncode == 0
    assert result.stdout == b""


def test_context_only_at_session_start(running_daemon: Daemon) -> None:
    payload = payloads(HOOKS / "Stop.kesslerio.excerpt-0-2.json")[0]
    run_ok(payload, "--context")


def test_context_text_stays_under_the_limit() -> None:
    rows = [["model", "m" * 500, 1, 10, 1.0]] * 100 + [["sessions", None, 3, None, None]]
    assert len(hook.context_text(rows)) <= hook.CONTEXT_MAX


# -- hooks install / uninstall ------------------------------------------------------------------

OTHER_SETTINGS: dict[str, Any] = {
    "model": "opus",
    "permissions": {"allow": ["Bash(git status)"]},
    "hooks": {
        "PostToolUse": [
            {
                "matcher": "Write|Edit",
                "hooks": [{"type": "command", "command": 'npx prettier --write "$FILE"'}],
            },
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "say done", "timeout": 5}]}],
    },
    "statusLine": {"type": "command", "command": "~/bin/status"},
}


def settings_file(home: Path) -> Path:
    return home / ".claude" / "settings.json"


def write_settings(path: Path, settings: dict[str, Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings, indent=2) + "\n"
    path.write_text(text)
    return text


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".bak-*"))


def our_events(settings: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        event: [g for g in groups if any("hook claude-code" in h["command"] for h in g["hooks"])]
        for event, groups in settings["hooks"].items()
    }


def home_prefix() -> str:
    """What the installed commands start with: the TELEMETRYD_HOME of the test's state."""
    return f"TELEMETRYD_HOME={shlex.quote(os.environ['TELEMETRYD_HOME'])} "


def test_install_merges_and_uninstall_round_trips(private_home: Path) -> None:
    path = settings_file(private_home)
    original = write_settings(path, OTHER_SETTINGS)

    result = ctl("hooks", "install", "claude-code")
    assert result.returncode == 0, result.stderr
    installed = json.loads(path.read_text())
    # Every other key, group and handler is still there, unchanged and in order.
    assert {k: v for k, v in installed.items() if k != "hooks"} == {
        k: v for k, v in OTHER_SETTINGS.items() if k != "hooks"
    }
    assert installed["hooks"]["PostToolUse"][0] == OTHER_SETTINGS["hooks"]["PostToolUse"][0]
    assert installed["hooks"]["Stop"][0] == OTHER_SETTINGS["hooks"]["Stop"][0]
    ours = our_events(installed)
    assert sorted(ours) == sorted(claude_settings.EVENTS)
    for event, groups in ours.items():
        [group] = groups
        [handler] = group["hooks"]
        assert handler["type"] == "command"
        assert handler["command"] == f"{home_prefix()}{TELEMETRYCTL} hook claude-code"
        assert group.get("matcher") == (
            "*" if event.endswith(("ToolUse", "Failure")) and event != "StopFailure" else None
        )
    [backup] = backups(path)
    assert backup.read_text() == original

    again = ctl("hooks", "install", "claude-code")  # idempotent: nothing changes
    assert again.returncode == 0
    assert b"nothing to do" in again.stdout
    assert json.loads(path.read_text()) == installed
    assert len(backups(path)) == 1

    result = ctl("hooks", "uninstall", "claude-code")
    assert result.returncode == 0, result.stderr
    assert path.read_text() == original  # byte for byte
    assert len(backups(path)) == 2
    assert b"nothing to do" in ctl("hooks", "uninstall", "claude-code").stdout


def test_install_into_a_missing_file_and_uninstall_removes_only_ours(private_home: Path) -> None:
    path = settings_file(private_home)
    assert ctl("hooks", "install", "claude-code", "--context").returncode == 0
    settings = json.loads(path.read_text())
    assert list(settings) == ["hooks"]
    assert backups(path) == []  # there was nothing to back up
    start = our_events(settings)["SessionStart"][0]["hooks"][0]["command"]
    assert start.endswith("hook claude-code --context")
    # The user adds a handler of their own next to ours.
    settings["hooks"]["Stop"][0]["hooks"].append({"type": "command", "command": "say done"})
    write_settings(path, settings)
    assert ctl("hooks", "uninstall", "claude-code").returncode == 0
    assert json.loads(path.read_text()) == {
        "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]}
    }


def test_reinstall_with_other_options_replaces_our_handlers(private_home: Path) -> None:
    path = settings_file(private_home)
    write_settings(path, OTHER_SETTINGS)
    assert ctl("hooks", "install", "claude-code").returncode == 0
    assert ctl("hooks", "install", "claude-code", "--prompt-text").returncode == 0
    ours = our_events(json.loads(path.read_text()))
    assert all(len(groups) == 1 for groups in ours.values())
    assert all(g[0]["hooks"][0]["command"].endswith("--prompt-text") for g in ours.values())


def test_project_settings_and_dry_run(private_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    result = ctl("hooks", "install", "claude-code", "--project", str(project), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert b"+++" in result.stdout and b"hook claude-code" in result.stdout
    assert not (project / ".claude").exists()
    result = ctl("hooks", "install", "claude-code", "--project", str(project), "--local")
    assert result.returncode == 0, result.stderr
    assert sorted(our_events(json.loads((project / ".claude" / "settings.local.json").read_text())))
    assert not settings_file(private_home).exists()
    status = ctl("hooks", "status", "claude-code", "--project", str(project))
    assert b"settings.local.json: SessionStart" in status.stdout


def test_claude_config_dir_is_the_user_settings(
    private_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "claude-config"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", f"{config},{tmp_path / 'other'}")
    assert ctl("hooks", "install", "claude-code", "--user").returncode == 0
    assert (config / "settings.json").exists()


def test_invalid_settings_are_left_alone(private_home: Path) -> None:
    path = settings_file(private_home)
    path.parent.mkdir(parents=True)
    path.write_text('{"hooks": {,}')
    result = ctl("hooks", "install", "claude-code")
    assert result.returncode == 1
    assert b"not valid JSON" in result.stderr
    assert path.read_text() == '{"hooks": {,}'
    assert backups(path) == []


def test_a_settings_file_that_is_a_link_stays_one(private_home: Path, tmp_path: Path) -> None:
    """A dotfiles manager links ~/.claude/settings.json to its own copy: install and
    uninstall change that copy, and the link stays (it was replaced by a file)."""
    dotfiles = tmp_path / "dotfiles" / "claude-settings.json"
    original = write_settings(dotfiles, OTHER_SETTINGS)
    link = settings_file(private_home)
    link.parent.mkdir(parents=True)
    link.symlink_to(dotfiles)
    assert ctl("hooks", "install", "claude-code").returncode == 0
    assert link.is_symlink() and os.readlink(link) == str(dotfiles)
    assert sorted(our_events(json.loads(dotfiles.read_text()))) == sorted(claude_settings.EVENTS)
    [backup] = backups(link)  # (next to the link, where the user looks)
    assert backup.read_text() == original
    assert ctl("hooks", "uninstall", "claude-code").returncode == 0
    assert link.is_symlink() and dotfiles.read_text() == original


def test_only_our_own_handlers_are_taken_for_ours(private_home: Path) -> None:
    """A user's handler that pipes into our hook, or only mentions it, is the user's: it
    used to be deleted by install and uninstall. Ours with the hook's own options (or a
    variable set before it) is still ours."""
    user_handlers = [
        "tee -a ~/hook.log | telemetryctl hook claude-code",
        'grep -q x log || echo "run telemetryctl hook claude-code by hand" >&2',
        "telemetryctl hook claude-code; notify-send done",
    ]
    for command in user_handlers:
        assert not claude_settings.is_ours({"type": "command", "command": command}), command
    ours = [
        f"{TELEMETRYCTL} hook claude-code",
        "TELEMETRYD_HOOK_PROMPT_TEXT=1 telemetryctl hook claude-code --timeout 3",
        "/opt/bin/telemetryctl hook claude-code --context --socket=/run/x.sock",
    ]
    for command in ours:
        assert claude_settings.is_ours({"type": "command", "command": command}), command
    path = settings_file(private_home)
    mine = {
        "hooks": {"Stop": [{"hooks": [{"type": "command", "command": c} for c in user_handlers]}]}
    }
    write_settings(path, mine)
    assert ctl("hooks", "install", "claude-code").returncode == 0
    installed = json.loads(path.read_text())
    assert installed["hooks"]["Stop"][0] == mine["hooks"]["Stop"][0]
    assert ctl("hooks", "uninstall", "claude-code").returncode == 0
    assert json.loads(path.read_text()) == mine


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"cleanupPeriodDays": 1e999}', b"holds the number 1e999, which JSON cannot hold"),
        ('{"x": NaN}', b"holds the number NaN"),
        ('{"note": "\\ud800"}', b"holds text that is not Unicode"),
    ],
)
def test_settings_install_could_not_write_back_are_left_alone(
    private_home: Path, text: str, message: bytes
) -> None:
    """Python's json reads these, and wrote back Infinity (which Claude Code cannot read)
    or died with a traceback, leaving a temporary file behind."""
    path = settings_file(private_home)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    result = ctl("hooks", "install", "claude-code")
    assert result.returncode == 1
    assert message in result.stderr and b"left unchanged" in result.stderr
    assert b"Traceback" not in result.stderr
    assert path.read_text() == text
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.json"]


def test_a_read_only_settings_file_is_left_alone(private_home: Path) -> None:
    path = settings_file(private_home)
    original = write_settings(path, OTHER_SETTINGS)
    path.chmod(0o444)
    result = ctl("hooks", "install", "claude-code")
    assert result.returncode == 1
    assert b"is read-only (mode 0444); left unchanged" in result.stderr
    assert path.read_text() == original
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.json"]


def test_install_warns_when_another_settings_file_runs_our_hooks(
    private_home: Path, tmp_path: Path
) -> None:
    """Claude Code runs the hooks of the user's and the project's settings alike: ours in
    both would record a session's start, prompts and stops twice."""
    project = tmp_path / "project"
    project.mkdir()
    first = ctl("hooks", "install", "claude-code", "--project", str(project))
    assert first.returncode == 0 and b"warning" not in first.stderr
    second = ctl("hooks", "install", "claude-code", "--user", "--project", str(project))
    assert second.returncode == 2  # (one or the other)
    user = ctl("hooks", "install", "claude-code")  # (the current directory is not the project)
    assert user.returncode == 0 and b"warning" not in user.stderr
    local = ctl("hooks", "install", "claude-code", "--project", str(project), "--local")
    assert local.returncode == 0
    warned = local.stderr.decode()
    assert f"also in {project / '.claude' / 'settings.json'}" in warned
    assert f"also in {settings_file(private_home)}" in warned


def test_the_installed_command_runs_the_hook(private_home: Path, running_daemon: Daemon) -> None:
    assert ctl("hooks", "install", "claude-code").returncode == 0
    settings = json.loads(settings_file(private_home).read_text())
    command = our_events(settings)["PreToolUse"][0]["hooks"][0]["command"]
    payload = payloads(HOOKS / "PreToolUse.rpd-skill.excerpt-3-5.json")[0]
    result = subprocess.run(
        command, shell=True, input=json.dumps(payload).encode(), capture_output=True, check=False
    )
    assert result.returncode == 0 and result.stdout == b""
    assert running_daemon.journal_events()[0]["type"] == "tool_call"


@pytest.fixture
def short_home_with_a_space() -> Iterator[Path]:
    """A TELEMETRYD_HOME whose path has a space."""
    yield from short_home("td home-")


def test_the_installed_commands_carry_a_telemetryd_home_claude_code_does_not_have(
    private_home: Path, daemon_factory: Any, short_home_with_a_space: Path
) -> None:
    """A daemon with a TELEMETRYD_HOME of its own (a path with a space, here): the hooks
    and the status line installed from a shell that sets it reach that daemon from an
    environment without it, as Claude Code runs them. Without the home in the command,
    the hook spooled its events in the default place, where no daemon reads them."""
    home = short_home_with_a_space
    daemon = daemon_factory(home=home).start()
    environ = {**os.environ, "TELEMETRYD_HOME": str(home)}
    result = subprocess.run(
        [TELEMETRYCTL, "hooks", "install", "claude-code", "--statusline"],
        env=environ, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = json.loads(settings_file(private_home).read_text())
    command = our_events(settings)["PreToolUse"][0]["hooks"][0]["command"]
    assert command.startswith("TELEMETRYD_HOME='")
    claude_env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRYD_")}
    payload = payloads(HOOKS / "PreToolUse.rpd-skill.excerpt-3-5.json")[0]
    ran = subprocess.run(
        command, shell=True, input=json.dumps(payload).encode(), env=claude_env,
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert ran.returncode == 0 and ran.stderr == b"", ran.stderr
    assert [event["type"] for event in daemon.journal_events()] == ["tool_call"]
    status = subprocess.run(
        settings["statusLine"]["command"], shell=True, input=b"{}", env=claude_env,
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert b"telemetryd down" not in status.stdout, status.stdout

    # Ours all the same: a second install changes nothing, uninstall takes them out.
    again = subprocess.run(
        [TELEMETRYCTL, "hooks", "install", "claude-code", "--statusline"],
        env=environ, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert b"nothing to do" in again.stdout, again.stdout + again.stderr
    removed = subprocess.run(
        [TELEMETRYCTL, "hooks", "uninstall", "claude-code"],
        env=environ, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert json.loads(settings_file(private_home).read_text()) == {}  # (none before install)


# -- hooks install --http ------------------------------------------------------------------------


def http_token(state_home: Path) -> str:
    text = (state_home / "http-token").read_text().strip()
    assert text
    return text


def world_readable_files_holding(directory: Path, secret: str) -> list[Path]:
    return [
        path
        for path in directory.rglob("*")
        if path.is_file() and secret in path.read_text() and path.stat().st_mode & 0o077
    ]


@pytest.mark.usefixtures("default_http_address")
def test_http_install_writes_http_hooks_and_keeps_the_token_private(
    private_home: Path, state_home: Path
) -> None:
    path = settings_file(private_home)
    original = write_settings(path, OTHER_SETTINGS)
    os.chmod(path, 0o644)  # as editors leave it
    result = ctl("hooks", "install", "claude-code", "--http")
    assert result.returncode == 0, result.stderr
    secret = http_token(state_home)  # made by the install: the daemon never ran
    assert b"0600" in result.stdout and secret.encode() not in result.stdout
    installed = json.loads(path.read_text())
    assert installed["env"] == {"TELEMETRYD_HTTP_TOKEN": secret}
    assert path.stat().st_mode & 0o777 == 0o600
    assert world_readable_files_holding(private_home, secret) == []
    assert installed["hooks"]["Stop"][0] == OTHER_SETTINGS["hooks"]["Stop"][0]
    for event in claude_settings.EVENTS:
        ours = [
            h for g in installed["hooks"][event] for h in g["hooks"] if claude_settings.is_ours(h)
        ]
        if event == "SessionStart":  # command hooks only there
            assert ours == [
                {
                    "type": "command",
                    "command": f"{home_prefix()}{TELEMETRYCTL} hook claude-code",
                    "timeout": 10,
                }
            ]
        else:
            assert ours == [
                {
                    "type": "http",
                    "url": "http://127.0.0.1:4318/v1/hooks/claude-code",
                    "headers": {"Authorization": "Bearer $TELEMETRYD_HTTP_TOKEN"},
                    "allowedEnvVars": ["TELEMETRYD_HTTP_TOKEN"],
                    "timeout": 10,
                }
            ], event
    status = ctl("hooks", "status", "claude-code").stdout.decode()
    assert "SessionStart, SessionEnd, UserPromptSubmit, PreToolUse" in status

    again = ctl("hooks", "install", "claude-code", "--http")
    assert b"nothing to do" in again.stdout
    assert json.loads(path.read_text()) == installed and len(backups(path)) == 1

    dry = ctl("hooks", "uninstall", "claude-code", "--dry-run")
    assert b"TELEMETRYD_HTTP_TOKEN" in dry.stdout and secret.encode() not in dry.stdout
    assert ctl("hooks", "uninstall", "claude-code").returncode == 0
    assert path.read_text() == original  # both kinds of handler and the env entry gone
    assert [b.stat().st_mode & 0o777 for b in backups(path)] == [0o644, 0o600]


@pytest.mark.usefixtures("default_http_address")
def test_switching_between_http_and_command_hooks(private_home: Path, state_home: Path) -> None:
    path = settings_file(private_home)
    write_settings(path, {"env": {"EDITOR": "vi"}})
    assert ctl("hooks", "install", "claude-code", "--http").returncode == 0
    assert json.loads(path.read_text())["env"] == {
        "EDITOR": "vi",
        "TELEMETRYD_HTTP_TOKEN": http_token(state_home),
    }
    assert ctl("hooks", "install", "claude-code").returncode == 0
    settings = json.loads(path.read_text())
    assert settings["env"] == {"EDITOR": "vi"}  # the token went with the http hooks
    handlers = [h for groups in settings["hooks"].values() for g in groups for h in g["hooks"]]
    assert len(handlers) == len(claude_settings.EVENTS)
    assert {h["type"] for h in handlers} == {"command"}


@pytest.mark.usefixtures("default_http_address")
def test_http_install_endpoint_from_configuration_and_flag(
    private_home: Path, state_home: Path
) -> None:
    (state_home / "config.toml").write_text('[http]\naddress = "127.0.0.1:14318"\n')
    assert ctl("hooks", "install", "claude-code", "--http").returncode == 0
    stop = json.loads(settings_file(private_home).read_text())["hooks"]["Stop"][0]["hooks"][0]
    assert stop["url"] == "http://127.0.0.1:14318/v1/hooks/claude-code"
    result = ctl("hooks", "install", "claude-code", "--http", "--endpoint", "http://[::1]:4318")
    assert result.returncode == 0, result.stderr
    stop = json.loads(settings_file(private_home).read_text())["hooks"]["Stop"][0]["hooks"][0]
    assert stop["url"] == "http://[::1]:4318/v1/hooks/claude-code"
    (state_home / "config.toml").write_text("[http]\nenabled = false\n")
    result = ctl("hooks", "install", "claude-code", "--http")
    assert result.returncode == 1 and b"the HTTP listener is off" in result.stderr


@pytest.mark.usefixtures("default_http_address")
def test_http_install_never_writes_the_token_into_a_shared_project_file(
    private_home: Path, state_home: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    result = ctl("hooks", "install", "claude-code", "--http", "--project", str(project))
    assert result.returncode == 0, result.stderr
    shared = project / ".claude" / "settings.json"
    secret = http_token(state_home)
    assert secret not in shared.read_text()
    assert "env" not in json.loads(shared.read_text())
    assert b"the token is not written there" in result.stderr
    assert b"--local" in result.stderr  # says where it can go instead
    local = ctl("hooks", "install", "claude-code", "--http", "--project", str(project), "--local")
    assert local.returncode == 0, local.stderr
    private = project / ".claude" / "settings.local.json"
    assert json.loads(private.read_text())["env"]["TELEMETRYD_HTTP_TOKEN"] == secret
    assert private.stat().st_mode & 0o777 == 0o600
    assert world_readable_files_holding(project, secret) == []


@pytest.mark.usefixtures("default_http_address")
def test_http_install_dry_run_shows_no_token(private_home: Path, state_home: Path) -> None:
    result = ctl("hooks", "install", "claude-code", "--http", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert b'"TELEMETRYD_HTTP_TOKEN": "<the token>"' in result.stdout
    assert http_token(state_home).encode() not in result.stdout
    assert b"would be private (0600)" in result.stdout
    assert not settings_file(private_home).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["codex", "--http"], b"Codex's hooks"),
        (["codex"], b"add a command hook there that runs `telemetryctl hook codex`"),
        (["claude-code", "--http", "--prompt-text"], b"--prompt-text works with command hooks"),
        (["claude-code", "--endpoint", "http://x:1"], b"--endpoint and --token-file go with"),
    ],
)
def test_http_install_errors(private_home: Path, args: list[str], message: bytes) -> None:
    result = ctl("hooks", "install", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not settings_file(private_home).exists()


# -- Codex sends the same payloads ------------------------------------------------------------

CODEX_HOOKS = SAMPLES / "codex" / "hooks"


@pytest.mark.parametrize("path", sorted(CODEX_HOOKS.glob("*.json")), ids=lambda p: p.name)
def test_codex_samples(running_daemon: Daemon, path: Path) -> None:
    items = payloads(path)
    for payload in items:
        result = ctl("hook", "codex", input=json.dumps(payload).encode())
        assert result.returncode == 0 and result.stdout == b"", result.stderr
    journaled = running_daemon.journal_events()
    assert len(journaled) == len(items)
    for payload, event in zip(items, journaled, strict=True):
        assert event["source"] == "codex"
        assert event["session_id"] == payload["session_id"]
        assert event["agent"]["model"] == payload["model"]
        if payload.get("turn_id"):
            assert event["attrs"]["turn_id"] == payload["turn_id"]
        if payload.get("agent_type"):
            assert event["agent"]["type"] == payload["agent_type"]


def test_codex_subagent_stop_sums_its_rollout(running_daemon: Daemon, tmp_path: Path) -> None:
    rollout = tmp_path / "rollout.jsonl"
    shutil.copy(
        SAMPLES
        / "codex"
        / "rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff.jsonl",
        rollout,
    )
    payload = payloads(CODEX_HOOKS / "SubagentStop.skogbackup-gptme-contrib.json")[0]
    payload["agent_transcript_path"] = str(rollout)
    result = ctl("hook", "codex", input=json.dumps(payload).encode())
    assert result.returncode == 0, result.stderr
    [event] = running_daemon.journal_events()
    # The rollout's six requests add up to its last cumulative total: 298373 input of
    # which 238848 cached, 1123 output (483 reasoning).
    assert event["tokens"] == {
        "source": "actual",
        "input": 298373 - 238848,
        "output": 1123,
        "cache_read": 238848,
        "reasoning": 483,
        "total": 299496,
    }
    assert event["attrs"]["requests"] == 6


@pytest.mark.parametrize(
    "answer, rows",
    [
        (
            reply_line(wire.QueryColumns([("kind", "VARCHAR"), ("n", "BIGINT")]))
            + reply_line(wire.QueryRows([("sessions", 3)]))
            + reply_line(wire.QueryDone(True, 1, 1.0)),
            [["sessions", 3]],
        ),
        (reply_line(wire.Closing(wire.QUERY_FAILED, "Catalog Error")), None),
        (reply_line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 64")), None),
        (reply_line(wire.QueryColumns([("kind", "VARCHAR")])), None),  # then gone
        (b"not json\n", None),
        (None, None),  # never answers: the budget ends it
    ],
)
def test_the_context_query_gives_rows_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: bytes | None, rows: Any
) -> None:
    release = threading.Event()

    def serve(conn: Any) -> None:
        request = json.loads(read_line(conn))
        assert request["op"] == "query" and request["sql"] == hook.CONTEXT_SQL
        assert 0 < request["timeout"] < 0.5
        if answer is None:
            release.wait(10)
        else:
            conn.sendall(answer)

    peer = Peer(tmp_path, serve)
    try:
        monkeypatch.setattr(protocol, "control_socket", lambda: peer.path)
        started = time.monotonic()
        assert hook._query(hook.CONTEXT_SQL, 0.5) == rows
        assert time.monotonic() - started < 5
    finally:
        release.set()
        peer.close()
