"""Streaming ingest: telemetryd with 1 and 8 clients, and the baselines, interleaved.

A streaming client writes its whole payload over one connection as fast as it
can, half-closes and waits for the reply. The figure is total events / wall
time from the first byte sent to the last summary received. For the baselines,
which send no acknowledgement, the clock stops when the output file holds every
byte (polled every millisecond from a thread), or at the last EOF if later.

Baselines, fed the same payload by the same 8 clients: a raw copy (socat; rsyslog
imptcp -> omfile of the raw message), and two that parse every line as JSON and
write the parsed tree back out, the kind of work telemetryd does (rsyslog with
mmjsonparse, syslog-ng with json-parser; ``bench/syslogng.py`` says how that one
is installed). Their output is not the input's size, so for them the clock stops
when the output holds one line per event (counted incrementally by the same
thread); afterwards every output line must decode as a JSON object with the
payload's ``type`` and nested ``agent.model``, so a baseline that skipped the
parsing (or dropped events) fails instead of looking fast.

Each repetition runs every configuration once, back to back, so the ratios
compare runs that shared the machine's noise; the report gives medians of the
per-repetition figures and ratios.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError, clients, payload, syslogng
from bench.procs import (
    FileSink,
    Rsyslog,
    RsyslogJson,
    SocatSink,
    Telemetryd,
    TreeSampler,
    check_parsed,
    memory_kib,
    rsyslog_module,
    rsyslogd_path,
    tree_cpu_seconds,
)

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
    files: tuple[list[str], list[int], int],
    *,
    check_ids: bool,
    label: str = "telemetryd",
    sample_every: float | None = None,
    args: list[str] | None = None,
    home: Path | None = None,
) -> dict[str, Any]:
    """Time telemetryd; with ``sample_every`` (seconds), also the summed RSS of its
    process tree (the daemon and any store worker), sampled that often from just before
    the clients start until it has exited: the peak until the last client has its
    summary (``tree_peak_rss_mb``), and until exit, its shutdown included."""
    paths, counts, total_bytes = files
    events = sum(counts)
    sampler: TreeSampler | None = None
    with Telemetryd(args, label=label, home=home) as daemon, contextlib.ExitStack() as stack:
        seeded = daemon.journal_lines()  # a kept home's journal from before
        if sample_every is not None:
            sampler = stack.enter_context(TreeSampler(daemon.pid, sample_every))
        own0, cpu0 = tree_cpu_seconds(daemon.pid)
        results = clients.stream(daemon.socket_path, paths)
        own1, cpu1 = tree_cpu_seconds(daemon.pid)
        flood_peak: tuple[int, dict[int, int], int] | None = None
        if sampler is not None:
            sampler.sample()
            flood_peak = (sampler.peak_kib, dict(sampler.at_peak), sampler.most_processes)
        t0, t1 = clients.span(results)
        for result, sent in zip(results, counts, strict=True):
            summary, other = _summary(result["reply"])
            expected = {"lines": sent, "accepted": sent, "rejected": 0, "duplicates": 0}
            if summary is None or any(summary.get(k) != v for k, v in expected.items()) or other:
                raise BenchError(
                    f"telemetryd: sent {sent} events, got reply {result['reply'][-500:]!r}"
                )
        memory = memory_kib(daemon.pid)
        analyses = daemon.analyses()
        journaled = daemon.journal_lines() - seeded
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
    tree: dict[str, Any] = {}
    if sampler is not None and flood_peak is not None:
        peak, at_peak, most = flood_peak
        tree = {
            "tree_peak_rss_mb": peak / 1024,
            "tree_at_peak_mb": [kib / 1024 for kib in at_peak.values()],
            "tree_processes_max": most,
            "tree_peak_to_exit_rss_mb": sampler.peak_kib / 1024,
            "tree_processes_max_to_exit": sampler.most_processes,
            "tree_samples": sampler.samples,
        }
    return {
        **tree,
        "events": events,
        "bytes": total_bytes,
        "wall_s": wall,
        "events_per_s": events / wall,
        "mb_per_s": total_bytes / wall / 1e6,
        # Every process of the daemon's tree: the daemon, its ingest workers, and the store
        # worker, which loads what is journaled meanwhile (store.pending-events).
        "server_cpu_cores": (cpu1 - cpu0) / wall,
        "server_cpu_us_per_event": (cpu1 - cpu0) / events * 1e6,
        "daemon_cpu_cores": (own1 - own0) / wall,
        "daemon_cpu_us_per_event": (own1 - own0) / events * 1e6,
        "client_cpu_cores": sum(r["cpu"] for r in results) / wall,
        "send_done_s": max(r["t_sent"] for r in results) - t0,
        "peak_rss_mb": memory.get("VmHWM", 0) / 1024,
        "journal_lines": journaled,
        "analyses": analyses,
    }


class _LineCounter:
    """The newlines written to a growing file so far, read incrementally (each byte once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._file: Any = None

    def __call__(self) -> int:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close())
            except FileNotFoundError:
                return 0
        while chunk := self._file.read(1 << 20):
            self.lines += chunk.count(b"\n")
        return self.lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _SizeWatch:
    """Polls a file's size (or another count) from a thread; records when it first
    reaches ``target``."""

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
    server: FileSink,
    files: tuple[list[str], list[int], int],
    *,
    socat_clients: bool = False,
    parsed: bool = False,
) -> dict[str, Any]:
    """Time a baseline; with ``parsed``, one that writes each event back out re-encoded
    (done at one output line per event; every line checked afterwards)."""
    paths, counts, total_bytes = files
    events = sum(counts)
    sample: dict[str, Any] = {}
    with server:
        counter = _LineCounter(server.out)
        cpu0 = server.cpu()
        try:
            progress, target = (counter, events) if parsed else (server.output_size, total_bytes)
            with _SizeWatch(progress, target) as watch:
                if socat_clients:
                    results = _socat_clients(server.socket_path, paths)
                else:
                    results = clients.stream(server.socket_path, paths)
                done = watch.wait(OUTPUT_TIMEOUT)
        finally:
            counter.close()
        time.sleep(0.05)  # let socat reap its children, so their CPU is counted
        cpu1 = server.cpu()
        t0, t1 = clients.span(results)
        t1 = max(t1, done)
        if parsed:
            sample = check_parsed(server.out, events, server.name)
            lines = events
        else:
            lines = server.output_lines()
        if lines != events:
            raise BenchError(f"{server.name}: sent {events} events, output has {lines} lines")
        output_bytes = server.output_size()
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
        "output_bytes": output_bytes,
        **({"parsed_sample": sample} if parsed else {}),
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
    "rsyslog_json_8": ("rsyslogd + mmjsonparse, 8 clients", "eight"),
    "syslog_ng_8": ("syslog-ng + json-parser, 8 clients", "eight"),
}


def _skipped() -> dict[str, str]:
    """The baselines this machine cannot run, and why."""
    skipped = {}
    if rsyslogd_path() is None:
        skipped["rsyslog_8"] = "rsyslogd is not installed (make system-deps)"
    if rsyslogd_path() is None or rsyslog_module("mmjsonparse") is None:
        skipped["rsyslog_json_8"] = "rsyslogd or its mmjsonparse module is not installed"
    missing = syslogng.missing_libraries()
    if missing:
        skipped["syslog_ng_8"] = (
            f"syslog-ng is not unpacked or lacks {missing} (make bench, or "
            "python -m bench.syslogng install)"
        )
    return skipped


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    sizes = Sizes(quick)
    files = prepare(workdir, sizes)
    skipped = _skipped()
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS if name not in skipped}
    for rep in range(runs):
        for name in out:
            key = CONFIGS[name][1]
            if name.startswith("td_"):
                result = run_telemetryd(files[key], check_ids=rep == 0, label=name)
            elif name == "rsyslog_8":
                result = run_sink(Rsyslog(), files[key])
            elif name == "rsyslog_json_8":
                result = run_sink(RsyslogJson(), files[key], parsed=True)
            elif name == "syslog_ng_8":
                result = run_sink(syslogng.SyslogNg(), files[key], parsed=True)
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
        "versions": _versions(out),
        "event_bytes": {
            key: files[key][2] / sum(files[key][1]) for key in ("single", "eight", "eight_ids")
        },
    }


def _versions(configs: dict[str, Any]) -> dict[str, str]:
    """The baselines' versions, for the record."""
    out = {}
    if "rsyslog_8" in configs or "rsyslog_json_8" in configs:
        binary = rsyslogd_path() or "rsyslogd"
        first = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        words = first[0].split() if first else []  # "rsyslogd  8.2302.0 (aka 2023.02) ..."
        out["rsyslogd"] = words[1] if len(words) > 1 else "?"
    if "syslog_ng_8" in configs:
        out["syslog-ng"] = syslogng.version()
    return out
