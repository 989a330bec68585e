"""The daemon's side of the store worker: starting it when needed, asking it, watching it.

The daemon never imports DuckDB. A child process, the store worker
(store/worker.py: ``python -m telemetryd.store serve``), owns the database: it loads
the journal, answers queries, rebuilds, and runs retention. This module:

- binds the worker's socket once (``run/store.sock``, 0600) and hands the listening
  socket to every worker it starts, so a request made while a worker starts, or
  restarts after a crash, waits in the socket's backlog instead of failing;
- starts the worker when something needs it (a query, a flush, a rebuild, `gc`, the
  load timer of :meth:`StoreClient.run`) and stops it after ``store.idle-exit``
  seconds without a request (0: never);
- restarts it with backoff when it dies, and kills it when it stops answering pings
  (its event loop is stuck), logging each; `status` shows the worker's state;
- at shutdown, after the journal is closed, asks for a last load and stops it.

Each request is a connection to the worker: one request line, reply lines, end. The
reply's last line is an ``"ok"`` object or a Closing line; a connection that ends
before it means the worker died while answering, and the request fails with
``store_unavailable``. Ingest never waits for any of this.
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
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any

import anyio
import msgspec
from anyio.abc import Process, TaskStatus

from telemetryd import config, paths, wire
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners.sockets import listen_private
from telemetryd.errors import TelemetryError

log = logging.getLogger(__name__)

SOCKET_NAME = "store.sock"
PING_EVERY = 5.0  # seconds between pings of a running worker
PING_TIMEOUT = 20.0  # a worker whose event loop does not answer this long is killed
STOP_TIMEOUT = 30.0  # seconds a stopping worker gets before it is killed
REQUEST_GRACE = 60.0  # past its own timeout, a query's answer may take this long to end
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
STATS_WAIT = 2.0  # `status` gives the last figures if the worker takes longer (a client waits 5 s)
RESTART_WAIT = 2.0  # a request not yet taken by a killed worker waits for a restart this soon
_READ_CHUNK = 256 * 1024
# Ingest is busy (a timed load waits: StoreClient.run) while the journal takes at least
# this many events a second, measured over at least BUSY_LOOK seconds (or fewer, once a
# look has counted more than BUSY_LOOK seconds' worth).
BUSY_EVENTS_PER_S = 5_000
BUSY_LOOK = 0.25

Send = Callable[[bytes], Coroutine[Any, Any, None]]


class WorkerError(TelemetryError):
    """The store worker answered a request with an error (``code`` says which)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(WorkerError):
    """The database cannot be used now: the worker has not opened it (yet), or the
    daemon has none."""


class WorkerGone(StoreUnavailable):
    """The store worker died, or could not be started, before it answered."""

    def __init__(self, message: str) -> None:
        super().__init__(wire.STORE_UNAVAILABLE, message)


def bind_socket(path: str) -> socket.socket:
    """The worker's listening socket at ``path`` (0600, replacing a stale file: only
    this daemon, which holds the instance lock, binds it)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return listen_private(path, 64)


class StoreWorker:
    """The worker process: started on demand, restarted with backoff, stopped when idle."""

    def __init__(
        self,
        where: paths.Paths,
        settings: config.Config,
        *,
        command: list[str] | None = None,
    ) -> None:
        self.where = where
        self.settings = settings
        self.path = os.path.join(where.runtime_dir, SOCKET_NAME)
        self.command = command or [sys.executable, "-m", "telemetryd.store", "serve"]
        self._listener: socket.socket | None = None
        self._process: Process | None = None
        self._wanted = anyio.Event()
        self._failure = _Failure()  # set (and replaced) when a start or a run fails
        self._exited = anyio.Event()  # set (and replaced) when a worker process ends
        self._stopping = False
        self._stop_asked = anyio.Event()
        self.requests = 0  # requests under way
        self._last_request = time.monotonic()
        self.state = "stopped"  # stopped | starting | running | stopping | failed
        self.pid: int | None = None
        self.starts = 0
        self.failures = 0  # exits that were not asked for, in a row
        self.last_exit: str | None = None
        self.error: str | None = None  # why the last start or run failed
        self._pricing: Any = None  # the [pricing] the running worker has (to_builtins)

    # -- what callers use ------------------------------------------------------

    def want(self) -> None:
        """Start the worker if it is not running (returns at once)."""
        self._last_request = time.monotonic()
        self._wanted.set()

    async def request(
        self, message: wire.WorkerRequest, on_line: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """Send one request and hand each reply line (with its ``\n``) to ``on_line``.
        Raises WorkerGone when the worker dies, or cannot be started, before the last
        line (a request waiting in the backlog through a clean restart just waits)."""
        if not isinstance(message, wire.WorkerPrices):
            await self._send_prices()
        self.requests += 1
        self.want()
        failure = self._failure
        try:
            try:
                stream = await anyio.connect_unix(self.path)
            except OSError as exc:
                raise WorkerGone(f"cannot reach the store worker: {exc}") from None
            finished = False
            async with stream, anyio.create_task_group() as tg:

                async def give_up() -> None:
                    # A worker that dies ends the connections it had accepted (the
                    # relay sees the end). One still in the backlog is the next
                    # worker's, when the next one starts soon (see _fail).
                    nonlocal failure
                    waited = False  # (through one restart at most)
                    while True:
                        await failure.event.wait()
                        if not failure.restarts or waited:
                            break
                        failure, waited = self._failure, True
                    tg.cancel_scope.cancel()

                tg.start_soon(give_up)
                await stream.send(wire.ENCODER.encode(message) + b"\n")
                finished = await _relay(stream, on_line)
                tg.cancel_scope.cancel()
            if finished:
                self.failures = 0  # it works: a later crash restarts it without delay
            else:
                raise WorkerGone(
                    f"the store worker stopped before it answered ({self.error or 'it died'}); "
                    "it is restarted: ask again"
                )
        finally:
            self.requests -= 1
            self._last_request = time.monotonic()

    async def _send_prices(self) -> None:
        """Give a running worker the ``[pricing]`` settings a reload changed, before any
        other request: its loads price with what the daemon runs with (a worker started
        later takes them with the rest of its settings)."""
        pricing = msgspec.to_builtins(self.settings.pricing)
        if self._pricing is None or pricing == self._pricing:
            return
        try:
            await self.call(wire.WorkerPrices(pricing=pricing))
        except StoreUnavailable:  # (asked again with the next request)
            raise
        except WorkerError as exc:  # (not asked again: the request goes on)
            log.warning("store worker: the reloaded [pricing] settings were refused: %s", exc)
        else:
            log.info("store worker: later loads price with the reloaded [pricing] settings")
        self._pricing = pricing

    async def call(self, message: wire.WorkerRequest) -> dict[str, Any]:
        """A request with a one-line answer: the reply object, or WorkerError."""
        lines: list[bytes] = []

        async def keep(line: bytes) -> None:
            lines.append(line)

        await self.request(message, keep)
        reply = msgspec.json.decode(lines[-1])
        if not isinstance(reply, dict):
            raise WorkerError(wire.STORE_UNAVAILABLE, f"the store worker answered {lines[-1]!r}")
        if reply.get("ok") is not True:
            code, text = str(reply.get("error")), str(reply.get("message"))
            if code == wire.STORE_UNAVAILABLE:
                raise StoreUnavailable(code, text)
            raise WorkerError(code, text)
        return reply

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "pid": self.pid,
            "starts": self.starts,
            "last_exit": self.last_exit,
            "error": self.error,
            "requests": self.requests,
        }

    @property
    def running(self) -> bool:
        return self.state == "running"

    # -- the supervisor --------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the worker whenever it is wanted, watch it, stop it when idle."""
        self._listener = bind_socket(self.path)
        task_status.started()
        try:
            delay = 0.0
            while not self._stopping:
                await self._wanted.wait()
                self._wanted = anyio.Event()
                if self._stopping:
                    break
                if delay:  # (a shutdown does not wait for the backoff)
                    with anyio.move_on_after(delay):
                        await self._stop_asked.wait()
                    if self._stopping:
                        break
                clean = await self._run_once()
                if clean:
                    self.failures = 0
                else:  # backoff while it keeps failing without answering anything
                    self.failures += 1
                delay = 0.0 if not self.failures else _backoff(self.failures)
                # Wants from while it ran were for it; requests still waiting (in the
                # backlog, or that raced its exit) need another.
                self._wanted = anyio.Event()
                if self.requests:
                    self._wanted.set()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._listener.close()

    async def _run_once(self) -> bool:
        """Start one worker and watch it until it exits; True if it ended as asked."""
        assert self._listener is not None
        self.state = "starting"
        self.starts += 1
        startup = {
            "paths": {
                "runtime_dir": self.where.runtime_dir,
                "state_dir": self.where.state_dir,
                "config_dir": self.where.config_dir,
            },
            "config": msgspec.to_builtins(self.settings),
        }
        self._pricing = startup["config"]["pricing"]
        env = dict(os.environ, TELEMETRYD_STORE_FD=str(self._listener.fileno()))
        try:
            process = await anyio.open_process(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=None,  # the daemon's: one log
                env=env,
                pass_fds=[self._listener.fileno()],
                # Its own process group: a Ctrl-C at the terminal is the daemon's to
                # handle (it stops the worker in order). The worker exits by itself
                # if the daemon dies (its stdin closes).
                start_new_session=True,
            )
        except OSError as exc:
            self.state = "failed"
            self.error = f"cannot start the store worker: {exc}"
            log.error("%s", self.error)
            self._fail(restarts=False)
            return False
        self._process = process
        self.pid = process.pid
        assert process.stdin is not None
        await process.stdin.send(msgspec.json.encode(startup) + b"\n")
        self.state = "running"
        log.info("store worker started (pid %d)", process.pid)
        asked = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, process, tg.cancel_scope)
            code = await process.wait()
            tg.cancel_scope.cancel()
            asked = self.state == "stopping"
        with contextlib.suppress(Exception):
            await process.aclose()
        self._process = None
        self.pid = None
        self.last_exit = describe_exit(code)
        exited, self._exited = self._exited, anyio.Event()
        exited.set()
        if asked and code == 0:
            self.state = "stopped"
            self.error = None
            log.info("store worker stopped (%s)", "idle" if not self._stopping else "shutdown")
            return True
        self.state = "failed"
        self.error = f"the store worker exited unexpectedly ({self.last_exit})"
        log.error("%s; it is restarted when needed", self.error)
        # Killed (kill -9, the kernel's OOM killer, a crash), not failing to start: the
        # requests waiting in the backlog wait for the restart if it comes soon.
        killed = code is not None and code < 0
        soon = _backoff(self.failures + 1) <= RESTART_WAIT
        self._fail(restarts=killed and soon and not self._stopping)
        return False

    def _fail(self, restarts: bool) -> None:
        """Requests waiting for this worker give up (the next ones start another),
        unless it ``restarts`` soon: then those it had not taken wait for the next
        worker (and give up if that one fails too)."""
        failure, self._failure = self._failure, _Failure()
        failure.restarts = restarts
        failure.event.set()

    async def _watch(self, process: Process, scope: anyio.CancelScope) -> None:
        """Stop an idle worker; kill one whose event loop no longer answers."""
        idle_exit = self.settings.store.idle_exit
        while True:
            await anyio.sleep(PING_EVERY)
            if self.state != "running":
                continue
            idle = time.monotonic() - self._last_request
            if idle_exit and not self.requests and idle >= idle_exit:
                self._terminate(process)
                continue
            try:
                with anyio.fail_after(PING_TIMEOUT):
                    await self._ping()
            except (TimeoutError, WorkerError) as exc:
                if self.state != "running":
                    continue
                log.error(
                    "store worker (pid %d) is not answering (%s); killing it", process.pid, exc
                )
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    async def _ping(self) -> None:
        stream = await anyio.connect_unix(self.path)
        async with stream:
            await stream.send(wire.ENCODER.encode(wire.WorkerPing()) + b"\n")
            await stream.receive()

    def _terminate(self, process: Process) -> None:
        self.state = "stopping"
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        """Stop the worker for good (daemon shutdown): SIGTERM, then kill after a while."""
        self._stopping = True
        self._stop_asked.set()
        self._wanted.set()
        process = self._process
        if process is None:
            return
        exited = self._exited
        self._terminate(process)
        with anyio.move_on_after(STOP_TIMEOUT) as waited:
            await exited.wait()
        if waited.cancelled_caught:
            log.error("store worker did not stop within %.0f s; killing it", STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                process.kill()


class _Failure:
    """A run of the worker failed (``event``), and whether the next one starts soon."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.restarts = False


async def _relay(stream: Any, on_line: Callable[[bytes], Awaitable[None]]) -> bool:
    """Pass each whole line from ``stream`` on; whether the answer's last line came."""
    chunks: list[bytes] = []
    finished = False
    while True:
        try:
            data = await stream.receive(_READ_CHUNK)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return finished
        start = 0
        while (cut := data.find(b"\n", start)) >= 0:
            chunks.append(data[start : cut + 1])
            line = b"".join(chunks)
            chunks = []
            start = cut + 1
            finished = _is_last(line)
            await on_line(line)
        if start < len(data):
            chunks.append(data[start:])


def _backoff(failures: int) -> float:
    """Seconds before the next start after ``failures`` failed runs in a row: 0.5 s for
    the first, doubling to 30 s."""
    return float(min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (failures - 1)))


def _is_last(line: bytes) -> bool:
    """Whether a reply line ends a request's answer (an ok object or a Closing line)."""
    head = line[:32]
    return head.startswith(b'{"ok"') or head.startswith(b'{"error"')


def describe_exit(code: int | None) -> str:
    """A child process's exit as a person reads it (a ``returncode``: negative for a signal)."""
    if code is None:
        return "unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


class ExportRuns:
    """How the continuous export's runs went (this run of the daemon), for `status`.
    The figures are the directory's: a reload that names another starts them afresh."""

    def __init__(self) -> None:
        self.next_run: float | None = None
        self._reset("")

    def _reset(self, target: str) -> None:
        self.dir = target
        self.running = False
        self.runs = 0
        self.last_run: float | None = None
        self.last_events: int | None = None
        self.last_files: int | None = None
        self.total_events: int | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.failures = 0

    def start(self, target: str) -> None:
        if target != self.dir:
            self._reset(target)
        self.running = True

    def done(self, report: dict[str, Any]) -> None:
        self.running = False
        self.runs += 1
        self.failures = 0
        self.last_run = time.time()
        self.last_events = int(report.get("events") or 0)
        self.last_files = len(report.get("files") or ())
        self.total_events = int(report.get("total_events") or 0)

    def failed(self, error: str) -> None:
        self.running = False
        self.failures += 1
        self.last_error, self.last_error_at = error, time.time()

    def status(self, settings: config.Export) -> wire.ExportStatus | None:
        if not settings.parquet_dir:
            return None
        same = settings.parquet_dir == self.dir
        return wire.ExportStatus(
            dir=settings.parquet_dir,
            interval_s=settings.interval,
            state="exporting" if self.running and same else "waiting",
            runs=self.runs if same else 0,
            last_run=_iso(self.last_run) if same else None,
            last_events=self.last_events if same else None,
            last_files=self.last_files if same else None,
            total_events=self.total_events if same else None,
            last_error=self.last_error if same else None,
            last_error_at=_iso(self.last_error_at) if same else None,
            failures=self.failures if same else 0,
            next_run=_iso(self.next_run),
        )


class StoreClient:
    """What the daemon's control operations and timers ask of the store."""

    def __init__(self, worker: StoreWorker, journal: Journal, settings: config.Config) -> None:
        self.worker = worker
        self.journal = journal
        self.settings = settings
        self._seen = 0  # journal.events_written when the last load was asked for
        self.failure: str | None = None
        self.last_stats: dict[str, Any] | None = None
        self.last_stats_at: float | None = None
        self.last_gc: dict[str, Any] | None = None  # the last retention run's report
        # The first segment a consumer of the journal (the forwarder) still needs;
        # retention leaves it and later ones to the size limit only.
        self.hold_from: Callable[[], int] | None = None
        # The last retention run's warning that usage was deleted (until a restart).
        self.usage_warning: str | None = None
        # Run after each load: the running totals ask for the costs the worker computed
        # (Operations.price_totals, daemon/totals.py); set by the daemon.
        self.after_load: Callable[[], Awaitable[None]] | None = None
        self._costs_wanted = False  # a load (and the costs after it) is due: want_costs()
        self.exports = ExportRuns()  # the continuous export's runs (`[export] parquet-dir`)
        self._reloaded = anyio.Event()  # set (and replaced) by settings_changed()
        # A due load waiting for ingest to calm down (_yield_to_ingest): since when (epoch
        # seconds), and how many loads have waited so far.
        self.yielding_since: float | None = None
        self.yields = 0
        self._mark = (time.monotonic(), 0)  # (when, events_written) of the last rate look
        self._rate = 0.0

    async def refresh(self, *, costs: bool = True, yielding: bool = False) -> int:
        """Load everything journaled so far (starting the worker); the new events stored.
        Then, with ``costs``, :attr:`after_load` (its failures are logged). A
        ``yielding`` load (the timer's) makes way for a query after a batch
        (wire.WorkerLoad); what it left stays pending, for the next one."""
        written = self.journal.events_written
        self._costs_wanted = False
        try:
            reply = await self.worker.call(wire.WorkerLoad(yielding=yielding))
        except WorkerError as exc:
            self.failure = str(exc)
            raise
        if reply.get("caught_up", True):
            self._seen = max(self._seen, written)
        self.failure = None
        if costs and self.after_load is not None:
            try:
                await self.after_load()
            except (WorkerError, OSError) as exc:  # (still pending: asked after the next load)
                log.warning("running totals: computed costs not fetched: %s", exc)
        return int(reply.get("materialized", 0))

    def want_costs(self) -> None:
        """Have the load timer load (starting the worker if needed) and fetch the costs
        of the running totals' cost-less requests within ``store.interval`` seconds."""
        self._costs_wanted = True

    async def costs(
        self, ids: list[str], since: datetime | None
    ) -> list[tuple[str, float | None, str | None]]:
        """(id, cost, cost_source) of the stored api_requests among ``ids`` (at most
        wire.MAX_COST_IDS), at or after ``since``."""
        reply = await self.worker.call(wire.WorkerCosts(ids=ids, since=since))
        try:
            return msgspec.convert(reply.get("costs"), list[tuple[str, float | None, str | None]])
        except msgspec.ValidationError as exc:
            raise WorkerError(wire.QUERY_FAILED, f"the store worker's costs: {exc}") from None

    @property
    def pending(self) -> int:
        """Events journaled since the last load that was asked for (or query answered)."""
        return self.journal.events_written - self._seen

    async def refresh_or_log(self, *, costs: bool = True, yielding: bool = False) -> None:
        with contextlib.suppress(WorkerError):
            await self.refresh(costs=costs, yielding=yielding)

    async def rebuild(self) -> dict[str, Any]:
        """A rebuild in the worker: its report (wire.RebuildReply's fields)."""
        self._seen = self.journal.events_written
        reply = await self.worker.call(wire.WorkerRebuild())
        reply.pop("ok", None)
        return reply

    async def collect(self, *, dry_run: bool = False) -> dict[str, Any]:
        """A retention run in the worker (store/retention.py)."""
        request = wire.WorkerGc(
            dry_run=dry_run,
            active=self.journal.segment,
            retention=msgspec.to_builtins(self.settings.retention),
            hold_from=self.hold_from() if self.hold_from is not None else 0,
        )
        reply = await self.worker.call(request)
        reply.pop("ok", None)
        if not dry_run:
            self.last_gc = reply
            self.usage_warning = reply.get("warning") or self.usage_warning
            if reply.get("deleted") or reply.get("compacted"):
                # (their events' ids are no longer duplicates: sent again, they are kept)
                await self.journal.renew_dedup()
        return reply

    async def reprice(self, since: str | None) -> dict[str, Any]:
        """Price the stored requests again with the ``[pricing]`` settings as loaded now."""
        self._seen = self.journal.events_written
        request = wire.WorkerReprice(
            since=since, pricing=msgspec.to_builtins(self.settings.pricing)
        )
        reply = await self.worker.call(request)
        reply.pop("ok", None)
        return reply

    @property
    def last(self) -> dict[str, Any] | None:
        """The last retention run's report, with the last warning any run gave."""
        if self.last_gc is None:
            return None
        return {**self.last_gc, "warning": self.last_gc.get("warning") or self.usage_warning}

    async def query(self, request: wire.QueryRequest, send: Send) -> None:
        """Answer a query: the worker loads what was acknowledged until now, runs the
        query, and its reply lines are passed on to ``send`` as they come."""
        timeout = min(request.timeout or self.settings.store.query_timeout, wire.MAX_QUERY_TIMEOUT)
        if request.accepted:
            await send(wire.encode_line(wire.QueryAccepted(accepted=True, timeout=timeout)))
        written = self.journal.events_written
        message = wire.WorkerQuery(
            sql=request.sql,
            params=request.params,
            timeout=timeout,
            upto=self.journal.written_to,
        )
        complete = False

        async def relay(line: bytes) -> None:
            nonlocal complete
            # (its last line, without a warning: everything journaled before the query
            # was loaded first, so it is no longer pending)
            if line.startswith(b'{"ok":true') and b'"warning"' not in line:
                complete = True
            await send(line)

        try:
            with anyio.fail_after(timeout + REQUEST_GRACE):
                await self.worker.request(message, relay)
            if complete:
                self._seen = max(self._seen, written)
        except WorkerGone as exc:
            await send(wire.encode_line(wire.Closing(exc.code, str(exc))))
        except TimeoutError:
            message_text = f"the store worker did not finish the query within {timeout:g} s"
            await send(wire.encode_line(wire.Closing(wire.QUERY_TIMEOUT, message_text)))

    async def stats(self) -> dict[str, Any]:
        """The store's figures: asked of the worker when it runs (never started for
        this) and answering within STATS_WAIT, else the last ones it gave, with when."""
        if self.worker.running:
            with anyio.move_on_after(STATS_WAIT), contextlib.suppress(WorkerError):
                reply = await self.worker.call(wire.WorkerStats())
                reply.pop("ok", None)
                self.last_stats, self.last_stats_at = reply, time.time()
        out: dict[str, Any] = dict(self.last_stats or {"open": False})
        out["worker"] = self.worker.status()
        out["as_of"] = _iso(self.last_stats_at)
        out["pending_events"] = self.pending
        out["yielding_since"] = _iso(self.yielding_since)
        out["yields"] = self.yields
        if self.failure and not out.get("error"):
            out["error"] = self.failure
        if self.worker.error and not out.get("error"):
            out["error"] = self.worker.error
        return out

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Ask for a load every ``store.interval`` seconds while events are pending, and
        as soon as ``store.pending-events`` were journaled (settings read afresh, so a
        reload applies); a retention run every ``retention.interval`` seconds; an export
        every ``export.interval`` seconds when ``export.parquet-dir`` is set."""
        task_status.started()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._retention)
            tg.start_soon(self._export)
            while True:
                with anyio.move_on_after(self.settings.store.interval):
                    while (
                        self.journal.events_written - self._seen
                        < self.settings.store.pending_events
                    ):
                        await self.journal.changed()
                        self.ingest_rate()  # (a look starts with a burst, not before it)
                if self.journal.events_written != self._seen or self._costs_wanted:
                    await self._yield_to_ingest()
                    await self.refresh_or_log(yielding=True)

    def ingest_rate(self) -> float:
        """Events a second the journal took lately: since the previous look, when that
        was at least BUSY_LOOK seconds ago (else the rate that look found, unless the
        events since already make a busy rate). The timed loop looks at each journal
        change it waits for, so after a quiet spell a look starts with the first events
        of a burst: the load that the burst makes due (``store.pending-events`` of them,
        in milliseconds) sees how fast they came, rather than their average over the
        quiet spell before."""
        now = time.monotonic()
        written = self.journal.events_written
        at, count = self._mark
        if now - at >= BUSY_LOOK:
            self._rate = (written - count) / (now - at)
            self._mark = (now, written)
        elif written - count > BUSY_EVENTS_PER_S * BUSY_LOOK:
            return (written - count) / max(now - at, 1e-6)
        return self._rate

    async def _yield_to_ingest(self) -> None:
        """Let a timed load wait while ingest is busy, at most ``store.yield-max``
        seconds. The journal is what acknowledges an event, so while a flood is being
        acknowledged both cores go to it (DuckDB's load takes about a third of the CPU
        an OTLP record costs); the store catches up afterwards, in bigger loads. Queries
        and flushes load what they need themselves and never wait here; `status` shows
        the wait (``store.yielding_since``) and what is left to load."""
        limit = self.settings.store.yield_max
        if limit <= 0 or self.ingest_rate() < BUSY_EVENTS_PER_S:
            return
        started = time.monotonic()
        self.yielding_since = time.time()
        self.yields += 1
        try:
            while time.monotonic() - started < limit:
                await anyio.sleep(BUSY_LOOK)
                if self.ingest_rate() < BUSY_EVENTS_PER_S:
                    break
        finally:
            self.yielding_since = None

    async def export(
        self, target: str, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, Any]:
        """A Parquet export run in the worker (store/export.py): its report."""
        reply = await self.worker.call(wire.WorkerExport(dir=target, since=since, until=until))
        reply.pop("ok", None)
        return reply

    def settings_changed(self) -> None:
        """A reload applied new settings: the timers waiting on an interval look again."""
        reloaded, self._reloaded = self._reloaded, anyio.Event()
        reloaded.set()

    async def _sleep(self, interval: Callable[[], float], note: Callable[[float], None]) -> None:
        """Sleep ``interval()`` seconds, counted from now; a reload that changes the
        interval moves the end at once (``note`` is told each end, for `status`)."""
        started = time.time()
        while True:
            end = started + interval()
            note(end)
            reloaded = self._reloaded
            with anyio.move_on_after(max(0.0, end - time.time())):
                await reloaded.wait()
                continue
            return

    async def _export(self) -> None:
        """Export to ``[export] parquet-dir`` every ``[export] interval`` seconds (settings
        read afresh, so a reload applies; an empty directory turns it off)."""
        runs = self.exports

        def note(end: float) -> None:
            runs.next_run = end

        while True:
            await self._sleep(lambda: self.settings.export.interval, note)
            target = self.settings.export.parquet_dir
            if not target:
                continue
            runs.start(target)
            try:
                report = await self.export(target)
            except WorkerError as exc:  # a full disk, the worker restarting: next time
                again = runs.failures > 0 and runs.last_error == str(exc)  # (the log: once)
                log.log(logging.DEBUG if again else logging.WARNING,
                        "export to %s failed: %s", target, exc)  # fmt: skip
                runs.failed(str(exc))
            else:
                runs.done(report)

    def export_status(self) -> wire.ExportStatus | None:
        """The continuous export's figures for `status`; None when it is off."""
        return self.exports.status(self.settings.export)

    async def _retention(self) -> None:
        while True:
            await self._sleep(lambda: self.settings.retention.interval, lambda end: None)
            try:
                await self.collect()
            except WorkerError as exc:  # not open yet, say: next time
                log.warning("retention skipped: %s", exc)


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
