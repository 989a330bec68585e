"""Parquet export (store/export.py): through the real daemon, read back by DuckDB and pyarrow.

Events are made here, in Python, with known days, sources and token counts; every
expected figure is computed from that list, never by the export's SQL. The files are
read with DuckDB's ``read_parquet(..., hive_partitioning = true)`` and with pyarrow's
datasets, as docs/export.md tells users to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, Daemon, ctl, exchange
from telemetryd import config
from telemetryd.errors import ConfigError, ExportError
from telemetryd.store import export
from telemetryd.store.database import Store, batch_bytes_for
from telemetryd.store.sandbox import harden

DAY0 = datetime(2026, 11, 20, tzinfo=UTC)
DAYS = 10
SOURCES = ["claude-code", "codex", None, "my tools/v2 = x"]
LAYOUT = re.compile(r"date=\d{4}-\d{2}-\d{2}/source=[^/]+/part-\d{6}-\d+\.parquet")


def make_events(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """``count`` API requests, numbered from ``start``, spread over DAYS days and the
    SOURCES (one in 4 without a source), with token counts derived from the number."""
    out = []
    for n in range(start, start + count):
        ts = DAY0 + timedelta(seconds=(n * 7919) % (DAYS * 86400))
        event: dict[str, Any] = {
            "type": "api_request",
            "id": f"req-{n:08d}",
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "session_id": f"s-{n % 13}",
            "agent": {"model": "claude-sonnet-4-5", "provider": "anthropic"},
            "tokens": {"source": "actual", "input": n % 1000, "output": n % 97},
            "attrs": {"n": n},
        }
        source = SOURCES[n % len(SOURCES)]
        if source is not None:
            event["source"] = source
        out.append(event)
    return out


def send(daemon: Daemon, events: list[dict[str, Any]]) -> None:
    payload = b"".join(json.dumps(event).encode() + b"\n" for event in events)
    replies = exchange(daemon.events_socket, payload)
    assert replies[-1]["accepted"] == len(events), replies[-3:]


def day_of(event: dict[str, Any]) -> str:
    return str(event["ts"][:10])


def expected_days(events: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per UTC day: (events, input + output tokens)."""
    totals: dict[str, list[int]] = {}
    for event in events:
        entry = totals.setdefault(day_of(event), [0, 0])
        entry[0] += 1
        entry[1] += event["tokens"]["input"] + event["tokens"]["output"]
    return {day: (n, tokens) for day, (n, tokens) in totals.items()}


def run_export(directory: Path | str, *args: str) -> dict[str, Any]:
    result = ctl("export", "parquet", str(directory), "--json", *args, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def duckdb_days(directory: Path) -> dict[str, tuple[int, int]]:
    con = duckdb.connect()
    rows = con.execute(
        "SELECT CAST(date AS VARCHAR), count(*), sum(tokens_input + tokens_output) "
        "FROM read_parquet($glob, hive_partitioning = true) GROUP BY ALL",
        {"glob": f"{directory}/**/*.parquet"},
    ).fetchall()
    return {day: (int(n), int(tokens)) for day, n, tokens in rows}


def pyarrow_days(directory: Path) -> dict[str, tuple[int, int]]:
    table = ds.dataset(str(directory), format="parquet", partitioning="hive").to_table(
        columns=["date", "tokens_input", "tokens_output"]
    )
    totals: dict[str, list[int]] = {}
    for day, tokens_in, tokens_out in zip(
        table["date"].to_pylist(),
        table["tokens_input"].to_pylist(),
        table["tokens_output"].to_pylist(),
        strict=True,
    ):
        entry = totals.setdefault(str(day), [0, 0])
        entry[0] += 1
        entry[1] += tokens_in + tokens_out
    return {day: (n, tokens) for day, (n, tokens) in totals.items()}


def exported_ids(directory: Path) -> list[str]:
    con = duckdb.connect()
    rows = con.execute(
        "SELECT id FROM read_parquet($glob, hive_partitioning = true)",
        {"glob": f"{directory}/**/*.parquet"},
    ).fetchall()
    return [row[0] for row in rows]


def parquet_files(directory: Path) -> dict[str, float]:
    """Every Parquet file, relative to ``directory``, with its mtime."""
    return {
        str(path.relative_to(directory)): path.stat().st_mtime
        for path in directory.rglob("*.parquet")
    }


# -- through the daemon -----------------------------------------------------------


def test_export_reads_back_in_duckdb_and_pyarrow_partitioned_by_day_and_source(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    events = make_events(20_000)
    send(running_daemon, events)
    out = tmp_path / "parquet"
    reply = run_export(out)
    assert reply["run"] == 1 and reply["events"] == len(events)
    assert reply["total_events"] == len(events)

    want = expected_days(events)
    assert len(want) == DAYS
    assert duckdb_days(out) == want
    assert pyarrow_days(out) == want

    # The layout: date=/source=/part-RUN-I.parquet, zstd, the source decoded back.
    files = parquet_files(out)
    assert sorted(files) == sorted(reply["files"])
    assert all(LAYOUT.fullmatch(name) for name in files), sorted(files)[:5]
    days = {name.split("/")[0] for name in files}
    assert days == {f"date={day}" for day in want}
    for name in files:
        meta = pq.ParquetFile(out / name).metadata
        for group in range(meta.num_row_groups):
            for column in range(meta.num_columns):
                assert meta.row_group(group).column(column).compression == "ZSTD"
    con = duckdb.connect()
    by_source = dict(
        con.execute(
            "SELECT source, count(*) FROM read_parquet($glob, hive_partitioning = true) "
            "GROUP BY ALL",
            {"glob": f"{out}/**/*.parquet"},
        ).fetchall()
    )
    assert by_source == Counter(event.get("source") for event in events)
    table = ds.dataset(str(out), format="parquet", partitioning="hive").to_table(columns=["source"])
    assert Counter(table["source"].to_pylist()) == by_source
    # The attrs travel as JSON text.
    [(attrs,)] = con.execute(
        "SELECT attrs FROM read_parquet($glob, hive_partitioning = true) WHERE id = 'req-00000042'",
        {"glob": f"{out}/**/*.parquet"},
    ).fetchall()
    assert json.loads(attrs) == {"n": 42}

    manifest = json.loads((out / export.MANIFEST_NAME).read_text())
    assert manifest["events"] == len(events) and manifest["runs"] == 1
    assert manifest["files"] == len(files)


def test_a_second_export_adds_nothing_and_later_ones_add_exactly_the_new_events(
    daemon_factory: Any, tmp_path: Path
) -> None:
    # A dedup window of one id: an event sent again later is journaled twice, and stored
    # (and exported) once.
    daemon = daemon_factory(["--set", "ingest.dedup-window=1"]).start()
    first = make_events(12_000)
    send(daemon, first)
    out = tmp_path / "parquet"
    assert run_export(out)["events"] == len(first)
    before = parquet_files(out)

    again = run_export(out)
    assert again["run"] is None and again["events"] == 0 and again["files"] == []
    assert parquet_files(out) == before  # not one file written or touched

    more = make_events(3_000, start=len(first))
    # Late: an event journaled now with a time before every other one, on a day of its own.
    late = make_events(1)[0] | {"id": "late-1", "ts": "2026-10-01T12:00:00.000Z"}
    resent = first[:5]  # already exported: journaled again, never exported again
    send(daemon, [*more, late, *resent])
    reply = run_export(out)
    assert reply["run"] == 2 and reply["events"] == len(more) + 1
    new_files = {name: mtime for name, mtime in parquet_files(out).items() if name not in before}
    assert sorted(new_files) == sorted(reply["files"])
    assert all(name.split("/")[-1].startswith("part-000002-") for name in new_files)
    assert {name: parquet_files(out)[name] for name in before} == before  # old files kept

    everything = [*first, *more, late]
    ids = exported_ids(out)
    assert len(ids) == len(set(ids)) == len(everything)
    assert set(ids) == {event["id"] for event in everything}
    assert duckdb_days(out) == expected_days(everything)
    assert pyarrow_days(out) == expected_days(everything)
    late_files = [name for name in parquet_files(out) if name.startswith("date=2026-10-01/")]
    assert len(late_files) == 1
    assert pq.read_table(out / late_files[0]).column("id").to_pylist() == ["late-1"]

    assert run_export(out)["events"] == 0


MILLION = 1_000_000


def test_a_million_events_read_back_whole_and_the_next_run_adds_only_the_new_ones(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    """The issue's scale: 1M events exported, read back by DuckDB and by pyarrow with the
    same count and per-day totals; a second run adds nothing; after 1,000 more events
    (and 1,000 of the first sent again) a third adds exactly those 1,000. The events
    go in chunks, and the expected totals are summed as they are made (the test
    process never holds the million)."""
    chunk = 50_000
    want: Counter[str] = Counter()  # day -> events
    tokens: Counter[str] = Counter()  # day -> input + output tokens
    for start in range(0, MILLION, chunk):
        events = make_events(chunk, start=start)
        send(running_daemon, events)
        for event in events:
            want[day_of(event)] += 1
            tokens[day_of(event)] += event["tokens"]["input"] + event["tokens"]["output"]
    expected = {day: (want[day], tokens[day]) for day in want}
    out = tmp_path / "parquet"
    reply = run_export(out)
    assert (reply["run"], reply["events"]) == (1, MILLION)
    assert duckdb_days(out) == expected
    assert pyarrow_days(out) == expected

    files = parquet_files(out)
    again = run_export(out)
    assert (again["run"], again["events"]) == (None, 0)
    assert parquet_files(out) == files

    more = make_events(1_000, start=MILLION)
    send(running_daemon, more)
    exchange(running_daemon.events_socket, b"".join(
        json.dumps(event).encode() + b"\n" for event in make_events(1_000)
    ))  # fmt: skip
    third = run_export(out)
    assert (third["run"], third["events"]) == (2, len(more))
    con = duckdb.connect()
    [(rows, distinct)] = con.execute(
        "SELECT count(*), count(DISTINCT id) FROM read_parquet($glob, hive_partitioning = true)",
        {"glob": f"{out}/**/*.parquet"},
    ).fetchall()
    assert rows == distinct == MILLION + len(more)


def test_since_and_until_fix_the_window_of_a_directory(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    events = make_events(8_000)
    send(running_daemon, events)
    out = tmp_path / "window"
    since, until = "2026-11-22", "2026-11-25T12:00:00+02:00"  # until 10:00 UTC, exclusive
    low = datetime(2026, 11, 22, tzinfo=UTC)
    high = datetime(2026, 11, 25, 10, tzinfo=UTC)

    def inside(event: dict[str, Any]) -> bool:
        ts = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
        return low <= ts < high

    want = [event for event in events if inside(event)]
    assert 0 < len(want) < len(events)
    reply = run_export(out, "--since", since, "--until", until)
    assert reply["events"] == len(want)
    assert reply["since"] == "2026-11-22T00:00:00.000Z"
    assert reply["until"] == "2026-11-25T10:00:00.000Z"
    assert duckdb_days(out) == expected_days(want)
    assert sorted(exported_ids(out)) == sorted(event["id"] for event in want)

    # Later runs keep the window, with or without naming it again; another is refused.
    more = make_events(2_000, start=len(events))
    send(running_daemon, more)
    assert run_export(out)["events"] == sum(inside(event) for event in more)
    assert run_export(out, "--since", since, "--until", until)["events"] == 0
    other = ctl("export", "parquet", str(out), "--since", "2026-11-01")
    assert other.returncode == 1
    assert "another directory" in other.stderr.decode()
    assert "ExportError" not in other.stderr.decode()  # (a refusal, said as it is)
    assert "from 2026-11-22T00:00:00.000Z until 2026-11-25T10:00:00.000Z" in other.stderr.decode()
    bad = ctl("export", "parquet", str(out), "--since", "yesterday")
    assert bad.returncode == 2 and "'yesterday' is not a date" in bad.stderr.decode()
    empty = ctl(
        "export", "parquet", str(tmp_path / "x"), "--since", "2026-12-01", "--until", "2026-11-01"
    )
    assert empty.returncode == 1 and "is not before --until" in empty.stderr.decode()


def test_the_daemon_exports_continuously_to_parquet_dir(
    daemon_factory: Any, tmp_path: Path
) -> None:
    out = tmp_path / "continuous"
    daemon = daemon_factory(
        ["--set", f"export.parquet-dir={json.dumps(str(out))}", "--set", "export.interval=1"]
    ).start()
    first = make_events(5_000)
    send(daemon, first)
    wait_for_manifest(out, len(first))
    more = make_events(1_000, start=len(first))
    send(daemon, more)
    wait_for_manifest(out, len(first) + len(more))
    assert duckdb_days(out) == expected_days([*first, *more])
    ids = exported_ids(out)
    assert len(ids) == len(set(ids)) == len(first) + len(more)


def test_a_reload_that_shortens_the_export_interval_applies_at_once(
    daemon_factory: Any, state_home: Path, tmp_path: Path
) -> None:
    """SIGHUP setting ``parquet-dir`` and a 1 s ``interval`` on a daemon waiting out the
    default 300 s: the first run comes within seconds, not when the old wait ends."""
    from signal import SIGHUP

    config_file = state_home / "config.toml"
    config_file.write_text("[export]\ninterval = 300\n")
    daemon = daemon_factory().start()
    events = make_events(500)
    send(daemon, events)
    out = tmp_path / "continuous"
    config_file.write_text(f"[export]\nparquet-dir = {json.dumps(str(out))}\ninterval = 1\n")
    assert daemon.proc is not None
    daemon.notifications.clear()
    daemon.proc.send_signal(SIGHUP)
    daemon.wait_for("STATUS=configuration reloaded")
    reloaded = time.monotonic()
    wait_for_manifest(out, len(events))
    assert time.monotonic() - reloaded < 30
    # (the worker writes the manifest a moment before the daemon counts its run)
    deadline = time.monotonic() + 30
    while (shown := json.loads(ctl("status", "--json").stdout)["export"])["runs"] < 1:
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)
    next_run = datetime.fromisoformat(shown["next_run"].replace("Z", "+00:00"))
    assert shown["interval_s"] == 1.0 and shown["runs"] >= 1
    assert next_run < datetime.now(UTC) + timedelta(seconds=5)  # (not the old 300 s away)


def test_status_shows_the_continuous_export(daemon_factory: Any, tmp_path: Path) -> None:
    """`status` (JSON and text) shows the continuous export's directory, interval, last
    run, the events it wrote, and a failed run's error, as the runs go."""
    import shutil
    import time

    out = tmp_path / "continuous"
    daemon = daemon_factory(
        ["--set", f"export.parquet-dir={json.dumps(str(out))}", "--set", "export.interval=1"]
    ).start()

    def status() -> dict[str, Any]:
        result = ctl("status", "--json")
        assert result.returncode == 0, result.stderr
        answer: dict[str, Any] = json.loads(result.stdout)["export"]
        return answer

    def until(check: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            answer = status()
            if check(answer):
                return answer
            assert time.monotonic() < deadline, f"{what}: {answer}"
            time.sleep(0.2)

    first = status()
    assert (first["dir"], first["interval_s"]) == (str(out), 1.0)
    assert first["state"] in ("waiting", "exporting") and first["next_run"] is not None
    events = make_events(300)
    send(daemon, events)
    wait_for_manifest(out, len(events))
    done = until(lambda a: a["total_events"] == len(events), "the 300 events exported")
    manifest = json.loads((out / export.MANIFEST_NAME).read_text())
    assert done["total_events"] == manifest["events"] == len(events)
    assert done["runs"] >= 1 and done["failures"] == 0 and done["last_error"] is None
    assert 0 <= done["last_events"] <= len(events)
    # A run with nothing new: it wrote 0 events and no file.
    idle = until(lambda a: a["runs"] > done["runs"] and a["last_events"] == 0, "an idle run")
    assert (idle["last_files"], idle["total_events"]) == (0, len(events))
    assert idle["last_run"] >= done["last_run"]
    text = ctl("status").stdout.decode()
    assert f"export: Parquet to {out} every 1 s; last run " in text
    assert "export: last run failed" not in text

    # The directory turns into a file: runs fail, and say why.
    shutil.rmtree(out)
    out.write_text("not a directory")
    failing = until(lambda a: a["failures"] >= 1, "a failed run")
    assert failing["last_error"] and failing["last_error_at"]
    assert str(out) in failing["last_error"] or "directory" in failing["last_error"].lower()
    text = ctl("status").stdout.decode()
    assert "export: last run failed (" in text and failing["last_error"] in text
    # Each run fails the same way: the log says it once (it said it twice a run).
    until(lambda a: a["failures"] >= 3, "three failed runs")
    said = [line for line in daemon.log().splitlines() if failing["last_error"] in line]
    assert len(said) == 1, said
    # Gone again: the next run exports everything into a new directory.
    out.unlink()
    back = until(lambda a: a["failures"] == 0 and a["total_events"] == len(events), "again")
    assert back["last_events"] == len(events) and back["last_error"] == failing["last_error"]


def wait_for_manifest(directory: Path, events: int, timeout: float = 60.0) -> None:
    """Until the manifest counts ``events`` (the daemon's timer writes it; no sleep
    decides anything: the manifest is read until it says so, or the time is up)."""
    import time

    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = json.loads((directory / export.MANIFEST_NAME).read_text())["events"]
        except (FileNotFoundError, json.JSONDecodeError):
            seen = None
        if seen == events:
            return
        assert seen is None or seen < events, f"exported {seen} events, more than {events}"
        time.sleep(0.2)
    raise AssertionError(f"the manifest says {seen} events after {timeout} s, not {events}")


def test_with_the_daemon_stopped_export_says_it_needs_it(tmp_path: Path) -> None:
    result = ctl("export", "parquet", str(tmp_path / "out"))
    assert result.returncode == 3
    err = result.stderr.decode()
    assert "telemetryd is not running" in err and "export is done by the running daemon" in err
    assert not (tmp_path / "out").exists()


# -- the engine, on a store of its own --------------------------------------------


def _line(n: int, *, event_id: str | None = None, received: str | None = None) -> bytes:
    ts = DAY0 + timedelta(hours=n)
    stamp = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return (
        json.dumps(
            {
                "v": 1,
                "id": event_id or f"ev-{n:06d}",
                "ts": stamp,
                "type": "custom",
                "source": "bosun",
                "name": f"n{n}",
                "received_at": received or stamp,
            }
        ).encode()
        + b"\n"
    )


def _journal(store: Store, journal: Path, numbers: range) -> Path:
    """The lines ``numbers`` (_line) appended to the journal's segment 1, then loaded;
    the segment's path."""
    segment = journal / "20261120T000000Z-000001.jsonl"
    with segment.open("ab") as f:
        f.write(b"".join(_line(n) for n in numbers))
    store.materialize(str(journal))
    return segment


@pytest.fixture
def hardened(tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    """A store sandboxed as the worker's is (no file access outside load/), and its journal."""
    journal = tmp_path / "journal"
    journal.mkdir()
    with Store(str(tmp_path / "telemetry.duckdb")) as store:
        with store.cursor() as con:
            harden(con, allowed_dirs=[store.load_dir], memory_limit="256MB", threads=2)
        yield store, journal


def test_a_url_target_is_written_by_duckdb_and_reads_back(
    hardened: tuple[Store, Path], tmp_path: Path
) -> None:
    store, journal = hardened
    segment = journal / "20261120T000000Z-000001.jsonl"
    segment.write_bytes(b"".join(_line(n) for n in range(300)))
    store.materialize(str(journal))
    url = f"file://{tmp_path}/remote"
    report = export.export(store, str(journal), url)
    assert report.events == 300 and report.run == 1
    assert all(LAYOUT.fullmatch(name) for name in report.files), report.files
    with segment.open("ab") as f:
        f.write(b"".join(_line(n) for n in range(300, 350)))
        f.write(_line(999, event_id="ev-000001", received="2026-12-01T00:00:00.000Z"))
    store.materialize(str(journal))
    assert export.export(store, str(journal), url).events == 50
    assert export.export(store, str(journal), url).events == 0
    ids = exported_ids(tmp_path / "remote")
    assert sorted(ids) == [f"ev-{n:06d}" for n in range(350)]
    manifest = export.read_manifest(url)
    assert manifest is not None and manifest.events == 350 and manifest.runs == 2
    assert manifest.position == {1: segment.stat().st_size}


def test_a_failed_run_leaves_nothing_that_is_read_twice(
    hardened: tuple[Store, Path], tmp_path: Path
) -> None:
    store, journal = hardened
    _journal(store, journal, range(100))
    out = tmp_path / "out"
    assert export.export(store, str(journal), str(out)).events == 100
    # A run 2 that wrote a file and died before its manifest: the next run 2 replaces it.
    stray = out / "date=2026-11-20" / "source=bosun" / "part-000002-0.parquet"
    stray.write_bytes(b"not parquet: a run that died")
    (out / "date=2026-11-20" / "source=bosun" / ".part-000002-1.parquet.tmp").write_bytes(b"x")
    _journal(store, journal, range(100, 120))
    # The user's own files, even named like a run's, are no run's (a run removed every
    # "part-000002-*" and ".part-*.tmp*" anywhere in the tree).
    mine = [out / "docs" / "part-000002-thesis.tex", out / "photos" / ".part-1.tmp.jpg"]
    mine.append(out / "date=2026-11-20" / "notes" / "part-000002-0.parquet.tmp")
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    report = export.export(store, str(journal), str(out))
    assert report.run == 2 and report.events == 20
    assert [p.name for p in out.rglob(".part-*")] == [".part-1.tmp.jpg"]
    assert all(path.read_text() == "mine" for path in mine)
    ids = exported_ids(out)
    assert sorted(ids) == [f"ev-{n:06d}" for n in range(120)]


def test_a_first_run_that_died_before_its_manifest_is_taken_up_again(
    hardened: tuple[Store, Path], tmp_path: Path
) -> None:
    """The store worker killed during a first export (the longest, and the kernel's first
    choice when memory runs short) left date=/source= files and no manifest: every later
    run refused the directory as one of other files, and [export] parquet-dir failed at
    every interval. Its leftovers are now a failed run 1's: removed, and the run redone."""
    store, journal = hardened
    _journal(store, journal, range(50))
    out = tmp_path / "out"
    left = out / "date=2026-11-20" / "source=bosun"
    left.mkdir(parents=True)
    (left / "part-000001-0.parquet").write_bytes(b"not parquet: the run that died")
    (left / ".part-000001-1.parquet.tmp").write_bytes(b"x")
    (out / "date=2026-11-21").mkdir()  # (a partition it had begun)
    report = export.export(store, str(journal), str(out))
    assert (report.run, report.events) == (1, 50)
    assert sorted(exported_ids(out)) == [f"ev-{n:06d}" for n in range(50)]
    assert not list(out.rglob(".part-*"))
    # Anything else in it is still the user's: refused, left alone.
    other = tmp_path / "other"
    (other / "date=2026-11-20" / "source=bosun").mkdir(parents=True)
    (other / "date=2026-11-20" / "source=bosun" / "notes.txt").write_text("mine")
    with pytest.raises(export.ExportError, match="holds other files"):
        export.export(store, str(journal), str(other))
    assert (other / "date=2026-11-20" / "source=bosun" / "notes.txt").read_text() == "mine"


def test_an_exported_event_journaled_again_as_it_was_is_not_exported_again(
    hardened: tuple[Store, Path], tmp_path: Path
) -> None:
    """A forwarded event keeps its ``received_at``: sent again after the receiving
    daemon's dedup window (a sender restarted mid-batch, an outage), its second line is
    the first one's twin, and matched the stored row: a later run exported it again.
    Now a copy the store dropped as a twin of a stored row is no new event; a new event
    journaled twice in the new lines is exported once."""
    store, journal = hardened
    segment = _journal(store, journal, range(100))
    out = tmp_path / "out"
    assert export.export(store, str(journal), str(out)).events == 100
    with segment.open("ab") as f:
        f.write(b"".join(_line(n) for n in [100, *range(5), 101, 100, 102]))
    store.materialize(str(journal))
    latest = journal / "20261120T010000Z-000002.jsonl"
    latest.write_bytes(b"".join(_line(n) for n in (3, 103, 103, 7)))  # (twins, a new segment)
    store.materialize(str(journal))
    report = export.export(store, str(journal), str(out))
    assert report.events == 4
    ids = exported_ids(out)
    assert sorted(ids) == [f"ev-{n:06d}" for n in range(104)]
    # The same after a rebuild (which records the twins again as it loads them).
    store.rebuild(str(journal))
    again = tmp_path / "again"
    assert export.export(store, str(journal), str(again)).events == 104
    with latest.open("ab") as f:
        f.write(b"".join(_line(n) for n in (9, 104)))
    store.materialize(str(journal))
    assert export.export(store, str(journal), str(again)).events == 1


def test_twins_in_a_segment_compacted_before_the_next_run_are_not_exported_again(
    hardened: tuple[Store, Path], tmp_path: Path
) -> None:
    """Retention compacts a segment of resent twins (usage events) before the next run,
    which then reads its usage file from the start: the twins stay noted as copies (the
    compaction once dropped the notes with the segment's other events, and the run
    exported each twin again)."""
    from telemetryd.store import retention

    store, journal = hardened

    def usage(n: int) -> bytes:
        line = json.loads(_line(n))
        line |= {"type": "api_request", "tokens": {"source": "actual", "input": n, "output": 1}}
        line.pop("name")
        return json.dumps(line).encode() + b"\n"

    (journal / "20261120T000000Z-000001.jsonl").write_bytes(b"".join(usage(n) for n in range(5)))
    store.materialize(str(journal))
    out = tmp_path / "out"
    assert export.export(store, str(journal), str(out)).events == 5
    # the twins, then a new event in a later segment (the twins' segment closes)
    (journal / "20261120T010000Z-000002.jsonl").write_bytes(b"".join(usage(n) for n in range(5)))
    store.materialize(str(journal))
    (journal / "20261120T020000Z-000003.jsonl").write_bytes(usage(5))
    store.materialize(str(journal))
    twins = next(s for s in retention.scan(str(journal)) if s.seq == 2)
    assert retention.compact(twins, store, compress=False) == 0  # (usage: all kept)
    assert export.export(store, str(journal), str(out)).events == 1
    assert sorted(exported_ids(out)) == [f"ev-{n:06d}" for n in range(6)]


def test_a_new_export_goes_only_into_a_new_or_empty_directory(
    hardened: tuple[Store, Path], tmp_path: Path
) -> None:
    """A directory of other files (a home directory, say) or one of the daemon's own is
    refused, named; one that holds hidden files alone is taken."""
    store, journal = hardened
    _journal(store, journal, range(10))
    (journal.parent / "spool").mkdir(exist_ok=True)
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    for target, named in (
        (home, "holds other files (docs, notes.txt)"),
        (journal, "is within"),
        (journal / "exports", "is within"),
        (Path(store.load_dir), "is within"),
        # (the daemon's other directories beside the journal: empty ones too)
        (journal.parent / "spool", "is within"),
        (journal.parent / "quarantine" / "new", "is within"),
        (journal.parent / "forward", "is within"),
        (journal.parent / "run", "is within"),
        (home / "notes.txt", "is a file"),
    ):
        with pytest.raises(export.ExportError, match=re.escape(named)):
            export.export(store, str(journal), str(target))
    assert sorted(p.name for p in home.iterdir()) == ["docs", "notes.txt"]
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".DS_Store").write_text("")
    assert export.export(store, str(journal), str(hidden)).events == 10
    # The sockets' directory is the daemon's wherever it is (XDG_RUNTIME_DIR's, say).
    from telemetryd import paths

    where = paths.Paths(str(tmp_path / "xdg-run" / "telemetryd"), str(journal.parent), "/x")
    with pytest.raises(export.ExportError, match="is within"):
        export.export(store, str(journal), where.runtime_dir + "/parquet", where=where)
    # A new directory of its own beside them is the user's to choose.
    assert export.export(store, str(journal), str(journal.parent / "parquet")).events == 10
    assert not list((journal.parent / "spool").iterdir())


def test_a_manifest_changed_by_hand_is_refused_with_what_is_wrong(
    hardened: tuple[Store, Path], tmp_path: Path
) -> None:
    """Counts below 0, a window that is no time, a position inside a line (whose line
    would be lost, cut in two): each an ExportError naming it, nothing written."""
    import gzip

    store, journal = hardened
    _journal(store, journal, range(100))
    out = tmp_path / "out"
    assert export.export(store, str(journal), str(out)).events == 100
    segment = _journal(store, journal, range(100, 120))
    path = out / export.MANIFEST_NAME
    good = json.loads(path.read_text())
    middle = good["position"]["1"] - 7
    edits = {
        "runs": ({"runs": -1}, "`$.runs`"),
        "position": ({"position": {"1": -5}}, "$.position"),
        "since": ({"since": "garbage"}, "`since`, 'garbage', is not an RFC 3339 time"),
        "inside a line": ({"position": {"1": middle}}, "is not at the end of a line"),
    }
    for name, (edit, said) in edits.items():
        path.write_text(json.dumps({**good, **edit}))
        with pytest.raises(ExportError, match=re.escape(said)):
            export.export(store, str(journal), str(out))
        assert len(exported_ids(out)) == 100, name
    # The same inside a line of a compressed segment.
    path.write_text(json.dumps({**good, "position": {"1": middle}}))
    data = segment.read_bytes()
    segment.chmod(0o600)
    compressed = journal / (segment.name + ".gz")
    compressed.write_bytes(gzip.compress(data))
    segment.unlink()
    with pytest.raises(ExportError, match="is not at the end of a line"):
        export.export(store, str(journal), str(out))
    path.write_text(json.dumps(good))
    assert export.export(store, str(journal), str(out)).events == 20


def test_a_first_runs_writers_export_the_snapshot_taken_under_the_lock(
    hardened: tuple[Store, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run writes its partitions with export.WRITERS cursors; events loaded after
    its snapshot (here: just before the files are written, the lock let go) are in none of
    them, and the next run exports exactly those."""
    store, journal = hardened
    segment = journal / "20261120T000000Z-000001.jsonl"
    segment.write_bytes(b"".join(_line(n) for n in range(200)))  # 200 hours: 9 days
    store.materialize(str(journal))
    first_end = segment.stat().st_size
    copy = export._copy
    seen: list[int] = []

    def load_meanwhile(cursors: list[Any], *args: Any) -> int:
        seen.append(len(cursors))
        with segment.open("ab") as f:
            # (late lines: every day of the snapshot's gets some, whichever writer has it)
            f.write(b"".join(_line(n % 200, event_id=f"late-{n}") for n in range(200, 260)))
        assert store.materialize(str(journal)) == 60
        return copy(cursors, *args)

    monkeypatch.setattr(export, "_copy", load_meanwhile)
    out = tmp_path / "out"
    report = export.export(store, str(journal), str(out))
    assert seen == [export.WRITERS] and export.WRITERS > 1
    assert report.events == 200 and len(report.files) == 9
    assert sorted(exported_ids(out)) == [f"ev-{n:06d}" for n in range(200)]
    manifest = export.read_manifest(str(out))
    assert manifest is not None and manifest.position == {1: first_end}
    monkeypatch.setattr(export, "_copy", copy)
    assert export.export(store, str(journal), str(out)).events == 60
    late = [f"late-{n}" for n in range(200, 260)]
    assert sorted(exported_ids(out)) == sorted([f"ev-{n:06d}" for n in range(200)] + late)


def test_a_writer_that_fails_stops_the_run_with_its_error(
    hardened: tuple[Store, Path], tmp_path: Path
) -> None:
    """One partition's COPY fails (here: a column that does not exist): the run raises
    that error, and the other writer takes no further partition."""
    store, journal = hardened
    (journal / "20261120T000000Z-000001.jsonl").write_bytes(b"".join(_line(n) for n in range(48)))
    store.materialize(str(journal))
    staging = Path(store.load_dir) / "writers"
    staging.mkdir()
    good = ("SELECT id FROM events", {})
    jobs = [(good, str(staging / f"{i}.parquet")) for i in range(20)]
    jobs[1] = (("SELECT no_such_column FROM events", {}), str(staging / "bad.parquet"))
    cursors = [store.cursor() for _ in range(export.WRITERS)]
    try:
        with pytest.raises(duckdb.BinderException, match="no_such_column"):
            export._run_jobs(cursors, jobs)
    finally:
        for cursor in cursors:
            cursor.close()
    written = {path.name for path in staging.glob("*.parquet")}
    assert "bad.parquet" not in written and len(written) < 19


def test_a_manifest_that_is_not_ours_is_refused(
    hardened: tuple[Store, Path], tmp_path: Path
) -> None:
    store, journal = hardened
    out = tmp_path / "out"
    out.mkdir()
    (out / export.MANIFEST_NAME).write_text('{"format": "something else", "version": 1}')
    with pytest.raises(ExportError, match="is a 'something else' manifest"):
        export.export(store, str(journal), str(out))
    (out / export.MANIFEST_NAME).write_text("[1, 2")
    with pytest.raises(ExportError, match="is not an export manifest"):
        export.export(store, str(journal), str(out))
    with pytest.raises(ExportError, match="not an absolute path"):
        export.export(store, str(journal), "relative/dir")


def test_parquet_dir_must_be_absolute_or_a_url(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"'relative/dir' is neither an absolute path nor a URL - at `\$.export.parquet-dir`",
    ):
        config.load(None, overrides=["export.parquet-dir=relative/dir"])
    loaded, _ = config.load(None, overrides=["export.parquet-dir=s3://bucket/telemetry"])
    assert loaded.export.parquet_dir == "s3://bucket/telemetry"
    with pytest.raises(ConfigError, match=r">= 1.0 - at `\$.export.interval`"):
        config.load(None, overrides=["export.interval=0"])


# -- the schema: one list, the table's columns, the files' and the docs' ---------


def test_exported_columns_are_the_events_table_and_the_docs_list_their_types(
    hardened: tuple[Store, Path],
) -> None:
    store, journal = hardened
    with store.cursor() as con:
        table = [row[0] for row in con.execute("DESCRIBE events").fetchall()]
    assert list(export.COLUMNS) == table

    (journal / "20261120T000000Z-000001.jsonl").write_bytes(_line(1))
    store.materialize(str(journal))
    out = Path(store.load_dir).parent / "schema-check"
    export.export(store, str(journal), str(out))
    con = duckdb.connect()
    described = con.execute(
        "DESCRIBE SELECT * FROM read_parquet($glob, hive_partitioning = true, "
        "hive_types = {'date': DATE, 'source': VARCHAR})",
        {"glob": f"{out}/**/*.parquet"},
    ).fetchall()
    files = {name: kind for name, kind, *_ in described}
    documented = documented_schema()
    assert documented == files
    assert set(documented) == {*table, "date"}


def documented_schema() -> dict[str, str]:
    """The column table of docs/export.md: ``| `name` | TYPE | ...``."""
    text = (ROOT / "docs" / "export.md").read_text()
    section = text.split("## Columns", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^\| `([a-z_]+)` \| ([A-Z]+) \|", section, re.MULTILINE)
    return dict(found)


def test_the_request_and_reply_shapes_agree(tmp_path: Path) -> None:
    from telemetryd import wire

    request = wire.CONTROL_DECODER.decode(
        b'{"op":"export","dir":"/x","since":"2026-11-01T00:00:00Z"}'
    )
    assert isinstance(request, wire.ExportRequest)
    assert request.since == datetime(2026, 11, 1, tzinfo=UTC) and request.until is None
    with pytest.raises(msgspec.ValidationError, match="dir"):
        wire.CONTROL_DECODER.decode(b'{"op":"export","dir":""}')
    report = export.Report("/x", events=3, files=["a"], run=1, total_events=3)
    reply = msgspec.convert(report.as_dict(), wire.ExportReply)
    assert reply.events == 3 and reply.run == 1


def test_many_days_and_sources_export_within_the_workers_memory_limit(tmp_path: Path) -> None:
    """200 partitions, within the smallest memory limit the configuration allows (64 MiB):
    one COPY partitioned by them all runs out of memory (store/export.py, _copy)."""
    journal = tmp_path / "journal"
    journal.mkdir()
    sources = ["a", "b", "c", "d", "e"]
    count = 150_000  # (one COPY of them all runs out of memory)
    lines = []
    for n in range(count):
        ts = DAY0 + timedelta(seconds=n * 40 * 86400 / count)  # 40 days
        stamp = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        event = {"v": 1, "id": f"m-{n:06d}", "ts": stamp, "type": "custom", "name": "x" * 40}
        event |= {"source": sources[n % 5], "received_at": stamp, "attrs": {"k": "v" * 200}}
        lines.append(json.dumps(event).encode() + b"\n")
    (journal / "20261120T000000Z-000001.jsonl").write_bytes(b"".join(lines))
    limit = 64 * 1024 * 1024
    with Store(str(tmp_path / "telemetry.duckdb"), batch_bytes=batch_bytes_for(limit)) as store:
        with store.cursor() as con:
            harden(con, allowed_dirs=[store.load_dir], memory_limit=f"{limit}B", threads=2)
        assert store.materialize(str(journal)) == count
        report = export.export(store, str(journal), str(tmp_path / "out"))
    assert report.events == count and len(report.files) == 200
    # Each file's threads write their row groups as they fill them (not in the table's
    # order): every event still once, in its own day's and source's file.
    ids = exported_ids(tmp_path / "out")
    assert sorted(ids) == [f"m-{n:06d}" for n in range(count)]
    con = duckdb.connect()
    misplaced = con.execute(
        "SELECT count(*) FROM read_parquet($glob, hive_partitioning = true) "
        "WHERE CAST(ts AS DATE) <> date OR source <> ('abcde')[CAST(id[3:] AS INTEGER) % 5 + 1]",
        {"glob": f"{tmp_path}/out/**/*.parquet"},
    ).fetchall()
    assert misplaced == [(0,)]


def test_partition_directories_are_named_as_duckdb_names_them(tmp_path: Path) -> None:
    """The files are written one partition at a time, in directories named here: as
    DuckDB's own partitioned writes name them."""
    sources = [chr(c) for c in range(1, 128) if chr(c) != "/"] + ["a b/c=d", "é€", "", None]
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest($s) AS source, 1 AS x", {"s": sources})
    con.execute(f"COPY t TO '{tmp_path}/d' (FORMAT parquet, PARTITION_BY (source))")
    duckdb_names = sorted(os.listdir(tmp_path / "d"))
    ours = sorted(export.hive_dir("source", source) for source in sources)
    assert ours == duckdb_names
    assert export.hive_dir("date", None) == "date=__HIVE_DEFAULT_PARTITION__"


def test_a_directory_exported_from_another_journal_is_refused(
    daemon_factory: Any, state_home: Path, tmp_path: Path
) -> None:
    """A new journal (the state directory made again) numbers its segments from 1 too:
    its events below the old manifest's offsets would be passed over as exported. The
    segment names in the manifest tell the journals apart."""
    daemon = daemon_factory().start()
    send(daemon, make_events(300))
    out = tmp_path / "parquet"
    assert run_export(out)["events"] == 300
    assert daemon.stop() == 0
    shutil.rmtree(state_home / "journal")
    for path in state_home.glob("telemetry.duckdb*"):
        path.unlink()
    time.sleep(1.1)  # (a segment's name has the second it was opened)
    daemon.start()
    fresh = make_events(200, start=1000)
    send(daemon, fresh)
    result = ctl("export", "parquet", str(out), timeout=60)
    assert result.returncode != 0
    assert b"another journal" in result.stderr and b"segment 1" in result.stderr
    assert len(exported_ids(out)) == 300  # untouched
    other = tmp_path / "other"
    assert run_export(other)["events"] == len(fresh)
    assert sorted(exported_ids(other)) == sorted(event["id"] for event in fresh)


def test_a_source_too_long_for_a_directory_name_is_cut_and_hashed(
    daemon_factory: Any, tmp_path: Path
) -> None:
    """A source whose escaped directory name would pass the file system's 255 bytes is
    written cut to fit, with a hash of the whole source after it: the export goes on
    (before, every run failed from then on, and nothing else was exported). A source
    named as Hive's NULL partition reads back as its name, not as NULL."""
    daemon = daemon_factory().start()
    long_sources = ["L" * 300, "ü" * 90, "日" * 60, "L" * 299 + "x"]
    events = make_events(400)
    for n, source in enumerate(long_sources):
        events[n]["source"] = source
    # (and a source named as the NULL partition is: it reads back as itself)
    events[len(long_sources)]["source"] = "__HIVE_DEFAULT_PARTITION__"
    events[len(long_sources) + 1].pop("source", None)
    send(daemon, events)
    out = tmp_path / "parquet"
    assert run_export(out)["events"] == len(events)
    for path in out.rglob("*.parquet"):
        assert all(len(part.encode()) <= 255 for part in path.relative_to(out).parts)
    con = duckdb.connect()
    rows = dict(
        con.execute(
            "SELECT id, source FROM read_parquet($glob, hive_partitioning = true)",
            {"glob": f"{out}/**/*.parquet"},
        ).fetchall()
    )
    assert len(rows) == len(events)
    read_back = [rows[events[n]["id"]] for n in range(len(long_sources))]
    for source, value in zip(long_sources, read_back, strict=True):
        head, _, digest = value.rpartition("~")
        assert source.startswith(head) and len(head) >= 20 and len(digest) == 16
    assert len(set(read_back)) == len(long_sources)  # (the same 299 first letters: apart)
    assert all(rows[e["id"]] == e.get("source") for e in events[len(long_sources) :])


def test_a_segment_compacted_midway_through_an_export_is_not_read_at_the_old_offset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "20261101T000000Z-000001.usage.jsonl").write_bytes(b"{}\n" * 10)
    (journal / "20261101T000000Z-000002.jsonl").write_bytes(b"{}\n" * 10)
    (journal / "20261101T000000Z-000003.usage.jsonl").write_bytes(b"{}\n" * 10)
    # 1: compacted after DIR took 12 bytes of the original; 2: plain, DIR is part-way;
    # 3: compacted before DIR took any of it.
    new = {1: (12, 30), 2: (12, 30), 3: (0, 30)}
    with caplog.at_level("WARNING"):
        export._skip_compacted_midway(str(journal), new)
    assert new == {1: (30, 30), 2: (12, 30), 3: (0, 30)}
    assert "journal segment 1 was compacted" in caplog.text
