"""Ingest workers (daemon/ingest_workers.py): child processes that check big chunks of lines.

- A worker's answer, over the real socketpair from a real process, is what the daemon's
  own Checker finds in the same lines (property-based, the hostile lines of
  test_ingest_properties.py);
- through the real daemon, a stream big enough to be checked by workers gets the same
  replies (line numbers included), summary and journal as the daemon's own checking;
- workers killed mid-stream, a worker that never answers, idle workers: nothing is lost
  or journaled twice, and acknowledgements still come;
- the dedup window's runs of assigned ids.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Daemon, connect, ctl, read_replies, summary
from telemetryd import config, paths, wire
from telemetryd.config import Ingest
from telemetryd.daemon import ingest_worker, ingest_workers
from telemetryd.daemon.ingest import (
    JOURNALED,
    Batch,
    Checked,
    Checker,
    Dedup,
    Feed,
    IdMaker,
    Ingestor,
)
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners.events import EventsListener
from telemetryd.daemon.listeners.sockets import Peers, bind_unix
from test_ingest_properties import LINES, MAX_LINE, payload

DaemonFactory = Callable[..., Daemon]
TIMEOUT = 30.0


def custom(name: str, event_id: str | None = None, pad: int = 0) -> bytes:
    event: dict[str, Any] = {"type": "custom", "name": name}
    if event_id is not None:
        event["id"] = event_id
    if pad:
        event["attrs"] = {"pad": "x" * pad}
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


# -- one worker process, spoken to directly -------------------------------------------------


class WorkerProcess:
    """``python -m telemetryd.daemon.ingest_worker`` on a socketpair, asked synchronously."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair()
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "telemetryd.daemon.ingest_worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
            )
        self.sock.settimeout(TIMEOUT)
        self.sock.sendall(b"".join(ingest_worker.message(ingest_worker.Hello())))
        assert self._answer().tag == 0  # ready
        self.tag = 0

    def _answer(self) -> ingest_worker.Answer:
        header = ingest_worker.receive(self.sock, ingest_worker.HEADER.size)
        assert header is not None
        meta_size, data_size = ingest_worker.HEADER.unpack(header)
        meta = ingest_worker.receive(self.sock, meta_size)
        data = ingest_worker.receive(self.sock, data_size)
        assert meta is not None and data is not None
        answer = ingest_worker.ANSWERS.decode(meta)
        answer.checked.data = data
        return answer

    def check(self, region: bytes, lineno: int, *limits: int) -> Checked:
        self.tag += 1
        request = ingest_worker.Request(self.tag, lineno, *limits)
        self.sock.sendall(b"".join(ingest_worker.message(request, region)) + region)
        answer = self._answer()
        assert answer.tag == self.tag
        return answer.checked

    def close(self) -> int:
        self.sock.close()  # the worker exits at EOF
        return self.proc.wait(TIMEOUT)


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    process = WorkerProcess()
    yield process
    assert process.close() == 0


def comparable(checked: Checked) -> dict[str, Any]:
    """What must be the same wherever lines are checked: all but the receive time and
    the ids the daemon makes up (their number must be the same)."""
    chosen = set(checked.client_ids)
    events = []
    for line in checked.data.splitlines():
        event = json.loads(line)
        received = event.pop("received_at")
        if event.get("ts") == received:
            del event["ts"]  # (set to the receive time: the event had none)
        if event["id"] not in chosen:
            del event["id"]
        events.append(event)
    return {
        "events": events,
        "lines": checked.lines,
        "sync": checked.sync,
        "count": checked.count,
        "client_ids": checked.client_ids,
        "client_at": checked.client_at,
        "id_count": checked.id_count,
        "replies": checked.replies,
        "rejected": checked.rejected,
        "internal_errors": checked.internal_errors,
    }


@pytest.mark.properties
@given(generated=st.lists(LINES, min_size=1, max_size=25), lineno=st.integers(0, 10**6))
def test_a_workers_answer_is_what_the_daemon_finds(
    worker: WorkerProcess, generated: list[Any], lineno: int
) -> None:
    region = payload(generated).data
    limits = (MAX_LINE, 16 * 1024, 8)
    here = Checker().check(region, lineno, *limits)
    there = worker.check(region, lineno, *limits)
    assert comparable(there) == comparable(here)
    assert there.id_first == first_assigned(there)  # (a run of ids the dedup window can hold)


def first_assigned(checked: Checked) -> int:
    """The first assigned id's counter, as found in the events themselves."""
    chosen = set(checked.client_ids)
    for line in checked.data.splitlines():
        event_id = json.loads(line)["id"]
        if event_id not in chosen:
            assert event_id.startswith(checked.id_prefix)
            return int(event_id[len(checked.id_prefix) :], 16)
    return checked.id_first


def test_a_worker_exits_when_its_socket_closes() -> None:
    process = WorkerProcess()
    checked = process.check(custom("a"), 0, 65536, 16384, 8)
    assert checked.count == 1 and checked.id_count == 1
    assert process.close() == 0


# -- the dedup window's runs -----------------------------------------------------------------


def test_assigned_ids_are_remembered_as_runs() -> None:
    maker = IdMaker()
    maker.start(1_700_000_000_000)
    first = (maker.counter + 1) & 0xFFFFFFFFFFFF
    ids = [maker.next() for _ in range(300)]
    dedup = Dedup(1000)
    batch = Batch()
    dedup.add_run(maker.prefix, first, 300, batch)
    dedup.add("chosen", JOURNALED)
    assert len(dedup) == 301
    assert all(dedup.get(event_id) is batch for event_id in ids)
    assert dedup.get(maker.next()) is None  # (the 301st was not given out in that run)
    assert dedup.get(ids[0].upper()) is None  # not the same id
    assert dedup.get(ids[0][:-1] + "g") is None
    assert dedup.get("chosen") is JOURNALED


def test_the_window_turns_over_with_runs_counted() -> None:
    """Two generations, each turning over at ``window`` ids, runs counted by their length."""
    prefix = "01890a5d-ac96-774b-bcce-"
    dedup = Dedup(100)
    first, second, third = Batch(), Batch(), Batch()
    dedup.add_run(prefix, 10, 60, first)
    dedup.add_run(prefix, 70, 60, second)  # 120 >= 100: this generation is the older one now
    dedup.add_run(prefix, 130, 50, third)
    assert len(dedup) == 170
    assert dedup.get(prefix + "00000000000a") is first
    assert dedup.get(prefix + "000000000046") is second
    assert dedup.get(prefix + "0000000000a0") is third
    dedup.add_run("01890a5d-ac96-774b-bcdd-", 0, 60, Batch())  # 110: turns over again
    assert len(dedup) == 110
    assert dedup.get(prefix + "00000000000a") is None
    assert dedup.get(prefix + "000000000046") is None
    assert dedup.get(prefix + "0000000000a0") is third


def test_a_feed_remembers_the_ids_it_assigned() -> None:
    ingestor = Ingestor(Ingest())
    feed = Feed(ingestor)
    batch, _ = feed.feed(custom("a") + custom("b") + custom("c", "mine"))
    assert batch is not None
    ids = [json.loads(line)["id"] for line in batch.data.splitlines()]
    assert all(ingestor.dedup.get(event_id) is batch for event_id in ids)
    again, _ = Feed(ingestor).feed(b"".join(line + b"\n" for line in batch.data.splitlines()))
    assert again is None  # every one of them is a duplicate now


# -- the real daemon: chunks checked by workers ----------------------------------------------


def worker_pids(daemon: Daemon) -> list[int]:
    """The daemon's ingest worker processes."""
    assert daemon.proc is not None
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if parent == daemon.proc.pid and b"telemetryd.daemon.ingest_worker" in command:
            found.append(int(entry))
    return found


def stream(sock_path: str, data: bytes) -> list[dict[str, Any]]:
    with connect(sock_path, timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_replies(sock)


def reference(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The replies and events of ``data`` checked in one process, in one piece."""
    feed = Feed(Ingestor(Ingest(max_line_bytes=MAX_LINE)))
    events: list[dict[str, Any]] = []
    replies: list[dict[str, Any]] = []

    def take(result: tuple[Batch | None, list[bytes]]) -> None:
        batch, rejections = result
        if batch is not None:
            events.extend(json.loads(line) for line in batch.data.splitlines())
        replies.extend(json.loads(reply) for reply in rejections)

    take(feed.feed(data))
    while feed.sync_requested:
        replies.append(json.loads(feed.summary()))
        take(feed.resume())
    take(feed.end())
    replies.append(json.loads(feed.summary()))
    return replies, events


def strip(event: dict[str, Any], chosen: set[str]) -> dict[str, Any]:
    event = dict(event)
    received = event.pop("received_at")
    if event.get("ts") == received:
        del event["ts"]
    if event["id"] not in chosen:
        del event["id"]
    return event


def mixed_payload(lines: int) -> bytes:
    """Valid events (some with ids, some repeated), bad lines, blank lines, sync requests,
    a line over the limit: every kind of line, spread over many 64 KiB chunks."""
    out = []
    for n in range(lines):
        if n % 997 == 13:
            out.append(b'{"type":"custom"}\n')  # no name
        elif n % 1499 == 7:
            out.append(b"not json\n")
        elif n % 2003 == 5:
            out.append(b"\n")
        elif n % 3001 == 11:
            out.append(b'{"op":"sync"}\n')
        elif n % 4999 == 17:
            out.append(b'{"type":"custom","name":"' + b"x" * MAX_LINE + b'"}\n')
        elif n % 7 == 0:
            out.append(custom(f"with-id-{n}", f"id-{n % 700}", pad=200))  # repeats
        else:
            out.append(custom(f"n-{n}", pad=250))
    return b"".join(out)


def test_chunks_checked_by_workers_get_the_same_replies_and_journal(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(["--set", f"ingest.max-line-bytes={MAX_LINE}"]).start()
    data = mixed_payload(40_000)
    expected_replies, expected_events = reference(data)
    wait_for_workers(daemon)
    before = len(daemon.journal_events())
    replies = stream(daemon.events_socket, data)
    assert replies == expected_replies
    journaled = daemon.journal_events()[before:]
    chosen = {event["id"] for event in expected_events if event["id"].startswith("id-")}
    assert [strip(e, chosen) for e in journaled] == [strip(e, chosen) for e in expected_events]
    status = ctl("status", "--json")
    assert status.returncode == 0, status.stderr
    count = ingest_workers.default_count()
    assert json.loads(status.stdout)["ingest_workers"] == {
        "running": count,
        "max": count,
        "starts": count,
        "last_exit": None,
    }
    text = ctl("status").stdout.decode()
    assert f"ingest workers: {count} of {count} running" in text
    assert "Traceback" not in daemon.log()
    assert daemon.stop() == 0
    assert not worker_pids(daemon)


def wait_for_workers(daemon: Daemon) -> None:
    """Stream until the daemon's ingest workers are up."""
    deadline = time.monotonic() + TIMEOUT
    while len(worker_pids(daemon)) < ingest_workers.default_count():
        stream(daemon.events_socket, custom("warm-up", pad=300) * 500)
        assert time.monotonic() < deadline, daemon.log()
    time.sleep(0.3)  # (and ready: they answer their first request)


def test_workers_killed_mid_stream_cost_no_event(daemon_factory: DaemonFactory) -> None:
    """Ingest workers killed (SIGKILL) while several connections stream: every event is
    acknowledged and journaled exactly once; the daemon checks the chunks they held."""
    daemon = daemon_factory().start()
    wait_for_workers(daemon)
    before = len(daemon.journal_events())
    connections, per_connection = 4, 40_000
    payloads = [
        b"".join(custom("k", f"kill-{c}-{n}", pad=250) for n in range(per_connection))
        for c in range(connections)
    ]
    results: list[list[dict[str, Any]]] = [[] for _ in range(connections)]

    def run(c: int) -> None:
        with connect(daemon.events_socket, timeout=TIMEOUT) as sock:
            for start in range(0, len(payloads[c]), 1 << 18):  # paced: the kills land mid-way
                sock.sendall(payloads[c][start : start + (1 << 18)])
                time.sleep(0.01)
            sock.shutdown(socket.SHUT_WR)
            results[c] = read_replies(sock)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(connections)]
    for thread in threads:
        thread.start()
    killed = 0
    deadline = time.monotonic() + TIMEOUT
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        time.sleep(0.15)  # busy with chunks by now
        for pid in worker_pids(daemon)[:1]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    for thread in threads:
        thread.join(TIMEOUT)
    assert killed, "no ingest worker ran"
    for replies in results:
        assert replies == [summary(per_connection, per_connection)]
    ids = [event["id"] for event in daemon.journal_events()[before:]]
    assert len(ids) == len(set(ids)) == connections * per_connection
    assert "killed by SIGKILL" in daemon.log()
    assert "Traceback" not in daemon.log()
    assert daemon.stop() == 0


# -- in-process: the listener with a pool whose workers misbehave ----------------------------


class Listening:
    """An events listener and journal in this process, with the given pool."""

    def __init__(self, pool: ingest_workers.Workers) -> None:
        self.paths = paths.resolve()
        self.settings = config.Config()
        self.ingestor = Ingestor(self.settings.ingest)
        os.makedirs(self.paths.state_dir, exist_ok=True)
        self.journal = Journal(
            self.paths.journal_dir,
            self.paths.quarantine_dir,
            self.settings.journal,
            max_pending_bytes=self.settings.ingest.max_pending_bytes,
        )
        self.journal.open(self.ingestor.dedup)
        self.pool = pool
        self.listener = EventsListener(
            bind_unix(self.paths.events_socket),
            self.settings.ingest,
            self.ingestor,
            self.journal,
            Peers(),
            pool,
        )

    async def send(self, data: bytes) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(stream, self.paths.events_socket, data)

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await anyio.sleep(0.02)


async def listening(pool: ingest_workers.Workers, body: Callable[[Listening], Any]) -> Listening:
    where = Listening(pool)
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await tg.start(where.journal.run)
            async with anyio.create_task_group() as inner:
                await inner.start(where.listener.serve)
                try:
                    await body(where)
                finally:
                    where.listener.stop()
            where.listener.sock.close()
            where.journal.close_when_drained()
    return where


STUCK = """
import socket, sys, time
from telemetryd.daemon import ingest_worker, ingest_workers
sock = socket.socket(fileno=int(sys.argv[1]))
header = ingest_worker.receive(sock, 8)
meta, data = ingest_worker.HEADER.unpack(header)
ingest_worker.receive(sock, meta + data)
sock.sendall(b"".join(ingest_worker.message(ingest_worker.Answer(0, ingest_worker.Checked()))))
time.sleep(60)
"""


@pytest.mark.asyncio
async def test_a_worker_that_does_not_answer_is_killed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ingest_workers, "ANSWER_TIMEOUT", 0.3)
    monkeypatch.setattr(ingest_workers, "_TICK", 0.05)
    pool = ingest_workers.Workers(count=1, command=[sys.executable, "-c", STUCK])
    data = b"".join(custom(f"s-{n}", pad=200) for n in range(400))  # > OFFLOAD_MIN_BYTES

    async def body(where: Listening) -> None:
        assert await where.send(data) == [summary(400, 400)]  # (checked here; starts it)
        await where.until(lambda: pool.status().running == 1)
        assert await where.send(data) == [summary(400, 400)]

    where = await listening(pool, body)
    assert "did not answer within" in caplog.text
    assert where.journal.events_written == 800


# Workers that answer that they are ready, then with what the daemon cannot use.
GARBAGE = """
import socket, sys, time
from telemetryd.daemon import ingest_worker
sock = socket.socket(fileno=int(sys.argv[1]))
header = ingest_worker.receive(sock, 8)
meta, data = ingest_worker.HEADER.unpack(header)
ingest_worker.receive(sock, meta + data)
sock.sendall(b"".join(ingest_worker.message(ingest_worker.Answer(0, ingest_worker.Checked()))))
while True:
    header = ingest_worker.receive(sock, 8)
    if header is None:
        break
    meta, data = ingest_worker.HEADER.unpack(header)
    ingest_worker.receive(sock, meta + data)
    sock.sendall(ANSWER)
time.sleep(60)
"""
UNDECODABLE = ingest_worker.HEADER.pack(3, 0) + b"\xc1\xc1\xc1"
HUGE = ingest_worker.HEADER.pack(16, 0xFFFF0000) + b"\x00" * 16  # a 4 GiB answer announced


@pytest.mark.asyncio
@pytest.mark.parametrize("answer", [UNDECODABLE, HUGE], ids=["undecodable", "huge"])
async def test_a_worker_that_answers_garbage_is_killed(
    answer: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    script = GARBAGE.replace("ANSWER", repr(answer))
    pool = ingest_workers.Workers(count=1, command=[sys.executable, "-c", script])
    data = b"".join(custom(f"g-{n}", pad=200) for n in range(400))  # > OFFLOAD_MIN_BYTES

    async def body(where: Listening) -> None:
        assert await where.send(data) == [summary(400, 400)]  # (checked here; starts it)
        await where.until(lambda: pool.status().running == 1)
        assert await where.send(data) == [summary(400, 400)]  # (its answer is garbage)
        await where.until(lambda: pool.status().last_exit is not None)
        assert pool.status().last_exit == "killed by SIGKILL"

    where = await listening(pool, body)
    assert "sent a bad answer; killing it" in caplog.text
    assert where.journal.events_written == 800


@pytest.mark.asyncio
async def test_idle_workers_stop_and_start_again_when_needed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ingest_workers, "IDLE_EXIT", 0.3)
    monkeypatch.setattr(ingest_workers, "_TICK", 0.05)
    caplog.set_level(logging.INFO, logger=ingest_workers.__name__)
    pool = ingest_workers.Workers(count=2)
    data = b"".join(custom(f"i-{n}", pad=200) for n in range(2000))

    async def body(where: Listening) -> None:
        assert pool.status() == wire.IngestWorkersStatus(0, 2, 0, None)
        await where.send(data)
        await where.until(lambda: pool.status().running == 2)
        assert pool.starts == 2
        assert pool._watching
        await where.until(lambda: not pool._workers)  # idle: stopped
        assert pool.status() == wire.IngestWorkersStatus(0, 2, 2, None)  # (asked to exit)
        await where.until(lambda: not pool._watching)  # and no timer left while idle
        assert await where.send(data) == [summary(2000, 2000)]
        await where.until(lambda: pool.starts == 4)

    where = await listening(pool, body)
    assert where.journal.events_written == 4000
    assert not pool._workers
    assert "ingest workers started (2 running)" in caplog.text
    assert "ingest workers idle for 0 s: stopped" in caplog.text


def test_no_workers_on_a_single_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert ingest_workers.default_count() == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert ingest_workers.default_count() == ingest_workers.MAX_WORKERS


def test_the_worker_module_runs_as_a_script(tmp_path: Path) -> None:
    """`python -m telemetryd.daemon.ingest_worker FD` (what the pool starts) exits 0 at EOF."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = subprocess.Popen(
            [sys.executable, "-m", "telemetryd.daemon.ingest_worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        ours.close()
        assert proc.wait(TIMEOUT) == 0
