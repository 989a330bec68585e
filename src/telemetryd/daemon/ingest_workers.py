"""Ingest workers: child processes that check lines for the daemon.

Checking lines (decoding, validation, the fields the daemon sets, canonical
encoding: :class:`~telemetryd.daemon.ingest.Checker`) is most of what ingest costs,
and one Python process does it on one core at a time (msgspec holds the GIL). So
an events connection that reads a big chunk (``OFFLOAD_MIN_BYTES`` of complete
lines or more) while workers run hands those lines to one of them, stops reading
until the answer is back, and then applies it exactly as if the daemon had checked
the lines itself (:meth:`~telemetryd.daemon.ingest.Feed.applied`): the dedup window,
the journal, acknowledgements and reply lines all stay in the daemon, one of each,
so exactly-once and every reply are the same with or without workers. Small chunks
(a hook's one event) are checked in the daemon: the round trip would cost more than
the check. When no worker has room, the daemon checks the chunk itself.

Processes: ``python -m telemetryd.daemon.ingest_worker FD`` (that module is the worker's
side, kept small: it does not import the daemon's event-loop libraries), at most
``count`` of them
(one per CPU, at most ``MAX_WORKERS``; none on a single CPU). They start when the
first big chunk arrives (chunks are checked in the daemon until one says it is
ready), stop after ``IDLE_EXIT`` seconds without a request and at shutdown (the
daemon closes its end of the socket; a worker exits at EOF), and never touch a file.
An idle daemon runs none of them (and no timer for them either): `status` shows how
many run (``ingest_workers``), and the log when they start and stop.
A worker that dies, or holds a chunk for ``ANSWER_TIMEOUT`` seconds, is killed (if
need be) and its chunks are checked in the daemon: nothing is lost or answered
twice. So is one whose answer makes no sense (one that cannot be decoded, or is far
bigger than the lines it answers for could make). After an exit that was not asked
for, the next start waits (1 s, doubling to 30 s, while they keep failing).

Messages on the socketpair (:mod:`telemetryd.daemon.ingest_worker` defines them): an
8-byte header (two big-endian 32-bit lengths), a msgpack array of that first length,
then raw bytes of the second (so the lines and the events are copied as little as
can be). The daemon sends a Hello, then a Request with each chunk's
lines; a worker answers an Answer with the canonical events, the first one (tag 0)
saying it is ready.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from telemetryd import wire
from telemetryd.daemon.ingest_worker import ANSWERS, HEADER, Answer, Hello, Request, message
from telemetryd.daemon.store_worker import describe_exit

log = logging.getLogger(__name__)

MAX_WORKERS = 4
OFFLOAD_MIN_BYTES = 16 * 1024  # smaller chunks are checked in the daemon
MAX_IN_FLIGHT = 4  # chunks handed to one worker at a time (one checked, the others waiting)
ANSWER_TIMEOUT = 30.0  # seconds a worker may hold a chunk before it is killed
IDLE_EXIT = 30.0  # seconds without a request before a worker is stopped
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0
_STOP_TIMEOUT = 5.0  # seconds stopped workers get to exit before they are killed
_TICK = 1.0  # seconds between the supervisor's looks at idle and stuck workers
_SOCKET_BUFFER = 1024 * 1024  # bytes (the kernel caps it at net.core.[rw]mem_max)
_BUFFER = 1024 * 1024  # the daemon's receive buffer per worker (grown for a bigger answer)
# An answer bigger than this many times the bytes its worker holds (plus _BUFFER) is
# garbage: a rejection reply can be ~60 times its line (a 2-byte line), never more.
_ANSWER_FACTOR = 128

Callback = Callable[[Answer | None], None]
TAKEN, FULL, NONE = 1, 2, 0  # what submit() did with a chunk


def default_count() -> int:
    """One worker per CPU, at most MAX_WORKERS; none with a single CPU (the daemon and
    a worker would share it)."""
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(MAX_WORKERS, cpus)


class _Worker:
    """The daemon's end of one worker: its socket, and the chunks it holds."""

    def __init__(self, sock: socket.socket, loop: Any) -> None:
        self.sock = sock
        self.loop = loop
        self.pid = 0
        self.ready = False
        self.closed = False
        self.asked = False  # the daemon asked it to exit (else its exit is a failure)
        self.held: dict[int, tuple[Callback, float, int]] = {}  # tag -> (callback, sent at, size)
        self.held_bytes = 0  # the sizes of the chunks it holds
        self.last_used = time.monotonic()
        self.buffer = bytearray(_BUFFER)  # what was received: [start, have) not read yet
        self.start = 0
        self.have = 0
        self._out = bytearray()  # what the socket did not take yet
        self._writing = False

    def send(self, parts: Sequence[bytes | memoryview]) -> None:
        """Send (or queue) a message; if the worker is gone, its reader sees that."""
        if self.closed:
            return
        if not self._out:
            try:
                sent = self.sock.sendmsg(parts)
            except BlockingIOError:
                sent = 0
            except OSError:  # EPIPE: it died; the EOF on its socket releases it
                return
            total = sum(len(part) for part in parts)
            if sent == total:
                return
            rest = b"".join(parts)[sent:]
            self._writing = True
            self.loop.add_writer(self.sock.fileno(), self._on_writable)
            self._out += rest
            return
        for part in parts:
            self._out += part

    def _on_writable(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            self._out.clear()
            sent = 0
        del self._out[:sent]
        if not self._out:
            self._writing = False
            self.loop.remove_writer(self.sock.fileno())

    def close(self) -> list[Callback]:
        """Stop using it; the callbacks of the chunks it held (to be checked elsewhere)."""
        if not self.closed:
            self.closed = True
            fd = self.sock.fileno()
            self.loop.remove_reader(fd)
            if self._writing:
                self.loop.remove_writer(fd)
            self.sock.close()
        held = [callback for callback, _, _ in self.held.values()]
        self.held.clear()
        self.held_bytes = 0
        return held


class Workers:
    """The ingest workers of one daemon: started when wanted, restarted after a pause
    when they die, stopped when idle (see the module docstring)."""

    def __init__(
        self,
        *,
        count: int | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.count = default_count() if count is None else count
        self.command = command or [sys.executable, "-m", "telemetryd.daemon.ingest_worker"]
        self._hello = list(message(Hello()))
        self._workers: list[_Worker] = []
        self._waiting: deque[Callable[[], object]] = deque()  # connections waiting for room
        self._next_tag = 1
        self._wanted = anyio.Event()
        self._stopping = False
        self._stop_asked = anyio.Event()
        self._all_exited = anyio.Event()  # set once stopping and no worker process is left
        self._watching = False  # the watch task runs (only while workers do)
        self._loop: Any = None
        self.starts = 0
        self.failures = 0  # exits that were not asked for, in a row
        self.last_exit: str | None = None  # the last exit that was not asked for
        self._resume_at = 0.0  # no start before (monotonic), after failures

    # -- what connections use ---------------------------------------------------------

    def submit(
        self,
        region: bytes | memoryview,
        lineno: int,
        max_line: int,
        max_attrs: int,
        max_depth: int,
        callback: Callback,
        *,
        job: int = 0,
        limit: int = 0,
        flags: int = 0,
        expect: int | None = None,
    ) -> int:
        """Hand ``region`` to a worker with room. TAKEN: ``callback`` is called on the
        event loop with the answer (or with None: check it yourself, the worker died).
        ``job``, ``limit``, ``flags``: an OTLP job instead of lines (see Request);
        ``expect``: the bytes its events may take, when more than ``region``'s.
        FULL: every worker has its share; ask again when :meth:`call_when_free` calls
        back. NONE: no worker is ready (check it yourself); they are started."""
        best: _Worker | None = None
        ready = False
        for worker in self._workers:
            if worker.ready and not worker.closed:
                ready = True
                if len(worker.held) < MAX_IN_FLIGHT and (
                    best is None or len(worker.held) < len(best.held)
                ):
                    best = worker
        if len(self._workers) < self.count and not self._stopping:
            self._wanted.set()  # (the supervisor starts the missing ones, after any pause)
        if best is None:
            return FULL if ready else NONE
        tag = self._next_tag
        self._next_tag += 1
        now = time.monotonic()
        size = max(len(region), expect or 0)
        best.held[tag] = (callback, now, size)
        best.held_bytes += size
        best.last_used = now
        request = Request(tag, lineno, max_line, max_attrs, max_depth, job, limit, flags)
        best.send([*message(request, region), region])
        return TAKEN

    def call_when_free(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (once, in turn with the others waiting) when a worker has
        room again, or has gone."""
        self._waiting.append(callback)

    def pass_turn(self) -> None:
        """A worker took an answer off its share (or a connection waiting for room has
        nothing left to hand over): the next in line may ask."""
        if self._waiting:
            self._waiting.popleft()()

    def stop(self) -> None:
        """Stop every worker (daemon shutdown); :meth:`run` then returns."""
        self._stopping = True
        self._stop_asked.set()
        self._wanted.set()
        for worker in list(self._workers):
            self._stop(worker)

    def status(self) -> wire.IngestWorkersStatus:
        return wire.IngestWorkersStatus(
            running=sum(1 for worker in self._workers if worker.ready and not worker.closed),
            max=self.count,
            starts=self.starts,
            last_exit=self.last_exit,
        )

    # -- the supervisor ---------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the workers when wanted, watch them, stop them when idle. Nothing that
        goes wrong here stops the daemon: chunks are then checked in the daemon."""
        import asyncio

        self._loop = asyncio.get_running_loop()
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                await self._supervise(tg)
                # Stopping: every worker saw its socket close; give them a moment to exit
                # (those still running then are killed as their tasks are cancelled).
                if self._workers:
                    with anyio.move_on_after(_STOP_TIMEOUT):
                        await self._all_exited.wait()
                tg.cancel_scope.cancel()
        except Exception:  # a bug: no more workers, ingest goes on without them
            log.exception("ingest workers failed; the daemon checks every chunk itself")
            self._stopping = True
            for worker in list(self._workers):
                self._stop(worker)

    async def _supervise(self, tg: anyio.abc.TaskGroup) -> None:
        while not self._stopping:
            await self._wanted.wait()
            self._wanted = anyio.Event()
            if self._stopping:
                break
            delay = self._resume_at - time.monotonic()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._stop_asked.wait()
                if self._stopping:
                    break
            missing = self.count - len(self._workers)
            for _ in range(missing):
                await tg.start(self._serve_one)
            if missing > 0 and self._workers:
                log.info("ingest workers started (%d running)", len(self._workers))
            if self._workers and not self._watching:
                self._watching = True
                tg.start_soon(self._watch)

    async def _serve_one(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """One worker process, from its start to its exit."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (ours, theirs):
            # Room for a few chunks each way: neither side waits for the other to read
            # while it is busy (the daemon writing the journal, a worker checking).
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        worker = _Worker(ours, self._loop)
        self._workers.append(worker)
        started = False
        try:
            with theirs:
                try:
                    process = await anyio.open_process(
                        [*self.command, str(theirs.fileno())],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=None,  # the daemon's: one log
                        pass_fds=[theirs.fileno()],
                    )
                except OSError as exc:
                    log.error("cannot start an ingest worker: %s", exc)
                    self._failed()
                    return
            self.starts += 1
            worker.pid = process.pid
            ours.setblocking(False)
            self._loop.add_reader(ours.fileno(), self._on_readable, worker)
            worker.send(self._hello)
            log.debug("ingest worker started (pid %d)", process.pid)
            task_status.started()
            started = True
            async with process:
                code = await process.wait()
            if not worker.asked:
                self.last_exit = describe_exit(code)
                log.warning(
                    "ingest worker (pid %d) exited (%s); its chunks are checked in the daemon",
                    process.pid,
                    self.last_exit,
                )
                self._failed()
            elif code == 0:
                self.failures = 0
        finally:
            self._workers.remove(worker)
            self._release(worker)
            if self._stopping and not self._workers:
                self._all_exited.set()
            if not started:
                task_status.started()

    def _failed(self) -> None:
        self.failures += 1
        pause = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (self.failures - 1))
        self._resume_at = time.monotonic() + pause

    def _stop(self, worker: _Worker) -> None:
        """Ask ``worker`` to exit (idle, a hang, shutdown): it exits at EOF."""
        worker.asked = True
        self._release(worker)

    def _release(self, worker: _Worker) -> None:
        """Stop using ``worker`` (asked to exit, or gone): what it held is checked in the
        daemon."""
        for callback in worker.close():
            callback(None)
        # Those waiting for room ask again (and check their lines themselves if no worker
        # is left).
        waiting, self._waiting = self._waiting, deque()
        for retry in waiting:
            retry()

    async def _watch(self) -> None:
        """While workers run: stop idle ones, kill one that holds a chunk too long."""
        try:
            while self._workers:
                await anyio.sleep(_TICK)
                self._look()
        finally:
            self._watching = False

    def _look(self) -> None:
        now = time.monotonic()
        idle = 0
        for worker in list(self._workers):
            if worker.closed:
                continue
            if worker.held:
                oldest = min(sent for _, sent, _ in worker.held.values())
                if now - oldest > ANSWER_TIMEOUT:
                    log.error(
                        "ingest worker (pid %d) did not answer within %.0f s; killing it",
                        worker.pid,
                        ANSWER_TIMEOUT,
                    )
                    self._kill(worker)
            elif now - worker.last_used > IDLE_EXIT:
                self._stop(worker)
                idle += 1
        if idle:
            log.info(
                "ingest workers idle for %.0f s: stopped %d (%d left)",
                IDLE_EXIT,
                idle,
                sum(1 for worker in self._workers if not worker.closed),
            )

    def _kill(self, worker: _Worker) -> None:
        """Stop using ``worker`` and kill it (it is stuck, or makes no sense): its exit
        counts as a failure (logged, in `status`, and the next start waits)."""
        self._release(worker)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)

    def _on_readable(self, worker: _Worker) -> None:
        try:
            self._receive(worker)
        except Exception:  # a bug: this worker is not used again
            log.exception("reading from ingest worker (pid %d) failed; stopping it", worker.pid)
            self._stop(worker)

    def _receive(self, worker: _Worker) -> None:
        """Read what ``worker`` sent; hand each whole answer to its chunk's callback."""
        buffer = worker.buffer
        view = memoryview(buffer)
        try:
            got = worker.sock.recv_into(view[worker.have :])
        except BlockingIOError:
            view.release()
            return
        except OSError:
            got = 0
        if not got:  # the worker is gone: its process task logs why
            view.release()
            self._release(worker)
            return
        have = worker.have + got
        start = worker.start
        size = HEADER.size
        whole = 0  # the size of a message not received whole yet
        while have - start >= size:
            meta_size, data_size = HEADER.unpack_from(buffer, start)
            meta_end = start + size + meta_size
            end = meta_end + data_size
            answer = None
            if end - start <= _BUFFER + _ANSWER_FACTOR * worker.held_bytes:
                if have < end:
                    whole = end - start
                    break
                with contextlib.suppress(msgspec.DecodeError):
                    answer = ANSWERS.decode(view[start + size : meta_end])
            if answer is None:
                log.error("ingest worker (pid %d) sent a bad answer; killing it", worker.pid)
                view.release()
                self._kill(worker)
                return
            answer.checked.data = bytes(view[meta_end:end])
            start = end
            if answer.tag == 0:
                worker.ready = True
                continue
            held = worker.held.pop(answer.tag, None)
            if held is not None:
                callback, _, held_size = held
                worker.held_bytes -= held_size
                callback(answer)
                self.pass_turn()
        if start == have:
            start = have = 0
        elif len(buffer) - have < _BUFFER // 4 or start + whole > len(buffer):
            # Little room left after the part received (or not enough for its message):
            # move it to the front, and grow the buffer if the message needs it.
            rest = have - start
            view[:rest] = view[start:have]
            start, have = 0, rest
        view.release()
        if whole > len(buffer):
            worker.buffer = buffer + bytearray(whole - len(buffer))
        worker.start, worker.have = start, have
