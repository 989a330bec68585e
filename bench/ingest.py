"""Streaming ingest: telemetryd with 1 and 8 clients, and the baselines, interleaved.

A streaming client writes its whole payload over one connection as fast as it
can, half-closes and waits for the reply. The figure is total events / wall
time from the first byte sent to the last summary received. For the baselines,
which send no acknowledgement, the clock stops when the output file holds every
byte (polled every millisecond from a thread), or at the last EOF if later.

Each repetition runs every configuration once, back to back, so the ratios
compare runs that shared the machine's noise; the report gives medians of the
per-repetition figures and ratios.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError, clients, payload
from bench.procs import Rsyslog, SocatSink, Telemetryd, memory_kib, rsyslogd_path

OUTPUT_TIMEOUT = 120.0


class Sizes:
    def __init__(self, quick: bool) -> None:
        self.single = 150_000 if quick else 300_000  # events, 1 client
        self.per_client = 25_000 if quick else 40_000  # events per client, 8 clients
        self.clients = 8


def prepare(workdir: Path, sizes: Sizes) -> dict[str, Any]:
    """Write the payload files once; every run and every server reads the same bytes."""
    files: dict[str, Any] = {}
    single = workdir / "single.ndjson"
    files["single"] = ([str(single)], [sizes.single], payload.write_stream(single, sizes.single))
    shared = workdir / "per-client.ndjson"
    size = payload.write_stream(shared, sizes.per_client)
    n = sizes.clients
    files["eight"] = ([str(shared)] * n, [sizes.per_client] * n, size * n)
    paths, total = [], 0
    for client in range(n):
        path = workdir / f"ids-{client}.ndjson"
        total += payload.write_stream_with_ids(path, sizes.per_client, client)
        paths.append(str(path))
    files["eight_ids"] = (paths, [sizes.per_client] * n, total)
    return files


def _summary(reply: str) -> tuple[dict[str, Any] | None, list[str]]:
    lines = [line for line in reply.splitlines() if line.strip()]
    if not lines:
        return None, []
    try:
        last = json.loads(lines[-1])
    except ValueError:
        return None, lines
    return (last if isinstance(last, dict) and last.get("ok") else None), lines[:-1]


def run_telemetryd(
    files: tuple[list[str], list[int], int], *, check_ids: bool, label: str = "telemetryd"
) -> dict[str, Any]:
    paths, counts, total_bytes = files
    events = sum(counts)
    with Telemetryd(label=label) as daemon:
        cpu0 = daemon.cpu()
        results = clients.stream(daemon.socket_path, paths)
        cpu1 = daemon.cpu()
        t0, t1 = clients.span(results)
        for result, sent in zip(results, counts, strict=True):
            summary, other = _summary(result["reply"])
            expected = {"lines": sent, "accepted": sent, "rejected": 0, "duplicates": 0}
            if summary is None or any(summary.get(k) != v for k, v in expected.items()) or other:
                raise BenchError(
                    f"telemetryd: sent {sent} events, got reply {result['reply'][-500:]!r}"
                )
        memory = memory_kib(daemon.pid)
        journaled = daemon.journal_lines()
        if journaled != events:
            raise BenchError(f"telemetryd: sent {events} events, journal has {journaled} lines")
        if check_ids:
            ids = daemon.journal_ids()
            if len(set(ids)) != events:
                raise BenchError(f"telemetryd: {events} events but {len(set(ids))} distinct ids")
        status = daemon.stop()
        if status != 0:
            raise BenchError(f"telemetryd exited with {status} after SIGTERM:\n{daemon.log()}")
    wall = t1 - t0
    return {
        "events": events,
        "bytes": total_bytes,
        "wall_s": wall,
        "events_per_s": events / wall,
        "mb_per_s": total_bytes / wall / 1e6,
        "server_cpu_cores": (cpu1 - cpu0) / wall,
        "server_cpu_us_per_event": (cpu1 - cpu0) / events * 1e6,
        "client_cpu_cores": sum(r["cpu"] for r in results) / wall,
        "send_done_s": max(r["t_sent"] for r in results) - t0,
        "peak_rss_mb": memory.get("VmHWM", 0) / 1024,
        "journal_lines": journaled,
    }


class _SizeWatch:
    """Polls a file's size from a thread; records when it first reaches ``target``."""

    def __init__(self, size: Callable[[], int], target: int) -> None:
        self.size = size
        self.target = target
        self.reached: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _SizeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.size() >= self.target:
                self.reached = time.monotonic()
                return
            time.sleep(0.001)

    def wait(self, timeout: float) -> float:
        self._thread.join(timeout)
        if self.reached is None:
            raise BenchError(f"output has {self.size()} of {self.target} bytes after {timeout:g} s")
        return self.reached


def run_sink(
    server: Rsyslog | SocatSink,
    files: tuple[list[str], list[int], int],
    *,
    socat_clients: bool = False,
) -> dict[str, Any]:
    paths, counts, total_bytes = files
    events = sum(counts)
    with server:
        cpu0 = server.cpu()
        with _SizeWatch(server.output_size, total_bytes) as watch:
            if socat_clients:
                results = _socat_clients(server.socket_path, paths)
            else:
                results = clients.stream(server.socket_path, paths)
            done = watch.wait(OUTPUT_TIMEOUT)
        time.sleep(0.05)  # let socat reap its children, so their CPU is counted
        cpu1 = server.cpu()
        t0, t1 = clients.span(results)
        t1 = max(t1, done)
        lines = server.output_lines()
        if lines != events:
            raise BenchError(f"{server.name}: sent {events} events, output has {lines} lines")
        server.stop()
    wall = t1 - t0
    client_cpu = sum(r["cpu"] for r in results) if not socat_clients else None
    return {
        "events": events,
        "bytes": total_bytes,
        "wall_s": wall,
        "events_per_s": events / wall,
        "mb_per_s": total_bytes / wall / 1e6,
        "server_cpu_cores": (cpu1 - cpu0) / wall,
        "server_cpu_us_per_event": (cpu1 - cpu0) / events * 1e6,
        "client_cpu_cores": None if client_cpu is None else client_cpu / wall,
        "output_lines": lines,
    }


def _socat_clients(socket_path: str, paths: list[str]) -> list[dict[str, Any]]:
    """``socat -u FILE UNIX-CONNECT:sock`` per payload; timed from just before the spawns."""
    binary = shutil.which("socat") or "socat"
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [binary, "-u", "-b", "262144", f"OPEN:{p},rdonly", f"UNIX-CONNECT:{socket_path}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for p in paths
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=OUTPUT_TIMEOUT)
        if proc.returncode != 0:
            raise BenchError(f"socat client exited with {proc.returncode}: {err.decode()[-500:]}")
    t1 = time.monotonic()
    return [{"t0": t0, "t1": t1, "cpu": 0.0}]


CONFIGS = {
    # name: (what it is, payload key)
    "td_1": ("telemetryd, 1 streaming client", "single"),
    "td_8": ("telemetryd, 8 streaming clients", "eight"),
    "td_8_ids": ("telemetryd, 8 clients, client ids", "eight_ids"),
    "socat_8": ("socat byte copy, 8 python clients", "eight"),
    "socat_8_socat": ("socat byte copy, 8 socat clients", "eight"),
    "rsyslog_8": ("rsyslogd imptcp->omfile, 8 clients", "eight"),
}


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    sizes = Sizes(quick)
    files = prepare(workdir, sizes)
    have_rsyslog = rsyslogd_path() is not None
    skipped = {} if have_rsyslog else {"rsyslog_8": "rsyslogd is not installed (make system-deps)"}
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS if name not in skipped}
    for rep in range(runs):
        for name in out:
            key = CONFIGS[name][1]
            if name.startswith("td_"):
                result = run_telemetryd(files[key], check_ids=rep == 0, label=name)
            elif name == "rsyslog_8":
                result = run_sink(Rsyslog(), files[key])
            else:
                result = run_sink(SocatSink(), files[key], socat_clients=name == "socat_8_socat")
            out[name].append(result)
            log(
                f"  ingest run {rep + 1}/{runs} {name:<14} {result['events_per_s']:>11,.0f} ev/s"
                f"  server {result['server_cpu_cores']:.2f} cores"
            )
    return {
        "configs": {name: CONFIGS[name][0] for name in out},
        "runs": out,
        "skipped": skipped,
        "event_bytes": {
            key: files[key][2] / sum(files[key][1]) for key in ("single", "eight", "eight_ids")
        },
    }
