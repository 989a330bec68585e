"""The store as the running daemon keeps it: it opens in the background while ingest goes
on, loads big events within its memory limit, gets past damaged and stray journal files,
and leaves no empty segments behind. Real daemon, real files, real DuckDB."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from conftest import Daemon, ctl, exchange, summary

DaemonFactory = Callable[..., Daemon]


def custom(count: int, prefix: str, attrs: dict[str, Any] | None = None) -> bytes:
    return b"".join(
        json.dumps(
            {"type": "custom", "id": f"{prefix}-{n}", "name": prefix, "attrs": attrs or {}}
        ).encode()
        + b"\n"
        for n in range(count)
    )


def send(daemon: Daemon, payload: bytes) -> None:
    count = payload.count(b"\n")
    assert exchange(daemon.events_socket, payload) == [summary(count, count)]


def count(sql: str = "select count(*) as n from events") -> int:
    result = ctl("query", "--format", "json", sql)
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)[0]["n"])


def status() -> dict[str, Any]:
    result = ctl("status", "--json")
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def new_segment(daemon: Daemon) -> None:
    assert daemon.proc is not None
    daemon.notifications.clear()
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("READY=1")


def test_big_events_reach_the_database_with_the_default_memory_limit(
    running_daemon: Daemon,
) -> None:
    """2,000 valid events with 15 KB of attrs each (30 MB) used to make every load run out
    of memory: `query` answered 0 rows, forever, and a rebuild left 0 events."""
    blob = {"blob": "x" * 15_000}
    for part in range(4):
        send(running_daemon, custom(500, f"big{part}", blob))
    assert count() == 2000
    rebuilt = ctl("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout == b"rebuilt: 2000 events (2000 before)\n"
    assert count("select count(*) as n from events where length(attrs) > 15000") == 2000
    assert "Traceback" not in running_daemon.log()


def test_an_answer_that_misses_acknowledged_events_says_so(running_daemon: Daemon) -> None:
    """When loading fails, `query` still answers from what is loaded, but says on stderr
    that acknowledged events are missing and why, instead of leaving them out silently."""
    send(running_daemon, custom(5, "a"))
    first = ctl("query", "--format", "csv", "select count(*) as n from events")
    assert first.stdout == b"n\n5\n" and first.stderr == b""
    load = running_daemon.home / "load"
    shutil.rmtree(load)
    load.write_bytes(b"")  # where the store puts its batch files: loading now fails
    send(running_daemon, custom(3, "b"))
    partial = ctl("query", "--format", "csv", "select count(*) as n from events")
    assert partial.returncode == 0
    assert partial.stdout == b"n\n5\n"
    assert b"warning: " in partial.stderr
    assert b"bytes of acknowledged events are not in the database yet" in partial.stderr
    assert b"NotADirectoryError" in partial.stderr or b"FileExistsError" in partial.stderr
    assert "materialization failed" in running_daemon.log()
    load.unlink()  # the next load makes the directory again and catches up
    again = ctl("query", "--format", "csv", "select count(*) as n from events")
    assert again.stdout == b"n\n8\n" and again.stderr == b""


def test_the_daemon_starts_and_ingests_while_another_process_holds_the_database(
    daemon_factory: DaemonFactory,
) -> None:
    """A `telemetryctl query` that read the file while the daemon was down holds DuckDB's
    lock: the daemon still starts, acknowledges and journals; the store opens once the
    file is free, and loads everything."""
    daemon = daemon_factory().start()
    send(daemon, custom(5, "before"))
    assert count() == 5
    assert daemon.stop() == 0
    reader = duckdb.connect(str(daemon.home / "telemetry.duckdb"), read_only=True)
    try:
        daemon.start()
        send(daemon, custom(7, "during"))
        sent = ctl("send", "--type", "custom", "--name", "from-send")
        assert sent.returncode == 0 and sent.stderr == b""  # acknowledged, not spooled
        assert not list((daemon.home / "spool").iterdir())
        waiting = ctl("query", "--timeout", "2", "select count(*) from events")
        assert waiting.returncode == 3  # the store is unavailable
        assert b"in use by another process" in waiting.stderr
        store = status()["store"]
        assert store["open"] is False and "in use by another process" in store["error"]
        assert store["worker"]["state"] == "running"
    finally:
        reader.close()
    assert count() == 13  # the query waits for the store to open, then loads it all
    assert status()["store"]["open"] is True
    assert daemon.stop() == 0


def test_starts_that_fail_or_write_nothing_leave_no_empty_segment(
    daemon_factory: DaemonFactory,
) -> None:
    first = daemon_factory().start()
    send(first, custom(3, "a"))
    second = subprocess.run(
        [sys.executable, "-m", "telemetryd"],
        env=dict(os.environ, TELEMETRYD_HOME=str(first.home)),
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert second.returncode == 1  # another telemetryd holds the state directory
    assert b"holds" in second.stderr
    assert first.stop() == 0
    first.start()  # and a start that journals nothing
    assert first.stop() == 0
    segments = sorted(p.name for p in first.journal_dir.iterdir())
    assert len(segments) == 1 and segments[0].endswith("-000001.jsonl")


def test_damaged_compressed_segments_cost_only_their_damage(
    daemon_factory: DaemonFactory,
) -> None:
    """A truncated and an empty .gz segment: the daemon starts, every intact segment and
    the truncated one's complete lines are queryable, status names the damage, gc and
    rebuild work, and the database agrees with the journal. The rebuild that met the
    damage (and dropped the events only the database still had) says so: it printed
    only "rebuilt: N events"."""
    daemon = daemon_factory().start()
    for part in range(4):
        send(daemon, custom(200, f"p{part}"))
        new_segment(daemon)
    send(daemon, custom(1, "last"))
    gc = ctl("gc", "--json")
    assert gc.returncode == 0, gc.stderr
    assert len(json.loads(gc.stdout)["compressed"]) == 4
    assert daemon.stop() == 0
    gzipped = sorted(daemon.journal_dir.glob("*.jsonl.gz"))
    whole = gzipped[1].read_bytes()
    gzipped[1].write_bytes(whole[: len(whole) // 2])
    gzipped[2].write_bytes(b"")

    daemon.start()
    rebuilt = ctl("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    kept = daemon.journal_dir / gzipped[1].name.removesuffix(".gz")
    survivors = kept.read_bytes().count(b"\n")
    assert 0 < survivors < 200
    expected = 200 + survivors + 0 + 200 + 1
    assert rebuilt.stdout.decode() == (
        f"rebuilt: {expected} events (801 before: {801 - expected} fewer)\n"
    )
    said = rebuilt.stderr.decode().splitlines()
    assert [line.split(" (")[0] for line in said] == [
        f"damaged segment: {gzipped[1].name}",
        f"damaged segment: {gzipped[2].name}",
    ]
    assert f"; its first {kept.stat().st_size} bytes ({survivors} events) kept, " in said[0]
    assert "; its first 0 bytes (0 events) kept, " in said[1]
    assert count() == expected
    assert count("select count(*) as n from events where name = 'p2'") == 0
    store = status()["store"]
    assert sorted(item["segment"] for item in store["salvaged"]) == [
        gzipped[1].name,
        gzipped[2].name,
    ]
    assert (daemon.home / "quarantine" / (gzipped[1].name + ".damaged")).read_bytes() == (
        whole[: len(whole) // 2]
    )
    shown = ctl("status")
    assert b"damaged segment: " + gzipped[1].name.encode() in shown.stdout
    again = ctl("gc", "--json")
    assert again.returncode == 0, again.stderr
    assert count() == expected
    # The journal now says what the database says.
    lines = 0
    for path in daemon.journal_dir.iterdir():
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines += data.count(b"\n")
    assert lines == expected
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def _three_segments(daemon_factory: DaemonFactory, middle: int) -> tuple[Daemon, list[Path]]:
    """A stopped daemon whose journal has three segments (4, ``middle`` and 1 events), and
    its database gone, so that the next start loads the journal from its start."""
    daemon = daemon_factory().start()
    send(daemon, custom(4, "a"))
    new_segment(daemon)
    send(daemon, custom(middle, "b"))
    new_segment(daemon)
    send(daemon, custom(1, "c"))
    assert daemon.stop() == 0
    database = list(daemon.home.glob("telemetry.duckdb*"))
    assert database
    for path in database:
        path.unlink()
    return daemon, sorted(daemon.journal_dir.glob("*.jsonl"))


def _damage(segment: Path, lines: dict[int, list[bytes]]) -> None:
    """Write ``lines`` into the read-only ``segment``, each list before the line whose
    index (from 0) is its key."""
    kept = segment.read_bytes().splitlines(keepends=True)
    mode = segment.stat().st_mode
    segment.chmod(0o600)
    damaged = [new for at, line in enumerate(kept) for new in [*lines.get(at, []), line]]
    segment.write_bytes(b"".join(damaged))
    segment.chmod(mode)


def test_a_line_that_is_not_json_costs_only_itself_and_status_names_it(
    daemon_factory: DaemonFactory,
) -> None:
    """Lines damaged on disk in the middle of a segment: every other event loads, and
    `status` names the segment and the lines' numbers in it (they were only in the log,
    with every segment of the load's batch and a line number counted in the batch), for
    as long as the database holds what was loaded around them."""
    daemon, (_, second, _) = _three_segments(daemon_factory, 10)
    bad = b"this is not json {{{\n"
    _damage(second, {4: [bad], 6: [bad]})  # lines 5, 8

    daemon.start()
    assert count() == 15
    [report] = status()["store"]["bad_lines"]
    assert (report["segment"], report["lines"], report["count"]) == (second.name, [5, 8], 2)
    shown = ctl("status").stdout.decode()
    assert (
        f"journal lines left out: {second.name} lines 5, 8, not events (JSON is malformed" in shown
    )
    # A later store worker (and daemon) says so too: the lines are not read again.
    assert daemon.stop() == 0
    daemon.start()
    assert count() == 15
    assert status()["store"]["bad_lines"] == [report]
    # A rebuild meets them again, and says so (status still says it once)
    rebuilt = ctl("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout == b"rebuilt: 15 events (15 before)\n"
    assert rebuilt.stderr.decode().startswith(
        f"journal lines left out: {second.name} lines 5, 8, not events (JSON is malformed"
    )
    [again] = status()["store"]["bad_lines"]
    assert again | {"at": report["at"]} == report and again["at"] >= report["at"]
    assert daemon.stop() == 0
    assert f"journal segment {second.name}: lines 5, 8 not events" in daemon.log()


def test_json_lines_that_are_no_events_are_named_by_segment_and_line(
    daemon_factory: DaemonFactory,
) -> None:
    """Lines damaged on disk that are JSON but no events (an array, a number, objects
    without id or type), beside a line that is not JSON in another segment of the same
    load: every event loads, and `status` names each of them by segment and line. An
    object without id or type was dropped without a word; the others were named only
    when no line of the load was malformed JSON."""
    daemon, (first, second, _) = _three_segments(daemon_factory, 6)
    _damage(first, {2: [b"not json at all\n"]})  # line 3
    no_events = [b"[1, 2, 3]\n", b"42\n", b'{"id": "only-id"}\n', b"{}\n",
                 b'{"type": "custom", "id": null}\n']  # fmt: skip
    _damage(second, {1: no_events})  # lines 2-6

    daemon.start()
    assert count() == 11
    reports = {r["segment"]: r for r in status()["store"]["bad_lines"]}
    assert (reports[first.name]["lines"], reports[first.name]["count"]) == ([3], 1)
    assert (reports[second.name]["lines"], reports[second.name]["count"]) == ([2, 3, 4, 5, 6], 5)
    assert reports[second.name]["error"] == "not a JSON object but list"
    rebuilt = ctl("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout == b"rebuilt: 11 events (11 before)\n"
    said = rebuilt.stderr.decode()
    assert f"{first.name} line 3" in said and f"{second.name} lines 2, 3, 4, 5, 6" in said
    assert daemon.stop() == 0
    log = daemon.log()
    assert f"journal segment {second.name}: lines 2, 3, 4, 5, 6 not events" in log
    assert "Traceback" not in log


def test_stray_files_in_the_journal_are_ignored_and_reported(
    daemon_factory: DaemonFactory,
) -> None:
    """A backup copy of the current segment used to make the store treat the segment as
    closed (later events never loaded, `status` said nothing pending); a directory named
    like a segment made startup die with IsADirectoryError."""
    daemon = daemon_factory().start()
    send(daemon, custom(3, "a"))
    current = next(daemon.journal_dir.glob("*.jsonl"))
    assert daemon.stop() == 0
    (daemon.journal_dir / (current.name + ".bak")).write_bytes(current.read_bytes())
    (daemon.journal_dir / current.name.replace("-000001", "-000009")).mkdir()
    daemon.start()
    send(daemon, custom(4, "b"))
    assert count() == 7
    send(daemon, custom(2, "c"))
    assert count() == 9
    journal = status()["journal"]
    assert sorted(journal["ignored_files"]) == sorted(
        [current.name + ".bak", current.name.replace("-000001", "-000009")]
    )
    assert status()["store"]["pending_bytes"] == 0
    assert daemon.stop() == 0
    log = daemon.log()
    assert log.count("ignoring") == 2
    assert "Traceback" not in log


def test_an_unreadable_database_file_is_set_aside_and_rebuilt(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory().start()
    send(daemon, custom(6, "a"))
    assert count() == 6
    assert daemon.stop() == 0
    database = daemon.home / "telemetry.duckdb"
    database.write_bytes(b"not a database at all" * 100)
    older = [
        "telemetry.duckdb.unreadable-20200101T000000Z",
        "telemetry.duckdb.unreadable-20210101T000000Z",
    ]
    for name in older:  # set aside before: only the newest two are kept
        (daemon.home / name).write_bytes(b"x")
    daemon.start()
    assert count() == 6
    kept = sorted(path.name for path in daemon.home.glob("telemetry.duckdb.unreadable-*"))
    assert len(kept) == 2 and kept[0] == older[1] and kept[1] > older[1]
    assert "moved aside" in daemon.log()  # (written before the store opened)
    assert f"removed {daemon.home / older[0]}, an older unreadable database" in daemon.log()
    assert daemon.stop() == 0


def test_a_complete_answer_leaves_nothing_pending(daemon_factory: DaemonFactory) -> None:
    """A query loads what was journaled before it; when its answer is complete (no
    warning), `status` no longer counts those events as pending, without waiting for a
    timed load (here an hour away)."""
    daemon = daemon_factory(
        ["--set", "store.interval=3600", "--set", "store.pending-events=10000000"]
    ).start()
    send(daemon, custom(500, "p"))
    assert status()["store"]["pending_events"] == 500
    answered = ctl("query", "--format", "csv", "select count(*) as n from events")
    assert answered.stdout == b"n\n500\n" and answered.stderr == b""
    assert status()["store"]["pending_events"] == 0
