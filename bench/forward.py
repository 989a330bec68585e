"""[forward]: events per second from one telemetryd's journal into a second one.

- **Forwarding**: daemon A journals N events (api_request-like, ~300 bytes, every one
  distinct) with forwarding off and stops. B starts; A starts again with
  ``[forward] endpoint`` = B's listener and its token, so the whole journal is a
  backlog. Timed from A's READY to A's ``status`` saying it is caught up (B has
  answered for every batch: B's answer means journaled); B's journal is then counted,
  every id once. The CPU of both process trees over that time says which side limits.
- **Baseline, same run**: the same batches, encoded as A encodes them (OTLP/JSON,
  gzip), posted to a fresh B one after the other on one connection (as A does): B's
  own ceiling for this traffic.
- **Idle RSS**: A's ``VmRSS`` after it caught up and its store worker exited; and, as
  the rss benchmark takes it, a daemon with 5 events forwarded against the same daemon
  with forwarding off (a big journal costs the running totals' memory either way).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.procs import Telemetryd, rss_kib, tree_cpu_seconds, wait_no_children

SESSION = "5b1c1c9e-7a65-4f7e-9d0c-2f1a6a0c9d11"


def _events(start: int, count: int) -> bytes:
    lines = []
    for i in range(start, start + count):
        lines.append(
            json.dumps(
                {
                    "type": "api_request",
                    "id": f"req:anthropic:req_bench_{i:012d}",
                    "source": "claude-code",
                    "session_id": SESSION,
                    "agent": {"model": "claude-sonnet-4-5-20250929", "provider": "anthropic"},
                    "tokens": {"source": "actual", "input": 12 + i % 7, "output": 345},
                    "cost_usd": 0.0123,
                    "duration_ms": 2345,
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


def _fill(daemon: Telemetryd, count: int) -> None:
    chunk = 50_000
    for start in range(0, count, chunk):
        data = _events(start, min(chunk, count - start))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(daemon.socket_path)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while more := sock.recv(65536):
                reply += more
        if b'"accepted":' + str(data.count(b"\n")).encode() not in reply:
            raise BenchError(f"filling A: {reply[-300:]!r}")


def _receiver(daemon: Telemetryd) -> tuple[str, str]:
    from telemetryd.client import control

    reply = control.status(str(daemon.dir / "run" / "control.sock"))
    http_status = reply.get("http") or {}
    if not http_status.get("listening"):
        raise BenchError(f"B's HTTP listener is not listening: {http_status}")
    return http_status["address"], (daemon.dir / "http-token").read_text().strip()


def _forward_status(daemon: Telemetryd) -> dict[str, Any]:
    from telemetryd.client import control

    forward = control.status(str(daemon.dir / "run" / "control.sock"))["forward"]
    assert isinstance(forward, dict)
    return forward


def _forward_once(count: int, a_home: Path, log: Callable[[str], None]) -> dict[str, Any]:
    with Telemetryd(label="forward-b") as b:
        address, token = _receiver(b)
        args = [
            "--set",
            f'forward.endpoint="http://{address}"',
            "--set",
            f'forward.headers={{Authorization="Bearer {token}"}}',
            "--set",
            "http.enabled=false",
            "--set",
            "store.idle-exit=2",
        ]
        with Telemetryd(args, label="forward-a", home=a_home) as a:
            ready = time.perf_counter()
            cpu_a0, cpu_b0 = sum(tree_cpu_seconds(a.pid)), sum(tree_cpu_seconds(b.pid))
            deadline = ready + 600
            while True:
                forward = _forward_status(a)
                if forward["state"] == "caught up" and forward["behind_events"] == 0:
                    break
                if forward["last_error"] and forward["failures"] > 3:
                    raise BenchError(f"forwarding fails: {forward['last_error']}")
                if time.perf_counter() > deadline:
                    raise BenchError(f"not caught up after 600 s: {forward}")
                time.sleep(0.02)
            elapsed = time.perf_counter() - ready
            cpu_a = sum(tree_cpu_seconds(a.pid)) - cpu_a0
            cpu_b = sum(tree_cpu_seconds(b.pid)) - cpu_b0
            if forward["sent_events"] != count:
                raise BenchError(f"A sent {forward['sent_events']} of {count} events")
            wait_no_children(a.pid, 30)
            time.sleep(1.0)
            idle_rss_mb = rss_kib(a.pid) / 1024
            a.stop()
        ids = b.journal_ids()
        if len(ids) != count or len(set(ids)) != count:
            raise BenchError(f"B journaled {len(ids)} events ({len(set(ids))} ids) of {count}")
    rate = count / elapsed
    log(
        f"  forward: {rate:,.0f} events/s ({elapsed:.2f} s; CPU A {cpu_a / elapsed:.0%}, "
        f"B {cpu_b / elapsed:.0%}); A idle {idle_rss_mb:.1f} MB"
    )
    return {
        "rate": rate,
        "cpu_a": cpu_a / elapsed,
        "cpu_b": cpu_b / elapsed,
        "idle_rss_mb": idle_rss_mb,
    }


def _direct_once(bodies: list[tuple[bytes, int]], log: Callable[[str], None]) -> float:
    """B's rate for A's requests posted back to back on one connection."""
    with Telemetryd(label="forward-direct") as b:
        address, token = _receiver(b)
        host, port = address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Authorization": f"Bearer {token}",
        }
        total = sum(count for _, count in bodies)
        start = time.perf_counter()
        for body, _ in bodies:
            conn.request("POST", "/v1/logs", body, headers)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200 or b"rejected" in answer.lower():
                raise BenchError(f"direct post: {response.status} {answer[:200]!r}")
        elapsed = time.perf_counter() - start
        conn.close()
        if b.journal_lines() != total:
            raise BenchError("direct post: B journaled another count")
    rate = total / elapsed
    log(f"  direct posts to B: {rate:,.0f} events/s")
    return rate


def _bodies(home: Path) -> list[tuple[bytes, int]]:
    """A's journal as A's requests (default batches), gzipped as A sends them."""
    from telemetryd.adapters.otel import forwarded
    from telemetryd.config import Forward
    from telemetryd.daemon.forward import GZIP_LEVEL, Reader

    settings = Forward()
    reader = Reader(str(home / "journal"))
    resource = forwarded.resource({}, socket.gethostname(), "bench")
    segments = sorted((home / "journal").glob("*.jsonl"))
    written = (str(segments[-1]), segments[-1].stat().st_size)
    out = []
    seq, offset = 0, 0
    while chunk := reader.read(seq, offset, written, settings.batch_bytes, settings.batch_events):
        seq, _, offset = chunk.after
        if not chunk.data:
            continue
        request = forwarded.encode(
            chunk.data, signals=("logs",), types=frozenset(), resource_json=resource
        )
        packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        out.append((packer.compress(request.bodies["logs"]) + packer.flush(), request.events))
    reader.close()
    return out


def _idle(forward_to: str | None, token: str) -> float:
    """A fresh daemon's idle RSS (MB) after 5 events, forwarding them to ``forward_to``."""
    args = ["--set", "store.idle-exit=2", "--set", "http.enabled=false"]
    if forward_to is not None:
        args += [
            "--set",
            f'forward.endpoint="http://{forward_to}"',
            "--set",
            f'forward.headers={{Authorization="Bearer {token}"}}',
        ]
    with Telemetryd(args, label="forward-idle") as a:
        _fill(a, 5)
        if forward_to is not None:
            deadline = time.perf_counter() + 60
            while _forward_status(a)["sent_events"] < 5:
                if time.perf_counter() > deadline:
                    raise BenchError("5 events not forwarded within 60 s")
                time.sleep(0.02)
        time.sleep(0.5)
        wait_no_children(a.pid, 30)
        time.sleep(1.0)
        return rss_kib(a.pid) / 1024


def run(workdir: Path, runs: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    count = 50_000 if quick else 200_000
    a_home = workdir / "forward-a"
    a_home.mkdir(parents=True, exist_ok=True)
    with Telemetryd(label="forward-fill", home=a_home) as filler:
        _fill(filler, count)
        filler.stop()
    bodies = _bodies(a_home)
    result: dict[str, Any] = {"events": count, "requests": len(bodies), "rate": [], "direct": []}
    result["body_bytes"] = len(bodies[0][0])
    runs_done = []
    for _ in range(max(1, runs)):
        for stale in (a_home / "forward").glob("*"):
            stale.unlink()  # (the whole journal again)
        runs_done.append(_forward_once(count, a_home, log))
        result["direct"].append(_direct_once(bodies, log))
    result["rate"] = [r["rate"] for r in runs_done]
    result["cpu_a"] = [r["cpu_a"] for r in runs_done]
    result["cpu_b"] = [r["cpu_b"] for r in runs_done]
    result["idle_rss_mb"] = [r["idle_rss_mb"] for r in runs_done]
    with Telemetryd(label="forward-idle-b") as b:
        address, token = _receiver(b)
        result["idle_small_on_mb"] = [_idle(address, token)]
        result["idle_small_off_mb"] = [_idle(None, token)]
    log(
        f"  idle after 5 events: forwarding on {result['idle_small_on_mb'][0]:.1f} MB, "
        f"off {result['idle_small_off_mb'][0]:.1f} MB"
    )
    return result
