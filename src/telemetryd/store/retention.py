"""Retention: how much journal is kept, usage kept for good, and compression of closed
segments.

On disk, in ``journal/`` (the names are daemon/segments.py's)::

    20261121T233532Z-000007.jsonl      a segment as written
    20261121T233532Z-000007.jsonl.gz   the same lines, gzipped once the segment is
                                       closed and materialized (same mtime)
    20261121T233532Z-000007.usage.jsonl.gz
                                       the segment's usage lines alone, byte for byte and
                                       in order, once the rest of it aged out (same mtime;
                                       ``.usage.jsonl`` with ``compress = false``)
    .20261121T233532Z-000007.jsonl.gz.tmp         a compression under way, or
    .20261121T233532Z-000007.usage.jsonl.gz.tmp   a compaction (a crash leaves them;
                                       the next run removes them)

**Usage** is what the reports total: the model requests, ``api_request`` events
(:data:`USAGE_TYPES`; each carries its own tokens, cost, model, session and project).
It is the history people keep telemetryd for, and the agents delete their own
transcripts after a month, so by default it is kept for good: ``max-age-days`` ages
out everything else but the analyzer's alerts (:data:`KEPT_TYPES`: kept with the
usage, so that none is raised twice), and usage only past ``usage-max-age-days`` (0,
the default: never). The size limit, ``max-bytes``, still applies to all of it.

Only segments that the store records as complete (closed, and loaded into the
database to their end) are ever touched, and never the newest one or the one being
written. Each run, with the ``[retention]`` settings read afresh:

1. **Leftovers** go: temporary files, and the old file of a segment whose usage file
   exists (a compaction that stopped after its file was in place).
2. **Age**, judged by a segment's last write (mtime, which every rewrite keeps). A
   segment older than ``max-age-days`` is **compacted**: its usage lines are copied
   into a hidden temporary file (gzipped with ``compress``), fsynced, made read-only;
   then, under the store's lock (no load or rebuild reads the journal meanwhile), one
   transaction deletes the segment's other events from the database and records the
   usage file and its length as the segment's content (:meth:`Store.compact`); only
   then is the file renamed into place and the old one unlinked. A segment without
   usage lines is deleted outright (as a segment older than ``usage-max-age-days``
   too is, usage and all), and one compacted before stays as it is.
3. **Compression** (``compress = true``) of the other complete plain files (usage files
   included): written to a hidden temporary file, fsynced, renamed into place, then
   the plain file is unlinked. While both exist, every reader takes the plain one;
   DuckDB reads the ``.gz`` directly, so the store (and ``rebuild``) work the same.
4. **Size**: while the journal (every file, compressed ones at their compressed size)
   is larger than ``max-bytes``, the oldest segments are deleted, compacted ones
   included: only what compression could not make fit. Usage deleted this way is said
   in a warning in the log and in `telemetryctl status` (the daemon keeps the last one
   until it restarts). A dry run counts segments due for compaction at the size of
   their usage and plain files at the size gzip makes of them (it compacts and
   compresses them to count, writing nothing), and says in the same warning the usage
   it would delete (neither logged nor kept).

Deletion (steps 2 and 4) drops the same events from the database in the same step
(:meth:`Store.forget`: the ids read from the segment, deleted in one transaction
before the files), so journal and database agree; the daemon then reads its dedup
window's ids from the journal again (``Journal.renew_dedup``), so that an event deleted
here and sent again (its files imported again once ``max-bytes`` is raised) is kept,
not taken for a duplicate. An event whose id was journaled
twice (resent after the dedup window) is stored once, from its first segment:
deleting that segment drops it from the database although a later segment still
holds the copy; ``telemetryctl rebuild`` brings it back.

A compaction is safe to stop anywhere (a crash, kill -9, a full disk). Before the
transaction commits, nothing but the temporary file has changed. After it, until the
rename, the old file is still the segment's file: it is never loaded again (the
segment is complete) and the next run compacts it again, which deletes nothing more;
a rebuild in between reads it whole and its other events come back until then. Once
the usage file is in place, every reader takes it (daemon/segments.py: a usage file
exists only after the store recorded it), and the old file is a leftover for step 1.
So no event is ever stored twice, and no usage is lost. A rebuild reads the usage
file of every compacted segment: the same model requests, so the same totals
(``cost_by_model``, `telemetryctl report`) as before retention ran.

:func:`collect` runs it, in the store worker: the daemon asks for a run every
``interval`` seconds, and ``telemetryctl gc`` (optionally as a dry run) now.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import msgspec

from telemetryd.config import Retention as RetentionConfig
from telemetryd.daemon import segments as names
from telemetryd.daemon.segments import CLOSED_MODE, DAMAGE_ERRORS, list_segments, segment_seq
from telemetryd.store.database import Store

log = logging.getLogger(__name__)

DAY = 86400.0
GZIP_LEVEL = 6  # gzip's own default: most of level 9's ratio at a fraction of its time
USAGE_TYPES = ("api_request",)  # what the reports total: kept past max-age-days
# Kept with the usage: the analyzer's alerts (few), which it looks up so as never to
# raise one twice; dropped with the others, a budget alert came again within its month.
KEPT_TYPES = (*USAGE_TYPES, "alert")
_TMP_SUFFIX = ".tmp"
_BLOCK = 4 * 1024 * 1024


@dataclass
class Segment:
    """One journal segment as it is on disk."""

    seq: int
    files: list[str] = field(default_factory=list)  # plain, compressed, usage
    size: int = 0  # bytes of all its files
    mtime: float = 0.0  # the last write (of the file readers read)

    @property
    def source(self) -> str:
        """The file readers read (daemon/segments.py's preference)."""
        return min(self.files, key=names.preference)

    @property
    def name(self) -> str:
        return os.path.basename(self.source)

    @property
    def plain(self) -> str | None:
        """The plain file to compress, if the file readers read is one."""
        source = self.source
        return None if names.is_compressed(source) else source

    @property
    def kept(self) -> bool:
        """Whether only its usage is left (compacted)."""
        return any(names.is_usage(path) for path in self.files)

    @property
    def leftovers(self) -> list[str]:
        """The files of a compacted segment that are not its usage files."""
        if not self.kept:
            return []
        return [path for path in self.files if not names.is_usage(path)]


@dataclass
class Plan:
    delete: list[Segment]  # by age (past usage-max-age-days too, or no usage in it)
    compact: list[Segment]  # past max-age-days: keep the usage only
    shrink: list[Segment]  # by size, oldest first: usage goes too (a warning)
    compress: list[Segment]
    journal_bytes: int  # before


def scan(directory: str) -> list[Segment]:
    """Every segment in ``directory``, oldest first."""
    found: dict[int, Segment] = {}
    for seq, path in list_segments(directory):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        segment = found.setdefault(seq, Segment(seq))
        if not segment.files or names.preference(path) < names.preference(segment.source):
            segment.mtime = info.st_mtime
        segment.files.append(path)
        segment.size += info.st_size
    return sorted(found.values(), key=lambda segment: segment.seq)


def plan(
    segments: list[Segment],
    complete: set[int],
    active: str,
    config: RetentionConfig,
    now: float,
    hold_from: int = 0,
) -> Plan:
    """What to delete, compact and compress (see the module docstring). The size limit
    counts compacted segments at their present size: a dry run cannot know what a
    compaction will free, and a run plans the size anew after compacting."""
    total = sum(segment.size for segment in segments)
    left = total
    newest = segments[-1].seq if segments else None
    active_seq = segment_seq(os.path.basename(active))

    def may_touch(segment: Segment) -> bool:
        return segment.seq in complete and segment.seq not in (newest, active_seq)

    cutoff = now - config.max_age_days * DAY if config.max_age_days else None
    usage_cutoff = now - config.usage_max_age_days * DAY if config.usage_max_age_days else None
    delete: list[Segment] = []
    compact: list[Segment] = []
    shrink: list[Segment] = []
    for segment in segments:
        if not may_touch(segment):
            continue
        held = bool(hold_from) and segment.seq >= hold_from  # not forwarded yet
        old = cutoff is not None and segment.mtime < cutoff and not held
        usage_old = usage_cutoff is not None and segment.mtime < usage_cutoff
        if old and usage_old:
            delete.append(segment)
        elif config.max_bytes and left > config.max_bytes:
            shrink.append(segment)
        else:
            if old and not segment.kept:
                compact.append(segment)
            continue
        left -= segment.size
    doomed = {segment.seq for segment in delete + shrink + compact}
    compress = [
        segment
        for segment in segments
        if config.compress
        and segment.seq not in doomed
        and may_touch(segment)
        and segment.plain is not None
    ]
    return Plan(delete, compact, shrink, compress, total)


# -- compaction ------------------------------------------------------------------------


class _Line(msgspec.Struct):
    type: str | None = None
    id: str | None = None


_LINE = msgspec.json.Decoder(_Line)


def compact(segment: Segment, store: Store, *, compress: bool) -> int | None:
    """Keep only the usage lines of a complete segment (see the module docstring);
    return the events deleted from the database, or None when the segment holds no
    usage (or is not recorded complete): nothing is changed then, and the caller
    deletes it instead. OSError, or a DAMAGE_ERRORS one for a damaged ``.gz``, when it
    cannot be done (the segment stays as it was)."""
    source = segment.source
    final = names.usage_path(source, compressed=compress)
    directory = os.path.dirname(final)
    tmp = os.path.join(directory, "." + os.path.basename(final) + _TMP_SUFFIX)
    info = os.stat(source)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as raw:
            if compress:
                base = os.path.basename(final)[: -len(".gz")]
                with gzip.GzipFile(base, "wb", GZIP_LEVEL, raw, mtime=int(info.st_mtime)) as out:
                    kept, dropped = _copy_usage(source, out)
            else:
                kept, dropped = _copy_usage(source, raw)
            raw.flush()
            os.fchmod(raw.fileno(), CLOSED_MODE)  # read-only, as every closed segment
            os.fsync(raw.fileno())
        os.utime(tmp, ns=(info.st_atime_ns, info.st_mtime_ns))  # age is judged by mtime
        if not kept:
            os.unlink(tmp)
            return None

        def swap() -> None:
            os.rename(tmp, final)
            _fsync_dir(directory)
            for path in segment.files:
                if path != final:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            _fsync_dir(directory)

        deleted = store.compact(
            segment.seq, os.path.basename(final), kept, dropped, KEPT_TYPES, swap
        )
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if deleted is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return deleted


def _copy_usage(source: str, out: BinaryIO | gzip.GzipFile) -> tuple[int, list[str]]:
    """Write the usage lines of segment file ``source`` to ``out``: ``(their bytes, the
    ids of the other lines)``. Bytes after the last newline are not a line (left out,
    as loads leave them out)."""
    kept = 0
    dropped: list[str] = []
    with names.open_content(source) as content:
        carry = b""
        while block := content.read(_BLOCK):
            data = carry + block
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            for line in data[:cut].splitlines(keepends=True):
                try:
                    parsed = _LINE.decode(line)
                except msgspec.DecodeError:  # not an event: never stored either
                    continue
                if parsed.type in KEPT_TYPES:
                    out.write(line)
                    kept += len(line)
                elif parsed.id is not None:
                    dropped.append(parsed.id)
    return kept, dropped


# -- compression ----------------------------------------------------------------------


class _Sink:
    """A file that counts the bytes written to it and keeps none."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _compacted_size(segment: Segment, compress: bool) -> int:
    """The bytes :func:`compact` would leave of ``segment`` (its usage lines, gzipped
    with ``compress``); its present size when it cannot be read."""
    sink = _Sink()
    try:
        if compress:
            with gzip.GzipFile("usage", "wb", GZIP_LEVEL, sink) as out:
                _copy_usage(segment.source, out)
        else:
            _copy_usage(segment.source, sink)  # type: ignore[arg-type]
    except (OSError, *DAMAGE_ERRORS):
        return segment.size
    return sink.size


def _gzipped_size(path: str) -> int:
    """The bytes :func:`compress` would make of the plain file ``path``."""
    sink = _Sink()
    name = os.path.basename(path)
    with open(path, "rb") as src, gzip.GzipFile(name, "wb", GZIP_LEVEL, sink) as out:
        shutil.copyfileobj(src, out, _BLOCK)
    return sink.size


def compress(segment: Segment, store: Store) -> int:
    """Gzip a complete segment's plain file in place of it; return the bytes it takes now."""
    plain = segment.plain
    assert plain is not None
    directory = os.path.dirname(plain)
    final = plain + ".gz"
    tmp = os.path.join(directory, "." + os.path.basename(final) + _TMP_SUFFIX)
    info = os.stat(plain)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(plain, "rb") as src, open(fd, "wb") as raw:
            with gzip.GzipFile(
                os.path.basename(plain), "wb", GZIP_LEVEL, raw, mtime=int(info.st_mtime)
            ) as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            raw.flush()
            os.fsync(raw.fileno())
        os.utime(tmp, ns=(info.st_atime_ns, info.st_mtime_ns))  # age is judged by mtime
        # No load or rebuild may plan to read the plain file and find it gone.
        with store.exclusive():
            os.rename(tmp, final)
            _fsync_dir(directory)
            os.unlink(plain)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return os.stat(final).st_size


def remove_leftovers(directory: str) -> None:
    """Delete the temporary files of compressions and compactions that a crash
    interrupted."""
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if (
                name.startswith(".")
                and name.endswith(_TMP_SUFFIX)
                and segment_seq(name[1 : -len(_TMP_SUFFIX)]) is not None
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- a run ---------------------------------------------------------------------------


def collect(
    store: Store,
    directory: str,
    active: str,
    config: RetentionConfig,
    *,
    dry_run: bool = False,
    hold_from: int = 0,
) -> dict[str, Any]:
    """One run now over the journal in ``directory`` (``active``: the segment being
    written, never touched; ``hold_from``: segments from this number on are not yet
    forwarded, so age neither deletes nor compacts them); what was, or with
    ``dry_run`` would be, deleted, compacted and compressed. Blocks: the store worker
    runs it in a thread, after loading what is pending (so that finished segments count
    as complete)."""
    complete = store.complete_segments()
    found = scan(directory)
    now = time.time()
    # Age first (deletion, compaction), then compression, and only then the size limit,
    # on what is left: planned with the limit from the start, old segments due for
    # compaction went to the limit, which then deleted older usage that compacting them
    # would have kept.
    unlimited = msgspec.structs.replace(config, max_bytes=0)
    todo = plan(found, complete, active, unlimited, now, hold_from)
    if dry_run:  # a segment without usage would be deleted rather than compacted
        bare = [segment for segment in todo.compact if not _holds_usage(segment.source)]
        todo.delete += bare
        todo.compact = [segment for segment in todo.compact if segment not in bare]
        left = [segment for segment in found if segment not in todo.delete]
        if config.max_bytes and sum(segment.size for segment in left) > config.max_bytes:
            # The limit as the run will plan it: each segment to compact at the size of
            # its usage, each plain one at the size gzip makes of it (the work of
            # compacting and compressing, without writing anything)
            sizes = {seg.seq: _compacted_size(seg, config.compress) for seg in todo.compact}
            if config.compress:
                sizes |= {seg.seq: _gzipped_size(seg.source) for seg in todo.compress}
            left = [replace(seg, size=sizes.get(seg.seq, seg.size)) for seg in left]
            todo.shrink = plan(left, complete, active, config, now, hold_from).shrink
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "deleted": [segment.name for segment in todo.delete + todo.shrink],
        "compacted": [segment.name for segment in todo.compact],
        "compressed": [segment.name for segment in todo.compress],
        "events_deleted": None,
        "usage_deleted": None,
        "warning": None,
        "bytes_before": todo.journal_bytes,
        "bytes_after": None,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "failed": [],
    }
    if dry_run:
        # The usage the size limit would delete, and the run's warning about it
        usage = store.count_forgettable(_files(todo.shrink), USAGE_TYPES)
        report["usage_deleted"] = usage
        if usage:
            report["warning"] = _usage_warning(usage, todo.shrink, config, None)
        return report
    remove_leftovers(directory)
    _drop_leftovers(found, complete, store)
    events = 0
    deleted: list[Segment] = list(todo.delete)
    compacted: list[str] = []
    failed: list[str] = []  # "name: why", of what could not be done (tried next time)
    for segment in todo.compact:
        try:
            removed = compact(segment, store, compress=config.compress)
        except (OSError, *DAMAGE_ERRORS) as exc:  # a full disk, a damaged .gz: next time
            log.warning("retention: cannot compact %s: %s", segment.name, exc)
            failed.append(f"compact {segment.name}: {exc}")
            continue
        if removed is None:  # no usage in it: it goes
            deleted.append(segment)
            continue
        events += removed
        compacted.append(segment.name)
    aged, _ = store.forget_counting(_files(deleted))
    events += aged
    # Compression before the size limit: a plain segment then counts at its gzipped size,
    # so the limit deletes (the oldest, usage included) only what compression cannot fit.
    done_compressing = []
    if config.compress:
        plain = plan(
            scan(directory), store.complete_segments(), active, unlimited, time.time(), hold_from
        )
        for segment in plain.compress:
            try:
                compress(segment, store)
            except OSError as exc:  # disk full, say: the plain file stays, try next time
                log.warning("retention: cannot compress %s: %s", segment.name, exc)
                failed.append(f"compress {segment.name}: {exc}")
                continue
            done_compressing.append(segment.name)
    # (the sizes changed: the size limit is planned anew)
    todo = plan(scan(directory), store.complete_segments(), active, config, time.time(), hold_from)
    shrunk, usage = store.forget_counting(_files(todo.shrink), USAGE_TYPES)
    events += shrunk
    after = sum(segment.size for segment in scan(directory))
    report.update(
        deleted=[segment.name for segment in deleted + todo.shrink],
        compacted=compacted,
        compressed=done_compressing,
        events_deleted=events,
        usage_deleted=usage,
        bytes_after=after,
    )
    if usage:
        report["warning"] = _usage_warning(usage, todo.shrink, config, report["at"])
        log.warning("retention: %s", report["warning"])
    report["failed"] = failed  # (a gc run to free space must not say it had nothing to do)
    if report["deleted"] or compacted or done_compressing:
        log.info(
            "retention: %d segments deleted, %d compacted to their usage (%d events "
            "deleted), %d compressed; journal %d -> %d bytes",
            len(report["deleted"]),
            len(compacted),
            events,
            len(done_compressing),
            report["bytes_before"],
            after,
        )
    return report


def _usage_warning(
    usage: int, shrink: list[Segment], config: RetentionConfig, at: str | None
) -> str:
    """What is said when the size limit deletes usage: ``at`` the run's time, or None
    for a dry run (which says what would be deleted)."""
    done, when, was = ("would be", "", "is") if at is None else ("were", f" at {at}", "was")
    return (
        f"{usage} model requests (usage, otherwise kept for good) {done} deleted with the "
        f"oldest {len(shrink)} journal segments{when}: the journal {was} over [retention] "
        f"max-bytes ({config.max_bytes} bytes); raise it to keep usage"
    )


def _holds_usage(path: str) -> bool:
    """Whether segment file ``path`` has a usage line (True when it cannot be read)."""
    try:
        with names.open_content(path) as content:
            carry = b""
            while block := content.read(_BLOCK):
                data = carry + block
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                for line in data[:cut].splitlines():
                    with contextlib.suppress(msgspec.DecodeError):
                        if _LINE.decode(line).type in KEPT_TYPES:
                            return True
    except (OSError, *DAMAGE_ERRORS):
        return True
    return False


def _files(doomed: list[Segment]) -> dict[int, list[str]]:
    return {segment.seq: segment.files for segment in doomed}


def _drop_leftovers(found: list[Segment], complete: set[int], store: Store) -> None:
    """Unlink the old files of compacted segments (a compaction stopped after its usage
    file was in place: readers already take that one)."""
    for segment in found:
        if segment.seq not in complete or not segment.leftovers:
            continue
        with store.exclusive():
            for path in segment.leftovers:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        segment.files = [path for path in segment.files if names.is_usage(path)]
