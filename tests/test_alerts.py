"""The analyzer on the real daemon: each rule raises one alert per condition, journaled,
visible in `telemetryctl alerts` and in the events table, and never again after a
restart (store/analyzer.py, daemon/analyzer.py, docs/alerts.md).

Every expectation is computed here, from the events the test sends: the input digest
with hashlib and json, medians with statistics, spikes by counting errors in each
window one by one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import TELEMETRYCTL, Daemon, ctl, exchange
from telemetryd.client import control

WAIT = 30.0  # seconds any analysis may take to come round


def start(daemon_factory: Any, *settings: str, env: dict[str, str] | None = None) -> Daemon:
    args = ["--set", "analyzer.interval=0.2", "--set", "budget.timezone=UTC"]
    for setting in settings:
        args += ["--set", setting]
    return daemon_factory(args).start(env=env)


def send(daemon: Daemon, events: list[dict[str, Any]]) -> None:
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    replies = exchange(daemon.events_socket, payload)
    assert replies[-1]["accepted"] == len(events), replies


def analyzed(daemon: Daemon) -> dict[str, Any]:
    """Wait until an analysis has seen every event journaled so far; its status."""
    target = control.status(daemon.control_socket)["analyzer"]["events_journaled"]
    deadline = time.monotonic() + WAIT
    while True:
        status = control.status(daemon.control_socket)["analyzer"]
        if status["analyzed_through"] >= target:
            return status
        assert time.monotonic() < deadline, f"no analysis saw the events: {status}"
        time.sleep(0.05)


def rows(daemon: Daemon, sql: str) -> list[dict[str, Any]]:
    result = ctl("query", "--format", "json", sql, "--socket", daemon.control_socket)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def raised(daemon: Daemon) -> list[dict[str, Any]]:
    return rows(
        daemon,
        "SELECT id, kind, severity, session_id, message, attrs FROM events "
        "WHERE type = 'alert' AND source = 'telemetryd' ORDER BY id",
    )


def wait_for_alerts(daemon: Daemon, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    while len(found := raised(daemon)) < count:
        assert time.monotonic() < deadline, f"{len(found)} alerts, expected {count}: {found}"
        time.sleep(0.1)
    return found


def evidence(alert: dict[str, Any]) -> dict[str, Any]:
    attrs = alert["attrs"] if isinstance(alert["attrs"], dict) else json.loads(alert["attrs"])
    return dict(attrs["evidence"])


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def hook(payload: dict[str, Any], daemon: Daemon) -> None:
    result = subprocess.run(
        [TELEMETRYCTL, "hook", "claude-code", "--socket", daemon.events_socket],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr


def request(session: str, cost: float, model: str = "claude-x", **extra: Any) -> dict[str, Any]:
    return {
        "type": "api_request",
        "session_id": session,
        "agent": {"model": model},
        "tokens": {"source": "actual", "input": 10, "output": 10},
        "cost_usd": cost,
        "cost_source": "reported",
        **extra,
    }


def test_a_tool_loop_raises_one_alert(daemon_factory: Any) -> None:
    daemon = start(daemon_factory, "analyzer.loop-count=4", "analyzer.loop-window=60")
    tool_input = {"command": "pytest -x", "description": "run the tests", "timeout": 60}
    shuffled = dict(reversed(list(tool_input.items())))  # the same input, keys reordered
    for n in range(5):
        hook(
            {
                "session_id": "looping",
                "hook_event_name": "PreToolUse",
                "tool_name": "Bash",
                "tool_input": tool_input if n % 2 else shuffled,
                "tool_use_id": f"toolu_{n}",
            },
            daemon,
        )
    # Three different inputs in the same session, the same input three times in another
    # session, and a loop from three days ago (history, as an import brings): no alert.
    events = [
        {
            "type": "tool_call",
            "session_id": "looping",
            "tool": {"name": "Bash", "use_id": f"other-{n}", "input_digest": digest({"n": n})},
        }
        for n in range(3)
    ]
    events += [
        {
            "type": "tool_call",
            "session_id": "calm",
            "tool": {"name": "Bash", "use_id": f"calm-{n}", "input_digest": digest(tool_input)},
        }
        for n in range(3)
    ]
    old = datetime.now(UTC) - timedelta(days=3)
    events += [
        {
            "type": "tool_call",
            "ts": iso(old + timedelta(seconds=n)),
            "session_id": "history",
            "tool": {"name": "Read", "use_id": f"h-{n}", "input_digest": digest("same")},
        }
        for n in range(8)
    ]
    send(daemon, events)
    analyzed(daemon)
    [alert] = wait_for_alerts(daemon, 1)
    assert alert["kind"] == "tool_loop" and alert["severity"] == "warning"
    assert alert["session_id"] == "looping"
    seen = evidence(alert)
    assert seen["input_digest"] == digest(tool_input)
    assert seen["tool_name"] == "Bash"
    assert seen["most_in_window"] == 5 and seen["calls"] == 5
    assert "Bash ran 5 times with the same input" in alert["message"]
    # Journaled: the truth has it.
    journaled = [e for e in daemon.journal_events() if e["type"] == "alert"]
    assert [e["id"] for e in journaled] == [alert["id"]]
    # More of the same loop: still one alert.
    for n in range(5, 7):
        hook(
            {
                "session_id": "looping",
                "hook_event_name": "PreToolUse",
                "tool_name": "Bash",
                "tool_input": tool_input,
                "tool_use_id": f"toolu_{n}",
            },
            daemon,
        )
    analyzed(daemon)
    analyzed(daemon)
    assert [a["id"] for a in raised(daemon)] == [alert["id"]]


def test_a_stalled_session_raises_one_alert_per_silence(daemon_factory: Any) -> None:
    daemon = start(daemon_factory, "analyzer.stall-after=1")
    two_hours_ago = iso(datetime.now(UTC) - timedelta(hours=2))
    a_moment_ago = iso(datetime.now(UTC) - timedelta(seconds=2))
    send(
        daemon,
        [
            {"type": "session_start", "session_id": "stuck", "ts": a_moment_ago},
            {"type": "tool_call", "session_id": "stuck", "tool": {"name": "Bash"}},
            # ended, idle after its turn, and imported (not live): none of them stalls
            {"type": "session_start", "session_id": "ended"},
            {"type": "session_end", "session_id": "ended"},
            {"type": "prompt", "session_id": "idle", "length": 12},
            {"type": "custom", "name": "stop", "session_id": "idle"},
            {
                "type": "tool_call",
                "ts": two_hours_ago,
                "session_id": "imported",
                "tool": {"name": "Bash"},
            },
        ],
    )
    [alert] = wait_for_alerts(daemon, 1)
    assert alert["kind"] == "stall" and alert["session_id"] == "stuck"
    assert evidence(alert)["last_type"] == "tool_call"
    # Later analyses find the same silence: no second alert.
    send(daemon, [{"type": "session_end", "session_id": "unrelated"}])
    analyzed(daemon)
    analyzed(daemon)
    assert [a["id"] for a in raised(daemon)] == [alert["id"]]
    # The session goes on, then falls silent again: a new condition, a new alert.
    send(daemon, [{"type": "tool_result", "session_id": "stuck", "tool": {"name": "Bash"}}])
    found = wait_for_alerts(daemon, 2)
    assert {a["session_id"] for a in found} == {"stuck"}
    assert len({a["id"] for a in found}) == 2


def test_a_cost_anomaly_raises_one_alert(daemon_factory: Any) -> None:
    daemon = start(daemon_factory, "analyzer.cost-factor=3", "analyzer.cost-min-sessions=3")
    costs = {"s1": [1.0], "s2": [2.0], "s3": [0.5, 1.0], "s4": [1.0], "big": [3.0, 4.0]}
    costs["mid"] = [3.5]
    events = [request(s, c) for s, amounts in costs.items() for c in amounts]
    # A dear model with one session: no baseline, no alert.
    events.append(request("lonely", 100.0, model="claude-dear"))
    send(daemon, events)
    analyzed(daemon)
    totals = {s: sum(amounts) for s, amounts in costs.items()}
    expected = set()
    for session, cost in totals.items():
        others = [c for s, c in totals.items() if s != session]
        if cost > 3 * statistics.median(others):
            expected.add(session)
    assert expected == {"big"}  # (the data is chosen so: the test of the test)
    found = wait_for_alerts(daemon, 1)
    assert {a["session_id"] for a in found} == expected
    [alert] = found
    seen = evidence(alert)
    others = [c for s, c in totals.items() if s != "big"]
    assert seen["median_usd"] == pytest.approx(statistics.median(others))
    assert seen["baseline_sessions"] == len(others)
    assert seen["cost_usd"] == pytest.approx(totals["big"])
    assert seen["model"] == "claude-x"
    median = statistics.median(others)
    assert f"cost ${totals['big']:.2f}, " in alert["message"]
    assert f"the median ${median:.2f} of {len(others)} other" in alert["message"]
    # (two decimals: a ratio of 5.01 read "5.0×", the factor, not over it)
    assert f", {totals['big'] / median:.2f}× the median" in alert["message"]
    # The session costs more still: the same anomaly, not a new one.
    send(daemon, [request("big", 5.0)])
    analyzed(daemon)
    assert [a["id"] for a in raised(daemon)] == [alert["id"]]


def test_an_alerts_dollars_below_a_cent_keep_four_decimals() -> None:
    from telemetryd.store import analyzer

    assert [analyzer._usd(v) for v in (0.001, 0.00994, 0.0, 0.01, 1234.567)] == [
        "$0.0010", "$0.0099", "$0.00", "$0.01", "$1,234.57",
    ]  # fmt: skip


def test_budget_crossings_alert_once_and_survive_a_restart(daemon_factory: Any) -> None:
    settings = ("budget.daily-usd=10", "budget.monthly-usd=4", "budget.warn-at=0.8")
    daemon = start(daemon_factory, *settings)
    send(daemon, [request("b1", 5.0)])  # the month jumps past 100%: its critical alert only
    [month] = wait_for_alerts(daemon, 1)
    assert month["severity"] == "critical" and evidence(month)["period"] == "month"
    send(daemon, [request("b1", 2.0)])  # $7 of $10: under 80%
    analyzed(daemon)
    assert len(raised(daemon)) == 1
    send(daemon, [request("b2", 1.5)])  # $8.50: past 80%
    found = wait_for_alerts(daemon, 2)
    [warning] = [a for a in found if a["id"] != month["id"]]
    assert warning["severity"] == "warning" and evidence(warning)["period"] == "day"
    assert evidence(warning)["spent_usd"] == pytest.approx(8.5)
    assert "reached 80% of the $10.00 budget" in warning["message"]
    send(daemon, [request("b2", 2.0)])  # $10.50: past 100%
    found = wait_for_alerts(daemon, 3)
    [critical] = [a for a in found if a["id"] not in (month["id"], warning["id"])]
    assert critical["severity"] == "critical" and evidence(critical)["level"] == 1.0
    [use] = rows(daemon, "SELECT * FROM budget_use WHERE period = 'day'")
    assert use["spent_usd"] == pytest.approx(5.0 + 2.0 + 1.5 + 2.0)
    assert use["limit_usd"] == 10.0
    status = ctl("status", "--socket", daemon.control_socket)
    assert b"$10.50 of $10.00 (105%)" in status.stdout, status.stdout

    ids = sorted(a["id"] for a in found)
    daemon.stop()
    daemon.start()
    send(daemon, [request("b3", 0.5)])  # more spending after the restart
    analyzed(daemon)
    analyzed(daemon)
    assert sorted(a["id"] for a in raised(daemon)) == ids
    journaled = [e["id"] for e in daemon.journal_events() if e["type"] == "alert"]
    assert sorted(journaled) == ids
    # ... and a rebuild keeps them: they are in the journal.
    assert ctl("rebuild", "--socket", daemon.control_socket).returncode == 0
    assert sorted(a["id"] for a in raised(daemon)) == ids


def test_a_budget_raised_within_the_day_alerts_at_its_new_levels(daemon_factory: Any) -> None:
    """Past a $10 day, the limit raised to $100: reaching $80 and then $100 raised nothing,
    since the $10 budget's alerts of that day stood for every limit's."""
    first = start(daemon_factory, "budget.daily-usd=10", "budget.warn-at=0.8")
    send(first, [request("r1", 10.5)])
    [old] = wait_for_alerts(first, 1)
    assert "of the $10.00 budget" in old["message"]
    first.stop()
    first.args[first.args.index("budget.daily-usd=10")] = "budget.daily-usd=100"
    raised_limit = first.start()  # (the same home, the limit raised)
    send(raised_limit, [request("r2", 70.0)])  # $80.50 of $100
    found = wait_for_alerts(raised_limit, 2)
    [warning] = [a for a in found if a["id"] != old["id"]]
    assert warning["severity"] == "warning" and "80% of the $100.00 budget" in warning["message"]
    send(raised_limit, [request("r2", 20.0)])  # $100.50
    found = wait_for_alerts(raised_limit, 3)
    [critical] = [a for a in found if a["id"] not in (old["id"], warning["id"])]
    assert "100% of the $100.00 budget" in critical["message"]


def spikes(times: list[float], count: int, window: float) -> list[float]:
    """Where a spike starts, counted one error at a time: the error at which the
    errors of the last ``window`` seconds reach ``count``, no sooner than a window
    after the previous spike."""
    out: list[float] = []
    before = 0
    for t in sorted(times):
        now = sum(1 for u in times if t - window <= u <= t)
        if now >= count and before < count and (not out or t > out[-1] + window):
            out.append(t)
        before = now
    return out


def test_error_spikes_per_provider(daemon_factory: Any) -> None:
    daemon = start(daemon_factory, "analyzer.error-spike-count=5", "analyzer.error-spike-window=60")
    base = datetime.now(UTC) - timedelta(minutes=30)
    plan = {
        # five within 30 s, and five more 200 s later: two spikes
        "anthropic": [0, 5, 10, 20, 30, 200, 201, 202, 203, 204],
        # four within a minute, then one more 100 s on: never five in a window
        "openai": [0, 10, 20, 30, 100],
        # five within a minute, but by then the first has left the window
        "google": [0, 40, 50, 55, 61, 62],
        # a provider that comes and goes: five in a minute at 128 (a spike), at 176 (no
        # spike: within a minute of it) and at 219, a spike, though within a minute of
        # the one at 176 (which, taken for a spike, held the next one back)
        "mistral": [69, 87, 119, 127, 128, 163, 176, 191, 212, 219],
    }
    events = []
    for provider, offsets in plan.items():
        for n, offset in enumerate(offsets):
            events.append(
                {
                    "type": "error",
                    "ts": iso(base + timedelta(seconds=offset)),
                    "id": f"{provider}-{n}",
                    "agent": {"provider": provider},
                    "message": "429 Too Many Requests: rate limit exceeded",
                }
            )
    # Failed tool calls are not the provider's errors.
    events += [
        {"type": "tool_result", "tool": {"name": "Bash", "success": False, "error": "exit 1"}}
        for _ in range(8)
    ]
    send(daemon, events)
    analyzed(daemon)
    expected = {
        (provider, t)
        for provider, offsets in plan.items()
        for t in spikes([float(o) for o in offsets], 5, 60.0)
    }
    assert {p for p, _ in expected} == {"anthropic", "google", "mistral"}  # (the test's test)
    assert sorted(t for p, t in expected if p == "mistral") == [128.0, 219.0]
    found = wait_for_alerts(daemon, len(expected))
    got = set()
    for alert in found:
        assert alert["kind"] == "error_spike" and alert["severity"] == "error"
        seen = evidence(alert)
        at = datetime.fromisoformat(seen["spiked_at"].replace("Z", "+00:00"))
        got.add((seen["provider"], round((at - base).total_seconds())))
        assert seen["top_category"] == "rate_limit"
    assert got == expected
    analyzed(daemon)
    assert len(raised(daemon)) == len(expected)


def test_alerts_command_lists_and_follows(daemon_factory: Any) -> None:
    daemon = start(daemon_factory, "budget.daily-usd=1")
    socket_args = ["--socket", daemon.control_socket]
    empty = ctl("alerts", *socket_args)
    assert empty.returncode == 0 and empty.stdout == b""
    assert b"no alerts since" in empty.stderr
    with subprocess.Popen(
        [TELEMETRYCTL, "alerts", "-f", "--json", *socket_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as follower:
        try:
            deadline = time.monotonic() + WAIT
            while control.status(daemon.control_socket)["tail_clients"] < 1:
                assert time.monotonic() < deadline and follower.poll() is None
                time.sleep(0.05)
            send(daemon, [request("a1", 0.9)])
            assert follower.stdout is not None
            line = json.loads(follower.stdout.readline())
        finally:
            follower.kill()
    assert line["rule"] == "budget" and line["severity"] == "warning"
    assert line["evidence"]["spent_usd"] == pytest.approx(0.9)
    listed = ctl("alerts", "--json", "--since", "1h", *socket_args)
    assert listed.returncode == 0, listed.stderr
    [alert] = json.loads(listed.stdout)["alerts"]
    assert alert["id"] == line["id"] and alert["message"] == line["message"]
    # (followed, the time came as journaled, in microseconds: one format for both)
    assert alert["timestamp"] == line["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
    text = ctl("alerts", *socket_args).stdout.decode()
    assert "warning  budget" in text and "reached 80% of the $1.00 budget" in text
    # Producers' alerts (Claude Code's notifications) only with --all.
    send(daemon, [{"type": "alert", "severity": "info", "kind": "idle_prompt", "message": "hi"}])
    assert len(json.loads(ctl("alerts", "--json", *socket_args).stdout)["alerts"]) == 1
    assert len(json.loads(ctl("alerts", "--json", "--all", *socket_args).stdout)["alerts"]) == 2
    future = ctl("alerts", "--json", "--since", "2999-01-01", *socket_args)
    assert json.loads(future.stdout)["alerts"] == []
    bad = ctl("alerts", "--since", "yesterday-ish", *socket_args)
    assert bad.returncode == 2 and b"expected a span such as 24h" in bad.stderr
    far = ctl("alerts", "--since", "99999999d", *socket_args)  # (was a traceback)
    assert far.returncode == 2 and b"before the year 1" in far.stderr, far.stderr


def test_notifications_are_opt_in(daemon_factory: Any, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "notified"
    script = bin_dir / "notify-send"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{record}"\n')
    script.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    daemon = start(daemon_factory, "budget.daily-usd=1", "analyzer.notify=true", env=env)
    send(daemon, [request("n1", 2.0)])
    [alert] = wait_for_alerts(daemon, 1)
    deadline = time.monotonic() + WAIT
    while not record.exists():
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    argv = record.read_text().splitlines()
    assert "--urgency=normal" not in argv and "--urgency=critical" in argv
    assert "telemetryd: budget (critical)" in argv
    assert alert["message"] in argv


def test_session_start_context_mentions_alerts_and_budget(daemon_factory: Any) -> None:
    daemon = start(daemon_factory, "budget.daily-usd=10")
    send(daemon, [request("c1", 8.5)])
    [alert] = wait_for_alerts(daemon, 1)
    payload = {
        "session_id": "new-session",
        "hook_event_name": "SessionStart",
        "source": "startup",
        "cwd": "/tmp",
    }
    result = subprocess.run(
        [TELEMETRYCTL, "hook", "claude-code", "--context", "--socket", daemon.events_socket],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=30,
        check=False,
        env=dict(os.environ, TELEMETRYD_HOME=str(daemon.home)),
    )
    assert result.returncode == 0, result.stderr
    text = json.loads(result.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "- today: $8.50 of $10.00 (85%)" in text
    assert f"- {alert['message']}" in text


def test_the_analyzer_can_be_turned_off(daemon_factory: Any) -> None:
    daemon = start(daemon_factory, "budget.daily-usd=1", "analyzer.enabled=false")
    send(daemon, [request("o1", 5.0)])
    assert ctl("flush", "--socket", daemon.control_socket).returncode == 0
    status = control.status(daemon.control_socket)["analyzer"]
    assert status["enabled"] is False and status["runs"] == 0
    assert raised(daemon) == []


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[budget]\ntimezone = "Mars/Olympus"', "unknown time zone 'Mars/Olympus'"),
        ("[budget]\nwarn-at = 1.5", "budget.warn-at"),
        ("[analyzer]\nloop-count = 1", "analyzer.loop-count"),
        ("[budget]\ndaily-usd = -5", "budget.daily-usd"),
    ],
)
def test_bad_analyzer_settings_are_named(toml: str, problem: str, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml + "\n")
    result = ctl("config", "check", str(path))
    assert result.returncode == 1
    assert problem in result.stderr.decode(), result.stderr


def test_a_flood_of_conditions_is_raised_in_bounded_batches(daemon_factory: Any) -> None:
    from telemetryd.store.analyzer import MAX_NEW

    daemon = start(daemon_factory, "analyzer.loop-count=2")
    sessions = MAX_NEW + 37
    events = [
        {
            "type": "tool_call",
            "session_id": f"flood-{s}",
            "tool": {"name": "Grep", "use_id": f"u-{s}-{n}", "input_digest": digest(s)},
        }
        for s in range(sessions)
        for n in range(2)
    ]
    send(daemon, events)
    found = wait_for_alerts(daemon, sessions)
    assert {a["session_id"] for a in found} == {f"flood-{s}" for s in range(sessions)}
    batches = [e["ts"] for e in daemon.journal_events() if e["type"] == "alert"]
    assert len(batches) == sessions and max(batches.count(t) for t in set(batches)) <= MAX_NEW


def test_each_rule_alerts_once_and_not_again_after_a_restart(daemon_factory: Any) -> None:
    daemon = start(
        daemon_factory,
        "analyzer.loop-count=3",
        "analyzer.stall-after=2",
        "analyzer.cost-factor=3",
        "analyzer.cost-min-sessions=3",
        "analyzer.error-spike-count=3",
        "analyzer.error-spike-window=60",
        "budget.daily-usd=10",
    )
    a_moment_ago = iso(datetime.now(UTC) - timedelta(seconds=3))
    loop = [
        {
            "type": "tool_call",
            "session_id": "r-loop",
            "ts": a_moment_ago,
            "tool": {"name": "Bash", "use_id": f"r{n}", "input_digest": digest("ls")},
        }
        for n in range(3)
    ]
    costs = {"r-1": 1.0, "r-2": 1.0, "r-3": 1.0, "r-4": 1.0, "r-big": 8.0}  # $12 in all
    spend = [request(s, c, ts=a_moment_ago) for s, c in costs.items()]
    # Every session but one ends (an end at the same time as its work wins): one stall.
    ends = [{"type": "session_end", "session_id": s} for s in ["r-loop", *costs]]
    stuck = [
        {"type": "session_start", "session_id": "r-stuck", "ts": a_moment_ago},
        {"type": "tool_call", "session_id": "r-stuck", "tool": {"name": "Bash"}},
    ]
    errors = [
        {"type": "error", "agent": {"provider": "anthropic"}, "message": "529 Overloaded"}
        for _ in range(3)
    ]
    send(daemon, loop + spend + ends + stuck + errors)
    found = wait_for_alerts(daemon, 5)
    assert sorted(a["kind"] for a in found) == [
        "budget",
        "cost_anomaly",
        "error_spike",
        "stall",
        "tool_loop",
    ]
    by_kind = {a["kind"]: a for a in found}
    assert by_kind["stall"]["session_id"] == "r-stuck"
    assert by_kind["cost_anomaly"]["session_id"] == "r-big"
    assert by_kind["tool_loop"]["session_id"] == "r-loop"
    assert by_kind["budget"]["severity"] == "critical"  # past 100% at once: that alert only
    ids = sorted(a["id"] for a in found)
    alerts = ctl("alerts", "--json", "--socket", daemon.control_socket)
    assert sorted(a["id"] for a in json.loads(alerts.stdout)["alerts"]) == ids
    analyzed(daemon)
    analyzed(daemon)
    assert sorted(a["id"] for a in raised(daemon)) == ids
    daemon.stop()
    daemon.start()
    send(daemon, [{"type": "session_end", "session_id": "unrelated"}])
    analyzed(daemon)  # the first analysis after a start looks at every session
    analyzed(daemon)
    assert sorted(a["id"] for a in raised(daemon)) == ids
    assert sorted(e["id"] for e in daemon.journal_events() if e["type"] == "alert") == ids


def test_the_cost_baseline_is_the_median_of_the_models_other_sessions(tmp_path: Path) -> None:
    """cost_anomalies' median of "the model's other sessions" (found by position, not by
    pairing each session with all the others) equals statistics.median over the others,
    for odd and even counts, ties, sessions of two models and sessions without a model."""
    import random

    from telemetryd import events as ev
    from telemetryd.store.database import Store

    rng = random.Random(5)
    now = datetime.now(UTC).replace(microsecond=0)
    requests: list[ev.ApiRequest] = []
    for n in range(300):
        model = rng.choice(["m-odd", "m-even", "m-ties", None])
        costs = [rng.choice([0.5, 1.0, 2.0]) if model == "m-ties" else rng.uniform(0.01, 3)]
        if rng.random() < 0.2:  # a second, cheaper model in the same session
            costs.append(-1.0)
        for i, cost in enumerate(costs):
            requests.append(
                ev.ApiRequest(
                    id=f"r-{n}-{i}", v=1, session_id=f"s-{n:03d}", source="claude-code",
                    ts=now - timedelta(hours=rng.uniform(1, 200)), received_at=now,
                    agent=ev.Agent(model=model if cost > 0 else "m-side"),
                    tokens=ev.Tokens(source="actual", input=1, output=1),
                    cost_usd=cost if cost > 0 else 0.001, cost_source="reported",
                )
            )  # fmt: skip
    # One model with an even number of sessions, one with an odd number.
    sessions: dict[str, dict[str, float]] = {}
    for r in requests:
        assert r.agent is not None and r.session_id is not None and r.cost_usd is not None
        per = sessions.setdefault(r.session_id, {})
        key = r.agent.model or ""
        per[key] = per.get(key, 0.0) + r.cost_usd
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "20260301T000000Z-000001.jsonl").write_bytes(
        b"".join(ev.ENCODER.encode(r) + b"\n" for r in requests)
    )
    with Store(str(tmp_path / "telemetry.duckdb")) as store:
        store.materialize(str(journal))
        with store.cursor() as cur:
            got = cur.execute(
                "SELECT session_id, model, median_usd, baseline_sessions "
                "FROM cost_anomalies(factor := 0.0, min_sessions := 1, days := 30)"
            ).fetchall()
    # (its model: the one with most of its cost, requests without a model aside)
    model_of = {
        s: max([m for m in per if m] or [""], key=lambda m: per.get(m, 0.0))
        for s, per in sessions.items()
    }
    total = {s: sum(per.values()) for s, per in sessions.items()}
    want = {}
    for s, model in model_of.items():
        if model == "":  # (no model: no baseline)
            continue
        others = [total[o] for o, m in model_of.items() if m == model and o != s]
        if others:
            want[s] = (model, statistics.median(others), len(others))
    counts = {m: sum(1 for v in model_of.values() if v == m) for m in ("m-odd", "m-even")}
    assert len({c % 2 for c in counts.values()}) == 2 or min(counts.values()) > 2
    assert {s: (m, pytest.approx(med), n) for s, m, med, n in got} == want
