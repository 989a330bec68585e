"""The analytics macros (docs/analytics.md) one at a time: wall time and peak memory.

    python -m bench.macros              1M events (bench.query's cached database)
    python -m bench --only macros       the same, inside the full harness
    python -m bench --only macros --big    also on 10M events (built once, cached)

On a copy of :mod:`bench.query`'s cached database, opened once by this checkout's
store so that its views and macros are this checkout's: each macro the HTML report
runs (``model_quality``, ``tool_reliability``, ``provider_reliability``) and the other
analytics over attempts and errors, with ``days`` as the page passes it without
``--since`` (:data:`telemetryd.client.pictures.ALL_DAYS`: all of history), alone in a
fresh process that opens the copy read-only with the store worker's default settings
(``store.memory-limit``, ``store.threads``, the query sandbox of ``harden``). Per
macro: the median wall time of ``execute`` + ``fetchall`` over the runs, and the
process's peak RSS (``ru_maxrss``; an idle process that opened the database is about
``idle_rss_mb``). A run that fails (DuckDB out of memory) is reported with its error.
``digest`` hashes the rows (floats to 9 significant digits), so two checkouts' answers
can be compared.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench import query as query_bench

Log = Callable[[str], None]

MACROS = {
    "model_quality": "SELECT * FROM model_quality(days := $days)",
    "run_outcomes": "SELECT * FROM run_outcomes(days := $days)",
    "task_risk": "SELECT * FROM task_risk(days := $days)",
    "intervention_effectiveness": "SELECT * FROM intervention_effectiveness(days := $days)",
    "provider_reliability": "SELECT * FROM provider_reliability(days := $days)",
    "guardrail_gaps": "SELECT * FROM guardrail_gaps(days := $days)",
    "tool_reliability": "SELECT * FROM tool_reliability(days := $days)",
}

# Run in a fresh process: open read-only, sandbox as the store worker does, run one query.
CHILD = """
import hashlib, json, resource, sys, time
import duckdb
from telemetryd.store.sandbox import harden

path, sql, memory, threads, days = sys.argv[1:6]
con = duckdb.connect(path, read_only=True)
con.execute("SET enable_progress_bar = false")  # as the store worker: no bar on stdout
harden(con, allowed_dirs=[], memory_limit=memory, threads=int(threads))
idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {"idle_kb": idle}
started = time.perf_counter()
try:
    rows = con.execute(sql, {"days": int(days)}).fetchall() if sql else []
except duckdb.Error as exc:
    out["error"] = str(exc).splitlines()[0]
else:
    out["ms"] = (time.perf_counter() - started) * 1000
    out["rows"] = len(rows)
    def norm(v):
        return float(f"{v:.9g}") if isinstance(v, float) else v
    text = repr([tuple(norm(v) for v in row) for row in rows])
    out["digest"] = hashlib.sha256(text.encode()).hexdigest()[:12]
out["peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def settings() -> tuple[str, int]:
    """The store worker's default memory limit (in bytes, as DuckDB takes it) and threads."""
    from telemetryd import config
    from telemetryd.config import parse_size

    defaults = config.Store()
    return f"{parse_size(defaults.memory_limit)}B", defaults.threads


def _copy(baseline: Path, workdir: Path, events: int) -> Path:
    """A private copy of the database with this checkout's views and macros."""
    from telemetryd.store.database import Store

    copy = workdir / f"macros-{events}.duckdb"
    shutil.copyfile(baseline, copy)
    with Store(str(copy)):
        pass  # opening replaces views and macros that differ from this checkout's
    return copy


def _once(path: Path, sql: str, days: int) -> dict[str, Any]:
    memory, threads = settings()
    got = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), sql, memory, str(threads), str(days)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if got.returncode != 0:
        raise BenchError(f"the query process exited {got.returncode}: {got.stderr[-800:]}")
    result: dict[str, Any] = json.loads(got.stdout.strip().splitlines()[-1])
    return result


def time_macros(events: int, runs: int, workdir: Path, log: Log) -> dict[str, Any]:
    from telemetryd.client.pictures import ALL_DAYS

    _, baseline, _ = query_bench.build(events, log)
    path = _copy(baseline, workdir, events)
    idle = [_once(path, "", ALL_DAYS)["peak_kb"] / 1024 for _ in range(2)]
    found: dict[str, Any] = {}
    for name, sql in MACROS.items():
        tries = [_once(path, sql, ALL_DAYS) for _ in range(runs)]
        failed = [t["error"] for t in tries if "error" in t]
        done = [t for t in tries if "error" not in t]
        digests = sorted({t["digest"] for t in done})
        row: dict[str, Any] = {
            "runs": runs,
            "failed": len(failed),
            "error": failed[0] if failed else None,
            "ms": [t["ms"] for t in done],
            "p50_ms": statistics.median(t["ms"] for t in done) if done else None,
            "peak_rss_mb": max(t["peak_kb"] for t in tries) / 1024,
            "rows": done[0]["rows"] if done else None,
            "digest": ",".join(digests),
        }
        found[name] = row
        timing = f"{row['p50_ms']:.0f} ms" if done else "no run finished"
        log(
            f"  {events:,} events, {name}: {timing}, peak RSS {row['peak_rss_mb']:.0f} MB"
            + (f", {len(failed)} of {runs} failed: {failed[0]}" if failed else "")
        )
    path.unlink()
    shutil.rmtree(f"{path}.tmp", ignore_errors=True)
    memory, threads = settings()
    return {
        "events": events,
        "memory_limit": memory,
        "threads": threads,
        "idle_rss_mb": statistics.median(idle),
        "macros": found,
    }


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    """The harness entry point (`python -m bench --only macros`)."""
    sizes = query_bench.SIZES + (query_bench.BIG_SIZES if query_bench.BIG else [])
    runs = 2 if quick else max(3, runs)
    return {"sizes": {str(n): time_macros(n, runs, workdir, log) for n in sizes}}


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import main as harness

    return harness(["--only", "macros", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
