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
