"""`telemetryctl query` whole-process wall time against a fresh duckdb process, and freshness.

    python -m bench.query            1M events (the database is built once, then cached)
    python -m bench.query --big      also 10M events (building it takes minutes, once)
    python -m bench --only query     the same, inside the full harness

Databases: canonical journal segments from :class:`bench.store.Generator` (sessions
with model requests, tool calls, skills, sub-agents, ... over the last 28 days),
materialized by :class:`telemetryd.store.database.Store` into ``telemetry.duckdb``, and
cached under ``/tmp/telemetryd-bench-cache/<events>-<fingerprint>/`` (the fingerprint
covers the generator and the store's table layout). A copy of the database,
``baseline.duckdb``, serves the baseline: while the daemon holds its file, no other
process may open it, not even read-only.

Figures, per size:

- ``telemetryctl query --format csv "select * from cost_by_model(days := 30)"``, from
  spawn to reaped exit, with the real daemon (default settings) serving the cached home;
- the baseline: a fresh ``python -c`` that imports duckdb, opens ``baseline.duckdb``
  read-only, runs the same SQL and prints the rows;
- alternating one of each (order swapped every pair), after warm-up runs; medians and
  the per-pair ratio (target ≤ 0.3);
- the daemon's own time for the query (``elapsed_ms`` of its reply), for information;
- cold, on the 1M database (:func:`time_cold`): the same query when the store worker is
  not running, so the daemon must start it first, against the fresh process, in
  alternating pairs (target ≤ 1.5). Where the daemon has no worker that exits when
  idle yet, it is the first query after a daemon start.

Freshness: on a copy of the 1M home, ~50 times: `telemetryctl send --strict` one event,
and once it has exited, ask the daemon over the control socket for that event's id
until a query sees it. Read-your-writes means the first query always does; the time is
then that one query's round trip, including the materialization it triggers.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import inspect
import io
import json
import os
import shutil
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench import send as send_bench
from bench import store as store_bench
from bench.procs import Telemetryd, wait_no_children

SQL = "select * from cost_by_model(days := 30)"
FRESH = (
    "import sys, duckdb\n"
    "con = duckdb.connect(sys.argv[1], read_only=True)\n"
    "print(con.execute(sys.argv[2]).fetchall())\n"
)
CACHE = Path("/tmp/telemetryd-bench-cache")
SIZES = [1_000_000]
BIG_SIZES = [10_000_000]
BIG = False  # `--big`: also the 10M database
TARGET_RATIO = 0.3
WARMUP = 3
FRESHNESS_SENDS = 50

Log = Callable[[str], None]


def daemon_args() -> list[str]:
    """Default settings, except that retention leaves the cached journal as it is."""
    from telemetryd import config

    if "retention" in config.Config.__struct_fields__:
        return ["--set", "retention.compress=false", "--set", "retention.max-age-days=0"]
    return []


# -- the cached databases ------------------------------------------------------------------


def fingerprint() -> str:
    """Changes when the generated events or the store's tables (or their row groups)
    would."""
    from importlib import resources

    from telemetryd.store import database as store

    digest = hashlib.sha256(inspect.getsource(store_bench.Generator).encode())
    for name in ("schema.sql", "load.sql"):
        digest.update(resources.files("telemetryd").joinpath("sql", name).read_bytes())
    digest.update(str(store.SCHEMA_VERSION).encode())
    digest.update(str(getattr(store, "ROW_GROUP_ROWS", "")).encode())  # the row groups' size
    return digest.hexdigest()[:10]


def build(events: int, log: Log) -> tuple[Path, Path, dict[str, Any]]:
    """The cached home (journal + database) for ``events``, its baseline copy, and how it
    was built; built now if missing."""
    from telemetryd.store.database import Store

    root = CACHE / f"{events}-{fingerprint()}"
    home, baseline, ready = root / "home", root / "baseline.duckdb", root / "ready.json"
    if ready.exists():
        info = json.loads(ready.read_text())
        info["cached"] = True
        ready.touch()  # in use: see below
        return home, baseline, info
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CACHE.glob(f"{events}-*"):
        # Another fingerprint: an older build, or another checkout's (a branch with
        # another schema) that may be in use right now: removed once unused for a day.
        used = stale / "ready.json" if (stale / "ready.json").exists() else stale
        if time.time() - used.stat().st_mtime > 86_400:
            shutil.rmtree(stale, ignore_errors=True)
    log(f"  building the {events:,}-event database in {root} (once; cached) ...")
    journal = home / "journal"
    started = time.perf_counter()
    size = store_bench.write_journal(journal, events, store_bench.Generator(events))
    generated_s = time.perf_counter() - started
    log(f"  generated {size / 1e9:.2f} GB of journal in {generated_s:.0f} s")
    with Store(str(home / "telemetry.duckdb")) as store:
        started = time.perf_counter()
        loaded = store.materialize(str(journal))
        load_s = time.perf_counter() - started
    if loaded != events:
        raise BenchError(f"materialized {loaded} of {events} events")
    log(f"  materialized in {load_s:.1f} s = {events / load_s:,.0f} events/s")
    shutil.copyfile(home / "telemetry.duckdb", baseline)
    info = {
        "events": events,
        "journal_bytes": size,
        "database_bytes": baseline.stat().st_size,
        "generate_s": round(generated_s, 1),
        "materialize_s": round(load_s, 2),
        "materialize_events_per_s": round(events / load_s),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    ready.write_text(json.dumps(info, indent=2) + "\n")
    info["cached"] = False
    return home, baseline, info


# -- talking to the daemon -----------------------------------------------------------------


def ask(
    control_socket: str, sql: str, params: dict[str, Any] | None = None
) -> tuple[list[Any], float]:
    """Run one query over the control socket: its rows and the daemon's elapsed_ms."""
    request: dict[str, Any] = {"op": "query", "sql": sql}
    if params:
        request["params"] = params
    rows: list[Any] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(control_socket)
        sock.sendall(json.dumps(request).encode() + b"\n")
        carry = b""
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise BenchError("the daemon closed the query connection")
            *lines, carry = (carry + chunk).split(b"\n")
            for line in lines:
                reply = json.loads(line)
                if "rows" in reply:
                    rows.extend(reply["rows"])
                elif reply.get("ok"):
                    return rows, float(reply["elapsed_ms"])
                elif "error" in reply:
                    raise BenchError(f"query failed: {reply['message']}")


def _check_answers(ctl: list[str], env: dict[str, str], baseline: Path) -> int:
    """The client's csv and the baseline's rows agree; the row count."""
    import subprocess

    import duckdb

    got = subprocess.run(ctl, env=env, capture_output=True, check=False)
    if got.returncode != 0:
        raise BenchError(f"telemetryctl query failed: {got.stderr.decode()[-500:]}")
    rows = list(csv.reader(io.StringIO(got.stdout.decode())))[1:]
    with duckdb.connect(str(baseline), read_only=True) as con:
        expected = con.execute(SQL).fetchall()
    if [(r[0], r[-1]) for r in rows] != [(e[0], str(e[-1])) for e in expected]:
        raise BenchError(f"answers differ: client {rows} vs duckdb {expected}")
    return len(rows)


def time_query(events: int, pairs: int, pycache: Path, log: Log) -> dict[str, Any]:
    home, baseline, info = build(events, log)
    env = send_bench._env(home, pycache)
    err = pycache.parent / f"query-{events}.stderr"
    ctl = [send_bench.telemetryctl(), "query", "--format", "csv", SQL]
    fresh = [sys.executable, "-c", FRESH, str(baseline), SQL]
    ctl_s: list[float] = []
    fresh_s: list[float] = []
    with Telemetryd(daemon_args(), label=f"query-{events}", home=home) as daemon:
        control = str(home / "run" / "control.sock")
        rows = _check_answers(ctl, env, baseline)
        for _ in range(WARMUP):
            send_bench._timed(ctl, env, err)
            send_bench._timed(fresh, env, err)
        for i in range(pairs):
            first, second = (ctl, fresh) if i % 2 == 0 else (fresh, ctl)
            a = send_bench._timed(first, env, err)
            b = send_bench._timed(second, env, err)
            ctl_time, fresh_time = (a, b) if first is ctl else (b, a)
            ctl_s.append(ctl_time)
            fresh_s.append(fresh_time)
        daemon_ms = [ask(control, SQL)[1] for _ in range(7)]
        if daemon.stop() != 0:
            raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
    ratios = [c / f for c, f in zip(ctl_s, fresh_s, strict=True)]
    log(
        f"  {events:,} events: telemetryctl query {statistics.median(ctl_s) * 1000:.0f} ms, "
        f"fresh duckdb {statistics.median(fresh_s) * 1000:.0f} ms, "
        f"ratio {statistics.median(ratios):.2f} (daemon-side {statistics.median(daemon_ms):.0f} ms)"
    )
    return {
        "events": events,
        "rows": rows,
        "build": info,
        "ctl_ms": [t * 1000 for t in ctl_s],
        "fresh_ms": [t * 1000 for t in fresh_s],
        "ratios": ratios,
        "daemon_ms": daemon_ms,
    }


def time_cold(events: int, pairs: int, pycache: Path, log: Log) -> dict[str, Any]:
    """The same query with the store worker not running, against a fresh duckdb process.

    With ``[store] idle-exit`` (a worker that exits when idle): one daemon with
    ``idle-exit=2``; before each ``telemetryctl query``, wait until the daemon has no
    child process, so the query starts the worker. Without it (the store still in the
    daemon): the first query after a daemon start, a new daemon for each pair (its
    start-up is not timed; the query is). Pairs alternate which goes first."""
    from bench.rss import idle_args

    home, baseline, _ = build(events, log)
    env = send_bench._env(home, pycache)
    err = pycache.parent / f"cold-{events}.stderr"
    ctl = [send_bench.telemetryctl(), "query", "--format", "csv", SQL]
    fresh = [sys.executable, "-c", FRESH, str(baseline), SQL]
    extra, split = idle_args()
    args = [*daemon_args(), *extra]
    ctl_s: list[float] = []
    fresh_s: list[float] = []
    waits: list[float] = []

    def cold_query(daemon: Telemetryd) -> float:
        if split:
            waits.append(wait_no_children(daemon.pid, 120.0))
        return send_bench._timed(ctl, env, err)

    for _ in range(WARMUP):  # the page cache and bytecode, as for the warm figure
        send_bench._timed(fresh, env, err)
    with contextlib.ExitStack() as stack:
        daemon: Telemetryd | None = None
        if split:
            daemon = stack.enter_context(Telemetryd(args, label=f"cold-{events}", home=home))
            _check_answers(ctl, env, baseline)
        for i in range(pairs):
            if not split:
                daemon = Telemetryd(args, label=f"cold-{events}", home=home)
                daemon.start()
            assert daemon is not None
            try:
                if i % 2 == 0:
                    ctl_s.append(cold_query(daemon))
                    fresh_s.append(send_bench._timed(fresh, env, err))
                else:
                    fresh_s.append(send_bench._timed(fresh, env, err))
                    ctl_s.append(cold_query(daemon))
            finally:
                if not split and daemon.stop() != 0:
                    raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
        if split and daemon is not None and daemon.stop() != 0:
            raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
    ratios = [c / f for c, f in zip(ctl_s, fresh_s, strict=True)]
    method = (
        "store worker not running (idle-exit)"
        if split
        else "worker not split yet: the first query after a daemon start"
    )
    log(
        f"  {events:,} events, {method}: telemetryctl query "
        f"{statistics.median(ctl_s) * 1000:.0f} ms, fresh duckdb "
        f"{statistics.median(fresh_s) * 1000:.0f} ms, ratio {statistics.median(ratios):.2f}"
    )
    return {
        "events": events,
        "worker_split": split,
        "method": method,
        "ctl_ms": [t * 1000 for t in ctl_s],
        "fresh_ms": [t * 1000 for t in fresh_s],
        "ratios": ratios,
        "waited_for_worker_exit_s": waits,
    }


def _copy_home(source: Path, target: Path) -> None:
    """A private copy: journal segments hard-linked (the daemon never writes a closed one,
    and retention is off), the database copied."""
    (target / "journal").mkdir(parents=True)
    for segment in (source / "journal").iterdir():
        try:
            os.link(segment, target / "journal" / segment.name)
        except OSError:
            shutil.copyfile(segment, target / "journal" / segment.name)
    shutil.copyfile(source / "telemetry.duckdb", target / "telemetry.duckdb")


def freshness(home: Path, workdir: Path, pycache: Path, sends: int, log: Log) -> dict[str, Any]:
    copy = workdir / "fresh-home"
    shutil.rmtree(copy, ignore_errors=True)
    _copy_home(home, copy)
    env = send_bench._env(copy, pycache)
    err = workdir / "freshness.stderr"
    delays: list[float] = []
    first_query_saw_it = 0
    try:
        with Telemetryd(daemon_args(), label="freshness", home=copy) as daemon:
            control = str(copy / "run" / "control.sock")
            ask(control, "select 1")  # past start-up (the first materialization)
            for _ in range(sends):
                event_id = f"fresh-{uuid.uuid4()}"
                argv = [send_bench.telemetryctl(), "send", "--strict", "--type", "custom"]
                send_bench._timed([*argv, "--name", "fresh", "--id", event_id], env, err)
                sent = time.perf_counter()
                attempts = 0
                while True:
                    attempts += 1
                    rows, _ = ask(
                        control, "select count(*) from events where id = $id", {"id": event_id}
                    )
                    if rows[0][0] == 1:
                        break
                    if time.perf_counter() - sent > 30:
                        raise BenchError(f"event {event_id} still not visible after 30 s")
                delays.append(time.perf_counter() - sent)
                first_query_saw_it += attempts == 1
            if daemon.stop() != 0:
                raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    ms = sorted(d * 1000 for d in delays)
    p50, p95 = ms[len(ms) // 2], ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    log(
        f"  freshness: p50 {p50:.1f} ms, p95 {p95:.1f} ms; the first query saw the event "
        f"{first_query_saw_it}/{sends} times"
    )
    return {
        "sends": sends,
        "delays_ms": ms,
        "p50_ms": p50,
        "p95_ms": p95,
        "first_query_saw_it": first_query_saw_it,
    }


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    """The harness entry point (`python -m bench --only query`)."""
    pairs = 8 if quick else max(20, 4 * runs)
    pycache = workdir / "query-pycache"
    pycache.mkdir(parents=True, exist_ok=True)
    sizes = SIZES + (BIG_SIZES if BIG else [])
    results: dict[str, Any] = {"sql": SQL, "pairs": pairs, "sizes": {}, "big": BIG}
    for events in sizes:
        results["sizes"][str(events)] = time_query(events, pairs, pycache, log)
    cold_pairs = 4 if quick else max(8, 2 * runs)
    results["cold"] = time_cold(SIZES[0], cold_pairs, pycache, log)
    results["cold"]["pairs"] = cold_pairs
    home, _, _ = build(SIZES[0], log)
    sends = 20 if quick else FRESHNESS_SENDS
    results["freshness"] = freshness(home, workdir, pycache, sends, log)
    results["freshness"]["events"] = SIZES[0]
    if not BIG:
        log("  (10M events: add --big; the first build takes a few minutes, then it is cached)")
    return results


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import main as harness

    args = list(sys.argv[1:] if argv is None else argv)
    return harness(["--only", "query", *args])


if __name__ == "__main__":
    sys.exit(main())
