"""The store: the journal materialized into DuckDB, for SQL.

The journal is the source of truth; the database is derived from it and can be
rebuilt from it at any time. On disk, next to the journal::

    telemetry.duckdb   one DuckDB file; only the daemon opens it read-write
      meta             key/value facts: schema_version (SCHEMA_VERSION below), created_at,
                       views (the digest of the views and macros last created),
                       bad_lines (the journal lines loads left out since the last
                       rebuild, per segment, as JSON: `status` names them)
      segments         per journal segment (by sequence number): the file last loaded
                       (or, once retention kept only its usage, that file), loaded_bytes,
                       the length of its prefix of complete lines that is in `events`,
                       and `complete` once it is closed and loaded to its end
      copies           the lines loads dropped as twins of a stored event (its id and
                       received_at: a forwarded event sent again), with a segment and
                       offset of their batch, for exports (store/export.py)
      usage_quarters   the api_requests summed per UTC quarter hour, producer, agent and
                       model, kept in step with `events` (store/rollup.py): what daily,
                       weekly and monthly reports read
      events           one row per event id: the envelope and every type's fields in
                       typed columns (nested objects flattened: agent_model,
                       tokens_cache_read, ...), attrs and log fields as JSON; an
                       api_request's cost_usd, cost_source and price_source are set
                       as it loads (store/pricing.py), and again by :meth:`Store.reprice`
      views, macros    api_requests, sessions, ... (sql/views.sql, sql/macros.sql), and
                       the error rules' macros (errorclass.py) that the errors view uses
    load/batch-*.jsonl   journal lines being loaded (transient copies, or read-only hard
                         links of whole closed segments: the only files DuckDB may open,
                         so no SQL can write the journal, nor read the rest of it)

The tables are in ``sql/schema.sql``. A database whose schema_version differs
from this module's is not migrated: :attr:`Store.needs_rebuild` says so, and the
caller runs :meth:`Store.rebuild`. Views and macros are recreated at the first open
by a version whose views differ (their digest is in ``meta``).

``events`` is one wide table without indexes: reports scan a few columns of it
(DuckDB stores each column apart, compressed, with min/max per row group of
:data:`ROW_GROUP_ROWS` rows, a quarter of DuckDB's default; see :func:`connect`),
and rows arrive roughly in journal order, so filters on time skip most row groups.
Measured on 10M events: cost_by_model ~80 ms warm on a busy 2-CPU machine; one
session's row of the `sessions` view ~10 ms.

Materialization (:meth:`Store.materialize`) is incremental and exactly-once. It
reads each segment (daemon/segments.py: gzipped ones decompressed here) from its
``loaded_bytes`` on, copies complete lines (a torn last line waits until its
newline is written) into a batch file in ``load/`` (``os.copy_file_range`` for
plain segments; a closed segment loaded from start to end is hard-linked there
instead where the link cannot be written through, see :meth:`_Batch.link`), and
loads each batch with DuckDB's ``read_json`` and explicit column types
(``sql/load.sql``), recording every segment's new ``loaded_bytes`` in the same
transaction as the rows: after a crash at any point, rows and offsets agree.
``loaded_bytes`` counts uncompressed bytes, so it means the same for a segment
before and after compression.

Batches are bounded in bytes so that a load fits DuckDB's memory limit whatever
the events hold: the caller sizes them from ``memory-limit``, and since a long
string costs DuckDB several times its size (2,000 events of 15 KB exhausted 256
MB), a load that runs out of memory is rolled back and retried with batches half
the size: progress already committed stays, and the size grows back after many
good batches. Many small segments share a batch, as every commit costs a few
milliseconds.

A damaged ``.gz`` segment (truncated, empty, corrupt) never blocks the others:
its good prefix is loaded and written back as a plain segment, the damaged file
goes to ``quarantine/<name>.damaged``, and `status` lists it. A line that is not a JSON
object (a segment damaged on disk) costs only itself: the batch is loaded again without
it, and the segment and the line's number in it are logged and listed in `status`.

Events are deduplicated by ``id``: of the rows sharing an id, the one stored
first stays; within one batch, the one received first. The check runs after the
insert, on the new rows only: one pass over their ids says whether two of them are
the same, and their range whether a stored id lies within it (DuckDB skips the row
groups whose id range cannot match, which for time-ordered ids, the UUIDv7s that the
daemon and `telemetryctl send` assign, is nearly all of them); only then are they
joined with the stored ids and the extra rows deleted.

Every method blocks (DuckDB releases the GIL while it works): the daemon calls
them from a worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar

import duckdb

from telemetryd import errorclass
from telemetryd.adapters.pricing import Pricer
from telemetryd.daemon import segments
from telemetryd.daemon.segments import SUFFIX
from telemetryd.errors import TelemetryError
from telemetryd.store import pricing, rollup

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 6  # 2: prompt_length; 3: price_source; 4: tool_input_digest, budget;
# 5: usage_quarters; 6: copies
BATCH_BYTES = 256 * 1024 * 1024  # journal bytes per transaction (one longer line goes alone)
MIN_BATCH_BYTES = 64 * 1024  # out of memory below this: the load fails and is reported
# Rows per row group that loads write (DuckDB's default is 122,880). A load holds the row
# group it is filling, uncompressed, for each thread: ~60 MB of ordinary events at the
# default, a quarter of that here, which lets loads run within a small memory limit
# (measured on 1M events, 2 threads: at 160 MB, 3.1 s where the default row groups
# spill to disk and take 4.9 s; at 128 MB, 3.2 s where they run out of memory and
# halve their batches down to 16 MB, 14 s). Reports read a few columns of many row
# groups either way; their min/max skip more of the smaller ones.
ROW_GROUP_ROWS = 30_720
_GROW_AFTER = 16  # good batches in a row before a halved batch size doubles again
_COPY_CHUNK = 8 * 1024 * 1024
_WRITABLE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH  # a segment with any is copied
_INFLATE_CHUNK = 1024 * 1024
_SHOWN_LINES = 10  # line numbers kept per segment of the lines loads left out


def connect(path: str) -> duckdb.DuckDBPyConnection:
    """A connection to the database file ``path``, attached to an in-memory DuckDB (and its
    default from then on, under the name DuckDB gives it when it opens the file itself)
    so that rows go in with :data:`ROW_GROUP_ROWS` to a row group: a setting of the attach,
    not of the file, which other readers open as usual."""
    con = duckdb.connect()
    try:
        name = _catalog(path)
        con.execute(f"ATTACH {_literal(path)} AS {name} (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        con.execute(f"USE {name}")
        # Past the memory limit, loads spill here (DuckDB's own choice for a database
        # file; for an in-memory one it would be ./.tmp, wherever the process runs).
        con.execute(f"SET GLOBAL temp_directory = {_literal(path + '.tmp')}")
    except BaseException:
        con.close()
        raise
    return con


def _catalog(path: str) -> str:
    """The catalog name DuckDB gives a database file it opens (its name without the
    extension), quoted; another where an attached database may not take that name (the
    in-memory database's own, DuckDB's reserved ones)."""
    name = os.path.splitext(os.path.basename(path))[0] or "telemetry"
    if name.lower() in _TAKEN_CATALOGS:
        name += "_db"
    return _identifier(name)


_TAKEN_CATALOGS = frozenset({"memory", "system", "temp", "main"})


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def batch_bytes_for(memory_limit: int) -> int:
    """The batch size to start with for a DuckDB memory limit (bytes). Big batches load
    fastest (past a row group, DuckDB writes rows straight to the file instead of the
    WAL: measured on 1M events, 256 MB batches load 2-3x faster than 16 MB ones), and
    ordinary events fit the limit at one batch per limit; events with long strings cost
    DuckDB several times their size and make the first batches run out of memory, which
    halves the size until they fit (:meth:`Store._materialize`)."""
    return max(MIN_BATCH_BYTES, min(BATCH_BYTES, memory_limit))


def _sql(name: str) -> str:
    return resources.files("telemetryd").joinpath("sql", name).read_text(encoding="utf-8")


_LOAD = _sql("load.sql")
_VIEWS = _sql("views.sql")
_MACROS = _sql("macros.sql")
_ERROR_MACROS = errorclass.sql_macros()  # the error rules, which the errors view uses
_VIEWS_DIGEST = hashlib.sha256(
    (_ERROR_MACROS + "\0" + _VIEWS + "\0" + _MACROS).encode()
).hexdigest()

# Whether this batch's rows (rowid >= $first) may share an id with each other or with
# a stored row, in two cheap steps that spare the join below nearly always: whether an
# id repeats among them, and their range; then whether a stored id lies in that range
# (given as constants, the range lets DuckDB skip row groups by their min/max).
_NEW_IDS = """
    SELECT count(*) > count(DISTINCT id), min(id), max(id) FROM events WHERE rowid >= $first
"""
_STORED_IN_RANGE = "SELECT true FROM events WHERE rowid < $first AND id BETWEEN $lo AND $hi"
# The ids of this batch's rows that are stored more than once (rows from rowid $first on
# are this batch's; the semi join reads only the row groups whose ids could match).
_DUPLICATES = """
    SELECT id FROM events
    WHERE id IN (SELECT id FROM events WHERE rowid >= $first)
    GROUP BY id HAVING count(*) > 1
"""
# Keep one row per duplicated id: a stored one, else the one received first.
_DROP_DUPLICATES = f"""
    DELETE FROM events WHERE rowid IN (
        SELECT rowid FROM (
            SELECT rowid, row_number() OVER (
                PARTITION BY id ORDER BY rowid >= $first, received_at, rowid
            ) AS n
            FROM events WHERE id IN ({_DUPLICATES})
        ) WHERE n > 1
    )
"""
_ANY_DUPLICATE = f"SELECT true FROM ({_DUPLICATES})"
# Before they go: the rows _DROP_DUPLICATES drops that are twins of the row it keeps
# (the same received_at: a forwarded event sent again), as `copies` of the batch.
_RECORD_COPIES = f"""
    INSERT INTO copies
    SELECT id, received_at, $seq, $bytes FROM (
        SELECT id, received_at, row_number() OVER w AS n, first_value(received_at) OVER w AS kept
        FROM events WHERE id IN ({_DUPLICATES})
        WINDOW w AS (PARTITION BY id ORDER BY rowid >= $first, received_at, rowid)
    ) WHERE n > 1 AND received_at = kept
"""
_SAVE_OFFSET = "INSERT OR REPLACE INTO segments VALUES ($seq, $name, $bytes, $complete, $now)"
# Retention: the events with these ids (read from the doomed segments in Python).
_FORGET = "DELETE FROM events WHERE id IN (SELECT unnest($ids))"
_COUNT_TYPES = (
    "SELECT count(*) FROM events WHERE id IN (SELECT unnest(CAST($ids AS VARCHAR[]))) "
    "AND type IN (SELECT unnest(CAST($types AS VARCHAR[])))"
)
# Compaction: the events with these ids, but for those of the kept types.
_FORGET_OTHERS = (
    "DELETE FROM events WHERE id IN (SELECT unnest(CAST($ids AS VARCHAR[]))) "
    "AND type NOT IN (SELECT unnest(CAST($types AS VARCHAR[])))"
)


class _Stopped(Exception):
    """A load's ``stop`` (or its deadline) said to end it after the batch just committed."""


@dataclass
class _Pace:
    """A query's load (:meth:`Store.materialize` with ``until``): its deadline, its first
    batch's size, and when the batch being loaded began."""

    until: float
    first: int
    since: float


def paced(size: int, took: float, left: float, first: int, most: int) -> int:
    """The size of a query's next batch, after one of ``size`` bytes took ``took``
    seconds with ``left`` seconds to its deadline: 0, stop, when another batch as long
    would not end in time with as much again to spare (a batch cannot be interrupted,
    and on a busy machine one took 5-11 s); else what that pace loads in half the time
    left, at least the load's ``first`` batch and at most ``most``."""
    if left <= 0 or left < 2 * took:
        return 0
    return min(most, max(first, int(size / max(took, 1e-6) * left / 2)))


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """What :meth:`Store.rebuild` did: the events stored now, and before (None: the
    database was of another schema version), and the damage the journal showed: the
    segments salvaged and the lines left out (as in :meth:`Store.stats`)."""

    events: int
    events_before: int | None
    salvaged: list[dict[str, Any]]
    bad_lines: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Piece:
    """What to load of one segment: its content from ``start`` on, up to ``end`` (the
    last line end of a plain segment; None for a compressed one: to its end)."""

    seq: int
    path: str
    start: int
    end: int | None
    size: int  # the plain file's size (0 for a compressed one)
    closed: bool  # never written again: once read to its end, the segment is complete


class _Batch:
    """Complete journal lines gathered in the load directory, and how far they take each
    segment: ``{seq: (file name, loaded_bytes, complete)}``. Lines are copied into one
    file of the batch's own; a closed plain segment that is loaded whole is hard-linked
    instead where no one can write through the link (:meth:`link`; no copy: DuckDB
    reads the segment's own pages)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.fd, self.path = tempfile.mkstemp(prefix="batch-", suffix=SUFFIX, dir=directory)
        self.size = 0  # bytes of lines in the batch, copied and linked
        self.copied = 0  # of them in the batch's own file
        self.links: list[str] = []
        self.marks: dict[int, tuple[str, int, bool]] = {}
        self.paths: dict[int, str] = {}  # the file each marked segment is read from
        self.grew: int | None = None  # a segment whose lines are in the batch
        self._marked_size = 0

    @property
    def files(self) -> list[str]:
        return ([self.path] if self.copied else []) + self.links

    def mark(self, piece: _Piece, name: str, loaded: int, complete: bool) -> None:
        self.marks[piece.seq] = (name, loaded, complete)
        self.paths[piece.seq] = piece.path
        if self.size > self._marked_size:  # (lines came in since the last mark: this one's)
            self.grew, self._marked_size = piece.seq, self.size

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)
        self.copied += len(data)

    def copy(self, path: str, start: int, end: int) -> None:
        _copy_range(path, self.fd, start, end)
        self.size += end - start
        self.copied += end - start

    def link(self, path: str, size: int) -> bool:
        """Add the whole file ``path`` (``size`` bytes, never written again) as a link;
        False where it must not or cannot be one (the caller copies it then).

        load/ is the one directory DuckDB may open files in (store/sandbox.py), for
        reading and for writing alike, and a link is the segment itself: were the
        sandbox ever to let a query write a file there, a writable link would be a way
        to write the journal. So a segment is linked only where nothing can write
        through the link: it is read-only (the daemon makes a segment it closes 0400,
        daemon/segments.py) and this process is not root (root writes read-only files
        too). A segment still writable (left by a crashed daemon, until the next start
        makes it read-only) and every load run as root are copied. The mode is read off
        the link itself, the same inode, after it is made: no change to the segment's
        path in between can slip past (:meth:`may_link` says beforehand whether to try)."""
        if not self.may_link(path):
            return False
        target = f"{self.path[: -len(SUFFIX)]}-{len(self.links)}{SUFFIX}"
        try:
            os.link(path, target)
        except OSError:  # another file system, or links not allowed
            return False
        if os.lstat(target).st_mode & _WRITABLE:
            os.unlink(target)
            return False
        self.links.append(target)
        self.size += size
        return True

    @staticmethod
    def may_link(path: str) -> bool:
        """Whether :meth:`link` would link ``path`` (unless the file system refuses)."""
        try:
            return os.geteuid() != 0 and not os.stat(path).st_mode & _WRITABLE
        except OSError:
            return False

    def reset(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self._unlink_links()
        self.size = self.copied = self._marked_size = 0
        self.marks = {}
        self.paths = {}
        self.grew = None

    def close(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._unlink_links()

    def _unlink_links(self) -> None:
        for link in self.links:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
        self.links = []


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        value = datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


class Store:
    """The read-write DuckDB database derived from the journal (see the module docstring).

    One instance owns the file; DuckDB locks it against every other process. Methods
    are serialized by a lock; :meth:`cursor` gives other threads their own connection.
    """

    def __init__(
        self,
        path: str,
        *,
        batch_bytes: int = BATCH_BYTES,
        quarantine_dir: str | None = None,
        connection: duckdb.DuckDBPyConnection | None = None,
        pricer: Pricer | None = None,
    ) -> None:
        """``connection``: ``path`` opened already by :func:`connect` (handed over);
        ``pricer``: the prices loads compute costs with (store/pricing.py; by default
        genai-prices' without overrides)."""
        self.path = path
        self.pricer = pricer or Pricer()
        self.batch_bytes = batch_bytes  # the size batches return to after running short
        self._most = batch_bytes  # ... and grow back to (a run's own: materialize)
        self.last_materialized: float | None = None  # Unix time the last run finished
        self.caught_up = True  # whether the last run loaded everything (not stopped)
        self._stop: Callable[[], bool] | None = None  # the running load's (materialize)
        here = os.path.dirname(os.path.abspath(path))
        self.load_dir = os.path.join(here, "load")
        self.quarantine_dir = quarantine_dir or os.path.join(here, "quarantine")
        self.salvaged: list[dict[str, Any]] = []  # damaged segments met by this process
        # Lines that loads left out (not JSON), per segment, since the last rebuild (kept
        # in meta too: a later worker, or daemon, reports them as well)
        self.bad_lines: list[dict[str, Any]] = []
        self._limit = batch_bytes  # the batch size now
        self._good_batches = 0
        self._pace: _Pace | None = None  # a query's load's (materialize)
        self._ran_short = False  # memory ran short in the last run (materialize)
        self._lock = threading.Lock()
        # Left by a crash; nobody else can be using this database. Private: only
        # this process (and DuckDB, for reading) opens what is in it.
        shutil.rmtree(self.load_dir, ignore_errors=True)
        os.makedirs(self.load_dir, mode=0o700, exist_ok=True)
        self._con = connection if connection is not None else connect(path)
        # Loads need not keep file order within a batch (dedup does not rely on it);
        # dropping it lets DuckDB insert from all threads. Only this connection.
        self._con.execute("SET SESSION preserve_insertion_order = false")
        # The Python client turns DuckDB's progress bar on (printed to stdout) for the
        # connection it opens; a daemon prints nothing. (Cursors have it off.)
        self._con.execute("SET enable_progress_bar = false")
        [(catalog,)] = self._con.execute("SELECT current_database()").fetchall()
        self._use_catalog = "USE " + _identifier(catalog)
        self._reader = self._use(self._con.cursor())
        self._reader_lock = threading.Lock()
        self.needs_rebuild = False
        self._open_schema()

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._reader.close()
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to this database, for one thread (queries, status)."""
        with self._reader_lock:
            return self._use(self._reader.cursor())

    def _use(self, cursor: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """``cursor`` with the database file as its default (a new connection starts in
        the in-memory database that the file is attached to)."""
        cursor.execute(self._use_catalog)
        return cursor

    def _open_schema(self) -> None:
        tables = {
            row[0]
            for row in self._con.execute(
                "SELECT table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND schema_name = 'main'"
            ).fetchall()
        }
        if not tables:
            self._in_transaction(self._create_schema)
            return
        version = views = None
        if "meta" in tables:
            facts = dict(
                self._con.execute(
                    "SELECT key, value FROM meta WHERE key IN ('schema_version', 'views')"
                ).fetchall()
            )
            version, views = facts.get("schema_version"), facts.get("views")
        if version != str(SCHEMA_VERSION):
            log.warning(
                "%s has store schema version %s, this daemon uses %d: it needs a rebuild",
                self.path,
                version,
                SCHEMA_VERSION,
            )
            self.needs_rebuild = True
            return
        if views != _VIEWS_DIGEST:  # (unchanged ones cost an open nothing, and write nothing)
            self._in_transaction(self._create_views)
        self.bad_lines = self._kept_bad_lines()

    def _kept_bad_lines(self) -> list[dict[str, Any]]:
        """The reports of lines left out that an earlier worker or daemon kept in meta
        (a bad line is met once: its segment's offset is past it afterwards)."""
        rows = self._con.execute("SELECT value FROM meta WHERE key = 'bad_lines'").fetchall()
        try:
            kept = json.loads(rows[0][0]) if rows else []
        except ValueError:
            return []
        return [report for report in kept if isinstance(report, dict)]

    def _create_schema(self) -> None:
        self._con.execute(_sql("schema.sql"))
        self._con.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [["schema_version", str(SCHEMA_VERSION)], ["created_at", _iso(_utcnow())]],
        )
        self._create_views()

    def _create_views(self) -> None:
        """Views and report macros: replaced at the first open of a version whose views
        differ (recorded in meta as their digest), so they need no schema version bump."""
        self._con.execute(_ERROR_MACROS)
        self._con.execute(_VIEWS)
        self._con.execute(_MACROS)
        self._con.execute("INSERT OR REPLACE INTO meta VALUES ('views', ?)", [_VIEWS_DIGEST])

    def _drop_everything(self) -> None:
        """Drop every table, view and macro of the main schema (any schema version's)."""
        con = self._con
        macros = con.execute(
            "SELECT DISTINCT function_name, function_type FROM duckdb_functions() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "AND NOT internal "
            "AND function_type IN ('macro', 'table_macro')"
        ).fetchall()
        for name, kind in macros:
            con.execute(f'DROP MACRO {"TABLE " if kind == "table_macro" else ""}"{name}"')
        views = con.execute(
            "SELECT view_name FROM duckdb_views() "
            "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal"
        ).fetchall()
        for (name,) in views:
            con.execute(f'DROP VIEW "{name}"')
        tables = con.execute(
            "SELECT table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = 'main'"
        ).fetchall()
        for (name,) in tables:
            con.execute(f'DROP TABLE "{name}" CASCADE')

    def _in_transaction(self, work: Callable[[], T]) -> T:
        self._con.execute("BEGIN TRANSACTION")
        try:
            result = work()
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")
        return result

    # -- materialization --------------------------------------------------------

    def materialize(
        self,
        journal_dir: str,
        stop: Callable[[], bool] | None = None,
        batch_bytes: int | None = None,
        until: float | None = None,
    ) -> int:
        """Load every complete journal line not loaded yet; return the new events stored
        (duplicates of stored ids do not count). Raises TelemetryError when the store
        needs a rebuild, and duckdb.Error or OSError when loading fails (nothing of the
        failed batch is kept; the next run retries it).

        ``stop`` is asked after each batch committed: when it says so, loading ends
        there, and the rest waits for the next run (:attr:`caught_up` is then False).
        ``batch_bytes`` caps this run's batches; with ``until`` (a ``time.monotonic()``
        deadline: a query's load), only its first one, and the next ones are paced
        (:func:`paced`): as big as the pace of the last lets them end in time, up to the
        size the store had, and the load stops when another batch as long as the last
        would not. (Every batch costs some work of its own, a commit above all: a load of
        150,000 events took 1.8 s in batches of 4 MB, 1.2 s doubling from 4 MB, and
        0.55 s in one.)"""
        with self._lock:
            if self.needs_rebuild:
                raise TelemetryError(f"{self.path}: store schema differs; rebuild it first")
            self._stop = stop
            limit = self._limit
            capped = min(limit, batch_bytes or limit)
            self._limit = capped
            # How far its batches may grow: a plain run's, back to the store's own size
            # after memory ran short (_GROW_AFTER); a capped one's, to its cap, or when
            # paced to the size the store had.
            if batch_bytes is None:
                self._most = self.batch_bytes
            else:
                self._most = limit if until is not None else capped
            self._pace = None if until is None else _Pace(until, capped, time.monotonic())
            self._ran_short = False
            try:
                return self._materialize(journal_dir)
            finally:
                self._stop = None
                self._pace = None
                self._most = self.batch_bytes
                if batch_bytes is not None and not self._ran_short:
                    # a capped run's sizes were its own (memory running short is not)
                    self._limit = limit

    def rebuild(self, journal_dir: str) -> Rebuilt:
        """Drop everything and load the whole journal again; say what it stored, and the
        damage it met on the way (which may be why the database holds fewer events now).

        The empty schema is committed first and the journal then loaded batch by batch,
        so a crash halfway leaves a store that the next :meth:`materialize` completes;
        meanwhile queries see the store partly loaded.
        """
        with self._lock:
            started = time.monotonic()
            before = None
            if not self.needs_rebuild:
                [(before,)] = self._con.execute("SELECT count(*) FROM events").fetchall()
            salvaged = len(self.salvaged)

            def recreate() -> None:
                self._drop_everything()
                self._create_schema()

            self._in_transaction(recreate)
            self.needs_rebuild = False
            self.bad_lines = []  # (the load finds them again)
            count = self._materialize(journal_dir)
            self._con.execute("CHECKPOINT")  # give the old tables' space back for reuse
            log.info(
                "store rebuilt from %s: %d events (%s before) in %.1f s",
                journal_dir,
                count,
                "?" if before is None else before,
                time.monotonic() - started,
            )
            return Rebuilt(
                events=count,
                events_before=before,
                salvaged=self.salvaged[salvaged:],
                bad_lines=[dict(report) for report in self.bad_lines],
            )

    def _materialize(self, journal_dir: str) -> int:
        """Load in batches; when DuckDB runs out of memory, retry with batches half the
        size (what earlier batches committed stays)."""
        loaded = [0]
        self.caught_up = False
        while True:
            try:
                self._load_journal(journal_dir, loaded)
                self.caught_up = True
                break
            except _Stopped:
                break
            except duckdb.OutOfMemoryException as exc:
                if self._limit <= MIN_BATCH_BYTES:
                    raise
                self._limit = max(MIN_BATCH_BYTES, self._limit // 2)
                self._good_batches = 0
                self._ran_short = True
                if self._pace is not None:  # (paced no bigger than what fit, this run)
                    self._most = self._limit
                log.warning(
                    "loading ran out of DuckDB memory (%s); going on with batches of %d bytes",
                    str(exc).splitlines()[0],
                    self._limit,
                )
        self.last_materialized = time.time()
        return loaded[0]

    def _offsets(self, con: duckdb.DuckDBPyConnection) -> dict[int, tuple[int, bool]]:
        rows = con.execute("SELECT seq, loaded_bytes, complete FROM segments").fetchall()
        return {seq: (loaded, complete) for seq, loaded, complete in rows}

    def _plan(self, journal_dir: str) -> list[_Piece]:
        """What to load, in journal order."""
        offsets = self._offsets(self._con)
        found = segments.chosen(journal_dir)
        plan = []
        for index, (seq, path) in enumerate(found):
            loaded, complete = offsets.get(seq, (0, False))
            if complete:
                continue
            if segments.is_compressed(path):  # closed by definition; read to its end
                plan.append(_Piece(seq, path, loaded, None, 0, True))
                continue
            try:
                size = os.stat(path).st_size
                if size < loaded:
                    log.warning(
                        "journal segment %s is %d bytes, shorter than the %d already "
                        "loaded; skipped (a rebuild reloads it)",
                        path,
                        size,
                        loaded,
                    )
                    continue
                end = segments.last_line_end(path, loaded, size)
            except FileNotFoundError:
                continue  # deleted meanwhile (retention)
            # Only the newest segment can still grow: the writer never reopens older ones.
            closed = index < len(found) - 1
            if end > loaded or closed:
                plan.append(_Piece(seq, path, loaded, end, size, closed))
        return plan

    def _load_journal(self, journal_dir: str, loaded: list[int]) -> None:
        batch = _Batch(self.load_dir)
        try:
            for piece in self._plan(journal_dir):
                if piece.end is None:
                    self._gather_compressed(piece, batch, loaded)
                else:
                    self._gather_plain(piece, batch, loaded)
            if batch.marks:
                self._commit(batch, loaded)
        finally:
            batch.close()

    def _gather_plain(self, piece: _Piece, batch: _Batch, loaded: list[int]) -> None:
        """Add the complete lines of a plain segment to batches, committing full ones."""
        assert piece.end is not None
        name = os.path.basename(piece.path)
        pos = piece.start
        # A closed segment loaded whole goes in as a link, in a batch of its own if the
        # current one has no room left for it; a longer one, or one that must not be
        # linked, is copied (in parts where the batch has no room for all of it).
        if (
            piece.closed
            and 0 == piece.start < piece.end == piece.size <= self._limit
            and batch.may_link(piece.path)
        ):
            if batch.size + piece.size > self._limit:
                self._commit(batch, loaded)
            if batch.link(piece.path, piece.size):
                pos = piece.end
                batch.mark(piece, name, pos, True)
                if batch.size >= self._limit:
                    self._commit(batch, loaded)
        while pos < piece.end:
            room = self._limit - batch.size
            cut = (
                piece.end
                if piece.end - pos <= room
                else segments.last_line_end(piece.path, pos, pos + room)
            )
            if cut == pos:  # not even one line fits in what is left
                if batch.size:
                    self._commit(batch, loaded)
                    continue
                cut = segments.next_line_end(piece.path, pos, piece.end)  # a long line goes alone
            batch.copy(piece.path, pos, cut)
            pos = cut
            batch.mark(piece, name, pos, piece.closed and pos == piece.end)
            if batch.size >= self._limit:
                self._commit(batch, loaded)
        if piece.closed:
            if piece.end < piece.size:
                log.warning(
                    "journal segment %s is closed but ends in %d bytes without a newline; "
                    "they are not events and are left out",
                    piece.path,
                    piece.size - piece.end,
                )
            batch.mark(piece, name, pos, True)

    def _gather_compressed(self, piece: _Piece, batch: _Batch, loaded: list[int]) -> None:
        """Like :meth:`_gather_plain`, inflating a gzipped segment on the way. It is read
        through once first: a damaged one is salvaged (see the module docstring), and
        its trusted prefix loaded as the plain segment it becomes."""
        damage, good = segments.check(piece.path)
        if damage is not None:
            plain = self._salvage(piece.path, good, damage)
            start = min(piece.start, good)
            self._gather_plain(_Piece(piece.seq, plain, start, good, good, True), batch, loaded)
            return
        name = os.path.basename(piece.path)
        pos = 0  # uncompressed offset of the start of `carry`
        carry = b""
        with segments.open_content(piece.path) as content:
            while block := content.read(_INFLATE_CHUNK):
                if pos + len(carry) + len(block) <= piece.start:  # loaded before
                    pos += len(block)
                    continue
                data = carry + block
                if pos < piece.start:
                    data = data[piece.start - pos :]
                    pos = piece.start
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                pos = self._add_lines(piece, name, data[:cut], pos, batch, loaded)
        if carry:
            log.warning(
                "journal segment %s ends in %d bytes without a newline; left out",
                piece.path,
                len(carry),
            )
        batch.mark(piece, name, pos, True)

    def _add_lines(
        self, piece: _Piece, name: str, data: bytes, pos: int, batch: _Batch, loaded: list[int]
    ) -> int:
        """Put ``data`` (complete lines, starting at offset ``pos``) into batches."""
        view = memoryview(data)
        while view:
            room = self._limit - batch.size
            take = len(view)
            if take > room:
                take = bytes(view[:room]).rfind(b"\n") + 1
                if not take:  # not even one line fits in what is left
                    if batch.size:
                        self._commit(batch, loaded)
                        continue
                    take = bytes(view).find(b"\n") + 1  # a long line goes alone
            batch.write(bytes(view[:take]))
            view = view[take:]
            pos += take
            batch.mark(piece, name, pos, False)
            if batch.size >= self._limit:
                self._commit(batch, loaded)
        return pos

    def _salvage(self, path: str, good: int, damage: BaseException) -> str:
        """Keep the first ``good`` bytes of the damaged ``path`` as a plain segment and
        move ``path`` to quarantine; return the plain segment's path."""
        plain = path[: -len(".gz")]
        directory = os.path.dirname(path)
        info = os.stat(path)
        tmp = os.path.join(directory, "." + os.path.basename(plain) + ".salvage")
        with open(tmp, "wb") as out:
            left = good
            with contextlib.suppress(*segments.DAMAGE_ERRORS), segments.open_content(path) as src:
                while left > 0 and (block := src.read(min(_INFLATE_CHUNK, left))):
                    out.write(block)
                    left -= len(block)
            out.flush()
            os.fsync(out.fileno())
        kept = sum(1 for _ in segments.iter_ids(tmp))  # (events: lines with an id)
        os.utime(tmp, ns=(info.st_atime_ns, info.st_mtime_ns))  # retention judges by age
        if os.path.exists(plain):  # compression was under way: the plain file is whole
            os.unlink(tmp)
        else:
            os.rename(tmp, plain)
            _fsync_dir(directory)
        os.makedirs(self.quarantine_dir, mode=0o700, exist_ok=True)
        target = os.path.join(self.quarantine_dir, os.path.basename(path) + ".damaged")
        shutil.move(path, target)
        _fsync_dir(directory)
        report = {
            "segment": os.path.basename(path),
            "kept_bytes": good,
            "kept_events": kept,
            "quarantined": target,
            "error": f"{type(damage).__name__}: {damage}",
            "at": _iso(time.time()),
        }
        self.salvaged.append(report)
        log.error(
            "journal segment %s is damaged (%s): its first %d bytes (%d events), the part "
            "that can be trusted, are kept as %s; the damaged file is in %s",
            path,
            report["error"],
            good,
            kept,
            os.path.basename(plain),
            target,
        )
        return plain

    def _commit(self, batch: _Batch, loaded: list[int]) -> None:
        """Load the batch and record its offsets in one transaction; retry once skipping
        malformed lines if DuckDB cannot read them (a journal damaged on disk), and say
        which they were (:meth:`_report_bad_lines`)."""
        files = batch.files
        try:
            count = self._in_transaction(lambda: self._insert(batch, files, lenient=False))
        except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
            starts = self._offsets(self._con)  # (where the batch begins: it was rolled back)
            count = self._in_transaction(lambda: self._insert(batch, files, lenient=True))
            self._report_bad_lines(batch, starts, exc)
        loaded[0] += count
        size = batch.size
        batch.reset()
        pace = self._pace
        if pace is not None:
            now = time.monotonic()
            following = paced(size, now - pace.since, pace.until - now, pace.first, self._most)
            if not following:
                raise _Stopped
            self._limit = following
            pace.since = now
        elif size >= self._limit // 2 and self._limit < self._most:
            self._good_batches += 1
            if self._good_batches >= _GROW_AFTER:
                self._limit = min(self._most, self._limit * 2)
                self._good_batches = 0
        if self._stop is not None and self._stop():
            raise _Stopped  # (what is committed stays; the plan resumes from it next time)

    def _report_bad_lines(
        self, batch: _Batch, starts: dict[int, tuple[int, bool]], exc: duckdb.Error
    ) -> None:
        """Log and keep for `status` (:attr:`bad_lines`) the lines of ``batch`` that its
        lenient load left out. DuckDB names only the first bad line, by its number in the
        batch's files (one too many for a line that is not JSON, in DuckDB 2.0), so each
        segment's part of the batch, from its offset in ``starts`` (before the batch), is
        read again for lines that are not JSON, numbered within the segment."""
        at = _iso(time.time())
        found = False
        for seq, (name, end, _) in batch.marks.items():
            start = min(starts.get(seq, (0, False))[0], end)
            lines: list[int] = []
            count, error = 0, ""
            try:
                for number, why in segments.malformed_lines(batch.paths[seq], start, end):
                    error = error or why
                    count += 1
                    if len(lines) < _SHOWN_LINES:
                        lines.append(number)
            except segments.READ_ERRORS as read_error:  # (loaded already: say what DuckDB said)
                log.warning("journal segment %s cannot be read again: %s", name, read_error)
            if not count:
                continue
            found = True
            report = {"segment": name, "lines": lines, "count": count, "error": error, "at": at}
            self._keep_bad_lines(report)
            log.warning(
                "journal segment %s: %s not events (%s), left out of the database",
                name,
                _line_numbers(lines, count),
                error,
            )
        if not found:  # (JSON that DuckDB reads with a value left out: the event loads)
            # (DuckDB names the batch's temporary copy, which is gone by the time one looks)
            detail = re.sub(r' in file "[^"]*"', "", str(exc).splitlines()[0])
            log.warning(
                "journal %s has lines that cannot be loaded whole (%s); loaded the rest",
                ", ".join(sorted(name for name, _, _ in batch.marks.values())),
                detail,
            )

    def _keep_bad_lines(self, report: dict[str, Any]) -> None:
        """Add a report of lines left out to :attr:`bad_lines`, one per segment (a
        segment loaded in several batches adds up)."""
        for known in self.bad_lines:
            if known["segment"] == report["segment"]:
                known["lines"] = (known["lines"] + report["lines"])[:_SHOWN_LINES]
                known["count"] += report["count"]
                known["at"] = report["at"]
                break
        else:
            self.bad_lines.append(report)
        self._con.execute(
            "INSERT OR REPLACE INTO meta VALUES ('bad_lines', ?)", [json.dumps(self.bad_lines)]
        )

    def _insert(self, batch: _Batch, files: list[str], *, lenient: bool) -> int:
        con = self._con
        count = 0
        if files:
            row = con.execute("SELECT coalesce(max(rowid) + 1, 0) FROM events").fetchone()
            first = row[0] if row else 0
            row = con.execute(_LOAD, {"files": files, "lenient": lenient}).fetchone()
            count = row[0] if row else 0
            if (
                count
                and self._may_duplicate(first)
                and _true(con, _ANY_DUPLICATE, {"first": first})
            ):
                if batch.grew is not None:
                    copies = {"seq": batch.grew, "bytes": batch.marks[batch.grew][1]}
                    con.execute(_RECORD_COPIES, {"first": first, **copies})
                row = con.execute(_DROP_DUPLICATES, {"first": first}).fetchone()
                count -= row[0] if row else 0
            if count:
                pricing.price(con, self.pricer, first=first)
                rollup.add(con, first)
        now = _utcnow()
        con.executemany(
            _SAVE_OFFSET,
            [
                {"seq": seq, "name": name, "bytes": end, "complete": complete, "now": now}
                for seq, (name, end, complete) in batch.marks.items()
            ],
        )
        return count

    def _may_duplicate(self, first: int) -> bool:
        """Whether the rows from rowid ``first`` on may share an id with each other or
        with an earlier row (see :data:`_NEW_IDS`)."""
        row = self._con.execute(_NEW_IDS, {"first": first}).fetchone()
        if row is None or row[1] is None:
            return False
        twice, lo, hi = row
        return bool(twice) or _true(
            self._con, _STORED_IN_RANGE, {"first": first, "lo": lo, "hi": hi}
        )

    def reprice(
        self, since: datetime | None = None, pricer: Pricer | None = None
    ) -> dict[str, int]:
        """Compute again the cost of every stored api_request (from ``since`` on) that
        did not report one, with ``pricer`` (which loads use from then on); reported
        costs stay. Returns the requests ``repriced`` and, of them, those whose cost
        ``changed`` and those now ``computed`` and ``unknown``."""
        with self._lock:
            if self.needs_rebuild:
                raise TelemetryError(f"{self.path}: store schema differs; rebuild it first")
            if pricer is not None:
                self.pricer = pricer
            if since is not None and since.tzinfo is not None:
                # (as the stored times: naive UTC; DuckDB would move an aware time into
                # its session's zone, the local one, when comparing it with them)
                since = since.astimezone(UTC).replace(tzinfo=None)
            con = self._con
            params = {"since": since}

            def work() -> dict[str, int]:
                con.execute(_REPRICE_BEFORE, params)
                try:
                    pricing.price(con, self.pricer, since=since)
                    rollup.refresh(con, since, None)
                    row = con.execute(_REPRICE_COUNTS).fetchone()
                finally:
                    con.execute("DROP TABLE IF EXISTS reprice_before")
                repriced, changed, computed, unknown = row or (0, 0, 0, 0)
                return {
                    "repriced": int(repriced or 0),
                    "changed": int(changed or 0),
                    "computed": int(computed or 0),
                    "unknown": int(unknown or 0),
                }

            return self._in_transaction(work)

    def costs(
        self, ids: list[str], since: datetime | None = None
    ) -> list[tuple[str, float | None, str | None]]:
        """(id, cost_usd, cost_source) of the stored api_requests among ``ids`` (at or
        after ``since``, naive UTC: row groups before it are skipped); ids not stored are
        left out. For the daemon's running totals (daemon/totals.py)."""
        if self.needs_rebuild or not ids:
            return []
        with self.cursor() as con:
            rows = con.execute(_COSTS, {"ids": ids, "since": since}).fetchall()
        return [(str(key), cost, source) for key, cost, source in rows]

    def checkpoint(self) -> None:
        """Write the write-ahead log into the database file now. DuckDB also does it by
        itself, inside the commit that takes the log past 16 MB (which that commit then
        waits for): a daemon may prefer to do it when idle and at shutdown."""
        with self._lock:
            self._con.execute("CHECKPOINT")

    # -- retention (daemon/retention.py decides what; these keep the two in step) ---

    def complete_segments(self) -> set[int]:
        """The segments loaded to their end (closed): the only ones retention may touch."""
        with self._reader_lock:
            if self.needs_rebuild:
                return set()
            rows = self._reader.execute("SELECT seq FROM segments WHERE complete").fetchall()
        return {seq for (seq,) in rows}

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold off loads and rebuilds (which read journal files) meanwhile."""
        with self._lock:
            yield

    def forget(self, files: dict[int, list[str]]) -> int:
        """Delete complete journal segments together with their events; return the rows
        deleted. ``files`` maps a seq to its files (plain, compressed, usage).

        Under the lock (no load in between): one transaction deletes the events whose ids
        the files hold and the segments' rows; then the files go. After a crash between
        the two, the next materialization loads the files again and the next retention
        run deletes them again. Segments not recorded complete are left alone.
        """
        return self.forget_counting(files)[0]

    def forget_counting(
        self, files: dict[int, list[str]], types: tuple[str, ...] = ()
    ) -> tuple[int, int]:
        """:meth:`forget`, also counting the deleted rows whose type is one of ``types``:
        ``(rows deleted, of them of those types)``."""
        with self._lock:
            if self.needs_rebuild:
                raise TelemetryError(f"{self.path}: store schema differs; rebuild it first")
            doomed, ids = self._doomed(files)
            if not doomed:
                return 0, 0

            def delete() -> tuple[int, int]:
                [(counted,)] = self._con.execute(
                    _COUNT_TYPES, {"ids": ids, "types": list(types)}
                ).fetchall()
                span = rollup.span_of(self._con, ids)
                row = self._con.execute(_FORGET, {"ids": ids}).fetchone()
                if span is not None:
                    rollup.refresh(self._con, *span)
                for table in ("segments", "copies"):
                    self._con.execute(
                        f"DELETE FROM {table} WHERE seq IN (SELECT unnest($seqs))",
                        {"seqs": sorted(doomed)},
                    )
                return (int(row[0]) if row else 0), int(counted)

            count = self._in_transaction(delete)
            # (Not fsynced: files that come back after a power loss have no rows any more,
            # so they are loaded and deleted again, like after a crash.)
            for paths in doomed.values():
                for path in paths:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            return count

    def count_forgettable(self, files: dict[int, list[str]], types: tuple[str, ...]) -> int:
        """The stored events of ``types`` that :meth:`forget_counting` would delete with
        ``files``, which stay (a dry run's count)."""
        with self._lock:
            if self.needs_rebuild:
                raise TelemetryError(f"{self.path}: store schema differs; rebuild it first")
            doomed, ids = self._doomed(files)
            if not doomed:
                return 0
            [(counted,)] = self._con.execute(
                _COUNT_TYPES, {"ids": ids, "types": list(types)}
            ).fetchall()
            return int(counted)

    def _doomed(self, files: dict[int, list[str]]) -> tuple[dict[int, list[str]], list[str]]:
        """Those of ``files`` whose segments are recorded complete (the only ones
        retention may touch), and the ids they hold. Under the lock."""
        offsets = self._offsets(self._con)
        doomed = {seq: paths for seq, paths in files.items() if offsets.get(seq, (0, False))[1]}
        ids: list[str] = []
        for paths in doomed.values():
            if paths:  # one file per segment holds its ids: the one readers read
                ids.extend(_ids_in(min(paths, key=segments.preference)))
        return doomed, ids

    def compact(
        self,
        seq: int,
        name: str,
        kept_bytes: int,
        dropped: list[str],
        keep_types: tuple[str, ...],
        swap: Callable[[], None],
    ) -> int | None:
        """Record that complete segment ``seq`` now holds only what its file ``name``
        holds (``kept_bytes`` of content, the lines of ``keep_types``), then ``swap()``
        the files; return the rows deleted, or None when the segment is not recorded
        complete (nothing is done then).

        Under the lock (no load or rebuild reads the journal in between): one
        transaction deletes the events of ``dropped`` (the ids of the lines left out)
        that are not of ``keep_types`` and records the segment's new file and length;
        only then does ``swap`` put the new file in place and remove the old one. A
        crash before the commit changes nothing; after it, before or during the swap,
        the old file is still the segment's (read by a rebuild: its other events come
        back until the next retention run drops them again) and is never loaded
        anew, since the segment is complete.
        """
        with self._lock:
            if self.needs_rebuild:
                raise TelemetryError(f"{self.path}: store schema differs; rebuild it first")
            if not self._offsets(self._con).get(seq, (0, False))[1]:
                return None

            def record() -> int:
                span = rollup.span_of(self._con, dropped, keep_types)
                row = self._con.execute(
                    _FORGET_OTHERS, {"ids": dropped, "types": list(keep_types)}
                ).fetchone()
                if span is not None:
                    rollup.refresh(self._con, *span)
                self._con.execute(
                    _SAVE_OFFSET,
                    {"seq": seq, "name": name, "bytes": kept_bytes, "complete": True,
                     "now": _utcnow()},
                )  # fmt: skip
                return int(row[0]) if row else 0

            count = self._in_transaction(record)
            swap()
            return count

    # -- status -----------------------------------------------------------------

    def pending(self, journal_dir: str) -> int:
        """Journal bytes not materialized yet (a torn last line counts until cut off;
        a compressed segment not loaded to its end counts with its compressed size)."""
        with self._reader_lock:
            offsets = self._offsets(self._reader) if not self.needs_rebuild else {}
        total = 0
        for seq, path in segments.chosen(journal_dir):
            loaded, complete = offsets.get(seq, (0, False))
            if complete:
                continue
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            total += size if segments.is_compressed(path) else max(0, size - loaded)
        return total

    def missing(self, journal_dir: str, upto: tuple[str, int]) -> tuple[int, int]:
        """Journal bytes written up to ``upto`` (a segment path and a size in it) that are
        not in the database, and how many of them are gzipped (so stand for several times
        as many events): (0, 0) once a query may promise it sees every event acknowledged
        before it started."""
        segment, size = upto
        last = segments.segment_seq(os.path.basename(segment)) if segment else None
        if last is None:
            return 0, 0
        with self._reader_lock:
            offsets = self._offsets(self._reader) if not self.needs_rebuild else {}
        total = gzipped = 0
        for seq, path in segments.chosen(journal_dir):
            if seq > last:
                break
            loaded, complete = offsets.get(seq, (0, False))
            if complete:
                continue
            if seq == last:
                total += max(0, size - loaded)
                break
            with contextlib.suppress(FileNotFoundError):
                stored = os.stat(path).st_size
                if segments.is_compressed(path):
                    total += stored
                    gzipped += stored
                else:
                    total += max(0, stored - loaded)
        return total, gzipped

    def stats(self) -> dict[str, Any]:
        """Rows, segments materialized, last materialization, database size."""
        size = 0
        for name in (self.path, self.path + ".wal"):
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(name).st_size
        out: dict[str, Any] = {
            "path": self.path,
            "schema_version": SCHEMA_VERSION,
            "needs_rebuild": self.needs_rebuild,
            "events": None,
            "segments": None,
            "segments_complete": None,
            "last_materialized": _iso(self.last_materialized),
            "last_loaded": None,
            "database_bytes": size,
            "batch_bytes": self._limit,
            "salvaged": list(self.salvaged),
            "bad_lines": [dict(report) for report in self.bad_lines],
        }
        if not self.needs_rebuild:
            # fetchall: a result left unread keeps a transaction open on the shared
            # reader, and a CHECKPOINT (rebuild) then fails while it lasts.
            with self._reader_lock:
                [(events,)] = self._reader.execute("SELECT count(*) FROM events").fetchall()
                [(count, complete, last_loaded)] = self._reader.execute(
                    "SELECT count(*), count(*) FILTER (WHERE complete), max(loaded_at) "
                    "FROM segments"
                ).fetchall()
            out.update(
                events=events,
                segments=count,
                segments_complete=complete,
                last_loaded=_iso(last_loaded),
            )
        return out


# The costs of some api_requests, for the daemon's running totals.
_COSTS = """
SELECT id, cost_usd, cost_source FROM events
WHERE type = 'api_request' AND ($since IS NULL OR ts >= $since)
    AND id IN (SELECT unnest(CAST($ids AS VARCHAR[])))
"""

# reprice: the costs before, to count those that changed (reported ones are not repriced)
_REPRICE_BEFORE = """
CREATE OR REPLACE TEMP TABLE reprice_before AS
SELECT rowid AS rid, cost_usd FROM events
WHERE type = 'api_request' AND ($since IS NULL OR ts >= $since)
    AND cost_source IS DISTINCT FROM 'reported'
    AND NOT (cost_source IS NULL AND cost_usd IS NOT NULL)
"""
_REPRICE_COUNTS = """
SELECT count(*), count(*) FILTER (WHERE b.cost_usd IS DISTINCT FROM e.cost_usd),
    count(*) FILTER (WHERE e.cost_source = 'computed'),
    count(*) FILTER (WHERE e.cost_source = 'unknown')
FROM reprice_before AS b JOIN events AS e ON e.rowid = b.rid
"""


def _true(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> bool:
    """Whether ``sql`` has a first row whose first value is true."""
    row = con.execute(sql + " LIMIT 1", params).fetchone()
    return bool(row and row[0])


# -- journal files -----------------------------------------------------------------


def _ids_in(path: str) -> list[str]:
    """The ids in a segment file (of its good prefix, if it is damaged)."""
    ids: list[str] = []
    try:
        ids.extend(segments.iter_ids(path))
    except FileNotFoundError:
        pass
    except segments.DAMAGE_ERRORS as exc:
        log.warning("journal segment %s is damaged (%s); forgetting its readable ids", path, exc)
    return ids


def _line_numbers(lines: list[int], count: int) -> str:
    """``line 5``, ``lines 5, 9``, ``lines 5, 9 and 3 more``: ``count`` lines, the first
    of them ``lines``."""
    shown = ", ".join(str(number) for number in lines)
    if count == 1:
        return f"line {shown}"
    return f"lines {shown}" + (f" and {count - len(lines)} more" if count > len(lines) else "")


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_range(path: str, out_fd: int, start: int, end: int) -> None:
    """Append bytes [start, end) of ``path`` to ``out_fd``: in the kernel where it can."""
    with open(path, "rb") as f:
        fd = f.fileno()
        pos = start
        use_kernel = hasattr(os, "copy_file_range")
        while pos < end:
            count = min(end - pos, _COPY_CHUNK)
            if use_kernel:
                try:
                    copied = os.copy_file_range(fd, out_fd, count, pos)
                except OSError:
                    use_kernel = False  # another filesystem, or not supported: copy by hand
                    continue
            else:
                data = os.pread(fd, count, pos)
                copied = len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(out_fd, view) :]
            if copied == 0:
                raise OSError(f"{path} ended at {pos} bytes, before {end}")
            pos += copied
