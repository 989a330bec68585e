"""Reader processes for ``telemetryctl import``: files read and parsed on other cores.

Reading an agent's files (decoding each line, building and counting the events) is most
of what an import costs, and one Python process does it on one core. With enough to
read (:data:`MIN_BYTES`), the import starts ``size`` reader processes
(``python -m telemetryd.client.import_reader``, one per CPU, at most
:data:`MAX_READERS`; none on one CPU) and hands them the files (an OpenCode database in
parts of rows), each reader one file at a time, at most :data:`AHEAD` files ahead.

The importing process keeps what makes an import exactly-once, one of each: it takes
the readers' results in the order of the files, whichever reader finished first, and
decides there which events are new (the set of keys sent, :class:`importer._Seen`),
sends those on its one connection, adds the counts, and records the state of the files.
A reader drops the repeats within its file; an event that repeats one of an earlier
file has its counts taken back (``Summary.uncount``). So the events sent, their order
and the summary are those of reading the files one after the other in one process.

Memory stays bounded: a reader sends its events in batches of about
``importer.OUTBOX_BYTES``; the results of files that are not next in order are held up
to :data:`HELD_BYTES` per reader, after which that reader is not read (it waits on its
full pipe). A file a reader cannot read is one problem in the summary, with its path;
the other files are imported. A reader that dies is reported with the file it was
reading; the files it was given next go to the others (or are read in this process when
none is left).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telemetryd.client import import_reader
from telemetryd.client.delivery import EventStream, wait
from telemetryd.client.import_reader import AGENT, CALLS, CHUNK, DONE, UNIT, frame
from telemetryd.client.importer import EARLY, EARLY_REQUEST, Importer, model_calls

MAX_READERS = 2
MIN_BYTES = 32 << 20  # less to read than this: read in the importing process
AHEAD = 2  # files given to a reader at a time (one read, the next waiting)
HELD_BYTES = 16 << 20  # results held per reader for files not next in order
QUEUED_BYTES = 8 << 20  # event lines waiting to be sent to the daemon
DB_ROWS = 20_000  # rows per part of an OpenCode database
STOP_GRACE = 5.0  # seconds a reader has to exit once stopped, before it is killed
_READ = 1 << 20
_EARLY = (EARLY_REQUEST, EARLY)  # events sent without their line

BATCH_BYTES = 4 << 20  # small files are given to a reader together, up to this many bytes
BATCH_FILES = 256  # ... and files
DB_BYTES = BATCH_BYTES  # a database's part is given alone

Part = tuple[int, int, int] | None  # rows (index, first rowid, last rowid) of a database
Unit = tuple[int, list[tuple[Path, Part]]]  # (seq, files): what a reader is given at once


def units(files: list[tuple[Path, Part, int]]) -> list[Unit]:
    """``(path, part, size)`` in order, as the units given to readers: consecutive small
    files together, up to BATCH_BYTES and BATCH_FILES."""
    out: list[Unit] = []
    batch: list[tuple[Path, Part]] = []
    held = 0
    for path, part, size in files:
        if batch and (held + size > BATCH_BYTES or len(batch) >= BATCH_FILES):
            out.append((len(out), batch))
            batch, held = [], 0
        batch.append((path, part))
        held += size
    if batch:
        out.append((len(out), batch))
    return out


def default_size() -> int:
    """Reader processes for this machine: one per CPU, at most :data:`MAX_READERS`; none
    on one CPU (the importing process itself mostly waits for them)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(MAX_READERS, cpus or 1) if (cpus or 1) > 1 else 0


@dataclass
class _Reader:
    proc: subprocess.Popen[bytes]
    fd: int
    buffer: bytearray = field(default_factory=bytearray)
    given: deque[int] = field(default_factory=deque)  # seqs, in order
    finished: set[int] = field(default_factory=set)  # seqs whose DONE came
    held: int = 0  # bytes of frames received and not yet taken
    alive: bool = True


@dataclass
class _Result:
    frames: deque[tuple[int, list[Any]]] = field(default_factory=deque)  # (size, message)
    reader: _Reader | None = None  # None: to be read in this process


class Pool:
    """Up to ``size`` reader processes, started when the first import needs them and kept
    for the next agents' imports; :meth:`close` stops them (it is a context manager).
    ``peak_rss_kb`` holds each stopped reader's peak RSS (from ``wait4``)."""

    def __init__(self, size: int | None = None, min_bytes: int = MIN_BYTES) -> None:
        self.size = default_size() if size is None else size
        self.min_bytes = min_bytes
        self.readers: list[_Reader] = []
        self.peak_rss_kb: list[int] = []
        self.started = False

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wanted(self, total_bytes: int) -> bool:
        """Whether to read ``total_bytes`` with reader processes: MIN_BYTES or more, or
        a tenth of that once they run (an earlier agent's import started them)."""
        if self.size <= 0:
            return False
        running = any(reader.alive for reader in self.readers)
        return total_bytes >= (self.min_bytes // 10 if running else self.min_bytes)

    def start(self) -> None:
        """Start the reader processes now, if they are not running (so that they start
        while the import waits for something else)."""
        if not self.started:
            self._start()

    def _start(self) -> None:
        self.started = True
        command = [sys.executable, "-m", "telemetryd.client.import_reader"]
        for _ in range(self.size):
            try:
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            except OSError:
                break  # read in this process (or by the readers that started)
            assert proc.stdout is not None
            with contextlib.suppress(OSError, AttributeError):  # Linux: a bigger pipe
                import fcntl

                fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, _READ)
            os.set_blocking(proc.stdout.fileno(), False)
            self.readers.append(_Reader(proc, proc.stdout.fileno()))

    def close(self) -> None:
        for reader in self.readers:
            self._stop(reader)
        self.readers = []

    def _stop(self, reader: _Reader) -> None:
        """End ``reader``: its input closed (it exits when it has nothing left to do), its
        output too (one still writing, when the import stopped early, gets EPIPE rather
        than a full pipe that nobody reads); killed after STOP_GRACE seconds."""
        reader.alive = False
        proc = reader.proc
        assert proc.stdin is not None and proc.stdout is not None
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        if proc.returncode is not None:
            return
        deadline = time.monotonic() + STOP_GRACE
        try:
            while not (done := os.wait4(proc.pid, os.WNOHANG))[0]:
                if time.monotonic() >= deadline:
                    proc.kill()
                    done = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.01)
        except ChildProcessError:
            return
        _, status, usage = done
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.peak_rss_kb.append(usage.ru_maxrss)

    def read(
        self,
        importer: Importer,
        units: list[Unit],
        stream: EventStream | None,
        progress: Callable[[int], None] | None = None,
    ) -> set[Path]:
        """Read ``units`` (in this order) into ``importer``'s summary, sending the new
        events' lines on ``stream`` (None: a dry run); the paths that could not be read.
        Lines wait in ``stream``'s queue (up to QUEUED_BYTES) while the readers are read,
        so that neither the daemon nor the readers wait for the other."""
        if not self.started:
            self._start()
        since = importer.since_time.isoformat() if importer.since_time is not None else None
        # (the price data, read here while the readers start: they are given its tiers)
        rest = [importer.live_after, importer.imported_sizes, list(importer.tier_starts)]
        for reader in self.readers:
            if reader.alive:
                message = [AGENT, importer.agent, since, importer.model_calls, importer.exported]
                self._give(reader, [*message, *rest])
        results = {seq: _Result() for seq, _ in units}
        by_seq = {unit[0]: unit for unit in units}
        failed: set[Path] = set()
        waiting = deque(units)
        for seq, files in units:
            result = results[seq]
            while True:
                live = [r for r in self.readers if r.alive]
                self._hand_out(waiting, live, results)
                if result.reader is None:  # no reader left to give it to: read here
                    waiting.popleft()
                    self._read_here(importer, files, failed)
                    break
                if result.frames and (stream is None or stream.queued < QUEUED_BYTES):
                    size, message = result.frames.popleft()
                    result.reader.held -= size
                    if message[0] == CHUNK:
                        self._apply(importer, message, stream)
                        continue
                    self._done(importer, message, failed, by_seq, progress)
                    break
                self._wait(result.reader, live, results, waiting, by_seq, stream)
            del results[seq]
        return failed

    def copilot_calls(self, paths: list[Path]) -> dict[str, list[float]]:
        """``importer.model_calls(paths)``, the exports shared among the readers (read
        here when none is left, or for those of a reader that dies meanwhile)."""
        if not self.started:
            self._start()
        live = [r for r in self.readers if r.alive and not r.given]
        shares = {r.fd: paths[n :: len(live)] for n, r in enumerate(live)}
        for reader in live:
            self._give(reader, [CALLS, -1, [str(p) for p in shares[reader.fd]]])
        found: list[dict[str, list[float]]] = []
        waiting = {r.fd: r for r in live}
        while waiting:
            ready = wait(list(waiting))
            for fd in ready:
                reader = waiting[fd]
                try:
                    data = os.read(fd, _READ)
                except BlockingIOError:
                    continue
                if not data:  # it died: its share is read here
                    self._stop(reader)
                    found.append(model_calls(shares.pop(fd)))
                    del waiting[fd]
                    continue
                reader.buffer += data
                if len(reader.buffer) >= 4:
                    size = int.from_bytes(reader.buffer[:4], "big")
                    if len(reader.buffer) >= 4 + size:
                        found.append(import_reader.decode(bytes(reader.buffer[4 : 4 + size]))[2])
                        del reader.buffer[: 4 + size]
                        del waiting[fd]
        if not live:
            found.append(model_calls(paths))
        calls: dict[str, list[float]] = {}
        for part in found:
            for session, times in part.items():
                calls.setdefault(session, []).extend(times)
        return {session: sorted(times) for session, times in calls.items()}

    def _give(self, reader: _Reader, message: list[Any]) -> None:
        assert reader.proc.stdin is not None
        with contextlib.suppress(OSError):  # it died: the end of its output says so
            reader.proc.stdin.write(frame(message))
            reader.proc.stdin.flush()

    def _hand_out(
        self, waiting: deque[Unit], live: list[_Reader], results: dict[int, _Result]
    ) -> None:
        while waiting:
            free = [r for r in live if len(r.given) < AHEAD]
            if not free:
                return
            reader = min(free, key=lambda r: len(r.given))
            seq, files = waiting.popleft()
            reader.given.append(seq)
            results[seq].reader = reader
            self._give(reader, [UNIT, seq, [[str(path), part] for path, part in files]])

    def _wait(
        self,
        head: _Reader,
        live: list[_Reader],
        results: dict[int, _Result],
        waiting: deque[Unit],
        by_seq: dict[int, Unit],
        stream: EventStream | None,
    ) -> None:
        """Wait for the readers and the daemon: read from the readers that hold less than
        HELD_BYTES (``head``, the next file's, among them); send queued lines and read
        the daemon's replies."""
        # (The head's reader too: what it holds is the next file's, taken once sent.)
        watched = [r for r in live if r.held < HELD_BYTES]
        ready = wait([r.fd for r in watched], stream)
        for reader in watched:
            if reader.fd not in ready:
                continue
            try:
                data = os.read(reader.fd, _READ)
            except BlockingIOError:
                continue
            if not data:
                self._lost(reader, results, waiting, by_seq)
                continue
            reader.buffer += data
            self._frames(reader, results)

    def _frames(self, reader: _Reader, results: dict[int, _Result]) -> None:
        buffer = reader.buffer
        at = 0
        while len(buffer) - at >= 4:
            size = int.from_bytes(buffer[at : at + 4], "big")
            if len(buffer) - at - 4 < size:
                break
            message = import_reader.decode(memoryview(buffer)[at + 4 : at + 4 + size])
            at += 4 + size
            seq = message[1]
            if message[0] == DONE:
                reader.given.remove(seq)
            results[seq].frames.append((size, message))
            reader.held += size
        del buffer[:at]

    def _lost(
        self,
        reader: _Reader,
        results: dict[int, _Result],
        waiting: deque[Unit],
        by_seq: dict[int, Unit],
    ) -> None:
        """A reader's output ended: the file it was reading is a problem, the files it
        was given next go back to be given to the others (or read here)."""
        self._stop(reader)
        given = list(reader.given)
        reader.given.clear()
        if not given:
            return
        first, rest = given[0], given[1:]
        status = reader.proc.returncode
        problems = [[str(path), f"its reader process exited (status {status})"]
                    for path, _ in by_seq[first][1]]  # fmt: skip
        results[first].frames.append((0, [DONE, first, None, problems]))
        back = []
        for seq in rest:
            results[seq].reader = None
            back.append(by_seq[seq])
        waiting.extendleft(reversed(back))

    def _apply(self, importer: Importer, message: list[Any], stream: EventStream | None) -> None:
        _, _, keys, codes, lines = message
        digests = [keys[i : i + 16] for i in range(0, len(keys), 16)]
        summary = importer.summary
        if importer.seen.add_new(digests):
            if stream is not None and lines:
                # (one line per event but those before --since, which have none)
                count = len(codes) - sum(map(codes.count, _EARLY))
                stream.queue(lines, count)
                summary.sent += count
            return
        out = bytearray()
        count = 0
        texts = iter(lines.split(b"\n"))
        for digest, code in zip(digests, codes, strict=True):
            line = None if code in _EARLY else next(texts)
            if importer.seen.add(digest):
                if line is not None:
                    out += line
                    out += b"\n"
                    count += 1
                continue
            event = import_reader.decode_event(line) if line is not None else None
            summary.uncount(code, event, importer.tier_starts)
        if stream is not None and out:
            stream.queue(bytes(out), count)
            summary.sent += count

    def _done(
        self,
        importer: Importer,
        message: list[Any],
        failed: set[Path],
        by_seq: dict[int, Unit],
        progress: Callable[[int], None] | None,
    ) -> None:
        data, problems = message[2:]
        if data is not None:
            part = import_reader.summary_of(data)
            importer.summary.merge(part)
            if progress is not None and part.bytes:
                progress(part.bytes)
        for path, problem in problems:
            importer.summary.rejections.append(f"{path}: {problem}")
            failed.add(Path(path))

    def _read_here(
        self, importer: Importer, files: list[tuple[Path, Part]], failed: set[Path]
    ) -> None:
        for path, part in files:
            if not importer.read_or_note(path, part):
                failed.add(path)
