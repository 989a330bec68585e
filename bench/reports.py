"""`telemetryctl report daily` whole-process wall time, against a fresh duckdb process and
against ``ccusage daily``.

    python -m bench.reports             both parts
    python -m bench.reports install     ccusage into bench/.deps/ccusage (npm; `make bench-deps`)
    python -m bench --only reports      the same, inside the full harness

Part 1, on :mod:`bench.query`'s cached 1M-event home (built once, then cached): the real
daemon (default settings, retention off) serving it, its store worker warm;
``telemetryctl report daily --json --timezone UTC`` from spawn to reaped exit, against a
fresh ``python -c`` that imports duckdb, opens the baseline copy of the same database
read-only and runs the report's own SQL (:func:`telemetryd.client.reports.sql`), printing
the rows. Alternating pairs after warm-up runs (order swapped every pair); medians and
the per-pair ratio (target ≤ 0.3). The report's totals are checked against the rows the
fresh process reads.

Part 2, ~300 MB of Claude Code sessions from :mod:`bench.agent_tree` (the real
samples repeated with fresh ids, at ``~/.claude/projects`` of a fake ``HOME``), ``pairs``
times: a fresh daemon, ``telemetryctl import claude-code`` then ``telemetryctl report
daily --json --timezone UTC`` (which materializes what the import sent), timed together,
against ccusage's ``daily --json --timezone UTC --offline`` (bundled prices, no network)
on the same files (order swapped every pair; target ≤ 0.5); then, on the last daemon,
the report alone against ccusage, alternating pairs (target ≤ 0.3). The daily token
counts of both outputs are compared; a difference goes into the figure's note. Expect
one in ``outputTokens``: a response repeated over several lines counts once in both,
but telemetryd keeps its largest usage (the streamed final count) and ccusage 18 its
first line's.

ccusage: the newest release that runs on node 20 and is plain JavaScript (19.x needs
node 22; 20.x is a native binary from per-platform optional packages). It lives in
``bench/.deps/ccusage`` (ignored by git); without it, part 2 is skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError, agent_tree, json_of, npm_install
from bench import query as query_bench
from bench import send as send_bench
from bench.procs import Telemetryd

CCUSAGE_VERSION = "18.0.11"
CCUSAGE_ROOT = Path(__file__).resolve().parent / ".deps" / "ccusage"
CCUSAGE = CCUSAGE_ROOT / "node_modules" / ".bin" / "ccusage"
REPORT = ["report", "daily", "--json", "--timezone", "UTC"]
FRESH = (
    "import json, sys, duckdb\n"
    "con = duckdb.connect(sys.argv[1], read_only=True)\n"
    "print(con.execute(sys.argv[2], json.loads(sys.argv[3])).fetchall())\n"
)
TRANSCRIPTS_MB = 300  # of Claude Code sessions (bench/agent_tree.py)
TOKEN_KEYS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")
WARMUP = 3
TARGET_RATIO = 0.3

Log = Callable[[str], None]


def install() -> Path:
    """ccusage into bench/.deps/ccusage with npm; its executable."""
    return npm_install(CCUSAGE_ROOT, f"ccusage@{CCUSAGE_VERSION}", CCUSAGE)


def _pairs(a: list[str], b: list[str], env_a: dict[str, str], env_b: dict[str, str],
           pairs: int, err: Path) -> tuple[list[float], list[float]]:  # fmt: skip
    """Alternating runs of ``a`` and ``b`` (order swapped every pair): their seconds."""
    a_s: list[float] = []
    b_s: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            a_s.append(send_bench._timed(a, env_a, err))
            b_s.append(send_bench._timed(b, env_b, err))
        else:
            b_s.append(send_bench._timed(b, env_b, err))
            a_s.append(send_bench._timed(a, env_a, err))
    return a_s, b_s


def _summary(name: str, a_s: list[float], b_s: list[float]) -> dict[str, Any]:
    ratios = [a / b for a, b in zip(a_s, b_s, strict=True)]
    return {
        "ctl_ms": [t * 1000 for t in a_s],
        f"{name}_ms": [t * 1000 for t in b_s],
        "ratios": ratios,
        "ctl_p50_ms": statistics.median(a_s) * 1000,
        f"{name}_p50_ms": statistics.median(b_s) * 1000,
        "ratio_p50": statistics.median(ratios),
    }


# -- part 1: against a fresh duckdb process ------------------------------------------------


def time_warm(pairs: int, pycache: Path, log: Log) -> dict[str, Any]:
    import duckdb

    from telemetryd.client import reports

    events = query_bench.SIZES[0]
    home, baseline, info = query_bench.build(events, log)
    text, params = reports.sql(reports.Options(kind="daily", timezone="UTC"))
    env = send_bench._env(home, pycache)
    err = pycache.parent / "reports-warm.stderr"
    ctl = [send_bench.telemetryctl(), *REPORT]
    fresh = [sys.executable, "-c", FRESH, str(baseline), text, json.dumps(params)]
    with duckdb.connect(str(baseline), read_only=True) as con:
        cursor = con.execute(text, params)
        names = [d[0] for d in cursor.description]
        parts = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    with Telemetryd(query_bench.daemon_args(), label="reports-warm", home=home) as daemon:
        got = json_of(ctl, env)
        expected = sum(p["input"] + p["output"] + p["cache_creation"] + p["cache_read"]
                       for p in parts)  # fmt: skip
        if got["totals"]["totalTokens"] != expected:
            raise BenchError(f"report total {got['totals']['totalTokens']} vs duckdb {expected}")
        for _ in range(WARMUP):
            send_bench._timed(ctl, env, err)
            send_bench._timed(fresh, env, err)
        ctl_s, fresh_s = _pairs(ctl, fresh, env, env, pairs, err)
        control = str(home / "run" / "control.sock")
        daemon_ms = [query_bench.ask(control, text, params)[1] for _ in range(7)]
        if daemon.stop() != 0:
            raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
    out = {"events": events, "build": info, "pairs": pairs, "days": len(got["daily"]),
           "sql_rows": len(parts), "daemon_ms": daemon_ms,
           **_summary("fresh", ctl_s, fresh_s)}  # fmt: skip
    log(
        f"  {events:,} events: report daily {out['ctl_p50_ms']:.0f} ms, fresh duckdb "
        f"{out['fresh_p50_ms']:.0f} ms, ratio {out['ratio_p50']:.2f} "
        f"(daemon-side {statistics.median(daemon_ms):.0f} ms; {len(parts):,} SQL rows, "
        f"{out['days']} days)"
    )
    return out


# -- part 2: against ccusage ---------------------------------------------------------------


def compare_tokens(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The days whose token counts differ, as ``date key ours/theirs`` strings."""
    mine = {row["date"]: row for row in ours["daily"]}
    other = {row["date"]: row for row in theirs["daily"]}
    diffs = []
    for day in sorted(mine.keys() | other.keys()):
        a, b = mine.get(day, {}), other.get(day, {})
        for key in TOKEN_KEYS:
            if a.get(key, 0) != b.get(key, 0):
                diffs.append(f"{day} {key} {a.get(key, 0)}/{b.get(key, 0)}")
    return diffs


def _timed_json(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """Seconds from spawn to exit, and the JSON the command printed."""
    start = time.perf_counter()
    found = json_of(argv, env)
    return time.perf_counter() - start, found


def time_ccusage(workdir: Path, pairs: int, pycache: Path, log: Log) -> dict[str, Any]:
    if not CCUSAGE.exists():
        return {"skipped": f"ccusage is not installed in {CCUSAGE_ROOT} (make bench-deps)"}
    node = shutil.which("node")
    if node is None:
        return {"skipped": "node is missing"}
    fake_home = workdir / "reports-home"
    built = agent_tree.build(fake_home, total_mb=TRANSCRIPTS_MB, only=("claude-code",))
    mb = built.bytes / 2**20
    log(f"  built {mb:.0f} MB of Claude Code sessions, {built.files:,} files, in {fake_home}")
    err = pycache.parent / "reports-ccusage.stderr"
    cc = [node, str(CCUSAGE), "daily", "--json", "--timezone", "UTC", "--offline"]
    cc_env = dict(agent_tree.clean_env(fake_home), NO_COLOR="1")
    importing = [send_bench.telemetryctl(), "import", "claude-code", "--json"]
    ctl = [send_bench.telemetryctl(), *REPORT]
    first_s: list[float] = []  # import, then report daily, into a fresh daemon
    import_s: list[float] = []
    first_cc_s: list[float] = []
    try:
        for i in range(pairs):
            with Telemetryd(query_bench.daemon_args(), label=f"reports-ccusage-{i}") as daemon:
                env = {**send_bench._env(daemon.dir, pycache), "HOME": str(fake_home)}
                for name in agent_tree.OVERRIDES:
                    env.pop(name, None)
                if i % 2:
                    cc_s, theirs = _timed_json(cc, cc_env)
                took, imported = _timed_json(importing, env)
                if imported["accepted"] != imported["sent"] or imported["rejected"]:
                    raise BenchError(f"import: {imported}")
                report_s, ours = _timed_json(ctl, env)  # materializes what the import sent
                if i % 2 == 0:
                    cc_s, theirs = _timed_json(cc, cc_env)
                first_s.append(took + report_s)
                import_s.append(took)
                first_cc_s.append(cc_s)
                if i == pairs - 1:  # the report alone, the daemon warm, against ccusage
                    diffs = compare_tokens(ours, theirs)
                    send_bench._timed(ctl, env, err)
                    send_bench._timed(cc, cc_env, err)
                    ctl_s, warm_cc_s = _pairs(ctl, cc, env, cc_env, pairs, err)
                if daemon.stop(timeout=300) != 0:
                    raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
    finally:
        shutil.rmtree(fake_home, ignore_errors=True)
    first_ratios = [a / b for a, b in zip(first_s, first_cc_s, strict=True)]
    out = {
        "ccusage_version": CCUSAGE_VERSION,
        "input_mb": mb,
        "files": built.files,
        "requests": imported.get("requests"),
        "events": imported.get("sent"),
        "pairs": pairs,
        "days": len(ours["daily"]),
        "token_diffs": diffs,
        "ours_total_tokens": ours["totals"]["totalTokens"],
        "ccusage_total_tokens": theirs["totals"]["totalTokens"],
        "ours_total_cost": ours["totals"]["totalCost"],
        "ccusage_total_cost": theirs["totals"]["totalCost"],
        "first_ms": [t * 1000 for t in first_s],
        "first_import_ms": [t * 1000 for t in import_s],
        "first_ccusage_ms": [t * 1000 for t in first_cc_s],
        "first_ratios": first_ratios,
        **_summary("ccusage", ctl_s, warm_cc_s),
    }
    log(
        f"  {mb:.0f} MB: import + report daily {statistics.median(first_s) * 1000:.0f} ms "
        f"(import {statistics.median(import_s) * 1000:.0f} ms), ccusage daily "
        f"{statistics.median(first_cc_s) * 1000:.0f} ms, ratio "
        f"{statistics.median(first_ratios):.2f}; warm report daily {out['ctl_p50_ms']:.0f} ms, "
        f"ratio {out['ratio_p50']:.3f}; daily tokens "
        f"{'equal' if not diffs else f'differ on {len(diffs)} counts'}"
    )
    return out


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    """The harness entry point (`python -m bench --only reports`)."""
    pycache = workdir / "reports-pycache"
    pycache.mkdir(parents=True, exist_ok=True)
    warm_pairs = 8 if quick else max(20, 4 * runs)
    cc_pairs = 3 if quick else max(5, runs)
    return {
        "warm": time_warm(warm_pairs, pycache, log),
        "ccusage": time_ccusage(workdir, cc_pairs, pycache, log),
    }


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import main as harness

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["install"]:
        # The ccusage baseline is optional: without npm (or a Node.js it runs on) the
        # benchmark reports it as skipped, and `make bench` goes on.
        try:
            path = install()
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            sys.stderr.write(f"ccusage baseline not installed ({exc}); it will be skipped\n")
            return 0
        sys.stdout.write(f"ccusage: {path}\n")
        return 0
    return harness(["--only", "reports", *args])


if __name__ == "__main__":
    sys.exit(main())
