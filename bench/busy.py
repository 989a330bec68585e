"""`telemetryctl send` while a long query runs, against the same without it.

Each round has two windows on one daemon (default settings, fresh home), in
alternating order from round to round:

- busy: ``telemetryctl query --timeout 10 "select count(*) from range(10^15)"``
  starts (a query that never ends on its own: it keeps one core busy in DuckDB
  until the timeout stops it, ~10 s later); while it runs, ``telemetryctl send
  --strict`` back to back, each timed from spawn to reaped exit (``bench.send``'s
  method). ``send`` waits for the daemon's summary, which comes only once the event
  is in the journal: every time is an acknowledged send. The query must end with
  its timeout error after 9-20 s, so the window really had a query running;
- quiet: as many sends with no query running.

The figure is the ratio of the two windows' p95 (per round; the median over
rounds), target ≤ 1.5. Every send must be journaled, none spooled. The daemon's
store (and its worker process, when it has one) started before the first
round, by a query, so the busy windows do not time a worker's start.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench import send as send_bench
from bench.procs import Telemetryd
from bench.rss import query_count

QUERY_SECONDS = 10
LONG_SQL = "select count(*) from range(1000000000000000)"
WARMUP = 10

Log = Callable[[str], None]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _busy_window(
    ctl: str, send: list[str], env: dict[str, str], err: Path, seconds: float
) -> tuple[list[float], float]:
    """Sends while a query of ``seconds`` runs: their times, and the query's wall time."""
    started = time.monotonic()
    query = subprocess.Popen(
        [ctl, "query", "--timeout", f"{seconds:g}", LONG_SQL],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    times = []
    try:
        while query.poll() is None:
            times.append(send_bench._timed(send, env, err))
        out, query_err = query.communicate(timeout=60)
    finally:
        if query.poll() is None:
            query.kill()
            query.wait()
    wall = time.monotonic() - started
    if query.returncode != 1 or b"longer than" not in query_err:
        raise BenchError(
            f"the long query ended with {query.returncode} after {wall:.1f} s, not with its "
            f"timeout: {out[-200:]!r} {query_err[-300:]!r}"
        )
    if not seconds * 0.9 <= wall <= seconds * 2:
        raise BenchError(f"the {seconds:g} s query took {wall:.1f} s")
    return times, wall


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    rounds = max(1, runs)
    seconds = 5.0 if quick else float(QUERY_SECONDS)
    ctl = send_bench.telemetryctl()
    send = [ctl, *send_bench.SEND_ARGS, "--strict"]
    err = workdir / "busy.stderr"
    per_round: list[dict[str, Any]] = []
    sent = 0
    with Telemetryd(label="busy") as daemon:
        env = send_bench._env(daemon.dir, workdir / "busy-pycache")
        for _ in range(WARMUP):
            send_bench._timed(send, env, err)
        sent += WARMUP
        query_count(ctl, env, "select count(*) from events")  # the store is up
        for index in range(rounds):
            busy: list[float] = []
            quiet: list[float] = []
            wall = 0.0
            for window in ("busy", "quiet") if index % 2 == 0 else ("quiet", "busy"):
                if window == "busy":
                    busy, wall = _busy_window(ctl, send, env, err, seconds)
                else:
                    # As many sends as a busy window holds: the first round's, or this one's.
                    count = len(busy) or (len(per_round[-1]["busy_ms"]) if per_round else 0)
                    count = count or int(seconds / 0.02)
                    quiet = [send_bench._timed(send, env, err) for _ in range(count)]
            sent += len(busy) + len(quiet)
            figures: dict[str, Any] = {
                "busy_ms": [t * 1000 for t in busy],
                "quiet_ms": [t * 1000 for t in quiet],
                "busy_p95_ms": _percentile(busy, 0.95) * 1000,
                "quiet_p95_ms": _percentile(quiet, 0.95) * 1000,
                "busy_p50_ms": statistics.median(busy) * 1000,
                "quiet_p50_ms": statistics.median(quiet) * 1000,
                "query_wall_s": wall,
            }
            figures["ratio_p95"] = figures["busy_p95_ms"] / figures["quiet_p95_ms"]
            per_round.append(figures)
            log(
                f"  round {index + 1}/{rounds}: send p95 {figures['busy_p95_ms']:.1f} ms during "
                f"a {wall:.1f} s query ({len(busy)} sends), {figures['quiet_p95_ms']:.1f} ms "
                f"without; x{figures['ratio_p95']:.2f}"
            )
        if err.exists() and err.read_text().strip():
            raise BenchError(f"telemetryctl send wrote to stderr: {err.read_text()[-500:]}")
        journaled = daemon.journal_lines()
        if journaled != sent or daemon.spooled():
            raise BenchError(f"{sent} sends, {journaled} journaled, {daemon.spooled()} spool files")
        if daemon.stop() != 0:
            raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
    busy_all = [t for r in per_round for t in r["busy_ms"]]
    quiet_all = [t for r in per_round for t in r["quiet_ms"]]
    return {
        "query_seconds": seconds,
        "sql": LONG_SQL,
        "rounds": per_round,
        "ratios": [r["ratio_p95"] for r in per_round],
        "busy_p95_ms": _percentile(busy_all, 0.95),
        "quiet_p95_ms": _percentile(quiet_all, 0.95),
        "busy_p50_ms": statistics.median(busy_all),
        "quiet_p50_ms": statistics.median(quiet_all),
        "sends": sent,
    }
