"""The HTTP listener: OTLP log records per second, and an ``http`` hook's latency.

- **OTLP throughput**: 8 exporters (threads, one keep-alive connection each, as an
  agent's exporter keeps one) post batches of 512 log records shaped like Claude
  Code's ``claude_code.api_request`` (its documented attributes), every record
  distinct, protobuf and then JSON. Timed from the first request to the last answer:
  an answer means journaled, and the journal is counted afterwards. The bodies are
  encoded before the clock starts (an exporter's own encoding is not the daemon's
  cost). Then, asking only `status`, the seconds until the store holds every record
  (the daemon's timed loads wait while ingest is busy: ``store.yield-max``).
  Each run starts a fresh daemon, so its ingest workers start inside the timed window,
  as they do when a burst follows an idle spell. Their bytecode is cached, as an
  installed package's is: the daemons run with ``PYTHONPYCACHEPREFIX`` (this
  environment may set ``PYTHONDONTWRITEBYTECODE``, with which each worker compiled the
  project's modules at every start, a cost no installed daemon pays), filled by a
  daemon that maps one batch of each encoding before the timed runs.
- **http hook**: PreToolUse/PostToolUse payloads posted on one keep-alive connection
  (what Claude Code's ``http`` hooks do), against spawning `telemetryctl hook
  claude-code` with the same payloads, one of each in turn (bench/hook.py's spawn).
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.hook import WARMUP, _payloads, _timed
from bench.procs import Telemetryd
from bench.send import _env, _percentile, telemetryctl

EXPORTERS = 8
BATCH = 512
SESSION = "5b1c1c9e-7a65-4f7e-9d0c-2f1a6a0c9d11"


def _attrs(i: int) -> dict[str, Any]:
    """A Claude Code api_request's attributes (docs: monitoring-usage, "api_request")."""
    return {
        "event.name": "api_request",
        "event.timestamp": "2026-12-05T00:00:00.000Z",
        "event.sequence": i,
        "session.id": SESSION,
        "prompt.id": f"prompt-{i // 8}",
        "app.version": "2.1.220",
        "organization.id": "org-bench",
        "user.account_uuid": "acct-bench",
        "terminal.type": "xterm-256color",
        "model": "claude-sonnet-4-5-20250929",
        "cost_usd": 0.0123,
        "duration_ms": 2345,
        "input_tokens": 12 + i % 7,
        "output_tokens": 345,
        "cache_read_tokens": 20_000,
        "cache_creation_tokens": 1_500,
        "request_id": f"req_bench_{i:012d}",
        "speed": "normal",
        "query_source": "main",
    }


def _protobuf_bodies(count: int, start_ns: int) -> list[bytes]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def value(v: Any) -> AnyValue:
        if isinstance(v, str):
            return AnyValue(string_value=v)
        if isinstance(v, float):
            return AnyValue(double_value=v)
        return AnyValue(int_value=v)

    bodies = []
    for b in range(count):
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.attributes.extend(
            [
                KeyValue(key="service.name", value=value("claude-code")),
                KeyValue(key="service.version", value=value("2.1.220")),
            ]
        )
        sl = rl.scope_logs.add()
        sl.scope.name = "com.anthropic.claude_code.events"
        for n in range(BATCH):
            i = b * BATCH + n
            record = sl.log_records.add()
            record.time_unix_nano = start_ns + i * 1000
            record.observed_time_unix_nano = start_ns + i * 1000
            record.body.string_value = "claude_code.api_request"
            record.attributes.extend(KeyValue(key=k, value=value(v)) for k, v in _attrs(i).items())
        bodies.append(request.SerializeToString())
    return bodies


def _json_bodies(count: int, start_ns: int) -> list[bytes]:
    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, str):
            return {"stringValue": v}
        if isinstance(v, float):
            return {"doubleValue": v}
        return {"intValue": str(v)}  # int64 as a string, as OTLP/JSON says

    bodies = []
    for b in range(count):
        records = []
        for n in range(BATCH):
            i = b * BATCH + n
            records.append(
                {
                    "timeUnixNano": str(start_ns + i * 1000),
                    "observedTimeUnixNano": str(start_ns + i * 1000),
                    "body": {"stringValue": "claude_code.api_request"},
                    "attributes": [{"key": k, "value": value(v)} for k, v in _attrs(i).items()],
                }
            )
        resource = {"attributes": [{"key": "service.name", "value": value("claude-code")}]}
        scope = {"name": "com.anthropic.claude_code.events"}
        request = {
            "resourceLogs": [
                {"resource": resource, "scopeLogs": [{"scope": scope, "logRecords": records}]}
            ]
        }
        bodies.append(json.dumps(request).encode())
    return bodies


def _address(daemon: Telemetryd) -> tuple[str, int, str]:
    from telemetryd.client import control

    reply = control.status(str(daemon.dir / "run" / "control.sock"))
    http_status = reply.get("http") or {}
    if not http_status.get("listening"):
        raise BenchError(f"the HTTP listener is not listening: {http_status}")
    host, port = http_status["address"].rsplit(":", 1)
    token = (daemon.dir / "http-token").read_text().strip()
    return host, int(port), token


def _post_all(
    host: str,
    port: int,
    token: str,
    bodies: list[bytes],
    content_type: str,
    exporters: int = EXPORTERS,
) -> float:
    """Post ``bodies`` over ``exporters`` connections; seconds from the first to the last
    answer."""
    shares = [bodies[i::exporters] for i in range(exporters)]
    errors: list[str] = []
    barrier = threading.Barrier(exporters + 1)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}

    def exporter(share: list[bytes]) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.connect()
            barrier.wait()
            for body in share:
                conn.request("POST", "/v1/logs", body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                if response.status != 200 or b"rejected" in answer.lower():
                    errors.append(f"{response.status} {answer[:200]!r}")
                    return
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=exporter, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise BenchError(f"OTLP export failed: {errors[0]}")
    return elapsed


def _until_stored(daemon: Telemetryd, count: int, timeout: float = 300.0) -> float:
    """Seconds until the store holds ``count`` events, asking nothing but `status` (every
    0.1 s): the daemon's own load timer, which may wait while ingest is busy
    (``store.yield-max``), loads them."""
    from telemetryd.client import control

    started = time.perf_counter()
    while True:
        store = control.status(str(daemon.dir / "run" / "control.sock")).get("store") or {}
        if (store.get("events") or 0) >= count:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise BenchError(f"the store holds {store.get('events')} of {count} after {timeout} s")
        time.sleep(0.1)


def _warm_bytecode(pycache: Path) -> None:
    """Fill ``pycache`` with the bytecode of what a daemon and its ingest workers import
    to map OTLP logs (one batch of each encoding), as an installed package has it."""
    from telemetryd.client import control

    start_ns = 1_780_000_000 * 1_000_000_000
    with Telemetryd(label="otlp-bytecode", pycache=pycache) as daemon:
        host, port, token = _address(daemon)
        for make, content_type in (
            (_protobuf_bodies, "application/x-protobuf"),
            (_json_bodies, "application/json"),
        ):
            # (the first batch starts the ingest workers, the daemon mapping it; once
            # they run, the second is theirs)
            for _ in range(2):
                _post_all(host, port, token, make(1, start_ns), content_type, exporters=1)
                start_ns += BATCH * 1000
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    reply = control.status(str(daemon.dir / "run" / "control.sock"))
                    workers = reply.get("ingest_workers") or {}
                    if workers.get("running", 0) >= workers.get("max", 0):
                        break
                    time.sleep(0.05)


def _throughput(
    workdir: Path, runs: int, quick: bool, log: Callable[[str], None]
) -> dict[str, Any]:
    batches = 32 if quick else 160  # 16k or 82k records per run
    out: dict[str, Any] = {"batch": BATCH, "exporters": EXPORTERS, "records": batches * BATCH}
    pycache = workdir / "pycache"
    _warm_bytecode(pycache)
    for name, make, content_type in (
        ("protobuf", _protobuf_bodies, "application/x-protobuf"),
        ("json", _json_bodies, "application/json"),
    ):
        rates: list[float] = []
        stored_s: list[float] = []
        for run in range(runs):
            start_ns = (1_790_000_000 + run * 10_000) * 1_000_000_000
            bodies = make(batches, start_ns)
            with Telemetryd(label=f"otlp-{name}", pycache=pycache) as daemon:
                host, port, token = _address(daemon)
                elapsed = _post_all(host, port, token, bodies, content_type)
                journaled = daemon.journal_lines()
                stored = _until_stored(daemon, batches * BATCH)
            if journaled != batches * BATCH:
                raise BenchError(f"{name}: {journaled} events journaled, {batches * BATCH} sent")
            rates.append(batches * BATCH / elapsed)
            stored_s.append(stored)
            log(
                f"  otlp {name}: {rates[-1]:,.0f} records/s; the store held them all "
                f"{stored:.1f} s after the last answer"
            )
        out[name] = rates
        out[f"{name}_stored_s"] = stored_s
        out[f"{name}_body_bytes"] = len(bodies[0])
    return out


def _hook_latency(workdir: Path, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    iterations = 60 if quick else 200
    payloads = _payloads(workdir, WARMUP + iterations)
    hook_argv = [telemetryctl(), "hook", "claude-code"]
    with Telemetryd(label="otlp-hook") as daemon:
        host, port, token = _address(daemon)
        env = _env(daemon.dir, workdir / "pycache")
        err = workdir / "otlp-hook.stderr"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        conn = http.client.HTTPConnection(host, port, timeout=10)
        times: dict[str, list[float]] = {"http": [], "spawn": []}
        try:
            for i, payload in enumerate(payloads):
                body = payload.read_bytes()
                start = time.perf_counter()
                conn.request("POST", "/v1/hooks/claude-code", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                elapsed = time.perf_counter() - start
                if response.status != 200:
                    raise BenchError(f"http hook answered {response.status}")
                spawned = _timed(hook_argv, env, str(payload), err)
                if i >= WARMUP:
                    times["http"].append(elapsed)
                    times["spawn"].append(spawned)
        finally:
            conn.close()
        if err.exists() and err.read_text().strip():
            raise BenchError(f"telemetryctl hook wrote to stderr: {err.read_text()[:300]}")
        # Each payload went down both paths with the same ids: one event each.
        if daemon.journal_lines() != len(payloads):
            raise BenchError(f"{daemon.journal_lines()} events for {len(payloads)} payloads")
    http_ms = [t * 1000 for t in times["http"]]
    spawn_ms = [t * 1000 for t in times["spawn"]]
    result = {
        "iterations": iterations,
        "http_p50_ms": statistics.median(http_ms),
        "http_p95_ms": _percentile(http_ms, 95),
        "spawn_p50_ms": statistics.median(spawn_ms),
    }
    result["speedup_p50"] = result["spawn_p50_ms"] / result["http_p50_ms"]
    log(
        f"  http hook p50 {result['http_p50_ms']:.2f} ms, spawned hook p50 "
        f"{result['spawn_p50_ms']:.1f} ms ({result['speedup_p50']:.0f}x)"
    )
    return result


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    result = _throughput(workdir, runs, quick, log)
    result["hook"] = _hook_latency(workdir, quick, log)
    return result
