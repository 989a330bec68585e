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
  memory limit (80% of the machine's): what writing the table as Parquet costs at all.
- **bare at the worker's limits**: the same bare COPY to one file within the store
  worker's memory limit and threads (and its ``block_allocator_memory``), with the
  export's writer options (row groups of :data:`telemetryd.store.export.ROW_GROUP_ROWS`,
  ``PRESERVE_ORDER false``, the dictionary limit): the
  fastest the writer goes where the export runs (at that limit DuckDB's default row
  groups spill, and the in-order write of one file runs at a sixth of the speed).
- **incremental**: 100k new events in a new journal segment, loaded, then a second export
  run (which reads the new lines and joins them with the stored rows by id and
  ``received_at``), for information.

Each figure runs in a process of its own, which gives its peak RSS (its ``VmHWM`` at
the end: ``wait4``'s figure would start from this process's own peak, which a child
inherits on Linux, and which is large just after the database was built): the store
worker's, for the export. Every run's files are read back (DuckDB
``read_parquet``): the count must be the events'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError, fresh_bytecode
from bench import query as query_bench
from bench import store as store_bench
from bench.procs import memory_kib

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


def time_export(database: Path, journal: Path, out: Path, events: int) -> dict[str, Any]:
    from telemetryd.store import export

    shutil.rmtree(out, ignore_errors=True)
    with _open(database) as store:
        started = time.perf_counter()
        report = export.export(store, str(journal), str(out))
        elapsed = time.perf_counter() - started
    if report.events != events or _count(out) != events:
        raise BenchError(f"exported {report.events} events ({_count(out)} read back), not {events}")
    return {"s": elapsed, "files": len(report.files)}


def time_baseline(database: Path, out: Path, events: int, *, limits: bool) -> dict[str, Any]:
    """The bare COPY of the table to one file: with DuckDB's own memory limit and row
    groups, or (``limits``) within the worker's, with the export's writer options."""
    import duckdb

    from telemetryd import config
    from telemetryd.store import export

    settings = config.Store()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    target = out / "events.parquet"
    options = "FORMAT parquet, COMPRESSION zstd"
    con = duckdb.connect(str(database), read_only=True)
    try:
        con.execute(f"SET threads = {settings.threads}")
        con.execute("SET enable_progress_bar = false")
        if limits:
            memory = config.parse_size(settings.memory_limit)
            con.execute(f"SET memory_limit = '{memory}B'")
            con.execute(f"SET block_allocator_memory = '{memory}B'")  # as the worker's
            con.execute(f"SET temp_directory = '{out}/spill'")
            options += f", {export.WRITER_OPTIONS}"
        started = time.perf_counter()
        con.execute(f"COPY events TO '{target}' ({options})")
        elapsed = time.perf_counter() - started
    finally:
        con.close()
    if _count(out) != events:
        raise BenchError(f"the baseline wrote {_count(out)} rows, not {events}")
    return {"s": elapsed}


def time_incremental(database: Path, journal: Path, work: Path, out: Path) -> dict[str, Any]:
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
    return {"s": elapsed}


def _child(kind: str, work: Path, journal: Path, events: int) -> dict[str, Any]:
    database = work / "telemetry.duckdb"
    if kind == "export":
        return time_export(database, journal, work / "out", events)
    if kind == "incremental":
        return time_incremental(database, journal, work, work / "out")
    return time_baseline(database, work / kind, events, limits=kind == "limits")


def _spawn(
    kind: str, work: Path, journal: Path, events: int, *, src: Path | None = None
) -> dict[str, Any]:
    """Run one figure in a process of its own (telemetryd from ``src``, by default this
    checkout's); its result, with its peak RSS (MB)."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(src or root / "src"), str(root), *filter(None, [env.get("PYTHONPATH")])]
    )
    args = ["--child", kind, str(work), str(journal), str(events)]
    with open(work / f"{kind}.stderr", "w+b") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.export", *args],
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            raise BenchError(f"{kind} exited with {proc.returncode}: {errors.read()[-800:]!r}")
    result: dict[str, Any] = json.loads(out)
    peak = result.pop("peak_rss_kib", usage.ru_maxrss)  # (KiB on Linux)
    result["peak_rss_mb"] = round(peak / 1024, 1)
    return result


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    events = QUICK_EVENTS if quick else EVENTS
    return measure(workdir, events, max(2, min(runs, 3)), log)


def measure(
    workdir: Path, events: int, runs: int, log: Log, *, compare: Path | None = None
) -> dict[str, Any]:
    """``compare``: another checkout's ``src`` whose export is timed as well, in turn
    with this one's (``export_ref``), to measure a change in the same session."""
    home, _baseline, info = query_bench.build(events, log)
    work = workdir / "export"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(home / "telemetry.duckdb", work / "telemetry.duckdb")  # the cache stays
    journal = home / "journal"
    kinds = ["export", "baseline", "limits"] + (["export_ref"] if compare else [])
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    rss: dict[str, float] = dict.fromkeys(kinds, 0.0)
    files = 0
    for index in range(runs):
        for kind in kinds if index % 2 == 0 else kinds[::-1]:
            src = compare if kind == "export_ref" else None
            result = _spawn(kind.removesuffix("_ref"), work, journal, events, src=src)
            seconds[kind].append(result["s"])
            rss[kind] = max(rss[kind], result["peak_rss_mb"])
            files = result.get("files", files) if kind == "export" else files
            log(f"  {kind}: {events / result['s']:,.0f} ev/s, peak RSS {result['peak_rss_mb']} MB")
    incremental = _spawn("incremental", work, journal, events)
    log(f"  incremental ({INCREMENT:,} new events): {incremental['s']:.2f} s")
    shutil.rmtree(work, ignore_errors=True)
    medians = {kind: statistics.median(values) for kind, values in seconds.items()}
    result = {
        "events": events,
        "database": info,
        "files": files,
        "export_s": seconds["export"],
        "baseline_s": seconds["baseline"],
        "limits_s": seconds["limits"],
        "peak_rss_mb": rss,
        "export_events_per_s": round(events / medians["export"]),
        "baseline_events_per_s": round(events / medians["baseline"]),
        "limits_events_per_s": round(events / medians["limits"]),
        # speed ratios: the export's events/s over the bare COPY's
        "ratio_vs_baseline": round(medians["baseline"] / medians["export"], 2),
        "ratio_vs_limits": round(medians["limits"] / medians["export"], 2),
        "incremental_events": INCREMENT,
        "incremental_s": round(incremental["s"], 3),
        "incremental_peak_rss_mb": incremental["peak_rss_mb"],
    }
    if compare:
        result["export_ref_s"] = seconds["export_ref"]
        result["export_ref_events_per_s"] = round(events / medians["export_ref"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--compare", type=Path, help="another checkout's src/: time its export too, in turn"
    )
    parser.add_argument("--child", nargs=4, metavar=("KIND", "WORK", "JOURNAL", "EVENTS"))
    args = parser.parse_args(argv)
    if args.child:
        kind, work, journal, events = args.child
        result = _child(kind, Path(work), Path(journal), int(events))
        result["peak_rss_kib"] = memory_kib(os.getpid())["VmHWM"]
        print(json.dumps(result))
        return 0
    fresh_bytecode()
    workdir = Path("/tmp") / f"tdbench-export-{time.time_ns()}"
    try:
        result = measure(
            workdir,
            args.events,
            args.runs,
            lambda m: print(m, file=sys.stderr),
            compare=args.compare,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rss = result["peak_rss_mb"]
    rows = [
        ("bare COPY, one file, DuckDB's memory limit", "baseline_events_per_s", "baseline"),
        ("bare COPY, one file, the worker's limits", "limits_events_per_s", "limits"),
        *([("export (--compare)", "export_ref_events_per_s", "export_ref")] * bool(args.compare)),
        ("export", "export_events_per_s", "export"),
    ]
    print(f"{result['events']:,} events, medians of {args.runs} runs")
    print(f"{'':46} {'events/s':>10} {'peak RSS':>10}")
    for label, key, kind in rows:
        print(f"{label:46} {result[key]:>10,} {rss[kind]:>7.0f} MB")
    print(
        f"export: {result['files']} files, {result['ratio_vs_limits']}x the speed of the bare "
        f"COPY at the worker's limits; incremental {INCREMENT:,}: {result['incremental_s']} s "
        f"(peak RSS {result['incremental_peak_rss_mb']:.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
