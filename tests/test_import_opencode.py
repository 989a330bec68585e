"""`telemetryctl import opencode`: OpenCode's messages, against ccusage's rules.

The totals are checked against ccusage's OpenCode rules computed here, independently,
from the raw database rows and files (ryoppippi/ccusage
`rust/crates/ccusage/src/adapter/opencode/parser.rs`, `loader.rs` and `utils.rs`
`apply_total_token_fallback`, at 5816e640). ccusage's `outputTokens` leave out the
extra tokens a `total` holds beyond the parts (its `totalTokens` keep them) and a
message without `total` loses its reasoning; telemetryd counts both as output: the
comparison adds them back (docs/counting.md, R16).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import Daemon, ctl
from telemetryd.adapters import usage
from telemetryd.client import agent_files, importer

pytestmark = pytest.mark.usefixtures("agent_home")

FIXTURES = Path(__file__).parent / "fixtures" / "opencode"
DATADIR = FIXTURES / "datadir"
ROWS = FIXTURES / "db_rows.jsonl"


def create_database(path: Path, rows: list[dict[str, Any]], *, wal: bool = False) -> None:
    """OpenCode's `message` table (drizzle `MessageTable`: id, session_id, time_created,
    time_updated, data as JSON text) holding ``rows``."""
    db = sqlite3.connect(path)
    if wal:
        db.execute("pragma journal_mode=wal")
    db.execute(
        "create table if not exists message (id text primary key, session_id text not null,"
        " time_created integer not null, time_updated integer not null, data text not null)"
    )
    insert_rows(db, rows)
    db.close()


def insert_rows(db: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
    db.executemany(
        "insert into message values (?, ?, ?, ?, ?)",
        [
            (r["id"], r["session_id"], r["time_created"], r["time_updated"], json.dumps(r["data"]))
            for r in rows
        ],
    )
    db.commit()


def fixture_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in ROWS.read_text().splitlines()]


def install(target: Path, *, database: str = "opencode.db") -> Path:
    """The fixture data directory at ``target``, with its database built from the rows."""
    shutil.copytree(DATADIR, target)
    create_database(target / database, fixture_rows())
    return target


def run_json(*args: str) -> dict[str, Any]:
    result = ctl("import", *args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


# -- ccusage's rules, written out apart from the importer's code -------------------------------


def _u64(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _name(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def ccusage_entry(value: Any, row_id: str | None, row_session: str | None) -> dict[str, Any] | None:
    """parser.rs `message_value_to_entry`, plus the reasoning telemetryd adds (see above)."""
    if not isinstance(value, dict) or "tokens" not in value:
        return None
    tokens = value["tokens"] if isinstance(value["tokens"], dict) else {}
    cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
    i, o = _u64(tokens.get("input")), _u64(tokens.get("output"))
    w, c = _u64(cache.get("write")), _u64(cache.get("read"))
    missing = max(0, _u64(tokens.get("total")) - (i + o + w + c))  # apply_total_token_fallback
    extra = 0
    if missing:
        if o == 0:
            o = missing
        else:
            extra = missing
    if not (i or o or w or c or extra):
        return None
    model, provider = _name(value.get("modelID")), _name(value.get("providerID"))
    if model is None or provider is None:
        return None
    created = (value.get("time") or {}).get("created")
    millis = created if isinstance(created, int) and not isinstance(created, bool) else 0
    dropped_reasoning = max(0, _u64(tokens.get("reasoning")) - missing)
    return {
        "id": row_id or _name(value.get("id")),
        "day": datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d"),
        "model": model,
        "inputTokens": i,
        "outputTokens": o,
        "cacheCreationTokens": w,
        "cacheReadTokens": c,
        "extraTotalTokens": extra,
        "droppedReasoning": dropped_reasoning,
    }


def ccusage_entries(datadir: Path) -> list[dict[str, Any]]:
    """loader.rs `load_entries_from_directory`: the database's rows, then the message
    files, each message id once."""
    found, seen = [], set()
    database = datadir / "opencode.db"
    if not database.is_file():
        channels = sorted(datadir.glob("opencode-*.db"))
        database = channels[0] if channels else database
    candidates: list[tuple[Any, str | None, str | None]] = []
    if database.is_file():
        db = sqlite3.connect(database)
        for row_id, session, data in db.execute("select id, session_id, data from message"):
            try:
                candidates.append((json.loads(data), row_id, session))
            except ValueError:
                continue
        db.close()
    for path in sorted((datadir / "storage" / "message").rglob("*.json")):
        try:
            candidates.append((json.loads(path.read_text()), None, None))
        except ValueError:
            continue
    for value, row_id, session in candidates:
        entry = ccusage_entry(value, row_id, session)
        if entry is None:
            continue
        if entry["id"]:
            if entry["id"] in seen:
                continue
            seen.add(entry["id"])
        found.append(entry)
    return found


def ccusage_rows(entries: list[dict[str, Any]], *keys: str) -> dict[tuple[str, ...], Any]:
    """ccusage's token totals by ``keys`` ("day", "model"); output with the extra tokens
    and the reasoning ccusage leaves out."""
    rows: dict[tuple[str, ...], dict[str, int]] = {}
    for e in entries:
        row = rows.setdefault(tuple(e[k] for k in keys), dict.fromkeys("eiocw", 0))
        row["e"] += 1
        row["i"] += e["inputTokens"]
        row["o"] += e["outputTokens"] + e["extraTotalTokens"] + e["droppedReasoning"]
        row["c"] += e["cacheReadTokens"]
        row["w"] += e["cacheCreationTokens"]
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


# -- the fixtures --------------------------------------------------------------------------------


def test_fixtures_per_model_and_day_equal_ccusage(agent_home: Path) -> None:
    datadir = install(agent_home / ".local" / "share" / "opencode")
    summary = importer.run("opencode", dry_run=True).as_dict()
    entries = ccusage_entries(datadir)
    assert len(entries) == 8
    assert view(summary["by_model"]) == ccusage_rows(entries, "model")
    assert view(summary["by_day"]) == ccusage_rows(entries, "day")


def test_fixtures_by_hand(tmp_path: Path) -> None:
    summary = importer.run("opencode", [install(tmp_path / "oc")], dry_run=True).as_dict()
    assert (summary["files"], summary["malformed"], summary["repeats"]) == (9, 1, 1)
    assert summary["requests"] == 8  # user, aborted, no provider, torn: not requests
    # The database's row wins over the older file of the same message.
    opus = summary["by_model"]["claude-opus-4-5"]
    assert (opus["input"], opus["output"], opus["cost_reported_usd"]) == (40, 1200, 0.0528)
    # A reported cost is kept; a cost of 0 (a subscription) is computed from the tokens.
    sonnet = summary["by_model"]["claude-sonnet-4-20250514"]
    assert sonnet["cost_reported_usd"] == pytest.approx(0.0214425 + 0.00913)
    copilot = summary["by_model"]["claude-sonnet-4.5"]
    assert (copilot["cost_reported_usd"], copilot["cost_computed_usd"] > 0) == (0, True)
    # Reasoning: in `total` (current versions) or on its own (older files), output.
    assert (copilot["output"], copilot["reasoning"], copilot["total"]) == (1300, 500, 31650)
    gpt = summary["by_model"]["gpt-5"]
    assert (gpt["output"], gpt["reasoning"]) == (510 + 960, 960)
    codex = summary["by_model"]["gpt-5.1-codex"]  # output 0, the total's rest is the reasoning
    assert (codex["output"], codex["reasoning"]) == (216, 216)
    glm = summary["by_model"]["glm-4.6"]  # a total alone is output
    assert (glm["input"], glm["output"], glm["unpriced"]) == (0, 5432, 1)
    assert "gemini-3-pro-preview" in summary["by_model"]  # the model id, trimmed
    assert sorted(summary["by_day"]) == ["2025-07-08", "2025-12-02", "2025-12-03"]


def test_token_rule() -> None:
    assert usage.parts_and_total(input=10, output=5, cache_read=7, reasoning=3, total=25) == {
        "source": "actual",
        "input": 10,
        "output": 8,
        "cache_read": 7,
        "reasoning": 3,
        "total": 25,
    }
    older = usage.parts_and_total(input=10, output=5, reasoning=3)  # no total
    assert (older["output"], older["total"]) == (8, 18)
    only = usage.parts_and_total(input=0, output=0, total=99)
    assert (only["output"], "reasoning" in only) == (99, False)
    smaller = usage.parts_and_total(input=10, output=5, total=12)  # a total below the parts
    assert (smaller["output"], smaller["total"]) == (5, 15)


# -- locations ---------------------------------------------------------------------------------


def test_default_locations_override_and_channel_database(
    agent_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(agent_home / ".local" / "share" / "opencode")
    summary = run_json("opencode", "--dry-run")
    assert summary["requests"] == 8
    every = run_json("--dry-run")
    assert list(every) == ["opencode"]
    assert every["opencode"]["by_model"] == summary["by_model"]

    # OpenCode's own location under XDG_DATA_HOME is read too (each message once).
    xdg = tmp_path / "xdg"
    beta = xdg / "opencode"
    beta.mkdir(parents=True)
    rows = [dict(r, id=r["id"] + "Beta") for r in fixture_rows()[:1]]
    create_database(beta / "opencode-beta.db", rows)
    create_database(beta / "opencode-nightly.db", [dict(rows[0], id="msg_notread")])
    assert agent_files.opencode_database(beta) == beta / "opencode-beta.db"
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    both = run_json("opencode", "--dry-run")
    assert both["requests"] == 9
    assert both["by_model"]["claude-opus-4-5"]["requests"] == 2

    # OPENCODE_DATA_DIR replaces the defaults, comma-separated.
    monkeypatch.setenv("OPENCODE_DATA_DIR", f" {beta} ,{tmp_path / 'missing'}")
    assert importer.roots("opencode") == [beta, tmp_path / "missing"]
    assert run_json("opencode", "--dry-run")["requests"] == 1
    monkeypatch.setenv("OPENCODE_DATA_DIR", str(tmp_path / "missing"))
    assert not importer.found("opencode")
    assert run_json("opencode", "--dry-run")["requests"] == 0


def test_not_a_database_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    datadir = tmp_path / "oc"
    (datadir / "storage" / "message" / "s").mkdir(parents=True)
    shutil.copy(
        DATADIR / "storage" / "message" / "ses_4a2e9d117ffeLegacyTwo" / "msg_b5f1a0b1f006Late.json",
        datadir / "storage" / "message" / "s" / "m.json",
    )
    (datadir / "opencode.db").write_bytes(b"this is not sqlite\n" * 10)
    summary = importer.run("opencode", [datadir], dry_run=True)
    assert summary.requests == 1  # the good file is still read
    assert len(summary.rejections) == 1 and "opencode.db" in summary.rejections[0]


# -- into the daemon ----------------------------------------------------------------------------


def test_a_database_that_cannot_be_read_is_read_again_next_time(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    """A database that could not be read (not one, locked past the timeout) is a problem
    and is not recorded as imported: the next import tries it again (it was skipped as
    unchanged before, its rows left out until it changed)."""
    datadir = tmp_path / "oc"
    datadir.mkdir()
    database = datadir / "opencode.db"
    database.write_bytes(b"this is not sqlite\n" * 10)
    for _ in range(2):
        result = ctl("import", "opencode", str(datadir), "--json")
        summary = json.loads(result.stdout)
        assert summary["files"] == 1 and summary["files_unchanged"] == 0, summary
        assert len(summary["rejections"]) == 1 and "opencode.db" in summary["rejections"][0]


def test_import_into_the_daemon_then_again_adds_nothing(
    running_daemon: Daemon, agent_home: Path
) -> None:
    datadir = agent_home / ".local" / "share" / "opencode"
    shutil.copytree(DATADIR, datadir)
    writer = sqlite3.connect(datadir / "opencode.db")  # kept open: new rows stay in the WAL
    writer.execute("pragma journal_mode=wal")
    writer.execute(
        "create table message (id text primary key, session_id text not null,"
        " time_created integer not null, time_updated integer not null, data text not null)"
    )
    rows = fixture_rows()
    insert_rows(writer, rows[:-1])
    try:
        first = run_json("opencode")
        assert (first["sent"], first["accepted"], first["duplicates"], first["rejected"]) == (
            7,
            7,
            0,
            0,
        )
        events = running_daemon.journal_events()
        opus = next(e for e in events if e["agent"]["model"] == "claude-opus-4-5")
        assert opus["id"] == "oc:" + opus["id"][3:] and len(opus["id"]) == 35
        assert (opus["source"], opus["session_id"]) == ("opencode", "ses_4c77aa017ffeCurrent")
        assert opus["agent"]["provider"] == "anthropic"
        assert (opus["cost_usd"], opus["cost_source"]) == (0.0528, "reported")
        assert opus["attrs"] == {"imported": True, "cwd": "/home/dev/webapp"}
        copilot = next(e for e in events if e["agent"]["model"] == "claude-sonnet-4.5")
        assert "cost_usd" not in copilot  # (a subscription's zero: the store prices it)

        assert run_json("opencode")["sent"] == 0  # nothing changed: not read again
        insert_rows(writer, rows[-1:])  # a new message, in the WAL only
        assert Path(f"{datadir / 'opencode.db'}-wal").stat().st_size > 0
        second = run_json("opencode")
        assert (second["sent"], second["accepted"]) == (5, 1)  # the database alone, read again
        again = run_json("opencode", "--rescan")
        assert (again["sent"], again["accepted"], again["duplicates"]) == (8, 0, 8)
        every = run_json()
        assert list(every) == ["opencode"] and every["opencode"]["sent"] == 0
    finally:
        writer.close()
    assert len(running_daemon.journal_events()) == 8

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
    assert got == ccusage_rows(ccusage_entries(datadir), "day", "model")


def test_message_times_written_from_their_parts_match_the_datetime() -> None:
    """opencode._ts's arithmetic (times up to 2^42 ms) against the datetime it stands for."""
    from telemetryd.adapters import opencode

    def slow(millis: int) -> str:
        when = datetime.fromtimestamp(millis / 1000, UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"

    for millis in (0, 1, 999, 86_399_999, 86_400_000, 1_760_000_000_123, (1 << 42) - 1, 1 << 42):
        assert opencode._ts(millis) == slow(millis)
    assert opencode._ts(True) == opencode._ts("x") == "1970-01-01T00:00:00.000Z"
    assert opencode._ts(-1) == "1969-12-31T23:59:59.999Z"


def test_a_whole_file_is_read_as_a_read_past_the_limit_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_whole reads by the file's size, and still one byte past MAX_LINE at most."""
    monkeypatch.setattr(importer, "MAX_LINE", 10)
    for size in (0, 3, 10, 11, 25):
        path = tmp_path / f"f{size}"
        path.write_bytes(b"x" * size)
        with open(path, "rb") as f:
            assert importer.read_whole(f) == b"x" * min(size, 11)
    path = tmp_path / "grows"
    path.write_bytes(b"abc")
    with open(path, "rb") as f, open(path, "ab") as more:
        more.write(b"defgh")  # written after the size was taken: still read
        more.flush()
        real = importer.os.fstat
        monkeypatch.setattr(importer.os, "fstat", lambda fd: type("S", (), {"st_size": 3})())
        try:
            assert importer.read_whole(f) == b"abcdefgh"
        finally:
            monkeypatch.setattr(importer.os, "fstat", real)


def test_the_typed_reading_of_a_message_gives_what_the_general_one_gives() -> None:
    """opencode.record_of_json (a typed decoder for the usual shape) against record() of
    the message as Python's json module decodes it: the fixture rows, and messages whose
    values are of other types or out of range, each of which takes the general path."""
    from telemetryd.adapters import opencode

    usual = {
        "role": "assistant",
        "modelID": "claude-sonnet-4.5",
        "providerID": "anthropic",
        "cost": 0.25,
        "tokens": {"input": 10, "output": 20, "reasoning": 5, "total": 30000,
                   "cache": {"read": 29000, "write": 100}},
        "time": {"created": 1_760_000_000_123},
        "path": {"cwd": " /home/dev/app "},
        "id": "msg_1",
        "sessionID": "ses_1",
    }  # fmt: skip

    def changed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
        message = json.loads(json.dumps(usual))
        where = message
        for key in path[:-1]:
            where = where[key]
        where[path[-1]] = value
        return message

    odd_values = [None, True, False, -1, 0, 1.5, 2.0, "7", " ", [], {}, 2**63 - 1, 2**63,
                  2**64 - 1, 2**64, 10**30]  # fmt: skip
    texts = [json.dumps(row["data"]) for row in fixture_rows()]
    for path in [("tokens", k) for k in ("input", "output", "reasoning", "total", "cache")] + [
        ("tokens", "cache", "read"), ("tokens", "cache", "write"), ("tokens",), ("modelID",),
        ("providerID",), ("cost",), ("time",), ("time", "created"), ("path",),
        ("path", "cwd"), ("id",), ("sessionID",),
    ]:  # fmt: skip
        texts += [json.dumps(changed(path, value)) for value in odd_values]
    texts += ["[]", '"text"', "3", "null", "{}", '{"tokens": {"input": 1}, "tokens": null}',
              json.dumps(usual)[:-1] + ', "modelID": "other"}']  # fmt: skip
    typed = 0
    for text in texts:
        for row_id, session in ((None, None), ("row", "ses_row")):
            want = opencode.record(json.loads(text), row_id, session)
            assert opencode.record_of_json(text, row_id, session) == want, text
            assert opencode.record_of_json(text.encode(), row_id, session) == want, text
        try:
            opencode._MESSAGE.decode(text)
            typed += 1
        except msgspec.ValidationError:
            pass
    assert typed > len(fixture_rows())  # (both paths were taken)
    assert typed < len(texts)
    with pytest.raises(msgspec.DecodeError):
        opencode.record_of_json('{"tokens": ')


def test_a_lone_surrogate_escape_costs_nothing_of_its_message(tmp_path: Path) -> None:
    """A message's text cut inside an emoji holds a lone UTF-16 surrogate escape, which
    msgspec refuses: the message is read with U+FFFD in its place (it was counted
    malformed, and its request lost), in a database row and in an older message file."""
    row = fixture_rows()[0]
    text = json.dumps(row["data"])
    broken = text[:-1] + ', "error": {"data": {"message": "cut \\ud83d"}}}'
    db = tmp_path / "opencode" / "opencode.db"
    db.parent.mkdir()
    create_database(db, [{**row, "data": json.loads(text)}])
    with sqlite3.connect(db) as connection:
        connection.execute("update message set data = ?", [broken])
    legacy = tmp_path / "legacy" / "storage" / "message" / "ses_x" / "msg_legacy.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(broken.replace(row["id"], "msg_legacy"))
    summary = importer.run("opencode", [db, legacy], dry_run=True, settle=0)
    assert (summary.requests, summary.malformed) == (2, 0)
