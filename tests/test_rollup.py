"""The store's usage_quarters table (store/rollup.py) against sums computed here, in
Python, from the events written to the journal: through loads in several batches,
resent ids, requests without a time, model or cost, fast mode, repricing, retention's
deletions, a compaction and a rebuild. And the daily report read from it against
per-day totals computed with zoneinfo, in zones whose midnights cut quarter hours."""

from __future__ import annotations

import random
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from telemetryd import events as ev
from telemetryd.adapters.pricing import Pricer
from telemetryd.client import reports
from telemetryd.daemon.segments import CLOSED_MODE
from telemetryd.store.database import Store

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
SOURCES = ["claude-code", "codex", None]
AGENTS = ["main", "Explore", None]
MODELS = ["model-a", "model-b", "mystery-x", None]  # mystery-x has no price anywhere
RATES = {  # $ per million tokens, as [pricing] overrides give them
    "model-a": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
    "model-b": {"input": 0.5, "output": 2.0, "cache_read": 0.05, "cache_write": 0.625},
}
DEARER = {m: {k: v * 3 for k, v in r.items()} for m, r in RATES.items()}
Key = tuple[datetime, str | None, str | None, str | None, bool]


def request(rng: random.Random, n: int, *, ts: datetime | None) -> ev.ApiRequest:
    attrs: dict[str, Any] | None = rng.choice(
        [None, {"speed": "fast"}, {"speed": "standard"}, {"note": "speed"}, {"speed": 3}]
    )
    reported = rng.random() < 0.15
    output = rng.randrange(0, 2000)
    return ev.ApiRequest(
        id=f"req-{n:06d}",
        ts=ts,
        received_at=(ts or T0) + timedelta(milliseconds=5),
        v=1,
        source=rng.choice(SOURCES),
        session_id=f"s-{n % 11}",
        agent=ev.Agent(model=rng.choice(MODELS), type=rng.choice(AGENTS)),
        tokens=ev.Tokens(
            source="actual",
            input=rng.randrange(0, 5000),
            output=output,
            cache_read=rng.choice([None, rng.randrange(0, 90_000)]),
            cache_creation=rng.choice([None, rng.randrange(0, 9000)]),
            reasoning=rng.choice([None, rng.randrange(0, output + 1)]),
        ),
        cost_usd=round(rng.uniform(0.001, 2.0), 6) if reported else None,
        cost_source="reported" if reported else None,
        attrs=attrs,
    )


def some_requests(seed: int, count: int, first: int = 0) -> list[ev.ApiRequest]:
    """Requests over three days, out of time order, a few without a time."""
    rng = random.Random(seed)
    out = []
    for n in range(first, first + count):
        ts = None if rng.random() < 0.01 else T0 + timedelta(seconds=rng.randrange(0, 3 * 86400))
        if ts is not None and rng.random() < 0.05:  # on a quarter hour's edge
            ts = ts.replace(minute=rng.choice([0, 15, 30, 45]), second=0, microsecond=0)
        out.append(request(rng, n, ts=ts))
    return out


def cost_of(r: ev.ApiRequest, rates: Rates) -> float | None:
    if r.cost_source == "reported":
        return r.cost_usd
    price = rates.get(r.agent.model or "") if r.agent else None
    if price is None:
        return None
    t = r.tokens
    return round(
        (
            (t.input or 0) * price["input"]
            + (t.output or 0) * price["output"]
            + (t.cache_read or 0) * price["cache_read"]
            + (t.cache_creation or 0) * price["cache_write"]
        )
        / 1e6,
        10,
    )


def fast(r: ev.ApiRequest) -> bool:
    return bool(r.attrs) and r.attrs.get("speed") == "fast"  # type: ignore[union-attr]


def quarter(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0, tzinfo=None)


Rates = dict[str, dict[str, float]]


def expected(
    requests: dict[str, ev.ApiRequest], rates: Rates | Callable[[ev.ApiRequest], Rates]
) -> dict[Key, tuple[Any, ...]]:
    """usage_quarters as it should be, summed here from the requests stored (each priced
    with ``rates``, or with the rates ``rates`` gives for it)."""
    sums: dict[Key, list[Any]] = {}
    for r in requests.values():
        if r.ts is None:
            continue
        assert r.agent is not None
        key = (quarter(r.ts), r.source, r.agent.type, r.agent.model, fast(r))
        row = sums.setdefault(key, [0, 0, 0, 0, 0, 0, 0.0, 0, r.ts, r.ts])
        t = r.tokens
        row[0] += 1
        for i, count in enumerate(
            (t.input, t.output, t.cache_creation, t.cache_read, t.reasoning), start=1
        ):
            row[i] += count or 0
        cost = cost_of(r, rates(r) if callable(rates) else rates)
        if cost is None:
            row[7] += 1
        else:
            row[6] += cost
        row[8], row[9] = min(row[8], r.ts), max(row[9], r.ts)
    return {
        k: (*v[:6], pytest.approx(v[6], rel=1e-9, abs=1e-12), v[7],
            v[8].replace(tzinfo=None), v[9].replace(tzinfo=None))
        for k, v in sums.items()
    }  # fmt: skip


def stored(store: Store) -> dict[Key, tuple[Any, ...]]:
    with store.cursor() as cur:
        rows = cur.execute("SELECT * FROM usage_quarters").fetchall()
    out: dict[Key, tuple[Any, ...]] = {}
    for row in rows:
        key: Key = tuple(row[:5])  # type: ignore[assignment]
        assert key not in out, f"two rows for one group: {key}"
        out[key] = tuple(row[5:])
    return out


def write(path: Path, requests: list[ev.ApiRequest]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(ev.ENCODER.encode(r) + b"\n" for r in requests))


def segment(journal: Path, seq: int) -> Path:
    return journal / f"20260301T000000Z-{seq:06d}.jsonl"


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal"
    path.mkdir()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(str(tmp_path / "telemetry.duckdb"), pricer=Pricer(RATES)) as opened:
        yield opened


def test_loads_keep_the_sums_of_what_is_stored(store: Store, journal: Path) -> None:
    kept: dict[str, ev.ApiRequest] = {}
    batches = [some_requests(1, 700), some_requests(2, 900, first=700)]
    # A resend of stored ids with other counts, and a batch repeating its own ids:
    # the request stored first is the one that counts.
    resent = some_requests(3, 200, first=100)
    twice = some_requests(4, 300, first=1600)
    batches += [resent, twice + some_requests(5, 300, first=1600)]
    for seq, batch in enumerate(batches, start=1):
        write(segment(journal, seq), batch)
        store.materialize(str(journal))
        first_received: dict[str, ev.ApiRequest] = {}
        for r in batch:  # (within a batch, the one received first stays)
            other = first_received.get(r.id or "")
            if other is None or (r.received_at or T0) < (other.received_at or T0):
                first_received[r.id or ""] = r
        for key, r in first_received.items():
            kept.setdefault(key, r)
        assert stored(store) == expected(kept, RATES), f"after batch {seq}"
    # Custom events and tool calls are not usage.
    write(segment(journal, 9), [ev.Custom(id="c-1", ts=T0, v=1, received_at=T0, name="x")])
    store.materialize(str(journal))
    assert stored(store) == expected(kept, RATES)


def test_repricing_retention_compaction_and_rebuild_keep_it_equal(
    store: Store, journal: Path
) -> None:
    first, second, third = some_requests(6, 800), some_requests(7, 800, 800), []
    rng = random.Random(8)
    # Later requests in the same quarter hours as the first segment's, so that deleting
    # the first segment's leaves the others' sums in them.
    for n, r in enumerate(first[:200]):
        if r.ts is not None:
            third.append(request(rng, 5000 + n, ts=r.ts + timedelta(seconds=rng.randrange(60))))
    for seq, batch in enumerate((first, second, third), start=1):
        write(segment(journal, seq), batch)
    for seq in (1, 2):
        segment(journal, seq).chmod(CLOSED_MODE)
    store.materialize(str(journal))
    kept = {r.id or "": r for r in first + second + third}
    assert stored(store) == expected(kept, RATES)

    counts = store.reprice(None, Pricer(DEARER))
    assert counts["changed"] > 0
    assert stored(store) == expected(kept, DEARER)
    since = T0 + timedelta(days=2, minutes=7)  # (inside a quarter hour)
    with store.cursor() as cur:  # (an aware time means the same in any session zone)
        cur.execute("SET GLOBAL TimeZone = 'America/New_York'")
    store.reprice(since.astimezone(timezone(timedelta(hours=5, minutes=30))), Pricer(RATES))
    assert stored(store) == expected(
        kept, lambda r: RATES if r.ts is not None and r.ts >= since else DEARER
    )
    store.reprice(None, Pricer(RATES))
    assert stored(store) == expected(kept, RATES)

    # Retention deletes the first segment with its events.
    assert store.forget({1: [str(segment(journal, 1))]}) == len(first)
    for r in first:
        del kept[r.id or ""]
    assert stored(store) == expected(kept, RATES)

    # A compaction that keeps only tool calls drops the second segment's requests too.
    dropped = [r.id or "" for r in second]
    assert store.compact(2, segment(journal, 2).name, 0, dropped, ("tool_call",), lambda: None)
    for r in second:
        del kept[r.id or ""]
    assert stored(store) == expected(kept, RATES)
    # (one that keeps usage changes nothing)
    kept_usage = ("api_request",)
    assert store.compact(2, segment(journal, 2).name, 0, dropped, kept_usage, lambda: None) == 0

    # A rebuild from the journal that is left gives the same table (retention removed
    # the first segment's file; the compacted one holds nothing now).
    assert not segment(journal, 1).exists()
    segment(journal, 2).unlink()
    store.rebuild(str(journal))
    assert stored(store) == expected(kept, RATES)


def daily_totals(
    requests: list[ev.ApiRequest], zone: str, source: str | None
) -> dict[tuple[str, str], list[int]]:
    """(local day, model) -> [requests, input, output, cache_creation, cache_read]."""
    tz = zoneinfo.ZoneInfo(zone)
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 5)
    for r in requests:
        if r.ts is None or (source is not None and r.source != source):
            continue
        assert r.agent is not None
        model = (r.agent.model or "unknown") + ("-fast" if fast(r) else "")
        row = out[(r.ts.astimezone(tz).date().isoformat(), model)]
        t = r.tokens
        for i, count in enumerate((1, t.input, t.output, t.cache_creation, t.cache_read)):
            row[i] += count or 0
    return dict(out)


@pytest.mark.parametrize("zone", ["UTC", "America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham"])
@pytest.mark.parametrize("source", [None, "codex"])
def test_the_daily_report_from_the_sums_matches_every_request(
    store: Store, journal: Path, zone: str, source: str | None
) -> None:
    requests = some_requests(9, 1500)
    # Newfoundland moved its clocks at 00:01 until 2011: midnights inside quarter hours.
    rng = random.Random(10)
    old = datetime(2010, 11, 7, 3, 0, tzinfo=UTC)
    requests += [
        request(rng, 9000 + n, ts=old + timedelta(seconds=rng.randrange(0, 7200)))
        for n in range(200)
    ]
    write(segment(journal, 1), requests)
    store.materialize(str(journal))
    options = reports.Options(kind="daily", timezone=zone, source=source)
    text, params = reports.sql(options)
    assert "usage_quarters" in text
    with store.cursor() as cur:
        cursor = cur.execute(text, params)
        names = [d[0] for d in cursor.description]
        parts = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    got: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 5)
    for p in parts:
        row = got[(p["day"], p["model"])]
        for i, name in enumerate(("requests", "input", "output", "cache_creation", "cache_read")):
            row[i] += p[name]
    assert dict(got) == daily_totals(requests, zone, source)
