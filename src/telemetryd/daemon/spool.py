"""Spool intake: the events that clients could not deliver, journaled by the daemon.

On disk::

    spool/NAME.jsonl                   one event per line, written by a client under a
                                       temporary name (``.NAME.tmp``) and renamed whole
    quarantine/spool-NAME.jsonl        a spool file with rejected lines, kept as it was
    quarantine/spool-NAME.jsonl.errors its rejections, one Rejected reply line each, as
                                       the events socket would have answered them

The daemon reads the spool at start and every ``spool.scan-interval`` seconds, in file
name order, through the same :class:`~telemetryd.daemon.ingest.Feed` as a socket
connection (same framing, validation and limits, bounded reads of ``ingest.read-size``).
Once every accepted event of a file is journaled, the file is deleted, or moved to
``quarantine/`` when some lines were rejected (their valid neighbours are journaled all
the same). Ids make a replay idempotent. An ``.errors`` file lists at most
:data:`MAX_ERROR_BYTES` of rejections, then one ``{"omitted": N}`` line.

Only regular files are read. Anything else named ``*.jsonl`` (a FIFO, a directory, a
socket, a device, a symbolic link) is never read or followed: it is left where it is and
logged once per name (again only if it goes away and comes back). The check is made
without blocking: ``lstat`` first, then ``open`` with ``O_NOFOLLOW | O_NONBLOCK`` and
``fstat`` on what was opened, so an entry swapped between the two is caught as well.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable

import anyio

from telemetryd.config import Config
from telemetryd.daemon.ingest import Batch, Feed, Ingestor
from telemetryd.daemon.journal import Journal
from telemetryd.errors import JournalError
from telemetryd.paths import Paths

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
MAX_ERROR_BYTES = 1024 * 1024  # rejections kept per quarantined file; the rest are counted
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class NotRegular(Exception):
    """A spool entry is not a regular file; its message says what it is."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str) -> int | None:
    """A read-only descriptor for ``path`` if it is a regular file; None if it is gone.

    Raises :class:`NotRegular` for anything else, without reading it, following it or
    blocking on it (a FIFO opened with O_NONBLOCK returns at once).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(mode):
        raise NotRegular(_kind(mode))
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link (swapped in)
            raise NotRegular("a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a socket (swapped in)
            raise NotRegular("a socket") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegular(_kind(mode))
    return fd


class SpoolIntake:
    """Reads the spool directory into the journal (see the module docstring).

    ``settle(feed)`` waits until everything ``feed`` accepted is journaled (the server's
    own, so that a spool file is removed on the same condition a connection is acked on).
    """

    def __init__(
        self,
        paths: Paths,
        config: Config,
        ingestor: Ingestor,
        journal: Journal,
        settle: Callable[[Feed], Awaitable[None]],
    ) -> None:
        self.paths = paths
        self.config = config
        self.ingestor = ingestor
        self.journal = journal
        self.settle = settle
        self._reported: set[str] = set()  # entries already logged as not ingestible
        self._stuck: set[str] = set()  # files that could be neither ingested nor quarantined

    async def spool_loop(self) -> None:
        while True:
            try:
                await self.ingest_spool()
            except JournalError as exc:
                log.warning("spool intake paused: %s", exc)
            except OSError as exc:
                log.error("spool intake failed: %s", exc)
            await anyio.sleep(self.config.spool.scan_interval)

    async def ingest_spool(self) -> int:
        """Journal the events clients left in the spool; return how many files were taken."""
        spool = self.paths.spool_dir
        try:
            names = sorted(n for n in os.listdir(spool) if n.endswith(SUFFIX))
        except FileNotFoundError:
            return 0
        # An entry that went away is reported again if it comes back; the sets stay bounded.
        self._reported &= set(names)
        self._stuck &= self._reported
        taken = 0
        for name in names:
            if name in self._stuck:
                continue
            path = os.path.join(spool, name)
            try:
                taken += await self._ingest_spool_file(path)
            except (JournalError, anyio.get_cancelled_exc_class()):
                raise
            except NotRegular as exc:
                self._report(name, "spool entry %s is %s: not read; remove it", path, exc)
            except OSError as exc:
                # This file cannot be read (EIO, EACCES, ...): it must not stop the others.
                self._set_aside(name, path, f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                log.exception("spool file %s could not be ingested", path)
                self._set_aside(name, path, f"{type(exc).__name__}: {exc}")
        return taken

    def _report(self, name: str, message: str, *args: object) -> None:
        """Log ``message`` unless this entry was reported already (once per name)."""
        if name not in self._reported:
            self._reported.add(name)
            log.warning(message, *args)

    def _set_aside(self, name: str, path: str, reason: str) -> None:
        """Quarantine a file that failed as a whole; if even that fails, skip it from now on."""
        try:
            target = self._quarantine_spool(path, json.dumps({"error": reason}).encode() + b"\n")
        except OSError as exc:
            self._report(name, "spool file %s: %s; cannot quarantine it (%s)", path, reason, exc)
            self._stuck.add(name)
            return
        log.error("spool file %s could not be ingested (%s); kept in %s", path, reason, target)

    def _quarantine_spool(self, path: str, errors: bytes) -> str:
        """Move ``path`` to quarantine/ with its errors; the errors file is complete first,
        so a spool file that has left spool/ always has its reasons next to it."""
        target = os.path.join(self.paths.quarantine_dir, "spool-" + os.path.basename(path))
        os.makedirs(self.paths.quarantine_dir, mode=0o700, exist_ok=True)
        temp = target + ".errors.tmp"
        with open(temp, "wb") as f:
            f.write(errors)
        os.replace(temp, target + ".errors")
        os.replace(path, target)
        return target

    async def _ingest_spool_file(self, path: str) -> int:
        """Journal one file's events; return 1 if the file was taken, 0 if it was gone."""
        fd = await anyio.to_thread.run_sync(open_regular, path)
        if fd is None:
            return 0
        feed = Feed(self.ingestor)
        errors = _Errors()

        async def deliver(batch: Batch | None, replies: list[bytes]) -> None:
            errors.extend(replies)
            if batch is not None:
                await self.journal.submit(batch)

        try:
            size = self.config.ingest.read_size
            while chunk := await anyio.to_thread.run_sync(os.read, fd, size):
                await deliver(*feed.feed(chunk))
                while feed.sync_requested:
                    await deliver(*feed.resume())
        finally:
            os.close(fd)
        await deliver(*feed.end())
        await self.settle(feed)
        if feed.rejected:
            target = self._quarantine_spool(path, errors.data())
            log.warning("spool file %s: %d lines rejected; kept in %s", path, feed.rejected, target)
        else:
            os.unlink(path)
        log.info(
            "spool file %s: %d events journaled, %d duplicates",
            path,
            feed.accepted,
            feed.duplicates,
        )
        return 1


class _Errors:
    """A quarantined file's rejection lines, up to :data:`MAX_ERROR_BYTES`."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.size = 0
        self.omitted = 0

    def extend(self, replies: list[bytes]) -> None:
        for reply in replies:
            if self.size + len(reply) > MAX_ERROR_BYTES:
                self.omitted += 1
                continue
            self.lines.append(reply)
            self.size += len(reply)

    def data(self) -> bytes:
        tail = [f'{{"omitted":{self.omitted}}}\n'.encode()] if self.omitted else []
        return b"".join(self.lines + tail)
