"""`telemetryctl import claude-code` throughput and peak RSS on a generated transcript tree.

The tree is built from the real lines of the spotter tool-heavy session (the
sample in /work/shared/samples, or a built-in stand-in): every line of the
session repeated with fresh message / request ids and timestamps, so it has
the real mix of user, progress and assistant lines and the real repetition of
usage per content block. One file holds most of the bytes (a "700 MB file" at
full size), the rest is split over many sessions. Both a dry run (reading and
counting only) and a real import into a fresh daemon are timed; peak RSS is the
import process's own (``wait4``). At full size the small tree is run too, to
show that peak RSS does not grow with the input.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.procs import Telemetryd
from bench.send import telemetryctl

SAMPLE = Path(
    "/work/shared/samples/claude-code/transcripts/spotter_tool_heavy_session_v2.1.38.jsonl"
)
SIZES_MB = {"quick": [(70, 30)], "full": [(70, 30), (700, 300)]}  # (one big file, the rest)
SMALL_FILE_MB = 4


def _templates() -> list[str]:
    """The sample's lines, each with placeholders for the ids and the time."""
    if SAMPLE.exists():
        lines = SAMPLE.read_text().splitlines()
    else:  # a minimal stand-in: two content blocks of one response, and a user line
        usage = {"input_tokens": 3, "cache_creation_input_tokens": 8490,
                 "cache_read_input_tokens": 18014, "output_tokens": 11}  # fmt: skip
        line = {"type": "assistant", "sessionId": "s", "timestamp": "2026-02-10T22:59:25.207Z",
                "requestId": "req_1", "uuid": "u",
                "message": {"id": "msg_1", "model": "claude-opus-4-6", "usage": usage,
                            "content": [{"type": "text", "text": "x" * 1500}]}}  # fmt: skip
        lines = [json.dumps(line)] * 2 + [json.dumps({"type": "user", "message": "y" * 3000})]
    out = []
    ids: dict[str, str] = {}  # each distinct message / request id -> its placeholder
    for text in lines:
        line = json.loads(text)
        message = line.get("message")
        found = [message.get("id")] if isinstance(message, dict) else []
        for value in [*found, line.get("requestId")]:
            if isinstance(value, str) and value:
                placeholder = ids.setdefault(value, f"{{ID{len(ids)}}}")
                text = text.replace(value, placeholder)
        if line.get("timestamp"):
            text = text.replace(line["timestamp"], "{TS}")
        out.append(text)
    return out


def generate(root: Path, big_mb: int, rest_mb: int) -> dict[str, int]:
    """Write the tree; its size in bytes and lines."""
    templates = _templates()
    placeholders = (
        sum(t.count("{ID") for t in templates)
        and max(int(part.split("}")[0]) for t in templates for part in t.split("{ID")[1:]) + 1
    )
    root.mkdir(parents=True, exist_ok=True)
    written = lines = 0
    serial = 0

    def fill(path: Path, target: int) -> None:
        nonlocal written, lines, serial
        size = 0
        with open(path, "w") as f:
            while size < target:
                serial += 1
                day = 1 + serial % 28
                ts = f"2026-03-{day:02d}T12:{serial // 60 % 60:02d}:{serial % 60:02d}.000Z"
                chunk = "\n".join(templates).replace("{TS}", ts)
                for k in range(placeholders):
                    chunk = chunk.replace(f"{{ID{k}}}", f"id_{serial:012d}_{k}")
                chunk += "\n"
                f.write(chunk)
                size += len(chunk)
                lines += len(templates)
        written += size

    (root / "big-project").mkdir(exist_ok=True)
    fill(root / "big-project" / "big-session.jsonl", big_mb << 20)
    for i in range(max(1, rest_mb // SMALL_FILE_MB)):
        project = root / f"project-{i % 10}"
        project.mkdir(exist_ok=True)
        fill(project / f"session-{i:04d}.jsonl", SMALL_FILE_MB << 20)
    return {"bytes": written, "lines": lines}


def _timed_import(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one import; wall time, peak RSS (MB) and its JSON summary."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [telemetryctl(), "import", "claude-code", *args, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchError(f"import exited with {proc.returncode}: {err.decode()[-500:]}")
    return {"wall_s": elapsed, "peak_rss_mb": usage.ru_maxrss / 1024, "summary": json.loads(out)}


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    results = []
    for big_mb, rest_mb in SIZES_MB["quick" if quick else "full"]:
        root = workdir / f"transcripts-{big_mb + rest_mb}mb"
        made = generate(root, big_mb, rest_mb)
        log(f"  generated {made['bytes'] / 2**20:.0f} MB, {made['lines']:,} lines in {root}")
        with Telemetryd(label="import") as daemon:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRYD_")}
            env["TELEMETRYD_HOME"] = str(daemon.dir)
            dry = _timed_import([str(root), "--dry-run"], env)
            real = _timed_import([str(root)], env)
            summary = real["summary"]
            # Every event sent (API requests, and the sessions' tool uses, prompts and
            # sub-agents) accepted and journaled.
            if summary["accepted"] != summary["sent"] or summary["rejected"]:
                raise BenchError(f"import: {summary}")
            journaled = daemon.journal_lines()
            if journaled != summary["sent"]:
                raise BenchError(f"{summary['sent']} events sent, {journaled} journaled")
            again = _timed_import([str(root), "--rescan"], env)
            if again["summary"]["accepted"] != 0:
                raise BenchError(f"second import added {again['summary']['accepted']} events")
            status = daemon.stop()
            if status != 0:
                raise BenchError(f"telemetryd exited with {status}:\n{daemon.log()}")
        mb = made["bytes"] / 2**20
        row = {
            "input_mb": mb,
            "lines": made["lines"],
            "requests": summary["requests"],
            "dry_run_s": dry["wall_s"],
            "dry_run_mb_per_s": mb / dry["wall_s"],
            "dry_run_lines_per_s": made["lines"] / dry["wall_s"],
            "dry_run_peak_rss_mb": dry["peak_rss_mb"],
            "import_s": real["wall_s"],
            "import_mb_per_s": mb / real["wall_s"],
            "import_lines_per_s": made["lines"] / real["wall_s"],
            "import_events_per_s": summary["sent"] / real["wall_s"],
            "import_peak_rss_mb": real["peak_rss_mb"],
            "rescan_s": again["wall_s"],
        }
        results.append(row)
        log(
            f"  {mb:.0f} MB: dry run {row['dry_run_mb_per_s']:.0f} MB/s "
            f"({row['dry_run_lines_per_s']:,.0f} lines/s), import {row['import_mb_per_s']:.0f} "
            f"MB/s ({row['import_events_per_s']:,.0f} events/s), peak RSS "
            f"{row['import_peak_rss_mb']:.0f} MB"
        )
        for path in sorted(root.rglob("*.jsonl")):
            path.unlink()
    return {"sizes": results}
