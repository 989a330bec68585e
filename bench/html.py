"""`telemetryctl report --html` whole-process wall time and file size, against `telemetryctl
report daily --json` on the same store.

    python -m bench.html             1M events (bench.query's cached database)
    python -m bench --only html      the same, inside the full harness
    python -m bench --only html --big   also on 10M events (built once, cached)

On :mod:`bench.query`'s cached home (sessions with model requests, tool calls, errors,
sub-agents, ... over 28 days; built once, then cached), the real daemon (default
settings, retention off) serving it: ``telemetryctl report --html FILE --timezone UTC``
from spawn to reaped exit, against ``telemetryctl report daily --json --timezone UTC``,
the one report the page contains that scripts already call, in alternating pairs after
warm-up runs (order swapped every pair). Medians; goals: ≤ 3 s and a file ≤ 5 MB.

Before timing, the page's total cost (``data-value`` of ``#total-cost``) is checked
against ``report daily --json``'s ``totals.totalCost`` (to 1e-9: DuckDB's parallel sums
may differ in the last digits between two runs), and the sections the page left out
(their query failed: the command warns on stderr) are noted. The note gives where the time
goes, measured once in this process: the ten queries (:func:`pictures.load`, two at a
time, as the command runs them) and drawing the page (:func:`html_report.render`,
Bokeh already imported); the rest is starting Python and importing Bokeh, which the
command does while the queries run.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench import query as query_bench
from bench import send as send_bench
from bench.procs import Telemetryd
from bench.reports import _pairs

WARMUP = 2
SIZE_GOAL_MB = 5.0

Log = Callable[[str], None]


def _total_cost(page: str) -> float:
    found = re.search(r'id="total-cost" data-value="([^"]+)"', page)
    if found is None:
        raise BenchError("the page has no total cost")
    return float(found.group(1))


def _opened(control: str, wait: float = 300.0) -> None:
    """Wait until the store worker has opened the database (10M events: many seconds)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            query_bench.ask(control, "select 1")
            return
        except BenchError as exc:
            if "not open yet" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _breakdown(control: str) -> dict[str, float]:
    """Milliseconds of the queries and of drawing the page, in this process."""
    from telemetryd.client import html_report, pictures

    options = pictures.Options(timezone="UTC")
    started = time.perf_counter()
    got = pictures.load(options, control)
    queried = time.perf_counter()
    html_report.render(got)
    drawn = time.perf_counter()
    return {"queries_ms": (queried - started) * 1000, "render_ms": (drawn - queried) * 1000}


def time_html(events: int, pairs: int, pycache: Path, log: Log) -> dict[str, Any]:
    home, _, info = query_bench.build(events, log)
    env = send_bench._env(home, pycache)
    err = pycache.parent / f"html-{events}.stderr"
    out = pycache.parent / f"report-{events}.html"
    ctl = send_bench.telemetryctl()
    page = [ctl, "report", "--html", str(out), "--timezone", "UTC"]
    daily = [ctl, "report", "daily", "--json", "--timezone", "UTC"]
    with Telemetryd(query_bench.daemon_args(), label=f"html-{events}", home=home) as daemon:
        _opened(str(home / "run" / "control.sock"))
        send_bench._timed(page, env, err)
        # Sections left out because their query failed (the command warns on stderr).
        left_out = re.findall(r"warning: (\w+) left out of the page", err.read_text())
        got = json.loads(subprocess.run(daily, env=env, capture_output=True, check=True).stdout)
        text = out.read_text()
        expected = got["totals"]["totalCost"]
        # DuckDB sums in parallel: the last digits of a sum may differ between runs.
        if abs(_total_cost(text) - expected) > 1e-9 * max(1.0, abs(expected)):
            raise BenchError(f"page total {_total_cost(text)} vs report daily {expected}")
        for _ in range(WARMUP):
            send_bench._timed(page, env, err)
            send_bench._timed(daily, env, err)
        html_s, daily_s = _pairs(page, daily, env, env, pairs, err)
        size_mb = out.stat().st_size / 1e6
        breakdown = [_breakdown(str(home / "run" / "control.sock")) for _ in range(3)]
        if daemon.stop() != 0:
            raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
    result = {
        "events": events,
        "build": info,
        "pairs": pairs,
        "days": len(got["daily"]),
        "html_ms": [t * 1000 for t in html_s],
        "daily_ms": [t * 1000 for t in daily_s],
        "html_p50_ms": statistics.median(html_s) * 1000,
        "daily_p50_ms": statistics.median(daily_s) * 1000,
        "size_mb": size_mb,
        "queries_ms": statistics.median(b["queries_ms"] for b in breakdown),
        "render_ms": statistics.median(b["render_ms"] for b in breakdown),
        "left_out": left_out,
    }
    log(
        f"  {events:,} events: report --html {result['html_p50_ms']:.0f} ms "
        f"({size_mb:.2f} MB), report daily --json {result['daily_p50_ms']:.0f} ms; "
        f"in-process queries {result['queries_ms']:.0f} ms, render {result['render_ms']:.0f} ms"
        + (f"; left out (query failed): {', '.join(left_out)}" if left_out else "")
    )
    return result


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    """The harness entry point (`python -m bench --only html`)."""
    pycache = workdir / "html-pycache"
    pycache.mkdir(parents=True, exist_ok=True)
    pairs = 3 if quick else max(5, runs)
    sizes = query_bench.SIZES + (query_bench.BIG_SIZES if query_bench.BIG else [])
    return {"sizes": {str(n): time_html(n, pairs, pycache, log) for n in sizes}}


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import main as harness

    return harness(["--only", "html", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
