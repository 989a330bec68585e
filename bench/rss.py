"""The daemon's peak memory under a flood: 64 concurrent streaming clients.

Peak = ``VmHWM`` from /proc/<pid>/status once every client has its summary
(the kernel's high-water mark of resident memory over the process's life).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import payload
from bench.ingest import run_telemetryd
from bench.procs import Telemetryd, memory_kib

CLIENTS = 64


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    per_client = 10_000 if quick else 50_000
    shared = workdir / "flood.ndjson"
    size = payload.write_stream(shared, per_client)
    with Telemetryd(label="idle") as idle:
        idle_kib = memory_kib(idle.pid)
        idle.stop()
    result = run_telemetryd(
        ([str(shared)] * CLIENTS, [per_client] * CLIENTS, size * CLIENTS),
        check_ids=False,
        label="flood",
    )
    result["clients"] = CLIENTS
    result["events_per_client"] = per_client
    result["idle_rss_mb"] = idle_kib.get("VmHWM", 0) / 1024
    log(
        f"  flood {CLIENTS}x{per_client:,}: peak RSS {result['peak_rss_mb']:.0f} MB"
        f" (idle {result['idle_rss_mb']:.0f} MB), {result['events_per_s']:,.0f} ev/s"
    )
    return result
