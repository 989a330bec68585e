"""The daemon's memory: at rest after a query, and at its peak under a 64-client flood.

The daemon may run as more than one process (a DuckDB store worker it starts when
needed and that exits after ``[store] idle-exit`` seconds without work), so memory
is taken over the process tree: the daemon and all its descendants
(``/proc/PID/task/*/children``), whatever they are.

- Idle: start the daemon (with ``--set store.idle-exit=2`` when it knows that
  setting, asked with ``telemetryd --check``), send a few events with ``telemetryctl
  send --strict``, run one query that must count them, wait until the daemon has no
  child process left (polled every 20 ms), then read the daemon's ``VmRSS``. Where
  there is no idle-exit yet (the store still in the daemon), it is read right after
  the query, and the notes say "worker not split yet". Also: whether the daemon
  process maps a DuckDB library (``/proc/PID/maps``), and the whole tree's RSS right
  after the query.
- Flood: 64 streaming clients at once, while the store loads what they send
  (``store.pending-events`` triggers loads during the flood; ``store.yield-max=0``, so
  that they do not wait for the flood to end as they would by default). The summed ``VmRSS``
  of the tree is sampled every 20 ms from just before the clients start; the figure
  is the largest sum until the last client has its summary (the peak until the
  daemon has exited, its shutdown's final load included, is in the notes). A sum
  of RSS counts shared pages once per process: an upper bound. The daemon's own
  ``VmHWM`` is kept for comparison with earlier single-process figures.
"""

from __future__ import annotations

import csv
import io
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError, payload
from bench import send as send_bench
from bench.ingest import run_telemetryd
from bench.procs import (
    Telemetryd,
    accepts_setting,
    children,
    maps_library,
    rss_kib,
    tree_rss_kib,
    wait_no_children,
)

CLIENTS = 64
SAMPLE_EVERY = 0.02  # seconds
IDLE_EXIT = 2  # seconds, when the daemon has a store worker that exits when idle
IDLE_EVENTS = 5
IDLE_SETTING = f"store.idle-exit={IDLE_EXIT}"

Log = Callable[[str], None]


def idle_args() -> tuple[list[str], bool]:
    """The daemon arguments for a store worker that exits soon when idle, and whether
    the daemon has such a setting (else: no worker split yet)."""
    if accepts_setting(IDLE_SETTING):
        return ["--set", IDLE_SETTING], True
    return [], False


def query_count(ctl: str, env: dict[str, str], sql: str, timeout: float = 120.0) -> int:
    """``telemetryctl query --format csv`` of a one-number query; the number."""
    proc = subprocess.run(
        [ctl, "query", "--format", "csv", sql],
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"telemetryctl query failed ({proc.returncode}): {proc.stderr[-500:]!r}")
    rows = list(csv.reader(io.StringIO(proc.stdout.decode())))
    return int(rows[1][0])


def idle_once(workdir: Path, args: list[str], split: bool) -> dict[str, Any]:
    ctl = send_bench.telemetryctl()
    err = workdir / "idle.stderr"
    with Telemetryd(args, label="idle") as daemon:
        started_kib = rss_kib(daemon.pid)
        env = send_bench._env(daemon.dir, workdir / "idle-pycache")
        for _ in range(IDLE_EVENTS):
            send_bench._timed([ctl, *send_bench.SEND_ARGS, "--strict"], env, err)
        count = query_count(ctl, env, "select count(*) from events")
        if count != IDLE_EVENTS:
            raise BenchError(f"sent {IDLE_EVENTS} events, the query counted {count}")
        after_query = tree_rss_kib(daemon.pid)
        workers_after_query = len(children(daemon.pid))
        waited = wait_no_children(daemon.pid, IDLE_EXIT + 60.0) if split else 0.0
        rss = rss_kib(daemon.pid)
        tree = tree_rss_kib(daemon.pid)
        maps_duckdb = maps_library(daemon.pid, "duckdb")
        if daemon.stop() != 0:
            raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
    return {
        "rss_mb": rss / 1024,
        "tree_rss_mb": sum(tree.values()) / 1024,
        "started_rss_mb": started_kib / 1024,
        "after_query_tree_rss_mb": sum(after_query.values()) / 1024,
        "children_after_query": workers_after_query,
        "waited_for_worker_exit_s": waited,
        "maps_duckdb": maps_duckdb,
    }


def idle(workdir: Path, runs: int, log: Log) -> dict[str, Any]:
    args, split = idle_args()
    samples = [idle_once(workdir, args, split) for _ in range(runs)]
    result = {
        "runs": samples,
        "worker_split": split,
        "args": args,
        "rss_mb": statistics.median(s["rss_mb"] for s in samples),
    }
    waited = statistics.median(s["waited_for_worker_exit_s"] for s in samples)
    note = (
        f"store worker exited after {waited:.1f} s"
        if split
        else "worker not split yet: measured right after the query"
    )
    log(
        f"  idle after a query: daemon VmRSS {result['rss_mb']:.0f} MB "
        f"(duckdb mapped: {samples[-1]['maps_duckdb']}); {note}"
    )
    return result


def flood(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    per_client = 10_000 if quick else 50_000
    shared = workdir / "flood.ndjson"
    size = payload.write_stream(shared, per_client)
    samples = []
    # The figure is the memory while the store loads: so its loads do not wait for the
    # flood to end (store.yield-max, where the daemon has it).
    args = ["--set", "store.yield-max=0"] if accepts_setting("store.yield-max=0") else []
    for rep in range(runs):
        result = run_telemetryd(
            ([str(shared)] * CLIENTS, [per_client] * CLIENTS, size * CLIENTS),
            check_ids=False,
            label="flood",
            sample_every=SAMPLE_EVERY,
            args=args,
        )
        samples.append(result)
        log(
            f"  flood {rep + 1}/{runs} {CLIENTS}x{per_client:,}: all processes peak "
            f"{result['tree_peak_rss_mb']:.0f} MB ({result['tree_processes_max']} processes; "
            f"{result['tree_peak_to_exit_rss_mb']:.0f} MB until exit), daemon VmHWM "
            f"{result['peak_rss_mb']:.0f} MB, {result['events_per_s']:,.0f} ev/s"
        )
    return {"clients": CLIENTS, "events_per_client": per_client, "runs": samples}


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    return {
        "idle": idle(workdir, runs, log),
        "flood": flood(workdir, 1 if quick else max(1, min(runs, 3)), quick, log),
        "sample_every_s": SAMPLE_EVERY,
    }
