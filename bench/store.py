"""Materialization speed: journal lines into DuckDB, bulk and in steady state.

    python -m bench.store                  1M events, bulk then steady state
    python -m bench.store --events 200000  a smaller journal

Generates a journal of realistic canonical events (sessions with model requests,
tool calls and results, skills, sub-agents, errors, logs, metrics and runs,
encoded with ``events.ENCODER`` like the daemon writes them) in 64 MiB segments,
then times:

- bulk: ``Store.materialize`` of the whole journal into a new database file, the
  store opened as the store worker opens it (``open_store``: the default
  ``store.memory-limit`` and ``store.threads``, the batch size that follows);
- steady state: append 10k lines to the active segment, materialize, repeated
  (the daemon's loop under ingest), on top of the bulk-loaded database.

Prints events/s for each. The target for bulk is ≥ 800k events/s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import BenchError
from telemetryd import config, paths
from telemetryd import events as ev
from telemetryd.daemon.segments import CLOSED_MODE
from telemetryd.store.database import Store
from telemetryd.store.service import open_store

SEGMENT_MAX_BYTES = 64 * 1024 * 1024
STEADY_BATCH = 10_000
STEADY_ROUNDS = 20
BULK_TARGET = 800_000

_MODELS = [
    ("claude-sonnet-4-5", "anthropic", 3e-6, 15e-6),
    ("claude-opus-4-1", "anthropic", 15e-6, 75e-6),
    ("claude-haiku-4-5", "anthropic", 1e-6, 5e-6),
    ("gpt-5-codex", "openai", 1.25e-6, 10e-6),
    ("gemini-2.5-pro", "google", 1.25e-6, 10e-6),
]
_TOOLS = ["Bash", "Read", "Edit", "Grep", "Write", "Glob", "WebFetch", "mcp__github__search"]
_SKILLS = ["pdf", "xlsx", "frontend-design", "code-review", "changelog"]
_SOURCES = ["claude-code", "codex", "gemini-cli"]
_PROVIDERS = ["anthropic", "openai", "google"]
_AGENT_TYPES = ["Explore", "Plan", "general-purpose", "code-reviewer"]
_ERRORS = [
    ("429 rate limited", "api", "api-429"),
    ("tool timed out after 120s", "timeout", "tool-timeout"),
    ("exit status 1", "tool", "tool-exit-1"),
]


def uuid7(ms: int, rng: random.Random) -> str:
    """A UUIDv7 for the time ``ms`` (Unix milliseconds), as the daemon assigns them."""
    rand = rng.getrandbits(74)
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0x2 << 62 | rand & 0x3FFFFFFFFFFFFFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Generator:
    """Realistic agent sessions as canonical event lines, in time order."""

    def __init__(self, count: int, *, days: float = 28.0, seed: int = 7) -> None:
        """``count`` events spread over the ``days`` up to now (later ones go past now)."""
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC) - timedelta(days=days)
        self.max_gap_ms = max(2, int(2 * days * 86_400_000 / count))
        self.sessions = 0

    def _tick(self) -> datetime:
        self.now += timedelta(milliseconds=self.rng.randint(1, self.max_gap_ms))
        return self.now

    def _envelope(self, session: str, agent: ev.Agent, task: ev.Task | None) -> dict[str, Any]:
        ts = self._tick()
        ms = int(ts.timestamp() * 1000)
        ts = datetime.fromtimestamp(ms / 1000, UTC)
        return {
            "v": 1,
            "id": uuid7(ms, self.rng),
            "ts": ts,
            "source": _SOURCES[_PROVIDERS.index(agent.provider or "anthropic")],
            "session_id": session,
            "agent": agent,
            "task": task,
            "attrs": {"repo": "telemetryd", "step": self.rng.randint(1, 200)}
            if self.rng.random() < 0.2
            else None,
            "received_at": ts + timedelta(milliseconds=3),
        }

    def session(self) -> Iterator[ev.Event]:
        """One session: start, a few dozen requests and tool uses, maybe a sub-agent, end."""
        rng = self.rng
        self.sessions += 1
        session = f"sess-{self.sessions:08d}"
        model, provider, price_in, price_out = rng.choice(_MODELS)
        main = ev.Agent(model=model, provider=provider, type="main", id=f"{session}-main")
        task = None
        if rng.random() < 0.3:  # driven by an orchestrator that tracks tasks and attempts
            task = ev.Task(
                id=f"T-{rng.randint(1, 500)}", attempt_id=f"{session}-a0", attempt_index=0
            )
        started = self.now
        yield ev.SessionStart(**self._envelope(session, main, task), cwd="/work/repo")
        for _ in range(rng.randint(10, 60)):
            agent = main
            if rng.random() < 0.08:
                agent = ev.Agent(
                    model=model,
                    provider=provider,
                    type=rng.choice(_AGENT_TYPES),
                    id=f"{session}-sub{rng.randint(1, 9)}",
                )
                yield ev.AgentStart(**self._envelope(session, agent, task))
            inp, out = rng.randint(10, 5000), rng.randint(10, 4000)
            cache_read, cache_creation = rng.randint(0, 60000), rng.randint(0, 3000)
            tokens = ev.Tokens(
                source="actual",
                input=inp,
                output=out,
                cache_read=cache_read,
                cache_creation=cache_creation,
            )
            yield ev.ApiRequest(
                **self._envelope(session, agent, task),
                tokens=tokens,
                cost_usd=round(inp * price_in + out * price_out + cache_read * price_in / 10, 6),
                cost_source="computed",
                duration_ms=rng.randint(200, 30000),
                success=True,
            )
            for _ in range(rng.randint(0, 3)):
                name = rng.choice(_TOOLS)
                use_id = f"toolu_{rng.getrandbits(64):016x}"
                yield ev.ToolCall(
                    **self._envelope(session, agent, task), tool=ev.Tool(name=name, use_id=use_id)
                )
                ok = rng.random() < 0.93
                yield ev.ToolResult(
                    **self._envelope(session, agent, task),
                    tool=ev.Tool(
                        name=name, use_id=use_id, success=ok, error=None if ok else "exit status 1"
                    ),
                    duration_ms=rng.randint(1, 5000),
                )
            roll = rng.random()
            if roll < 0.05:
                yield ev.Skill(
                    **self._envelope(session, agent, task),
                    name=rng.choice(_SKILLS),
                    success=rng.random() < 0.9,
                    duration_ms=rng.randint(100, 9000),
                )
            elif roll < 0.07:
                message, category, fingerprint = rng.choice(_ERRORS)
                yield ev.Error(
                    **self._envelope(session, agent, task),
                    message=message,
                    category=category,
                    fingerprint=fingerprint,
                    confidence=0.9,
                )
            elif roll < 0.12:
                yield ev.Log(
                    **self._envelope(session, agent, task),
                    level="info",
                    component="scheduler",
                    event="tick",
                    fields={"lag_ms": rng.randint(0, 300), "queue": "default"},
                )
            elif roll < 0.15:
                yield ev.Metric(
                    **self._envelope(session, agent, task),
                    name="queue_depth",
                    value=float(rng.randint(0, 50)),
                    kind="gauge",
                    unit="tasks",
                )
            if agent is not main:
                yield ev.AgentStop(
                    **self._envelope(session, agent, task),
                    duration_ms=rng.randint(1000, 90000),
                    tokens=tokens,
                    success=True,
                )
        wall = int((self.now - started).total_seconds() * 1000)
        yield ev.Run(
            **self._envelope(session, main, task),
            attempt_id=f"{session}-a0",
            attempt_index=0,
            retry_count=ev.RetryCount(same_model=rng.randint(0, 2)),
            elapsed_ms=ev.Elapsed(wall=wall, llm=wall // 2, tools=wall // 4),
            tokens=ev.Tokens(source="estimated", estimated_total=48000, tokenizer="o200k_base"),
            outcome=rng.choice(["done", "done", "done", "blocked", "redo"]),
        )
        yield ev.SessionEnd(
            **self._envelope(session, main, task),
            reason="exit",
            duration_ms=wall,
            success=True,
        )

    def lines(self, count: int) -> Iterator[bytes]:
        """``count`` canonical event lines, newline-terminated."""
        encode = ev.ENCODER.encode
        made = 0
        while True:
            for event in self.session():
                yield encode(event) + b"\n"
                made += 1
                if made == count:
                    return


def write_journal(directory: Path, count: int, gen: Generator) -> int:
    """Write ``count`` events as journal segments, the closed ones read-only like the
    daemon's (the store may hard-link them for a load, unless it runs as root); returns
    the bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    seq, size, total = 0, SEGMENT_MAX_BYTES, 0
    out = None
    buf: list[bytes] = []
    for line in gen.lines(count):
        if size + len(line) > SEGMENT_MAX_BYTES:
            if out is not None:
                out.write(b"".join(buf))
                out.close()
                os.chmod(out.name, CLOSED_MODE)  # closed, as the daemon leaves it
                buf.clear()
            seq += 1
            out = open(directory / f"{gen.now:%Y%m%dT%H%M%SZ}-{seq:06d}.jsonl", "wb")  # noqa: SIM115
            size = 0
        buf.append(line)
        size += len(line)
        total += len(line)
    if out is not None:
        out.write(b"".join(buf))
        out.close()
    return total


def append_lines(path: Path, gen: Generator, count: int) -> None:
    """Append ``count`` new events to the segment at ``path`` (the daemon's active one)."""
    with open(path, "ab") as f:
        f.write(b"".join(gen.lines(count)))


def _time_report(store: Store, runs: int = 7) -> float:
    """Median milliseconds of the cost report, run warm on a cursor of the store."""
    times = []
    with store.cursor() as cursor:
        for _ in range(runs):
            started = time.perf_counter()
            cursor.execute("SELECT * FROM cost_by_model(days := 30)").fetchall()
            times.append(time.perf_counter() - started)
    return sorted(times)[runs // 2] * 1000


def run(workdir: Path, events: int, log: Any = print) -> dict[str, Any]:
    """Generate the journal, time bulk and steady-state materialization; the figures."""
    journal = workdir / "journal"
    gen = Generator(events)
    started = time.perf_counter()
    size = write_journal(journal, events, gen)
    log(
        f"generated {events:,} events, {size / 1e6:.0f} MB ({size / events:.0f} B/event) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    settings = config.Store()
    where = paths.Paths(str(workdir / "run"), str(workdir), str(workdir))
    with open_store(where, settings) as store:
        started = time.perf_counter()
        loaded = store.materialize(str(journal))
        bulk_s = time.perf_counter() - started
        if loaded != events:
            raise RuntimeError(f"bulk materialization stored {loaded} of {events} events")
        log(
            f"bulk: {loaded:,} events in {bulk_s:.2f} s = {loaded / bulk_s:,.0f} events/s "
            f"(memory-limit {settings.memory_limit}, {settings.threads} threads, closed "
            f"segments {'copied: root' if os.geteuid() == 0 else 'linked'})"
        )

        # Pricing's share of the load: every api_request here is priced as it loads (its
        # cost_source is `computed`); reprice does that pricing again, alone.
        started = time.perf_counter()
        priced = store.reprice()
        reprice_s = time.perf_counter() - started
        log(
            f"pricing alone (reprice): {priced['repriced']:,} requests in {reprice_s:.2f} s "
            f"= {priced['repriced'] / reprice_s:,.0f} requests/s ({priced['unknown']} unpriced)"
        )

        report_ms = _time_report(store)
        log(f"cost_by_model(days := 30), warm, in process: median {report_ms:.1f} ms")

        active = max(journal.glob("*.jsonl"))
        rounds: list[float] = []
        for _ in range(STEADY_ROUNDS):
            append_lines(active, gen, STEADY_BATCH)
            started = time.perf_counter()
            got = store.materialize(str(journal))
            rounds.append(time.perf_counter() - started)
            if got != STEADY_BATCH:
                raise RuntimeError(f"steady state stored {got} of {STEADY_BATCH} events")
        rounds.sort()
        median = rounds[len(rounds) // 2]
        log(
            f"steady state: {STEADY_BATCH:,} events per run, median {median * 1000:.0f} ms "
            f"(p90 {rounds[int(len(rounds) * 0.9)] * 1000:.0f} ms) = "
            f"{STEADY_BATCH / median:,.0f} events/s"
        )
        stats = store.stats()
    return {
        "events": events,
        "bytes_per_event": round(size / events),
        "bulk_events_per_s": round(loaded / bulk_s),
        "bulk_target_events_per_s": BULK_TARGET,
        "memory_limit": settings.memory_limit,
        "threads": settings.threads,
        "segments_linked": os.geteuid() != 0,
        "steady_batch": STEADY_BATCH,
        "steady_median_ms": round(median * 1000, 1),
        "steady_events_per_s": round(STEADY_BATCH / median),
        "database_bytes": stats["database_bytes"],
        "cost_by_model_warm_ms": round(report_ms, 1),
        "reprice_requests": priced["repriced"],
        "reprice_s": round(reprice_s, 2),
    }


def _store_status(control_socket: str) -> dict[str, Any]:
    """The daemon's status reply (the store's figures are under ``store``)."""
    import json
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(control_socket)
        sock.sendall(b'{"op":"status"}\n')
        reply: dict[str, Any] = json.loads(sock.makefile("rb").readline())
    return reply


def _flush(control_socket: str) -> int:
    """Ask the daemon to write and materialize everything now; the events it stored."""
    import json
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(600)
        sock.connect(control_socket)
        sock.sendall(b'{"op":"flush"}\n')
        reply = json.loads(sock.makefile("rb").readline())
    if not reply.get("ok"):
        raise BenchError(f"flush failed: {reply}")
    return int(reply.get("materialized", 0))


def under_ingest(workdir: Path, clients: int, per_client: int, log: Any = print) -> dict[str, Any]:
    """The real daemon (default settings) materializing while ``clients`` processes stream
    ``per_client`` events each as fast as they can; its status polled every 100 ms.

    Figures: the ingest rate with the materializer running, the share of the events in
    the database when the last client got its summary, and how long a flush then takes to
    load the rest (what a query arriving at that moment would wait)."""
    import threading

    from bench import clients as client_procs
    from bench import payload
    from bench.procs import Telemetryd, accepts_setting
    from bench.query import daemon_args

    stream = workdir / "under-ingest.ndjson"
    payload.write_stream(stream, per_client)
    total = clients * per_client
    samples: list[tuple[float, int]] = []
    # What this measures is ingest while loads run: so loads do not wait for the flood
    # to end (store.yield-max, where the daemon has it: bench/otlp.py measures that).
    args = daemon_args()
    if accepts_setting("store.yield-max=0"):
        args += ["--set", "store.yield-max=0"]
    with Telemetryd(args, label="under-ingest") as daemon:
        control = str(daemon.dir / "run" / "control.sock")
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.1):
                samples.append((time.time(), _store_status(control)["store"].get("events") or 0))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            results = client_procs.stream(daemon.socket_path, [str(stream)] * clients)
        finally:
            done.set()
            poller.join()
        t0, t1 = client_procs.span(results)
        at_end = _store_status(control)["store"].get("events") or 0
        started = time.perf_counter()
        _flush(control)
        flush_s = time.perf_counter() - started
        stored = _store_status(control)["store"]["events"]
        if stored != total:
            raise BenchError(f"under ingest: {stored} of {total} events in the database")
        if daemon.stop() != 0:
            raise BenchError(f"telemetryd did not stop cleanly:\n{daemon.log()}")
    runs = sum(1 for (_, a), (_, b) in itertools.pairwise(samples) if b > a)
    wall = t1 - t0
    log(
        f"under ingest: {clients}x{per_client:,} events at {total / wall:,.0f} ev/s; "
        f"{at_end / total:.0%} materialized when ingest ended ({runs} loads seen); "
        f"flush loaded the rest in {flush_s * 1000:.0f} ms"
    )
    return {
        "clients": clients,
        "events": total,
        "ingest_events_per_s": round(total / wall),
        "materialized_at_end": at_end,
        "materialized_share_at_end": at_end / total,
        "loads_seen": runs,
        "flush_ms": round(flush_s * 1000, 1),
        "materialized_events_per_s": round(total / (wall + flush_s)),
    }


def harness(workdir: Path, runs: int, quick: bool, log: Any) -> dict[str, Any]:
    """`python -m bench --only store`: bulk and steady state in process, then under ingest."""
    events = 200_000 if quick else 1_000_000
    (workdir / "store").mkdir(parents=True, exist_ok=True)
    figures = run(workdir / "store", events, log)
    shutil.rmtree(workdir / "store", ignore_errors=True)
    figures["under_ingest"] = under_ingest(workdir, 4, 50_000 if quick else 250_000, log)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="journal size (1M)")
    parser.add_argument("--keep", type=Path, help="generate into this directory and keep it")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = run(args.keep, args.events)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
            figures = run(Path(tmp), args.events)
    met = figures["bulk_events_per_s"] >= BULK_TARGET
    print(
        f"materialization: bulk {figures['bulk_events_per_s']:,} events/s "
        f"(target {BULK_TARGET:,}: {'met' if met else 'NOT met'}), steady state "
        f"{figures['steady_events_per_s']:,} events/s "
        f"({figures['steady_batch']:,} per run, {figures['steady_median_ms']} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
