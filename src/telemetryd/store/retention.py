"""Retention: how much journal is kept, and compression of closed segments.

On disk, in ``journal/``::

    20261121T233532Z-000007.jsonl      a segment as written
    20261121T233532Z-000007.jsonl.gz   the same lines, gzipped once the segment is
                                       closed and materialized (same mtime)
    .20261121T233532Z-000007.jsonl.gz.tmp   a compression under way (a crash leaves it;
                                       the next run removes it)

Only segments that the store records as complete (closed, and loaded into the
database to their end) are ever touched, and never the one being written. Each
run, with the ``[retention]`` settings read afresh:

1. **Deletion**, oldest first, passing over the segments it may not touch: a
   segment whose last write (mtime) is older than ``max-age-days`` goes, and so
   do the oldest ones while the journal (plain and compressed files) is larger
   than ``max-bytes``. The database drops the same events in the same step
   (:meth:`Store.forget`: the ids read from the segment, deleted in one
   transaction before the file), so journal and database agree. An event whose
   id was journaled twice (resent after the dedup window) is stored once, from
   its first segment: deleting that segment drops it from the database although
   a later segment still holds the copy; ``telemetryctl rebuild`` brings it back.
2. **Compression** (``compress = true``) of the other complete plain segments:
   written to a hidden temporary file, fsynced, renamed into place, then the plain
   file is unlinked. While both exist, every reader takes the plain one; DuckDB
   reads the ``.gz`` directly, so the store (and ``rebuild``) work the same.

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
from dataclasses import dataclass, field
from typing import Any

from telemetryd.config import Retention as RetentionConfig
from telemetryd.daemon.segments import GZ_SUFFIX, SUFFIX, list_segments, segment_seq
from telemetryd.store.database import Store

log = logging.getLogger(__name__)

DAY = 86400.0
GZIP_LEVEL = 6  # gzip's own default: most of level 9's ratio at a fraction of its time
_TMP_SUFFIX = ".tmp"


@dataclass
class Segment:
    """One journal segment as it is on disk."""

    seq: int
    files: list[str] = field(default_factory=list)  # plain and/or compressed
    size: int = 0  # bytes of all its files
    mtime: float = 0.0  # the last write (of the plain file while it exists)

    @property
    def name(self) -> str:
        return os.path.basename(self.plain or self.files[0])

    @property
    def plain(self) -> str | None:
        return next((path for path in self.files if path.endswith(SUFFIX)), None)


@dataclass
class Plan:
    delete: list[Segment]
    compress: list[Segment]
    journal_bytes: int  # before


def scan(directory: str) -> list[Segment]:
    """Every segment in ``directory``, oldest first."""
    segments: dict[int, Segment] = {}
    for seq, path in list_segments(directory):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        segment = segments.setdefault(seq, Segment(seq))
        segment.files.append(path)
        segment.size += info.st_size
        if path.endswith(SUFFIX) or not segment.mtime:
            segment.mtime = info.st_mtime
    return sorted(segments.values(), key=lambda segment: segment.seq)


def plan(
    segments: list[Segment],
    complete: set[int],
    active: str,
    config: RetentionConfig,
    now: float,
) -> Plan:
    """What to delete and what to compress (see the module docstring)."""
    total = sum(segment.size for segment in segments)
    left = total
    newest = segments[-1].seq if segments else None
    active_seq = segment_seq(os.path.basename(active))

    def may_touch(segment: Segment) -> bool:
        return segment.seq in complete and segment.seq not in (newest, active_seq)

    cutoff = now - config.max_age_days * DAY if config.max_age_days else None
    delete: list[Segment] = []
    for segment in segments:
        too_old = cutoff is not None and segment.mtime < cutoff
        too_big = bool(config.max_bytes) and left > config.max_bytes
        if not (too_old or too_big) or not may_touch(segment):
            continue
        delete.append(segment)
        left -= segment.size
    doomed = {segment.seq for segment in delete}
    compress = [
        segment
        for segment in segments
        if config.compress
        and segment.seq not in doomed
        and may_touch(segment)
        and segment.plain is not None
    ]
    return Plan(delete, compress, total)


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
    """Delete the temporary files of compressions that a crash interrupted."""
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") and name.endswith(GZ_SUFFIX + _TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def collect(
    store: Store,
    directory: str,
    active: str,
    config: RetentionConfig,
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """One run now over the journal in ``directory`` (``active``: the segment being
    written, never touched); what was, or with ``dry_run`` would be, deleted and
    compressed. Blocks: the store worker runs it in a thread, after loading what is
    pending (so that finished segments count as complete)."""
    if not dry_run:
        remove_leftovers(directory)
    todo = plan(scan(directory), store.complete_segments(), active, config, time.time())
    after = todo.journal_bytes - sum(segment.size for segment in todo.delete)
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "deleted": [segment.name for segment in todo.delete],
        "compressed": [segment.name for segment in todo.compress],
        "events_deleted": None,
        "bytes_before": todo.journal_bytes,
        "bytes_after": None if dry_run else after,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if dry_run:
        return report
    report["events_deleted"] = store.forget({segment.seq: segment.files for segment in todo.delete})
    compressed = []
    for segment in todo.compress:
        try:
            after += compress(segment, store) - segment.size
        except OSError as exc:  # disk full, say: the plain file stays, try next time
            log.warning("retention: cannot compress %s: %s", segment.name, exc)
            continue
        compressed.append(segment.name)
    report.update(compressed=compressed, bytes_after=after)
    if report["deleted"] or report["compressed"]:
        log.info(
            "retention: %d segments deleted (%d events), %d compressed; journal %d -> %d bytes",
            len(report["deleted"]),
            report["events_deleted"],
            len(compressed),
            report["bytes_before"],
            after,
        )
    return report
