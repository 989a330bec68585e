"""The control operations: one handler per request type, each returning a typed reply.

:meth:`Operations.dispatch` is the table the control listener answers with. ``status``,
``flush``, ``rebuild`` and ``gc`` return a reply Struct from wire.py (encoded once, by
the dispatcher); ``query`` and ``tail`` stream their own lines. A handler that raises
is answered with its operation's error code (``flush_failed``, ...), or with
``store_unavailable`` when the database is not open.

What the handlers ask of the store (``self.store``, the client of the store worker:
daemon/store_worker.py) is kept to a few lines each.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import msgspec

from telemetryd import __version__, wire
from telemetryd.config import Config
from telemetryd.daemon.ingest import Ingestor
from telemetryd.daemon.ingest_workers import Workers
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners.dispatch import Dispatch, Operation, Replies
from telemetryd.daemon.store_worker import StoreClient, StoreUnavailable, WorkerError
from telemetryd.daemon.tail import Tails
from telemetryd.daemon.totals import Totals
from telemetryd.paths import Paths

if TYPE_CHECKING:
    from telemetryd.daemon.analyzer import Analyzer
    from telemetryd.daemon.reload import Reloads

log = logging.getLogger(__name__)

# Seconds a totals request waits for the costs of requests it has not asked for yet
# (when the store worker runs): the status line's own deadline is 0.5 s.
COSTS_WAIT = 0.2

# The query slots are the store worker's: these are reported while it is not running.
IDLE_QUERIES = wire.QueryStats(slots=4, running=0, waiting=0)


class Operations:
    """The daemon's answers to control requests.

    ``connections()`` gives the events and control connections open now (the
    listeners count them); ``store`` is None in a daemon without a database."""

    def __init__(
        self,
        paths: Paths,
        config: Config,
        ingestor: Ingestor,
        journal: Journal,
        tails: Tails,
        connections: Callable[[], tuple[int, int]],
        store: StoreClient | None = None,
        workers: Workers | None = None,
        http: Callable[[], wire.HttpStatus | None] | None = None,
        forward: Callable[[], wire.ForwardStatus] | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.ingestor = ingestor
        self.journal = journal
        self.tails = tails
        self.connections = connections
        self.store = store
        self.workers = workers
        self.http = http
        self.forward = forward  # [forward]'s status; None: forwarding off
        self.usage = Totals(journal.directory)
        if store is not None:
            store.after_load = self.price_totals
        self.analyzer: Analyzer | None = None  # set by the daemon (daemon/analyzer.py)
        self.reloads: Reloads | None = None  # ... and this (daemon/reload.py)
        self._totals_lock = anyio.Lock()
        self._pricing_lock = anyio.Lock()  # one price_totals at a time
        self.started = time.time()
        self.rate = Rate()

    def dispatch(self) -> Dispatch:
        """The table: request type -> handler, and the error code of its failures."""
        return Dispatch(
            {
                wire.StatusRequest: Operation(self.status, wire.STATUS_FAILED),
                wire.FlushRequest: Operation(self.flush, wire.FLUSH_FAILED),
                wire.RebuildRequest: Operation(self.rebuild, wire.REBUILD_FAILED),
                wire.GcRequest: Operation(self.gc, wire.GC_FAILED),
                wire.QueryRequest: Operation(self.query, wire.QUERY_FAILED),
                wire.TailRequest: Operation(self.tail, wire.TAIL_FAILED),
                wire.TotalsRequest: Operation(self.totals, wire.TOTALS_FAILED),
                wire.RepriceRequest: Operation(self.reprice, wire.REPRICE_FAILED),
                wire.ExportRequest: Operation(self.export, wire.EXPORT_FAILED),
            },
            unavailable={StoreUnavailable: wire.STORE_UNAVAILABLE},
        )

    async def status(self, request: wire.StatusRequest, replies: Replies) -> wire.StatusReply:
        counters = self.ingestor.counters
        # (events whose journal write failed were answered with an error: not accepted)
        accepted = counters.accepted - self.journal.events_failed
        events, control = self.connections()
        # The store worker's figures when it runs (it is never started for a status).
        store = await self.store.stats() if self.store is not None else None
        queries = (store or {}).pop("queries", None)
        return wire.StatusReply(
            version=__version__,
            pid=os.getpid(),
            uptime_s=round(time.time() - self.started, 3),
            connections=events,
            control_connections=control,
            queries=msgspec.convert(queries, wire.QueryStats) if queries else IDLE_QUERIES,
            tail_clients=self.tails.following,
            accepted=accepted,
            rejected=counters.rejected,
            duplicates=counters.duplicates,
            events_per_s=self.rate.per_second(accepted),
            # This lists and stats files: off the event loop.
            journal=msgspec.convert(
                await anyio.to_thread.run_sync(self.journal.stats), wire.JournalStatus
            ),
            store=store,
            retention=self.store.last if self.store is not None else None,
            paths=msgspec.convert(self.paths.as_dict(), wire.PathsStatus),
            ingest_workers=self.workers.status() if self.workers is not None else None,
            http=self.http() if self.http is not None else None,
            analyzer=self.analyzer.status() if self.analyzer is not None else None,
            forward=self.forward() if self.forward is not None else None,
            export=self.store.export_status() if self.store is not None else None,
            config=self.reloads.status() if self.reloads is not None else None,
        )

    async def flush(self, request: wire.FlushRequest, replies: Replies) -> wire.FlushReply:
        # Everything accepted so far: fsynced, and in the database.
        await self.journal.flush()
        if self.store is None:
            return wire.FlushReply()
        return wire.FlushReply(materialized=await self.store.refresh())

    async def rebuild(self, request: wire.RebuildRequest, replies: Replies) -> wire.RebuildReply:
        return msgspec.convert(await self._store().rebuild(), wire.RebuildReply)

    async def reprice(self, request: wire.RepriceRequest, replies: Replies) -> wire.RepriceReply:
        since = request.since.isoformat() if request.since is not None else None
        reply = msgspec.convert(await self._store().reprice(since), wire.RepriceReply)
        # The running totals' computed costs are the old ones: read the journal again.
        async with self._totals_lock:
            usage = Totals(self.journal.directory)
            usage.asked_at = self.usage.asked_at
            await anyio.to_thread.run_sync(usage.refresh)
            self.usage = usage
        await self.price_totals()
        return reply

    async def gc(self, request: wire.GcRequest, replies: Replies) -> wire.GcReply:
        report = await self._store().collect(dry_run=request.dry_run)
        return msgspec.convert(report, wire.GcReply)

    async def query(self, request: wire.QueryRequest, replies: Replies) -> None:
        # The store worker first loads everything acknowledged before this request (or
        # ends the answer with a warning saying what is missing, and why).
        await self._store().query(request, replies.send)

    async def tail(self, request: wire.TailRequest, replies: Replies) -> None:
        await self.tails.serve(request, replies.stream)

    async def warm_totals(self) -> None:
        """Read the last days of the journal into the running totals now, at start, so
        that the first status line does not wait for it (a big journal takes seconds);
        then have the store worker price what they hold without a cost."""
        try:
            async with self._totals_lock:
                # (A stop meanwhile does not wait for it: the thread is left to finish.)
                await anyio.to_thread.run_sync(self.usage.refresh, abandon_on_cancel=True)
        except OSError as exc:  # (the next `totals` request tries again, and says why)
            log.warning("running totals not read at start: %s", exc)
        if self.usage.pending and self.store is not None:
            self.store.want_costs()

    async def totals(self, request: wire.TotalsRequest, replies: Replies) -> wire.TotalsReply:
        async with self._totals_lock:  # (one reader of the journal at a time)
            await anyio.to_thread.run_sync(self.usage.refresh)
            usage = self.usage
            fresh = usage.unasked()
        store = self.store
        if fresh and store is not None:
            if store.worker.running:  # it has likely loaded them: ask, briefly
                with anyio.move_on_after(COSTS_WAIT), contextlib.suppress(WorkerError):
                    chunk = fresh[: wire.MAX_COST_IDS]
                    costs = await store.costs(chunk, _since(usage.oldest(chunk)))
                    async with self._totals_lock:
                        usage.price([], costs)
            if usage.unasked():  # a load, and the costs after it, within store.interval
                store.want_costs()
        async with self._totals_lock:
            since = request.since.timestamp() if request.since is not None else None
            return self.usage.answer(request.session, since)

    async def price_totals(self) -> None:
        """After a load: the computed costs of the requests the running totals counted
        without one (daemon/totals.py), from the store worker. While the totals are in
        use (a status line asked within the last hour) the journal's new lines are read
        first, so a request is priced in the totals as soon as the store has loaded it."""
        store = self.store
        if store is None:
            return
        async with self._pricing_lock:
            async with self._totals_lock:
                if self.usage.in_use():
                    await anyio.to_thread.run_sync(self.usage.refresh)
                usage = self.usage
                ids = list(usage.pending)
            for first in range(0, len(ids), wire.MAX_COST_IDS):
                chunk = ids[first : first + wire.MAX_COST_IDS]
                oldest = usage.oldest(chunk)
                if oldest is None:
                    continue  # (priced or dropped meanwhile)
                costs = await store.costs(chunk, _since(oldest))
                async with self._totals_lock:
                    usage.price(chunk, costs)

    async def export(self, request: wire.ExportRequest, replies: Replies) -> wire.ExportReply:
        # The worker first loads everything acknowledged before this request.
        report = await self._store().export(request.dir, request.since, request.until)
        return msgspec.convert(report, wire.ExportReply)

    def _store(self) -> StoreClient:
        if self.store is None:
            raise StoreUnavailable(wire.STORE_UNAVAILABLE, "this daemon has no database")
        return self.store


def _since(oldest: float | None) -> datetime | None:
    """Where the store may start looking for requests of ``oldest`` (epoch seconds): a
    second early, as it keeps times to the millisecond."""
    return None if oldest is None else datetime.fromtimestamp(oldest - 1.0, UTC)


class Rate:
    """Events per second over the time since the previous `status` (at least a second)."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._count = 0
        self._rate = 0.0

    def per_second(self, count: int) -> float:
        now = time.monotonic()
        if now - self._at >= 1.0:
            self._rate = (count - self._count) / (now - self._at)
            self._at, self._count = now, count
        return round(self._rate, 1)
