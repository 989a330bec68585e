"""The store worker: the process that owns DuckDB, started by the daemon when needed.

The daemon binds the worker's socket (``run/store.sock``, 0600) and passes the
listening socket to each worker it starts (``TELEMETRYD_STORE_FD``), so requests made
while a worker starts or restarts wait in the socket's backlog and none is lost. The
daemon writes the effective configuration as one JSON line on the worker's stdin and
keeps stdin open: end of file means the daemon is gone, and the worker exits.

Each connection carries one request (wire.py, ``WorkerMessage``) and its reply lines.
Loads, rebuilds and retention run one at a time; queries run in their own slots
(store/queries.py). On SIGTERM the worker stops accepting, lets requests under way
finish (within :data:`DRAIN_SECONDS`), closes the database and exits 0. The daemon
decides when the worker is idle and stops it so (daemon/store_worker.py). The worker
runs at a lower CPU priority (nice 10, set in store/startup.py) than the daemon: a long
query or a bulk load must not slow down acknowledgements, or the agents' hooks, on a
small machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
from anyio.abc import SocketListener, SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from telemetryd import config, paths, wire
from telemetryd.daemon import segments
from telemetryd.errors import ExportError
from telemetryd.store.database import Store
from telemetryd.store.queries import Queries, Send
from telemetryd.store.service import OPEN_WAIT, StoreService, StoreUnavailable, open_store
from telemetryd.store.startup import EarlyOpen

log = logging.getLogger(__name__)

ENV_FD = "TELEMETRYD_STORE_FD"
MAX_REQUEST = 1024 * 1024  # bytes of one request line (a query's SQL and parameters)
DRAIN_SECONDS = 20.0  # requests under way get this long to finish at SIGTERM
_REQUEST_WAIT = 30.0  # seconds a connection may take to send its request line
# A query first loads what was journaled before it, for at most this share of its
# timeout (StoreService.refresh); the answer says what it then leaves out.
LOAD_SHARE = 0.5


class Startup(msgspec.Struct, forbid_unknown_fields=True):
    """What the daemon tells a worker it starts (the first line on its stdin)."""

    paths: dict[str, str]
    config: dict[str, Any]


class Worker:
    """One worker process's requests, served on the daemon's listening socket."""

    def __init__(
        self,
        where: paths.Paths,
        settings: config.Config,
        early: EarlyOpen[Store] | None = None,
    ) -> None:
        self.where = where
        self.settings = settings

        def opener() -> Store:
            store = early.take() if early is not None else None  # the first attempt's
            if store is None:
                store = open_store(where, settings.store, pricing=settings.pricing)
            return store

        self.service = StoreService(where.journal_dir, opener, where.database, where)
        self.queries = Queries(memory_cap=settings.store.query_memory_cap())
        self.active = 0

    async def serve(self, listener: socket.socket) -> None:
        """Serve until SIGTERM or until the daemon goes away."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.service.open)
            tg.start_soon(_until_stdin_closes, tg.cancel_scope)  # the daemon is gone: stop
            stop = anyio.Event()
            tg.start_soon(_until_sigterm, stop)
            async with anyio.create_task_group() as requests:
                async with anyio.create_task_group() as accepting:
                    accepting.start_soon(self._accept, listener, requests)
                    await stop.wait()
                    accepting.cancel_scope.cancel()
                # SIGTERM: no more requests; those under way get a deadline to finish.
                requests.cancel_scope.deadline = anyio.current_time() + DRAIN_SECONDS
            tg.cancel_scope.cancel()
        await anyio.to_thread.run_sync(self.service.close)

    async def _accept(self, listener: socket.socket, requests: TaskGroup) -> None:
        server = await SocketListener.from_socket(listener)
        while True:
            stream = await server.accept()
            requests.start_soon(self._connection, stream)

    async def _connection(self, stream: SocketStream) -> None:
        self.active += 1
        try:
            async with stream:
                try:
                    with anyio.fail_after(_REQUEST_WAIT):
                        line = await BufferedByteReceiveStream(stream).receive_until(
                            b"\n", MAX_REQUEST
                        )
                    request = wire.WORKER_DECODER.decode(line)
                except (anyio.EndOfStream, anyio.IncompleteRead, TimeoutError):
                    return
                except (anyio.DelimiterNotFound, msgspec.DecodeError) as exc:
                    await _send(stream, _closing(wire.BAD_REQUEST, str(exc)))
                    return
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await self._answer(request, stream)
        finally:
            self.active -= 1

    async def _answer(self, request: wire.WorkerRequest, stream: SocketStream) -> None:
        async def send(data: bytes) -> None:
            await stream.send(data)

        code = {
            wire.WorkerLoad: wire.LOAD_FAILED,
            wire.WorkerRebuild: wire.REBUILD_FAILED,
            wire.WorkerGc: wire.GC_FAILED,
            wire.WorkerAnalyze: wire.ANALYZE_FAILED,
            wire.WorkerReprice: wire.REPRICE_FAILED,
            wire.WorkerPrices: wire.REPRICE_FAILED,
            wire.WorkerExport: wire.EXPORT_FAILED,
        }.get(type(request), wire.QUERY_FAILED)
        try:
            if isinstance(request, wire.WorkerQuery):
                await self._query(request, send)
                return
            reply = await self._operation(request)
        except StoreUnavailable as exc:
            await send(_closing(wire.STORE_UNAVAILABLE, str(exc)))
            return
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise
        except Exception as exc:  # the store failed: say so, keep serving
            # (an export's own refusal, a DIR of other files, say, the daemon logs; it is
            # said as it is, as is DuckDB's most general error, named Error: not
            # "Error: ExportError: ..." to read)
            expected = isinstance(exc, ExportError)
            plain = expected or type(exc).__name__ == "Error"
            what = str(exc) if plain else f"{type(exc).__name__}: {exc}"
            log.log(logging.DEBUG if expected else logging.WARNING,
                    "%s failed: %s", type(request).__name__, what)  # fmt: skip
            await send(_closing(code, what))
            return
        await send(wire.ENCODER.encode(reply) + b"\n")

    async def _operation(self, request: wire.WorkerRequest) -> dict[str, Any]:
        if isinstance(request, wire.WorkerPing):
            return {"ok": True}
        if isinstance(request, wire.WorkerStats):
            return {"ok": True, **await self.service.stats(), "queries": self.queries.stats()}
        if isinstance(request, wire.WorkerLoad):
            loaded = await self.service.refresh(yielding=request.yielding)
            return {"ok": True, "materialized": loaded, "caught_up": self.service.caught_up}
        if isinstance(request, wire.WorkerRebuild):
            return {"ok": True, **dataclasses.asdict(await self.service.rebuild())}
        if isinstance(request, wire.WorkerAnalyze):
            rules = msgspec.convert(request.analyzer, config.Analyzer, strict=False)
            budget = msgspec.convert(request.budget, config.Budget, strict=False)
            touched = request.touched
            since = None if touched is None else datetime.fromtimestamp(touched, UTC)
            findings = await self.service.analyze(rules, budget, since)
            return {"ok": True, **msgspec.to_builtins(findings)}
        if isinstance(request, wire.WorkerPrices):
            prices = msgspec.convert(request.pricing, config.Pricing, strict=False)
            return {"ok": True, "source": await self.service.use_prices(prices)}
        if isinstance(request, wire.WorkerReprice):
            prices = msgspec.convert(request.pricing, config.Pricing, strict=False)
            since = datetime.fromisoformat(request.since) if request.since else None
            return {"ok": True, **await self.service.reprice(since, prices)}
        if isinstance(request, wire.WorkerCosts):
            return {"ok": True, "costs": await self.service.costs(request.ids, request.since)}
        if isinstance(request, wire.WorkerExport):
            report = await self.service.export(request.dir, request.since, request.until)
            return {"ok": True, **report}
        assert isinstance(request, wire.WorkerGc)
        settings = msgspec.convert(request.retention, config.Retention, strict=False)
        report = await self.service.collect(
            request.active, settings, dry_run=request.dry_run, hold_from=request.hold_from
        )
        return {"ok": True, **report}

    async def _query(self, request: wire.WorkerQuery, send: Send) -> None:
        # (counted from the request's arrival: a wait for a query slot counts too)
        until = time.monotonic() + request.timeout * LOAD_SHARE

        async def open_cursor() -> tuple[Any, str | None]:
            # Read-your-writes: everything journaled up to `upto` is loaded first; when
            # loading fails, the answer ends with a warning that says so and why.
            store = await self.service.wait_open(min(request.timeout, OPEN_WAIT))
            # (within a share of the query's timeout: a store far behind answers in time)
            await self.service.refresh_or_log(until=until)
            cursor = await anyio.to_thread.run_sync(store.cursor)
            segment, size = request.upto
            return cursor, await self.service.behind((segment, size))

        await self.queries.answer(request, send, open_cursor, request.timeout)


def _closing(code: str, message: str) -> bytes:
    return wire.encode_line(wire.Closing(code, message))


async def _send(stream: SocketStream, data: bytes) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(data)


async def _until_stdin_closes(scope: anyio.CancelScope) -> None:
    """The daemon holds our stdin open: end of file means it is gone. (Read without a
    thread: a thread blocked in read() would keep the process from exiting.)"""
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    while True:
        await anyio.wait_readable(fd)
        try:
            if not os.read(fd, 65536):
                break
        except BlockingIOError:
            continue
        except OSError:
            break
    log.warning("the daemon went away; the store worker stops")
    scope.cancel()


async def _until_sigterm(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()
            return


def main(line: bytes, early: EarlyOpen[Store] | None) -> int:
    """`python -m telemetryd.store serve`: run as the daemon's store worker, once
    store/startup.py has read the startup ``line`` and started opening the database."""
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("TELEMETRYD_LOG_LEVEL", "INFO").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    _first_to_go()
    fd = int(os.environ[ENV_FD])
    startup = msgspec.json.decode(line, type=Startup)
    where = paths.Paths(**startup.paths)
    settings = msgspec.convert(startup.config, config.Config, strict=False)
    if early is not None:  # the rest of the open goes on while the event loop starts
        early.then(
            lambda connection: open_store(
                where, settings.store, connection, pricing=settings.pricing
            )
        )
    listener = socket.socket(fileno=fd)
    segments.quiet()  # the daemon logs the journal's stray files, once
    worker = Worker(where, settings, early)
    try:
        anyio.run(worker.serve, listener, backend_options=_backend_options())
    except KeyboardInterrupt:
        return 130
    finally:
        if early is not None:
            early.close()
    return 0


OOM_SCORE_ADJ = 800  # of -1000 (never) to 1000 (first)


def _first_to_go() -> None:
    """Make this process the one the kernel ends first when memory runs out. DuckDB's
    memory limit bounds its buffers, not every allocation: a query can build values
    far past it (``repeat('x', 2000000000)``). Then the worker goes, not the daemon or
    the user's programs; the daemon starts another, and nothing is lost (the database
    is rebuilt from the journal at worst). Raising one's own score needs no privilege."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(OOM_SCORE_ADJ))
    except OSError:  # (not Linux)
        pass


def _backend_options() -> dict[str, object]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
