"""`telemetryctl import amp`: Amp's thread files, against ccusage's rules.

The totals are checked against ccusage's Amp rules computed here, independently, from
the raw thread files (ryoppippi/ccusage `rust/crates/ccusage/src/adapter/amp/parser.rs`
and `utils.rs` `apply_total_token_fallback`, at 5816e640). ccusage's `outputTokens`
leave out the extra tokens a total holds beyond the parts (its `totalTokens` keep
them); telemetryd counts them as output: the comparison adds them back.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, ctl
from telemetryd.adapters import amp
from telemetryd.client import importer

pytestmark = pytest.mark.usefixtures("agent_home")

FIXTURES = Path(__file__).parent / "fixtures" / "amp"
THREADS = sorted(FIXTURES.glob("*.json"))


def install(base: Path) -> list[Path]:
    """Each fixture as ``<base>/threads/<name>``."""
    (base / "threads").mkdir(parents=True)
    return [Path(shutil.copy(f, base / "threads" / f.name)) for f in THREADS]


def run_json(*args: str) -> dict[str, Any]:
    result = ctl("import", *args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


# -- ccusage's rules, written out apart from the importer's code -------------------------------

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?(Z|[+-]\d\d:\d\d)")


def _u64(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _name(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _day(value: Any) -> str | None:
    """date_utils.rs `parse_ts_timestamp`, as a UTC day."""
    text = _name(value)
    if text is None or not _TIME.fullmatch(text):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).strftime("%F")


def _entry(day: str | None, model: Any, i: int, o: int, w: int, c: int, total: int) -> Any:
    if day is None or _name(model) is None:
        return None
    missing, extra = max(0, total - (i + o + w + c)), 0
    if missing and o == 0:
        o = missing
    elif missing:
        extra = missing
    if not (i or o or w or c or extra):
        return None
    return {"day": day, "model": _name(model), "i": i, "o": o + extra, "w": w, "c": c}


def ccusage_entries(path: Path) -> list[dict[str, Any]]:
    """parser.rs `read_thread_file` (output with the extra tokens)."""
    try:
        thread = json.loads(path.read_text())
    except ValueError:
        return []
    if not isinstance(thread, dict) or _name(thread.get("id")) is None:
        return []
    messages = thread.get("messages") if isinstance(thread.get("messages"), list) else []
    events = (thread.get("usageLedger") or {}).get("events")
    found = []
    if isinstance(events, list):
        cache = {
            m["messageId"]: (m.get("usage") or {})
            for m in messages
            if m.get("role") == "assistant" and isinstance(m.get("messageId"), int)
        }
        for e in events:
            if "tokens" not in e:
                continue
            t = e["tokens"] or {}
            u = cache.get(e.get("toMessageId"), {})
            found.append(
                _entry(
                    _day(e.get("timestamp")),
                    e.get("model"),
                    _u64(t.get("input")),
                    _u64(t.get("output")),
                    _u64(u.get("cacheCreationInputTokens")),
                    _u64(u.get("cacheReadInputTokens")),
                    _u64(t.get("total")),
                )
            )
    else:
        for m in messages:
            if m.get("role") != "assistant" or "usage" not in m:
                continue
            u = m["usage"] or {}
            found.append(
                _entry(
                    _day(_name(u.get("timestamp")) or m.get("timestamp")),
                    _name(u.get("model")) or m.get("model"),
                    _u64(u.get("inputTokens")),
                    _u64(u.get("outputTokens")),
                    _u64(u.get("cacheCreationInputTokens")),
                    _u64(u.get("cacheReadInputTokens")),
                    _u64(u.get("totalTokens")),
                )
            )
    return [e for e in found if e is not None]


def ccusage_rows(paths: list[Path], *keys: str) -> dict[tuple[str, ...], dict[str, int]]:
    rows: dict[tuple[str, ...], dict[str, int]] = {}
    for path in paths:
        for e in ccusage_entries(path):
            row = rows.setdefault(tuple(e[k] for k in keys), dict.fromkeys("eiocw", 0))
            row["e"] += 1
            for k in "iocw":
                row[k] += e[k]
    return rows


def view(rows: dict[str, Any]) -> dict[tuple[str, ...], dict[str, int]]:
    names = {"i": "input", "o": "output", "c": "cache_read", "w": "cache_creation"}
    return {
        (key,): {"e": r["requests"], **{k: r[v] for k, v in names.items()}}
        for key, r in rows.items()
    }


# -- the fixtures --------------------------------------------------------------------------------


def test_fixtures_per_model_and_day_equal_ccusage(agent_home: Path) -> None:
    placed = install(agent_home / ".local" / "share" / "amp")
    summary = importer.run("amp", dry_run=True).as_dict()
    assert summary["files"] == 5
    assert view(summary["by_model"]) == ccusage_rows(placed, "model")
    assert view(summary["by_day"]) == ccusage_rows(placed, "day")


def test_fixtures_by_hand() -> None:
    summary = importer.run("amp", [FIXTURES], dry_run=True).as_dict()
    assert (summary["malformed"], summary["requests"]) == (1, 9)
    # left out as ccusage leaves them, but counted: a ledger event timed "2026-01-01
    # 00:01:00", one without a time, and a message usage timed "not a time"
    assert (summary["dropped_times"], summary["bad_times"]) == (3, 0)
    sonnet = summary["by_model"]["claude-sonnet-4-5-20250929"]  # cache from the messages
    assert (sonnet["input"], sonnet["output"]) == (6 + 3, 412 + 958)
    assert (sonnet["cache_creation"], sonnet["cache_read"]) == (18233 + 1204, 18233)
    haiku = summary["by_model"]["claude-haiku-4-5-20251001"]  # toMessageId 99: no cache
    assert (haiku["input"], haiku["cache_read"], haiku["cache_creation"]) == (9 + 310, 200, 100)
    gpt = summary["by_model"]["gpt-5"]  # a total alone; two bad times and all-zero skipped
    assert (gpt["requests"], gpt["output"]) == (1, 2048)
    opus = summary["by_model"]["claude-opus-4-5-20251101"]  # no ledger: message usage
    assert opus["requests"] == 3  # zero counts and the message with a bad usage time skipped
    assert opus["output"] == 178 + 42 + 60  # totalTokens 12100 < the parts: no extra
    assert summary["by_model"]["gpt-5.1"]["output"] == 345  # the model from the message
    assert sorted(summary["by_day"]) == [
        "2025-12-03",
        "2025-12-31",
        "2026-01-01",
        "2026-01-19",
        "2026-01-20",
    ]


def test_timestamps_as_ccusage_takes_them() -> None:
    assert amp.timestamp("2026-01-01T09:15:00+09:00") == "2026-01-01T00:15:00.000Z"
    assert amp.timestamp("2025-12-31T23:58:10.114Z") == "2025-12-31T23:58:10.114Z"
    for bad in ("2026-01-01 00:01:00", "2026-01-01T00:01:00.1Z", "2026-13-01T00:00:00Z", 5, None):
        assert amp.timestamp(bad) is None
    assert amp.timestamp(" 2026-01-01T00:01:00-05:30 ") == "2026-01-01T05:31:00.000Z"
    odd = (
        "2026-01-01T00:01:00z",
        "2026-01-01t00:01:00Z",
        "2026-01-01T00:01:00+0530",
        "٢٠٢٦-01-01T00:01:00Z",
        "2026-01-01T00:01:00.12Z\n0",
        "2026-01-01T00:01:00.1234Z",
    )
    for bad in odd:
        assert amp.timestamp(bad) is None


# -- locations ---------------------------------------------------------------------------------


def test_default_location_and_amp_data_dir(
    agent_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(agent_home / ".local" / "share" / "amp")
    summary = run_json("amp", "--dry-run")
    assert summary["requests"] == 9
    every = run_json("--dry-run")
    assert list(every) == ["amp"] and every["amp"]["by_model"] == summary["by_model"]
    other = tmp_path / "other"
    (other / "threads").mkdir(parents=True)
    shutil.copy(FIXTURES / "tokenuze_basic.json", other / "threads")
    monkeypatch.setenv("AMP_DATA_DIR", f"{other}, {tmp_path / 'missing'}")
    assert importer.roots("amp") == [other / "threads", tmp_path / "missing" / "threads"]
    assert run_json("amp", "--dry-run")["requests"] == 1
    monkeypatch.setenv("AMP_DATA_DIR", str(tmp_path / "missing"))
    assert not importer.found("amp")


# -- into the daemon ----------------------------------------------------------------------------


def test_import_into_the_daemon_then_again_adds_nothing(
    running_daemon: Daemon, agent_home: Path
) -> None:
    placed = install(agent_home / ".local" / "share" / "amp")
    first = run_json("amp")
    assert (first["sent"], first["accepted"], first["duplicates"], first["rejected"]) == (
        9,
        9,
        0,
        0,
    )
    events = running_daemon.journal_events()
    title = next(e for e in events if e.get("attrs", {}).get("operation") == "title-generation")
    assert title["id"].startswith("amp:")
    assert (title["source"], title["session_id"]) == (
        "amp",
        "T-5e2c7a10-3f4b-4d8e-9a61-0c2b9e7f1d34",
    )
    assert title["attrs"] == {"imported": True, "credits": 0.05, "operation": "title-generation"}
    assert title["tokens"] == {"source": "actual", "input": 310, "output": 12, "total": 322}
    assert "cost_usd" not in title and "cost_source" not in title  # (the store prices it)

    # Amp rewrites a thread as it grows: the same requests keep their ids.
    thread = placed[0].parent / "built_ledger-thread.json"
    data = json.loads(thread.read_text())
    data["usageLedger"]["events"].append(
        {
            "id": "a1b2c3d4-0000-4000-8000-000000000008",
            "timestamp": "2026-01-01T00:05:00.000Z",
            "model": "claude-sonnet-4-5-20250929",
            "credits": 1.0,
            "tokens": {"input": 2, "output": 30},
        }
    )
    thread.write_text(json.dumps(data, indent=2))
    second = run_json("amp")
    assert (second["files"], second["sent"], second["accepted"]) == (1, 5, 1)
    again = run_json("amp", "--rescan")
    assert (again["sent"], again["accepted"], again["duplicates"]) == (10, 0, 10)
    every = run_json()
    assert list(every) == ["amp"] and every["amp"]["sent"] == 0
    assert len(running_daemon.journal_events()) == 10

    result = ctl(
        "query",
        "--format",
        "json",
        "select cast(timestamp as date)::varchar as day, model, count(*) as e,"
        " sum(input_tokens) as i, sum(output_tokens) as o, sum(cache_read_tokens) as c,"
        " sum(cache_creation_tokens) as w from api_requests group by all order by all",
    )
    assert result.returncode == 0, result.stderr
    got = {(r.pop("day"), r.pop("model")): r for r in json.loads(result.stdout)}
    assert got == ccusage_rows(placed, "day", "model")
