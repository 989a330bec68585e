"""`telemetryctl statusline` whole-process wall time against `python -c pass`, by history size.

Like bench/hook.py: both started with ``os.posix_spawn`` + ``waitpid``, one of each in
turn (order swapped every pair) so they share the machine's noise, bytecode cached in a
private ``PYTHONPYCACHEPREFIX``. Claude Code's status JSON on stdin (a real shape: model,
session, cost, context window, rate limits), the session's cost different on every run,
so that every run also records one ``metric`` event (the worst case: Claude Code runs
the status line after each assistant message, and the cost changes with each). Every
line printed must hold the daemon's figures (today's cost), never "telemetryd down" or
"busy"; the journal must hold one cost event per run.

History sizes: a journal of ``api_request`` events spread over the last 6.5 days, 10k
events and ``BIG`` (1M; 200k with --quick), materialized (a flush) before timing, as a
running system's is. Why not 10M events: the status line's time cannot grow with
history, because nothing on its path reads history. The command sends one ``totals``
request; the daemon answers it from memory (daemon/totals.py) after reading the journal
lines added since its previous answer, which between two status lines are a few. Only
the daemon's first answer after a start reads back the segments written in the last 7
days (``totals.DAYS``); older segments cost it one ``stat`` each, and none afterwards.
So the largest input any answer can have is what 7 days of journal hold, and that is
what ``BIG`` is: 1M requests in 6.5 days, ~150k a day, orders of magnitude past one
person's agents. A 10M-event store adds older segments only, which no answer reads
(and the daemon's listing of segment names, ~50 files for 10M events at 64 MiB each).
The first answer's time (reading the 7 days back) is reported as ``first_totals_ms``.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.hook import _timed
from bench.procs import Telemetryd
from bench.query import daemon_args
from bench.send import _env, _percentile, telemetryctl

WARMUP = 10
SMALL = 10_000
BIG = 1_000_000
BIG_QUICK = 200_000
DAYS = 6.5
SESSION = "5f0c6a49-2b8e-4f5e-9a51-bench0000000"


def _iso(epoch: float) -> str:
    ms = int(epoch * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def write_journal(journal: Path, events: int, now: float) -> int:
    """``events`` canonical api_request lines over the last DAYS days, one segment per
    day (mtime: its last event's time, as a closed segment's); the bytes written."""
    journal.mkdir(parents=True, exist_ok=True)
    step = DAYS * 86_400 / events
    start = now - DAYS * 86_400
    size = 0
    seq = 0
    out = None
    day = ""
    last = start
    for n in range(events):
        when = start + n * step
        stamp = _iso(when)
        if stamp[:10] != day:
            if out is not None:
                out.close()
                os.utime(out.name, (last, last))
            seq += 1
            day = stamp[:10]
            name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
            out = open(journal / f"{name}-{seq:06d}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        model = "claude-sonnet-4-5" if n % 4 else "claude-opus-4-1"
        line = (
            f'{{"type":"api_request","v":1,"id":"bench-{n}","ts":"{stamp}",'
            f'"source":"claude-code","session_id":"s{n % 500}",'
            f'"agent":{{"model":"{model}","provider":"anthropic"}},'
            f'"received_at":"{stamp}","tokens":{{"source":"actual","input":{n % 900},'
            f'"output":{n % 700},"cache_read":{n % 50_000},"cache_creation":{n % 3000},'
            f'"total":{n % 900 + n % 700 + n % 50_000 + n % 3000}}},'
            f'"cost_usd":{(n % 97) / 1000},"cost_source":"reported"}}\n'
        )
        assert out is not None
        out.write(line)
        size += len(line)
        last = when
    if out is not None:
        out.close()
        os.utime(out.name, (last, last))
    return size


def _payloads(workdir: Path, count: int) -> list[Path]:
    out = []
    for i in range(count):
        payload = {
            "session_id": SESSION,
            "transcript_path": f"/home/u/.claude/projects/p/{SESSION}.jsonl",
            "cwd": "/home/u/src/project",
            "model": {"id": "claude-opus-4-1", "display_name": "Opus 4.1"},
            "workspace": {"current_dir": "/home/u/src/project", "project_dir": "/home/u/src"},
            "version": "2.1.220",
            "cost": {
                "total_cost_usd": round(0.01 * (i + 1), 4),
                "total_duration_ms": 1000 * i,
                "total_api_duration_ms": 700 * i,
                "total_lines_added": i,
                "total_lines_removed": 0,
            },
            "context_window": {
                "total_input_tokens": 1000 * i,
                "total_output_tokens": 300 * i,
                "context_window_size": 200_000,
                "current_usage": {
                    "input_tokens": 1200,
                    "output_tokens": 300,
                    "cache_creation_input_tokens": 4000,
                    "cache_read_input_tokens": 60_000,
                },
            },
            "exceeds_200k_tokens": False,
            "rate_limits": {
                "five_hour": {"used_percentage": 23.0, "resets_at": int(time.time()) + 7200},
                "seven_day": {"used_percentage": 41.0, "resets_at": int(time.time()) + 86_400},
            },
        }
        path = workdir / f"status-{i:05d}.json"
        path.write_text(json.dumps(payload))
        out.append(path)
    return out


def _control(daemon: Telemetryd, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(daemon.dir / "run" / "control.sock"))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    if not reply.get("ok"):
        raise BenchError(f"{request['op']}: {reply}")
    return reply


def time_size(
    workdir: Path, events: int, iterations: int, log: Callable[[str], None]
) -> dict[str, Any]:
    home = workdir / f"statusline-{events}"
    started = time.perf_counter()
    size = write_journal(home / "journal", events, time.time())
    took = time.perf_counter() - started
    log(f"  {events:,} events, {size / 1e6:.0f} MB of journal in {took:.0f} s")
    argv = [telemetryctl(), "statusline"]
    pass_argv = [sys.executable, "-c", "pass"]
    payloads = _payloads(workdir, WARMUP + iterations)
    with Telemetryd(daemon_args(), label=f"statusline-{events}", home=home) as daemon:
        begin = time.perf_counter()
        first = _control(daemon, {"op": "totals"}, 600)
        first_ms = (time.perf_counter() - begin) * 1e3
        if first["days"] == {} or sum(d["requests"] for d in first["days"].values()) != events:
            raise BenchError(f"the totals hold {first['days']} for {events} events")
        _control(daemon, {"op": "flush"}, 3600)  # materialized, as on a running system
        env = _env(daemon.dir, workdir / "pycache")
        err = {"statusline": workdir / f"sl-{events}.stderr", "pass": workdir / "pass.stderr"}
        for path in err.values():
            for stale in (path, Path(f"{path}.out")):
                stale.unlink(missing_ok=True)
        times: dict[str, list[float]] = {"statusline": [], "pass": []}
        timing_started = time.time() - 1
        for i, payload in enumerate(payloads):
            order = [("statusline", argv), ("pass", pass_argv)]
            if i % 2:
                order.reverse()
            for name, command in order:
                elapsed = _timed(command, env, str(payload), err[name])
                if i >= WARMUP:
                    times[name].append(elapsed)
        printed = Path(f"{err['statusline']}.out").read_text().splitlines()
        problems = err["statusline"].read_text() if err["statusline"].exists() else ""
        bad = [line for line in printed if "today $" not in line or "telemetryd" in line]
        if len(printed) != len(payloads) or bad or problems.strip():
            raise BenchError(
                f"statusline: {len(printed)} lines for {len(payloads)} runs, e.g. "
                f"{(bad or printed or [''])[0]!r}; stderr {problems[-300:]!r}"
            )
        recorded = sum(
            1
            for path in daemon.segments()
            if path.stat().st_mtime >= timing_started  # (not the generated history)
            for line in path.read_text().splitlines()
            if '"claude_code.session.cost_usd"' in line
        )
        if recorded != len(payloads) or daemon.spooled():
            raise BenchError(f"{recorded} cost events journaled for {len(payloads)} runs")
        status = daemon.stop()
        if status != 0:
            raise BenchError(f"telemetryd exited with {status} after SIGTERM:\n{daemon.log()}")
    result = {
        "events": events,
        "journal_bytes": size,
        "first_totals_ms": first_ms,
        "iterations": iterations,
        "example": printed[-1],
        "statusline_p50_ms": statistics.median(times["statusline"]) * 1e3,
        "statusline_p95_ms": _percentile(times["statusline"], 0.95) * 1e3,
        "pass_p50_ms": statistics.median(times["pass"]) * 1e3,
        "pass_p95_ms": _percentile(times["pass"], 0.95) * 1e3,
    }
    result["ratio_p50"] = result["statusline_p50_ms"] / result["pass_p50_ms"]
    log(
        f"  {events:,} events: statusline p50 {result['statusline_p50_ms']:.1f} ms "
        f"(p95 {result['statusline_p95_ms']:.1f}), python -c pass p50 "
        f"{result['pass_p50_ms']:.1f} ms (x{result['ratio_p50']:.2f}); first totals "
        f"{first_ms:.0f} ms"
    )
    return result


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    iterations = 60 if quick else 200
    sizes = [SMALL, BIG_QUICK if quick else BIG]
    return {"sizes": {str(n): time_size(workdir, n, iterations, log) for n in sizes}}
