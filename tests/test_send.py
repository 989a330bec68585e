"""`telemetryctl send`, run as a real subprocess against the real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import TELEMETRYCTL, Daemon, ctl
from telemetryd import wire
from test_client import Peer, read_all
from test_client import line as reply_line

FORBIDDEN_ON_HOOK_PATH = ("msgspec", "click", "duckdb", "asyncio", "anyio", "re")


def send(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return ctl("send", *args, input=input)


def send_ok(*args: str, input: bytes | None = None) -> str:
    """Run `telemetryctl send`, require success and an empty stdout; return stderr."""
    result = send(*args, input=input)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert result.stdout == b"", "hooks read stdout: it must stay empty"
    return stderr


def by_id(daemon: Daemon) -> dict[str, dict[str, Any]]:
    events = daemon.journal_events()
    ids = [event["id"] for event in events]
    assert len(ids) == len(set(ids)), "an id was journaled twice"
    return {event["id"]: event for event in events}


def only_event(daemon: Daemon, event_id: str) -> dict[str, Any]:
    matches = [event for event in daemon.journal_events() if event["id"] == event_id]
    assert len(matches) == 1, matches
    return matches[0]


def envelope_free(event: dict[str, Any]) -> dict[str, Any]:
    """The event without the fields the daemon stamps."""
    return {k: v for k, v in event.items() if k not in ("v", "received_at", "ts")}


def spooled(home: Path) -> list[Path]:
    return sorted((home / "spool").glob("*")) if (home / "spool").exists() else []


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- flags ------------------------------------------------------------------


def test_envelope_flags_and_attrs(running_daemon: Daemon) -> None:
    stderr = send_ok(
        "--type", "custom",
        "--name", "flags",
        "--id", "ev-flags",
        "--ts", "2026-01-02T03:04:05.678Z",
        "--session", "sess-1",
        "--source", "claude-code",
        "--model", "claude-sonnet-4",
        "--provider", "anthropic",
        "--agent-type", "subagent",
        "--agent-id", "agent-7",
        "--task-id", "task-9",
        "--attempt-id", "att-3",
        "--attempt-index", "3",
        "--trace-id", "4bf92f3577b34da6a3ce929d0e0e4736",
        "--span-id", "00f067aa0ba902b7",
        "--parent-span-id", "00f067aa0ba902b8",
        "--attr", "number=42",
        "--attr", "flag=true",
        "--attr", 'nested={"x": [1, 2.5, null]}',
        "--attr", "text=hello world",
        "--attr", 'quoted="42"',
        "--attr", "broken={not json",
        "--attr=inline=7",
    )  # fmt: skip
    assert stderr == ""
    event = only_event(running_daemon, "ev-flags")
    assert envelope_free(event) == {
        "type": "custom",
        "id": "ev-flags",
        "name": "flags",
        "session_id": "sess-1",
        "source": "claude-code",
        "agent": {
            "model": "claude-sonnet-4",
            "provider": "anthropic",
            "type": "subagent",
            "id": "agent-7",
        },
        "task": {"id": "task-9", "attempt_id": "att-3", "attempt_index": 3},
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "00f067aa0ba902b8",
        "attrs": {
            "number": 42,
            "flag": True,
            "nested": {"x": [1, 2.5, None]},
            "text": "hello world",
            "quoted": "42",
            "broken": "{not json",
            "inline": 7,
        },
    }
    assert utc(event["ts"]) == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert event["v"] == 1 and "received_at" in event


def test_run_fields_and_actual_tokens_with_a_derived_total(running_daemon: Daemon) -> None:
    send_ok(
        "--type", "run",
        "--id", "ev-run",
        "--model", "gpt-5",
        "--attempt-id", "att-1",
        "--attempt-index", "0",
        "--field", "attempt_id=att-1",
        "--field", "attempt_index=0",
        "--field", "retry_count.same_model=2",
        "--field", "retry_count.reroute=1",
        "--field", "elapsed_ms.wall=9000",
        "--field", "elapsed_ms.llm=7000",
        "--field", "outcome=done",
        "--field", "outcome_reason=tests pass",
        "--input-tokens", "100",
        "--output-tokens", "40",
        "--cache-read-tokens", "1000",
        "--cache-creation-tokens", "5",
        "--reasoning-tokens", "12",
    )  # fmt: skip
    event = only_event(running_daemon, "ev-run")
    assert event["outcome"] == "done"
    assert event["outcome_reason"] == "tests pass"
    assert event["retry_count"] == {"same_model": 2, "reroute": 1}
    assert event["elapsed_ms"] == {"wall": 9000, "llm": 7000}
    assert event["attempt_id"] == "att-1" and event["attempt_index"] == 0
    assert event["tokens"] == {
        "source": "actual",
        "input": 100,
        "output": 40,
        "cache_read": 1000,
        "cache_creation": 5,
        "reasoning": 12,
        "total": 1145,
    }


def test_api_request_with_actual_tokens_cost_duration_and_outcome(running_daemon: Daemon) -> None:
    send_ok(
        "--type", "api_request",
        "--id", "ev-api",
        "--model", "claude-opus-4",
        "--provider", "anthropic",
        "--input-tokens", "10",
        "--output-tokens", "5",
        "--duration-ms", "250",
        "--cost-usd", "0.0125",
        "--failure",
        "--error", "overloaded",
        "--field", "cost_source=reported",
    )  # fmt: skip
    event = only_event(running_daemon, "ev-api")
    assert event["tokens"] == {"source": "actual", "input": 10, "output": 5, "total": 15}
    assert event["duration_ms"] == 250
    assert event["cost_usd"] == 0.0125
    assert event["cost_source"] == "reported"
    assert event["success"] is False and event["error"] == "overloaded"
    assert event["agent"] == {"model": "claude-opus-4", "provider": "anthropic"}


def test_estimated_tokens(running_daemon: Daemon) -> None:
    send_ok(
        "--type", "api_request", "--id", "ev-est", "--model", "m",
        "--estimated-tokens", "1234", "--tokenizer", "cl100k_base",
    )  # fmt: skip
    event = only_event(running_daemon, "ev-est")
    assert event["tokens"] == {
        "source": "estimated",
        "estimated_total": 1234,
        "tokenizer": "cl100k_base",
    }


@pytest.mark.parametrize("kind", ["tool_call", "tool_result"])
def test_tool_flags_land_in_tool(running_daemon: Daemon, kind: str) -> None:
    send_ok(
        "--type", kind, "--id", f"ev-{kind}-ok",
        "--tool", "Bash", "--tool-use-id", "toolu_01", "--success", "--duration-ms", "412",
    )  # fmt: skip
    send_ok(
        "--type", kind, "--id", f"ev-{kind}-bad",
        "--tool", "Edit", "--failure", "--error", "file not found",
    )  # fmt: skip
    ok = only_event(running_daemon, f"ev-{kind}-ok")
    assert ok["type"] == kind
    assert ok["tool"] == {"name": "Bash", "use_id": "toolu_01", "success": True}
    assert ok["duration_ms"] == 412
    assert "success" not in ok and "error" not in ok
    bad = only_event(running_daemon, f"ev-{kind}-bad")
    assert bad["tool"] == {"name": "Edit", "success": False, "error": "file not found"}


def test_success_and_name_for_other_types(running_daemon: Daemon) -> None:
    send_ok("--type", "skill", "--id", "ev-skill", "--name", "pdf", "--success")
    send_ok("--type", "error", "--id", "ev-error", "--message", "boom")
    assert envelope_free(only_event(running_daemon, "ev-skill")) == {
        "type": "skill",
        "id": "ev-skill",
        "name": "pdf",
        "success": True,
    }
    assert only_event(running_daemon, "ev-error")["message"] == "boom"


# -- environment ------------------------------------------------------------


ENV = {
    "TELEMETRYD_SESSION_ID": "env-session",
    "TELEMETRYD_MODEL": "env-model",
    "TELEMETRYD_PROVIDER": "env-provider",
    "TELEMETRYD_ATTEMPT_ID": "env-attempt",
    "TELEMETRYD_ATTEMPT_INDEX": "4",
}


def test_environment_fills_the_envelope(
    running_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    send_ok("--type", "custom", "--name", "env", "--id", "ev-env")
    event = only_event(running_daemon, "ev-env")
    assert event["session_id"] == "env-session"
    assert event["agent"] == {"model": "env-model", "provider": "env-provider"}
    assert event["task"] == {"attempt_id": "env-attempt", "attempt_index": 4}


def test_flags_override_the_environment(
    running_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    send_ok(
        "--type", "custom", "--name", "env", "--id", "ev-env-flags",
        "--session", "flag-session", "--model", "flag-model", "--provider", "flag-provider",
        "--attempt-id", "flag-attempt", "--attempt-index", "9",
    )  # fmt: skip
    event = only_event(running_daemon, "ev-env-flags")
    assert event["session_id"] == "flag-session"
    assert event["agent"] == {"model": "flag-model", "provider": "flag-provider"}
    assert event["task"] == {"attempt_id": "flag-attempt", "attempt_index": 9}


# -- stdin and --file -------------------------------------------------------


def test_stdin_single_object(running_daemon: Daemon) -> None:
    send_ok("-", input=b'{"type": "custom", "name": "one", "id": "in-one"}')
    assert only_event(running_daemon, "in-one")["name"] == "one"


def test_stdin_pretty_printed_array(running_daemon: Daemon) -> None:
    payload = b"""[
      {"type": "custom", "name": "a", "id": "in-arr-a"},
      {"type": "skill", "name": "b", "id": "in-arr-b", "success": false}
    ]
    """
    send_ok("-", input=payload)
    events = by_id(running_daemon)
    assert events["in-arr-a"]["type"] == "custom"
    assert events["in-arr-b"]["type"] == "skill" and events["in-arr-b"]["success"] is False


def test_an_empty_id_is_said_and_replaced(running_daemon: Daemon) -> None:
    """`--id "$UNSET"` in a hook script: the event is kept, with a fresh id, and the
    warning says why (it was replaced without a word)."""
    result = send("--type", "custom", "--name", "empty-id", "--id", "")
    assert result.returncode == 0, result.stderr
    assert b"id is empty" in result.stderr
    (event,) = [e for e in running_daemon.journal_events() if e.get("name") == "empty-id"]
    assert len(event["id"]) == 36  # (a UUIDv7)


def test_stdin_ndjson_adds_missing_ids_and_keeps_given_ones(running_daemon: Daemon) -> None:
    payload = (
        b'{"type": "custom", "name": "n1"}\n'
        b"\n"
        b'{"type": "custom", "name": "n2", "id": "in-nd-2"}\r\n'
        b'{"type": "custom", "name": "n3"}'
    )
    send_ok("-", input=payload)
    events = running_daemon.journal_events()
    assert [event["name"] for event in events] == ["n1", "n2", "n3"]
    assert events[1]["id"] == "in-nd-2"
    assert len({event["id"] for event in events}) == 3
    for event in (events[0], events[2]):  # added by telemetryctl: UUIDv7 (RFC 9562)
        made = uuid.UUID(event["id"])
        assert made.version == 7 and made.variant == uuid.RFC_4122, event["id"]
        assert str(made) == event["id"]


def test_file_input(running_daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_bytes(
        b'{"type": "custom", "name": "f1", "id": "in-file-1"}\n'
        b'{"type": "custom", "name": "f2", "id": "in-file-2"}\n'
    )
    send_ok("--file", str(path))
    events = by_id(running_daemon)
    assert events["in-file-1"]["name"] == "f1" and events["in-file-2"]["name"] == "f2"


def test_missing_file_is_a_usage_error(running_daemon: Daemon, tmp_path: Path) -> None:
    result = send("--file", str(tmp_path / "absent.json"))
    assert result.returncode == 2
    assert b"absent.json" in result.stderr
    assert running_daemon.journal_events() == []


def test_input_fields_win_over_flags_and_environment(
    running_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    payload = (
        b'{"type": "custom", "name": "own", "id": "in-own", "session_id": "input-session",'
        b' "agent": {"model": "input-model"}, "task": {"attempt_index": 0},'
        b' "attrs": {"k": "input"}}\n'
        b'{"type": "custom", "name": "bare", "id": "in-bare"}\n'
        b'{"name": "typed-by-flag", "id": "in-typed"}\n'
    )
    send_ok(
        "-", "--type", "custom", "--source", "flag-source", "--provider", "flag-provider",
        "--attr", "k=flag", "--attr", "extra=1", input=payload,
    )  # fmt: skip
    events = by_id(running_daemon)
    own = events["in-own"]
    assert own["session_id"] == "input-session"
    assert own["agent"] == {"model": "input-model", "provider": "flag-provider"}
    assert own["task"] == {"attempt_id": "env-attempt", "attempt_index": 0}
    assert own["attrs"] == {"k": "input", "extra": 1}
    assert own["source"] == "flag-source"
    bare = events["in-bare"]
    assert bare["session_id"] == "env-session"
    assert bare["agent"] == {"model": "env-model", "provider": "flag-provider"}
    assert bare["task"] == {"attempt_id": "env-attempt", "attempt_index": 4}
    assert bare["attrs"] == {"k": "flag", "extra": 1}
    assert events["in-typed"]["type"] == "custom"


def test_input_ts_is_kept_and_missing_ts_is_the_send_time(running_daemon: Daemon) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    send_ok(
        "-",
        input=b'{"type":"custom","name":"t","id":"ts-given","ts":"2025-05-06T07:08:09.010Z"}\n'
        b'{"type":"custom","name":"t","id":"ts-missing"}\n',
    )
    after = datetime.now(UTC)
    events = by_id(running_daemon)
    assert utc(events["ts-given"]["ts"]) == datetime(2025, 5, 6, 7, 8, 9, 10000, tzinfo=UTC)
    assert before <= utc(events["ts-missing"]["ts"]) <= after


def test_empty_stdin_sends_nothing(running_daemon: Daemon) -> None:
    send_ok("-", input=b"  \n")
    assert running_daemon.journal_events() == []
    assert spooled(running_daemon.home) == []


# -- defaults for api_request -------------------------------------------------


def test_api_request_without_model_or_tokens(running_daemon: Daemon) -> None:
    stderr = send_ok("--type", "api_request", "--id", "ev-nomodel")
    lines = stderr.splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "model" in lines[0], stderr
    event = only_event(running_daemon, "ev-nomodel")
    assert event["agent"] == {"model": "unknown"}
    assert event["tokens"] == {"source": "unknown"}


def test_api_request_model_from_environment_needs_no_warning(
    running_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMETRYD_MODEL", "env-model")
    stderr = send_ok("--type", "api_request", "--id", "ev-envmodel")
    assert stderr == ""
    assert only_event(running_daemon, "ev-envmodel")["agent"] == {"model": "env-model"}


# -- invalid events -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "path", "words"),
    [
        (["--type", "bogus"], "$.type", "bogus"),
        (["--type", "run", "--model", "m"], "$", "attempt_id"),
        (["--type", "custom", "--name", "x", "--field", "outcome=done"], "$", "outcome"),
        (["--type", "tool_call", "--tool", "Bash", "--duration-ms", "-1"], "$.duration_ms", ""),
        (["--type", "custom", "--name", "x", "--field", "received_at=2026-01-01T00:00:00Z"],
         "$.received_at", "received_at"),
    ],
    ids=["unknown-type", "run-missing-fields", "unknown-field", "negative", "received-at"],
)  # fmt: skip
def test_invalid_event_is_rejected_with_the_daemons_reason(
    running_daemon: Daemon, args: list[str], path: str, words: str
) -> None:
    result = send(*args)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert result.stdout == b""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("telemetryctl send: line 1: "), stderr
    code = lines[0].split(": ")[2]
    assert code in ("invalid_event", "received_at_set"), stderr
    assert f": {path}: " in lines[0], stderr
    assert words in lines[0]
    assert running_daemon.journal_events() == []
    assert spooled(running_daemon.home) == []


def test_one_bad_line_among_good_ones(running_daemon: Daemon) -> None:
    payload = (
        b'{"type": "custom", "name": "g1", "id": "mix-1"}\n'
        b'{"type": "custom", "id": "mix-2"}\n'
        b'{"type": "custom", "name": "g3", "id": "mix-3"}\n'
    )
    result = send("-", input=payload)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert result.stdout == b""
    assert stderr.splitlines() == [
        "telemetryctl send: line 2: invalid_event: $: Object missing required field `name`"
    ]
    assert sorted(by_id(running_daemon)) == ["mix-1", "mix-3"]
    assert spooled(running_daemon.home) == []


BLANK_LINES = (
    b'{"type": "custom", "name": "g1", "id": "blank-1"}\n'
    b"\n"
    b"   \n"
    b'{"type": "bogus", "id": "blank-2"}\n'
    b"\n"
    b'{"type": "custom", "id": "blank-3"}\n'
)


def test_a_rejected_line_is_named_by_its_place_in_the_input(running_daemon: Daemon) -> None:
    """Blank lines are not sent, so the daemon's line 2 and 3 are the input's lines 4
    and 6: the input's numbers are the ones that help. A JSON array's events are items."""
    result = send("-", input=BLANK_LINES)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode().splitlines()
    assert [line.split(": ")[1] for line in lines] == ["line 4", "line 6"], lines
    assert "unknown event type 'bogus'" in lines[0] and "`name`" in lines[1]
    array = b'[{"type": "custom", "name": "a"}, {"type": "custom"}]'
    result = send("-", input=array)
    assert result.stderr.decode().split(": ")[1] == "item 2", result.stderr
    assert "blank-1" in by_id(running_daemon)  # (the good line around them is kept)


def test_a_line_refused_with_the_daemon_down_is_named_by_its_place(state_home: Path) -> None:
    result = send("-", input=BLANK_LINES)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode().splitlines()
    assert [line.split(": ")[1] for line in lines] == ["line 4", "line 6"], lines
    assert spooled(state_home) == []


def test_unparseable_stdin_is_a_usage_error(running_daemon: Daemon) -> None:
    result = send("-", input=b'{"type": "custom", "name": "a"}\n{"type": \n')
    assert result.returncode == 2
    assert b"input line 2" in result.stderr
    assert running_daemon.journal_events() == []


def test_non_object_input_is_a_usage_error(running_daemon: Daemon) -> None:
    result = send("-", input=b'[{"type": "custom", "name": "a"}, 3]')
    assert result.returncode == 2
    assert b"input item 2" in result.stderr
    assert running_daemon.journal_events() == []


# -- usage ------------------------------------------------------------------


def test_help(running_daemon: Daemon) -> None:
    for flag in ("--help", "-h"):
        result = send(flag)
        assert result.returncode == 0
        assert result.stdout.startswith(b"Usage: telemetryctl send")
        assert b"--strict" in result.stdout and b"Exit status" in result.stdout
        assert result.stderr == b""
    assert running_daemon.journal_events() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--type", "custom", "--name", "x", "--frobnicate"], "--frobnicate"),
        (["--type", "custom", "--name"], "--name needs a value"),
        (["--type", "custom", "--name", "x", "--duration-ms", "soon"], "--duration-ms"),
        (["--type", "api_request", "--cost-usd", "cheap"], "--cost-usd"),
        (["--type", "custom", "--name", "x", "--attr", "novalue"], "KEY=VALUE"),
        (["--type", "custom", "--name", "x", "--timeout", "never"], "--timeout"),
        (["--name", "x"], "--type"),
    ],
    ids=["unknown", "no-value", "not-int", "not-float", "attr", "timeout", "no-type"],
)
def test_usage_errors_exit_2(running_daemon: Daemon, args: list[str], message: str) -> None:
    result = send(*args)
    assert result.returncode == 2
    assert result.stdout == b""
    assert message in result.stderr.decode()
    assert running_daemon.journal_events() == []
    assert spooled(running_daemon.home) == []


def test_verbose_prints_the_summary_on_stderr_only(running_daemon: Daemon) -> None:
    stderr = send_ok("--type", "custom", "--name", "v", "--id", "ev-verbose", "-v")
    assert '"accepted":1' in stderr.replace(" ", "")
    only_event(running_daemon, "ev-verbose")


# -- the hook path stays light ----------------------------------------------------


def test_send_imports_nothing_heavy(running_daemon: Daemon) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", TELEMETRYCTL, "send",
         "--type", "custom", "--name", "imports", "--id", "ev-imports"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    imported = set()
    other = []
    for line in result.stderr.decode().splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[1].strip()
            imported.add(name.split(".")[0])
        else:
            other.append(line)
    assert "telemetryd" in imported  # the listing is real
    assert other == []
    assert sorted(imported & set(FORBIDDEN_ON_HOOK_PATH)) == []
    only_event(running_daemon, "ev-imports")


def test_invalid_event_with_the_daemon_down_is_not_spooled(state_home: Path) -> None:
    result = send("--type", "custom", "--id", "ev-down-invalid")  # no --name
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "name" in stderr
    assert spooled(state_home) == []


def test_strict_with_the_daemon_down_fails_without_spooling(state_home: Path) -> None:
    result = send("--type", "custom", "--name", "x", "--id", "ev-strict-down", "--strict")
    assert result.returncode == 75
    assert result.stdout == b""
    assert result.stderr.decode().startswith("telemetryctl send: not delivered:")
    assert spooled(state_home) == []


def test_neither_delivered_nor_spooled_is_lost_with_a_warning_and_exit_0(
    state_home: Path,
) -> None:
    """The daemon down and the spool unusable (here a file where its directory should
    be; a full disk alike): the event is lost, and says so, but a hook must not fail its
    agent: exit 0, as the help says, not 75 (that is --strict's)."""
    (state_home / "spool").write_text("not a directory")
    result = send("--type", "custom", "--name", "x", "--id", "ev-lost")
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "cannot spool" in stderr and "1 event(s) lost" in stderr
    assert result.stdout == b""
    payload = json.dumps({"hook_event_name": "Stop", "session_id": "s-lost"}).encode()
    hooked = ctl("hook", "claude-code", input=payload)
    assert hooked.returncode == 0 and hooked.stdout == b""
    assert b"cannot spool" in hooked.stderr and b"1 event(s) lost" in hooked.stderr


@pytest.mark.parametrize(
    "attr",
    ["deep=" + "[" * 10 + "1" + "]" * 10, "big=" + "x" * 20_000],
    ids=["attrs-too-deep", "attrs-too-large"],
)
def test_event_the_daemon_would_reject_is_not_spooled_when_it_is_down(
    state_home: Path, attr: str
) -> None:
    """With the daemon up these exit 1 (`attrs_too_deep` / `attrs_too_large`); with it down,
    spooling them only defers the rejection to a replay that quarantines them unseen."""
    result = send("--type", "custom", "--name", "x", "--attr", attr)
    assert result.returncode == 1, result.stderr.decode()[:300]
    assert b"attrs" in result.stderr
    assert spooled(state_home) == []


@pytest.mark.parametrize(
    "attr",
    ["deep=" + "[" * 10 + "1" + "]" * 10, "big=" + "x" * 20_000],
    ids=["attrs-too-deep", "attrs-too-large"],
)
def test_attrs_limits_with_the_daemon_up(running_daemon: Daemon, attr: str) -> None:
    result = send("--type", "custom", "--name", "x", "--attr", attr)
    assert result.returncode == 1
    assert b"$.attrs" in result.stderr
    assert running_daemon.journal_events() == []
    assert spooled(running_daemon.home) == []


# -- what the daemon answers: each error line, the same way ----------------------------------

THREE = b"".join(b'{"type":"custom","id":"ev-part-%d","name":"n"}\n' % n for n in range(1, 4))


@pytest.fixture
def fake_events(tmp_path: Path) -> Iterator[Callable[[bytes], str]]:
    """An events socket (served by a thread) that reads everything, then answers ``answer``."""
    made: list[Peer] = []

    def make(answer: bytes) -> str:
        def serve(conn: Any) -> None:
            read_all(conn)
            conn.sendall(answer)

        made.append(Peer(tmp_path, serve))
        return made[-1].path

    yield make
    for peer in made:
        peer.close()


@pytest.mark.parametrize(
    "answer, spooled_ids, why",
    [
        (reply_line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 2")), [1, 2, 3], "busy: over 2"),
        (reply_line(wire.Closing(wire.JOURNAL_UNAVAILABLE, "disk full")), [1, 2, 3], "disk full"),
        (
            reply_line(wire.Closing(wire.FORBIDDEN_PEER, "uid 7 may not")),
            [1, 2, 3],
            "uid 7 may not",
        ),
        (reply_line(wire.Closing(wire.IDLE_TIMEOUT, "nothing for 60 s")), [1, 2, 3], "60 s"),
        (
            reply_line(wire.Summary(True, 1, 1, 0, 0))
            + reply_line(wire.Closing(wire.SHUTTING_DOWN, "bye")),
            [2, 3],  # the daemon read line 1 and journaled it: only the rest is spooled
            "bye",
        ),
        (b"", [1, 2, 3], "closed the connection without a summary"),
        (b"nonsense\n", [1, 2, 3], "malformed reply line"),
    ],
)
def test_each_failure_spools_what_the_daemon_did_not_take(
    fake_events: Callable[[bytes], str],
    state_home: Path,
    answer: bytes,
    spooled_ids: list[int],
    why: str,
) -> None:
    result = send("-", "--socket", fake_events(answer), input=THREE)
    assert result.returncode == 0
    (warning,) = result.stderr.decode().splitlines()
    assert warning.startswith("telemetryctl: warning: ") and why in warning, warning
    assert f"{len(spooled_ids)} event(s) spooled to" in warning
    (path,) = spooled(state_home)
    ids = [json.loads(text)["id"] for text in path.read_text().splitlines()]
    assert ids == [f"ev-part-{n}" for n in spooled_ids]


def test_a_refusal_with_strict_fails_and_spools_nothing(
    fake_events: Callable[[bytes], str], state_home: Path
) -> None:
    refusal = reply_line(wire.Closing(wire.JOURNAL_UNAVAILABLE, "disk full"))
    result = send("-", "--strict", "--socket", fake_events(refusal), input=THREE)
    assert result.returncode == 75
    assert result.stderr == b"telemetryctl send: not delivered: disk full\n"
    assert spooled(state_home) == []


def test_an_unusable_runtime_directory_spools_instead_of_failing_the_hook(
    state_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without XDG_RUNTIME_DIR (cron, ssh) the sockets' place may be platformdirs'
    fallback, $TMPDIR/runtime-<uid>, which anyone can take first (here: a symlink).
    `send` died with a traceback and exit 1, and `hook` dropped the event; both now keep
    it in the spool, which needs no runtime directory. (Where /run/user/<uid> exists,
    the fallback is not used: the daemon is simply not there, and the events are
    spooled all the same.)"""
    temp = tmp_path / "tmp"
    temp.mkdir()
    (temp / f"runtime-{os.getuid()}").symlink_to(tmp_path)
    for name in ("TELEMETRYD_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    spool = tmp_path / "state" / "telemetryd" / "spool"
    sent = send("--type", "custom", "--name", "cron-job", "--id", "cron-1")
    assert sent.returncode == 0, sent.stderr
    assert b"Traceback" not in sent.stderr
    payload = json.dumps({"hook_event_name": "Stop", "session_id": "s-cron"}).encode()
    hooked = ctl("hook", "claude-code", input=payload)
    assert hooked.returncode == 0 and hooked.stdout == b""
    assert b"Traceback" not in hooked.stderr
    kept = [
        json.loads(line) for path in spool.glob("*.jsonl") for line in path.read_text().splitlines()
    ]
    assert sorted(event.get("name") for event in kept) == ["cron-job", "stop"]


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "abc"])
def test_a_timeout_that_is_no_number_of_seconds_never_loses_the_event(
    state_home: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """TELEMETRYD_SEND_TIMEOUT=nan made `send` die with a traceback and `hook` lose its
    event; such a value is now named in a warning and the default used."""
    monkeypatch.setenv("TELEMETRYD_SEND_TIMEOUT", value)
    sent = send("--type", "custom", "--name", "timed")
    assert sent.returncode == 0, sent.stderr
    assert f"TELEMETRYD_SEND_TIMEOUT expects seconds from 0 to 3600, got '{value}'" in (
        sent.stderr.decode()
    )
    payload = json.dumps({"hook_event_name": "Stop", "session_id": "s-t"}).encode()
    assert ctl("hook", "claude-code", input=payload).returncode == 0
    monkeypatch.delenv("TELEMETRYD_SEND_TIMEOUT")
    hooked = ctl("hook", "claude-code", "--timeout", value, input=payload)
    assert hooked.returncode == 0 and b"--timeout expects seconds" in hooked.stderr
    names = [
        json.loads(line)["name"]
        for path in spooled(state_home)
        for line in path.read_text().splitlines()
    ]
    assert sorted(names) == ["stop", "stop", "timed"]
    refused = send("--timeout", value, "--type", "custom", "--name", "x")
    assert refused.returncode == 2 and b"--timeout expects seconds" in refused.stderr


def test_input_nested_too_deeply_is_a_usage_error_not_a_traceback(state_home: Path) -> None:
    deep = b'{"type":"custom","name":"d","attrs":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    result = send("-", input=deep)
    assert result.returncode == 2
    assert result.stderr == b"telemetryctl send: the input nests too deeply to read\n"
