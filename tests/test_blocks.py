"""`telemetryctl report blocks`: Claude's 5-hour billing blocks, against ccusage's
algorithm (``identify_session_blocks``, ``calculate_burn_rate`` and
``project_block_usage`` in ccusage's rust/crates/ccusage/src/blocks.rs) computed here
request by request, on imported samples and on requests sent to a running daemon."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conftest import Daemon, ctl, exchange, summary
from telemetryd.client import blocks
from test_report import history  # noqa: F401 (the fixture: samples imported)

HOUR = 3_600_000
MINUTE = 60_000
FIVE = 5 * HOUR
CCUSAGE_KEYS = {
    "id", "startTime", "endTime", "actualEndTime", "isActive", "isGap", "entries",
    "tokenCounts", "totalTokens", "costUSD", "models", "burnRate", "projection",
}  # fmt: skip
OURS = {"requests", "reasoningOutputTokens", "unpricedRequests"}
COUNT_KEYS = {"inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens"}


def iso(ms: int) -> str:
    when = datetime.fromtimestamp(ms // 1000, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def rust_round(value: float) -> int:
    return int(value + 0.5)  # non-negative values only


# -- ccusage's blocks, computed independently ----------------------------------------------


def ccusage_blocks(requests: list[dict[str, Any]], now: int) -> list[dict[str, Any]]:
    """ccusage's ``blocks --json`` rows from requests (``ms``, the four counts, ``cost``,
    ``model``), with the time ``now`` (epoch ms)."""
    groups: list[tuple[int, list[dict[str, Any]]]] = []
    out: list[dict[str, Any]] = []
    for r in sorted(requests, key=lambda r: r["ms"]):
        if groups:
            start, members = groups[-1]
            last = members[-1]["ms"]
            if r["ms"] - start > FIVE or r["ms"] - last > FIVE:
                if r["ms"] - last > FIVE:
                    groups.append((-(last + FIVE), [{"gap_end": r["ms"]}]))
                groups.append((r["ms"] - r["ms"] % HOUR, [r]))
                continue
            members.append(r)
        else:
            groups.append((r["ms"] - r["ms"] % HOUR, [r]))
    for start, members in groups:
        if start < 0:
            gap_start = -start
            out.append(
                {
                    "id": "gap-" + iso(gap_start),
                    "startTime": iso(gap_start),
                    "endTime": iso(members[0]["gap_end"]),
                    "actualEndTime": None,
                    "isActive": False,
                    "isGap": True,
                    "entries": 0,
                    "tokenCounts": dict.fromkeys(sorted(COUNT_KEYS), 0),
                    "totalTokens": 0,
                    "costUSD": 0,
                    "models": [],
                    "burnRate": None,
                    "projection": None,
                }
            )
            continue
        end = start + FIVE
        first, last = members[0]["ms"], members[-1]["ms"]
        counts = {
            "inputTokens": sum(m["input"] for m in members),
            "outputTokens": sum(m["output"] for m in members),
            "cacheCreationInputTokens": sum(m["cache_creation"] for m in members),
            "cacheReadInputTokens": sum(m["cache_read"] for m in members),
        }
        total = sum(counts.values())
        cost = sum(m["cost"] or 0 for m in members)
        models: list[str] = []
        for m in members:
            if m["model"] and m["model"] not in models:
                models.append(m["model"])
        active = now - last < FIVE and now < end
        burn = projection = None
        minutes = (last - first) / MINUTE
        if active and minutes > 0:
            per_minute = total / minutes
            per_hour = cost / minutes * 60
            burn = {
                "tokensPerMinute": per_minute,
                "tokensPerMinuteForIndicator": (counts["inputTokens"] + counts["outputTokens"])
                / minutes,
                "costPerHour": per_hour,
            }
            left = rust_round(max(0, end - now) / MINUTE)
            projection = {
                "totalTokens": rust_round(total + per_minute * left),
                "totalCost": rust_round((cost + per_hour / 60 * left) * 100) / 100,
                "remainingMinutes": left,
            }
        out.append(
            {
                "id": iso(start),
                "startTime": iso(start),
                "endTime": iso(end),
                "actualEndTime": iso(last),
                "isActive": active,
                "isGap": False,
                "entries": len(members),
                "tokenCounts": counts,
                "totalTokens": total,
                "costUSD": cost,
                "models": models,
                "burnRate": burn,
                "projection": projection,
            }
        )
    return out


def comparable(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our blocks with ccusage's keys only (checked to be all of them), floats approximate."""
    rows = []
    for block in got:
        assert set(block) == CCUSAGE_KEYS | OURS, sorted(set(block) ^ (CCUSAGE_KEYS | OURS))
        assert set(block["tokenCounts"]) == COUNT_KEYS
        row = {k: block[k] for k in CCUSAGE_KEYS}
        row["costUSD"] = pytest.approx(block["costUSD"], rel=1e-9, abs=1e-12)
        if block["burnRate"] is not None:
            row["burnRate"] = {k: pytest.approx(v, rel=1e-9) for k, v in block["burnRate"].items()}
        rows.append(row)
    return rows


def report(*args: str) -> list[dict[str, Any]]:
    result = ctl("report", "blocks", *args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    found: list[dict[str, Any]] = json.loads(result.stdout)["blocks"]
    return found


# -- the walk, in process ------------------------------------------------------------------


def part(ms: int, tokens: int = 10, cost: float = 0.5, model: str = "claude-x") -> dict[str, Any]:
    return {"ms": ms, "model": model, "requests": 1, "input": tokens, "output": 0, "cost": cost}


def test_the_edges_of_a_block() -> None:
    t = 1_800_000_000_000 // HOUR * HOUR  # on the hour
    parts = [
        part(t + 30 * MINUTE),
        part(t + FIVE),  # exactly 5 h after the start: still in the first block
        part(t + 6 * HOUR),  # more than 5 h after the start: the next block
        part(t + 11 * HOUR),  # exactly 5 h after its start and its last request: in it
        part(t + 16 * HOUR + 2 * MINUTE),  # 5 h 2 min of silence: a gap, then a block
    ]
    now = t + 21 * HOUR  # the last block's end: no longer active
    found = blocks.build(parts, blocks.Options(), now)
    assert [(b.gap, b.start - t, b.end - t, b.usage.requests) for b in found] == [
        (False, 0, FIVE, 2),
        (False, 6 * HOUR, 11 * HOUR, 2),
        (True, 16 * HOUR, 16 * HOUR + 2 * MINUTE, 0),
        (False, 16 * HOUR, 21 * HOUR, 1),
    ]
    assert not any(b.active for b in found)
    assert found[2].id == "gap-" + iso(t + 16 * HOUR)
    want = [{**p, "output": 0, "cache_creation": 0, "cache_read": 0} for p in parts]
    got = [blocks.block_dict(b, now) for b in found]
    assert comparable(got) == ccusage_blocks(want, now)  # the independent walk agrees
    assert blocks.build(parts, blocks.Options(), now - 1)[-1].active  # a ms before its end
    split = blocks.build([part(t + 59 * MINUTE), part(t + FIVE + 1)], blocks.Options(), now)
    assert [b.start - t for b in split] == [0, FIVE]  # 1 ms past the end: floored to 5 h
    # A block of requests stamped hours after now (a clock off) is not the active one
    # (it was, decades ahead); one a few minutes ahead is: now, as the status line has it.
    ahead = blocks.build([part(t + 6 * HOUR)], blocks.Options(), t + HOUR)
    assert [b.active for b in ahead] == [False]
    skewed = blocks.build([part(t + 2 * MINUTE)], blocks.Options(), t)
    assert [b.active for b in skewed] == [True]


def test_since_until_and_active_keep_blocks_by_their_local_start_day() -> None:
    start = int(datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp() * 1000)  # 23:00 in Auckland
    parts = [part(start + 5 * MINUTE), part(start + 20 * HOUR)]
    now = start + 21 * HOUR
    gap = (True, 5 * MINUTE + FIVE)  # from 15:05 UTC, 04:05 on the 2nd in Auckland

    def kept(**options: Any) -> list[tuple[bool, int]]:
        return [
            (b.gap, b.start - start) for b in blocks.build(parts, blocks.Options(**options), now)
        ]

    auckland = "Pacific/Auckland"
    assert kept(timezone=auckland, since=date(2026, 3, 2)) == [gap, (False, 20 * HOUR)]
    assert kept(timezone=auckland, until=date(2026, 3, 1)) == [(False, 0)]
    assert kept(until=date(2026, 3, 1)) == [(False, 0), gap]
    active = blocks.build(parts, blocks.Options(active=True), now)
    assert [(b.start - start, b.active) for b in active] == [(20 * HOUR, True)]


# -- imported samples ----------------------------------------------------------------------


def test_blocks_of_the_imported_samples_equal_ccusages(history: list[dict[str, Any]]) -> None:  # noqa: F811
    claude = [
        {**r, "ms": int(r["ts"].timestamp()) * 1000 + r["ts"].microsecond // 1000}
        for r in history
        if r["source"] == "claude-code"
    ]
    now = int(time.time() * 1000)
    want = ccusage_blocks(claude, now)
    got = report("-z", "UTC")
    assert comparable(got) == want
    assert any(b["isGap"] for b in got) and not any(b["isActive"] for b in got)
    assert sum(b["entries"] for b in got) == len(claude)  # Codex's requests left out
    # --since / --until keep blocks by the day they start in the zone given.
    zone = ZoneInfo("Pacific/Auckland")
    first_day = min(datetime.fromisoformat(b["startTime"]).astimezone(zone) for b in want).date()
    kept = report("-z", "Pacific/Auckland", "--since", first_day.isoformat(), "-u", "2026-01-10")
    expect = [
        b
        for b in want
        if first_day
        <= datetime.fromisoformat(b["startTime"]).astimezone(zone).date()
        <= date(2026, 1, 10)
    ]
    assert [b["id"] for b in kept] == [b["id"] for b in expect]


# -- synthetic requests on a running daemon ------------------------------------------------


def event(n: int, ms: int, model: str | None, **extra: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "type": "api_request",
        "id": f"b{n}",
        "ts": iso(ms),
        "session_id": "s1",
        "agent": {"model": model} if model else {},
        "tokens": {
            "source": "actual",
            "input": 100 * n,
            "output": 10 * n,
            "cache_creation": n,
            "cache_read": 1000 * n,
        },
        "cost_usd": 0.01 * n,
    }
    found.update(extra)
    return found


def test_windows_gaps_and_the_active_block_on_a_running_daemon(running_daemon: Daemon) -> None:
    now = int(time.time() * 1000)
    base = now // HOUR * HOUR - 20 * HOUR
    events = [
        event(1, base + 10 * MINUTE, "claude-sonnet-4"),
        event(2, base + HOUR, "claude-opus-4"),
        event(3, base + 4 * HOUR + 50 * MINUTE, "claude-sonnet-4"),
        event(4, base + 5 * HOUR + 5 * MINUTE, "claude-sonnet-4"),  # 5 h from the start
        event(5, base + 6 * HOUR, "claude-sonnet-4"),
        event(6, base + 11 * HOUR + 30 * MINUTE, "claude-haiku-4"),  # after a 5.5 h gap
        event(7, base + 12 * HOUR, "gpt-5", source="codex"),  # not Claude: left out
        event(8, now - 40 * MINUTE, "glm-4.6", source="claude-code"),  # Claude Code's
        event(
            9, now - 25 * MINUTE, "sonnet-x", agent={"model": "sonnet-x", "provider": "anthropic"}
        ),
        event(10, now - 10 * MINUTE, "claude-sonnet-4"),
    ]
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    assert exchange(running_daemon.events_socket, payload) == [summary(10, 10)]
    before = int(time.time() * 1000)
    got = report("-z", "UTC")
    after = int(time.time() * 1000)
    claude = [
        {
            "ms": round(datetime.fromisoformat(e["ts"]).timestamp() * 1000),
            "input": e["tokens"]["input"],
            "output": e["tokens"]["output"],
            "cache_creation": e["tokens"]["cache_creation"],
            "cache_read": e["tokens"]["cache_read"],
            "cost": e["cost_usd"],
            "model": e["agent"].get("model"),
        }
        for e in events
        if e["agent"].get("model") != "gpt-5"
    ]
    assert [(b["isGap"], b["entries"]) for b in got] == [
        (False, 3), (False, 2), (True, 0), (False, 1), (True, 0), (False, 3),
    ]  # fmt: skip
    active = got[-1]
    assert active["isActive"] and active["models"] == ["glm-4.6", "sonnet-x", "claude-sonnet-4"]
    end = round(datetime.fromisoformat(active["endTime"]).timestamp() * 1000)
    left = active["projection"]["remainingMinutes"]
    assert rust_round((end - after) / MINUTE) <= left <= rust_round((end - before) / MINUTE)
    # The independent computation at the minute the report counted from.
    want = ccusage_blocks(claude, int(end) - left * MINUTE)
    assert comparable(got) == want
    # 3 requests over 30 minutes: tokens and dollars per minute, then to the block's end.
    tokens = sum(1111 * n for n in (8, 9, 10))
    assert active["burnRate"]["tokensPerMinute"] == pytest.approx(tokens / 30)
    assert active["burnRate"]["costPerHour"] == pytest.approx(0.27 / 30 * 60)
    assert active["projection"]["totalTokens"] == rust_round(tokens + tokens / 30 * left)
    assert active["projection"]["totalCost"] == pytest.approx(
        rust_round((0.27 + 0.27 / 30 * left) * 100) / 100
    )
    assert [b["id"] for b in report("--active")] == [active["id"]]
    table = ctl("report", "blocks", "-z", "UTC").stdout.decode()
    assert "(inactive)" in table and "ACTIVE" in table and "PROJECTED" in table
    assert f"{sum(1111 * n for n in (1, 2, 3)):,}" in table and "$0.06" in table
    detail = ctl("report", "blocks", "--active", "-z", "UTC").stdout.decode()
    assert "Burn Rate:" in detail and f"{rust_round(tokens / 30):,}" in detail
    csv = ctl("report", "blocks", "-f", "csv").stdout.decode().splitlines()
    assert csv[0].startswith("id,start_time,end_time") and len(csv) == 1 + 6
    markdown = ctl("report", "blocks", "-f", "markdown").stdout.decode()
    assert markdown.startswith("| Block Start |") and "PROJECTED" in markdown


def test_requests_on_the_edges_through_the_daemon(running_daemon: Daemon) -> None:
    """The daemon sums requests per hour before the walk (blocks.SQL, blocks.parts): every
    edge a request can sit on gives the blocks of the walk over the requests themselves."""
    now = int(time.time() * 1000)
    h = now // HOUR * HOUR - 60 * HOUR
    at = [
        (h + 10 * MINUTE, "claude-a"),
        (h + 10 * MINUTE, "claude-b"),  # the same millisecond, another model
        (h + 150 * MINUTE, "claude-a"),
        (h + FIVE, "claude-b"),  # exactly 5 h after the start: stays
        (h + FIVE + 1, "claude-a"),  # a millisecond later: the next block, from h + 5 h
        (h + FIVE + 30 * MINUTE, "claude-b"),
        (h + 2 * FIVE - MINUTE, "claude-c"),
        (h + 2 * FIVE, "claude-a"),  # exactly at that block's end: stays
        (h + 3 * FIVE + 1, "claude-b"),  # 5 h and 1 ms of silence: a gap, then a block
        (h + 3 * FIVE + 2, "claude-a"),
        (h + 5 * FIVE, "claude-c"),  # a block that starts exactly on the hour ...
        (h + 6 * FIVE, "claude-a"),  # ... and a request exactly 5 h after it and its start
        (h + 6 * FIVE + 20 * MINUTE, "claude-a"),  # the next block, from h + 30 h
        (h + 6 * FIVE + 40 * MINUTE, None),  # no model: Claude Code's, so Claude usage
        (h + 6 * FIVE + 50 * MINUTE, "claude-a"),  # the last of its hour: the block's end
        (h + 7 * FIVE + 3 * MINUTE, "claude-b"),
        (h + 7 * FIVE + 3 * MINUTE, "claude-a"),
    ]
    events = [
        event(n, ms, model, **({"source": "claude-code"} if model is None else {}))
        for n, (ms, model) in enumerate(at, start=1)
    ]
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    assert exchange(running_daemon.events_socket, payload) == [summary(len(at), len(at))]
    got = report("-z", "UTC")
    requests = [
        {
            "ms": ms,
            "input": 100 * n,
            "output": 10 * n,
            "cache_creation": n,
            "cache_read": 1000 * n,
            "cost": 0.01 * n,
            "model": model,
        }
        for n, (ms, model) in enumerate(at, start=1)
    ]
    # Of requests in the same millisecond, the models' names give their order (README).
    requests.sort(key=lambda r: (r["ms"], r["model"] is None, r["model"] or ""))
    want = ccusage_blocks(requests, int(time.time() * 1000))
    assert [b["isGap"] for b in want].count(True) >= 2  # (the test of the test)
    assert comparable(got) == want
