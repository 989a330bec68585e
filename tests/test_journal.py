"""The journal on disk: segments, rotation, startup recovery, ids across restarts, durability.

Most tests run the real daemon and read the real segment files it leaves behind; the
day-boundary test drives the journal in-process with a controlled wall clock.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import Daemon, connect, ctl, exchange, summary
from telemetryd.config import Journal as JournalConfig
from telemetryd.daemon.ingest import JOURNALED, Batch, Dedup
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.segments import CLOSED_MODE
from telemetryd.errors import JournalError

DaemonFactory = Callable[..., Daemon]

SEGMENT = re.compile(r"^(\d{8}T\d{6}Z)-(\d{6})\.jsonl$")
SYNC = b'{"op":"sync"}\n'


def event(name: str, **fields: Any) -> bytes:
    return json.dumps({"type": "custom", "name": name, **fields}, separators=(",", ":")).encode()


def segments(daemon: Daemon) -> list[tuple[int, Path]]:
    """Every uncompressed segment, by sequence number; any other file name fails the test."""
    found = []
    for path in daemon.journal_dir.iterdir():
        if path.name.endswith((".gz", ".zst")):
            continue
        match = SEGMENT.match(path.name)
        assert match, f"unexpected file in the journal: {path.name}"
        found.append((int(match.group(2)), path))
    return sorted(found)


def segment_names(path: Path) -> list[str]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends in a torn line"
    return [json.loads(line)["name"] for line in data.splitlines()]


class Session:
    """One events connection that waits for the journal after each send (sync)."""

    def __init__(self, path: str) -> None:
        self.sock = connect(path)
        self.buf = b""

    def send_synced(self, payload: bytes) -> dict[str, Any]:
        self.sock.sendall(payload + SYNC)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "the daemon closed the connection"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        assert reply.get("ok") is True, reply
        return reply

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)
        while self.sock.recv(65536):
            pass
        self.sock.close()


def test_segment_files_are_private(running_daemon: Daemon) -> None:
    assert exchange(running_daemon.events_socket, event("a")) == [summary(1, 1)]
    assert stat.S_IMODE(os.stat(running_daemon.journal_dir).st_mode) == 0o700
    ((_, path),) = segments(running_daemon)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert segment_names(path) == ["a"]


def test_torn_last_line_is_quarantined(daemon_factory: DaemonFactory, state_home: Path) -> None:
    journal = state_home / "journal"
    journal.mkdir(mode=0o700)
    whole = (
        b'{"type":"custom","v":1,"id":"old-1","ts":"2025-01-01T00:00:00Z",'
        b'"received_at":"2025-01-01T00:00:00Z","name":"kept"}\n'
    )
    torn = b'{"type":"custom","v":1,"id":"old-2","ts":"2025-01-01T00:00:01Z","na'
    segment = journal / "20250101T000000Z-000005.jsonl"
    segment.write_bytes(whole + torn)

    daemon = daemon_factory().start()
    assert segment.read_bytes() == whole  # ends with a newline again
    quarantined = state_home / "quarantine" / "20250101T000000Z-000005.jsonl.torn"
    assert quarantined.read_bytes() == torn
    assert [seq for seq, _ in segments(daemon)] == [5]  # a new one opens at the first write
    # The kept line's id is known; the torn one was never acknowledged, so it is new.
    replies = exchange(
        daemon.events_socket, event("kept", id="old-1") + b"\n" + event("retry", id="old-2")
    )
    assert replies == [summary(2, 1, duplicates=1)]
    assert [seq for seq, _ in segments(daemon)] == [5, 6]  # it follows the old ones
    assert [e["id"] for e in daemon.journal_events()] == ["old-1", "old-2"]
    assert daemon.stop() == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_torn_tail_is_cut_off_a_read_only_segment(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    """Closed segments are read-only (0400); one whose end was damaged all the same is
    cut back and is read-only again, and one a crashed daemon left writable becomes
    read-only: at start, every segment found is closed."""
    journal = state_home / "journal"
    journal.mkdir(mode=0o700)
    whole = (
        b'{"type":"custom","v":1,"id":"old-1","ts":"2025-01-01T00:00:00Z",'
        b'"received_at":"2025-01-01T00:00:00Z","name":"kept"}\n'
    )
    older = journal / "20250101T000000Z-000001.jsonl"
    newer = journal / "20250101T000000Z-000002.jsonl"
    older.write_bytes(whole)
    newer.write_bytes(whole.replace(b"old-1", b"old-2") + b'{"type":"cus')
    older.chmod(0o600)  # left by a daemon that crashed
    newer.chmod(CLOSED_MODE)
    daemon = daemon_factory().start()
    assert newer.read_bytes() == whole.replace(b"old-1", b"old-2")
    assert (state_home / "quarantine" / (newer.name + ".torn")).read_bytes() == b'{"type":"cus'
    assert (mode(older), mode(newer)) == (CLOSED_MODE, CLOSED_MODE)
    assert daemon.stop() == 0


def test_a_torn_line_in_an_older_segment_is_called_damage(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    """Only the newest segment can end in a write a crash cut short (never acknowledged);
    an older one was closed whole, so a torn end there is damage, and the log says so
    (it called those lines never acknowledged)."""
    journal = state_home / "journal"
    journal.mkdir(mode=0o700)
    whole = (
        b'{"type":"custom","v":1,"id":"old-1","ts":"2025-01-01T00:00:00Z",'
        b'"received_at":"2025-01-01T00:00:00Z","name":"kept"}\n'
    )
    (journal / "20250101T000000Z-000001.jsonl").write_bytes(whole + b'{"type":"cus')
    (journal / "20250101T000000Z-000002.jsonl").write_bytes(whole.replace(b"old-1", b"old-2"))
    daemon = daemon_factory().start()
    log = daemon.log()
    assert "000001.jsonl, closed whole, now ends in a torn line: the file was damaged" in log
    assert "never acknowledged" not in log
    assert daemon.stop() == 0


def test_segment_that_is_only_a_torn_line(daemon_factory: DaemonFactory, state_home: Path) -> None:
    journal = state_home / "journal"
    journal.mkdir(mode=0o700)
    segment = journal / "20250101T000000Z-000001.jsonl"
    segment.write_bytes(b'{"type":"cus')
    daemon = daemon_factory().start()
    assert segment.read_bytes() == b""
    torn = state_home / "quarantine" / "20250101T000000Z-000001.jsonl.torn"
    assert torn.read_bytes() == b'{"type":"cus'
    assert exchange(daemon.events_socket, event("fresh")) == [summary(1, 1)]
    assert [e["name"] for e in daemon.journal_events()] == ["fresh"]
    assert daemon.stop() == 0


def test_each_start_opens_a_new_segment(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory()
    for run in range(3):
        daemon.start()
        assert exchange(daemon.events_socket, event(f"run-{run}")) == [summary(1, 1)]
        assert daemon.stop() == 0
    found = segments(daemon)
    assert [seq for seq, _ in found] == [1, 2, 3]
    assert [segment_names(path) for _, path in found] == [["run-0"], ["run-1"], ["run-2"]]


def test_sequence_continues_after_compressed_segments(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    journal = state_home / "journal"
    journal.mkdir(mode=0o700)
    (journal / "20250101T000000Z-000003.jsonl").write_bytes(b"")
    (journal / "20250102T000000Z-000007.jsonl.gz").write_bytes(b"\x1f\x8b not really")
    daemon = daemon_factory().start()
    assert exchange(daemon.events_socket, event("new")) == [summary(1, 1)]
    found = segments(daemon)
    assert [seq for seq, _ in found] == [3, 8]
    assert segment_names(found[-1][1]) == ["new"]
    assert daemon.stop() == 0


def test_rotation_by_size(daemon_factory: DaemonFactory) -> None:
    limit = 4096
    daemon = daemon_factory(["--set", f"journal.segment-max-bytes={limit}"]).start()
    session = Session(daemon.events_socket)
    count = 80
    for n in range(count):  # one event per write: no segment may pass the limit
        assert session.send_synced(event(f"e{n}", attrs={"pad": "p" * 100}) + b"\n")["accepted"]
    session.close()
    found = segments(daemon)
    assert len(found) >= 3
    for _, path in found:
        assert 0 < path.stat().st_size <= limit
    assert [name for _, path in found for name in segment_names(path)] == [
        f"e{n}" for n in range(count)
    ]
    assert daemon.stop() == 0


def test_event_bigger_than_a_segment_gets_its_own(daemon_factory: DaemonFactory) -> None:
    limit = 4096
    daemon = daemon_factory(["--set", f"journal.segment-max-bytes={limit}"]).start()
    session = Session(daemon.events_socket)
    session.send_synced(event("small-1") + b"\n")
    session.send_synced(event("big", attrs={"pad": "p" * 5000}) + b"\n")
    session.send_synced(event("small-2") + b"\n")
    session.close()
    found = segments(daemon)
    assert [segment_names(path) for _, path in found] == [["small-1"], ["big"], ["small-2"]]
    assert found[1][1].stat().st_size > limit
    assert daemon.stop() == 0


def test_rotation_with_large_batches(daemon_factory: DaemonFactory) -> None:
    """Writes bigger than a segment: lines stay whole, every event is there once, in order.

    Each exchange is over the limit, so whichever way the daemon splits it into writes, a
    second exchange cannot fit in the segment the first one ends in.
    """
    daemon = daemon_factory(["--set", "journal.segment-max-bytes=4096"]).start()
    for part in range(3):
        payload = b"".join(event(f"b{part}-{n}", id=f"b{part}-{n}") + b"\n" for n in range(100))
        assert len(payload) > 4096
        assert exchange(daemon.events_socket, payload) == [summary(100, 100)]
    ids = [e["id"] for e in daemon.journal_events()]
    assert ids == [f"b{part}-{n}" for part in range(3) for n in range(100)]
    assert len(segments(daemon)) >= 2
    assert daemon.stop() == 0


def test_ids_are_remembered_after_restart(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory().start()
    assert exchange(daemon.events_socket, event("x", id="X") + b"\n") == [summary(1, 1)]
    assert daemon.stop() == 0
    daemon.start()
    replies = exchange(daemon.events_socket, event("x", id="X") + b"\n" + event("y", id="Y"))
    assert replies == [summary(2, 1, duplicates=1)]
    assert [e["id"] for e in daemon.journal_events()] == ["X", "Y"]
    assert daemon.stop() == 0


def test_acknowledged_events_survive_kill_9(daemon_factory: DaemonFactory) -> None:
    """With the default durability (interval), an ack means written: a crash loses nothing."""
    daemon = daemon_factory().start()
    payload = b"".join(event(f"k{n}", id=f"k{n}") + b"\n" for n in range(100))
    assert exchange(daemon.events_socket, payload) == [summary(100, 100)]
    daemon.kill()
    daemon.start()
    replies = exchange(daemon.events_socket, payload)
    assert replies == [summary(100, 0, duplicates=100)]
    assert [e["id"] for e in daemon.journal_events()] == [f"k{n}" for n in range(100)]
    assert daemon.stop() == 0


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
def test_durability_modes_journal_and_ack(daemon_factory: DaemonFactory, mode: str) -> None:
    daemon = daemon_factory(["--set", f"journal.durability={mode}"]).start()
    payload = b"".join(event(f"d{n}") + b"\n" for n in range(50))
    assert exchange(daemon.events_socket, payload) == [summary(50, 50)]
    assert [e["name"] for e in daemon.journal_events()] == [f"d{n}" for n in range(50)]
    flushed = ctl("flush")
    assert flushed.returncode == 0, flushed.stderr
    status = ctl("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["journal"]["durability"] == mode
    assert report["journal"]["events_written"] == 50
    assert report["accepted"] == 50
    assert daemon.stop() == 0
    assert [e["name"] for e in daemon.journal_events()] == [f"d{n}" for n in range(50)]


def test_flush_with_nothing_written(running_daemon: Daemon) -> None:
    result = ctl("flush")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""


def test_flush_while_down_fails(state_home: Path) -> None:
    result = ctl("flush")
    assert result.returncode != 0
    assert b"not running" in result.stderr


def test_restart_remembers_the_ids_of_the_last_window_events(
    daemon_factory: DaemonFactory,
) -> None:
    """The dedup window holds the ids of at least the last `dedup-window` journaled events,
    whoever chose them, and a restart refills it from the journal: a client id followed by
    fewer than `window` events without an id is still recognised after a restart."""
    daemon = daemon_factory(["--set", "ingest.dedup-window=10"]).start()
    client = b"".join(event(f"c{n}", id=f"client-{n}") + b"\n" for n in range(5))
    anonymous = b"".join(event(f"a{n}") + b"\n" for n in range(4))
    assert exchange(daemon.events_socket, client + anonymous) == [summary(9, 9)]
    assert exchange(daemon.events_socket, client) == [summary(5, 0, duplicates=5)]
    assert daemon.stop() == 0
    daemon.start()
    assert exchange(daemon.events_socket, client) == [summary(5, 0, duplicates=5)]
    ids = [e["id"] for e in daemon.journal_events()]
    assert sorted(i for i in ids if i.startswith("client-")) == [f"client-{n}" for n in range(5)]
    assert daemon.stop() == 0
    daemon.start()
    assert exchange(daemon.events_socket, client) == [summary(5, 0, duplicates=5)]
    ids = [e["id"] for e in daemon.journal_events()]
    assert sorted(i for i in ids if i.startswith("client-")) == [f"client-{n}" for n in range(5)]
    assert daemon.stop() == 0


# -- rotation at the UTC day boundary (in-process, real files, a controlled wall clock) ----


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


async def _journal_lines(journal: Journal, *chunks: bytes) -> None:
    """Queue each chunk as a batch and wait until it is durable."""
    for data in chunks:
        batch = Batch()
        batch.data, batch.count = data, data.count(b"\n")
        await journal.submit(batch)
        await journal.wait(batch)


@pytest.mark.asyncio
async def test_segments_rotate_at_the_utc_day_boundary(tmp_path: Path) -> None:
    clock = _Clock(datetime(2026, 11, 21, 23, 59, 59, 500000, tzinfo=UTC))
    journal = Journal(
        str(tmp_path / "journal"),
        str(tmp_path / "quarantine"),
        JournalConfig(),
        max_pending_bytes=1 << 20,
        clock=clock,
    )
    journal.open(Dedup(10))
    modes = []
    async with anyio.create_task_group() as tg:
        await tg.start(journal.run)
        await _journal_lines(journal, b'{"n":1}\n')
        clock.now += 0.4  # still 21 November
        await _journal_lines(journal, b'{"n":2}\n')
        clock.now += 0.2  # 00:00:00.1 on 22 November
        await _journal_lines(journal, b'{"n":3}\n')
        modes = [mode(path) for path in sorted((tmp_path / "journal").glob("*.jsonl"))]
        journal.close_when_drained()
    # Closed, a segment is never written again: read-only (the growing one is not).
    assert modes == [CLOSED_MODE, 0o600]
    assert [mode(path) for path in sorted((tmp_path / "journal").glob("*.jsonl"))] == [
        CLOSED_MODE,
        CLOSED_MODE,
    ]
    segments = sorted((tmp_path / "journal").glob("*.jsonl"))
    assert [s.name[:8] for s in segments] == ["20261121", "20261122"]
    assert [s.read_bytes() for s in segments] == [b'{"n":1}\n{"n":2}\n', b'{"n":3}\n']


# -- the writer's two paths: from the event loop (write_now) and its own thread -------------


def _journal(tmp_path: Path, **settings: Any) -> Journal:
    journal = Journal(
        str(tmp_path / "journal"),
        str(tmp_path / "quarantine"),
        JournalConfig(**settings),
        max_pending_bytes=1 << 20,
    )
    journal.open(Dedup(10))
    return journal


def _batch(data: bytes) -> Batch:
    return Batch(data=data, count=data.count(b"\n"))


@pytest.mark.asyncio
async def test_small_groups_written_from_the_loop_are_fsynced_within_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What write_now() writes on the event loop is acknowledged at once, and the writer
    still fsyncs it within fsync-interval-ms (durability "interval")."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    journal = _journal(tmp_path, durability="interval", fsync_interval_ms=50)
    durable: list[int] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            await _journal_lines(journal, b'{"n":0}\n')  # (the segment is open: no rotation)
            await anyio.sleep(0.2)  # (and synced)
            batch = _batch(b'{"n":1}\n')
            assert journal.offer(batch)
            journal.call_when_durable(batch.seq, lambda: durable.append(journal.durable_seq))
            journal.write_now()
            assert durable == [batch.seq]  # acknowledged from the loop, no task switch
            assert b'{"n":1}\n' in next((tmp_path / "journal").glob("*.jsonl")).read_bytes()
            before = len(synced)
            while len(synced) == before:  # the periodic fsync comes anyway
                await anyio.sleep(0.01)
            journal.close_when_drained()


@pytest.mark.asyncio
async def test_write_now_never_overtakes_a_group_on_the_writers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the writer's thread writes a big group, a small one queued after it waits:
    batches reach the file in the order they were queued."""
    started, release = anyio.Event(), threading.Event()
    real_write = Journal._write

    def write(self: Journal, data: bytes) -> None:
        if len(data) > 300_000:
            anyio.from_thread.run_sync(started.set)
            release.wait(10)
        real_write(self, data)

    monkeypatch.setattr(Journal, "_write", write)
    journal = _journal(tmp_path)
    big, small = _batch(b'{"big":"' + b"x" * 400_000 + b'"}\n'), _batch(b'{"small":1}\n')
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            assert journal.offer(big)
            journal.write_now()  # too big for the loop: the writer takes it to its thread
            await started.wait()
            assert journal.offer(small)
            journal.write_now()  # must not write now
            assert journal.durable_seq == 0
            release.set()
            await journal.wait(small)
            journal.close_when_drained()
    lines = next((tmp_path / "journal").glob("*.jsonl")).read_bytes().splitlines()
    assert [json.loads(line).keys() for line in lines] == [{"big": 0}.keys(), {"small": 0}.keys()]


@pytest.mark.asyncio
async def test_offer_says_when_the_queue_is_full_and_calls_back_when_it_drains(
    tmp_path: Path,
) -> None:
    journal = Journal(
        str(tmp_path / "journal"),
        str(tmp_path / "quarantine"),
        JournalConfig(),
        max_pending_bytes=100,
    )
    journal.open(Dedup(10))
    woken: list[bool] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            first = _batch(b'{"pad":"' + b"x" * 120 + b'"}\n')
            assert journal.offer(first)
            second = _batch(b'{"n":2}\n')
            assert not journal.offer(second)  # full: the connection holds it, stops reading
            journal.call_when_space(lambda: woken.append(True))
            journal.write_now()  # (the first write opens a segment: on the writer's thread)
            await journal.wait(first)
            assert woken == [True]
            assert journal.offer(second)
            journal.write_now()
            await journal.wait(second)
            journal.close_when_drained()
            with pytest.raises(JournalError, match="closing"):
                journal.offer(_batch(b'{"n":3}\n'))


def test_a_segment_or_the_journal_deleted_while_open_loses_nothing_acknowledged(
    daemon_factory: DaemonFactory,
) -> None:
    """An operator's `rm` of the segment being written, then of the whole journal
    directory: the events acknowledged afterwards were appended to the deleted file and
    lost for good (flush and query said all was well). Each now lands in a new segment,
    in a journal directory made again, and the store has them."""
    import shutil

    daemon = daemon_factory().start()

    def send(prefix: str) -> None:
        payload = b"".join(
            json.dumps({"type": "custom", "id": f"{prefix}{n}", "name": prefix}).encode() + b"\n"
            for n in range(20)
        )
        assert exchange(daemon.events_socket, payload) == [summary(20, 20)]

    for step in ("before", "after-rm", "after-rmtree"):
        if step == "after-rm":
            for path in daemon.journal_dir.glob("*.jsonl"):
                path.unlink()
        elif step == "after-rmtree":
            shutil.rmtree(daemon.journal_dir)
            assert ctl("status").returncode == 0  # (it failed on the missing directory)
        send(step)
        assert ctl("flush").returncode == 0
    assert "was deleted while open; continuing in a new one" in daemon.log()
    query = "select name, count(*) from events group by 1 order by 1"
    stored = ctl("query", "--format", "csv", query).stdout.decode().split()
    assert stored == ["name,count_star()", "after-rm,20", "after-rmtree,20", "before,20"]
    assert daemon.stop() == 0
    names = [event["name"] for event in daemon.journal_events()]
    assert names == ["after-rmtree"] * 20  # (after-rm's segment went with the directory)


def test_renewing_the_dedup_window_forgets_what_is_no_longer_on_disk() -> None:
    """After retention deleted segments, the window starts again from the ids on disk;
    the ids of batches not yet written when the reading began keep their place (they
    may not be on disk yet), whether client-chosen or a run the daemon assigned."""
    dedup = Dedup(100)
    written = Batch(count=2)
    written.seq = 3
    pending = Batch(count=1)
    pending.seq = 7
    unqueued = Batch(count=1)  # (seq None: not queued yet)
    for event_id in ("deleted-1", "on-disk-1"):
        dedup.add(event_id, JOURNALED)
    dedup.add("deleted-2", written)
    dedup.add("late", pending)
    dedup.add("later", unqueued)
    dedup.add_run("01890a5d-ac96-774b-bcce-", 5, 3, pending)
    dedup.add_run("01890a5d-ac96-774b-bcce-", 100, 3, written)

    dedup.renew(["on-disk-1", "on-disk-2"], since=5)

    assert dedup.get("on-disk-1") is JOURNALED and dedup.get("on-disk-2") is JOURNALED
    assert dedup.get("deleted-1") is None and dedup.get("deleted-2") is None
    assert dedup.get("late") is pending and dedup.get("later") is unqueued
    assert dedup.get("01890a5d-ac96-774b-bcce-000000000006") is pending
    assert dedup.get("01890a5d-ac96-774b-bcce-000000000065") is None  # (written: on disk)
    assert len(dedup) == 2 + 2 + 3
