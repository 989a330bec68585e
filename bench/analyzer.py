"""The analyzer's cost on streaming ingest: events/s with it on against it off.

Both daemons start from a copy of the same home: a journal of recent events, all
loaded into the database (the seed), so each analysis has a day's worth of history to
scan from the first second. The same 8 streaming clients as the ingest benchmark then
send the same payload (the ingest payload, with an input digest on every tool event
so the loop rule has work) to a daemon whose analyzer runs every second (30 times its
default rate) and to one whose analyzer is off (``analyzer.enabled = false``). Every
repetition runs both, back to back; the figure is the median of the per-repetition
ratios. The analyzer works in the store worker, which shares the machine's cores with
the daemon: this is the cost the issue bounds (at most 10% fewer events/s). The
daemon's status after the clients finish says how many analyses ran during the
stream, so a run where the analyzer never ran cannot pass for a cheap one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError, clients, payload
from bench.ingest import run_telemetryd
from bench.procs import Telemetryd

CONFIGS = {
    "analyzer_off": ["--set", "analyzer.enabled=false"],
    "analyzer_on": ["--set", "analyzer.interval=1"],
}
GOAL = 0.90  # events/s with the analyzer on, as a share of it off


def write_payload(path: Path, events: int) -> int:
    """The ingest payload, with a digest of the tool's name on every tool event."""
    lines = []
    for line in payload.pool():
        if b'"type":"tool_call"' in line:
            name = line.split(b'"tool":{"name":"', 1)[1].split(b'"', 1)[0]
            digest = b"%032x" % (sum(name) * 7919)
            line = line.replace(b'"use_id"', b'"input_digest":"' + digest + b'","use_id"', 1)
        lines.append(line)
    data = b"".join(lines[n % len(lines)] for n in range(events))
    path.write_bytes(data)
    return len(data)


def seed(workdir: Path, path: Path, events: int) -> Path:
    """A home whose journal holds ``events`` recent events, all in its database."""
    from telemetryd.client import control

    home = workdir / "analyzer-seed"
    home.mkdir()
    write_payload(path, events)
    with Telemetryd(["--set", "analyzer.enabled=false"], label="seed", home=home) as daemon:
        clients.stream(daemon.socket_path, [str(path)])
        control.flush(str(home / "run" / "control.sock"))
        if daemon.stop() != 0:
            raise BenchError(f"the seeding daemon failed:\n{daemon.log()}")
    return home


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    per_client, clients_n = (60_000 if quick else 125_000), 8
    history = 250_000 if quick else 1_000_000
    home = seed(workdir, workdir / "analyzer-seed.ndjson", history)
    shared = workdir / "analyzer.ndjson"
    size = write_payload(shared, per_client)
    files = ([str(shared)] * clients_n, [per_client] * clients_n, size * clients_n)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for rep in range(runs):
        for name, args in CONFIGS.items():
            copy = workdir / f"analyzer-{name}"
            shutil.copytree(home, copy, ignore=shutil.ignore_patterns("*.sock"))
            try:
                result = run_telemetryd(files, check_ids=False, label=name, args=args, home=copy)
            finally:
                shutil.rmtree(copy, ignore_errors=True)
            out[name].append(result)
            log(
                f"  analyzer run {rep + 1}/{runs} {name:<13} {result['events_per_s']:>11,.0f} "
                f"ev/s, {result.get('analyses', 0)} analyses during the stream"
            )
    if not all(r.get("analyses", 0) >= 1 for r in out["analyzer_on"]):
        raise BenchError("the analyzer did not run during a stream: the figure means nothing")
    ratios = [
        on["events_per_s"] / off["events_per_s"]
        for on, off in zip(out["analyzer_on"], out["analyzer_off"], strict=True)
    ]
    return {"configs": CONFIGS, "runs": out, "ratios": ratios, "goal": GOAL, "history": history}
