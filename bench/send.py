"""`telemetryctl send` whole-process wall time against `python -c pass`.

All are started the cheapest way there is (``os.posix_spawn`` + ``waitpid``,
output to /dev/null, stderr to a file that must stay empty), alternating one
of each so they share the machine's noise. Bytecode is cached (in a private
``PYTHONPYCACHEPREFIX``, as an installed package would have it); a third
variant runs send with no bytecode cache (``PYTHONDONTWRITEBYTECODE=1``, which
some environments set), for information. The send goes to a running daemon
and must be delivered, not spooled: the journal is counted afterwards.

Also ``python -X importtime`` of the send path, to show where start-up goes.
"""

from __future__ import annotations

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

SEND_ARGS = [
    "send",
    "--type",
    "tool_call",
    "--tool",
    "Bash",
    "--session",
    "5f0c2a3e-1b7d-4c1e-9a55-0c6f3f2d9b11",
    "--model",
    "claude-sonnet-4-5",
    "--duration-ms",
    "412",
]
WARMUP = 10


def telemetryctl() -> str:
    path = Path(sys.executable).parent / "telemetryctl"
    if not path.exists():
        raise BenchError(f"{path} is missing (make install)")
    return str(path)


def _env(home: Path, pycache: Path | None) -> dict[str, str]:
    """The daemon's home; with ``pycache``, bytecode cached there (as on an installed system),
    else no bytecode cache at all (``PYTHONDONTWRITEBYTECODE``, as this environment may set)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TELEMETRYD_")
        and k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    env["TELEMETRYD_HOME"] = str(home)
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _timed(argv: list[str], env: dict[str, str], stderr_path: Path) -> float:
    """Seconds from spawn to reaped exit; raises on a non-zero exit."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(stderr_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
    ]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise BenchError(f"{' '.join(argv)} exited with {code}: {stderr_path.read_text()[-500:]}")
    return elapsed


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def import_summary(
    name: str, imports: dict[str, Any], imports_pass: dict[str, Any]
) -> dict[str, Any]:
    """What ``name``'s process imports beyond ``python -c pass``: totals and the top 12."""
    extra = {m: us for m, us in imports["self_us"].items() if m not in imports_pass["self_us"]}
    top = sorted(extra.items(), key=lambda item: -item[1])[:12]
    return {
        f"{name}_total_ms": imports["total_us"] / 1e3,
        "pass_total_ms": imports_pass["total_us"] / 1e3,
        f"{name}_only_total_ms": sum(extra.values()) / 1e3,
        f"{name}_only_top": [
            {
                "module": module,
                "self_ms": us / 1e3,
                "cumulative_ms": imports["cumulative_us"][module] / 1e3,
            }
            for module, us in top
        ],
    }


def importtime(argv: list[str], env: dict[str, str], repeats: int = 5) -> dict[str, Any]:
    """Median self time per module (µs) over ``repeats`` runs of ``python -X importtime``."""
    per_module: dict[str, list[int]] = {}
    cumulative: dict[str, list[int]] = {}
    totals = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", *argv],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BenchError(f"importtime run exited with {proc.returncode}: {proc.stderr[-500:]}")
        total = 0
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cum_us, name = line[len("import time:") :].split("|", 2)
            name = name.strip()
            per_module.setdefault(name, []).append(int(self_us))
            cumulative.setdefault(name, []).append(int(cum_us))
            total += int(self_us)
        totals.append(total)
    return {
        "total_us": statistics.median(totals),
        "self_us": {k: statistics.median(v) for k, v in per_module.items()},
        "cumulative_us": {k: statistics.median(v) for k, v in cumulative.items()},
    }


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    iterations = 60 if quick else 200
    ctl = telemetryctl()
    send_argv = [ctl, *SEND_ARGS]
    pass_argv = [sys.executable, "-c", "pass"]
    with Telemetryd(label="send") as daemon:
        env = _env(daemon.dir, workdir / "pycache")
        env_nocache = _env(daemon.dir, None)
        kinds = [  # name, argv, env
            ("send", send_argv, env),
            ("pass", pass_argv, env),
            ("send_nocache", send_argv, env_nocache),
        ]
        stderr = {name: workdir / f"{name}.stderr" for name, _, _ in kinds}
        times: dict[str, list[float]] = {name: [] for name, _, _ in kinds}
        for _ in range(WARMUP):
            for name, argv, environ in kinds:
                _timed(argv, environ, stderr[name])
        for i in range(iterations):
            order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]  # rotate who goes first
            for name, argv, environ in order:
                times[name].append(_timed(argv, environ, stderr[name]))
        for path in stderr.values():
            if path.exists() and path.read_text().strip():
                raise BenchError(f"unexpected output on stderr: {path.read_text()[-500:]}")
        sent = (WARMUP + iterations) * 2
        journaled = daemon.journal_lines()
        if journaled != sent or daemon.spooled():
            raise BenchError(
                f"telemetryctl send: {sent} runs, {journaled} journaled, "
                f"{daemon.spooled()} spool files"
            )
        imports_send = importtime([ctl, *SEND_ARGS], env)
        imports_pass = importtime(["-c", "pass"], env)
        status = daemon.stop()
        if status != 0:
            raise BenchError(f"telemetryd exited with {status} after SIGTERM:\n{daemon.log()}")
    send_times, pass_times = times["send"], times["pass"]
    result = {
        "iterations": iterations,
        "send_p50_ms": statistics.median(send_times) * 1e3,
        "send_p95_ms": _percentile(send_times, 0.95) * 1e3,
        "pass_p50_ms": statistics.median(pass_times) * 1e3,
        "pass_p95_ms": _percentile(pass_times, 0.95) * 1e3,
        "send_nocache_p50_ms": statistics.median(times["send_nocache"]) * 1e3,
        "send_nocache_p95_ms": _percentile(times["send_nocache"], 0.95) * 1e3,
        "importtime": import_summary("send", imports_send, imports_pass),
    }
    result["ratio_p50"] = result["send_p50_ms"] / result["pass_p50_ms"]
    log(
        f"  send p50 {result['send_p50_ms']:.1f} ms, python -c pass p50 "
        f"{result['pass_p50_ms']:.1f} ms (x{result['ratio_p50']:.2f})"
    )
    return result
