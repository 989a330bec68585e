"""`telemetryctl import copilot`: GitHub Copilot CLI session events, against ccusage's rules.

The totals are checked against ccusage's session-state rules computed here,
independently, from the raw lines (ryoppippi/ccusage
`rust/crates/ccusage/src/adapter/copilot/parser.rs` and `loader.rs` at 104e23cb, PR
#1174; a later shutdown as ccusage 20.0.24 counts it, ccusage issue #1721, checked
against that release's binary). ccusage reports a Gemini model's reasoning apart from
its output; telemetryd counts it as output: the comparison adds it back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, ctl
from telemetryd.adapters import copilot, usage
from telemetryd.client import importer

pytestmark = pytest.mark.usefixtures("agent_home")

FIXTURES = Path(__file__).parent / "fixtures" / "copilot"
TOKENSTATS = FIXTURES / "tokenstats_copilot-events.jsonl"
WORKSHOP = FIXTURES / "workshop_copilot-events.jsonl"
BUILT = FIXTURES / "built_resumed-session.jsonl"
SAMPLES = [TOKENSTATS, WORKSHOP, BUILT]


def run_json(*args: str) -> dict[str, Any]:
    result = ctl("import", *args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def install(base: Path, samples: list[Path] = SAMPLES) -> list[Path]:
    """Each sample as ``<base>/session-state/<sample stem>/events.jsonl``."""
    placed = []
    for sample in samples:
        target = base / "session-state" / sample.stem / "events.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample, target)
        placed.append(target)
    return placed


# -- ccusage's rules, written out apart from the importer's code -------------------------------

_FIELDS = ("inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens", "reasoningTokens")


def _u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def ccusage_entries(path: Path, restarts: bool = False) -> list[dict[str, Any]]:
    """parser.rs `parse_session_state_file` (rows with tokens; the session is the
    directory). A later shutdown counts, field by field, what it adds to the model's
    counts at the shutdown before that had the model, none of a count that went down
    (ccusage 20.0.24: "session.shutdown records are cumulative"; it reads no
    ``session.resume``).

    ``restarts``: where telemetryd reads a process's counts as started again (none of
    the files has the CLI's usage accounting), a model's counts after a
    ``session.start`` or ``session.resume``, or that went down, count whole."""
    session = path.parent.name
    entries: dict[str, dict[str, Any]] = {}  # loader.rs: a HashMap by dedup key
    last: dict[str, dict[str, int]] = {}  # per model, its counts at its last shutdown
    for line in path.read_bytes().split(b"\n"):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if restarts and event.get("type") in ("session.start", "session.resume"):
            last = {}  # (a new process: its counts start from none)
        if event.get("type") != "session.shutdown":
            continue
        if not isinstance(event.get("id"), str) or not isinstance(event.get("timestamp"), str):
            continue  # serde: `id` and `timestamp` are required strings
        metrics = (event.get("data") or {}).get("modelMetrics") or {}
        usages = {
            m: {k: (v.get("usage") or {}).get(k, 0) for k in _FIELDS} for m, v in metrics.items()
        }
        if not all(_u64(n) for u in usages.values() for n in u.values()):
            continue  # serde: u64 fields
        for model, now in usages.items():
            before = last.get(model, dict.fromkeys(_FIELDS, 0))
            if restarts and any(now[k] < before[k] for k in _FIELDS):
                before = dict.fromkeys(_FIELDS, 0)
            last[model] = now
            u = {k: max(0, now[k] - before[k]) for k in _FIELDS}
            gemini = model.startswith("gemini-")
            reasoning = u["reasoningTokens"] if gemini else 0
            entry = {
                "day": event["timestamp"][:10],  # every sample's time is UTC
                "model": model,
                "inputTokens": max(
                    0, u["inputTokens"] - u["cacheReadTokens"] - u["cacheWriteTokens"]
                ),
                "outputTokens": u["outputTokens"],
                "cacheReadTokens": u["cacheReadTokens"],
                "cacheCreationTokens": u["cacheWriteTokens"],
                "reasoningTokens": reasoning,
            }
            if not any(entry[k] for k in entry if k.endswith("Tokens")):
                continue  # no tokens: not a request here (ccusage may keep it for credits)
            entries[f"shutdown:{session}:{event['id']}:{model}"] = entry
    return list(entries.values())


def ccusage_rows(
    paths: list[Path], *keys: str, restarts: bool = False
) -> dict[tuple[str, ...], dict[str, int]]:
    """ccusage's token totals by ``keys`` ("day", "model"), its output plus Gemini's
    reasoning (``restarts``: :func:`ccusage_entries`)."""
    rows: dict[tuple[str, ...], dict[str, int]] = {}
    for path in paths:
        for entry in ccusage_entries(path, restarts):
            row = rows.setdefault(tuple(entry[k] for k in keys), dict.fromkeys("eiocw", 0))
            row["e"] += 1
            row["i"] += entry["inputTokens"]
            row["o"] += entry["outputTokens"] + entry["reasoningTokens"]
            row["c"] += entry["cacheReadTokens"]
            row["w"] += entry["cacheCreationTokens"]
    return rows


def view(rows: dict[str, Any]) -> dict[tuple[str, ...], dict[str, int]]:
    return {
        (key,): {
            "e": r["requests"],
            "i": r["input"],
            "o": r["output"],
            "c": r["cache_read"],
            "w": r["cache_creation"],
        }
        for key, r in rows.items()
    }


# -- the samples ---------------------------------------------------------------------------------


def test_samples_per_model_and_day_equal_ccusage(agent_home: Path) -> None:
    """The samples whose processes ccusage reads as telemetryd does (the built resumed
    session, whose second process's counts went down, is counted by hand below)."""
    placed = install(agent_home / ".copilot", [TOKENSTATS, WORKSHOP])
    summary = importer.run("copilot", dry_run=True)
    assert summary.files == 2
    assert view(summary.as_dict()["by_model"]) == ccusage_rows(placed, "model")
    assert view(summary.as_dict()["by_day"]) == ccusage_rows(placed, "day")


def test_samples_by_hand(agent_home: Path) -> None:
    summary = importer.run("copilot", [BUILT], dry_run=True).as_dict()
    assert summary["malformed"] == 1  # the torn line
    assert summary["requests"] == 4  # gpt-5-mini's zero row, no id, negative count: skipped
    sonnet = summary["by_model"]["claude-sonnet-4.5"]
    assert (sonnet["input"], sonnet["cache_read"], sonnet["cache_creation"]) == (
        (51200 - 40960 - 6000) + (30000 - 25000 - 1000),
        40960 + 25000,
        6000 + 1000,
    )
    assert sonnet["output"] == 1900 + 1200  # Claude's reasoning is inside its output
    gemini = summary["by_model"]["gemini-3-pro-preview"]
    assert (gemini["input"], gemini["output"], gemini["reasoning"]) == (7000, 300 + 700, 700)
    gpt = summary["by_model"]["gpt-5.1"]
    assert (gpt["output"], gpt["reasoning"]) == (800, 350)
    assert sorted(summary["by_day"]) == ["2026-06-30", "2026-07-01"]


def test_a_process_counts_its_growth_a_resumed_one_counts_whole_and_copies_once(
    tmp_path: Path,
) -> None:
    """TokenStats' two shutdowns, one process's running totals: the second counts what
    it adds (it counted whole, the first process's tokens twice). The same lines with a
    ``session.resume`` between them: a new process of a CLI without the usage
    accounting, whose totals started again, counts whole."""
    copy = tmp_path / "copy" / "events.jsonl"
    copy.parent.mkdir()
    shutil.copy(TOKENSTATS, copy)
    twice = tmp_path / "tokenstats_copilot-events" / "events.jsonl"
    twice.parent.mkdir()
    shutil.copy(TOKENSTATS, twice)
    summary = importer.run("copilot", [twice, twice.parent], dry_run=True)
    gpt = summary.by_model["gpt-5.6"]
    # (input 10 and 20 with cache reads 2 and 4 and writes 1 and 2; output 5 and 8)
    assert (gpt.requests, gpt.input, gpt.output, gpt.reasoning) == (2, 7 + 7, 5 + 3, 3 + 3)
    assert summary.by_model["gpt-4.1"].input == 7 + (9 - 1 - 7)
    # Another session directory is another session (ccusage keys by the directory too).
    both = importer.run("copilot", [twice, copy], dry_run=True)
    assert both.requests == 2 * summary.requests

    lines = TOKENSTATS.read_text().splitlines()
    resume = {"type": "session.resume", "id": "resume-1",
              "timestamp": "2026-08-02T09:01:30Z", "data": {"eventCount": 2}}  # fmt: skip
    resumed = tmp_path / "resumed" / "events.jsonl"
    resumed.parent.mkdir()
    resumed.write_text("\n".join([*lines[:2], json.dumps(resume), *lines[2:]]) + "\n")
    gpt = importer.run("copilot", [resumed], dry_run=True).by_model["gpt-5.6"]
    assert (gpt.requests, gpt.input, gpt.output, gpt.reasoning) == (2, 7 + 14, 5 + 8, 3 + 6)


ACCOUNTED = FIXTURES / "built_accounted-session.jsonl"


def accounted_usage(path: Path) -> dict[tuple[str, str], dict[str, int]]:
    """What each shutdown of a file with Copilot CLI's usage accounting adds, per (day,
    model), from the raw lines: its totals less the model's in the shutdowns before when
    none went down, else its totals; then the token rule (input less both caches, reasoning apart
    for Gemini)."""
    rows: dict[tuple[str, str], dict[str, int]] = {}
    last: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["type"] != "session.shutdown":
            continue
        now = {
            model: {**m["usage"], "requests": m["requests"]["count"]}
            for model, m in event["data"]["modelMetrics"].items()
        }
        for model, counts in now.items():
            before = last.get(model)
            if before and all(counts[k] >= before[k] for k in counts):
                counts = {k: counts[k] - before[k] for k in counts}
            gemini = model.startswith("gemini-")
            row = rows.setdefault((event["timestamp"][:10], model), dict.fromkeys("eiocw", 0))
            row["e"] += 1
            row["i"] += (
                counts["inputTokens"] - counts["cacheReadTokens"] - counts["cacheWriteTokens"]
            )
            row["o"] += counts["outputTokens"] + (counts["reasoningTokens"] if gemini else 0)
            row["c"] += counts["cacheReadTokens"]
            row["w"] += counts["cacheWriteTokens"]
        last = {**last, **now}  # (a model left out keeps its totals)
    return rows


def test_a_resumed_session_with_the_usage_accounting_counts_each_process_once(
    tmp_path: Path,
) -> None:
    """Copilot CLI's usage accounting rebuilds a session's totals when it resumes, so its
    second shutdown totals both processes: the first process's tokens were counted
    twice. Now a shutdown counts what it adds to the previous one (a count that went
    down: a new total, counted whole)."""
    path = tmp_path / "ac0c0a7e-1b2c-4d3e-8f90-0123456789ab" / "events.jsonl"
    path.parent.mkdir()
    shutil.copy(ACCOUNTED, path)
    summary = importer.run("copilot", [path], dry_run=True).as_dict()
    expected = accounted_usage(path)
    for at, key in ((0, "by_day"), (1, "by_model")):
        totals: dict[tuple[str, ...], dict[str, int]] = {}
        for keys, row in expected.items():
            total = totals.setdefault((keys[at],), dict.fromkeys("eiocw", 0))
            for k in row:
                total[k] += row[k]
        assert view(summary[key]) == totals
    sonnet = expected[("2026-11-02", "claude-sonnet-4.5")]  # (16000, 3500, 9000, 1500) less day 1
    assert (sonnet["i"], sonnet["o"], sonnet["c"], sonnet["w"]) == (2500, 1500, 3000, 500)
    assert expected[("2026-11-02", "gpt-5-mini")]["i"] == 300  # (went down: whole)
    assert summary["by_model"]["claude-sonnet-4.5"]["input"] == 3000 + 2500
    # Without the accounting, a resumed session's shutdowns still add (its second
    # process's counts went down; no difference is taken).
    built = importer.run("copilot", [BUILT], dry_run=True).by_model["claude-sonnet-4.5"]
    assert built.input == (51200 - 40960 - 6000) + (30000 - 25000 - 1000)


def test_a_model_a_shutdown_leaves_out_keeps_its_totals(tmp_path: Path) -> None:
    """Accounted shutdowns A+B, then A alone, then one without metrics, then A+B: B's
    second total is its difference from its first (it was counted whole, 130 for 80)."""

    def shutdown(n: int, day: int, metrics: dict[str, int] | None) -> str:
        data: dict[str, Any] = {"usageAccountingWatermarks": {"s": n}}
        if metrics is not None:
            data["modelMetrics"] = {
                model: {"requests": {"count": 1, "cost": 0},
                        "usage": {"inputTokens": total, "outputTokens": 1}}
                for model, total in metrics.items()
            }  # fmt: skip
        return json.dumps({"type": "session.shutdown", "id": f"sd-{n}",
                           "timestamp": f"2026-11-0{day}T10:00:00.000Z", "data": data})  # fmt: skip

    path = tmp_path / "acc-gaps" / "events.jsonl"
    path.parent.mkdir()
    lines = [
        shutdown(1, 1, {"gpt-5": 100, "claude-sonnet-4.5": 50}),
        shutdown(2, 2, {"gpt-5": 150}),
        shutdown(3, 3, None),
        shutdown(4, 4, {"gpt-5": 200, "claude-sonnet-4.5": 80}),
    ]
    path.write_text("\n".join(lines) + "\n")
    summary = importer.run("copilot", [path], dry_run=True).as_dict()
    assert summary["by_model"]["claude-sonnet-4.5"]["input"] == 80
    assert summary["by_model"]["gpt-5"]["input"] == 200
    assert {day: row["input"] for day, row in summary["by_day"].items()} == {
        "2026-11-01": 150, "2026-11-02": 50, "2026-11-04": 80,
    }  # fmt: skip


def test_a_shutdown_of_odd_types_is_read_whole_with_the_same_records(tmp_path: Path) -> None:
    """A shutdown whose metrics have values of other types (a float count, a count as
    text, a usage that is no object) fails the typed decoding and is read whole: the
    records are those of reading every line whole (Shutdowns.records)."""
    metrics = [
        {"gpt-5": {"usage": {"inputTokens": 10, "outputTokens": 5}, "requests": {"count": 2}}},
        {"gpt-5": {"usage": {"inputTokens": 10.0, "outputTokens": 5}}},  # (dropped whole)
        {"gpt-5": {"usage": {"inputTokens": "10"}}},
        {"gpt-5": {"usage": [10]}},
        {"gpt-5": {"usage": {"inputTokens": 7, "outputTokens": 1}, "totalNanoAiu": 5e9}},
        {"gpt-5": {"usage": {"inputTokens": -1, "outputTokens": 1}}},
        {"o3": None},
        [],
    ]
    lines = [
        json.dumps({"type": "session.shutdown", "id": f"sd-{n}",
                    "timestamp": f"2026-11-0{n + 1}T10:00:00Z", "data": {"modelMetrics": found}})
        for n, found in enumerate(metrics)
    ]  # fmt: skip
    path = tmp_path / "odd" / "events.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    shutdowns = copilot.Shutdowns()
    whole = [r for line in lines for r in shutdowns.records(json.loads(line), "odd", None)]
    reader = importer.Importer("copilot")
    reader.read_file(path)
    assert reader.summary.requests == len(whole) == 2
    assert reader.summary.by_model["gpt-5"].input == sum(r["tokens"]["input"] for r in whole)


def test_a_shutdown_past_the_largest_count_costs_only_its_model(tmp_path: Path) -> None:
    """A model's counts past 2**53 (no request has them) are left out: the other model of
    the shutdown, and the file's other lines, are imported. (The file was one problem,
    none of it imported: the unknown tokens have no total.)"""
    huge = {"usage": {"inputTokens": 2**60, "outputTokens": 1}, "requests": {"count": 1}}
    fine = {"usage": {"inputTokens": 10, "outputTokens": 5}, "requests": {"count": 1}}
    lines = [
        json.dumps({"type": "session.shutdown", "id": f"sd-{n}",
                    "timestamp": f"2026-11-0{n + 1}T10:00:00Z", "data": {"modelMetrics": m}})
        for n, m in enumerate([{"gpt-5": huge, "o3": fine}, {"gpt-5": fine}])
    ]  # fmt: skip
    path = tmp_path / "huge" / "events.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    summary = importer.run("copilot", [path], dry_run=True).as_dict()
    assert (summary["rejections"], summary["malformed_files"]) == ([], [])
    assert summary["requests"] == 2
    assert {m: row["input"] for m, row in summary["by_model"].items()} == {"o3": 10, "gpt-5": 10}


def test_the_spans_of_one_process_share_their_scope() -> None:
    """A span line's resource and scope are decoded once while they repeat; a line with
    another resource gets its own (and a line without one is Copilot CLI's)."""
    resource = {"attributes": {"service.name": "github-copilot", "service.version": "1"}}
    line = {"type": "span", "traceId": "ab" * 16, "spanId": "cd" * 8, "name": "chat gpt-5",
            "resource": resource, "instrumentationScope": {"name": "github.copilot"}}  # fmt: skip
    spans = copilot.Spans()
    found = [
        spans.records(copilot.SPAN_LINE.decode(json.dumps(each)))
        for each in (
            line,
            line,
            {**line, "resource": {"attributes": {}}},
            {**line, "resource": None},
        )
    ]
    scopes = [pair[0] for pair in found if pair is not None]
    assert scopes[0] is scopes[1] and scopes[2] is not scopes[1]
    assert scopes[0].resource == resource["attributes"] and scopes[0].name == "github.copilot"
    assert scopes[2].resource == scopes[3].resource == {"service.name": copilot.OTEL_SERVICE}


# -- locations ---------------------------------------------------------------------------------


def test_default_location_and_import_with_no_name(agent_home: Path) -> None:
    install(agent_home / ".copilot")
    (agent_home / ".copilot" / "session-state" / "other.jsonl").write_text("{}\n")
    summary = run_json("copilot", "--dry-run")
    assert (summary["files"], summary["requests"]) == (3, 9)
    every = run_json("--dry-run")
    assert list(every) == ["copilot"]
    assert every["copilot"]["by_model"] == summary["by_model"]


def test_copilot_home_and_config_dir_replace_the_default(
    agent_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(agent_home / ".copilot")  # not read once a variable is set
    install(tmp_path / "home-dir", [WORKSHOP])
    install(tmp_path / "config-dir", [TOKENSTATS])
    monkeypatch.setenv("COPILOT_HOME", str(tmp_path / "home-dir"))
    assert importer.copilot_roots() == [tmp_path / "home-dir" / "session-state"]
    assert sorted(run_json("copilot", "--dry-run")["by_model"]) == ["gpt-5"]
    monkeypatch.setenv("COPILOT_CONFIG_DIR", f" {tmp_path / 'config-dir'} ")
    summary = run_json("copilot", "--dry-run")
    assert sorted(summary["by_model"]) == ["gpt-4.1", "gpt-5", "gpt-5.6"]
    monkeypatch.delenv("COPILOT_HOME")
    monkeypatch.setenv("COPILOT_CONFIG_DIR", str(tmp_path / "missing"))
    assert not importer.found("copilot")


# -- the token rule ------------------------------------------------------------------------------


def test_usage_rule() -> None:
    assert usage.copilot(input=100, output=10, cache_read=60, cache_write=30, reasoning=4) == {
        "source": "actual",
        "input": 10,
        "output": 10,
        "cache_read": 60,
        "cache_creation": 30,
        "reasoning": 4,
        "total": 110,
    }
    apart = usage.copilot(input=100, output=10, reasoning=40, reasoning_apart=True)
    assert (apart["output"], apart["reasoning"], apart["total"]) == (50, 40, 150)
    inside = usage.copilot(input=100, output=10, reasoning=40)  # larger than the output
    assert (inside["output"], "reasoning" in inside) == (10, False)
    assert usage.copilot(input=5, output=0, cache_read=9)["input"] == 0


# -- into the daemon ----------------------------------------------------------------------------


def test_import_into_the_daemon_then_again_adds_nothing(
    running_daemon: Daemon, agent_home: Path
) -> None:
    placed = install(agent_home / ".copilot")
    first = run_json("copilot")
    assert (first["sent"], first["accepted"], first["duplicates"], first["rejected"]) == (
        9,
        9,
        0,
        0,
    )
    events = running_daemon.journal_events()
    assert len(events) == 9
    gemini = next(e for e in events if e["agent"]["model"] == "gemini-3-pro-preview")
    assert gemini["id"].startswith("cp:")
    assert gemini["source"] == "copilot-cli"
    assert gemini["session_id"] == BUILT.stem
    assert gemini["attrs"] == {
        "imported": True,
        "premium_requests": 1,
        "premium_request_cost": 1,
    }
    assert gemini["tokens"] == {
        "source": "actual",
        "input": 7000,
        "output": 1000,
        "cache_read": 2000,
        "reasoning": 700,
        "total": 10000,
    }

    assert run_json("copilot")["sent"] == 0  # unchanged files are not read again
    again = run_json("copilot", "--rescan")
    assert (again["sent"], again["accepted"], again["duplicates"]) == (9, 0, 9)
    every = run_json()
    assert list(every) == ["copilot"] and every["copilot"]["sent"] == 0
    assert len(running_daemon.journal_events()) == 9

    result = ctl(
        "query",
        "--format",
        "json",
        "select strftime(timestamp, '%Y-%m-%d') as day, model, count(*) as e,"
        " sum(input_tokens) as i, sum(output_tokens) as o, sum(cache_read_tokens) as c,"
        " sum(cache_creation_tokens) as w from api_requests group by all order by all",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    got = {(r.pop("day"), r.pop("model")): r for r in rows}
    assert got == ccusage_rows(placed, "day", "model", restarts=True)


# -- the OpenTelemetry file export ---------------------------------------------------------------

OTEL = FIXTURES / "built_otel-export.jsonl"
OTEL_SESSION = FIXTURES / "built_otel-session-events.jsonl"
SESSION = "5e551011-0a7e-4c1f-9d2b-0123456789ab"  # in both files


def install_otel(base: Path, *, export: bool = True, sessions: bool = True) -> None:
    """The export as ``<base>/otel/copilot-otel.jsonl``, the session's events under its id."""
    if export:
        (base / "otel").mkdir(parents=True, exist_ok=True)
        shutil.copy(OTEL, base / "otel" / "copilot-otel.jsonl")
    if sessions:
        target = base / "session-state" / SESSION / "events.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(OTEL_SESSION, target)


def tokens_of(row: dict[str, Any]) -> tuple[int, ...]:
    return tuple(row[k] for k in ("requests", "input", "output", "cache_read", "cache_creation"))


def test_the_export_by_hand(agent_home: Path) -> None:
    """Each chat span is a request (input less both caches; reasoning inside output);
    the invoke_agent totals, tool spans and metrics are not; the torn last line is
    malformed; the session's first shutdown, whose calls are in the export, is left out."""
    install_otel(agent_home / ".copilot")
    summary = importer.run("copilot", dry_run=True).as_dict()
    assert (summary["files"], summary["malformed"], summary["repeats"]) == (2, 1, 2)
    assert (summary["requests"], summary["tool_results"], summary["tool_errors"]) == (4, 2, 1)
    assert summary["agents"] == 1  # the invoke_agent span
    by_model = summary["by_model"]
    # claude-sonnet-4.5: 20000 in, 15000 of them cache reads and 3000 cache writes
    assert tokens_of(by_model["claude-sonnet-4.5"]) == (1, 2000, 800, 15000, 3000)
    # gpt-5: the span (10000 in, 6000 cached; 500 out, 200 of it reasoning) and the
    # second shutdown, of a process without the export (4000 in, 1000 cached; 100 out)
    assert tokens_of(by_model["gpt-5"]) == (2, 4000 + 3000, 500 + 100, 6000 + 1000, 0)
    assert by_model["gpt-5"]["reasoning"] == 200
    # claude-haiku-4.5, cache writes named with underscores (Copilot CLI 1.0.62)
    assert tokens_of(by_model["claude-haiku-4.5"]) == (1, 21884 - 21881, 80, 0, 21881)
    days = summary["by_day"]
    assert sorted(days) == ["2026-11-20", "2026-11-21"]
    assert days["2026-11-20"]["requests"] == 3 and days["2026-11-21"]["requests"] == 1


def test_a_session_in_both_places_counts_once(agent_home: Path, tmp_path: Path) -> None:
    """The session's per-model totals are the same from its events alone (ccusage's
    rules), and from the events with the export: the export's calls replace the
    shutdown that totals them."""
    install_otel(agent_home / ".copilot")
    both = importer.run("copilot", dry_run=True).as_dict()
    alone_home = tmp_path / "alone"
    install_otel(alone_home, export=False)
    alone = importer.run("copilot", [alone_home], dry_run=True).as_dict()
    assert alone["repeats"] == 0
    placed = [alone_home / "session-state" / SESSION / "events.jsonl"]
    assert view(alone["by_model"]) == ccusage_rows(placed, "model", restarts=True)
    for model in ("claude-sonnet-4.5", "gpt-5"):
        assert tokens_of(both["by_model"][model]) == tokens_of(alone["by_model"][model])
    assert view(both["by_day"])[("2026-11-21",)] == view(alone["by_day"])[("2026-11-21",)]
    # The export alone: its calls, and nothing is left out.
    only = importer.run("copilot", [OTEL], dry_run=True).as_dict()
    assert (only["requests"], only["repeats"]) == (3, 0)


def test_the_exporters_file_and_the_otel_directory_are_found(
    agent_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not importer.found("copilot")
    elsewhere = tmp_path / "exports" / "copilot.jsonl"
    elsewhere.parent.mkdir()
    shutil.copy(OTEL, elsewhere)
    monkeypatch.setenv("COPILOT_OTEL_FILE_EXPORTER_PATH", str(elsewhere))
    assert importer.found("copilot")
    named = run_json("copilot", "--dry-run")
    assert (named["files"], named["requests"]) == (1, 3)
    assert list(run_json("--dry-run")) == ["copilot"]
    monkeypatch.delenv("COPILOT_OTEL_FILE_EXPORTER_PATH")
    install_otel(agent_home / ".copilot", sessions=False)
    assert run_json("copilot", "--dry-run")["requests"] == 3


def post_spans(daemon: Daemon, lines: list[dict[str, Any]]) -> None:
    """Post span lines of the export to ``daemon`` over OTLP/JSON, one request each."""
    import http.client

    host, port = daemon.http_address().rsplit(":", 1)
    token = (daemon.home / "http-token").read_text().strip()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for line in lines:
            conn.request("POST", "/v1/traces", body=otlp_traces(line), headers=headers)
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
    finally:
        conn.close()


def otlp_traces(line: dict[str, Any]) -> bytes:
    """One span line of the export as an OTLP/JSON traces request (the live path)."""

    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, float):
            return {"doubleValue": v}
        if isinstance(v, list):
            return {"arrayValue": {"values": [value(x) for x in v]}}
        return {"stringValue": str(v)}

    def kvs(attrs: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"key": k, "value": value(v)} for k, v in attrs.items()]

    def ns(pair: list[int]) -> str:
        return str(pair[0] * 1_000_000_000 + pair[1])

    span = {
        "traceId": line["traceId"],
        "spanId": line["spanId"],
        "parentSpanId": line["parentSpanId"] or "",
        "name": line["name"],
        "kind": line["kind"] + 1,  # the JavaScript SDK's kind is OTLP's less one
        "startTimeUnixNano": ns(line["startTime"]),
        "endTimeUnixNano": ns(line["endTime"]),
        "attributes": kvs(line["attributes"]),
    }
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": kvs(line["resource"]["attributes"])},
                "scopeSpans": [{"scope": {"name": "github.copilot"}, "spans": [span]}],
            }
        ]
    }
    return json.dumps(request).encode()


def test_the_export_into_the_daemon_has_the_otlp_paths_ids(
    running_daemon: Daemon, agent_home: Path
) -> None:
    """A chat span exported live over OTLP and then imported from the file is one event;
    a second import adds nothing."""
    lines = [json.loads(x) for x in OTEL.read_text().splitlines()[:-1]]
    chat = next(x for x in lines if x.get("name") == "chat claude-sonnet-4.5")
    post_spans(running_daemon, [chat])
    live = [e for e in running_daemon.journal_events() if e["type"] == "api_request"]
    assert len(live) == 1
    install_otel(agent_home / ".copilot")
    dry = importer.run("copilot", dry_run=True)
    first = run_json("copilot")
    # the live chat span's two events (its span event and its api_request)
    assert first["rejected"] == 0 and first["duplicates"] == 2
    events = running_daemon.journal_events()
    # a dry run says what an import sends, span events included
    assert (dry.built(), dry.spans) == (first["sent"], first["spans"])
    assert dry.spans == len([e for e in events if e["type"] == "span"]) > 0
    requests = [e for e in events if e["type"] == "api_request"]
    assert len(requests) == 4
    assert live[0]["id"] in {e["id"] for e in requests}
    by_model: dict[str, int] = {}
    for event in requests:
        model = event["agent"]["model"]
        by_model[model] = by_model.get(model, 0) + event["tokens"]["total"]
    assert by_model == {
        "claude-sonnet-4.5": 20000 + 800,
        "gpt-5": (10000 + 500) + (4000 + 100),
        "claude-haiku-4.5": 21884 + 80,
    }
    again = run_json("copilot", "--rescan")
    assert again["accepted"] == 0 and again["duplicates"] == again["sent"] > 0
    result = ctl("query", "--format", "json", "SELECT count(*) AS n FROM api_requests")
    assert json.loads(result.stdout) == [{"n": 4}]


def test_a_session_sent_live_over_otlp_then_imported_counts_once(
    running_daemon: Daemon, agent_home: Path
) -> None:
    """Copilot CLI exporting over OTLP, live, and its session files imported later: the
    shutdown that totals the calls the store already holds is left out, as when the
    export is a file (before, those calls were counted again from the shutdown)."""
    lines = [json.loads(x) for x in OTEL.read_text().splitlines()[:-1]]
    # (the model calls: what the live export is counted by)
    post_spans(running_daemon, [x for x in lines if str(x.get("name")).startswith("chat ")])
    # Another agent's request with the session's id in the second process's time covers
    # nothing: only Copilot's spans do.
    other = {"type": "api_request", "source": "claude-code", "session_id": SESSION,
             "ts": "2026-11-21T09:00:00.000Z", "agent": {"model": "claude-sonnet-4-5"},
             "tokens": {"source": "actual", "input": 1, "output": 1}}  # fmt: skip
    assert ctl("send", "-", input=json.dumps(other).encode()).returncode == 0
    install_otel(agent_home / ".copilot", export=False)  # the session's events alone
    ctl("flush")
    first = run_json("copilot")
    assert first["repeats"] == 2  # the first shutdown's two models: their calls came live
    result = ctl(
        "query",
        "--format",
        "json",
        "SELECT model, count(*) AS requests, sum(input_tokens + output_tokens + "
        "cache_read_tokens + cache_creation_tokens) AS tokens FROM api_requests "
        "GROUP BY model ORDER BY model",
    )
    rows = {r["model"]: (r["requests"], r["tokens"]) for r in json.loads(result.stdout)}
    assert rows.pop("claude-sonnet-4-5") == (1, 2)  # (the other agent's)
    # the same as from the export file and the session's events (above): the live chat
    # spans, and the second process's shutdown (its process had no exporter)
    assert rows == {
        "claude-haiku-4.5": (1, 21884 + 80),
        "claude-sonnet-4.5": (1, 20000 + 800),
        "gpt-5": (2, (10000 + 500) + (4000 + 100)),
    }
    again = run_json("copilot", "--rescan")
    assert again["accepted"] == 0
