"""Retention: what is deleted and compressed, and that journal and database still agree.

The planning rules are checked on hand-made segment lists; everything else runs the
real daemon on real files and DuckDB, with segments closed by SIGHUP and aged with
``os.utime`` (retention judges age by the last write).
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest

from conftest import Daemon, ctl, exchange, summary
from telemetryd.config import Retention as RetentionConfig
from telemetryd.store.retention import DAY, Segment, plan

DaemonFactory = Callable[..., Daemon]
NOW = 1_800_000_000.0


# -- the rules, on hand-made segments ---------------------------------------------------


def seg(
    seq: int, size: int = 100, age_days: float = 0.0, *, gz: bool = False, usage: bool = False
) -> Segment:
    name = f"/j/20260101T000000Z-{seq:06d}" + (".usage" if usage else "") + ".jsonl"
    return Segment(seq, [name + (".gz" if gz else "")], size, NOW - age_days * DAY)


def names(segments: list[Segment]) -> list[int]:
    return [segment.seq for segment in segments]


def test_plan_keeps_only_the_usage_of_what_is_old_and_complete() -> None:
    segments = [seg(1, age_days=40), seg(2, age_days=35), seg(3, age_days=31), seg(4)]
    config = RetentionConfig(max_age_days=30, max_bytes=0, compress=False)
    # 2 is not materialized: kept, although older than the others.
    todo = plan(segments, {1, 3, 4}, segments[-1].files[0], config, NOW)
    assert names(todo.compact) == [1, 3]
    assert todo.delete == todo.shrink == todo.compress == []
    assert todo.journal_bytes == 400
    # Usage kept for 35 days: past that, a segment goes whole.
    config = RetentionConfig(max_age_days=30, usage_max_age_days=35, max_bytes=0, compress=False)
    todo = plan(segments, {1, 3, 4}, segments[-1].files[0], config, NOW)
    assert (names(todo.delete), names(todo.compact)) == ([1], [3])


def test_plan_leaves_what_the_forwarder_has_not_sent_to_the_size_limit_only() -> None:
    segments = [seg(1, age_days=40), seg(2, age_days=35), seg(3, age_days=31), seg(4)]
    config = RetentionConfig(max_age_days=30, max_bytes=0, compress=False)
    # The forwarder is in segment 2: age compacts 1 only.
    todo = plan(segments, {1, 2, 3, 4}, segments[-1].files[0], config, NOW, hold_from=2)
    assert names(todo.compact) == [1] and todo.delete == []
    config = RetentionConfig(max_age_days=30, usage_max_age_days=31, max_bytes=0)
    todo = plan(segments, {1, 2, 3, 4}, segments[-1].files[0], config, NOW, hold_from=2)
    assert names(todo.delete) == [1] and todo.compact == []
    # The size limit still frees the oldest, held or not: a journal never fills the disk.
    config = RetentionConfig(max_age_days=30, max_bytes=250, compress=False)
    todo = plan(segments, {1, 2, 3, 4}, segments[-1].files[0], config, NOW, hold_from=1)
    assert names(todo.shrink) == [1, 2] and todo.compact == todo.delete == []


def test_plan_leaves_compacted_segments_until_usage_ages_out() -> None:
    segments = [seg(1, age_days=400, usage=True, gz=True), seg(2, age_days=40, usage=True), seg(3)]
    config = RetentionConfig(max_age_days=30, max_bytes=0, compress=True)
    todo = plan(segments, {1, 2, 3}, segments[-1].files[0], config, NOW)
    assert todo.delete == todo.compact == todo.shrink == []
    assert names(todo.compress) == [2]  # a plain usage file is gzipped like any other
    config = RetentionConfig(max_age_days=30, usage_max_age_days=365, max_bytes=0)
    assert names(plan(segments, {1, 2, 3}, segments[-1].files[0], config, NOW).delete) == [1]


def test_plan_deletes_the_oldest_while_over_max_bytes() -> None:
    segments = [seg(1, 300, usage=True), seg(2, 300), seg(3, 300), seg(4, 300)]
    config = RetentionConfig(max_age_days=0, max_bytes=700, compress=False)
    todo = plan(segments, {1, 2, 3}, segments[-1].files[0], config, NOW)
    assert names(todo.shrink) == [1, 2]  # 1200 -> 600 bytes: usage too
    assert todo.delete == todo.compact == []


def test_plan_never_touches_the_newest_or_active_segment() -> None:
    segments = [seg(1, age_days=90), seg(2, age_days=90)]
    config = RetentionConfig(max_age_days=1, max_bytes=1)
    # Even if the store said so, the newest (and the one being written) stay.
    todo = plan(segments, {1, 2}, segments[0].files[0], config, NOW)
    assert todo.delete == todo.compact == todo.shrink == todo.compress == []
    todo = plan(segments, {1, 2}, "/j/20260101T000000Z-000009.jsonl", config, NOW)
    assert names(todo.shrink) == [1]


def test_plan_compresses_complete_plain_segments_it_keeps() -> None:
    segments = [seg(1, age_days=40), seg(2, gz=True), seg(3), seg(4), seg(5)]
    config = RetentionConfig(max_age_days=30, max_bytes=0, compress=True)
    todo = plan(segments, {1, 2, 3}, segments[-1].files[0], config, NOW)
    assert names(todo.compact) == [1]  # (compacted straight into a .gz)
    assert names(todo.compress) == [3]  # 2 is already compressed, 4 not materialized
    off = RetentionConfig(max_age_days=30, max_bytes=0, compress=False)
    assert plan(segments, {1, 2, 3}, segments[-1].files[0], off, NOW).compress == []


def test_limits_of_zero_are_off() -> None:
    segments = [seg(1, 10**9, age_days=10**4), seg(2)]
    config = RetentionConfig(max_age_days=0, max_bytes=0, compress=False)
    todo = plan(segments, {1}, segments[-1].files[0], config, NOW)
    assert todo.delete == todo.compact == todo.shrink == []


def test_usage_is_kept_at_least_as_long_as_the_rest() -> None:
    with pytest.raises(msgspec.ValidationError, match="usage-max-age-days"):
        msgspec.convert({"usage-max-age-days": 5}, RetentionConfig)  # max-age-days 30
    with pytest.raises(msgspec.ValidationError, match="at least max-age-days"):
        msgspec.convert({"max-age-days": 0, "usage-max-age-days": 5}, RetentionConfig)
    assert msgspec.convert({"usage-max-age-days": 30}, RetentionConfig).usage_max_age_days == 30


# -- the daemon --------------------------------------------------------------------------


def events(kind: str, count: int, prefix: str) -> bytes:
    """``count`` events of one type, with ids ``<prefix>-<type>-<n>``."""
    fields: dict[str, dict[str, Any]] = {
        "skill": {"name": "pdf"},
        "error": {"message": "boom"},
        "custom": {"name": "x"},
        "metric": {"name": "m", "value": 1.5, "kind": "gauge"},
    }
    return b"".join(
        json.dumps({"type": kind, "id": f"{prefix}-{kind}-{n}", **fields[kind]}).encode() + b"\n"
        for n in range(count)
    )


def send(daemon: Daemon, payload: bytes) -> None:
    count = payload.count(b"\n")
    assert exchange(daemon.events_socket, payload) == [summary(count, count)]


def new_segment(daemon: Daemon) -> None:
    """SIGHUP: the next write starts a new segment (waits until the daemon is done)."""
    assert daemon.proc is not None
    daemon.notifications.clear()
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("READY=1")


def segment_files(daemon: Daemon) -> list[Path]:
    return sorted(p for p in daemon.journal_dir.iterdir() if not p.name.startswith("."))


def journal_types(daemon: Daemon) -> collections.Counter[str]:
    """Events by type in every segment file, plain or gzipped; every line must parse."""
    counts: collections.Counter[str] = collections.Counter()
    for path in segment_files(daemon):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        assert not data or data.endswith(b"\n")
        counts.update(json.loads(line)["type"] for line in data.splitlines())
    return counts


def database_types() -> collections.Counter[str]:
    result = ctl("query", "--format", "json", "SELECT type, count(*) AS n FROM events GROUP BY 1")
    assert result.returncode == 0, result.stderr
    return collections.Counter({row["type"]: row["n"] for row in json.loads(result.stdout)})


def age(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def gc(*args: str) -> dict[str, Any]:
    result = ctl("gc", "--json", *args)
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def three_segments(daemon: Daemon) -> list[Path]:
    """Segment 1: 3 skill + 2 error; 2: 4 custom + 1 skill; 3 (being written): 2 metric."""
    send(daemon, events("skill", 3, "a") + events("error", 2, "a"))
    new_segment(daemon)
    send(daemon, events("custom", 4, "b") + events("skill", 1, "b"))
    new_segment(daemon)
    send(daemon, events("metric", 2, "c"))
    files = segment_files(daemon)[-3:]
    assert [p.name[-12:] for p in files] == ["000001.jsonl", "000002.jsonl", "000003.jsonl"]
    return files


def test_gc_keeps_journal_and_database_in_agreement(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--set", "retention.max-age-days=30"]).start()
    first, second, third = three_segments(daemon)
    everything = {"skill": 4, "error": 2, "custom": 4, "metric": 2}
    assert database_types() == journal_types(daemon) == everything
    age(first, 40)
    leftover = daemon.journal_dir / f".{second.name}.gz.tmp"  # a crashed compression's
    leftover.write_bytes(b"partial")

    preview = gc("--dry-run")
    assert preview["deleted"] == [first.name]
    assert preview["compressed"] == [second.name]
    assert first.exists() and leftover.exists()  # a dry run changes nothing
    assert database_types() == everything

    done = gc()
    assert done["deleted"] == [first.name]
    assert done["compressed"] == [second.name]
    assert done["events_deleted"] == 5
    assert done["bytes_after"] < done["bytes_before"]
    assert [p.name for p in segment_files(daemon)] == [second.name + ".gz", third.name]
    assert not leftover.exists()
    assert (daemon.journal_dir / (second.name + ".gz")).stat().st_mode & 0o077 == 0
    kept = {"custom": 4, "skill": 1, "metric": 2}
    assert journal_types(daemon) == database_types() == kept

    # The compressed segment is read again by a rebuild, with the same answers.
    rebuilt = ctl("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout == b"rebuilt: 7 events (7 before)\n"
    assert database_types() == kept
    # A compressed segment goes the same way once it is old: its ids are read from the .gz.
    compressed = daemon.journal_dir / (second.name + ".gz")
    age(compressed, 40)
    done = gc()
    assert (done["deleted"], done["events_deleted"]) == ([compressed.name], 5)
    assert journal_types(daemon) == database_types() == {"metric": 2}
    assert gc() | {"at": None, "bytes_before": 0, "bytes_after": 0} == {
        "ok": True,
        "dry_run": False,
        "deleted": [],
        "compacted": [],
        "compressed": [],
        "events_deleted": 0,
        "usage_deleted": 0,
        "warning": None,
        "bytes_before": 0,
        "bytes_after": 0,
        "at": None,
        "failed": [],
    }
    status = json.loads(ctl("status", "--json").stdout)
    assert status["retention"]["deleted"] == [] and status["journal"]["segments"] == 1
    assert daemon.stop() == 0


def test_alerts_are_kept_with_the_usage(daemon_factory: DaemonFactory) -> None:
    """The analyzer looks its alerts up so as never to raise one twice: an old segment
    keeps them with its usage (dropped with the rest, a monthly budget alert was raised
    again within its month)."""
    daemon = daemon_factory(["--set", "retention.max-age-days=30"]).start()
    alert = {"type": "alert", "id": "budget-2026-12", "severity": "critical"}
    alert |= {"kind": "budget", "message": "monthly spend reached 100%"}
    send(daemon, json.dumps(alert).encode() + b"\n" + events("custom", 3, "a"))
    new_segment(daemon)
    send(daemon, events("custom", 1, "b"))
    first = segment_files(daemon)[0]
    age(first, 40)
    done = gc()
    assert (done["compacted"], done["events_deleted"]) == ([first.name], 3)
    assert journal_types(daemon) == database_types() == {"alert": 1, "custom": 1}
    assert daemon.stop() == 0


def test_gc_by_size_deletes_the_oldest_first(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--set", "retention.compress=false"]).start()
    first, second, third = three_segments(daemon)
    new_segment(daemon)
    send(daemon, events("custom", 1, "d"))  # a fourth segment, so that the third is closed
    sizes = [p.stat().st_size for p in segment_files(daemon)]
    # Room for the last two segments only.
    config = daemon.home / "config.toml"
    config.write_text(f"[retention]\nmax-bytes = {sizes[2] + sizes[3]}\n")
    new_segment(daemon)  # the reload applies the new limit
    done = gc()
    assert done["deleted"] == [first.name, second.name]
    assert done["events_deleted"] == 10
    assert journal_types(daemon) == database_types() == {"metric": 2, "custom": 1}
    assert third.exists()
    assert daemon.stop() == 0


def test_the_size_limit_deletes_only_what_compression_cannot_make_fit(
    daemon_factory: DaemonFactory,
) -> None:
    """Plain segments counted at their plain size: the limit deleted the oldest (usage
    kept for good included) although gzipping them, which the same run then did, would
    have brought the journal under it. Compression comes first now."""
    daemon = daemon_factory().start()
    (first, second, third), sent = usage_segments(daemon)
    new_segment(daemon)
    send(daemon, events("custom", 1, "d"))  # (a fourth segment: the third is closed)
    plain = sum(p.stat().st_size for p in segment_files(daemon))
    config = daemon.home / "config.toml"
    config.write_text(f"[retention]\nmax-bytes = {plain * 3 // 4}\n")  # (gzip fits it)
    new_segment(daemon)
    # The dry run plans as the run does: it listed the oldest for deletion, and warned
    # that their usage would go.
    plan = gc("--dry-run")
    assert (plan["deleted"], plan["usage_deleted"], plan["warning"]) == ([], 0, None), plan
    assert sorted(plan["compressed"]) == sorted(p.name for p in (first, second, third))
    done = gc()
    assert done["deleted"] == [] and done["usage_deleted"] in (0, None), done
    assert sorted(done["compressed"]) == sorted(p.name for p in (first, second, third))
    assert done["bytes_after"] <= plain * 3 // 4
    assert sum(p.stat().st_size for p in segment_files(daemon)) == done["bytes_after"]
    assert cost_by_model() == expected_costs(sent)  # (every request kept)
    # A limit that even the gzipped journal is over deletes the oldest, as before.
    sizes = [p.stat().st_size for p in segment_files(daemon)]
    config.write_text(f"[retention]\nmax-bytes = {sum(sizes[1:])}\n")
    new_segment(daemon)
    oldest = segment_files(daemon)[0]
    assert oldest.name == first.name + ".gz"
    assert gc("--dry-run")["deleted"] == [oldest.name]
    assert gc()["deleted"] == [oldest.name]
    assert daemon.stop() == 0


def test_old_segments_are_compacted_before_the_size_limit_deletes_usage(
    daemon_factory: DaemonFactory,
) -> None:
    """Over `max-bytes` before compression, the run planned the size limit first: two
    segments due for compaction went to the limit instead, were not compacted, and the
    limit then deleted the oldest with its usage, which compacting them would have kept.
    Age comes first now, then compression, then the limit (and the dry run plans the
    same, counting the compacted segments at the size of their usage)."""
    import secrets

    daemon = daemon_factory(["--set", "retention.max-age-days=1"]).start()
    sent: list[dict[str, Any]] = []
    old = []
    for number, prefix in enumerate("ab", start=1):  # requests, and a lot of other events
        mine = requests(4, prefix, day=number)
        sent += mine
        noise = [
            {"type": "custom", "id": f"{prefix}-n{n}", "name": "x",
             "attrs": {"blob": secrets.token_hex(150)}}  # (random: gzip cannot shrink it)
            for n in range(100)
        ]  # fmt: skip
        send(daemon, lines(mine) + lines(noise))
        old.append(segment_files(daemon)[-1])
        new_segment(daemon)
    send(daemon, events("skill", 3, "c"))
    new_segment(daemon)
    send(daemon, events("custom", 1, "d"))  # (a fourth segment: the third is closed)
    for path in old:
        age(path, 3)
    plain = sum(p.stat().st_size for p in segment_files(daemon))
    limit = 10_000  # (the old segments' noise alone, gzipped, is about 30 KB)
    assert plain > 3 * limit
    daemon.stop()
    daemon.args += ["--set", f"retention.max-bytes={limit}"]
    daemon.start()
    plan = gc("--dry-run")
    assert plan["compacted"] == [p.name for p in old], plan
    assert (plan["deleted"], plan["usage_deleted"], plan["warning"]) == ([], 0, None), plan
    done = gc()
    assert done["compacted"] == [p.name for p in old], done
    assert done["deleted"] == [] and done["usage_deleted"] in (0, None), done
    assert done["bytes_after"] <= limit
    assert cost_by_model() == expected_costs(sent)  # (every request kept)
    assert daemon.stop() == 0


def test_gc_never_deletes_what_is_not_materialized(daemon_factory: DaemonFactory) -> None:
    """While another process holds the database file (a `telemetryctl query` that read it
    while the daemon was down), the daemon starts and ingests, but gc deletes nothing: it
    cannot know what is materialized. Once the file is free, the store opens and gc runs."""
    daemon = daemon_factory().start()
    first, _, _ = three_segments(daemon)
    assert sum(database_types().values()) == 12  # (the database exists)
    assert daemon.stop() == 0
    age(first, 400)
    reader = duckdb.connect(str(daemon.home / "telemetry.duckdb"), read_only=True)
    try:
        daemon.start()
        send(daemon, events("error", 2, "d"))  # ingest does not wait for the store
        refused = ctl("gc", "--json")
        assert refused.returncode == 1
        assert b"in use by another process" in refused.stderr
        assert first.exists()
    finally:
        reader.close()
    done = gc()  # the store opens within its retry backoff, then gc runs
    assert done["deleted"] == [first.name]
    db = database_types()
    assert db["error"] == 2 and "skill" in db  # segment 1's events went with it
    assert daemon.stop() == 0


def test_the_daemon_runs_retention_by_itself(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory().start()
    first, second, third = three_segments(daemon)
    assert daemon.stop() == 0
    age(first, 400)
    daemon.args = ["--set", "retention.interval=0.2"]
    daemon.start()
    send(daemon, events("metric", 1, "d"))  # the restart's first write opens segment 4
    deadline = time.monotonic() + 20
    while first.exists() or second.exists() or third.exists():  # deleted, compressed x2
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    assert journal_types(daemon) == database_types() == {"custom": 4, "skill": 1, "metric": 3}
    assert "retention: 1 segments deleted, 0 compacted to their usage (5 events deleted)" in (
        daemon.log()
    )
    assert daemon.stop() == 0


def test_ids_in_compressed_segments_are_remembered_across_restarts(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory().start()
    three_segments(daemon)
    assert gc()["compressed"] != []
    assert daemon.stop() == 0
    daemon.start()
    # Resent: segment 1 ("a-*") and 2 ("b-*") are compressed now.
    payload = events("skill", 3, "a") + events("custom", 4, "b")
    assert exchange(daemon.events_socket, payload) == [summary(7, 0, duplicates=7)]
    assert daemon.stop() == 0


# -- usage kept for good ------------------------------------------------------------------

MODELS = ("claude-sonnet-4", "gpt-5", "gemini-2.5-pro")


def requests(count: int, prefix: str, day: int) -> list[dict[str, Any]]:
    """``count`` model requests on 2026-01-<day>, spread over models and sessions."""
    return [
        {
            "type": "api_request",
            "id": f"{prefix}-req-{n}",
            "ts": f"2026-01-{day:02d}T{n % 24:02d}:{n % 60:02d}:00.000Z",
            "session_id": f"{prefix}-s{n % 3}",
            "agent": {"model": MODELS[n % 3]},
            "tokens": {
                "source": "actual",
                "input": 100 + n,
                "output": 10 * n + 1,
                "cache_read": 7 * n,
                "cache_creation": n,
            },
            "cost_usd": 0.001 * (n + 1),
        }
        for n in range(count)
    ]


def lines(found: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in found)


def usage_segments(daemon: Daemon) -> tuple[list[Path], list[dict[str, Any]]]:
    """Three segments, each mixing model requests with other events; the third is being
    written. The requests sent, in order."""
    sent: list[dict[str, Any]] = []
    for number, prefix in enumerate("abc", start=1):
        mine = requests(5 + number, prefix, day=number)
        sent += mine
        send(daemon, events("skill", 2, prefix) + lines(mine) + events("error", 3, prefix))
        if prefix != "c":
            new_segment(daemon)
    return segment_files(daemon)[-3:], sent


def cost_by_model() -> dict[str, tuple[int, int, int, float]]:
    """The cost_by_model macro over all time: model -> (input, output, requests, cost to
    a millionth of a cent: sums of floats)."""
    result = ctl(
        "query", "--format", "json", "SELECT * FROM cost_by_model(days := 100000) ORDER BY model"
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    return {
        r["model"]: (
            r["total_input"], r["total_output"], r["request_count"], round(r["total_cost_usd"], 8)
        )
        for r in rows
    }  # fmt: skip


def expected_costs(sent: list[dict[str, Any]]) -> dict[str, tuple[int, int, int, float]]:
    """cost_by_model computed from the requests as sent."""
    sums: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0, 0, 0.0])
    for event in sent:
        row = sums[event["agent"]["model"]]
        row[0] += event["tokens"]["input"]
        row[1] += event["tokens"]["output"]
        row[2] += 1
        row[3] += event["cost_usd"]
    return {model: (int(a), int(b), int(c), round(d, 8)) for model, (a, b, c, d) in sums.items()}


def daily_totals() -> dict[str, Any]:
    result = ctl("report", "daily", "--json", "-z", "UTC")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    totals = out["totals"]
    return {
        "days": [(r["date"], r["totalTokens"], r["requests"]) for r in out["daily"]],
        "tokens": [totals[k] for k in ("inputTokens", "outputTokens", "cacheReadTokens",
                                       "cacheCreationTokens", "requests")],
        "cost": round(totals["totalCost"], 8),
    }  # fmt: skip


def no_duplicates() -> bool:
    result = ctl("query", "--format", "csv", "SELECT count(*) - count(DISTINCT id) FROM events")
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()[1] == "0"


def test_old_segments_keep_their_usage_and_a_rebuild_gives_the_same_totals(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(["--set", "retention.max-age-days=30"]).start()
    (first, second, third), sent = usage_segments(daemon)
    costs, daily = cost_by_model(), daily_totals()
    assert costs == expected_costs(sent)
    assert daily["tokens"][4] == len(sent) == 6 + 7 + 8
    age(first, 40)
    age(second, 400)
    mtimes = [first.stat().st_mtime, second.stat().st_mtime]

    preview = gc("--dry-run")
    assert (preview["deleted"], preview["compacted"]) == ([], [first.name, second.name])
    done = gc()
    assert done["deleted"] == [] and done["compacted"] == [first.name, second.name]
    assert done["events_deleted"] == 2 * (2 + 3)  # each segment's skills and errors
    assert done["usage_deleted"] == 0 and done["warning"] is None
    kept = [first.name.replace(".jsonl", ".usage.jsonl.gz"),
            second.name.replace(".jsonl", ".usage.jsonl.gz")]  # fmt: skip
    assert [p.name for p in segment_files(daemon)] == [*kept, third.name]
    for name, mtime in zip(kept, mtimes, strict=True):
        path = daemon.journal_dir / name
        assert path.stat().st_mode & 0o777 == 0o400  # read-only, as closed segments are
        assert path.stat().st_mtime == mtime  # its age goes on from the segment's
    # Every request is still in the journal, byte for byte as it was journaled.
    requests_kept = [
        line
        for name in kept
        for line in gzip.decompress((daemon.journal_dir / name).read_bytes()).splitlines()
    ]
    assert [json.loads(line)["id"] for line in requests_kept] == [
        e["id"] for e in sent if not e["id"].startswith("c-")
    ]
    left = {"api_request": len(sent), "skill": 2, "error": 3}
    assert journal_types(daemon) == database_types() == left
    assert cost_by_model() == costs and daily_totals() == daily

    rebuilt = ctl("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    held = len(sent) + 5
    assert rebuilt.stdout == f"rebuilt: {held} events ({held} before)\n".encode()
    assert database_types() == left and no_duplicates()
    assert cost_by_model() == costs and daily_totals() == daily

    # Compacted segments stay as they are (still past max-age-days).
    before = {p.name: p.stat().st_mtime_ns for p in segment_files(daemon)}
    again = gc()
    assert again["deleted"] == again["compacted"] == [] and again["events_deleted"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in segment_files(daemon)} == before
    assert daemon.stop() == 0


def test_usage_goes_past_usage_max_age_days_and_plain_when_not_compressing(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(
        ["--set", "retention.max-age-days=30", "--set", "retention.usage-max-age-days=365",
         "--set", "retention.compress=false"]
    ).start()  # fmt: skip
    (first, second, third), sent = usage_segments(daemon)
    age(first, 400)  # past both limits: goes whole
    age(second, 40)  # past max-age-days only: its usage stays, uncompressed
    done = gc()
    assert done["deleted"] == [first.name] and done["compacted"] == [second.name]
    usage = second.name.replace(".jsonl", ".usage.jsonl")
    assert [p.name for p in segment_files(daemon)] == [usage, third.name]
    a_requests = [e for e in sent if e["id"].startswith("a-")]
    assert done["events_deleted"] == 5 + len(a_requests) + 5
    assert done["usage_deleted"] == 0  # usage-max-age-days: as configured, no warning
    remaining = [e for e in sent if not e["id"].startswith("a-")]
    assert cost_by_model() == expected_costs(remaining)
    assert journal_types(daemon) == database_types() == {
        "api_request": len(remaining), "skill": 2, "error": 3,
    }  # fmt: skip
    assert daemon.stop() == 0


def test_the_size_limit_deletes_the_oldest_usage_with_a_warning(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(["--set", "retention.max-age-days=30"]).start()
    (first, second, _), sent = usage_segments(daemon)
    age(first, 40)
    age(second, 40)
    assert gc()["compacted"] == [first.name, second.name]
    files = segment_files(daemon)
    # Room for the second segment's usage and the third segment only.
    config = daemon.home / "config.toml"
    config.write_text(
        "[retention]\nmax-age-days = 30\n"
        f"max-bytes = {files[1].stat().st_size + files[2].stat().st_size}\n"
    )
    new_segment(daemon)  # the reload applies the new limit
    a_requests = [e for e in sent if e["id"].startswith("a-")]
    # A dry run gives the warning too, of what would go (and neither keeps nor logs it).
    preview = ctl("gc", "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert f"would delete {files[0].name}".encode() in preview.stdout
    assert preview.stderr.decode().startswith(
        f"warning: {len(a_requests)} model requests (usage, otherwise kept for good) would "
        "be deleted with the oldest 1 journal segments: the journal is over [retention] "
        "max-bytes"
    )
    assert gc("--dry-run")["usage_deleted"] == len(a_requests)
    assert json.loads(ctl("status", "--json").stdout)["retention"]["warning"] is None
    assert files[0].exists() and "model requests" not in daemon.log()
    result = ctl("gc")
    assert result.returncode == 0, result.stderr
    assert f"deleted {files[0].name}".encode() in result.stdout
    warning = result.stderr.decode()
    assert warning.startswith(f"warning: {len(a_requests)} model requests (usage")
    assert "max-bytes" in warning
    remaining = [e for e in sent if not e["id"].startswith("a-")]
    assert cost_by_model() == expected_costs(remaining)
    # status says so, now and after runs that delete nothing, and so does the log.
    assert gc()["warning"] is None
    status = json.loads(ctl("status", "--json").stdout)
    assert status["retention"]["warning"] == warning.removeprefix("warning: ").strip()
    assert "retention: warning: " in ctl("status").stdout.decode()
    assert f"retention: {len(a_requests)} model requests (usage" in daemon.log()
    # With room made, the deleted requests sent again (their files imported again) are
    # kept: their ids left the daemon's dedup window with their segment, without a restart.
    config.write_text("[retention]\nmax-age-days = 30\n")
    new_segment(daemon)
    assert exchange(daemon.events_socket, lines(a_requests)) == [
        summary(len(a_requests), len(a_requests))
    ]
    assert cost_by_model() == expected_costs(sent)
    # ... while what is still journaled stays a duplicate
    assert exchange(daemon.events_socket, lines(remaining)) == [
        summary(len(remaining), 0, duplicates=len(remaining))
    ]
    assert daemon.stop() == 0


# A retention run in a process of its own (the daemon stopped), which stops at ``point``:
# killed (SIGKILL) while writing the usage file, after the database recorded the
# compaction but before the rename, or after the rename but before the old file went;
# or, at "fail", the rename fails (a full disk, say) and the run goes on.
CRASH = """
import os, signal, sys
from telemetryd.config import Retention
from telemetryd.store import retention
from telemetryd.store.database import Store

home, point = sys.argv[1], sys.argv[2]
real_rename, real_unlink, real_fsync = os.rename, os.unlink, os.fsync
failed = []

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def rename(src, dst):
    if dst.endswith(".usage.jsonl.gz"):
        if point == "rename":
            die()
        if point == "fail" and not failed:
            failed.append(dst)
            raise OSError(28, "No space left on device")
    return real_rename(src, dst)

def unlink(path, *args, **kwargs):
    if point == "unlink" and path.endswith("-000001.jsonl"):
        die()
    return real_unlink(path, *args, **kwargs)

def fsync(fd):
    if point == "write" and os.readlink(f"/proc/self/fd/{fd}").endswith(".usage.jsonl.gz.tmp"):
        die()
    return real_fsync(fd)

os.rename, os.unlink, os.fsync = rename, unlink, fsync
store = Store(os.path.join(home, "telemetry.duckdb"))
report = retention.collect(store, os.path.join(home, "journal"), "", Retention(max_age_days=30))
print(report["compacted"])
"""


@pytest.mark.parametrize("point", ["write", "rename", "unlink", "fail"])
def test_a_compaction_stopped_anywhere_loses_nothing_and_doubles_nothing(
    daemon_factory: DaemonFactory, point: str
) -> None:
    daemon = daemon_factory(["--set", "retention.max-age-days=30"]).start()
    (first, second, third), sent = usage_segments(daemon)
    costs, daily = cost_by_model(), daily_totals()
    assert daemon.stop() == 0  # (everything materialized)
    age(first, 40)
    age(second, 40)
    run = subprocess.run(
        [sys.executable, "-c", CRASH, str(daemon.home), point],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if point == "fail":  # the first compaction failed, the second went through
        assert run.returncode == 0, run.stderr
        assert run.stdout.decode().strip() == repr([second.name])
        assert b"cannot compact" in run.stderr and b"No space left" in run.stderr
    else:
        assert run.returncode == -signal.SIGKILL, run.stderr
    usage = first.name.replace(".jsonl", ".usage.jsonl.gz")
    tmp = f".{usage}.tmp"
    on_disk = {p.name for p in daemon.journal_dir.iterdir()}
    assert {first.name, third.name} <= on_disk  # the old file is there in every case
    assert (usage in on_disk) == (point == "unlink")
    assert (tmp in on_disk) == (point in ("write", "rename"))
    # What the stop left: the database says what the journal says, without a second
    # copy of anything, and with every request.
    daemon.start()
    assert no_duplicates()
    assert cost_by_model() == costs and daily_totals() == daily
    # The next run completes it; a rebuild then gives the same answers.
    gc()
    left = {"api_request": len(sent), "skill": 2, "error": 3}
    assert journal_types(daemon) == database_types() == left
    names_now = [p.name for p in segment_files(daemon)]
    assert names_now == [
        first.name.replace(".jsonl", ".usage.jsonl.gz"),
        second.name.replace(".jsonl", ".usage.jsonl.gz"),
        third.name,
    ]
    assert not [p for p in daemon.journal_dir.iterdir() if p.name.startswith(".")]
    assert no_duplicates() and cost_by_model() == costs and daily_totals() == daily
    rebuilt = ctl("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert database_types() == left and no_duplicates()
    assert cost_by_model() == costs and daily_totals() == daily
    assert daemon.stop() == 0
