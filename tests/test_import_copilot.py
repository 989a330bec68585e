"""`telemetryctl import copilot`: GitHub Copilot CLI session events, against ccusage's rules.

The totals are checked against ccusage's session-state rules computed here,
independently, from the raw lines (ryoppippi/ccusage
`rust/crates/ccusage/src/adapter/copilot/parser.rs` and `loader.rs` at 104e23cb, PR
#1174). ccusage reports a Gemini model's reasoning apart from its output; telemetryd
counts it as output: the comparison adds it back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, ctl
from telemetryd.adapters import usage
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


def ccusage_entries(path: Path) -> list[dict[str, Any]]:
    """parser.rs `parse_session_state_file` (rows with tokens; the session is the directory)."""
    session = path.parent.name
    entries: dict[str, dict[str, Any]] = {}  # loader.rs: a HashMap by dedup key
    for line in path.read_bytes().split(b"\n"):
        if b"session.shutdown" not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
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
        for model, u in usages.items():
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


def ccusage_rows(paths: list[Path], *keys: str) -> dict[tuple[str, ...], dict[str, int]]:
    """ccusage's token totals by ``keys`` ("day", "model"), its output plus Gemini's reasoning."""
    rows: dict[tuple[str, ...], dict[str, int]] = {}
    for path in paths:
        for entry in ccusage_entries(path):
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
    placed = install(agent_home / ".copilot")
    summary = importer.run("copilot", dry_run=True)
    assert summary.files == 3
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


def test_resumed_session_shutdowns_are_added_and_copies_count_once(tmp_path: Path) -> None:
    copy = tmp_path / "copy" / "events.jsonl"
    copy.parent.mkdir()
    shutil.copy(TOKENSTATS, copy)
    twice = tmp_path / "tokenstats_copilot-events" / "events.jsonl"
    twice.parent.mkdir()
    shutil.copy(TOKENSTATS, twice)
    summary = importer.run("copilot", [twice, twice.parent], dry_run=True)
    gpt = summary.by_model["gpt-5.6"]
    assert (gpt.requests, gpt.input, gpt.output, gpt.reasoning) == (2, 7 + 14, 13, 9)
    # Another session directory is another session (ccusage keys by the directory too).
    both = importer.run("copilot", [twice, copy], dry_run=True)
    assert both.requests == 2 * summary.requests


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
    assert got == ccusage_rows(placed, "day", "model")
