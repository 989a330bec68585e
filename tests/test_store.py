"""The store: journal segments materialized into DuckDB, exactly once, and the views on it.

Every test uses a real DuckDB file under ``tmp_path`` and real journal segments, written
with ``events.ENCODER`` (as the daemon writes them) or by the real daemon. Expected
numbers are computed by hand or from the journal bytes, never by the SQL under test.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import duckdb
import msgspec
import pytest

from conftest import Daemon, exchange
from telemetryd import config, errorclass
from telemetryd import events as ev
from telemetryd.daemon.journal import list_segments
from telemetryd.daemon.segments import CLOSED_MODE
from telemetryd.store import database as database_module
from telemetryd.store import service as service_module
from telemetryd.store.database import ROW_GROUP_ROWS, SCHEMA_VERSION, Store, batch_bytes_for
from telemetryd.store.sandbox import harden
from telemetryd.store.service import StoreService

T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


# -- helpers -------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def line(event: ev.Event) -> bytes:
    """The event as the daemon journals it (``v`` and ``received_at`` set)."""
    if event.v is None:
        event.v = 1
    if event.received_at is None:
        event.received_at = (event.ts or T0) + timedelta(milliseconds=5)
    return ev.ENCODER.encode(event) + b"\n"


def custom(n: int, *, event_id: str | None = None, received: datetime | None = None) -> bytes:
    return line(
        ev.Custom(
            id=event_id or f"ev-{n:07d}",
            ts=at(n),
            received_at=received,
            session_id=f"s-{n % 7}",
            name=f"n{n}",
        )
    )


def segment(journal: Path, seq: int, suffix: str = ".jsonl") -> Path:
    journal.mkdir(parents=True, exist_ok=True)
    return journal / f"20260301T100000Z-{seq:06d}{suffix}"


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def query(store: Store, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with store.cursor() as cur:
        return cur.execute(sql, params).fetchall()


def stored_ids(store: Store) -> list[str]:
    return [row[0] for row in query(store, "SELECT id FROM events")]


class _Id(msgspec.Struct):
    id: str


_IDS = msgspec.json.Decoder(_Id)


def journal_ids(journal: Path, prefix: dict[int, int] | None = None) -> set[str]:
    """Ids of the complete lines of every segment (only the first ``prefix[seq]`` bytes
    of each segment when given; none of a segment missing from it)."""
    ids: set[str] = set()
    for seq, path in list_segments(str(journal)):
        if path.endswith(".gz"):
            data = gzip.decompress(Path(path).read_bytes())
        else:
            data = Path(path).read_bytes()
        if prefix is not None:
            data = data[: prefix.get(seq, 0)]
            assert not data or data.endswith(b"\n"), f"{path}: loaded up to mid-line"
        else:
            data = data[: data.rfind(b"\n") + 1]
        ids.update(_IDS.decode(chunk).id for chunk in data.splitlines())
    return ids


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal"
    path.mkdir()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(str(tmp_path / "telemetry.duckdb")) as opened:
        yield opened


# -- incremental, exactly-once loading -----------------------------------------


def test_incremental_load_takes_only_new_lines(store: Store, journal: Path) -> None:
    seg = segment(journal, 1)
    append(seg, b"".join(custom(n) for n in range(100)))
    assert store.materialize(str(journal)) == 100
    append(seg, b"".join(custom(n) for n in range(100, 150)))
    assert store.pending(str(journal)) == 50 * len(custom(100))
    assert store.materialize(str(journal)) == 50
    assert store.pending(str(journal)) == 0
    assert sorted(stored_ids(store)) == [f"ev-{n:07d}" for n in range(150)]
    (loaded,) = query(store, "SELECT loaded_bytes FROM segments WHERE seq = 1")[0]
    assert loaded == seg.stat().st_size


def test_rerunning_adds_nothing_also_after_reopening(tmp_path: Path, journal: Path) -> None:
    append(segment(journal, 1), b"".join(custom(n) for n in range(40)))
    append(segment(journal, 2), b"".join(custom(n) for n in range(40, 90)))
    database = str(tmp_path / "telemetry.duckdb")
    with Store(database) as store:
        assert store.materialize(str(journal)) == 90
        assert store.materialize(str(journal)) == 0
    with Store(database) as store:
        assert store.materialize(str(journal)) == 0
        assert len(stored_ids(store)) == 90
        stats = store.stats()
    assert stats["events"] == 90
    assert stats["segments"] == 2
    assert stats["segments_complete"] == 1  # the older one; the newest may still grow


def test_a_torn_last_line_waits_until_it_is_complete(store: Store, journal: Path) -> None:
    seg = segment(journal, 1)
    whole = custom(10)
    append(seg, b"".join(custom(n) for n in range(10)) + whole[:25])
    assert store.materialize(str(journal)) == 10
    assert store.pending(str(journal)) == 25
    append(seg, whole[25:-1])  # everything but the newline
    assert store.materialize(str(journal)) == 0
    append(seg, b"\n")
    assert store.materialize(str(journal)) == 1
    assert "ev-0000010" in stored_ids(store)
    assert store.pending(str(journal)) == 0


def test_a_closed_segment_with_a_torn_tail_is_loaded_up_to_its_last_newline(
    store: Store, journal: Path
) -> None:
    """A crash tore segment 1 (the daemon's startup cuts such a tail off): the bytes after
    its last newline were never an event, so the closed segment is complete without them."""
    append(segment(journal, 1), custom(1) + custom(2)[:30])
    append(segment(journal, 2), custom(3))
    assert store.materialize(str(journal)) == 2
    assert query(store, "SELECT seq, loaded_bytes, complete FROM segments ORDER BY seq") == [
        (1, len(custom(1)), True),
        (2, len(custom(3)), False),
    ]


def test_duplicate_ids_are_stored_once(tmp_path: Path, journal: Path) -> None:
    """Within a segment, across segments in one batch, and against stored rows: the copy
    stored first stays; within one batch, the copy received first."""
    early, late = at(1), at(2)
    append(
        segment(journal, 1),
        custom(1, event_id="dup-a", received=late)
        + custom(2)
        + custom(3, event_id="dup-a", received=early),
    )
    append(segment(journal, 2), custom(4, event_id="dup-b") + custom(5, event_id="dup-a"))
    database = str(tmp_path / "telemetry.duckdb")
    with Store(database) as store:
        assert store.materialize(str(journal)) == 3
        rows = query(store, "SELECT id, name FROM events ORDER BY id")
        assert rows == [("dup-a", "n3"), ("dup-b", "n4"), ("ev-0000002", "n2")]
        # Resent later, in a new segment: already stored, so nothing new.
        append(segment(journal, 3), custom(6, event_id="dup-b") + custom(7))
        assert store.materialize(str(journal)) == 1
        assert query(store, "SELECT name FROM events WHERE id = 'dup-b'") == [("n4",)]
        assert sorted(stored_ids(store)) == ["dup-a", "dup-b", "ev-0000002", "ev-0000007"]


def test_small_batches_split_segments_at_line_ends(tmp_path: Path, journal: Path) -> None:
    lines = [custom(n) for n in range(300)]
    append(segment(journal, 1), b"".join(lines[:200]))
    append(segment(journal, 2), b"".join(lines[200:]))
    with Store(str(tmp_path / "small.duckdb"), batch_bytes=1000) as store:
        assert store.materialize(str(journal)) == 300
        assert len(set(stored_ids(store))) == 300
        assert query(store, "SELECT seq, complete FROM segments ORDER BY seq") == [
            (1, True),
            (2, False),
        ]


def first_batch(lines: list[bytes], batch_bytes: int) -> int:
    """How many of ``lines`` (in one segment) a first batch of ``batch_bytes`` holds:
    the whole lines that fit."""
    size = 0
    for count, data in enumerate(lines):
        size += len(data)
        if size > batch_bytes:
            return count
    return len(lines)


def test_a_load_told_to_stop_ends_after_a_batch_and_the_next_goes_on(
    tmp_path: Path, journal: Path
) -> None:
    lines = [custom(n) for n in range(300)]
    append(segment(journal, 1), b"".join(lines))
    first = first_batch(lines, 1000)
    assert 0 < first < 300
    asked = []

    def stop() -> bool:
        asked.append(len(stored_ids(store)))
        return True

    with Store(str(tmp_path / "small.duckdb"), batch_bytes=1000) as store:
        assert store.materialize(str(journal), stop) == first
        assert asked == [first]  # asked once, after the first batch was committed
        assert not store.caught_up
        written = segment(journal, 1)
        assert store.missing(str(journal), (str(written), written.stat().st_size)) == (
            sum(map(len, lines[first:])),
            0,
        )
        assert store.materialize(str(journal)) == 300 - first
        assert store.caught_up
        assert sorted(stored_ids(store)) == [f"ev-{n:07d}" for n in range(300)]


def small_batches_service(tmp_path: Path, journal: Path) -> StoreService:
    """The worker's service on a store whose loads go 1,000 bytes at a time."""
    database = str(tmp_path / "small.duckdb")
    return StoreService(str(journal), lambda: Store(database, batch_bytes=1000), database)


@pytest.mark.asyncio
async def test_a_querys_load_ends_at_its_deadline_and_the_answer_says_what_it_leaves_out(
    tmp_path: Path, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store far behind its journal (after a flood) used to keep a query waiting for
    the whole load, past its timeout; now the query loads, in small batches, until its
    deadline, then answers from what the store holds, with a warning naming the bytes
    left out. A query whose turn comes after its deadline loads nothing."""
    monkeypatch.setattr(service_module, "QUERY_BATCH_BYTES", 1000)
    lines = [custom(n) for n in range(300)]
    written = segment(journal, 1)
    append(written, b"".join(lines))
    database = str(tmp_path / "small-batches.duckdb")
    # (batches that do not grow past 1,000 bytes: some 60 of them take more than 50 ms)
    service = StoreService(str(journal), lambda: Store(database, batch_bytes=1000), database)
    await service.open()
    try:
        assert await service.refresh(until=time.monotonic() - 1) == 0
        loaded = await service.refresh(until=time.monotonic() + 0.05)
        assert 0 < loaded < 300
        assert sorted(stored_ids(service.store)) == [f"ev-{n:07d}" for n in range(loaded)]
        left = sum(map(len, lines[loaded:]))
        warning = await service.behind((str(written), written.stat().st_size))
        assert warning is not None
        assert warning.startswith(f"{left} bytes of acknowledged events are not in the database")
        assert "loading has not caught up yet" in warning
        assert await service.refresh() == 300 - loaded
        assert await service.behind((str(written), written.stat().st_size)) is None
    finally:
        service.close()


def counting(store: Store, batches: list[int]) -> Callable[[], bool]:
    """A load's ``stop`` that never stops it: puts the events ``store`` holds after each
    batch onto ``batches``."""

    def count() -> bool:
        batches.append(len(stored_ids(store)))
        return False

    return count


def test_a_loads_own_batch_size_holds_for_that_load_only(tmp_path: Path, journal: Path) -> None:
    lines = [custom(n) for n in range(300)]
    append(segment(journal, 1), b"".join(lines))
    batches: list[int] = []

    with Store(str(tmp_path / "s.duckdb"), batch_bytes=1 << 20) as store:
        count = counting(store, batches)
        assert store.materialize(str(journal), lambda: True, 1000) == first_batch(lines, 1000)
        assert store.materialize(str(journal), count) == 300 - first_batch(lines, 1000)
        assert batches == [300]  # (the rest in one batch of the store's own size)
        # A capped run of many batches: none grows past the cap, and after it the
        # store's own size holds again.
        more = [custom(n) for n in range(300, 600)]
        append(segment(journal, 2), b"".join(more))
        batches.clear()
        assert store.materialize(str(journal), count, 1000) == 300
        assert len(batches) == packed(more, 1000) > 16  # (_GROW_AFTER good batches)
        append(segment(journal, 3), b"".join(custom(n) for n in range(600, 700)))
        batches.clear()
        assert store.materialize(str(journal), count) == 100
        assert batches == [700]


def packed(lines: list[bytes], batch_bytes: int) -> int:
    """How many batches of at most ``batch_bytes`` (whole lines) ``lines`` fill."""
    count = size = 0
    for data in lines:
        if size and size + len(data) > batch_bytes:
            count, size = count + 1, 0
        size += len(data)
    return count + bool(size)


def batch_ends(
    lines: list[bytes], first: int, most: int, after: int = 1, *, paced: bool = False
) -> list[int]:
    """The lines stored after each batch of a load of ``lines`` (one segment) whose first
    batch holds ``first`` bytes at most, doubling after every ``after`` batches that
    were at least half full (``paced``: at once), up to ``most``: whole lines, as many as
    fit."""
    ends: list[int] = []
    limit, size, good = first, 0, 0
    for count, data in enumerate(lines):
        if size and size + len(data) > limit:
            ends.append(count)
            if paced:
                limit = most
            elif size >= limit // 2 and limit < most:
                good += 1
                if good >= after:
                    limit, good = min(most, limit * 2), 0
            size = 0
        size += len(data)
    return [*ends, len(lines)]


def test_batches_halved_when_memory_ran_short_grow_back_in_the_next_run(
    tmp_path: Path, journal: Path
) -> None:
    """A store whose batches were halved (memory ran short in an earlier run) doubles
    them again after 16 good ones, up to its own size, in the runs that follow."""
    lines = [custom(n) for n in range(600)]
    append(segment(journal, 1), b"".join(lines))
    batches: list[int] = []

    with Store(str(tmp_path / "s.duckdb"), batch_bytes=4000) as store:
        count = counting(store, batches)
        store._limit = 1000  # (as halvings after running short left it)
        assert store.materialize(str(journal), count) == 600
        assert batches == batch_ends(lines, 1000, 4000, after=database_module._GROW_AFTER)
        assert store.stats()["batch_bytes"] == 4000


def test_a_querys_load_paces_its_batches_up_to_the_stores_own_size(
    tmp_path: Path, journal: Path
) -> None:
    """A query's load starts small, then loads as much at a time as its pace lets it end
    before its deadline, up to the size the store had (every batch costs some work of its
    own: after a big import, a query's load doubling its batches from 4 MB took twice as
    long as one batch); the store's own size holds again after it."""
    lines = [custom(n) for n in range(300)]
    append(segment(journal, 1), b"".join(lines))
    batches: list[int] = []

    own = 8000
    with Store(str(tmp_path / "s.duckdb"), batch_bytes=own) as store:
        count = counting(store, batches)
        until = time.monotonic() + 3600
        assert store.materialize(str(journal), count, 1000, until=until) == 300
        assert batches == batch_ends(lines, 1000, own, paced=True)
        assert len(batches) < len(batch_ends(lines, 1000, own))  # (fewer than doubling)
        more = [custom(n) for n in range(300, 400)]
        append(segment(journal, 2), b"".join(more))
        batches.clear()
        assert store.materialize(str(journal), count) == 100
        assert batches == [300 + end for end in batch_ends(more, own, own)]


def test_a_querys_next_batch_is_what_its_pace_loads_in_half_the_time_left() -> None:
    """A batch cannot be interrupted (on a busy machine one took 5-11 s): the next batch
    of a query's load is what the last one's pace loads in half the time left, from the
    load's first size to the store's; the load stops when another batch as long as the
    last would not end in time with as much again to spare."""
    mb = 1 << 20
    assert database_module.paced(4 * mb, 0.1, 1.0, 4 * mb, 160 * mb) == 20 * mb
    assert database_module.paced(20 * mb, 0.5, 14.0, 4 * mb, 160 * mb) == 160 * mb
    assert database_module.paced(4 * mb, 0.1, 0.2, 4 * mb, 160 * mb) == 4 * mb
    # (a small batch, a segment's end: its pace is mostly a commit's own cost)
    assert database_module.paced(mb // 16, 0.05, 1.0, 4 * mb, 160 * mb) == 4 * mb
    assert database_module.paced(4 * mb, 0.1, 0.19, 4 * mb, 160 * mb) == 0
    assert database_module.paced(4 * mb, 0.0, 0.0, 4 * mb, 160 * mb) == 0
    assert database_module.paced(4 * mb, 0.5, -1.0, 4 * mb, 160 * mb) == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("waits", [60.0, 0.0], ids=["query-waits", "query-gives-up"])
async def test_a_timed_load_makes_way_for_a_query_after_its_batch(
    tmp_path: Path, journal: Path, waits: float
) -> None:
    """The daemon's timed load (``yielding``) of a long backlog stops after the batch it
    is loading once a query has waited for its turn; the query's own load goes on from
    there. A query that gives up waiting at once answers from what the store holds,
    beside the load, which still stops after its batch: the query shares DuckDB's memory
    with one batch at most."""
    total = 1000  # (about 200 batches of 1,000 bytes: a second or more of loading)
    append(segment(journal, 1), b"".join(custom(n) for n in range(total)))
    service = small_batches_service(tmp_path, journal)
    await service.open()
    try:
        timed: list[int] = []

        async def timed_load() -> None:
            timed.append(await service.refresh(yielding=True))

        async with anyio.create_task_group() as tg:
            tg.start_soon(timed_load)
            with anyio.fail_after(30):
                while not stored_ids(service.store):  # (its first batch is in)
                    await anyio.sleep(0.005)
            by_query = await service.refresh(until=time.monotonic() + waits)
        assert 0 < timed[0] < total
        if waits:
            assert service.caught_up and timed[0] + by_query == total
            assert len(set(stored_ids(service.store))) == total
        else:
            assert by_query == 0 and not service.caught_up
    finally:
        service.close()


def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads run as an ordinary user (the tests may run as root, which never links)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def test_closed_segments_loaded_whole_are_linked_not_copied(
    store: Store, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed (read-only) segment read from its start to its end goes into the batch as
    a hard link; the growing segment, and a closed one loaded partly before, are copied
    (from their offsets): either way every line is loaded once and nothing stays in load/."""
    from telemetryd.store import database

    not_root(monkeypatch)
    copied: list[tuple[str, int, int]] = []
    real_copy = database._copy_range

    def copy(path: str, out_fd: int, start: int, end: int) -> None:
        copied.append((Path(path).name, start, end))
        real_copy(path, out_fd, start, end)

    monkeypatch.setattr(database, "_copy_range", copy)
    first, second, third = segment(journal, 1), segment(journal, 2), segment(journal, 3)
    append(first, b"".join(custom(n) for n in range(10)))
    assert store.materialize(str(journal)) == 10  # the growing segment: a copy
    append(first, b"".join(custom(n) for n in range(10, 15)))
    append(second, b"".join(custom(n) for n in range(15, 40)))
    append(third, b"".join(custom(n) for n in range(40, 45)))
    first.chmod(CLOSED_MODE)  # as the daemon leaves the segments it closed
    second.chmod(CLOSED_MODE)
    copied.clear()
    assert store.materialize(str(journal)) == 35
    size = first.stat().st_size
    assert copied == [
        (first.name, size - 5 * len(custom(10)), size),  # closed, loaded partly before
        (third.name, 0, third.stat().st_size),  # still growing
    ]  # (the second went in whole, as a link)
    assert sorted(stored_ids(store)) == [f"ev-{n:07d}" for n in range(45)]
    assert query(store, "SELECT seq, complete FROM segments ORDER BY seq") == [
        (1, True),
        (2, True),
        (3, False),
    ]
    assert list((journal.parent / "load").iterdir()) == []
    assert all(path.stat().st_nlink == 1 for path in journal.iterdir())


@pytest.mark.parametrize(
    ("root", "mode", "linked"),
    [
        (False, CLOSED_MODE, True),
        (False, 0o444, True),
        (False, 0o600, False),  # left by a daemon that crashed, or by an older version
        (False, 0o604, False),
        (True, CLOSED_MODE, False),  # root writes through read-only files
    ],
)
def test_a_load_never_leaves_a_writable_link_to_the_journal_in_load(
    tmp_path: Path,
    journal: Path,
    monkeypatch: pytest.MonkeyPatch,
    root: bool,
    mode: int,
    linked: bool,
) -> None:
    """load/ is where DuckDB may open files, to read and to write alike: a file there that
    is also a journal segment (a hard link) must be one nobody can write through. Seen
    from inside every load's transaction, when DuckDB reads the files. Segments that
    are copied instead fill the batches as before links were made (no early commit)."""
    from telemetryd.store import database

    if root:
        monkeypatch.setattr(os, "geteuid", lambda: 0)
    else:
        not_root(monkeypatch)
    seen: list[tuple[int, int]] = []  # (links, mode) of each file in load/ at each load
    loads = []
    real_insert = database.Store._insert

    def insert(self: Store, batch: Any, files: list[str], *, lenient: bool) -> int:
        loads.append(len(files))
        for name in os.listdir(self.load_dir):
            info = os.stat(os.path.join(self.load_dir, name))
            seen.append((info.st_nlink, stat.S_IMODE(info.st_mode)))
        return real_insert(self, batch, files, lenient=lenient)

    monkeypatch.setattr(database.Store, "_insert", insert)
    for seq in range(1, 5):
        append(segment(journal, seq), b"".join(custom(n) for n in range(seq * 10, seq * 10 + 7)))
    for seq in range(1, 4):  # closed; the fourth one grows
        segment(journal, seq).chmod(mode)
    with Store(str(tmp_path / "telemetry.duckdb"), batch_bytes=10 * len(custom(10))) as store:
        assert store.materialize(str(journal)) == 28
        assert len(set(stored_ids(store))) == 28
    # Batches of 10 lines: 7 | 7 | 7 + 3 | 4 with links; copied: 7 + 3 | 4 + 6 | 1 + 7.
    assert len(loads) == (4 if linked else 3), loads
    assert seen
    assert all(links == 1 or not mode & 0o222 for links, mode in seen), seen
    assert any(links > 1 for links, _ in seen) == linked
    assert list((tmp_path / "load").iterdir()) == []
    assert all(path.stat().st_nlink == 1 for path in journal.iterdir())
    assert all(stat.S_IMODE(segment(journal, seq).stat().st_mode) == mode for seq in (1, 2, 3))


def test_loads_write_small_row_groups_that_other_readers_open_as_usual(
    store: Store, journal: Path, tmp_path: Path
) -> None:
    """The file is attached with ROW_GROUP_ROWS rows to a row group (a load holds one per
    thread uncompressed); a plain read-only connection reads it like any other."""
    n = 100_000  # one row group at DuckDB's default size (one per thread at most)
    append(segment(journal, 1), b"".join(custom(i) for i in range(n)))
    assert store.materialize(str(journal)) == n
    groups = query(
        store,
        "SELECT row_group_id, max(count) FROM pragma_storage_info('events') "
        "WHERE column_name = 'id' AND segment_type = 'VALIDITY' GROUP BY ALL",
    )
    assert len(groups) >= n // ROW_GROUP_ROWS > 2
    assert all(rows <= ROW_GROUP_ROWS for _, rows in groups)
    store.close()
    with duckdb.connect(str(tmp_path / "telemetry.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM events").fetchall() == [(n,)]
        assert con.execute("SELECT count(*) FROM cost_by_model(days := 36500)").fetchall()


def test_the_worker_settings_hold_for_the_instance_that_loads_and_queries(
    tmp_path: Path, journal: Path
) -> None:
    """The file is attached to an in-memory DuckDB: the memory limit and threads that
    open_store sets are that instance's, seen by the loading connection and by cursors,
    which find the tables and views by their plain names."""
    from telemetryd import paths
    from telemetryd.store.service import open_store

    where = paths.Paths(str(tmp_path / "run"), str(tmp_path), str(tmp_path))
    settings = config.Store(memory_limit="100MB", threads=1)
    append(segment(journal, 1), b"".join(custom(n) for n in range(10)))
    with open_store(where, settings) as store:
        wanted = (100_000_000, 1)
        sql = (
            "SELECT current_setting('memory_limit'), current_setting('threads'), "
            "current_setting('block_allocator_memory')"
        )
        for con in (store._con, store.cursor()):
            [(limit, threads, kept)] = con.execute(sql).fetchall()
            assert (config.parse_size(limit.replace(" ", "")), threads) == (
                pytest.approx(wanted[0], rel=0.01),
                wanted[1],
            )
            # (buffer blocks come from memory kept for them, as much as the limit)
            assert config.parse_size(kept.replace(" ", "")) == pytest.approx(wanted[0], rel=0.01)
        assert store.materialize(str(journal)) == 10
        assert query(store, "SELECT count(*) FROM events") == [(10,)]
        assert query(store, "SELECT count(*) FROM sessions") == [(7,)]


@pytest.mark.parametrize("name", ["memory", "Temp", "system", "main"])
def test_a_database_file_may_have_any_name(tmp_path: Path, journal: Path, name: str) -> None:
    """Even the names DuckDB keeps for its own catalogs."""
    append(segment(journal, 1), b"".join(custom(n) for n in range(3)))
    with Store(str(tmp_path / f"{name}.duckdb")) as store:
        assert store.materialize(str(journal)) == 3
        assert query(store, "SELECT count(*) FROM events") == [(3,)]


def test_segments_are_copied_where_they_cannot_be_linked(
    tmp_path: Path, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal on another file system than the database (or links refused): copies."""

    def refuse(source: str, target: str) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    not_root(monkeypatch)
    for seq in range(1, 4):
        append(segment(journal, seq), b"".join(custom(n) for n in range(seq * 10, seq * 10 + 7)))
        segment(journal, seq).chmod(CLOSED_MODE)
    with Store(str(tmp_path / "telemetry.duckdb"), batch_bytes=2 * 7 * len(custom(10))) as store:
        assert store.materialize(str(journal)) == 21
        assert len(set(stored_ids(store))) == 21
        assert query(store, "SELECT count(*) FROM segments WHERE complete") == [(2,)]
    assert list((tmp_path / "load").iterdir()) == []


def test_compressed_segments_are_loaded_whole_once(store: Store, journal: Path) -> None:
    plain = segment(journal, 1)
    append(plain, b"".join(custom(n) for n in range(10)))
    assert store.materialize(str(journal)) == 10
    # More lines were written before the segment closed, and it was compressed before
    # they were loaded: loading the whole file again stores only those.
    append(plain, b"".join(custom(n) for n in range(10, 15)))
    append(segment(journal, 2), custom(15))
    segment(journal, 1, ".jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    assert store.materialize(str(journal)) == 6
    assert store.materialize(str(journal)) == 0
    assert sorted(stored_ids(store)) == [f"ev-{n:07d}" for n in range(16)]
    assert query(store, "SELECT seq, name, complete FROM segments ORDER BY seq") == [
        (1, "20260301T100000Z-000001.jsonl.gz", True),
        (2, "20260301T100000Z-000002.jsonl", False),
    ]
    assert store.pending(str(journal)) == 0


def test_files_that_are_not_segments_are_ignored_and_reported_once(
    store: Store, journal: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only exact segment names of regular files count: a backup copy, another
    compression, a directory or a symlink named like a segment are left alone."""
    append(segment(journal, 1), custom(1))
    append(segment(journal, 2), custom(2))
    (journal / (segment(journal, 1).name + ".bak")).write_bytes(custom(9))
    (journal / (segment(journal, 1).name + ".zst")).write_bytes(b"(zstd)")
    (journal / segment(journal, 7).name).mkdir()
    (journal / segment(journal, 8).name).symlink_to(segment(journal, 1))
    with caplog.at_level(logging.WARNING, logger="telemetryd.daemon.segments"):
        assert store.materialize(str(journal)) == 2
        # Segment 1 is closed (2 is the newest), so it is complete; 2 can still grow.
        assert query(store, "SELECT seq, complete FROM segments ORDER BY seq") == [
            (1, True),
            (2, False),
        ]
        append(segment(journal, 2), custom(3))
        assert store.materialize(str(journal)) == 1
    ignored = [record.getMessage() for record in caplog.records]
    assert len(ignored) == 4, ignored  # once each, however often the journal is listed
    assert all("ignoring" in message for message in ignored)


def big(n: int, size: int = 15_000) -> bytes:
    """A valid event with ``size`` bytes of attrs in one string (what exhausted DuckDB's
    memory: a long string costs a load several times its size)."""
    return line(ev.Custom(id=f"big-{n:05d}", ts=at(n), name="big", attrs={"blob": "x" * size}))


DEFAULT_MEMORY = config.parse_size(config.Store().memory_limit)


def limited(tmp_path: Path, batch_bytes: int) -> Store:
    """A store with the daemon's default memory limit and 2 threads."""
    store = Store(str(tmp_path / "limited.duckdb"), batch_bytes=batch_bytes)
    with store.cursor() as con:
        harden(con, allowed_dirs=[store.load_dir], memory_limit=f"{DEFAULT_MEMORY}B", threads=2)
    return store


def test_events_with_long_strings_load_within_the_default_memory_limit(
    tmp_path: Path, journal: Path
) -> None:
    """2,000 events of 15 KB (30 MB) used to fail every load with OutOfMemoryException."""
    append(segment(journal, 1), b"".join(big(n) for n in range(2000)))
    with limited(tmp_path, batch_bytes_for(DEFAULT_MEMORY)) as store:
        assert store.materialize(str(journal)) == 2000
        assert store.pending(str(journal)) == 0
        assert store.rebuild(str(journal)).events == 2000
        assert query(store, "SELECT count(*), sum(length(attrs)) FROM events") == [
            (2000, 2000 * len('{"blob":""}') + 2000 * 15_000)
        ]


def test_out_of_memory_halves_the_batches_and_never_loses_progress(
    tmp_path: Path, journal: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Batches far too big for the memory limit: the load that fails is rolled back and
    retried smaller; what was committed stays, nothing is loaded twice.

    The first batch holds 75 MB of long strings, which at the default memory limit fail
    in batches of down to 32 MB whatever the threads' timing (45 MB failed only by a few
    MB, and now and then not at all on a busy machine)."""
    n = 5000
    append(segment(journal, 1), b"".join(custom(i) for i in range(100)))
    append(segment(journal, 2), b"".join(big(i) for i in range(n)))
    with limited(tmp_path, 256 * 1024 * 1024) as store:
        with caplog.at_level(logging.WARNING, logger="telemetryd.store.database"):
            assert store.materialize(str(journal)) == n + 100
        assert "ran out of DuckDB memory" in caplog.text
        assert store.stats()["batch_bytes"] < 256 * 1024 * 1024
        assert query(store, "SELECT count(DISTINCT id), count(*) FROM events") == [
            (n + 100, n + 100)
        ]
        assert set(stored_ids(store)) == journal_ids(journal)
        # Offsets and rows agree: the next run loads only what is new.
        append(segment(journal, 2), big(n))
        assert store.materialize(str(journal)) == 1


def test_a_querys_load_that_ran_short_of_memory_paces_no_bigger_than_what_fit(
    tmp_path: Path, journal: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A query's paced batches grow to the store's own size at once; where a batch that
    big runs out of memory, it is halved until it fits, and the rest of that load keeps
    to what fit instead of growing back into the same failure after every batch."""
    n = 7500  # 112 MB of long strings: at the default memory limit, batches of 32 MB
    append(segment(journal, 1), b"".join(custom(i) for i in range(100)))
    append(segment(journal, 2), b"".join(big(i) for i in range(n)))
    with limited(tmp_path, 256 * 1024 * 1024) as store:
        with caplog.at_level(logging.WARNING, logger="telemetryd.store.database"):
            until = time.monotonic() + 3600
            assert store.materialize(str(journal), None, 1 << 20, until=until) == n + 100
        # One descent, from 256 MB to the size that fit (32 MB, 16 on a busy machine),
        # and not one again after each batch that followed it
        fit = store.stats()["batch_bytes"]
        halvings = (256 * 1024 * 1024 // fit).bit_length() - 1
        assert 1 <= caplog.text.count("ran out of DuckDB memory") == halvings
        assert set(stored_ids(store)) == journal_ids(journal)


def test_a_damaged_compressed_segment_keeps_its_good_prefix_and_blocks_nothing(
    tmp_path: Path, journal: Path
) -> None:
    """Truncated, empty and corrupt .gz segments among intact ones: the intact ones load,
    each damaged one keeps what can be trusted as a plain segment (a truncated file: its
    complete lines; a corrupt one: nothing, since zlib notices only at the CRC, after the
    wrong bytes came out), the damaged file goes to quarantine, and a rebuild agrees."""
    lines = [b"".join(custom(100 * seq + n) for n in range(50)) for seq in range(5)]
    for seq, data in enumerate(lines, start=1):
        segment(journal, seq, ".jsonl.gz").write_bytes(gzip.compress(data))
    append(segment(journal, 6), custom(999))
    truncated = segment(journal, 2, ".jsonl.gz")
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    segment(journal, 3, ".jsonl.gz").write_bytes(b"")
    corrupt = segment(journal, 4, ".jsonl.gz")
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    corrupt.write_bytes(bytes(data))
    quarantine = tmp_path / "quarantine"

    with Store(str(tmp_path / "telemetry.duckdb"), quarantine_dir=str(quarantine)) as store:
        loaded = store.materialize(str(journal))
        kept = {seq: segment(journal, seq).read_bytes() for seq in (2, 3, 4)}
        for seq in (2, 3, 4):
            assert not segment(journal, seq, ".jsonl.gz").exists()
            assert lines[seq - 1].startswith(kept[seq])  # a prefix, whole lines only
            assert not kept[seq] or kept[seq].endswith(b"\n")
            assert (quarantine / (segment(journal, seq).name + ".gz.damaged")).exists()
        assert kept[3] == kept[4] == b""
        assert 0 < len(kept[2]) < len(lines[1])
        expected = 2 * 50 + 1 + sum(chunk.count(b"\n") for chunk in kept.values())
        assert loaded == expected
        assert set(stored_ids(store)) == journal_ids(journal)
        salvaged = store.stats()["salvaged"]
        assert sorted(item["segment"] for item in salvaged) == [
            segment(journal, seq, ".jsonl.gz").name for seq in (2, 3, 4)
        ]
        assert query(store, "SELECT count(*) FROM segments WHERE complete") == [(5,)]
        # Retention can read and forget every segment now, damaged ones included.
        assert store.forget({2: [str(segment(journal, 2))]}) == kept[2].count(b"\n")
        assert store.rebuild(str(journal)).events == expected - kept[2].count(b"\n")


def test_a_salvaged_segments_events_are_its_event_lines(tmp_path: Path, journal: Path) -> None:
    """``kept_events`` counted the good prefix's lines, a line that is no event too."""
    data = custom(1) + custom(2) + b"this is not json {{{\n" + custom(3) + b"\n" + custom(4)
    damaged = segment(journal, 1, ".jsonl.gz")
    whole = gzip.compress(data * 20)  # (long enough to cut inside)
    damaged.write_bytes(whole[: len(whole) * 3 // 4])
    append(segment(journal, 2), custom(999))
    with Store(str(tmp_path / "telemetry.duckdb")) as store:
        store.materialize(str(journal))
        [report] = store.stats()["salvaged"]
        kept = segment(journal, 1).read_bytes()
        events = sum(line.startswith(b"{") for line in kept.splitlines())
        assert 0 < events < kept.count(b"\n")  # (bad and blank lines among them)
        assert report["kept_events"] == events


def test_a_partly_loaded_segment_compressed_later_is_read_on_from_its_offset(
    tmp_path: Path, journal: Path
) -> None:
    """``loaded_bytes`` counts uncompressed bytes, so it means the same after compression."""
    first = b"".join(custom(n) for n in range(10))
    rest = b"".join(custom(n) for n in range(10, 25))
    append(segment(journal, 1), first)
    with Store(str(tmp_path / "telemetry.duckdb")) as store:
        assert store.materialize(str(journal)) == 10
        segment(journal, 1).unlink()
        segment(journal, 1, ".jsonl.gz").write_bytes(gzip.compress(first + rest))
        append(segment(journal, 2), custom(99))
        assert store.materialize(str(journal)) == 16
        assert query(store, "SELECT loaded_bytes, complete FROM segments WHERE seq = 1") == [
            (len(first + rest), True)
        ]


def test_while_a_segment_is_being_compressed_the_plain_file_is_read(
    store: Store, journal: Path
) -> None:
    plain = segment(journal, 1)
    append(plain, custom(1))
    segment(journal, 1, ".jsonl.gz").write_bytes(gzip.compress(custom(1))[:10])  # half written
    append(segment(journal, 2), custom(2))
    assert store.materialize(str(journal)) == 2


def test_malformed_lines_are_skipped_with_a_warning(
    store: Store, journal: Path, caplog: pytest.LogCaptureFixture
) -> None:
    append(segment(journal, 1), custom(1) + b'{"type":"custom","id":"x",\n' + custom(2))
    with caplog.at_level(logging.WARNING, logger="telemetryd.store.database"):
        assert store.materialize(str(journal)) == 2
    assert f"journal segment {segment(journal, 1).name}: line 2 not events" in caplog.text
    # The segment is named; the batch's temporary copy (gone by now) is not.
    assert "batch-" not in caplog.text
    assert sorted(stored_ids(store)) == ["ev-0000001", "ev-0000002"]
    assert store.pending(str(journal)) == 0


def test_a_line_that_is_not_json_is_named_by_its_segment_and_its_number_there(
    tmp_path: Path, journal: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Segments that share a batch, one with a bad line in its middle: the warning named
    every segment of the batch and a line number counted within the batch, and `status`
    said nothing. Now the log and ``stats()["bad_lines"]`` name the segment and the
    line's number in it, also where the segment was partly loaded before or is gzipped;
    a segment's lines add up over loads, and a rebuild finds the same again."""
    bad = b"this is not json {{{\n"
    append(segment(journal, 1), b"".join(custom(n) for n in range(10)))
    middle = b"".join(custom(n) for n in range(10, 14)) + bad  # line 5 of 11
    append(segment(journal, 2), middle + b"".join(custom(n) for n in range(14, 20)))
    array = b"[1, 2, 3]\n"  # (JSON, but no event: DuckDB's strict load fails on it too)
    segment(journal, 3, ".jsonl.gz").write_bytes(
        gzip.compress(custom(20) + bad + custom(21) + array)
    )
    open_one = segment(journal, 4)  # (the newest: still written to)
    append(open_one, b"".join(custom(n) for n in range(22, 25)) + bad)
    names = [segment(journal, 2).name, segment(journal, 3, ".jsonl.gz").name, open_one.name]
    with Store(str(tmp_path / "telemetry.duckdb")) as store:
        with caplog.at_level(logging.WARNING, logger="telemetryd.store.database"):
            assert store.materialize(str(journal)) == 25
            append(open_one, custom(25) + bad + custom(26))  # lines 5 to 7
            assert store.materialize(str(journal)) == 2

        def reports() -> dict[str, tuple[list[int], int]]:
            found = store.stats()["bad_lines"]
            assert all(item["error"].startswith("JSON is malformed") for item in found), found
            return {item["segment"]: (item["lines"], item["count"]) for item in found}

        assert reports() == {names[0]: ([5], 1), names[1]: ([2, 4], 2), names[2]: ([4, 6], 2)}
        assert f"journal segment {names[0]}: line 5 not events (JSON is malformed" in caplog.text
        assert f"journal segment {names[2]}: line 6 not events" in caplog.text
        assert segment(journal, 1).name not in caplog.text  # (no bad line there)
        assert set(stored_ids(store)) == {f"ev-{n:07d}" for n in range(27)}
        assert store.rebuild(str(journal)).events == 27
        assert reports() == {names[0]: ([5], 1), names[1]: ([2, 4], 2), names[2]: ([4, 6], 2)}


def test_temporary_files_are_removed_also_after_a_crash(tmp_path: Path, journal: Path) -> None:
    (tmp_path / "load").mkdir()
    stale = tmp_path / "load" / "batch-x1y2.jsonl"
    stale.write_bytes(b"left by a crash")
    with Store(str(tmp_path / "telemetry.duckdb"), batch_bytes=500) as store:
        assert not stale.exists()
        append(segment(journal, 1), b"".join(custom(n) for n in range(20)))
        assert store.materialize(str(journal)) == 20
        assert list((tmp_path / "load").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal", "load", "telemetry.duckdb"]


def test_pending_and_stats(store: Store, journal: Path, tmp_path: Path) -> None:
    assert store.stats()["last_materialized"] is None
    missing = str(tmp_path / "no-journal-yet")
    assert store.materialize(missing) == 0
    assert store.pending(missing) == 0
    assert store.pending(str(journal)) == 0
    seg = segment(journal, 1)
    append(seg, b"".join(custom(n) for n in range(5)))
    assert store.pending(str(journal)) == seg.stat().st_size
    store.materialize(str(journal))
    stats = store.stats()
    assert stats["events"] == 5
    assert stats["segments"] == 1
    assert stats["last_materialized"] is not None
    assert stats["last_loaded"] is not None
    assert stats["database_bytes"] > 0
    assert stats["schema_version"] == SCHEMA_VERSION
    assert stats["needs_rebuild"] is False
    store.checkpoint()
    assert store.stats()["events"] == 5


def test_views_are_recreated_only_when_they_differ(tmp_path: Path, journal: Path) -> None:
    """Opening a store whose views are this version's creates nothing (a cold start of the
    store worker pays for nothing it does not need); other views are replaced."""
    database = str(tmp_path / "telemetry.duckdb")
    with Store(database) as store:
        digest = query(store, "SELECT value FROM meta WHERE key = 'views'")
        assert digest and len(digest[0][0]) == 64
        with store.cursor() as cur:
            cur.execute("CREATE OR REPLACE VIEW api_requests AS SELECT 'stale' AS model")
            cur.execute("UPDATE meta SET value = 'other' WHERE key = 'views'")
    with Store(database) as store:
        assert query(store, "SELECT value FROM meta WHERE key = 'views'") == digest
        assert query(store, "SELECT count(*) FROM api_requests") == [(0,)]
        with store.cursor() as cur:
            cur.execute("CREATE OR REPLACE VIEW api_requests AS SELECT 'mine' AS model")
    with Store(database) as store:  # same digest: left as it is
        assert query(store, "SELECT model FROM api_requests") == [("mine",)]


def test_a_different_schema_version_needs_a_rebuild(tmp_path: Path, journal: Path) -> None:
    append(segment(journal, 1), b"".join(custom(n) for n in range(5)))
    database = str(tmp_path / "telemetry.duckdb")
    with Store(database) as store:
        store.materialize(str(journal))
        with store.cursor() as cur:
            cur.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
            cur.execute("CREATE TABLE leftover (x INTEGER)")  # any old layout goes
    with Store(database) as store:
        assert store.needs_rebuild
        assert store.stats()["needs_rebuild"] is True
        with pytest.raises(Exception, match="rebuild"):
            store.materialize(str(journal))
        rebuilt = store.rebuild(str(journal))
        assert (rebuilt.events, rebuilt.events_before) == (5, None)  # (another schema's count)
        assert not store.needs_rebuild
        assert query(store, "SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(SCHEMA_VERSION),)
        ]
        assert query(store, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'leftover'")
        assert query(store, "SELECT count(*) FROM events") == [(5,)]
    with Store(database) as store:
        assert not store.needs_rebuild


# -- kill -9 during materialization ----------------------------------------------

MATERIALIZE = """
import sys
from telemetryd.store.database import Store
store = Store(sys.argv[1], batch_bytes=int(sys.argv[3]))
print("go", flush=True)
if sys.argv[4] == "rebuild":
    store.rebuild(sys.argv[2])
else:
    store.materialize(sys.argv[2])
print("done", flush=True)
"""


def complete_bytes(journal: Path) -> int:
    """Bytes of complete lines in the journal's plain segments."""
    return sum(p.read_bytes().rfind(b"\n") + 1 for p in journal.glob("*.jsonl"))


def assert_exactly_once(store: Store, journal: Path) -> int:
    """The stored ids are exactly those of the loaded prefixes, each once; returns the
    number of segment bytes loaded."""
    offsets = dict(query(store, "SELECT seq, loaded_bytes FROM segments"))
    ids = stored_ids(store)
    assert len(ids) == len(set(ids)), "an event is stored twice"
    assert set(ids) == journal_ids(journal, offsets), "stored events and offsets disagree"
    return sum(offsets.values())


def test_kill_9_during_materialization_loses_and_doubles_nothing(
    tmp_path: Path, journal: Path
) -> None:
    rng = random.Random(9)
    database = str(tmp_path / "telemetry.duckdb")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    n = 0
    interrupted = 0
    seq = 1
    torn = b""
    for round_ in range(12):
        # The journal grows between rounds: new lines (some resending earlier ids, the
        # last one torn until the next round), and now and then a new segment.
        if round_ % 4 == 3:
            append(segment(journal, seq), torn)  # the writer completes its line, then rotates
            torn = b""
            seq += 1
        chunk = [torn]
        for _ in range(4000):
            resend = n > 100 and rng.random() < 0.03
            chunk.append(custom(n, event_id=f"ev-{rng.randrange(n):07d}" if resend else None))
            n += 1
        last = custom(n)
        n += 1
        torn, head = last[20:], last[:20]
        append(segment(journal, seq), b"".join(chunk) + head)

        mode = "rebuild" if round_ % 5 == 4 else "materialize"
        proc = subprocess.Popen(
            [sys.executable, "-c", MATERIALIZE, database, str(journal), "16384", mode],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"go\n"
        time.sleep(rng.uniform(0.0, 0.6))  # a random point of the load, not a wait
        finished = proc.poll() is not None
        proc.kill()
        proc.wait()
        proc.stdout.close()
        with Store(database) as store:
            loaded = assert_exactly_once(store, journal)
        if not finished and loaded < complete_bytes(journal):
            interrupted += 1
        print(f"round {round_}: {mode} killed at {loaded} of {complete_bytes(journal)} bytes")

    assert interrupted >= 5, f"only {interrupted} of 12 kills landed during a load"
    with Store(database) as store:
        assert not list(tmp_path.glob(".telemetry.duckdb.load-*")), "temporary files left"
        store.materialize(str(journal))
        assert_exactly_once(store, journal)
        assert set(stored_ids(store)) == journal_ids(journal)


# -- rebuild ---------------------------------------------------------------------

REPORTS = [
    "SELECT count(*), count(DISTINCT id), sum(hash(id, type, ts, received_at, name)) FROM events",
    "SELECT * FROM api_requests ORDER BY ALL",
    "SELECT * FROM tool_calls ORDER BY ALL",
    "SELECT * FROM sessions ORDER BY ALL",
    "SELECT * FROM runs ORDER BY ALL",
    "SELECT model, sum(cost_usd), sum(input_tokens), count(*) FROM api_requests GROUP BY ALL "
    "ORDER BY ALL",
]


def answers(store: Store) -> list[list[tuple[Any, ...]]]:
    return [query(store, sql) for sql in REPORTS]


def test_rebuild_gives_the_same_answers_as_incremental_loading(
    tmp_path: Path, journal: Path
) -> None:
    lines = list(fixture_lines()) + [custom(n) for n in range(200)]
    lines += [custom(7, event_id="ev-0000003")]  # a resend
    incremental = Store(str(tmp_path / "incremental.duckdb"), batch_bytes=2000)
    # Loaded in many small steps: lines, torn lines, segments closed and compressed.
    data = b"".join(lines)
    cuts = sorted(random.Random(4).sample(range(1, len(data)), 25))
    seq = 1
    for k, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(data)], strict=True)):
        append(segment(journal, seq), data[start:end])
        incremental.materialize(str(journal))
        if k % 9 == 8 and data[:end].endswith(b"\n"):
            seq += 1
    first = segment(journal, 1)
    segment(journal, 1, ".jsonl.gz").write_bytes(gzip.compress(first.read_bytes()))
    first.unlink()
    incremental.materialize(str(journal))
    expected = answers(incremental)
    assert expected[0][0][0] == len(journal_ids(journal))

    incremental.rebuild(str(journal))
    assert answers(incremental) == expected
    incremental.close()
    with Store(str(tmp_path / "at-once.duckdb")) as at_once:
        at_once.materialize(str(journal))
        assert answers(at_once) == expected


# -- the views, on a fixed event set -----------------------------------------------


def actual(
    inp: int, out: int, *, cache_read: int | None = None, cache_creation: int | None = None
) -> ev.Tokens:
    return ev.Tokens(
        source="actual", input=inp, output=out, cache_read=cache_read, cache_creation=cache_creation
    )


def fixture_lines() -> Iterator[bytes]:
    """Two sessions and a stray metric; the tests below know their numbers by hand."""
    m_a = ev.Agent(model="m-a", provider="anthropic")
    m_b = ev.Agent(model="m-b", provider="openai")
    s1: dict[str, Any] = {"session_id": "s1", "source": "claude-code"}
    s2: dict[str, Any] = {"session_id": "s2", "source": "codex"}
    yield from map(
        line,
        [
            ev.SessionStart(id="e01", ts=at(0), cwd="/r", reason="startup", **s1),
            ev.ApiRequest(
                id="e02",
                ts=at(1),
                agent=m_a,
                tokens=actual(100, 50, cache_read=1000, cache_creation=200),
                cost_usd=0.01,
                duration_ms=1000,
                **s1,
            ),
            ev.ToolCall(id="e03", ts=at(2), tool=ev.Tool(name="Bash", use_id="u1"), **s1),
            ev.ToolResult(
                id="e04",
                ts=at(3),
                tool=ev.Tool(name="Bash", use_id="u1", success=True),
                duration_ms=800,
                **s1,
            ),
            ev.ToolCall(id="e05", ts=at(4), tool=ev.Tool(name="Read", use_id="u2"), **s1),
            ev.ApiRequest(
                id="e06",
                ts=at(5),
                agent=m_b,
                tokens=actual(10, 5),
                cost_usd=0.002,
                duration_ms=500,
                **s1,
            ),
            ev.ApiRequest(id="e07", ts=at(6), agent=m_a, tokens=ev.Tokens(source="unknown"), **s1),
            ev.ToolResult(  # PostToolUse only: no call recorded
                id="e08",
                ts=at(7),
                tool=ev.Tool(name="Edit", use_id="u3", success=False, error="boom"),
                duration_ms=100,
                **s1,
            ),
            ev.AgentStart(
                id="e09", ts=at(8), agent=ev.Agent(model="m-a", type="Explore", id="x1"), **s1
            ),
            ev.Skill(id="e10", ts=at(9), name="pdf", success=True, duration_ms=1500, **s1),
            ev.Skill(id="e11", ts=at(10), name="pdf", success=False, duration_ms=500, **s1),
            ev.Skill(id="e12", ts=at(11), name="xlsx", success=True, **s1),
            ev.Error(
                id="e13",
                ts=at(12),
                message="429",
                category="api",
                fingerprint="api-429",
                confidence=0.9,
                agent=m_a,
                **s1,
            ),
            ev.AgentStop(
                id="e14",
                ts=at(20),
                agent=ev.Agent(model="m-a", type="Explore", id="x1"),
                duration_ms=12000,
                tokens=actual(300, 40, cache_read=5),
                success=True,
                **s1,
            ),
            ev.AgentStart(id="e15", ts=at(21), agent=ev.Agent(type="Plan", id="p1"), **s1),
            ev.Run(
                id="e16",
                ts=at(30),
                agent=m_a,
                task=ev.Task(id="T1", title="fix it", attempt_id="a1", attempt_index=0),
                attempt_id="a1",
                attempt_index=0,
                retry_count=ev.RetryCount(same_model=1),
                elapsed_ms=ev.Elapsed(wall=30000, llm=20000),
                tokens=ev.Tokens(source="estimated", estimated_total=5000, tokenizer="o200k"),
                outcome="done",
                **s1,
            ),
            ev.SessionEnd(
                id="e17", ts=at(60), reason="exit", duration_ms=60000, success=True, **s1
            ),
            ev.ApiRequest(
                id="e18",
                ts=at(3600),
                agent=m_b,
                tokens=actual(1, 2, cache_read=3),
                cost_usd=0.5,
                **s2,
            ),
            ev.ToolCall(id="e19", ts=at(3601), tool=ev.Tool(name="Bash"), **s2),
            ev.Run(
                id="e20",
                ts=at(3602),
                attempt_id="a2",
                attempt_index=1,
                retry_count=ev.RetryCount(reroute=2),
                elapsed_ms=ev.Elapsed(wall=100),
                tokens=actual(7, 8),
                outcome="redo",
                outcome_reason="tests failing",
                **s2,
            ),
            ev.Run(
                id="e21",
                ts=at(3603),
                attempt_id="a3",
                attempt_index=2,
                retry_count=ev.RetryCount(),
                elapsed_ms=ev.Elapsed(wall=50),
                tokens=ev.Tokens(source="unknown"),
                outcome="blocked",
                **s2,
            ),
            ev.Metric(id="e22", ts=at(3700), name="queue_depth", value=3, kind="gauge"),
        ],
    )


@pytest.fixture
def fixed(store: Store, journal: Path) -> Store:
    append(segment(journal, 1), b"".join(fixture_lines()))
    assert store.materialize(str(journal)) == 22
    return store


def ts(seconds: float) -> datetime:
    return at(seconds).replace(tzinfo=None)


def test_api_requests_view(fixed: Store) -> None:
    # The costs were reported (so no price source); e07 has no token counts: unknown.
    reported = ("reported", None)
    assert query(fixed, "SELECT * FROM api_requests ORDER BY timestamp") == [
        (ts(1), "s1", "m-a", 100, 50, 1000, 200, 0.01, 1000, *reported, "anthropic"),
        (ts(5), "s1", "m-b", 10, 5, 0, 0, 0.002, 500, *reported, "openai"),
        (ts(6), "s1", "m-a", None, None, None, None, None, None, "unknown", None, "anthropic"),
        (ts(3600), "s2", "m-b", 1, 2, 3, 0, 0.5, None, *reported, "openai"),
    ]


def test_agent_activations_view(fixed: Store) -> None:
    assert query(fixed, "SELECT * FROM agent_activations ORDER BY timestamp") == [
        (ts(8), "s1", "Explore", "x1", "start", None, None, None, None, None, "m-a"),
        (ts(20), "s1", "Explore", "x1", "stop", 300, 40, 5, 0, 12000, "m-a"),
        (ts(21), "s1", "Plan", "p1", "start", None, None, None, None, None, None),
    ]


def test_skill_activations_view(fixed: Store) -> None:
    assert query(fixed, "SELECT * FROM skill_activations ORDER BY timestamp") == [
        (ts(9), "s1", "pdf", 1500, True),
        (ts(10), "s1", "pdf", 500, False),
        (ts(11), "s1", "xlsx", None, True),
    ]


def test_tool_calls_view(fixed: Store) -> None:
    columns = [d[0] for d in fixed.cursor().execute("SELECT * FROM tool_calls").description]
    assert columns == [
        "tool_use_id",
        "session_id",
        "tool_name",
        "started",
        "ended",
        "duration_ms",
        "success",
        "error",
    ]
    assert query(fixed, "SELECT * FROM tool_calls ORDER BY started") == [
        ("u1", "s1", "Bash", ts(2), ts(3), 800, True, None),
        ("u2", "s1", "Read", ts(4), None, None, None, None),  # no result yet
        ("u3", "s1", "Edit", ts(6.9), ts(7), 100, False, "boom"),  # result only
        (None, "s2", "Bash", ts(3601), None, None, None, None),  # no use id
    ]


def test_a_use_takes_its_last_results_outcome_and_fails_as_the_errors_view_says(
    store: Store, journal: Path
) -> None:
    """A use that failed and then succeeded under the same use id has no error; one whose
    result has an error and no success flag is a failure in `sessions` as in `errors`."""
    s: dict[str, Any] = {"session_id": "t1", "source": "claude-code"}

    def result(n: int, use: str, seconds: float, **outcome: Any) -> ev.ToolResult:
        tool = ev.Tool(name="Bash", use_id=use, **outcome)
        return ev.ToolResult(id=f"t{n}", ts=at(seconds), tool=tool, **s)

    events = [
        result(1, "retried", 1, success=False, error="x"),
        result(2, "retried", 2, success=True),
        result(3, "errored", 3, error="boom"),  # (no success flag)
        result(4, "ok", 4, success=True),
        result(5, "failed", 5, success=False, error="no"),
    ]
    append(segment(journal, 1), b"".join(map(line, events)))
    assert store.materialize(str(journal)) == 5
    assert query(store, "SELECT tool_use_id, success, error FROM tool_calls ORDER BY started") == [
        ("retried", True, None),
        ("errored", None, "boom"),
        ("ok", True, None),
        ("failed", False, "no"),
    ]
    assert query(store, "SELECT count(*) FROM errors WHERE kind = 'tool'") == [(3,)]
    assert query(store, "SELECT tool_calls, tool_failures FROM sessions") == [(4, 2)]
    [(failures,)] = query(store, "SELECT failures FROM tool_reliability(days := 100000)")
    assert failures == 2


TOOL = ("tool", "rule", "Edit", "e08")


def test_errors_view(fixed: Store) -> None:
    """The error event keeps its producer's category, fingerprint and confidence; the
    failed tool result (e08) is classified by the rules (tests/test_errorclass.py holds
    the rules and the view's classification of every source)."""
    assert query(
        fixed,
        "SELECT timestamp, session_id, model, category, message, fingerprint, confidence, "
        "kind, category_source, tool_name, event_id FROM errors ORDER BY timestamp",
    ) == [
        (ts(7), "s1", None, "tool_failure", "boom", errorclass.fingerprint("boom"), 0.5, *TOOL),
        (ts(12), "s1", "m-a", "api", "429", "api-429", 0.9, "error", "producer", None, "e13"),
    ]


def test_runs_view(fixed: Store) -> None:
    assert query(
        fixed,
        "SELECT attempt_id, attempt_index, session_id, task_id, retry_same_model, retry_reroute, "
        "retries, elapsed_wall_ms, elapsed_llm_ms, elapsed_tools_ms, tokens_source, input_tokens, "
        "total_tokens, outcome, outcome_reason FROM runs ORDER BY timestamp",
    ) == [
        ("a1", 0, "s1", "T1", 1, 0, 1, 30000, 20000, None, "estimated", None, 5000, "done", None),
        ("a2", 1, "s2", None, 0, 2, 2, 100, None, None, "actual", 7, 15, "redo", "tests failing"),
        ("a3", 2, "s2", None, 0, 0, 0, 50, None, None, "unknown", None, None, "blocked", None),
    ]


def test_sessions_view(fixed: Store) -> None:
    rows = fixed.cursor().execute("SELECT * FROM sessions ORDER BY session_id")
    columns = [d[0] for d in rows.description]
    got = [dict(zip(columns, row, strict=True)) for row in rows.fetchall()]
    assert got == [
        {
            "session_id": "s1",
            "source": "claude-code",
            "cwd": "/r",
            "started": ts(0),
            "ended": ts(60),
            "duration_ms": 60000,
            "agents_used": 2,  # Explore, Plan
            "skills_used": 2,  # pdf, xlsx
            "api_requests": 3,
            "input_tokens": 110,
            "output_tokens": 55,
            "cache_read_tokens": 1000,
            "cache_creation_tokens": 200,
            "total_tokens": 1365,  # 1350 + 15; the unknown request has none
            "cost_usd": pytest.approx(0.012),  # the two known costs
            "unpriced_requests": 1,  # the unknown one
            "tool_calls": 3,  # u1, u2, u3
            "tool_failures": 1,  # u3
            "errors": 1,
            "success": True,
            "attempts": 1,
        },
        {
            "session_id": "s2",
            "source": "codex",
            "cwd": None,
            "started": ts(3600),  # no session_start: the first event
            "ended": ts(3603),  # no session_end: the last event
            "duration_ms": 3000,
            "agents_used": 0,
            "skills_used": 0,
            "api_requests": 1,
            "input_tokens": 1,
            "output_tokens": 2,
            "cache_read_tokens": 3,
            "cache_creation_tokens": 0,
            "total_tokens": 6,
            "cost_usd": 0.5,
            "unpriced_requests": 0,
            "tool_calls": 1,
            "tool_failures": 0,
            "errors": 0,
            "success": None,
            "attempts": 2,
        },
    ]


def test_a_session_without_a_start_takes_its_first_prompts_cwd(store: Store, journal: Path) -> None:
    """A session known from its transcript (import) has no session_start: the sessions
    view had no cwd for it. Its first prompt's attrs.cwd is it; a session_start's wins."""

    def prompt(n: int, session: str, cwd: str | None, seconds: float) -> bytes:
        attrs = {"cwd": cwd} if cwd else {"imported": True}
        return line(ev.Prompt(id=f"p{n}", ts=at(seconds), session_id=session, attrs=attrs))

    append(
        segment(journal, 1),
        prompt(1, "imported", "/w/second", 20)
        + prompt(2, "imported", "/w/first", 10)
        + prompt(3, "imported", None, 5)  # (no cwd: not the first one that has one)
        + line(ev.SessionStart(id="s", ts=at(0), session_id="hooked", cwd="/w/started"))
        + prompt(4, "hooked", "/w/prompted", 1)
        + prompt(5, "bare", None, 0),
    )
    store.materialize(str(journal))
    assert query(store, "SELECT session_id, cwd FROM sessions ORDER BY ALL") == [
        ("bare", None),
        ("hooked", "/w/started"),
        ("imported", "/w/first"),
    ]


def test_a_session_of_unpriced_requests_has_an_unknown_cost(store: Store, journal: Path) -> None:
    """A session whose every request has no price cost 0.0, as a free one: unknown must
    read as unknown (NULL), and a session without requests still costs 0."""
    unpriced = ev.ApiRequest(
        id="r",
        ts=at(0),
        session_id="mystery",
        agent=ev.Agent(model="m-z"),
        tokens=ev.Tokens(source="actual", input=5, output=5),
    )
    append(
        segment(journal, 1),
        line(unpriced) + line(ev.Prompt(id="p", ts=at(0), session_id="talk", length=3)),
    )
    store.materialize(str(journal))
    assert query(store, "SELECT cost_usd FROM api_requests") == [(None,)]  # (no price for m-z)
    got = "SELECT session_id, api_requests, cost_usd, unpriced_requests FROM sessions ORDER BY 1"
    assert query(store, got) == [("mystery", 1, None, 1), ("talk", 0, 0, 0)]
    overview = "SELECT total_cost_usd, unpriced_requests FROM session_overview('mystery')"
    assert query(store, overview) == [(None, 1)]


def test_the_analyzers_alerts_are_not_a_sessions_events(store: Store, journal: Path) -> None:
    """A stall alert, stamped stall-after past the session's last event, made it the
    session's end: a one-event session lasted 30 minutes."""
    append(
        segment(journal, 1),
        line(ev.Prompt(id="p", ts=at(0), session_id="quiet", length=3))
        + line(
            ev.Alert(
                id="a",
                ts=at(1800),
                session_id="quiet",
                source="telemetryd",
                severity="warning",
                kind="stall",
                message="no activity for 30 min",
            )
        ),
    )
    store.materialize(str(journal))
    assert query(store, "SELECT started, ended, duration_ms FROM sessions") == [(ts(0), ts(0), 0)]


def test_a_result_stamped_before_its_call_has_no_duration(store: Store, journal: Path) -> None:
    """Two clocks (a hook's and another path's): the result came 5 s "before" its call.
    Its duration from the timestamps was -5000 ms, and tool_reliability's p50 with it."""
    tool = ev.Tool(name="Bash", use_id="u-skew", success=True)
    append(
        segment(journal, 1),
        line(ev.ToolCall(id="c", ts=at(10), session_id="s", tool=tool))
        + line(ev.ToolResult(id="r", ts=at(5), session_id="s", tool=tool)),
    )
    store.materialize(str(journal))
    assert query(store, "SELECT duration_ms FROM tool_calls") == [(None,)]
    p50 = "SELECT p50_ms FROM tool_reliability(days := 100000) WHERE tool_name = 'Bash'"
    assert query(store, p50) == [(None,)]


def test_events_table_keeps_attrs_and_log_fields_as_json(store: Store, journal: Path) -> None:
    append(
        segment(journal, 1),
        line(
            ev.Log(
                id="l1",
                ts=at(0),
                level="warning",
                component="schédulér ✓",
                event="slow_tick",
                fields={"lag_ms": 250, "queue": "dé\nfault 锟斤拷"},
                attrs={"b": [1, 2], "a": {"x": True}},
            )
        ),
    )
    store.materialize(str(journal))
    assert query(
        store,
        "SELECT level, component, event, fields->>'$.queue', attrs->'$.a'->>'$.x', "
        "json_array_length(attrs->'$.b') FROM events",
    ) == [("warning", "schédulér ✓", "slow_tick", "dé\nfault 锟斤拷", "true", 2)]


# -- with the real daemon ------------------------------------------------------------


def test_materializes_the_running_daemons_journal(running_daemon: Daemon, tmp_path: Path) -> None:
    def send(first: int, count: int) -> dict[str, Any]:
        payload = b"".join(
            json.dumps(
                {"type": "tool_call", "id": f"d-{n}", "session_id": "s", "tool": {"name": "Bash"}}
            ).encode()
            + b"\n"
            for n in range(first, first + count)
        )
        reply: dict[str, Any] = exchange(running_daemon.events_socket, payload)[-1]
        return reply

    journal = str(running_daemon.journal_dir)
    with Store(str(tmp_path / "telemetry.duckdb")) as store:
        assert send(0, 500)["accepted"] == 500
        assert store.materialize(journal) == 500
        assert send(500, 300)["accepted"] == 300
        assert store.pending(journal) > 0
        assert store.materialize(journal) == 300
        assert store.pending(journal) == 0
        running_daemon.stop()
        running_daemon.start()  # a new segment: the old one is closed for good
        send(800, 1)
        assert store.materialize(journal) == 1
        assert store.stats()["segments_complete"] == 1
        assert (
            query(
                store,
                "SELECT count(*), count(DISTINCT id), min(received_at) IS NOT NULL "
                "FROM tool_calls JOIN events USING (session_id)",
            )[0][1]
            == 801
        )


# -- report macros, on the same fixed event set --------------------------------------

ALL = 100_000  # days: the fixture is older than a few days, younger than this


def test_cost_by_model(fixed: Store) -> None:
    assert query(fixed, "SELECT * FROM cost_by_model(days := ?)", [ALL]) == [
        ("m-b", 11, 7, pytest.approx(0.502), 2),
        ("m-a", 100, 50, 0.01, 2),  # the request with unknown tokens counts, with NULLs
    ]
    assert query(fixed, "SELECT * FROM cost_by_model()") == []  # the default: 7 days


def test_a_fraction_of_days_is_a_fraction_of_a_day(store: Store, journal: Path) -> None:
    """`days := 0.5` is the last twelve hours: it was rounded to a whole day (0.4: none,
    0.6: a day)."""
    now = datetime.now(UTC)

    def request(n: int, hours_ago: float) -> bytes:
        return line(
            ev.ApiRequest(
                id=f"r{n}",
                ts=now - timedelta(hours=hours_ago),
                agent=ev.Agent(model=f"m-{hours_ago}h"),
                tokens=ev.Tokens(source="actual", input=1, output=1),
            )
        )

    append(segment(journal, 1), request(1, 6) + request(2, 18))
    store.materialize(str(journal))
    recent = "SELECT model FROM cost_by_model(days := ?) ORDER BY 1"
    assert query(store, recent, [0.5]) == [("m-6h",)]
    assert query(store, recent, [0.2]) == []
    assert query(store, recent, [1]) == [("m-18h",), ("m-6h",)]


def test_agent_usage_summary_and_optimization_insights(fixed: Store) -> None:
    # m-a costs 0.01 per 1350 tokens (its one priced request); the Explore stop used
    # 300 + 40 + 5 + 0 = 345 tokens. The Plan agent never stopped: no invocation yet.
    est = 345 * 0.01 / 1350
    assert query(fixed, "SELECT * FROM agent_usage_summary(days := ?)", [ALL]) == [
        ("Explore", 1, 300, 40, 5, 12000.0, pytest.approx(est))
    ]
    assert query(fixed, "SELECT * FROM optimization_insights(days := ?)", [ALL]) == [
        ("Explore", pytest.approx(est), 340.0, 1, 131.1)  # 1000 * 40 / (300 + 5)
    ]


def test_skill_frequency(fixed: Store) -> None:
    assert query(fixed, "SELECT * FROM skill_frequency(days := ?)", [ALL]) == [
        ("pdf", 2, 1, 1000.0),
        ("xlsx", 1, 1, None),
    ]


def test_session_overview(fixed: Store) -> None:
    assert query(fixed, "SELECT * FROM session_overview(days := ?)", [ALL]) == [
        ("s2", 0, 0, 6, 0.5, 0),
        ("s1", 2, 2, 1365, pytest.approx(0.012), 1),
    ]
    assert query(fixed, "SELECT * FROM session_overview('s1', ?)", [ALL]) == [
        ("s1", 2, 2, 1365, pytest.approx(0.012), 1)
    ]
    named = "SELECT session_id FROM session_overview(session_id := 's2', days := ?)"
    assert query(fixed, named, [ALL]) == [("s2",)]
    # A session named is that session, however old (the fixture's are years old): the
    # default window left it out, and the answer was empty without a word why.
    assert query(fixed, "SELECT session_id FROM session_overview(session_id := 's1')") == [("s1",)]
    assert query(fixed, "SELECT count(*) FROM session_overview()") == [(0,)]


def test_recent_event_count(fixed: Store) -> None:
    assert query(fixed, "SELECT * FROM recent_event_count()") == [(0,)]
    assert query(fixed, "SELECT * FROM recent_event_count(seconds := 1e9)") == [(22,)]
    assert query(fixed, "SELECT * FROM recent_event_count('skill', 1e9)") == [(3,)]
    assert query(fixed, "SELECT * FROM recent_event_count('skill', 2000000000)") == [(3,)]


def test_report_macros_are_discoverable(fixed: Store) -> None:
    rows = query(
        fixed,
        "SELECT function_name, parameters, comment FROM duckdb_functions() "
        "WHERE function_type = 'table_macro' AND NOT internal ORDER BY 1",
    )
    assert [(name, params) for name, params, _ in rows] == [
        ("ab_results", ["experiment_id", "include_invalid"]),
        ("agent_usage_summary", ["days"]),
        ("attempt_events", ["days"]),
        ("attempts", ["days"]),
        ("cost_anomalies", ["factor", "min_sessions", "days", "since", "touched"]),
        ("cost_by_model", ["days"]),
        ("error_spikes", ["min_errors", "window_seconds", "since"]),
        ("guardrail_gaps", ["days"]),
        ("intervention_effectiveness", ["days"]),
        ("model_quality", ["days", "cost_weight", "error_weight"]),
        ("open_sessions", ["silent_seconds", "since"]),
        ("optimization_insights", ["days"]),
        ("provider_reliability", ["days"]),
        ("recent_event_count", ["type", "seconds"]),
        ("run_outcomes", ["days"]),
        ("session_overview", ["session_id", "days"]),
        ("skill_frequency", ["days"]),
        ("task_risk", ["days", "min_attempts", "min_tool_failures", "min_repeats"]),
        ("tool_loops", ["min_calls", "window_seconds", "since", "touched"]),
        ("tool_reliability", ["days"]),
        ("trace", ["trace_id"]),
    ]
    assert all(comment for _, _, comment in rows)


def test_trace_lists_events_in_span_order_with_depth(store: Store, journal: Path) -> None:
    def span(n: int, span_id: str | None, parent: str | None = None, trace: str = "t1") -> bytes:
        return line(
            ev.Custom(
                id=f"t{n}",
                ts=at(n),
                trace_id=trace,
                span_id=span_id,
                parent_span_id=parent,
                name=f"n{n}",
            )
        )

    append(
        segment(journal, 1),
        span(0, "A")
        + span(1, "B", "A")
        + span(2, "C", "A")
        + span(3, "D", "B")
        + span(4, None)
        + span(5, "A")
        + span(6, "E", "gone")  # its parent is not in the trace: a root
        + span(7, "A", trace="t2"),
    )
    store.materialize(str(journal))
    assert query(store, "SELECT depth, what, span_id FROM trace('t1')") == [
        (0, "n0", "A"),
        (0, "n5", "A"),
        (1, "n1", "B"),
        (2, "n3", "D"),
        (1, "n2", "C"),
        (0, "n6", "E"),
        (None, "n4", None),
    ]


@pytest.mark.asyncio
async def test_the_warning_says_a_rebuild_holds_the_store(tmp_path: Path, journal: Path) -> None:
    written = segment(journal, 1)
    append(written, b"".join(custom(n) for n in range(400)))
    service = small_batches_service(tmp_path, journal)
    await service.open()
    try:
        assert await service.refresh() == 400
        rebuilt: list[int] = []

        async def rebuild() -> None:
            rebuilt.append((await service.rebuild()).events)

        async with anyio.create_task_group() as tg:
            tg.start_soon(rebuild)
            with anyio.fail_after(30):
                while len(stored_ids(service.store)) in (0, 400):  # (dropped, then loading)
                    await anyio.sleep(0.005)
            assert await service.refresh(until=time.monotonic() + 0.05) == 0
            warning = await service.behind((str(written), written.stat().st_size))
            assert warning is not None and "(the store is being rebuilt)" in warning
        assert rebuilt == [400]
        assert await service.behind((str(written), written.stat().st_size)) is None
    finally:
        service.close()
