"""The store: the journal materialized into DuckDB, for SQL.

The journal is the source of truth; the database is derived from it and can be
rebuilt from it at any time. On disk, next to the journal::

    telemetry.duckdb   one DuckDB file; only the daemon opens it read-write
      meta             key/value facts: schema_version (SCHEMA_VERSION below), created_at
      segments         per journal segment (by sequence number): loaded_bytes, the
                       length of its prefix of complete lines that is in `events`, and
                       `complete` once it is closed and loaded to its end
      events           one row per event id: the envelope and every type's fields in
                       typed columns (nested objects flattened: agent_model,
                       tokens_cache_read, ...), attrs and log fields as JSON
      views, macros    api_requests, sessions, ... (sql/views.sql, sql/macros.sql)
    .telemetry.duckdb.load-*.jsonl   byte ranges being loaded (transient)

The tables are in ``sql/schema.sql``. A database whose schema_version differs
from this module's is not migrated: :attr:`Store.needs_rebuild` says so, and the
caller runs :meth:`Store.rebuild`. Views and macros are recreated at every open.

``events`` is one wide table without indexes: reports scan a few columns of it
(DuckDB stores each column apart, compressed, with min/max per row group), and
rows arrive roughly in journal order, so filters on time skip most row groups.
Measured on 10M events: cost_by_model ~80 ms warm on a busy 2-CPU machine; one
session's row of the `sessions` view ~10 ms.

Materialization (:meth:`Store.materialize`) is incremental and exactly-once. For
each segment it takes the complete lines past ``loaded_bytes`` (a torn last line
waits until its newline is written), copies those bytes to a temporary file
(``os.copy_file_range``; a closed segment read whole needs no copy), loads them
with DuckDB's ``read_json`` and explicit column types (``sql/load.sql``), and
records the new ``loaded_bytes`` in the same transaction as the rows: after a
crash at any point, rows and offsets agree. Many segments and ranges go into one
batch, as every commit costs a few milliseconds. Compressed segments
(``.jsonl.gz``, ``.jsonl.zst``, closed by definition) are loaded whole, once.

Events are deduplicated by ``id``: of the rows sharing an id, the one stored
first stays; within one batch, the one received first. The check runs after the
insert, on the new rows only, and joins them with the stored ids; DuckDB skips
the row groups whose id range cannot match, which for time-ordered ids (the
UUIDv7s that the daemon and `telemetryctl send` assign) is nearly all of them.

Every method blocks (DuckDB releases the GIL while it works): the daemon calls
them from a worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar

import duckdb

from telemetryd.daemon.journal import SUFFIX, list_segments
from telemetryd.errors import TelemetryError

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 2  # 2: prompt_length
BATCH_BYTES = 256 * 1024 * 1024  # journal bytes per transaction, at most (one range can't split)
_BLOCK = 64 * 1024  # read size when looking for line ends
_COPY_CHUNK = 8 * 1024 * 1024


def _sql(name: str) -> str:
    return resources.files("telemetryd").joinpath("sql", name).read_text(encoding="utf-8")


_LOAD = _sql("load.sql")

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
_SAVE_OFFSET = "INSERT OR REPLACE INTO segments VALUES ($seq, $name, $bytes, $complete, $now)"
# Retention: the events whose ids these journal files hold.
_FORGET = """
    DELETE FROM events WHERE id IN (
        SELECT id FROM read_json(
            $files, format = 'newline_delimited', ignore_errors = true, columns = {id: 'VARCHAR'}
        )
    )
"""


@dataclass(frozen=True, slots=True)
class _Range:
    """Bytes [start, end) of one segment to load: complete lines, or a compressed file."""

    seq: int
    path: str
    start: int
    end: int
    compressed: bool
    complete: bool  # once loaded, the segment is done and is never read again
    whole: bool  # the range is the entire file as it stands (closed): read it in place

    @property
    def size(self) -> int:
        return self.end - self.start


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

    def __init__(self, path: str, *, batch_bytes: int = BATCH_BYTES) -> None:
        self.path = path
        self.batch_bytes = batch_bytes
        self.last_materialized: float | None = None  # Unix time the last run finished
        self._lock = threading.Lock()
        self._con = duckdb.connect(path)
        # Loads need not keep file order within a batch (dedup does not rely on it);
        # dropping it lets DuckDB insert from all threads. Only this connection.
        self._con.execute("SET SESSION preserve_insertion_order = false")
        # The Python client turns DuckDB's progress bar on (printed to stdout) for the
        # connection it opens; a daemon prints nothing. (Cursors have it off.)
        self._con.execute("SET enable_progress_bar = false")
        self._reader = self._con.cursor()
        self._reader_lock = threading.Lock()
        self._tmp_prefix = os.path.join(
            os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.load-"
        )
        for stale in glob.glob(glob.escape(self._tmp_prefix) + "*.jsonl"):
            os.unlink(stale)  # left by a crash; nobody else can be using this database
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
            return self._reader.cursor()

    def _open_schema(self) -> None:
        tables = {
            row[0]
            for row in self._con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
            ).fetchall()
        }
        if not tables:
            self._in_transaction(self._create_schema)
            return
        version = None
        if "meta" in tables:
            row = self._con.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            version = row[0] if row else None
        if version != str(SCHEMA_VERSION):
            log.warning(
                "%s has store schema version %s, this daemon uses %d: it needs a rebuild",
                self.path,
                version,
                SCHEMA_VERSION,
            )
            self.needs_rebuild = True
            return
        self._in_transaction(self._create_views)

    def _create_schema(self) -> None:
        self._con.execute(_sql("schema.sql"))
        self._con.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [["schema_version", str(SCHEMA_VERSION)], ["created_at", _iso(_utcnow())]],
        )
        self._create_views()

    def _create_views(self) -> None:
        """Views and report macros: replaced at every open, so they need no version bump."""
        self._con.execute(_sql("views.sql"))
        self._con.execute(_sql("macros.sql"))

    def _drop_everything(self) -> None:
        """Drop every table, view and macro of the main schema (any schema version's)."""
        con = self._con
        macros = con.execute(
            "SELECT DISTINCT function_name, function_type FROM duckdb_functions() "
            "WHERE schema_name = 'main' AND NOT internal "
            "AND function_type IN ('macro', 'table_macro')"
        ).fetchall()
        for name, kind in macros:
            con.execute(f'DROP MACRO {"TABLE " if kind == "table_macro" else ""}"{name}"')
        views = con.execute(
            "SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal"
        ).fetchall()
        for (name,) in views:
            con.execute(f'DROP VIEW "{name}"')
        tables = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
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

    def materialize(self, journal_dir: str) -> int:
        """Load every complete journal line not loaded yet; return the new events stored
        (duplicates of stored ids do not count). Raises TelemetryError when the store
        needs a rebuild, and duckdb.Error or OSError when loading fails (nothing of the
        failed batch is kept; the next run retries it)."""
        with self._lock:
            if self.needs_rebuild:
                raise TelemetryError(f"{self.path}: store schema differs; rebuild it first")
            return self._materialize(journal_dir)

    def rebuild(self, journal_dir: str) -> int:
        """Drop everything and load the whole journal again; return the events stored.

        The empty schema is committed first and the journal then loaded batch by batch,
        so a crash halfway leaves a store that the next :meth:`materialize` completes;
        meanwhile queries see the store partly loaded.
        """
        with self._lock:
            started = time.monotonic()

            def recreate() -> None:
                self._drop_everything()
                self._create_schema()

            self._in_transaction(recreate)
            self.needs_rebuild = False
            count = self._materialize(journal_dir)
            self._con.execute("CHECKPOINT")  # give the old tables' space back for reuse
            log.info(
                "store rebuilt from %s: %d events in %.1f s",
                journal_dir,
                count,
                time.monotonic() - started,
            )
            return count

    def _materialize(self, journal_dir: str) -> int:
        total = 0
        for batch in self._batches(self._plan(journal_dir)):
            total += self._load(batch)
        self.last_materialized = time.time()
        return total

    def _offsets(self, con: duckdb.DuckDBPyConnection) -> dict[int, tuple[int, bool]]:
        rows = con.execute("SELECT seq, loaded_bytes, complete FROM segments").fetchall()
        return {seq: (loaded, complete) for seq, loaded, complete in rows}

    def _plan(self, journal_dir: str) -> list[_Range]:
        """What to load, in journal order."""
        offsets = self._offsets(self._con)
        segments = _segments(journal_dir)
        plan = []
        for index, (seq, path) in enumerate(segments):
            loaded, complete = offsets.get(seq, (0, False))
            if complete:
                continue
            try:
                size = os.stat(path).st_size
                if not path.endswith(SUFFIX):
                    # Compressed, so closed. If it was partly loaded before compression,
                    # loading it whole again is still right: the dedup drops the repeats.
                    plan.append(_Range(seq, path, 0, size, True, True, True))
                    continue
                if size < loaded:
                    log.warning(
                        "journal segment %s is %d bytes, shorter than the %d already "
                        "loaded; skipped (a rebuild reloads it)",
                        path,
                        size,
                        loaded,
                    )
                    continue
                end = _last_line_end(path, loaded, size)
            except FileNotFoundError:
                continue  # deleted meanwhile (retention)
            # Only the newest segment can still grow: the writer never reopens older ones.
            closed = index < len(segments) - 1
            done = closed and end == size
            if end > loaded or done:
                plan.append(_Range(seq, path, loaded, end, False, done, done and loaded == 0))
        return plan

    def _batches(self, plan: list[_Range]) -> Iterator[list[_Range]]:
        """Group the ranges into batches of at most ``batch_bytes`` (splitting big ranges
        at line ends), so that one transaction stays bounded."""
        batch: list[_Range] = []
        size = 0
        for whole in plan:
            for piece in _split(whole, self.batch_bytes):
                if batch and size + piece.size > self.batch_bytes:
                    yield batch
                    batch, size = [], 0
                batch.append(piece)
                size += piece.size
        if batch:
            yield batch

    def _load(self, batch: list[_Range]) -> int:
        """Load one batch and record its offsets, in one transaction; retry once skipping
        malformed lines if DuckDB cannot read them (a journal damaged on disk)."""
        files = [piece.path for piece in batch if piece.whole]
        copies = [piece for piece in batch if piece.size and not piece.whole]
        tmp = self._copy(copies) if copies else None
        if tmp:
            files.append(tmp)
        try:
            try:
                return self._in_transaction(lambda: self._insert(batch, files, lenient=False))
            except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
                log.warning(
                    "journal %s has lines that cannot be loaded (%s); loading the rest",
                    ", ".join(sorted({os.path.basename(p.path) for p in batch})),
                    str(exc).splitlines()[0],
                )
                return self._in_transaction(lambda: self._insert(batch, files, lenient=True))
        finally:
            if tmp:
                os.unlink(tmp)

    def _copy(self, pieces: list[_Range]) -> str:
        """A new temporary file next to the database holding the pieces' bytes."""
        fd, tmp = tempfile.mkstemp(
            prefix=os.path.basename(self._tmp_prefix),
            suffix=".jsonl",
            dir=os.path.dirname(self._tmp_prefix),
        )
        try:
            for piece in pieces:
                _copy_range(piece.path, fd, piece.start, piece.end)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        return tmp

    def _insert(self, batch: list[_Range], files: list[str], *, lenient: bool) -> int:
        con = self._con
        count = 0
        if files:
            row = con.execute("SELECT coalesce(max(rowid) + 1, 0) FROM events").fetchone()
            first = row[0] if row else 0
            row = con.execute(_LOAD, {"files": files, "lenient": lenient}).fetchone()
            count = row[0] if row else 0
            if count and con.execute(_DUPLICATES + " LIMIT 1", {"first": first}).fetchone():
                row = con.execute(_DROP_DUPLICATES, {"first": first}).fetchone()
                count -= row[0] if row else 0
        now = _utcnow()
        con.executemany(
            _SAVE_OFFSET,
            [
                {
                    "seq": piece.seq,
                    "name": os.path.basename(piece.path),
                    "bytes": piece.end,
                    "complete": piece.complete,
                    "now": now,
                }
                for piece in batch
            ],
        )
        return count

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

    def forget(self, segments: dict[int, list[str]]) -> int:
        """Delete complete journal segments together with their events; return the rows
        deleted. ``segments`` maps a seq to its files (plain and/or compressed).

        Under the lock (no load in between): one transaction deletes the events whose ids
        the files hold and the segments' rows; then the files go. After a crash between
        the two, the next materialization loads the files again and the next retention
        run deletes them again. Segments not recorded complete are left alone.
        """
        with self._lock:
            if self.needs_rebuild:
                raise TelemetryError(f"{self.path}: store schema differs; rebuild it first")
            offsets = self._offsets(self._con)
            doomed = {
                seq: files for seq, files in segments.items() if offsets.get(seq, (0, False))[1]
            }
            if not doomed:
                return 0
            # One file per segment holds its ids: the plain one while both exist.
            reading = [
                min(files, key=lambda path: not path.endswith(SUFFIX))
                for files in doomed.values()
                if files
            ]

            def delete() -> int:
                row = self._con.execute(_FORGET, {"files": reading}).fetchone()
                self._con.execute(
                    "DELETE FROM segments WHERE seq IN (SELECT unnest($seqs))",
                    {"seqs": sorted(doomed)},
                )
                return int(row[0]) if row else 0

            count = self._in_transaction(delete) if reading else 0
            # (Not fsynced: files that come back after a power loss have no rows any more,
            # so they are loaded and deleted again, like after a crash.)
            for files in doomed.values():
                for path in files:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            return count

    # -- status -----------------------------------------------------------------

    def pending(self, journal_dir: str) -> int:
        """Journal bytes not materialized yet (a torn last line counts until cut off;
        a compressed segment counts with its compressed size)."""
        with self._reader_lock:
            offsets = self._offsets(self._reader) if not self.needs_rebuild else {}
        total = 0
        for seq, path in _segments(journal_dir):
            loaded, complete = offsets.get(seq, (0, False))
            if complete:
                continue
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            total += size if not path.endswith(SUFFIX) else max(0, size - loaded)
        return total

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
        }
        if not self.needs_rebuild:
            with self._reader_lock:
                (events,) = self._reader.execute("SELECT count(*) FROM events").fetchone() or (0,)
                row = self._reader.execute(
                    "SELECT count(*), count(*) FILTER (WHERE complete), max(loaded_at) "
                    "FROM segments"
                ).fetchone()
            segments, complete, last_loaded = row or (0, 0, None)
            out.update(
                events=events,
                segments=segments,
                segments_complete=complete,
                last_loaded=_iso(last_loaded),
            )
        return out


# -- journal files -----------------------------------------------------------------


def _segments(journal_dir: str) -> list[tuple[int, str]]:
    """``(seq, path)`` per segment, oldest first; while a segment exists both plain and
    compressed (compression under way), the plain file is the one to read."""
    try:
        found = list_segments(journal_dir)
    except FileNotFoundError:
        return []
    chosen: dict[int, str] = {}
    for seq, path in found:
        if seq not in chosen or path.endswith(SUFFIX):
            chosen[seq] = path
    return sorted(chosen.items())


def _last_line_end(path: str, start: int, size: int) -> int:
    """The offset just past the last newline in bytes [start, size) of ``path``, or
    ``start`` when that range holds no complete line."""
    with open(path, "rb") as f:
        end = size
        while end > start:
            begin = max(start, end - _BLOCK)
            cut = os.pread(f.fileno(), end - begin, begin).rfind(b"\n")
            if cut >= 0:
                return begin + cut + 1
            end = begin
    return start


def _next_line_end(path: str, pos: int, limit: int) -> int:
    """The offset just past the first newline at or after ``pos`` (at most ``limit``)."""
    with open(path, "rb") as f:
        while pos < limit:
            block = os.pread(f.fileno(), min(_BLOCK, limit - pos), pos)
            cut = block.find(b"\n")
            if cut >= 0:
                return pos + cut + 1
            pos += len(block)
    return limit


def _split(whole: _Range, batch_bytes: int) -> Iterator[_Range]:
    """``whole`` in pieces of about ``batch_bytes`` that end at line ends. Only the last
    piece carries ``complete``; a range that is split is copied, not read in place."""
    if whole.compressed or whole.size <= batch_bytes:
        yield whole
        return
    start = whole.start
    while start < whole.end:
        cut = whole.end
        if whole.end - start > batch_bytes:
            cut = _next_line_end(whole.path, start + batch_bytes - 1, whole.end)
        last = cut == whole.end
        yield replace(whole, start=start, end=cut, complete=whole.complete and last, whole=False)
        start = cut


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
