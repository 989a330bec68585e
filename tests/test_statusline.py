"""`telemetryctl statusline`, the 5-hour windows of the daemon's totals, and the status
line's install: every figure is checked against one computed here from the events sent."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import TELEMETRYCTL, Daemon, ctl, exchange, summary, with_stdin_open
from telemetryd.adapters import claude_settings
from telemetryd.client import statusline
from telemetryd.daemon.totals import Totals
from test_output_format import half_up

FORBIDDEN = ("msgspec", "click", "duckdb", "asyncio", "anyio", "re", "json")
HOUR = 3600.0
WINDOW = 5 * HOUR


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test reads or writes the real home or Claude configuration."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(home / ".claude"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    yield home


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def request(
    n: int, when: float, *, session: str = "s1", cost: float | None = 0.1, model: str = "claude-x"
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "api_request",
        "id": f"r{n}",
        "ts": iso(when),
        "session_id": session,
        "agent": {"model": model},
        "tokens": {"source": "actual", "input": n, "output": 2 * n},
    }
    if cost is not None:
        event["cost_usd"] = cost
    return event


def lines(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)


def epoch_of(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def blocks(events: list[dict[str, Any]]) -> list[tuple[float, list[dict[str, Any]]]]:
    """ccusage's billing blocks, request by request: (start, requests) in order."""
    out: list[tuple[float, list[dict[str, Any]]]] = []
    for event in sorted(events, key=epoch_of):
        when = epoch_of(event)
        if not out or when - out[-1][0] > WINDOW or when - epoch_of(out[-1][1][-1]) > WINDOW:
            out.append((when // HOUR * HOUR, []))
        out[-1][1].append(event)
    return out


def active_block(
    events: list[dict[str, Any]], now: float
) -> tuple[float, list[dict[str, Any]]] | None:
    claude = [e for e in events if e["agent"]["model"].startswith("claude")]
    if not claude:
        return None
    start, found = blocks(claude)[-1]
    if now >= start + WINDOW or now - epoch_of(found[-1]) >= WINDOW:
        return None
    return start, found


def cost(events: list[dict[str, Any]]) -> float:
    return sum(e.get("cost_usd", 0.0) for e in events)


# -- the totals' quarter hours ------------------------------------------------------------


def test_windows_and_since_agree_with_the_requests(tmp_path: Path) -> None:
    import random

    now = 1_800_000_000.0 + 1234.5  # 2027-01-15T08:20:34.5Z
    rng = random.Random(7)
    events = []
    when = now - 3 * 86_400
    n = 0
    while when < now:  # bursts and gaps, some longer than 5 h, some near window ends
        n += 1
        model = "gpt-5" if n % 11 == 0 else "claude-x"
        events.append(request(n, when, cost=round(rng.uniform(0, 0.2), 4), model=model))
        when += rng.choice([30, 400, 1800, 3 * HOUR, 5 * HOUR + 60, 6 * HOUR])
    journal = tmp_path / "journal"
    journal.mkdir()
    segment = journal / "20270112T000000Z-000001.jsonl"
    segment.write_bytes(lines(events))
    os.utime(segment, (now, now))

    for at in (now, epoch_of(events[-1]) + 60, epoch_of(events[-1]) + WINDOW + 1):
        totals = Totals(str(journal), clock=lambda at=at: at)
        totals.refresh()
        expected = active_block(events, at)
        window = totals.window()
        if expected is None:
            assert window is None
            continue
        assert window is not None
        start, found = expected
        assert (window.start, window.end) == (iso(start)[:19] + "Z", iso(start + WINDOW)[:19] + "Z")
        assert window.usage.requests == len(found)
        assert window.usage.cost_usd == pytest.approx(cost(found))
        assert window.usage.first == found[0]["ts"] and window.usage.last == found[-1]["ts"]
    # Every past block too, walking the quarters as the window does.
    claude = [e for e in events if e["agent"]["model"] == "claude-x"]
    assert len(blocks(claude)) > 5
    for midnight in (now - 86_400, now // 86_400 * 86_400, now // 900 * 900 - 19_800):
        since = [e for e in events if epoch_of(e) >= midnight]
        got = totals.since(midnight)
        assert got.requests == len(since)
        assert got.cost_usd == pytest.approx(cost(since))


# -- the command ------------------------------------------------------------------------------


def stdin_json(session: str = "s1", **over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "session_id": session,
        "transcript_path": "/tmp/x.jsonl",
        "cwd": "/tmp",
        "model": {"id": "claude-opus-4-1", "display_name": "Opus 4.1"},
        "context_window": {
            "total_input_tokens": 1000,
            "total_output_tokens": 500,
            "context_window_size": 200_000,
            "current_usage": {
                "input_tokens": 1200,
                "output_tokens": 300,
                "cache_creation_input_tokens": 4000,
                "cache_read_input_tokens": 60_000,
            },
        },
        "rate_limits": {
            "five_hour": {"used_percentage": 23.4, "resets_at": 1_900_000_000},
            "seven_day": {"used_percentage": 41, "resets_at": 1_900_400_000},
        },
    }
    payload.update(over)
    return payload


def run_statusline(
    payload: Any, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return subprocess.run(
        [TELEMETRYCTL, "statusline", *args],
        input=data,
        capture_output=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ, **(env or {})),
    )


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text[:-1]


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/Los_Angeles"])
def test_the_line_from_the_daemons_totals(running_daemon: Daemon, zone: str) -> None:
    now = time.time()
    events = [  # this session, another one, and a model that is not Claude's
        request(1, now - 9 * HOUR, cost=0.5),
        request(2, now - 2.5 * HOUR, cost=0.25),
        request(3, now - 2 * HOUR, session="s2", cost=1.0),
        request(4, now - 1.5 * HOUR, session="s2", cost=None),
        request(5, now - 40 * 60, cost=0.125),
        request(6, now - 20 * 60, session="s3", cost=2.0, model="gpt-5"),
        request(7, now - 10 * 60, cost=0.0625),
    ]
    assert exchange(running_daemon.events_socket, lines(events)) == [summary(7, 7)]
    payload = stdin_json()
    result = run_statusline(payload, env={"TZ": zone})
    text = one_line(result)
    after = time.time()

    os.environ["TZ"] = zone
    time.tzset()
    try:
        midnight = statusline.local_midnight(now)
    finally:
        del os.environ["TZ"]
        time.tzset()
    mine = [e for e in events if e["session_id"] == "s1"]
    today = [e for e in events if epoch_of(e) >= midnight]
    start, found = active_block(events, now) or (0.0, [])
    assert found, "the last requests make an active window"
    rate = cost(found) / (epoch_of(found[-1]) - epoch_of(found[0])) * 3600
    unknown = "+?" if any("cost_usd" not in e for e in today) else ""
    context = 100 * (1200 + 4000 + 60_000) / 200_000
    parts = text.split(" | ")
    assert parts[0] == "Opus 4.1"
    assert parts[1] == f"session ${half_up(cost(mine), 2)}"  # stdin has no cost: the daemon's
    assert parts[2] == f"today ${half_up(cost(today), 2)}{unknown}"
    window = re.fullmatch(r"5h (\$[\d,.]+(?:\+\?)?) \((\d+)h(\d\d)m left\)", parts[3])
    assert window, parts[3]
    assert window[1] == f"${half_up(cost(found), 2)}" + (
        "+?" if any("cost_usd" not in e for e in found) else ""
    )
    left = int(window[2]) * 60 + int(window[3])
    assert (start + WINDOW - after) // 60 <= left <= (start + WINDOW - now) // 60
    assert parts[4] == f"${half_up(rate, 2)}/h"
    assert parts[5] == f"ctx {half_up(context, 0)}%"
    assert parts[6] == "limit 5h 23% 7d 41%"
    assert len(parts) == 7


def test_claude_codes_own_session_cost_and_context_percentage_win(running_daemon: Daemon) -> None:
    now = time.time()
    assert exchange(running_daemon.events_socket, lines([request(1, now - 60, cost=0.5)])) == [
        summary(1, 1)
    ]
    payload = stdin_json(cost={"total_cost_usd": 1.23456})
    payload["context_window"]["used_percentage"] = 61
    del payload["rate_limits"]
    parts = one_line(run_statusline(payload)).split(" | ")
    assert parts[1] == "session $1.23"
    assert parts[-1] == "ctx 61%"
    assert not any(p.startswith("limit") for p in parts)


def test_no_burn_rate_until_the_windows_requests_span_five_minutes() -> None:
    """Two requests a second apart at a window's start: the line said $1,692/h."""
    start = "2026-12-07T10:00:00.000Z"

    def rate(last: str) -> float | None:
        return statusline.burn_rate({"first": start, "last": last, "cost_usd": 0.47})

    assert rate("2026-12-07T10:00:01.000Z") is None
    assert rate("2026-12-07T10:04:59.999Z") is None
    assert rate("2026-12-07T10:05:00.000Z") == pytest.approx(0.47 * 12)
    window = {"end": "2026-12-07T15:00:00.000Z", "usage": {"first": start, "cost_usd": 0.47}}
    window["usage"]["last"] = "2026-12-07T10:00:01.000Z"
    now = 1_796_637_601.0  # (10:00:01)
    assert statusline.window_parts(window, now) == ["5h $0.47 (4h59m left)"]


def test_the_daemon_down_prints_what_stdin_holds(state_home: Path) -> None:
    payload = stdin_json(cost={"total_cost_usd": 0.5})
    started = time.monotonic()
    result = run_statusline(payload, timeout=10)
    elapsed = time.monotonic() - started
    assert one_line(result) == (
        "Opus 4.1 | session $0.50 | ctx 33% | limit 5h 23% 7d 41% | telemetryd down"
    )
    assert elapsed < statusline.DEFAULT_TIMEOUT + 5  # no wait on a daemon that is not there
    # The changes are spooled for the daemon to take later.
    spooled = [
        json.loads(line)
        for path in (state_home / "spool").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(e["name"] for e in spooled) == [
        "claude_code.rate_limits.five_hour",
        "claude_code.rate_limits.seven_day",
        "claude_code.session.cost_usd",
    ]


@pytest.mark.parametrize("stdin", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b'{"model": 3}'])
def test_malformed_stdin_still_gives_one_line_and_exit_0(
    running_daemon: Daemon, stdin: bytes
) -> None:
    text = one_line(run_statusline(stdin))
    if stdin.startswith(b"{"):
        assert text == "telemetryd" or "today $0.00" in text  # an object: no complaint
    else:
        assert text.startswith("statusline: stdin is not Claude Code's status JSON")
        assert len(text) < 120
    assert running_daemon.journal_events() == []


def test_stdin_left_open_and_a_bad_timeout_still_give_the_line(running_daemon: Daemon) -> None:
    """A writer that keeps stdin open (a wrapper script) held the status line for good: the
    status JSON is taken once it is whole, and a pipe that never brings one is given up
    after statusline.STDIN_WAIT. A TELEMETRYD_STATUSLINE_TIMEOUT that is not seconds
    printed a Python error in place of the line; it is named on stderr, the line is kept."""
    data = json.dumps(stdin_json(cost={"total_cost_usd": 0.5})).encode()
    for parts, expect in (([data], "Opus 4.1 | session $0.50"), ([data[:30]], "statusline: ")):
        argv = [TELEMETRYCTL, "statusline", "--no-record"]
        status, out, _, took = with_stdin_open(argv, parts, statusline.STDIN_WAIT + 20)
        assert status == 0 and out.decode().startswith(expect)
        assert took < statusline.STDIN_WAIT + 10
    result = run_statusline(
        stdin_json(), "--no-record", env={"TELEMETRYD_STATUSLINE_TIMEOUT": "abc"}
    )
    assert one_line(result).startswith("Opus 4.1")
    assert b"TELEMETRYD_STATUSLINE_TIMEOUT" in result.stderr and b"Traceback" not in result.stderr


def test_bad_options_and_help_exit_0() -> None:
    text = one_line(run_statusline(b"{}", "--frobnicate"))
    assert text.startswith("telemetryctl statusline: unexpected argument")
    result = ctl("statusline", "--help")
    assert result.returncode == 0 and result.stdout.startswith(b"Usage: telemetryctl statusline")


def metrics(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in daemon.journal_events() if e["type"] == "metric"]


def test_changes_are_recorded_once_each(running_daemon: Daemon) -> None:
    first = stdin_json(cost={"total_cost_usd": 0.25, "total_duration_ms": 1000})
    for _ in range(3):
        one_line(run_statusline(first))
    recorded = metrics(running_daemon)
    assert [(e["name"], e["value"]) for e in recorded] == [
        ("claude_code.rate_limits.five_hour", 23.4),
        ("claude_code.rate_limits.seven_day", 41.0),
        ("claude_code.session.cost_usd", 0.25),
    ]
    five, seven, spent = recorded
    assert five["attrs"] == {"resets_at": "2030-03-17T17:46:40Z"} and five["unit"] == "%"
    assert seven["attrs"] == {"resets_at": "2030-03-22T08:53:20Z"}
    assert spent["session_id"] == "s1" and spent["agent"] == {"model": "claude-opus-4-1"}
    assert spent["attrs"] == {"total_duration_ms": 1000} and spent["unit"] == "USD"
    assert all(e["kind"] == "gauge" and e["source"] == "claude-code" for e in recorded)

    # The five-hour use and the cost change: one event each; the seven-day one did not.
    second = stdin_json(cost={"total_cost_usd": 0.5})
    second["rate_limits"]["five_hour"]["used_percentage"] = 30
    one_line(run_statusline(second))
    one_line(run_statusline(second))
    assert [(e["name"], e["value"]) for e in metrics(running_daemon)[3:]] == [
        ("claude_code.rate_limits.five_hour", 30.0),
        ("claude_code.session.cost_usd", 0.5),
    ]
    # Another session sees the same limits: its cost is new, the limits are not, even
    # when its state says nothing (the ids make the repeat a duplicate).
    for path in (running_daemon.home / "run" / "hooks").glob("statusline-rate-limit-*"):
        path.unlink()
    one_line(
        run_statusline(
            stdin_json("s2", **{"cost": {"total_cost_usd": 0.5}})
            | {"rate_limits": second["rate_limits"]}
        )
    )
    assert [(e["name"], e.get("session_id")) for e in metrics(running_daemon)[5:]] == [
        ("claude_code.session.cost_usd", "s2")
    ]
    assert one_line(run_statusline(first, "--no-record"))
    assert len(metrics(running_daemon)) == 6


def test_statusline_imports_nothing_heavy(running_daemon: Daemon) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", TELEMETRYCTL, "statusline"],
        input=json.dumps(stdin_json(cost={"total_cost_usd": 1.0})).encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith(b"Opus 4.1 | session $1.00")
    imported = set()
    for row in result.stderr.decode().splitlines():
        assert row.startswith("import time:"), row
        imported.add(row.rsplit("|", 1)[1].strip().split(".")[0])
    assert "telemetryd" in imported
    assert sorted(imported & set(FORBIDDEN)) == []
    assert len(metrics(running_daemon)) == 3


# -- hooks install claude-code --statusline ---------------------------------------------------


def settings_path(home: Path) -> Path:
    return home / ".claude" / "settings.json"


def write(path: Path, settings: dict[str, Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings, indent=2) + "\n"
    path.write_text(text)
    return text


def ours() -> dict[str, Any]:
    """Our status line as install writes it (with the test's TELEMETRYD_HOME before it)."""
    home = shlex.quote(os.environ["TELEMETRYD_HOME"])
    return {
        "type": "command",
        "command": f"TELEMETRYD_HOME={home} {TELEMETRYCTL} statusline",
        "padding": 0,
    }


def test_install_sets_the_status_line_and_uninstall_takes_it_out(private_home: Path) -> None:
    path = settings_path(private_home)
    original = write(path, {"model": "opus"})
    result = ctl("hooks", "install", "claude-code", "--statusline")
    assert result.returncode == 0, result.stderr
    installed = json.loads(path.read_text())
    assert installed["statusLine"] == ours()
    assert installed["model"] == "opus"
    assert "statusLine" in claude_settings.installed(path)
    assert b"nothing to do" in ctl("hooks", "install", "claude-code", "--statusline").stdout
    # A plain install leaves the status line as it is.
    assert b"nothing to do" in ctl("hooks", "install", "claude-code").stdout
    assert ctl("hooks", "uninstall", "claude-code").returncode == 0
    assert path.read_text() == original


def test_an_existing_status_line_is_kept_unless_replaced(private_home: Path) -> None:
    path = settings_path(private_home)
    theirs = {"type": "command", "command": "~/bin/status", "padding": 2}
    write(path, {"statusLine": theirs})
    result = ctl("hooks", "install", "claude-code", "--statusline")
    assert result.returncode == 0, result.stderr
    assert json.loads(path.read_text())["statusLine"] == theirs
    assert b"kept the existing status line (~/bin/status)" in result.stderr
    assert b"--replace-statusline" in result.stderr
    # Uninstall leaves a status line that is not ours.
    assert ctl("hooks", "uninstall", "claude-code").returncode == 0
    assert json.loads(path.read_text()) == {"statusLine": theirs}

    dry = ctl(
        "hooks", "install", "claude-code", "--statusline", "--replace-statusline", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert b'-  "statusLine": {' in dry.stdout or b'-    "command": "~/bin/status"' in dry.stdout
    assert f'+    "command": "{ours()["command"]}"'.encode() in dry.stdout
    assert json.loads(path.read_text()) == {"statusLine": theirs}  # nothing written

    replaced = ctl("hooks", "install", "claude-code", "--statusline", "--replace-statusline")
    assert replaced.returncode == 0, replaced.stderr
    assert b"replaced the status line (~/bin/status)" in replaced.stderr
    assert json.loads(path.read_text())["statusLine"] == ours()
    # Uninstall puts theirs back (it was left only in a .bak file), once.
    undone = ctl("hooks", "uninstall", "claude-code")
    assert undone.returncode == 0 and b"put back the status line" in undone.stderr
    assert json.loads(path.read_text()) == {"statusLine": theirs}
    assert ctl("hooks", "install", "claude-code", "--statusline").returncode == 0  # (kept)
    assert json.loads(path.read_text())["statusLine"] == theirs
    assert b"put back" not in ctl("hooks", "uninstall", "claude-code").stderr
    bad = ctl("hooks", "install", "claude-code", "--replace-statusline")
    assert bad.returncode == 2 and b"goes with --statusline" in bad.stderr


def test_our_status_line_keeps_its_padding_and_is_recognised_by_path() -> None:
    ours = {"type": "command", "command": "'/opt/my tools/telemetryctl' statusline", "padding": 1}
    assert claude_settings.is_our_statusline(ours)
    assert not claude_settings.is_our_statusline({"command": "telemetryctl-statusline"})
    assert not claude_settings.is_our_statusline({"command": "npx ccusage statusline"})
    settings = claude_settings.with_statusline(
        {"statusLine": ours}, claude_settings.StatusLine("/usr/bin/telemetryctl statusline")
    )
    assert settings["statusLine"] == {
        "type": "command",
        "command": "/usr/bin/telemetryctl statusline",
        "padding": 1,
    }


def test_the_installed_status_line_runs(private_home: Path, running_daemon: Daemon) -> None:
    assert ctl("hooks", "install", "claude-code", "--statusline").returncode == 0
    command = json.loads(settings_path(private_home).read_text())["statusLine"]["command"]
    result = subprocess.run(
        command,
        shell=True,
        input=json.dumps(stdin_json()).encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.decode().startswith("Opus 4.1 | ")
