"""`python -m bench`: run the benchmarks, print the figures, write bench/results/latest.json.

    python -m bench                 everything, 5 runs per ingest figure (a few minutes)
    python -m bench --quick         smaller payloads, 2 runs
    python -m bench --only ingest   one of: ingest, send, store, query, reports, export, ...
    python -m bench --only query --big   also time queries on 10M events (built once, cached)
    python -m bench --only html     `report --html` on 1M events (--big: also 10M)
    python -m bench --only macros   the analytics macros alone: time, peak RSS (--big: 10M)
    python -m bench --only conn --profile   the daemon under cProfile; prints where it spends
    python -m bench --only parity   `import` of every agent's files against ccusage 20's daily

Progress goes to stderr, the table to stdout. Exit status 0 whether or not
targets are met; 1 when a benchmark failed (a crash, or counts that do not add up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    BenchError,
    analyzer,
    busy,
    conn,
    fresh_bytecode,
    ingest,
    otlp,
    procs,
    report,
    rss,
    send,
)
from bench import export as export_bench
from bench import forward as forward_bench
from bench import hook as hook_bench
from bench import html as html_bench
from bench import imports as import_bench
from bench import macros as macros_bench
from bench import parity as parity_bench
from bench import query as query_bench
from bench import reports as reports_bench
from bench import statusline as statusline_bench
from bench import store as store_bench

BENCHMARKS: dict[str, Callable[[Path, int, bool, Callable[[str], None]], dict[str, Any]]] = {
    "ingest": ingest.run,
    "conn": conn.run,
    "send": send.run,
    "rss": rss.run,
    "busy": busy.run,
    "hook": hook_bench.run,
    "statusline": statusline_bench.run,
    "import": import_bench.run,
    "store": store_bench.harness,
    "query": query_bench.run,
    "reports": reports_bench.run,
    "html": html_bench.run,
    "macros": macros_bench.run,
    "otlp": otlp.run,
    "analyzer": analyzer.run,
    "forward": forward_bench.run,
    "export": export_bench.run,
    "parity": parity_bench.run,
}
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="repeatable")
    parser.add_argument("--quick", action="store_true", help="smaller payloads, 2 runs")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5, --quick 2)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--big",
        action="store_true",
        help="query, html, macros: also on 10M events (the first build takes minutes; "
        "cached in /tmp)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run each daemon under cProfile (main thread, wall clock; slows it down) and "
        "print its top functions; profiles go to profiles/ next to --output",
    )
    return parser.parse_args(argv)


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _machine() -> dict[str, Any]:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        rev = ""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": rev,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fresh_bytecode()
    runs = args.runs or (2 if args.quick else 5)
    chosen = args.only or list(BENCHMARKS)
    results: dict[str, Any] = {"machine": _machine(), "runs": runs, "quick": args.quick}
    errors: dict[str, str] = {}
    workdir = Path(tempfile.mkdtemp(prefix="tdbench-", dir="/tmp"))
    if args.profile:
        procs.PROFILE_DIR = args.output.parent.resolve() / "profiles"
        procs.PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        for stale in procs.PROFILE_DIR.glob("*.prof"):
            stale.unlink()
        results["profiled"] = True
    query_bench.BIG = args.big
    started = time.monotonic()
    try:
        for name in chosen:
            _log(f"{name} ...")
            begin = time.monotonic()
            try:
                results[name] = BENCHMARKS[name](workdir, runs, args.quick, _log)
            except BenchError as exc:
                errors[name] = str(exc)
                _log(f"  FAILED: {exc}")
            except Exception:
                errors[name] = traceback.format_exc()
                _log(f"  CRASHED:\n{errors[name]}")
            _log(f"  ({time.monotonic() - begin:.0f} s)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["errors"] = errors
    results["elapsed_s"] = time.monotonic() - started
    results["figures"] = report.figures(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(report.render(results))
    if procs.PROFILE_DIR is not None:
        sys.stdout.write(report.profiles(procs.PROFILE_DIR))
    sys.stdout.write(f"\nraw results: {args.output}\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
