"""`telemetryctl hook claude-code` whole-process wall time against `python -c pass`.

Like bench/send.py: both started with ``os.posix_spawn`` + ``waitpid``, one of
each in turn so they share the machine's noise, bytecode cached in a private
``PYTHONPYCACHEPREFIX``. The hook reads a real Claude Code payload on stdin:
PreToolUse and PostToolUse in turn, with a fresh tool use id per pair (the
PreToolUse writes its timing file, the PostToolUse reads and removes it, as in
a session of an older Claude Code). Every event must be delivered, not spooled:
the journal is counted afterwards. Also ``python -X importtime`` of the hook path.

A third arm, ``hook_ats``, runs the same payloads with the agentic telemetry spec's
tier 1 example (tests/fixtures/ats/) as the tool input's ``metadata``: the hook then
imports adapters/ats.py and checks the metadata (docs/ats.md).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.procs import Telemetryd
from bench.send import _env, _percentile, import_summary, importtime, telemetryctl

WARMUP = 10
SAMPLE = Path("/work/shared/samples/claude-code/hooks/PreToolUse.rpd-skill.excerpt-3-5.json")
FALLBACK = {
    "session_id": "aa813aad-5b4e-4053-9540-3470829a4947",
    "transcript_path": "/home/u/.claude/projects/p/aa813aad.jsonl",
    "cwd": "/home/u/src/project",
    "permission_mode": "acceptEdits",
    "hook_event_name": "PreToolUse",
    "tool_name": "Read",
    "tool_input": {"file_path": "/home/u/src/project/scripts/run-eval.py", "offset": 167},
}


ATS_EXAMPLE = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "fixtures"
    / "ats"
    / "examples"
    / "tier1-ask-user-question.json"
)


def _payloads(workdir: Path, count: int, metadata: dict[str, Any] | None = None) -> list[Path]:
    """``count`` stdin files: PreToolUse, PostToolUse, PreToolUse, ... (pairs share an id);
    with ``metadata`` in the tool input when given."""
    base = json.loads(SAMPLE.read_text())[0] if SAMPLE.exists() else FALLBACK
    tag = "ats" if metadata is not None else "plain"
    if metadata is not None:
        base = dict(base, tool_input={**base.get("tool_input", {}), "metadata": metadata})
    out = []
    for i in range(count):
        payload = dict(base, tool_use_id=f"toolu_bench_{tag}_{i // 2:06d}")
        if i % 2:
            payload["hook_event_name"] = "PostToolUse"
            payload["tool_response"] = {"stdout": "ok", "stderr": "", "interrupted": False}
        path = workdir / f"payload-{tag}-{i:05d}.json"
        path.write_text(json.dumps(payload))
        out.append(path)
    return out


def _timed(argv: list[str], env: dict[str, str], stdin: str, stderr_path: Path) -> float:
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, stdin, os.O_RDONLY, 0),
        (
            os.POSIX_SPAWN_OPEN,
            1,
            str(stderr_path) + ".out",
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o600,
        ),
        (os.POSIX_SPAWN_OPEN, 2, str(stderr_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
    ]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise BenchError(f"{' '.join(argv)} exited with {code}")
    return elapsed


def _importtime_with_stdin(
    argv: list[str], env: dict[str, str], stdin: Path, repeats: int = 5
) -> dict[str, Any]:
    """Like bench.send.importtime (median self time per module, µs), with the hook's input."""
    per_module: dict[str, list[int]] = {}
    cumulative: dict[str, list[int]] = {}
    totals = []
    for _ in range(repeats):
        with open(stdin, "rb") as f:
            proc = subprocess.run(
                [sys.executable, "-X", "importtime", *argv],
                env=env,
                stdin=f,
                capture_output=True,
                text=True,
                check=False,
            )
        if proc.returncode != 0 or proc.stdout:
            raise BenchError(f"importtime run: exit {proc.returncode}, stdout {proc.stdout!r}")
        total = 0
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cum_us, name = line[len("import time:") :].split("|", 2)
            per_module.setdefault(name.strip(), []).append(int(self_us))
            cumulative.setdefault(name.strip(), []).append(int(cum_us))
            total += int(self_us)
        totals.append(total)
    return {
        "total_us": statistics.median(totals),
        "self_us": {k: statistics.median(v) for k, v in per_module.items()},
        "cumulative_us": {k: statistics.median(v) for k, v in cumulative.items()},
    }


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    iterations = 60 if quick else 200
    hook_argv = [telemetryctl(), "hook", "claude-code"]
    pass_argv = [sys.executable, "-c", "pass"]
    payloads = _payloads(workdir, WARMUP + iterations)
    metadata = json.loads(ATS_EXAMPLE.read_text())
    metadata.pop("_comment", None)
    ats_payloads = _payloads(workdir, WARMUP + iterations, metadata)
    with Telemetryd(label="hook") as daemon:
        env = _env(daemon.dir, workdir / "pycache")
        err = {name: workdir / f"{name}.stderr" for name in ("hook", "hook_ats", "pass")}
        times: dict[str, list[float]] = {"hook": [], "hook_ats": [], "pass": []}
        for i, (payload, ats_payload) in enumerate(zip(payloads, ats_payloads, strict=True)):
            order = [
                ("hook", hook_argv, payload),
                ("hook_ats", hook_argv, ats_payload),
                ("pass", pass_argv, payload),
            ]
            if i % 2:
                order.reverse()  # who goes first alternates
            for name, argv, stdin in order:
                elapsed = _timed(argv, env, str(stdin), err[name])
                if i >= WARMUP:
                    times[name].append(elapsed)
        for name, path in err.items():
            for stream in (path, Path(str(path) + ".out")):
                if stream.exists() and stream.read_text().strip():
                    raise BenchError(
                        f"{name}: unexpected output in {stream.name}: {stream.read_text()[-500:]}"
                    )
        journaled = daemon.journal_lines()
        leftover = list((daemon.dir / "run" / "hooks").glob("tool-*"))
        if journaled != 2 * len(payloads) or daemon.spooled() or leftover:
            raise BenchError(
                f"hook: {2 * len(payloads)} runs, {journaled} journaled, {daemon.spooled()} spool "
                f"files, {len(leftover)} timing files left"
            )
        imports_hook = _importtime_with_stdin(hook_argv, env, payloads[0])
        imports_pass = importtime(["-c", "pass"], env)
        status = daemon.stop()
        if status != 0:
            raise BenchError(f"telemetryd exited with {status} after SIGTERM:\n{daemon.log()}")
    result = {
        "iterations": iterations,
        "hook_p50_ms": statistics.median(times["hook"]) * 1e3,
        "hook_p95_ms": _percentile(times["hook"], 0.95) * 1e3,
        "hook_ats_p50_ms": statistics.median(times["hook_ats"]) * 1e3,
        "hook_ats_p95_ms": _percentile(times["hook_ats"], 0.95) * 1e3,
        "pass_p50_ms": statistics.median(times["pass"]) * 1e3,
        "pass_p95_ms": _percentile(times["pass"], 0.95) * 1e3,
        "importtime": import_summary("hook", imports_hook, imports_pass),
    }
    result["ratio_p50"] = result["hook_p50_ms"] / result["pass_p50_ms"]
    result["ratio_p95"] = result["hook_p95_ms"] / result["pass_p95_ms"]
    result["ats_ratio_p50"] = result["hook_ats_p50_ms"] / result["pass_p50_ms"]
    log(
        f"  hook p50 {result['hook_p50_ms']:.1f} ms (p95 {result['hook_p95_ms']:.1f}), "
        f"python -c pass p50 {result['pass_p50_ms']:.1f} ms (x{result['ratio_p50']:.2f}); "
        f"with ATS metadata p50 {result['hook_ats_p50_ms']:.1f} ms (x{result['ats_ratio_p50']:.2f})"
    )
    return result
