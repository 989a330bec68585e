"""Parquet export speed (store/export.py) against a bare DuckDB COPY of the same table.

    python -m bench.export               10M events (the database is built once, then cached)
    python -m bench.export --events 1000000
    python -m bench --only export        the same, inside the full harness (--quick: 1M)

The database is bench/query.py's cached one (canonical events from
:class:`bench.store.Generator` over 28 days, materialized by the store), copied into the
work directory so that the cache stays as it is. Figures, in alternating runs:

- **export**: :func:`telemetryd.store.export.export` of every event into an empty
  directory, on the store opened and sandboxed as the store worker opens it (the default
  ``store.memory-limit`` and ``store.threads``): one zstd ``COPY`` per (date, source)
  partition into the load directory, the files renamed into place, the manifest written.
  Target ≥ 1M events/s.
- **baseline**: a bare ``COPY events TO 'x.parquet' (FORMAT parquet, COMPRESSION zstd)``
  on a plain DuckDB connection to the same file with the same threads and DuckDB's own
  memory limit (80% of the machine's): what writing the table as Parquet costs at all,
  at its fastest.
- **incremental**: 100k new events in a new journal segment, loaded, then a second export
  run (which reads the new lines and joins them with the stored rows by id and
  ``received_at``), for information.

Every run's files are read back (DuckDB ``read_parquet``): the count must be the events'.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench import query as query_bench
from bench import store as store_bench

EVENTS = 10_000_000
QUICK_EVENTS = 1_000_000
INCREMENT = 100_000
TARGET = 1_000_000

Log = Callable[[str], None]


def _open(database: Path) -> Any:
    """The store as the worker opens it: default memory limit and threads, sandboxed."""
    from telemetryd import config
    from telemetryd.store.database import Store, batch_bytes_for
    from telemetryd.store.sandbox import harden

    settings = config.Store()
    memory = config.parse_size(settings.memory_limit)
    store = Store(str(database), batch_bytes=batch_bytes_for(memory))
    with store.cursor() as con:
        harden(
            con,
            allowed_dirs=[store.load_dir],
            memory_limit=f"{memory}B",
            threads=settings.threads,
        )
    return store


def _count(directory: Path) -> int:
    import duckdb

    con = duckdb.connect()
    try:
        [(count,)] = con.execute(
            "SELECT count(*) FROM read_parquet($glob, hive_partitioning = true)",
            {"glob": f"{directory}/**/*.parquet"},
        ).fetchall()
    finally:
        con.close()
    return int(count)


def time_export(database: Path, journal: Path, out: Path, events: int) -> tuple[float, int]:
    from telemetryd.store import export

    shutil.rmtree(out, ignore_errors=True)
    with _open(database) as store:
        started = time.perf_counter()
        report = export.export(store, str(journal), str(out))
        elapsed = time.perf_counter() - started
    if report.events != events or _count(out) != events:
        raise BenchError(f"exported {report.events} events ({_count(out)} read back), not {events}")
    return elapsed, len(report.files)


def time_baseline(database: Path, out: Path, events: int) -> float:
    import duckdb

    from telemetryd import config

    settings = config.Store()
    out.mkdir(parents=True, exist_ok=True)
    target = out / "events.parquet"
    target.unlink(missing_ok=True)
    con = duckdb.connect(str(database), read_only=True)
    try:
        # DuckDB's own memory limit (80% of the machine's): at the store worker's 160 MB,
        # one file written in order spills and runs ~6x slower (60k ev/s on 1M events).
        con.execute(f"SET threads = {settings.threads}")
        con.execute("SET enable_progress_bar = false")
        started = time.perf_counter()
        con.execute(f"COPY events TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
        elapsed = time.perf_counter() - started
    finally:
        con.close()
    if _count(out) != events:
        raise BenchError(f"the baseline wrote {_count(out)} rows, not {events}")
    return elapsed


def time_incremental(database: Path, journal: Path, work: Path, out: Path) -> float:
    """A second run into ``out`` (exported whole) after INCREMENT new events in a segment
    of their own."""
    from telemetryd.daemon.segments import list_segments
    from telemetryd.store import export

    before = _count(out)
    last = max(seq for seq, _ in list_segments(str(journal)))
    extra = work / "journal-extra"
    shutil.rmtree(extra, ignore_errors=True)
    extra.mkdir()
    segment = extra / f"20300101T000000Z-{last + 1:06d}.jsonl"
    gen = store_bench.Generator(INCREMENT, seed=11)
    with open(segment, "wb") as f:
        for line in gen.lines(INCREMENT):
            f.write(line)
    with _open(database) as store:
        loaded = store.materialize(str(extra))
        started = time.perf_counter()
        second = export.export(store, str(extra), str(out))
        elapsed = time.perf_counter() - started
    if second.events != loaded or _count(out) != before + loaded:
        raise BenchError(f"the second run exported {second.events} of {loaded} new events")
    return elapsed


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    events = QUICK_EVENTS if quick else EVENTS
    return measure(workdir, events, max(2, min(runs, 3)), log)


def measure(workdir: Path, events: int, runs: int, log: Log) -> dict[str, Any]:
    home, _baseline, info = query_bench.build(events, log)
    work = workdir / "export"
    work.mkdir(parents=True, exist_ok=True)
    database = work / "telemetry.duckdb"
    shutil.copyfile(home / "telemetry.duckdb", database)  # the cache stays as it was
    journal = home / "journal"
    exports: list[float] = []
    baselines: list[float] = []
    files = 0
    for index in range(runs):
        order = ["export", "baseline"] if index % 2 == 0 else ["baseline", "export"]
        for kind in order:
            if kind == "export":
                elapsed, files = time_export(database, journal, work / "out", events)
                exports.append(elapsed)
            else:
                baselines.append(time_baseline(database, work / "baseline", events))
            log(f"  {kind}: {events / (exports if kind == 'export' else baselines)[-1]:,.0f} ev/s")
    incremental = time_incremental(database, journal, work, work / "out")
    log(f"  incremental ({INCREMENT:,} new events): {incremental:.2f} s")
    shutil.rmtree(work, ignore_errors=True)
    export_s = statistics.median(exports)
    baseline_s = statistics.median(baselines)
    return {
        "events": events,
        "database": info,
        "files": files,
        "export_s": exports,
        "baseline_s": baselines,
        "export_events_per_s": round(events / export_s),
        "baseline_events_per_s": round(events / baseline_s),
        "ratio_vs_baseline": round(export_s / baseline_s, 2),
        "incremental_events": INCREMENT,
        "incremental_s": round(incremental, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path("/tmp") / f"tdbench-export-{time.time_ns()}"
    try:
        result = measure(workdir, args.events, args.runs, lambda m: print(m, file=sys.stderr))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"export {result['events']:,} events: {result['export_events_per_s']:,} ev/s "
        f"({result['files']} files); bare COPY: {result['baseline_events_per_s']:,} ev/s; "
        f"ratio {result['ratio_vs_baseline']}; incremental {INCREMENT:,}: "
        f"{result['incremental_s']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
