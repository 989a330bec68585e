"""Connection per event, the hook pattern: 8 client processes, each in a loop of
connect, send one event, half-close, read the summary, close.

Each repetition also runs the same clients against ``nullserver.py`` (the
protocol and nothing else, on the same event loop): the ceiling any asyncio
daemon could reach here with these clients, whose own CPU cost per event is
reported too (on 2 cores the clients alone can use most of the machine).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError, clients, payload
from bench.procs import NullServer, Server, Telemetryd, tree_cpu_seconds

CLIENTS = 8


def run_once(server: Server, event_file: str, seconds: float) -> dict[str, Any]:
    with server:
        own0, cpu0 = tree_cpu_seconds(server.pid)
        results = clients.perconn(server.socket_path, event_file, CLIENTS, seconds)
        own1, cpu1 = tree_cpu_seconds(server.pid)
        t0, t1 = clients.span(results)
        ok = sum(r["ok"] for r in results)
        bad = [r["first_bad"] for r in results if r["bad"]]
        if bad:
            raise BenchError(
                f"connection per event ({server.name}): {sum(r['bad'] for r in results)} "
                f"connections got no clean summary; first reply: {bad[0]!r}"
            )
        if isinstance(server, Telemetryd):
            journaled = server.journal_lines()
            if journaled != ok:
                raise BenchError(f"connection per event: {ok} acked, journal has {journaled} lines")
        status = server.stop()
        if status != 0 and isinstance(server, Telemetryd):
            raise BenchError(f"telemetryd exited with {status} after SIGTERM:\n{server.log()}")
    wall = t1 - t0
    return {
        "events": ok,
        "wall_s": wall,
        "events_per_s": ok / wall,
        "server_cpu_cores": (cpu1 - cpu0) / wall,
        "client_cpu_cores": sum(r["cpu"] for r in results) / wall,
        "client_cpu_us_per_event": sum(r["cpu"] for r in results) / ok * 1e6,
        "server_cpu_us_per_event": (cpu1 - cpu0) / ok * 1e6,
        # The server's own process (telemetryd's figure above covers its process tree).
        "daemon_cpu_cores": (own1 - own0) / wall,
        "daemon_cpu_us_per_event": (own1 - own0) / ok * 1e6,
    }


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    event_file = workdir / "one.ndjson"
    payload.write_one(event_file)
    seconds = 1.5 if quick else 3.0
    out: dict[str, list[dict[str, Any]]] = {"telemetryd": [], "null": []}
    for rep in range(runs):
        for name, server in (("telemetryd", Telemetryd(label="conn")), ("null", NullServer())):
            result = run_once(server, str(event_file), seconds)
            out[name].append(result)
            log(
                f"  conn run {rep + 1}/{runs} {name:<10} {result['events_per_s']:>9,.0f} ev/s"
                f"  server {result['server_cpu_cores']:.2f} cores"
                f" ({result['server_cpu_us_per_event']:.0f} us/ev),"
                f" clients {result['client_cpu_cores']:.2f} cores"
                f" ({result['client_cpu_us_per_event']:.0f} us/ev)"
            )
    return {"clients": CLIENTS, "seconds_per_run": seconds, "runs": out}
