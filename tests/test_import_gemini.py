"""`telemetryctl import gemini`: Gemini CLI's chat recordings, against ccusage's rules.

The totals are checked against ccusage's Gemini rules computed here, independently,
from the raw files (ryoppippi/ccusage `rust/crates/ccusage/src/adapter/gemini/`
`parser.rs` and `paths.rs` at 5816e640). Where the two differ by design (ccusage's
output leaves out thoughts, telemetryd's includes them), both views are tested.
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

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
NEW_HEAD = FIXTURES / "vibecodingtracker_session_jsonl.lines-1-7.jsonl"
NEW_TAIL = FIXTURES / "vibecodingtracker_session_jsonl.lines-9-28.jsonl"
LEGACY = FIXTURES / "vibecodingtracker_session_legacy-json.json"
SAMPLES = [NEW_HEAD, NEW_TAIL, LEGACY]


def run_json(*args: str) -> dict[str, Any]:
    result = ctl("import", *args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def chats(root: Path, project: str = "9da8b3df") -> Path:
    """``<root>/<project hash>/chats``, Gemini CLI's layout under ~/.gemini/tmp."""
    path = root / project / "chats"
    path.mkdir(parents=True, exist_ok=True)
    return path


def install_samples(root: Path) -> Path:
    """The samples in Gemini CLI's layout under ``root`` (a ~/.gemini/tmp)."""
    target = chats(root)
    for sample in SAMPLES:
        shutil.copy(sample, target / sample.name)
    return target


# -- ccusage's rules, written out apart from the importer's code -------------------------------


def _n(raw: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = raw.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return max(0, int(value))
    return None


def ccusage_entry(record: dict[str, Any], model: str | None) -> dict[str, Any] | None:
    """parser.rs `parse_direct_event` + `build_event` + `event_to_loaded` for one message."""
    raw = record.get("tokens")
    if not isinstance(raw, dict) or not model:
        return None
    inp = _n(raw, "input", "prompt", "input_tokens", "prompt_tokens") or 0
    out = _n(raw, "output", "candidates", "output_tokens", "candidates_tokens") or 0
    cached = _n(raw, "cached", "cached_tokens") or 0
    thoughts = _n(raw, "thoughts", "reasoning", "thoughts_tokens", "reasoning_tokens") or 0
    tool = _n(raw, "tool", "tool_tokens") or 0
    given_total = _n(raw, "total", "total_tokens")
    # normalize_session_input: cached is taken out of input only when the total says so.
    inclusive = inp + out + thoughts + tool
    if cached > 0 and given_total == inclusive and given_total != inclusive + cached:
        inp -= min(inp, cached)
    input_tokens = inp + tool
    total = given_total if given_total is not None else input_tokens + out + cached + thoughts
    # apply_total_token_fallback: tokens the parts miss go to output (if 0) or "extra".
    extra = thoughts
    missing = max(0, total - (input_tokens + out + cached + extra))
    if missing:
        if out == 0:
            out = missing
        else:
            extra += missing
    if input_tokens == 0 and out == 0 and cached == 0 and extra == 0:
        return None
    extra = max(0, total - (input_tokens + out + cached))  # event_to_loaded
    return {
        "day": record["timestamp"][:10],  # every sample record has its time (UTC)
        "model": model,
        "inputTokens": input_tokens,
        "outputTokens": out,
        "cacheReadTokens": cached,
        "extraTokens": extra,  # thoughts: in totalTokens and priced as output
        "totalTokens": input_tokens + out + cached + extra,
    }


def ccusage_entries(path: Path) -> list[dict[str, Any]]:
    """parser.rs `parse_jsonl_file` / `parse_json_file` (chat records; no `stats`)."""
    if path.suffix == ".json":
        document = json.loads(path.read_text())
        found = []
        for message in document.get("messages") or []:
            if isinstance(message, dict) and message.get("type") == "gemini":
                entry = ccusage_entry(message, message.get("model"))  # no model hint here
                if entry is not None:
                    found.append(entry)
        return found
    model = None
    entries: list[dict[str, Any]] = []
    by_id: dict[str, int] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("model"), str) and record["model"].strip():
            model = record["model"]
        if record.get("type") != "gemini":
            continue
        entry = ccusage_entry(record, record.get("model") or model)
        if entry is None:
            continue
        message_id = record.get("id")
        if isinstance(message_id, str) and message_id in by_id:
            entries[by_id[message_id]] = entry  # a re-appended message replaces the first
        else:
            if isinstance(message_id, str):
                by_id[message_id] = len(entries)
            entries.append(entry)
    return entries


def ccusage_rows(paths: list[Path], key: str) -> dict[str, dict[str, int]]:
    """ccusage's daily (key "day") or per-model breakdown (key "model") token totals."""
    rows: dict[str, dict[str, int]] = {}
    for path in paths:
        for entry in ccusage_entries(path):
            row = rows.setdefault(entry[key], {"entries": 0})
            row["entries"] += 1
            for name in ("inputTokens", "outputTokens", "cacheReadTokens", "extraTokens"):
                row[name] = row.get(name, 0) + entry[name]
            row["totalTokens"] = row.get("totalTokens", 0) + entry["totalTokens"]
    return rows


def ccusage_view(rows: dict[str, Any]) -> dict[str, dict[str, int]]:
    """telemetryd's rows as ccusage reports them: output without the thoughts."""
    return {
        key: {
            "entries": row["requests"],
            "inputTokens": row["input"],
            "outputTokens": row["output"] - row["reasoning"],
            "cacheReadTokens": row["cache_read"],
            "extraTokens": row["reasoning"],
            "totalTokens": row["total"],
        }
        for key, row in rows.items()
    }


# -- the samples ---------------------------------------------------------------------------------


def test_samples_per_model_and_day_equal_ccusage(agent_home: Path) -> None:
    summary = run_json("gemini", "--dry-run", *map(str, SAMPLES))
    assert (summary["files"], summary["malformed"], summary["sent"]) == (3, 0, 0)
    # 5 + 1 responses in the JSONL files (4 of them written twice), 3 in the legacy file.
    assert (summary["requests"], summary["repeats"]) == (9, 4)
    assert ccusage_view(summary["by_model"]) == ccusage_rows(SAMPLES, "model")
    assert ccusage_view(summary["by_day"]) == ccusage_rows(SAMPLES, "day")


def test_samples_by_hand(agent_home: Path) -> None:
    summary = importer.run("gemini", SAMPLES, dry_run=True).as_dict()
    # The one gemini-3.1-pro-preview response (twice in the file): no cache, thoughts 452.
    assert summary["by_model"]["gemini-3.1-pro-preview"] == {
        "requests": 1,
        "input": 40238,
        "output": 266 + 452,
        "cache_read": 0,
        "cache_creation": 0,
        "reasoning": 452,
        "total": 40956,
        "cost_reported_usd": 0.0,
        # Google's published Gemini 3.1 Pro Preview prices (ai.google.dev/gemini-api/docs/
        # pricing), prompts up to 200k: $2 input, $12 output (thoughts included) per million
        "cost_computed_usd": pytest.approx((40238 * 2 + (266 + 452) * 12) / 1e6),
        "unpriced": 0,
    }
    legacy = summary["by_model"]["gemini-3.1-pro-preview-customtools"]
    assert legacy["requests"] == 3
    assert legacy["input"] == (11894 - 7900) + (20960 - 11834) + (43494 - 20092)
    assert legacy["cache_read"] == 7900 + 11834 + 20092
    assert legacy["output"] == 68 + 344 + 8960 + 10849 + 297 + 423
    assert legacy["reasoning"] == 344 + 10849 + 423
    assert legacy["total"] == 12306 + 40769 + 44214  # Gemini CLI's own totals
    flash = summary["by_model"]["gemini-3-flash-preview"]
    assert flash["requests"] == 5
    assert flash["cache_read"] == 0 + 8156 + 0 + 32637 + 8158
    assert flash["total"] == 14397 + 29813 + 39728 + 41426 + 40559
    assert sorted(summary["by_day"]) == ["2026-03-27", "2026-04-23"]


def test_one_recording_split_in_two_is_one_session(agent_home: Path, tmp_path: Path) -> None:
    # The two excerpts of one recording joined again: the header names the session.
    target = chats(tmp_path / "data") / "session-0ab84937.jsonl"
    target.write_bytes(NEW_HEAD.read_bytes() + NEW_TAIL.read_bytes())
    events = importer.Importer("gemini")
    events.read_file(target)
    events.summary.price(events.prices, events.tier_starts)  # (as run does once it has read)
    split = importer.run("gemini", [NEW_HEAD, NEW_TAIL], dry_run=True)
    assert events.summary.by_model == split.by_model
    assert ccusage_view(events.summary.as_dict()["by_model"]) == ccusage_rows([target], "model")


# -- records written again ----------------------------------------------------------------------


def message(mid: str, ts: str, **tokens: int) -> dict[str, Any]:
    counts = {"input": 0, "output": 0, "cached": 0, "thoughts": 0, "tool": 0, **tokens}
    counts["total"] = counts["input"] + counts["output"] + counts["thoughts"] + counts["tool"]
    return {"id": mid, "timestamp": ts, "type": "gemini", "content": "", "tokens": counts}


def recording(path: Path, session: str, lines: list[Any]) -> Path:
    header = {"sessionId": session, "projectHash": "p", "startTime": "2026-05-01T00:00:00Z"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in [header, *lines])
    )
    return path


def test_a_message_written_again_counts_once_with_its_complete_copy(tmp_path: Path) -> None:
    first = {**message("m1", "2026-05-01T10:00:00Z", input=100, output=5), "model": "g-1"}
    complete = {**first, "toolCalls": [{"id": "t1", "name": "read_file"}]}
    grown = {**message("m2", "2026-05-01T10:01:00Z", input=200, output=1), "model": "g-1"}
    grown_more = {**grown, "tokens": {**grown["tokens"], "output": 30, "total": 230}}
    path = recording(
        tmp_path / "chats" / "s.jsonl",
        "s-1",
        [first, {"$set": {"lastUpdated": "x"}}, complete, grown_more, grown],
    )
    summary = importer.run("gemini", [path], dry_run=True)
    assert (summary.requests, summary.repeats) == (2, 2)
    # m2's larger copy is kept though the smaller one came last.
    assert summary.by_model["g-1"].output == 5 + 30
    assert summary.by_model["g-1"].input == 300


def test_the_same_message_in_two_files_counts_once(tmp_path: Path) -> None:
    # A session in both formats (a copy, or a recording converted): one event per message.
    # ccusage counts such a message once per file.
    line = {**message("m1", "2026-05-01T10:00:00Z", input=100, output=5), "model": "g-1"}
    jsonl = recording(tmp_path / "chats" / "session-a.jsonl", "s-1", [line])
    legacy = tmp_path / "chats" / "session-a.json"
    legacy.write_text(json.dumps({"sessionId": "s-1", "messages": [line]}))
    summary = importer.run("gemini", [tmp_path], dry_run=True)
    assert (summary.files, summary.requests, summary.repeats) == (2, 1, 1)
    assert ccusage_rows([jsonl, legacy], "model")["g-1"]["entries"] == 2


def test_model_fallbacks_and_zero_records(tmp_path: Path) -> None:
    path = recording(
        tmp_path / "s.jsonl",
        "s-1",
        [
            message("m0", "2026-05-01T09:00:00Z", input=7, output=1),  # no model yet
            {"type": "info", "model": "g-2", "id": "i"},  # any record names the model
            message("m1", "2026-05-01T10:00:00Z", input=10, output=2),
            message("m2", "2026-05-01T10:00:01Z"),  # all zero: not a request
            {**message("m3", "2026-05-01T10:00:02Z", output=1), "model": "g-3"},
        ],
    )
    summary = importer.run("gemini", [path], dry_run=True)
    assert {m: t.requests for m, t in summary.by_model.items()} == {
        "unknown": 1,  # ccusage drops it: it has no model to report it under
        "g-2": 1,
        "g-3": 1,
    }
    assert ccusage_rows([path], "model") == {
        k: v for k, v in ccusage_view(summary.as_dict()["by_model"]).items() if k != "unknown"
    }


# -- locations ---------------------------------------------------------------------------------


def test_default_location_and_import_with_no_name(agent_home: Path) -> None:
    install_samples(agent_home / ".gemini" / "tmp")
    (agent_home / ".gemini" / "tmp" / "9da8b3df" / "logs.json").write_text("[]")
    (agent_home / ".gemini" / "settings.json").write_text("{}")  # outside tmp: not read
    summary = run_json("gemini", "--dry-run")
    assert (summary["files"], summary["requests"]) == (4, 9)
    every = run_json("--dry-run")
    assert list(every) == ["gemini"]  # no Claude Code or Codex directory here
    assert every["gemini"]["by_model"] == summary["by_model"]


def test_gemini_data_dir_replaces_the_default(
    agent_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_samples(agent_home / ".gemini" / "tmp")  # not read once the variable is set
    first = tmp_path / "a"
    second = tmp_path / "b"
    shutil.copy(LEGACY, chats(first) / LEGACY.name)
    shutil.copy(NEW_TAIL, chats(second) / NEW_TAIL.name)
    monkeypatch.setenv("GEMINI_DATA_DIR", f" {first} ,{second},,{tmp_path / 'missing'}")
    assert importer.gemini_roots() == [first, second, tmp_path / "missing"]
    summary = run_json("gemini", "--dry-run")
    assert summary["files"] == 2
    assert sorted(summary["by_model"]) == [
        "gemini-3-flash-preview",
        "gemini-3.1-pro-preview",
        "gemini-3.1-pro-preview-customtools",
    ]
    assert ccusage_view(summary["by_model"]) == ccusage_rows([LEGACY, NEW_TAIL], "model")


def test_options_before_the_agent_are_refused(agent_home: Path) -> None:
    result = ctl("import", "--dry-run", "gemini")
    assert result.returncode == 2
    assert b"after the agent" in result.stderr


# -- malformed input -------------------------------------------------------------------------


def test_malformed_lines_and_files_are_skipped_and_counted(tmp_path: Path) -> None:
    root = chats(tmp_path / "data")
    lines = NEW_TAIL.read_text().splitlines(keepends=True)
    (root / "s.jsonl").write_text("".join([*lines[:3], '{"id": "x", "tok\n', *lines[3:]]))
    (root / "broken.json").write_text('{"sessionId": "s", "messages": [')
    (root / "other.json").write_text('["not", "a", "session"]')
    summary = importer.run("gemini", [tmp_path / "data"], dry_run=True)
    assert (summary.files, summary.malformed) == (3, 2)
    assert summary.by_model == importer.run("gemini", [NEW_TAIL], dry_run=True).by_model


# -- the shared token rule -------------------------------------------------------------------


def test_usage_rule_is_shared_with_the_otlp_mapper() -> None:
    from telemetryd.adapters.otel import gemini as otel_gemini

    record = {"input": 29082, "output": 89, "cached": 8156, "thoughts": 642, "tool": 3}
    record["total"] = 29082 + 89 + 642 + 3
    otlp = otel_gemini.tokens(
        {
            "input_token_count": 29082,
            "output_token_count": 89,
            "cached_content_token_count": 8156,
            "thoughts_token_count": 642,
            "tool_token_count": 3,
            "total_token_count": record["total"],
        }
    )
    expected = {
        "source": "actual",
        "input": 29082 - 8156 + 3,
        "output": 89 + 642,
        "cache_read": 8156,
        "reasoning": 642,
        "total": record["total"],
    }
    assert usage.tokens_from_usage(record) == otlp == expected


def test_usage_rule_edge_cases() -> None:
    # A total that shows the cached tokens outside the prompt: input is kept (ccusage too).
    apart = usage.gemini(input=100, output=10, cached=50, thoughts=5, tool=0, total=165)
    assert (apart["input"], apart["cache_read"], apart["output"]) == (100, 50, 15)
    # A total larger than its parts: the rest is output (ccusage prices it as output).
    more = usage.gemini(input=100, output=10, cached=0, thoughts=5, total=120)
    assert (more["input"], more["output"], more["reasoning"], more["total"]) == (100, 20, 5, 120)
    # No counts at all.
    assert usage.gemini(input=None, output=None) == {"source": "unknown"}


# -- into the daemon ----------------------------------------------------------------------------


def test_import_into_the_daemon_then_again_adds_nothing(
    running_daemon: Daemon, agent_home: Path
) -> None:
    install_samples(agent_home / ".gemini" / "tmp")
    first = run_json("gemini")
    assert (first["sent"], first["accepted"], first["duplicates"], first["rejected"]) == (
        9,
        9,
        0,
        0,
    )
    events = running_daemon.journal_events()
    assert len(events) == 9
    pro = next(e for e in events if e["agent"]["model"] == "gemini-3.1-pro-preview")
    assert pro == {
        "type": "api_request",
        "v": 1,
        "id": pro["id"],
        "ts": "2026-04-23T12:56:02.441000Z",
        "source": "gemini-cli",
        "session_id": NEW_TAIL.stem,  # the excerpt has no header line: its file name
        "agent": {"model": "gemini-3.1-pro-preview", "provider": "google"},
        "attrs": {"imported": True},
        "received_at": pro["received_at"],
        "tokens": {
            "source": "actual",
            "input": 40238,
            "output": 718,
            "reasoning": 452,
            "total": 40956,
        },
        # (no cost: the import sends what the files hold, and the store prices it)
    }
    assert pro["id"].startswith("gm:")
    # $2 input, $12 output per million (Google's published prices, as above)
    priced = ctl("query", "--format", "json",
                 f"select cost_usd, cost_source from events where id = '{pro['id']}'")  # fmt: skip
    assert priced.returncode == 0, priced.stderr
    assert json.loads(priced.stdout) == [
        {"cost_usd": pytest.approx((40238 * 2 + 718 * 12) / 1e6), "cost_source": "computed"}
    ]
    legacy = [e for e in events if e["session_id"] == "8a20078e-2d5e-4f81-a640-9b879bbb7e6d"]
    assert len(legacy) == 3

    assert run_json("gemini")["sent"] == 0  # unchanged files are not read again
    again = run_json("gemini", "--rescan")
    assert (again["sent"], again["accepted"], again["duplicates"]) == (9, 0, 9)
    every = run_json()  # `import` with no name: gemini found, nothing new
    assert list(every) == ["gemini"] and every["gemini"]["sent"] == 0
    assert len(running_daemon.journal_events()) == 9

    # Per day and model, as the acceptance query asks, against ccusage's rules.
    result = ctl(
        "query",
        "--format",
        "json",
        "select strftime(timestamp, '%Y-%m-%d') as day, model, count(*) as entries,"
        " sum(input_tokens) as i, sum(output_tokens) as o, sum(cache_read_tokens) as c"
        " from api_requests group by all order by all",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    expected: dict[tuple[str, str], dict[str, int]] = {}
    for path in SAMPLES:
        for entry in ccusage_entries(path):
            row = expected.setdefault((entry["day"], entry["model"]), dict.fromkeys("eioc", 0))
            row["e"] += 1
            row["i"] += entry["inputTokens"]
            row["o"] += entry["outputTokens"] + entry["extraTokens"]  # thoughts are output
            row["c"] += entry["cacheReadTokens"]
    assert {
        (r["day"], r["model"]): {"e": r["entries"], "i": r["i"], "o": r["o"], "c": r["c"]}
        for r in rows
    } == expected
