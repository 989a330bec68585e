"""Parquet export: the store's events as a Hive-partitioned Parquet data set, incrementally.

On disk, in the export directory ``DIR`` (a local directory, or a URL that DuckDB's
writers accept, such as ``s3://bucket/telemetry``, where the user installed the
extension)::

    DIR/_telemetryd_export.json                  the manifest (one JSON object, below)
    DIR/date=2026-12-05/source=claude-code/part-000001-0.parquet
    DIR/date=2026-12-05/source=__HIVE_DEFAULT_PARTITION__/part-000002-0.parquet
    ...

``date`` is the UTC day of the event's ``ts``; ``source`` its producer, percent-encoded
where it holds characters a path cannot (``claude%20code``), and Hive's
``__HIVE_DEFAULT_PARTITION__`` where it has none. Every Parquet file is zstd-compressed
and holds the ``events`` table's columns (sql/schema.sql) but ``source``, with
``attrs`` and ``fields`` as JSON text; docs/export.md lists them with their types.
File names say which export run wrote them: ``part-<run>-<i>.parquet``. The manifest's
name starts with ``_``, which Spark, Trino, pyarrow and Hive all skip.

The manifest (:class:`Manifest`, ``version`` 1) records the *journal position*
exported: for each journal segment (by sequence number) the bytes of its complete lines
whose events are in DIR, which is the store's own ``loaded_bytes`` at the time of the
run (store/database.py), with each segment's name (which says when it was opened, so
another journal's segment of the same number is told apart), plus the window
(``since``/``until``) the directory holds and counts. A journal position outlives the
database (a rebuild loads the same lines) and says exactly which events are new,
whatever their timestamps: an event journaled late with an old ``ts`` is new, and goes
to its old day's partition, once.

A run (:func:`export`):

1. Reads the manifest; a directory exported with another window, or from another
   journal, is an error.
2. Under the store's lock (no load, rebuild or retention meanwhile), opens a
   transaction (DuckDB's snapshot; the database is only read in it), reads every
   segment's ``loaded_bytes`` in it, and copies the journal lines between the
   manifest's position and that one (the new lines) into the store's private load
   directory, where DuckDB may read them; then lets go of the lock.
3. Picks the new events, in the snapshot: those whose id and ``received_at`` match a
   new line, into a temporary table. (An id journaled twice is stored once, from its
   first line: a later copy of an exported event does not match and is not exported
   again; a twin of the first line, as a forwarded event sent again is, matches, but
   the load that dropped it noted it in ``copies``, and the row counts as new only
   when its new lines outnumber its new copies.) The first run into an empty
   directory takes every stored event, without that join. Writes them with one
   ``COPY ... (FORMAT parquet, COMPRESSION zstd)`` per (date, source) partition into
   a staging directory there (see :func:`_copy`).
4. Publishes the files: renamed into DIR (copied, then renamed, from another file
   system; fsynced), or, for a URL, written there by a DuckDB connection of its own
   (the store's is sandboxed: no file access outside the load directory, no
   extensions); then writes the manifest (locally: a temporary file, fsynced, renamed).

A run that fails before its manifest is written left no position behind: the next run
takes the same run number, removes (locally) the files a failed run may have left, and
exports the same events again, with those that came since. Where files cannot be
removed (a URL), they are overwritten by name.

Retention deletes journal segments with their events (store/retention.py): events
deleted before a run has exported them are not exported. The continuous export
(``[export] parquet-dir``) runs far more often than retention's ``max-age-days``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import duckdb
import msgspec

from telemetryd import config, paths
from telemetryd.daemon import segments
from telemetryd.errors import ExportError
from telemetryd.store.database import Store

log = logging.getLogger(__name__)

MANIFEST_NAME = "_telemetryd_export.json"
MANIFEST_FORMAT = "telemetryd-parquet-export"
MANIFEST_VERSION = 1
PARTITION_COLUMNS = ("date", "source")
_COPY_CHUNK = 8 * 1024 * 1024
# The events' columns that are JSON in the store: text in the files.
_JSON_COLUMNS = frozenset({"attrs", "fields"})


_Count = Annotated[int, msgspec.Meta(ge=0)]


class Manifest(msgspec.Struct, kw_only=True):
    """What DIR holds (see the module docstring)."""

    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION
    since: str | None = None  # the window: events with since <= ts < until (RFC 3339 UTC)
    until: str | None = None
    # segment sequence number -> bytes of its complete lines whose events are exported
    position: dict[_Count, _Count] = msgspec.field(default_factory=dict)
    # segment sequence number -> its name (``20261121T233532Z-000007``: when it was
    # opened), which tells this journal's segment from another journal's of that number
    segments: dict[int, str] = msgspec.field(default_factory=dict)
    runs: _Count = 0  # export runs that wrote files (the next writes part-<runs + 1>-*)
    events: _Count = 0  # events exported, all runs
    files: _Count = 0  # Parquet files written, all runs
    created_at: str | None = None
    updated_at: str | None = None


_MANIFEST_DECODER = msgspec.json.Decoder(Manifest)


@dataclass
class Report:
    """One run: where, what it wrote, and the directory's totals after it."""

    target: str
    events: int = 0  # written by this run
    files: list[str] = field(default_factory=list)  # paths relative to the target
    run: int | None = None  # the run number (None: nothing new, nothing written)
    total_events: int = 0
    since: str | None = None
    until: str | None = None
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "run": self.run,
            "events": self.events,
            "files": self.files,
            "total_events": self.total_events,
            "since": self.since,
            "until": self.until,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def iso(moment: datetime | None) -> str | None:
    """``moment`` as RFC 3339 UTC with milliseconds (naive means UTC), or None."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def _naive(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)


def _now() -> str:
    return iso(datetime.now(UTC)) or ""


# -- targets -----------------------------------------------------------------------


def _leftovers(run: int) -> re.Pattern[str]:
    """The names of run ``run``'s files in a partition directory, and of their
    temporary copies: what a run that did not finish leaves."""
    return re.compile(rf"\.?part-{run:06d}-\d+\.parquet(\.tmp)?")


class _Local:
    """A local directory: files renamed into place, the manifest replaced atomically."""

    def __init__(self, root: str) -> None:
        if not os.path.isabs(root):
            raise ExportError(f"export directory {root!r} is not an absolute path")
        self.root = root

    def read_manifest(self) -> bytes | None:
        try:
            with open(os.path.join(self.root, MANIFEST_NAME), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise ExportError(f"{self.root} is a file, not a directory") from None

    def check_new(self, own_dirs: list[str]) -> None:
        """ExportError unless DIR may become a new export: it is not within one of
        ``own_dirs`` (the daemon's), and holds nothing but hidden files (a directory of
        the user's files, their home, is not one to write and clean up in)."""
        own = paths.within(self.root, own_dirs)
        if own is not None:
            raise ExportError(f"{self.root} is within {own}: export to another directory")
        try:
            names = sorted(name for name in os.listdir(self.root) if not name.startswith("."))
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise ExportError(f"{self.root} is a file, not a directory") from None
        if names and not self._first_run_left_it():
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise ExportError(
                f"{self.root} holds other files ({shown}) and no {MANIFEST_NAME}: "
                "export into a new or empty directory"
            )

    def _first_run_left_it(self) -> bool:
        """Whether DIR holds nothing but what a first run that did not finish (the store
        worker killed before the manifest) leaves: ``date=*/source=*/`` directories
        with its files in them, which :meth:`prepare` then removes."""
        left = _leftovers(1)
        for name in os.listdir(self.root):
            day = os.path.join(self.root, name)
            if name.startswith("."):
                continue
            if not name.startswith("date=") or not os.path.isdir(day):
                return False
            for source in os.listdir(day):
                here = os.path.join(day, source)
                if not source.startswith("source=") or not os.path.isdir(here):
                    return False
                if not all(left.fullmatch(file) for file in os.listdir(here)):
                    return False
        return True

    def prepare(self, run: int) -> None:
        """Make DIR; remove what a failed run ``run`` (never recorded) may have left: its
        files, and the temporary copies of them, in the partition directories alone."""
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        left = _leftovers(run)
        for day in _subdirectories(self.root, "date="):
            for here in _subdirectories(day, "source="):
                for name in os.listdir(here):
                    if left.fullmatch(name):
                        os.unlink(os.path.join(here, name))
                        log.info("export: removed %s, left by a run that did not finish", name)

    def publish(self, out: str, files: list[str], run: int) -> list[str]:
        """Move the staged ``files`` (relative to ``out``) into place; their names."""
        for relative in files:
            self._move(os.path.join(out, relative), relative)
        return files

    def _move(self, staged: str, relative: str) -> None:
        final = os.path.join(self.root, relative)
        directory = os.path.dirname(final)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        _fsync_file(staged)
        try:
            os.replace(staged, final)
        except OSError:  # another file system: copy beside it, then rename
            tmp = os.path.join(directory, f".{os.path.basename(final)}.tmp")
            shutil.copyfile(staged, tmp)
            _fsync_file(tmp)
            os.replace(tmp, final)
        _fsync_dir(directory)

    def write_manifest(self, data: bytes) -> None:
        path = os.path.join(self.root, MANIFEST_NAME)
        tmp = os.path.join(self.root, f".{MANIFEST_NAME}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.root)

    def close(self) -> None:
        pass


class _Remote:
    """A URL, written by a DuckDB connection of its own (the user's extensions, secrets)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.con = duckdb.connect()
        self.con.execute("SET enable_progress_bar = false")
        # An extension the user installed loads by itself; none is ever downloaded.
        self.con.execute("SET autoinstall_known_extensions = false")

    def read_manifest(self) -> bytes | None:
        rows = self.con.execute(
            "SELECT content FROM read_text($path)", {"path": f"{self.root}/{MANIFEST_NAME}"}
        ).fetchall()
        return rows[0][0].encode() if rows else None

    def check_new(self, own_dirs: list[str]) -> None:
        """Nothing to check: a URL is none of the daemon's directories."""

    def prepare(self, run: int) -> None:
        """Nothing to remove: a failed run's files are overwritten by name."""

    def publish(self, out: str, files: list[str], run: int) -> list[str]:
        """Copy each staged file to the URL under its own name (rows as they are)."""
        for relative in files:
            url = f"{self.root}/{relative}"
            if url.startswith("file://"):  # (object stores have no directories to make)
                os.makedirs(os.path.dirname(url[len("file://") :]), exist_ok=True)
            self.con.execute(
                f"COPY (FROM read_parquet($staged)) TO {_literal(url)} "
                f"(FORMAT parquet, COMPRESSION zstd, {WRITER_OPTIONS})",
                {"staged": os.path.join(out, relative)},
            )
        return files

    def write_manifest(self, data: bytes) -> None:
        # The CSV writer, told not to quote and given a delimiter that JSON text never
        # holds raw, writes the text as it is, and a newline.
        self.con.execute(
            "COPY (SELECT $text AS manifest) TO '"
            + f"{self.root}/{MANIFEST_NAME}".replace("'", "''")
            + "' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER E'\\x1f')",
            {"text": data.decode().rstrip("\n")},
        )

    def close(self) -> None:
        self.con.close()


def _subdirectories(directory: str, prefix: str) -> list[str]:
    """The directories in ``directory`` whose names start with ``prefix``."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        e.path for e in entries if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)
    ]


def _target(root: str) -> _Local | _Remote:
    return _Remote(root) if config.is_url(root) else _Local(root)


def read_manifest(root: str) -> Manifest | None:
    """The manifest of the export at ``root``, or None where there is none yet."""
    target = _target(root)
    try:
        return _decode_manifest(target.read_manifest(), root)
    finally:
        target.close()


def _decode_manifest(data: bytes | None, root: str) -> Manifest | None:
    if data is None:
        return None
    try:
        manifest = _MANIFEST_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise ExportError(f"{root}/{MANIFEST_NAME} is not an export manifest: {exc}") from None
    if manifest.format != MANIFEST_FORMAT or manifest.version > MANIFEST_VERSION:
        raise ExportError(
            f"{root}/{MANIFEST_NAME} is a {manifest.format!r} manifest of version "
            f"{manifest.version}; this telemetryd writes {MANIFEST_FORMAT!r} version "
            f"{MANIFEST_VERSION}"
        )
    for name in ("since", "until"):
        try:
            _naive(getattr(manifest, name))
        except ValueError:
            raise ExportError(
                f"{root}/{MANIFEST_NAME}: its `{name}`, {getattr(manifest, name)!r}, is not "
                "an RFC 3339 time"
            ) from None
    return manifest


# -- the run -----------------------------------------------------------------------


def export(
    store: Store,
    journal_dir: str,
    root: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    where: paths.Paths | None = None,
) -> Report:
    """Export the events new since the last run into ``root`` (see the module docstring).
    ``since``/``until``: the window (``since <= ts < until``) of a new export directory;
    an existing one keeps its own, and another is an ExportError. ``where``: the
    daemon's paths, whose directories a new DIR may not be within (by default those
    under TELEMETRYD_HOME beside ``journal_dir``). Blocks (DuckDB, files): run it in a
    worker thread."""
    started = time.monotonic()
    if since is not None and until is not None and since >= until:
        raise ExportError(f"--since {iso(since)} is not before --until {iso(until)}")
    target = _target(root)
    try:
        manifest = _decode_manifest(target.read_manifest(), root)
        if manifest is None:
            if where is None:
                where = paths.under_home(os.path.dirname(journal_dir))
            target.check_new([store.load_dir, journal_dir, *where.own_directories()])
        manifest = _window(manifest, root, iso(since), iso(until))
        report = Report(root, total_events=manifest.events)
        report.since, report.until = manifest.since, manifest.until
        run = manifest.runs + 1
        names = _segment_names(journal_dir)
        _same_journal(manifest, names, root)
        staging = os.path.join(store.load_dir, f"export-{uuid.uuid4().hex}")
        os.makedirs(staging, mode=0o700)
        try:
            written, position = _write(store, journal_dir, manifest, staging, run)
            if position is None:  # nothing new
                report.elapsed_s = time.monotonic() - started
                return report
            files = _staged_files(os.path.join(staging, "out"))
            if files:
                target.prepare(run)
                files = target.publish(os.path.join(staging, "out"), files, run)
                manifest.runs = run
                report.run = run
            manifest.position.update(position)
            manifest.segments.update((seq, names[seq]) for seq in position if seq in names)
            manifest.events += written
            manifest.files += len(files)
            manifest.updated_at = _now()
            target.write_manifest(msgspec.json.encode(manifest) + b"\n")
            report.events, report.files = written, files
            report.total_events = manifest.events
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        target.close()
    report.elapsed_s = time.monotonic() - started
    log.info(
        "export to %s: %d events in %d files (%.1f s)",
        root,
        report.events,
        len(report.files),
        report.elapsed_s,
    )
    return report


def _segment_names(journal_dir: str) -> dict[int, str]:
    """The journal's segments: sequence number -> name (:func:`segments.stem`)."""
    return {
        seq: segments.stem(os.path.basename(path)) or ""
        for seq, path in segments.chosen(journal_dir)
    }


def _same_journal(manifest: Manifest, names: dict[int, str], root: str) -> None:
    """ExportError when DIR's position is another journal's: a segment it recorded has
    another name in this journal (a new state directory, another daemon exporting to the
    same place). Its offsets would pass over this journal's events without a word."""
    for seq, recorded in sorted(manifest.segments.items()):
        name = names.get(seq)
        if name and name != recorded:
            raise ExportError(
                f"{root} holds the export of another journal: its segment {seq} is "
                f"{recorded}, this journal's is {name} (a new state directory, or another "
                "telemetryd exporting there); export to another directory"
            )


def _window(manifest: Manifest | None, root: str, since: str | None, until: str | None) -> Manifest:
    """The manifest to go on with: a new one with the window asked for, or the existing one
    when the window asked for is its own (or none was asked for)."""
    if manifest is None:
        now = _now()
        return Manifest(since=since, until=until, created_at=now, updated_at=now)
    asked = (since, until)
    if asked != (None, None) and asked != (manifest.since, manifest.until):
        raise ExportError(
            f"{root} holds the export of events {_describe(manifest.since, manifest.until)}; "
            f"it cannot also take those {_describe(since, until)}: export them to another "
            "directory, or leave out --since and --until to add what is new to this one"
        )
    return manifest


def _describe(since: str | None, until: str | None) -> str:
    if since is None and until is None:
        return "of any time"
    if until is None:
        return f"from {since} on"
    if since is None:
        return f"before {until}"
    return f"from {since} until {until}"


def _write(
    store: Store, journal_dir: str, manifest: Manifest, staging: str, run: int
) -> tuple[int, dict[int, int] | None]:
    """Write the new events into ``staging/out``; return how many, and the journal
    position they bring DIR to (None when there was nothing new)."""
    cursors = [store.cursor()]
    try:
        with store.exclusive():
            # (Not READ ONLY: the new rows of a later run go to a temporary table. The
            # database itself is only read.)
            cursors[0].execute("BEGIN TRANSACTION")
            # The snapshot starts with this read: rows and offsets agree in it.
            loaded = dict(cursors[0].execute("SELECT seq, loaded_bytes FROM segments").fetchall())
            new = {
                seq: (manifest.position.get(seq, 0), end)
                for seq, end in loaded.items()
                if end > manifest.position.get(seq, 0)
            }
            _skip_compacted_midway(journal_dir, new)
            if not new:
                cursors[0].execute("ROLLBACK")
                return 0, None
            if manifest.position:
                lines = _copy_lines(journal_dir, new, staging)
            else:
                # A first run writes every stored row: with more writers, each with a
                # snapshot started here, under the lock, so all see the same rows. (A later
                # run's new rows are in the first one's temporary table, which the others
                # cannot see; it is one writer.)
                lines = None
                for _ in range(WRITERS - 1):
                    cursors.append(store.cursor())
                    cursors[-1].execute("BEGIN TRANSACTION")
                    cursors[-1].execute("SELECT count(*) FROM segments").fetchall()
        written = _copy(cursors, manifest, lines, os.path.join(staging, "out"), run)
        for cursor in cursors:
            cursor.execute("ROLLBACK")  # (the temporary table goes with it)
    finally:
        for cursor in cursors:
            cursor.close()
    return written, {seq: end for seq, (_, end) in new.items()}


def _skip_compacted_midway(journal_dir: str, new: dict[int, tuple[int, int]]) -> None:
    """Leave out of ``new`` the segments that retention compacted (store/retention.py)
    after DIR took part of them: DIR's position is an offset in the segment's original
    file, which means nothing in its usage file. Their usage lines not exported yet are
    not exported (each is logged); an export run more often than ``retention
    .max-age-days`` never meets this."""
    compacted = {seq for seq, path in segments.chosen(journal_dir) if segments.is_usage(path)}
    for seq in sorted(compacted & new.keys()):
        start, end = new[seq]
        if start > 0:
            log.warning(
                "export: journal segment %d was compacted by retention after the export "
                "took part of it; its usage lines past that point are not exported",
                seq,
            )
            new[seq] = (end, end)


def _copy(
    cursors: list[duckdb.DuckDBPyConnection],
    manifest: Manifest,
    lines: list[str] | None,
    out: str,
    run: int,
) -> int:
    """Write the rows of the window that are new (all of them where ``lines`` is None,
    else those of the ``lines``) into ``out``, one file per partition; return how many.

    One plain COPY per (date, source) partition, not one ``PARTITION_BY`` COPY: that
    holds rows of every partition it writes in memory, and within the store worker's
    memory limit (160 MB by default) it spilled to disk and ran at a fifth of the speed,
    or ran out of memory (10M events over 28 days, 3 sources: 87 partitions). Nor one
    per day partitioned by source: 2.5x slower than this, and 5x with DuckDB's
    ``partitioned_write_flush_threshold`` lowered to a row group. A plain COPY streams
    its row groups (:func:`writer_options`); rows are stored roughly in time order, so
    each reads the row groups of its day (a day is read once per source: about a tenth
    of the time, against one COPY per day into one file).

    Each of ``cursors`` (a snapshot of the same rows) writes partitions in a thread of
    its own, taking the next when it finishes one: a COPY's start and end (planning,
    the scan's first row groups, the file's footer) run on one thread, and meanwhile
    the other writer keeps DuckDB's threads busy.
    """
    cursor = cursors[0]
    where = ["TRUE"]
    params: dict[str, Any] = {}
    if manifest.since is not None:
        where.append("ts >= $since")
        params["since"] = _naive(manifest.since)
    if manifest.until is not None:
        where.append("ts < $until")
        params["until"] = _naive(manifest.until)
    table = "events"
    if lines is not None:
        cursor.execute(
            "CREATE TEMPORARY TABLE export_lines AS SELECT id, received_at FROM read_json("
            "$lines, format = 'newline_delimited', ignore_errors = true, "
            "columns = {id: 'VARCHAR', received_at: 'TIMESTAMP'})",
            {"lines": lines},
        )
        [(low,)] = cursor.execute("SELECT min(received_at) FROM temp.export_lines").fetchall()
        # The stored row of an id is the one from its first line (store/database.py): it
        # is new when that line is. It was received when its line says: no earlier than
        # the earliest new line (a constant, so the scan skips older row groups). A new
        # line that is the stored row's twin is its first line, or a copy the load
        # dropped (`copies`, with a segment and offset of the batch that held it: new
        # when that offset is past DIR's position): so the row is new when its new
        # lines outnumber its new copies.
        cursor.execute(
            "CREATE TEMPORARY TABLE export_new AS SELECT e.* FROM events AS e "
            "JOIN (SELECT id, received_at, count(*) AS lines FROM temp.export_lines "
            "GROUP BY ALL) AS n ON e.id = n.id AND e.received_at = n.received_at "
            "LEFT JOIN (SELECT c.id, c.received_at, count(*) AS copies FROM copies AS c "
            "LEFT JOIN (SELECT unnest(CAST($seqs AS BIGINT[])) AS seq, "
            "unnest(CAST($starts AS BIGINT[])) AS start) AS p ON c.seq = p.seq "
            "WHERE c.loaded_bytes > coalesce(p.start, 0) GROUP BY ALL) AS k "
            "ON e.id = k.id AND e.received_at = k.received_at "
            "WHERE n.lines > coalesce(k.copies, 0) AND e.received_at >= $low AND "
            + " AND ".join(where),
            {
                "low": low,
                "seqs": list(manifest.position),
                "starts": list(manifest.position.values()),
                **params,
            },
        )
        table = "temp.export_new"
    partitions = cursor.execute(
        f"SELECT CAST(ts AS DATE) AS day, source FROM {table} WHERE {' AND '.join(where)} "
        "GROUP BY ALL ORDER BY day NULLS FIRST, source NULLS FIRST",
        params,
    ).fetchall()
    columns = ", ".join(
        f'"{name}"::VARCHAR AS "{name}"' if name in _JSON_COLUMNS else f'"{name}"'
        for name in COLUMNS
        if name != "source"
    )
    jobs: list[tuple[tuple[str, dict[str, Any]], str]] = []
    for day, source in partitions:
        conditions = list(where)
        bounds: dict[str, Any] = {}
        if day is None:
            conditions.append("ts IS NULL")
        else:
            conditions.append("ts >= $day AND ts < $day + INTERVAL 1 DAY")
            bounds["day"] = day
        if source is None:
            conditions.append("source IS NULL")
        else:
            conditions.append("source = $source")
            bounds["source"] = source
        directory = os.path.join(out, hive_dir("date", day), hive_dir("source", source))
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"part-{run:06d}-0.parquet")
        sql = (
            f"SELECT {columns} FROM {table} WHERE {' AND '.join(conditions)}",
            {**params, **bounds},
        )
        jobs.append((sql, path))
    return _run_jobs(cursors, jobs)


def _run_jobs(
    cursors: list[duckdb.DuckDBPyConnection], jobs: list[tuple[tuple[str, dict[str, Any]], str]]
) -> int:
    """Write each (select, path) of ``jobs`` with :func:`_copy_file`, one thread per cursor
    taking the next job as it finishes one; the rows written. The first error stops the
    writers (after the COPY each is in) and is raised."""
    if len(cursors) == 1 or len(jobs) <= 1:
        return sum(_copy_file(cursors[0], sql, path) for sql, path in jobs)
    pending = iter(jobs)
    lock = threading.Lock()
    written = [0] * len(cursors)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        while True:
            with lock:
                job = None if errors else next(pending, None)
            if job is None:
                return
            try:
                written[index] += _copy_file(cursors[index], *job)
            except BaseException as exc:  # raised in the caller's thread, below
                with lock:
                    errors.append(exc)
                return

    threads = [
        threading.Thread(target=writer, args=(i,), name=f"export-writer-{i}", daemon=True)
        for i in range(len(cursors))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(written)


ROW_GROUP_ROWS = 30_720  # as the store's own (store/database.py)
DICTIONARY_ENTRIES = 1_024
WRITERS = 2  # Parquet files written at once by a first run (see _copy)
_MIN_ROW_GROUP_ROWS = 512


def writer_options(rows: int = ROW_GROUP_ROWS) -> str:
    """The Parquet writer's options (but the format and zstd), with row groups of ``rows``.

    Measured on 10M events within the worker's limits (160 MB, 2 threads), one file:

    - ``PRESERVE_ORDER false``: each of DuckDB's threads writes the row groups it fills,
      rather than handing them on to be written in the table's order. In order, the
      finished row groups wait in memory for their turn, and at that limit the wait
      spills to disk: 3.1x slower. Nothing reads meaning into the order of the rows in
      a file. (A COPY option: the worker's settings are locked.)
    - Row groups of :data:`ROW_GROUP_ROWS`: DuckDB's default (122,880 rows) spills at
      that limit (and twice ours, 5.6x slower).
    - zstd level 1 rather than DuckDB's default 3: 13% faster, and the files came out
      6% smaller (the ids, unique strings, are 46% of the bytes).
    - Dictionaries of at most :data:`DICTIONARY_ENTRIES` values per column and row
      group: a column with more (the ids, every one unique) is written plain at once,
      where DuckDB's default limit first builds a dictionary it then gives up. 16% less
      CPU, and the files came out 3% smaller; a column of few values (``type``,
      ``source``, a row group's sessions) keeps its dictionary.
    """
    return (
        f"COMPRESSION_LEVEL 1, ROW_GROUP_SIZE {rows}, PRESERVE_ORDER false, "
        f"DICTIONARY_SIZE_LIMIT {DICTIONARY_ENTRIES}"
    )


WRITER_OPTIONS = writer_options()


def _copy_file(
    cursor: duckdb.DuckDBPyConnection, select: tuple[str, dict[str, Any]], path: str
) -> int:
    """COPY the rows of ``select`` into the Parquet file ``path``; halve the row groups
    while DuckDB runs out of memory (each try rewrites the file)."""
    rows = ROW_GROUP_ROWS
    while True:
        try:
            row = cursor.execute(
                f"COPY ({select[0]}) TO {_literal(path)} "
                f"(FORMAT parquet, COMPRESSION zstd, {writer_options(rows)})",
                select[1],
            ).fetchone()
            return int(row[0]) if row else 0
        except duckdb.OutOfMemoryException as exc:
            if rows <= _MIN_ROW_GROUP_ROWS:
                raise
            rows //= 2
            log.warning(
                "export: %s ran out of DuckDB memory (%s); again with row groups of %d rows",
                path,
                str(exc).splitlines()[0],
                rows,
            )


MAX_PARTITION_VALUE = 200  # bytes of an escaped value (a file name has at most 255)


_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def hive_dir(key: str, value: Any) -> str:
    """``key=value`` as a Hive partition directory, escaped as DuckDB's own partitioned
    writes escape it (every byte but letters, digits and ``-._~`` as ``%XX``); None is
    Hive's ``__HIVE_DEFAULT_PARTITION__``.

    A value whose escaped form is longer than :data:`MAX_PARTITION_VALUE` bytes (a source
    of 70 accented letters is) would not fit in a directory name: it is cut to what fits,
    and ``~`` and 16 hex digits of a hash of the whole value follow, so that two long
    values stay apart; that is the value readers see.

    The value ``__HIVE_DEFAULT_PARTITION__`` itself is written with its first ``_`` as
    ``%5F``: DuckDB reads it back as written, not as NULL. (pyarrow decodes before it
    compares, and reads NULL.)"""
    if value is None:
        return f"{key}={_HIVE_NULL}"
    text = str(value)
    escaped = urllib.parse.quote(text, safe="")
    if escaped == _HIVE_NULL:
        escaped = "%5F" + escaped[1:]
    if len(escaped) > MAX_PARTITION_VALUE:
        digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        room = MAX_PARTITION_VALUE - 1 - len(digest)
        kept: list[str] = []
        for char in text:
            piece = urllib.parse.quote(char, safe="")
            room -= len(piece)
            if room < 0:
                break
            kept.append(piece)
        escaped = f"{''.join(kept)}~{digest}"
    return f"{key}={escaped}"


def _copy_lines(journal_dir: str, new: dict[int, tuple[int, int]], staging: str) -> list[str]:
    """Copy the lines [start, end) of each segment into files in ``staging``; their paths.
    A segment gone from the journal (retention) has no events left in the store either."""
    paths = dict(segments.chosen(journal_dir))
    out = os.path.join(staging, "lines.jsonl")
    with open(out, "wb") as f:
        for seq, (start, end) in sorted(new.items()):
            path = paths.get(seq)
            if path is None:
                log.warning("export: journal segment %d is gone; its events are too", seq)
                continue
            try:
                _copy_range(path, f, start, end)
            except FileNotFoundError:
                log.warning("export: journal segment %s is gone; its events are too", path)
    return [out]


def _copy_range(path: str, out: Any, start: int, end: int) -> None:
    """Bytes [start, end) of the segment's content (uncompressed) into ``out``. ``start``
    must follow a line's end (the manifest's position always does; one edited by hand
    may not): ExportError otherwise, rather than a line cut in two and lost."""
    if not segments.is_compressed(path):
        with open(path, "rb") as f:
            if start:
                f.seek(start - 1)
                _after_a_line(path, f.read(1), start)
            left = end - start
            while left > 0:
                block = f.read(min(_COPY_CHUNK, left))
                if not block:
                    raise ExportError(f"{path} ended at {end - left} bytes, before {end}")
                out.write(block)
                left -= len(block)
        return
    with segments.open_content(path) as content:
        pos = 0
        while pos < end:
            block = content.read(min(_COPY_CHUNK, end - pos) if pos >= start else _COPY_CHUNK)
            if not block:
                raise ExportError(f"{path} ended at {pos} bytes, before {end}")
            if start and pos < start <= pos + len(block):
                _after_a_line(path, block[start - 1 - pos : start - pos], start)
            if pos + len(block) > start:
                out.write(block[max(0, start - pos) : end - pos])
            pos += len(block)


def _after_a_line(path: str, before: bytes, start: int) -> None:
    if before != b"\n":
        raise ExportError(
            f"the export's position in {path}, {start} bytes, is not at the end of a line "
            "(its manifest was changed by hand?): export to another directory"
        )


def _staged_files(out: str) -> list[str]:
    """The Parquet files under ``out``, relative to it, in order."""
    found = []
    for here, _dirs, files in os.walk(out):
        for name in files:
            if name.endswith(".parquet"):
                found.append(os.path.relpath(os.path.join(here, name), out))
    return sorted(found)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):  # (some file systems refuse a directory fsync)
        _fsync_file(directory)


# The events table's columns, in its order, as exported (``source`` goes into the path).
# tests/test_export.py holds this to sql/schema.sql and to docs/export.md.
COLUMNS = (
    "id",
    "type",
    "v",
    "ts",
    "received_at",
    "source",
    "session_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "agent_model",
    "agent_provider",
    "agent_type",
    "agent_id",
    "agent_variant",
    "task_id",
    "task_title",
    "task_attempt_id",
    "task_attempt_index",
    "tokens_source",
    "tokens_input",
    "tokens_output",
    "tokens_cache_read",
    "tokens_cache_creation",
    "tokens_reasoning",
    "tokens_total",
    "tokens_estimated_total",
    "tokens_tokenizer",
    "cost_usd",
    "cost_source",
    "price_source",
    "duration_ms",
    "success",
    "error",
    "tool_name",
    "tool_use_id",
    "tool_success",
    "tool_error",
    "tool_input_digest",
    "name",
    "message",
    "category",
    "fingerprint",
    "confidence",
    "level",
    "component",
    "event",
    "value",
    "unit",
    "kind",
    "severity",
    "attempt_id",
    "attempt_index",
    "retry_same_model",
    "retry_reroute",
    "elapsed_wall_ms",
    "elapsed_llm_ms",
    "elapsed_tools_ms",
    "outcome",
    "outcome_reason",
    "cwd",
    "reason",
    "prompt_length",
    "attrs",
    "fields",
)
