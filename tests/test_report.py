"""`telemetryctl report daily|weekly|monthly|session` on imported Claude Code and Codex
history, against an independent computation from the raw files following ccusage's rules.

Tokens must agree exactly. Cost rule: a request's cost is the transcript's ``costUSD``
when it has one (ccusage's ``auto`` mode), else the genai-prices data's price for the
model at the request's time applied to its tokens; the test computes it from the raw
lines with genai-prices' own ``calc_price`` (tests/price_reference.py), independently of
telemetryd's SQL (store/pricing.py).

Where telemetryd deliberately counts differently from ccusage (docs in README.md,
"Reports"): a Codex ``token_count`` that re-emits an unchanged cumulative total is
counted once (ccusage counts its ``last_token_usage`` again); the computation below
follows telemetryd there and ccusage everywhere else. Of two copies of one Claude
response with the same token total, telemetryd keeps the later line and ccusage the
earlier: the same counts, but a session's ``firstActivity`` can be seconds later.
"""

from __future__ import annotations

import csv as csv_module
import json
import shutil
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conftest import Daemon, ctl, exchange, summary
from price_reference import genai_cost

SAMPLES = Path("/work/shared/samples")
TRANSCRIPTS = SAMPLES / "claude-code" / "transcripts"
ROLLOUTS = [
    SAMPLES / "codex" / "rollout-2026-02-23T13-19-38-019c8a70-dda7-7f33-98ea-f30553347322.jsonl",
    SAMPLES / "codex" / "rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff.jsonl",
]
# Where each Claude sample goes under projects/ (as Claude Code lays transcripts out).
CLAUDE_LAYOUT = {
    "ccusage_synthetic_project-alpha_chat.jsonl": "project-alpha/session-alpha/chat.jsonl",
    "sniffly_fed8ce56_session_v1.0.17.jsonl": (
        "-Users-chip-dev-ai-music/fed8ce56-bc79-401f-a83e-af084253362f.jsonl"
    ),
    "spotter_short_session_v2.1.38.jsonl": (
        "-home-marco-projects-spotter/55604662-cf2a-4331-851a-ec234028f8ca.jsonl"
    ),
    "spotter_tool_heavy_session_v2.1.38.jsonl": (
        "-home-marco-projects-spotter/d6e0bada-1959-4eec-a9d2-0bfade768d8f.jsonl"
    ),
    "spotter_subagent_agent-aac57f5_v2.1.39.jsonl": (
        "-home-USER-projects-spotter-worktrees-spotter-4te/"
        "ae4a77f8-aedd-4bc1-888f-c94edc91af04/subagents/agent-aac57f5.jsonl"
    ),
}
CCUSAGE_ROW_KEYS = {
    "inputTokens",
    "outputTokens",
    "cacheCreationTokens",
    "cacheReadTokens",
    "totalTokens",
    "totalCost",
    "modelsUsed",
    "modelBreakdowns",
}
CCUSAGE_SESSION_KEYS = CCUSAGE_ROW_KEYS | {
    "sessionId",
    "lastActivity",
    "firstActivity",
    "projectPath",
}
CCUSAGE_BREAKDOWN_KEYS = {
    "modelName",
    "inputTokens",
    "outputTokens",
    "cacheCreationTokens",
    "cacheReadTokens",
    "cost",
}
CCUSAGE_TOTALS_KEYS = CCUSAGE_ROW_KEYS - {"modelsUsed", "modelBreakdowns"}
OURS = {"requests", "reasoningOutputTokens", "unpricedRequests"}


# -- the independent computation -------------------------------------------------------------


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def claude_requests(projects: Path) -> list[dict[str, Any]]:
    """ccusage's Claude rules: lines with message.usage (not the <synthetic> model), one
    request per (message.id, requestId) keeping the larger token total (then the
    higher cost), cache writes from the 5m/1h split when given; session id and project
    from the path; costUSD when given, else genai-prices'; fast mode as <model>-fast."""
    kept: dict[Any, dict[str, Any]] = {}
    for path in sorted(projects.rglob("*.jsonl")):
        parts = path.relative_to(projects).parts
        project = parts[0]
        session = parts[1] if len(parts) > 2 else path.stem
        for n, text in enumerate(path.read_text().splitlines()):
            try:
                line = json.loads(text)
            except ValueError:
                continue
            message = line.get("message") if isinstance(line, dict) else None
            if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
                continue
            if message.get("model") == "<synthetic>":
                continue
            usage = message["usage"]
            split = usage.get("cache_creation")
            if isinstance(split, dict):
                writes = split.get("ephemeral_5m_input_tokens", 0)
                writes += split.get("ephemeral_1h_input_tokens", 0)
                long_writes = split.get("ephemeral_1h_input_tokens", 0)
            else:
                writes, long_writes = usage.get("cache_creation_input_tokens", 0), 0
            tokens = {
                "source": "actual",
                "input": usage.get("input_tokens", 0),
                "output": usage.get("output_tokens", 0),
                "cache_creation": writes,
                "cache_read": usage.get("cache_read_input_tokens", 0),
            }
            speed = usage.get("speed")
            model = message.get("model") or "unknown"
            cost = line.get("costUSD")
            if cost is None:
                cost = genai_cost(
                    tokens,
                    model,
                    _ts(line["timestamp"]),
                    provider="anthropic",
                    long_writes=long_writes,
                    speed=speed,
                )
            entry = {
                **tokens,
                "ts": _ts(line["timestamp"]),
                "model": model + ("-fast" if speed == "fast" else ""),
                "session": session,
                "project": project,
                "source": "claude-code",
                "cost": cost,
            }
            entry["total"] = sum(
                tokens[k] for k in ("input", "output", "cache_creation", "cache_read")
            )
            key = (message.get("id"), line.get("requestId"))
            if None in key:
                key = (path, n)
            old = kept.get(key)
            # (telemetryd: of two equal copies the later is kept, ccusage keeps the
            # earlier; the counts are the same, a session's firstActivity may move.)
            if old is None or entry["total"] >= old["total"]:
                kept[key] = entry
    return list(kept.values())


def codex_requests(rollouts: Iterable[Path]) -> list[dict[str, Any]]:
    """ccusage's Codex rules: the model from turn_context; per token_count its
    last_token_usage, else the change of the cumulative total; input less the cached
    part, cached as cache reads; priced by genai-prices. (telemetryd: a repeated
    cumulative total is not counted again.)"""
    found = []
    for path in rollouts:
        session = path.stem[-36:]
        model, cwd, previous = None, None, None
        for text in path.read_text().splitlines():
            line = json.loads(text)
            payload = line.get("payload") or {}
            if line.get("type") == "session_meta":
                cwd = payload.get("cwd") or cwd
            if line.get("type") == "turn_context":
                model = payload.get("model") or model
                cwd = payload.get("cwd") or cwd
            if line.get("type") != "event_msg" or payload.get("type") != "token_count":
                continue
            info = payload.get("info") or {}
            total = info.get("total_token_usage")
            if total is not None and total == previous:
                continue  # re-emitted
            last = info.get("last_token_usage")
            if last is None and total is not None:
                last = {k: v - (previous or {}).get(k, 0) for k, v in total.items()}
            if total is not None:
                previous = total
            if not last:
                continue
            cached = last.get("cached_input_tokens", 0)
            tokens = {
                "source": "actual",
                "input": last.get("input_tokens", 0) - cached,
                "output": last.get("output_tokens", 0),
                "cache_creation": 0,
                "cache_read": cached,
            }
            found.append(
                {
                    **tokens,
                    "ts": _ts(line["timestamp"]),
                    "model": info.get("model") or model or "unknown",
                    "session": session,
                    "project": cwd,
                    "source": "codex",
                    "cost": genai_cost(
                        tokens,
                        info.get("model") or model,
                        _ts(line["timestamp"]),
                        provider="openai",
                    ),
                    "total": sum(v for k, v in tokens.items() if k != "source"),
                }
            )
    return found


def week_start(day: date) -> date:
    return day - timedelta(days=day.isoweekday() % 7)  # Sunday, ccusage's default


def expected(requests: list[dict[str, Any]], kind: str, zone: str) -> dict[str, Any]:
    """The report in ccusage's JSON (its keys only), from the requests."""
    tz = ZoneInfo(zone)
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in requests:
        day = r["ts"].astimezone(tz).date()
        key: Any = {
            "daily": day.isoformat(),
            "weekly": week_start(day).isoformat(),
            "monthly": day.isoformat()[:7],
            "session": (r["project"], r["session"]),
        }[kind]
        groups[key].append(r)

    def sums(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "inputTokens": sum(r["input"] for r in rs),
            "outputTokens": sum(r["output"] for r in rs),
            "cacheCreationTokens": sum(r["cache_creation"] for r in rs),
            "cacheReadTokens": sum(r["cache_read"] for r in rs),
        }

    rows = []
    for key, rs in groups.items():
        row: dict[str, Any] = {}
        if kind == "session":
            row["sessionId"], row["projectPath"] = key[1], key[0]
            last = max(r["ts"] for r in rs)
            row["lastActivity"] = (
                last.strftime("%Y-%m-%dT%H:%M:%S.") + f"{last.microsecond // 1000:03d}Z"
            )
            first = min(r["ts"] for r in rs)
            row["firstActivity"] = (
                first.strftime("%Y-%m-%dT%H:%M:%S.") + f"{first.microsecond // 1000:03d}Z"
            )
        else:
            row[{"daily": "date", "weekly": "week", "monthly": "month"}[kind]] = key
        row.update(sums(rs))
        row["totalTokens"] = sum(r["total"] for r in rs)
        row["totalCost"] = sum(r["cost"] or 0 for r in rs)
        models = sorted({r["model"] for r in rs})
        row["modelsUsed"] = models
        row["modelBreakdowns"] = {
            m: {
                "modelName": m,
                **sums([r for r in rs if r["model"] == m]),
                "cost": sum(r["cost"] or 0 for r in rs if r["model"] == m),
            }
            for m in models
        }
        rows.append(row)
    totals = sums(requests)
    totals["totalTokens"] = sum(r["total"] for r in requests)
    totals["totalCost"] = sum(r["cost"] or 0 for r in requests)
    return {"rows": rows, "totals": totals}


# -- the comparison ------------------------------------------------------------------------


def comparable(report: dict[str, Any], kind: str) -> dict[str, Any]:
    """Our JSON with ccusage's keys only, costs approximate, models as sets, breakdowns
    by model; checks that the breakdowns come most expensive first."""
    rows_key = {"session": "sessions"}.get(kind, kind)
    keys = CCUSAGE_SESSION_KEYS if kind == "session" else CCUSAGE_ROW_KEYS
    period = {"daily": "date", "weekly": "week", "monthly": "month", "session": None}[kind]
    rows = []
    for row in report[rows_key]:
        want = keys | ({period} if period else set())
        assert set(row) == want | OURS, sorted(set(row) ^ (want | OURS))
        costs = [b["cost"] for b in row["modelBreakdowns"]]
        assert costs == sorted(costs, reverse=True)
        out = {k: row[k] for k in want}
        out["totalCost"] = pytest.approx(row["totalCost"], rel=1e-9, abs=1e-12)
        out["modelsUsed"] = sorted(row["modelsUsed"])
        breakdowns = {}
        for b in row["modelBreakdowns"]:
            assert set(b) == CCUSAGE_BREAKDOWN_KEYS
            breakdowns[b["modelName"]] = {
                **b,
                "cost": pytest.approx(b["cost"], rel=1e-9, abs=1e-12),
            }
        out["modelBreakdowns"] = breakdowns
        rows.append(out)
    totals = report["totals"]
    assert set(totals) == CCUSAGE_TOTALS_KEYS | OURS
    totals = {k: totals[k] for k in CCUSAGE_TOTALS_KEYS}
    totals["totalCost"] = pytest.approx(totals["totalCost"], rel=1e-9, abs=1e-12)
    return {"rows": rows, "totals": totals}


def by_key(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows by their period (or session and project)."""
    names = ("date", "week", "month", "sessionId", "projectPath")
    return {json.dumps([r.get(k) for k in names]): r for r in rows}


def report(*args: str) -> dict[str, Any]:
    result = ctl("report", *args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    out: dict[str, Any] = json.loads(result.stdout)
    return out


@pytest.fixture
def history(running_daemon: Daemon, tmp_path: Path) -> list[dict[str, Any]]:
    """The Claude samples in a projects/ tree and two real Codex rollouts, imported into
    the running daemon; the requests computed from the raw files."""
    projects = tmp_path / "claude" / "projects"
    for name, where in CLAUDE_LAYOUT.items():
        (projects / where).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(TRANSCRIPTS / name, projects / where)
    sessions = tmp_path / "codex" / "sessions" / "2026" / "02" / "23"
    sessions.mkdir(parents=True)
    for rollout in ROLLOUTS:
        shutil.copy(rollout, sessions / rollout.name)
    for agent, root in (("claude-code", tmp_path / "claude"), ("codex", tmp_path / "codex")):
        result = ctl("import", agent, str(root))
        assert result.returncode == 0, result.stderr.decode()
    found = claude_requests(projects) + codex_requests(sorted(sessions.iterdir()))
    assert len(found) == 15 + 6 + 1  # test_import.py's counts for these files
    return found


@pytest.mark.parametrize("kind", ["daily", "weekly", "monthly", "session"])
def test_reports_equal_the_computation_from_the_files(
    history: list[dict[str, Any]], kind: str
) -> None:
    for zone in ("UTC", "Pacific/Auckland"):
        want = expected(history, kind, zone)
        got = comparable(report(kind, "--timezone", zone), kind)
        g, w = by_key(got["rows"]), by_key(want["rows"])
        for k in w:
            assert g.get(k) == w[k], (kind, zone, k, g.get(k), w[k])
        assert g.keys() == w.keys()
        assert got["totals"] == want["totals"]


def test_the_time_zone_moves_a_request_to_the_next_day(history: list[dict[str, Any]]) -> None:
    utc = {r["date"]: r for r in report("daily", "--timezone", "UTC")["daily"]}
    auckland = {r["date"]: r for r in report("daily", "-z", "Pacific/Auckland")["daily"]}
    # ccusage's synthetic chat: 10:00 and 12:30 UTC on the 9th, 09:15 UTC on the 10th;
    # in Auckland (UTC+13) 12:30 is past midnight, 09:15 is 22:15 on the 10th.
    assert utc["2026-01-09"]["inputTokens"] == 100 + 200
    assert utc["2026-01-10"]["inputTokens"] == 300
    assert auckland["2026-01-09"]["inputTokens"] == 100
    assert auckland["2026-01-10"]["inputTokens"] == 200 + 300


def test_by_source_since_until_and_breakdown(history: list[dict[str, Any]]) -> None:
    got = report("monthly", "--by", "source", "-z", "UTC", "--since", "2026-01-01")
    months = {(r["month"], r["source"]): r for r in got["monthly"]}
    assert set(months) == {
        ("2026-01", "claude-code"),
        ("2026-02", "claude-code"),
        ("2026-02", "codex"),
    }
    codex = [r for r in history if r["source"] == "codex"]
    assert months[("2026-02", "codex")]["inputTokens"] == sum(r["input"] for r in codex)
    assert months[("2026-02", "codex")]["requests"] == 6 + 1
    window = report("daily", "-z", "UTC", "--since", "20260109", "--until", "2026-01-10")
    assert [r["date"] for r in window["daily"]] == ["2026-01-09", "2026-01-10"]
    assert window["totals"]["inputTokens"] == 600
    only = report("daily", "-z", "UTC", "--source", "codex")
    assert [r["date"] for r in only["daily"]] == ["2026-02-23"]
    by_model = report(
        "daily", "-z", "UTC", "--by", "model", "--since", "2026-01-09", "-u", "2026-01-09"
    )
    assert {(r["date"], r["model"]) for r in by_model["daily"]} == {
        ("2026-01-09", "claude-sonnet-4-20250514"),
        ("2026-01-09", "claude-opus-4-20250514-fast"),  # fast mode, named as ccusage does
    }
    sessions = report("session", "-z", "UTC", "--until", "2025-12-31")["sessions"]
    assert [s["sessionId"] for s in sessions] == ["fed8ce56-bc79-401f-a83e-af084253362f"]
    assert sessions[0]["projectPath"] == "-Users-chip-dev-ai-music"


def test_the_table_shows_money_and_separators(history: list[dict[str, Any]]) -> None:
    result = ctl(
        "report",
        "daily",
        "-z",
        "UTC",
        "--since",
        "2026-01-09",
        "--until",
        "2026-01-10",
        "--breakdown",
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == [
        "Date", "Models", "Input", "Output", "Cache", "Create", "Cache", "Read", "Total",
        "Tokens", "Cost",
    ]  # fmt: skip
    day = next(line for line in lines if line.startswith("2026-01-09"))
    assert "$0.46" in day  # the transcript's costUSD 0.12 + 0.34
    assert any("└─ claude-opus-4-20250514-fast" in line and "$0.34" in line for line in lines)
    total = lines[-1]
    assert total.split() == ["Total", "600", "250", "75", "70", "995", "$1.02"]
    big = ctl("report", "monthly", "-z", "UTC", "--source", "codex").stdout.decode()
    codex_input = sum(r["input"] for r in history if r["source"] == "codex")
    assert f"{codex_input:,}" in big and "," in f"{codex_input:,}"
    csv = ctl("report", "daily", "-z", "UTC", "--format", "csv", "--source", "codex").stdout
    header, row = csv.decode().splitlines()[:2]
    assert header.startswith("date,models,requests,input_tokens")
    assert row.split(",")[3] == str(codex_input)
    # (the models column was empty but with --breakdown, which has a row per model)
    models = {r["model"] for r in history if r["source"] == "codex"}
    days = list(csv_module.reader(csv.decode().splitlines()[1:]))
    assert {m for day in days for m in day[1].split(", ")} == models
    broken = ctl("report", "daily", "-z", "UTC", "-f", "csv", "--source", "codex", "--breakdown")
    assert broken.stdout.decode().startswith("date,model,requests,")
    assert {line.split(",")[1] for line in broken.stdout.decode().splitlines()[1:]} == models
    markdown = ctl("report", "weekly", "-z", "UTC", "-f", "markdown").stdout.decode()
    assert markdown.startswith("| Week | Models |") and "$" in markdown


def test_days_where_a_local_midnight_cuts_a_quarter_hour(running_daemon: Daemon) -> None:
    """The report sums per quarter hour (UTC) before moving to local days; where a local
    midnight falls inside a quarter hour, each request still lands on its own day."""
    times = [
        # St. John's fell back at 00:01 local until 2011: 2010-11-07 02:31 UTC is 00:01
        # NDT, which became 23:01 NST on the 6th.
        "2010-11-07T02:30:30.000Z",
        "2010-11-07T02:30:59.999Z",
        "2010-11-07T02:31:00.000Z",
        "2010-11-07T02:44:59.999Z",
        "2010-11-07T02:45:00.000Z",
        # Kathmandu kept local mean time (+05:41:16) before 1920: midnight at 18:18:44 UTC.
        "1910-01-01T18:16:00.000Z",
        "1910-01-01T18:18:43.999Z",
        "1910-01-01T18:18:44.000Z",
        "1910-01-01T18:29:00.000Z",
        # And ordinary quarter hours on both sides of a midnight, for contrast.
        "2026-03-01T03:14:59.999Z",
        "2026-03-01T03:15:00.000Z",
    ]
    events = [
        {
            "type": "api_request",
            "id": f"cut{n}",
            "ts": ts,
            "agent": {"model": "m"},
            "tokens": {"source": "actual", "input": 2**n, "output": 0},
            "cost_usd": 0.0,
        }
        for n, ts in enumerate(times)
    ]
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    assert exchange(running_daemon.events_socket, payload) == [summary(len(events), len(events))]
    for zone in ("America/St_Johns", "Asia/Kathmandu", "America/Sao_Paulo", "UTC"):
        want: dict[str, int] = defaultdict(int)
        for event in events:
            day = _ts(event["ts"]).astimezone(ZoneInfo(zone)).date().isoformat()
            want[day] += event["tokens"]["input"]
        got = {r["date"]: r["inputTokens"] for r in report("daily", "-z", zone)["daily"]}
        assert got == dict(want), zone


def test_fast_mode_requests_are_their_own_model(running_daemon: Daemon) -> None:
    """Claude's fast mode (``attrs.speed``) is listed as ``<model>-fast``, as ccusage
    lists it; other attrs, even ones that mention the word, leave the model alone."""
    cases = [
        ({"speed": "fast"}, "claude-opus-4-6-fast"),
        ({"speed": "normal"}, "claude-opus-4-6"),
        ({"note": "speed fast"}, "claude-opus-4-6"),
        ({"nested": {"speed": "fast"}}, "claude-opus-4-6"),
        (None, "claude-opus-4-6"),
    ]
    events = []
    for n, (attrs, _) in enumerate(cases):
        event: dict[str, Any] = {
            "type": "api_request",
            "id": f"speed{n}",
            "ts": "2026-03-02T10:00:00.000Z",
            "agent": {"model": "claude-opus-4-6"},
            "tokens": {"source": "actual", "input": 10**n, "output": 0},
            "cost_usd": 0.0,
        }
        if attrs is not None:
            event["attrs"] = attrs
        events.append(event)
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    assert exchange(running_daemon.events_socket, payload) == [summary(len(events), len(events))]
    want: dict[str, int] = defaultdict(int)
    for n, (_, model) in enumerate(cases):
        want[model] += 10**n
    [day] = report("daily", "--timezone", "UTC", "--breakdown")["daily"]
    got = {m["modelName"]: m["inputTokens"] for m in day["modelBreakdowns"]}
    assert got == dict(want)


@pytest.mark.parametrize(
    "name",
    ["UTC", "Europe/Berlin", "America/St_Johns", "Mars/Olympus", "America", "zone.tab",
     "../zoneinfo/UTC", "/usr/share/zoneinfo/UTC", "", "Etc/GMT+5"],
)  # fmt: skip
def test_a_zone_is_known_as_zoneinfo_knows_it(name: str) -> None:
    """reports._known reads the zone files itself (no zoneinfo import on a report's start):
    it must say what zoneinfo says."""
    import zoneinfo

    from telemetryd.client import reports

    try:
        zoneinfo.ZoneInfo(name)
        expected = True
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        expected = False
    assert reports._known(name) is expected


def test_a_session_is_one_row_with_its_cost_whatever_its_requests_carry(
    running_daemon: Daemon,
) -> None:
    """A session whose imported requests carry a project and whose live ones do not is
    one row (the project of its latest request that has one), and a session whose
    requests have a cost but no token counts is listed: the sessions' totals are the
    days'. A session with neither is left out, as ccusage leaves it."""

    def req(n: int, session: str, ts: str, cost: float | None, **extra: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "api_request",
            "id": f"sess{n}",
            "ts": ts,
            "session_id": session,
            "agent": {"model": "claude-sonnet-4-5"},
            "tokens": {"source": "actual", "input": 10 * n, "output": n},
            **extra,
        }
        if cost is not None:
            event["cost_usd"] = cost
        return event

    events = [
        req(1, "split", "2026-03-02T10:00:00.000Z", 1.0, attrs={"project": "/home/ada/old"}),
        req(2, "split", "2026-03-02T11:00:00.000Z", 2.0),  # (received live: no project)
        req(3, "split", "2026-03-02T10:30:00.000Z", 4.0, attrs={"project": "/home/ada/app"}),
        req(4, "costonly", "2026-03-02T12:00:00.000Z", 0.5, tokens={"source": "unknown"}),
        req(5, "empty", "2026-03-02T12:00:00.000Z", None, tokens={"source": "unknown"}),
    ]
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    assert exchange(running_daemon.events_socket, payload) == [summary(5, 5)]
    sessions = report("session", "--timezone", "UTC")
    rows = {row["sessionId"]: row for row in sessions["sessions"]}
    assert sorted(rows) == ["costonly", "split"]
    split = rows["split"]
    assert (split["totalCost"], split["requests"]) == (pytest.approx(7.0), 3)
    assert split["projectPath"] == "/home/ada/app"
    assert split["inputTokens"] == 10 + 20 + 30
    assert rows["costonly"]["totalCost"] == pytest.approx(0.5)
    daily = report("daily", "--timezone", "UTC")
    assert sessions["totals"]["totalCost"] == pytest.approx(daily["totals"]["totalCost"])


@pytest.mark.parametrize(
    ("tz", "zone"),
    [("JST-9", "Etc/GMT-9"), ("<+03>-3", "Etc/GMT-3"), ("EST5", "Etc/GMT+5"), ("UTC0", "Etc/GMT"),
     (":Asia/Tokyo", "Asia/Tokyo"), ("", "UTC"), ("<+0545>-5:45", None),
     ("EST5EDT,M3.2.0,M11.1.0", None), ("Mars/Olympus", None)],
)  # fmt: skip
def test_a_posix_tz_counts_days_as_the_c_library_does_or_says_it_cannot(
    tz: str, zone: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The status line's "today" follows the C library's local time, which reads POSIX
    rules in TZ; the reports' days follow the same offset where a zone has it, and where
    none has, count in UTC and say so (before: /etc/localtime's zone, silently)."""
    import time

    from telemetryd.client import reports

    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        found = reports.local_zone()
        err = capsys.readouterr().err
        offset = time.localtime(1_800_000_000).tm_gmtoff
    finally:
        monkeypatch.undo()
        time.tzset()
    if zone is None:
        assert found == "UTC"
        assert f"TZ={tz!r}" in err and "counting in UTC" in err
        return
    assert (found, err) == (zone, "")
    moment = datetime.fromtimestamp(1_800_000_000, ZoneInfo(found))
    assert moment.utcoffset() == timedelta(seconds=offset)


def test_requests_stamped_in_year_1_or_9999_count_on_the_edges(running_daemon: Daemon) -> None:
    """A producer's zero time (0001-01-01, Go's) or a year-9999 time is accepted: every
    report still answers, in every zone, counting it on the first or last day a report
    can show (it stopped daily, weekly, monthly and blocks with a traceback, for good)."""
    times = ["0001-01-01T00:00:00.000Z", "2026-03-02T10:00:00.000Z", "9999-12-31T23:00:00.000Z"]
    events = [
        {
            "type": "api_request",
            "id": f"edge{n}",
            "ts": ts,
            "session_id": f"edge{n}",
            "agent": {"model": "claude-sonnet-4-5"},
            "tokens": {"source": "actual", "input": 10**n, "output": 1},
            "cost_usd": 1.0,
        }
        for n, ts in enumerate(times)
    ]
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    assert exchange(running_daemon.events_socket, payload) == [summary(3, 3)]
    for zone in ("America/New_York", "UTC", "Pacific/Kiritimati"):
        for kind in ("daily", "weekly", "monthly", "session"):
            got = report(kind, "--timezone", zone)
            assert got["totals"]["inputTokens"] == 111, (kind, zone)
        result = ctl("report", "blocks", "--json", "--timezone", zone)
        assert result.returncode == 0, result.stderr.decode()
        blocks = [b for b in json.loads(result.stdout)["blocks"] if not b["isGap"]]
        assert sum(b["tokenCounts"]["inputTokens"] for b in blocks) == 111
    days = [row["date"] for row in report("daily", "--timezone", "America/New_York")["daily"]]
    assert days == ["0001-01-08", "2026-03-02", "9999-12-23"]
