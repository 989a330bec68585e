"""The daemon's running totals of API usage: per UTC day and per session, read from the
journal on demand, checked against sums computed here from the same events."""

from __future__ import annotations

import gzip
import json
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, exchange, summary
from telemetryd.client import control
from telemetryd.daemon.totals import DAYS, Totals

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86_400.0


def request(n: int, *, day: float, session: str, cost: float | None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "api_request",
        "v": 1,
        "id": f"r{n}",
        "ts": _iso(day),
        "received_at": _iso(day),
        "session_id": session,
        "agent": {"model": "claude-sonnet-4-5"},
        "tokens": {
            "source": "actual",
            "input": n,
            "output": 2 * n,
            "cache_read": 3 * n,
            "cache_creation": n % 5,
        },
    }
    if cost is not None:
        event["cost_usd"] = cost
    return event


def _iso(when: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def lines(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(event, separators=(",", ":")).encode() + b"\n" for event in events)


def expected(events: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """The totals, summed here from the events themselves."""
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "requests": 0,
            "input": 0,
            "output": 0,
            "cache_read": 0,
            "cache_creation": 0,
            "cost_usd": 0.0,
            "unknown_cost": 0,
        }
    )
    for event in events:
        if event["type"] != "api_request":
            continue
        group = event["ts"][:10] if key == "day" else event["session_id"]
        tally = out[group]
        tally["requests"] += 1
        for name in ("input", "output", "cache_read", "cache_creation"):
            tally[name] += event["tokens"][name]
        if "cost_usd" in event:
            tally["cost_usd"] += event["cost_usd"]
        else:
            tally["unknown_cost"] += 1
    return dict(out)


def figures(tally: Any) -> dict[str, Any]:
    data = (
        dict(tally)
        if isinstance(tally, dict)
        else {name: getattr(tally, name) for name in tally.__struct_fields__}
    )
    data.pop("first", None)
    data.pop("last", None)
    data["cost_usd"] = round(data["cost_usd"], 9)
    return data


def rounded(tallies: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        key: {**value, "cost_usd": round(value["cost_usd"], 9)} for key, value in tallies.items()
    }


def test_totals_agree_with_the_events_across_days_sessions_and_segment_kinds(
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    events = []
    for n in range(600):
        day = NOW - rng.randrange(0, DAYS + 3) * DAY  # some older than the days kept
        cost = None if n % 7 == 0 else round(rng.uniform(0, 0.05), 6)
        events.append(request(n, day=day, session=f"s{n % 9}", cost=cost))
    others = [{"type": "custom", "v": 1, "id": f"c{n}", "name": "x"} for n in range(50)]
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "20270101T000000Z-000001.jsonl.gz").write_bytes(
        gzip.compress(lines(events[:200] + others))
    )
    (journal / "20270102T000000Z-000002.jsonl").write_bytes(lines(events[200:400]))
    active = journal / "20270103T000000Z-000003.jsonl"
    active.write_bytes(lines(events[400:500]) + b'{"type":"api_request","id":"torn"')

    for path in journal.iterdir():  # written "now" (the clock below)
        os.utime(path, (NOW, NOW))
    (journal / "20260101T000000Z-000000.jsonl").write_bytes(
        lines([request(-1, day=NOW, session="s0", cost=1.0)])
    )  # last written long ago: not read at all
    os.utime(journal / "20260101T000000Z-000000.jsonl", (NOW - 30 * DAY, NOW - 30 * DAY))
    totals = Totals(str(journal), clock=lambda: NOW)
    totals.refresh()
    kept = {day for day in expected(events, "day") if day >= _iso(NOW - DAYS * DAY)[:10]}
    by_day = {k: v for k, v in expected(events[:500], "day").items() if k in kept}
    assert {day: figures(t) for day, t in totals.days.items()} == rounded(by_day)
    assert {s: figures(t) for s, t in totals.sessions.items()} == rounded(
        expected(events[:500], "session")
    )
    # More lines arrive (the torn one completed): only they are read, and counted once.
    with active.open("ab") as f:
        f.write(b"\n")  # the torn line ends: not a whole event, skipped
        f.write(lines(events[500:]))
    totals.refresh()
    totals.refresh()
    assert {s: figures(t) for s, t in totals.sessions.items()} == rounded(
        expected(events, "session")
    )
    reply = totals.answer("s4")
    assert reply.day == _iso(NOW)[:10]
    assert figures(reply.today) == rounded(expected(events, "day"))[reply.day]
    assert (
        reply.session is not None
        and figures(reply.session) == rounded(expected(events, "session"))["s4"]
    )
    assert totals.answer("nobody").session is None
    # A restart reads it all back to the same totals.
    os.utime(active, (NOW, NOW))
    again = Totals(str(journal), clock=lambda: NOW)
    again.refresh()
    assert again.answer("s4") == totals.answer("s4")


def test_the_daemon_answers_totals_without_the_store_worker(running_daemon: Daemon) -> None:
    events = [
        request(n, day=0, session=f"t{n % 3}", cost=None if n % 4 == 0 else 0.01)
        for n in range(1, 41)
    ]
    for event in events:  # received now: today's; a model without a price stays unpriced
        event.pop("ts"), event.pop("received_at"), event.pop("v")
        event["agent"]["model"] = "a-model-without-a-price"
    assert exchange(running_daemon.events_socket, lines(events)) == [summary(40, 40)]
    with control.Control(running_daemon.control_socket) as ctl:
        answer = ctl.totals("t1")
    want = expected([{**e, "ts": "x" * 10, "session_id": "all"} for e in events], "session")
    assert figures(answer["today"]) == rounded(want)["all"]
    assert figures(answer["session"]) == rounded(expected(events, "session"))["t1"]
    assert answer["sessions_tracked"] == 3
    assert running_daemon.proc is not None
    pid = running_daemon.proc.pid
    assert Path(f"/proc/{pid}/task/{pid}/children").read_text().split() == []
    assert running_daemon.stop() == 0
    running_daemon.start()  # read back from the journal after a restart
    with control.Control(running_daemon.control_socket) as ctl:
        again = ctl.totals("t1")
    assert again["session"] == answer["session"] and again["today"] == answer["today"]


# -- computed costs: the store worker prices, the totals add them once ------------------------

# Published prices, USD per million tokens (tests/test_pricing.py cites them): GPT-5 $1.25
# input, $0.125 cached input, $10 output; Claude Haiku 4.5 $1 input, $5 output, $0.10 cache
# read, $1.25 cache write.
GPT5 = {"input": 1.25, "cache_read": 0.125, "output": 10.0, "cache_creation": 0.0}
HAIKU = {"input": 1.0, "cache_read": 0.10, "output": 5.0, "cache_creation": 1.25}


def by_hand(event: dict[str, Any]) -> float:
    prices = GPT5 if event["agent"]["model"] == "gpt-5" else HAIKU
    return sum(event["tokens"].get(kind, 0) * price for kind, price in prices.items()) / 1e6


def unpriced(n: int, when: float, *, session: str, model: str = "gpt-5") -> dict[str, Any]:
    """A Codex-style api_request without a cost (input uncached, reasoning in output)."""
    return {
        "type": "api_request",
        "v": 1,
        "id": f"u{n}",
        "ts": _iso(when),
        "received_at": _iso(when),
        "session_id": session,
        "agent": {"model": model, "provider": "openai" if model == "gpt-5" else "anthropic"},
        "tokens": {
            "source": "actual",
            "input": 1000 * n,
            "output": 300 * n,
            "cache_read": 5000 * n,
            "cache_creation": 0 if model == "gpt-5" else 200 * n,
        },
    }


def test_computed_costs_move_requests_from_unknown_once(tmp_path: Path) -> None:
    """Requests journaled without a cost are unknown until the store (a real DuckDB store
    loading the same journal) answers with their computed costs; each is added once."""
    from telemetryd.daemon import totals as totals_module
    from telemetryd.store.database import Store

    now = 1_800_000_000.0
    journal = tmp_path / "journal"
    journal.mkdir()
    events = [
        unpriced(1, now - 3600, session="c1"),
        unpriced(2, now - 1800, session="c1"),
        unpriced(3, now - 600, session="c2", model="claude-haiku-4-5"),
        {**unpriced(4, now - 300, session="c2"), "agent": {"model": "no-such-model-9"}},
        request(5, day=now - 200, session="c1", cost=0.5),  # reported: counted as is
        unpriced(6, now - 9 * DAY, session="c1"),  # older than the days kept: not pending
    ]
    segment = journal / "20270115T000000Z-000001.jsonl"
    segment.write_bytes(lines(events))
    os.utime(segment, (now, now))
    totals = Totals(str(journal), clock=lambda: now)
    totals.refresh()
    assert sorted(totals.pending) == ["u1", "u2", "u3", "u4"]
    today = totals.answer().today
    assert (today.unknown_cost, today.cost_usd) == (4, 0.5)

    store = Store(str(tmp_path / "t.duckdb"))
    try:
        store.materialize(str(journal))
        asked = sorted(totals.pending)
        answer = store.costs(asked)
        # The same request journaled again while pending is not counted twice.
        with segment.open("ab") as f:
            f.write(lines([events[0]]))
        totals.refresh()
        assert totals.answer().today.requests == 5
        added = totals.price(asked, answer)
        assert added == 3
        assert totals.price(asked, answer) == 0  # a second answer adds nothing
    finally:
        store.close()
    want = {e["id"]: by_hand(e) for e in events[:3]}
    reply = totals.answer("c1")
    assert reply.today.unknown_cost == 1  # no-such-model-9
    assert reply.today.cost_usd == pytest.approx(0.5 + sum(want.values()), rel=1e-9)
    assert reply.session is not None
    assert reply.session.cost_usd == pytest.approx(0.5 + want["u1"] + want["u2"], rel=1e-9)
    assert reply.session.unknown_cost == 1  # u6, older than the days kept
    # The Claude requests (r5's reported cost, u3's computed one) are the 5-hour window's.
    assert reply.window is not None
    assert reply.window.usage.cost_usd == pytest.approx(0.5 + want["u3"], rel=1e-9)
    assert reply.window.usage.unknown_cost == 0
    assert totals.pending == {} and totals.priced == 3

    # An id the store never holds is asked for a few times, then stays unknown.
    late = unpriced(7, now - 60, session="c1")
    with segment.open("ab") as f:
        f.write(lines([late]))
    totals.refresh()
    for _ in range(totals_module.ASKS):
        assert "u7" in totals.pending
        totals.price(["u7"], [])
    assert "u7" not in totals.pending
    assert totals.answer().today.unknown_cost == 2


def test_a_request_stored_with_a_reported_cost_adds_no_second_cost(tmp_path: Path) -> None:
    """When the store holds the id with a reported cost (a copy that carried it was
    stored first, and counted with it), the cost-less copy is no longer unknown but adds
    nothing."""
    now = 1_800_000_000.0
    journal = tmp_path / "journal"
    journal.mkdir()
    segment = journal / "20270115T000000Z-000001.jsonl"
    segment.write_bytes(lines([unpriced(1, now - 60, session="c1")]))
    os.utime(segment, (now, now))
    totals = Totals(str(journal), clock=lambda: now)
    totals.refresh()
    assert totals.price(["u1"], [("u1", 0.25, "reported")]) == 0
    tally = totals.answer("c1").session
    assert tally is not None and (tally.cost_usd, tally.unknown_cost) == (0.0, 0)


def codex_otlp(conversation: str, when: float, counts: dict[str, int]) -> bytes:
    """One OTLP/JSON logs request as Codex exports it: a ``response.completed`` SSE event
    (tests/fixtures/otlp/codex_logs.json has the full record), for gpt-5, with no cost."""
    attributes = {
        "event.name": "codex.sse_event",
        "event.kind": "response.completed",
        "input_token_count": str(counts["input"]),
        "output_token_count": str(counts["output"]),
        "cached_token_count": counts["cached"],
        "reasoning_token_count": counts["reasoning"],
        "conversation.id": conversation,
        "model": "gpt-5",
        "slug": "gpt-5",
    }
    record = {
        "timeUnixNano": str(int(when * 1e9)),
        "attributes": [
            {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
            for k, v in attributes.items()
        ],
    }
    service = {"key": "service.name", "value": {"stringValue": "codex_cli_rs"}}
    payload = {
        "resourceLogs": [
            {
                "resource": {"attributes": [service]},
                "scopeLogs": [{"scope": {"name": "codex_otel"}, "logRecords": [record]}],
            }
        ]
    }
    return json.dumps(payload).encode()


def post_otlp(daemon: Daemon, body: bytes) -> None:
    import http.client

    host, port = daemon.http_address().rsplit(":", 1)
    token = (daemon.home / "http-token").read_text().strip()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        conn.request("POST", "/v1/logs", body=body, headers=headers)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
    finally:
        conn.close()


def status_line(session: str) -> str:
    import subprocess

    from conftest import TELEMETRYCTL

    payload = {"session_id": session, "model": {"display_name": "GPT-5"}}
    result = subprocess.run(
        [TELEMETRYCTL, "statusline", "--no-record", "--timeout", "5"],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def test_the_status_line_has_computed_costs_once_and_after_a_restart(
    running_daemon: Daemon,
) -> None:
    """Requests that reach the daemon without a cost (the events socket, `telemetryctl
    send`, Codex's OpenTelemetry) are priced by the store worker; the status line's
    session and today figures add each computed cost once, after a duplicate resend and
    after a restart, and the daemon itself never loads the price data."""
    import subprocess
    import time

    from conftest import TELEMETRYCTL, ctl

    session = "codex-live"
    assert status_line(session).startswith("GPT-5")  # a status line in use
    socket_events = [
        {
            "type": "api_request",
            "id": f"live-{n}",
            "session_id": session,
            "source": "codex",
            "agent": {"model": "gpt-5", "provider": "openai"},
            "tokens": {"source": "actual", "input": 40_000 * n, "cache_read": 100_000,
                       "output": 8_000, "reasoning": 2_000},
        }
        for n in (1, 2)
    ]  # fmt: skip
    assert exchange(running_daemon.events_socket, lines(socket_events)) == [summary(2, 2)]
    send = [
        TELEMETRYCTL, "send", "--strict", "--type", "api_request", "--id", "live-haiku",
        "--session", session, "--model", "claude-haiku-4-5", "--provider", "anthropic",
        "--input-tokens", "20000", "--output-tokens", "4000", "--cache-read-tokens", "50000",
        "--cache-creation-tokens", "10000",
    ]  # fmt: skip
    assert subprocess.run(send, capture_output=True, timeout=30, check=False).returncode == 0
    counts = {"input": 300_000, "cached": 120_000, "output": 12_000, "reasoning": 5_000}
    otlp = codex_otlp(session, time.time(), counts)
    post_otlp(running_daemon, otlp)

    # The published prices, by hand: GPT-5 $1.25 / $0.125 cached / $10; Claude Haiku 4.5
    # $1 / $5, cache read $0.10, write $1.25 (per million tokens).
    gpt5 = [(40_000 * n * 1.25 + 100_000 * 0.125 + 8_000 * 10) / 1e6 for n in (1, 2)]
    gpt5.append(((300_000 - 120_000) * 1.25 + 120_000 * 0.125 + 12_000 * 10) / 1e6)
    haiku = (20_000 * 1 + 4_000 * 5 + 50_000 * 0.10 + 10_000 * 1.25) / 1e6
    want = sum(gpt5) + haiku

    def settled(flush: bool) -> dict[str, Any]:
        """The session's totals once every request is priced (within 30 s)."""
        deadline = time.monotonic() + 30
        while True:
            if flush:
                assert ctl("flush").returncode == 0
            with control.Control(running_daemon.control_socket) as c:
                answer = c.totals(session)
            if answer["session"] and answer["session"]["unknown_cost"] == 0:
                return answer
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)

    answer = settled(flush=True)
    assert answer["session"]["requests"] == 4
    assert answer["session"]["cost_usd"] == pytest.approx(want, rel=1e-9)
    assert answer["today"]["cost_usd"] == pytest.approx(want, rel=1e-9)
    assert answer["today"]["unknown_cost"] == 0
    assert answer["window"]["usage"]["cost_usd"] == pytest.approx(haiku, rel=1e-9)
    parts = status_line(session).split(" | ")
    assert parts[1] == f"session ${want:,.2f}" and parts[2] == f"today ${want:,.2f}"
    assert parts[3].startswith(f"5h ${haiku:,.2f} (")

    # The same requests again: duplicates, no second cost.
    assert exchange(running_daemon.events_socket, lines(socket_events)) == [summary(2, 0, 0, 2)]
    post_otlp(running_daemon, otlp)
    assert subprocess.run(send, capture_output=True, timeout=30, check=False).returncode == 0
    assert ctl("flush").returncode == 0
    again = settled(flush=False)
    assert again["session"] == answer["session"] and again["today"] == answer["today"]

    # A restart reads the journal back and has the worker price the requests again,
    # by itself (no flush).
    assert running_daemon.stop() == 0
    running_daemon.start()
    restarted = settled(flush=False)
    assert restarted["session"]["requests"] == 4
    assert restarted["session"]["cost_usd"] == pytest.approx(want, rel=1e-9)
    assert restarted["window"]["usage"]["cost_usd"] == pytest.approx(haiku, rel=1e-9)
    assert status_line(session).split(" | ")[1:3] == parts[1:3]
    assert running_daemon.proc is not None
    maps = Path(f"/proc/{running_daemon.proc.pid}/maps").read_text()
    assert "pydantic_core" not in maps


def test_reprice_gives_the_totals_the_new_costs(running_daemon: Daemon, state_home: Path) -> None:
    """After `reprice` with a new override the running totals hold the new computed costs
    (and reported ones as they were)."""
    import signal

    from conftest import ctl

    session = "repriced"
    events = [
        {"type": "api_request", "id": "rp-1", "session_id": session,
         "agent": {"model": "gpt-5", "provider": "openai"},
         "tokens": {"source": "actual", "input": 100_000, "output": 10_000}},
        {"type": "api_request", "id": "rp-2", "session_id": session, "cost_usd": 0.75,
         "agent": {"model": "gpt-5", "provider": "openai"},
         "tokens": {"source": "actual", "input": 1, "output": 1}},
        # A cost its producer computed (as `import` sends them), or marked unknown: the
        # store prices these again, and so do the totals (they added the sent cost).
        {"type": "api_request", "id": "rp-3", "session_id": session, "cost_usd": 9.0,
         "cost_source": "computed", "agent": {"model": "gpt-5", "provider": "openai"},
         "tokens": {"source": "actual", "input": 100_000, "output": 10_000}},
        {"type": "api_request", "id": "rp-4", "session_id": session, "cost_usd": 5.0,
         "cost_source": "unknown", "agent": {"model": "gpt-5", "provider": "openai"},
         "tokens": {"source": "actual", "input": 100_000, "output": 10_000}},
    ]  # fmt: skip
    assert exchange(running_daemon.events_socket, lines(events)) == [summary(4, 4)]
    assert ctl("flush").returncode == 0
    with control.Control(running_daemon.control_socket) as c:
        before = c.totals(session)["session"]
    each = (100_000 * 1.25 + 10_000 * 10) / 1e6
    assert before["cost_usd"] == pytest.approx(0.75 + 3 * each)
    (state_home / "config.toml").write_text(
        '[pricing.models."gpt-5"]\ninput = 2.0\noutput = 20.0\n'
    )
    assert running_daemon.proc is not None
    running_daemon.proc.send_signal(signal.SIGHUP)
    running_daemon.wait_for("READY=1")
    assert ctl("reprice").returncode == 0
    with control.Control(running_daemon.control_socket) as c:
        after = c.totals(session)["session"]
    assert after["cost_usd"] == pytest.approx(0.75 + 3 * (100_000 * 2 + 10_000 * 20) / 1e6)
    assert (after["requests"], after["unknown_cost"]) == (4, 0)


def test_a_request_stamped_ahead_of_the_clock_is_in_no_window(tmp_path: Path) -> None:
    """One request dated 2099 took over the 5-hour window (73 years left) and the usage
    "since" a local midnight; it is in its session's totals, not in today's or a window's,
    and its far-off day and quarter hour are not kept."""
    now = 1_800_000_000.0
    journal = tmp_path / "journal"
    journal.mkdir()
    events = [
        request(1, day=now - 600, session="w", cost=0.5),
        request(2, day=now + 120, session="w", cost=0.25),
        request(3, day=4_102_444_800.0, session="f", cost=0.01),  # (2100-01-01)
    ]
    segment = journal / "20270115T000000Z-000001.jsonl"
    segment.write_bytes(lines(events))
    os.utime(segment, (now, now))
    totals = Totals(str(journal), clock=lambda: now)
    totals.refresh()
    reply = totals.answer("f", since=now - 3600)
    assert reply.window is not None  # (a request 2 minutes ahead: a clock's skew, now)
    assert reply.window.usage.cost_usd == pytest.approx(0.75)
    assert reply.since is not None and reply.since.cost_usd == pytest.approx(0.75)
    assert reply.session is not None and reply.session.cost_usd == pytest.approx(0.01)
    assert sorted(reply.days) == [_iso(now)[:10]]
    assert max(totals.claude) * 900 <= now + 900


def test_a_request_journaled_again_is_counted_once(tmp_path: Path) -> None:
    """The same id journaled twice (a resend after the ingest's duplicate window forgot
    it; the store keeps the first line) counts once: with a reported cost, with none
    (priced once), and a reported copy of a cost-less request; after a restart too."""
    now = 1_800_000_000.0
    journal = tmp_path / "journal"
    journal.mkdir()
    x = request(1, day=now - 600, session="dw", cost=1.0)
    y = request(2, day=now - 500, session="dw", cost=0.1)
    u = unpriced(3, now - 400, session="dw")
    first = [x, y, u]
    again = [x, dict(u), {**u, "cost_usd": 9.0}, request(4, day=now - 100, session="dw", cost=0.01)]
    (journal / "20270115T000000Z-000001.jsonl").write_bytes(lines(first))
    (journal / "20270115T000000Z-000002.jsonl").write_bytes(lines(again))
    for path in journal.iterdir():
        os.utime(path, (now, now))
    stored = [x, y, u, again[-1]]  # what the store keeps: each id's first line
    want = expected(stored, "session")["dw"]
    for _ in ("running", "after a restart"):
        totals = Totals(str(journal), clock=lambda: now)
        totals.refresh()
        reply = totals.answer("dw")
        assert reply.session is not None and figures(reply.session) == rounded({"dw": want})["dw"]
        assert figures(reply.today) == figures(reply.session)
        assert totals.price(["u3"], [("u3", 0.5, "computed")]) == 1
        assert totals.price(["u3"], [("u3", 0.5, "computed")]) == 0
        session = totals.answer("dw").session
        assert session is not None
        assert (session.cost_usd, session.unknown_cost) == (pytest.approx(1.61), 0)


def _ccusage_window(requests: list[tuple[float, float]], now: float) -> tuple[float, float] | None:
    """The active 5-hour window's (start, cost), walking the requests one by one as
    ccusage's blocks do (a request more than 5 h after the block's start or after the
    request before starts a block at its hour)."""
    start = last = None
    cost = 0.0
    for when, value in sorted(requests):
        if start is None or last is None or when - start > 5 * 3600 or when - last > 5 * 3600:
            start, cost = when // 3600 * 3600, 0.0
        cost += value
        last = when
    if start is None or last is None or now >= start + 5 * 3600 or now - last >= 5 * 3600:
        return None
    return start, cost


@pytest.mark.parametrize("seed", range(6))
def test_the_window_is_ccusages_with_requests_on_the_hour(tmp_path: Path, seed: int) -> None:
    """Requests exactly on the hour, one at the very end of a window: the totals' window
    (quarter-hour tallies) is the one walking each request draws, at many clocks."""
    rng = random.Random(seed)
    base = 1_800_000_000.0 // 3600 * 3600 - 2 * DAY
    times: set[float] = {base, base + 5 * 3600}  # a request at the first window's end
    while len(times) < 60:
        hour = base + rng.randrange(0, 40) * 3600
        times.add(hour if rng.random() < 0.4 else hour + rng.randrange(1, 3_600_000) / 1000)
    requests = [(when, float(2**n % 97)) for n, when in enumerate(sorted(times))]
    events = [request(n, day=t, session="b", cost=cost) for n, (t, cost) in enumerate(requests)]
    journal = tmp_path / "journal"
    journal.mkdir()
    segment = journal / "20270115T000000Z-000001.jsonl"
    segment.write_bytes(lines(events))
    clocks = [base + 5 * 3600 + 60, base + 5 * 3600 + 1200]
    clocks += [when + rng.randrange(1, 7200) for when, _ in requests]
    checked = 0
    # (no request stamped just after a clock: that is the skew rule's, tested above)
    for now in [now for now in clocks if not any(now < when <= now + 1800 for when in times)]:
        os.utime(segment, (now, now))
        totals = Totals(str(journal), clock=lambda now=now: now)
        totals.refresh()
        window = totals.window()
        want = _ccusage_window([r for r in requests if r[0] <= now], now)
        checked += want is not None
        got = None if window is None else (_parse(window.start), window.usage.cost_usd)
        assert (got is None) == (want is None), (now, got, want)
        if got is not None and want is not None:
            assert got[0] == want[0] and got[1] == pytest.approx(want[1]), (now, got, want)
    assert checked >= 10  # (active windows compared, not only their absence)


def _parse(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
