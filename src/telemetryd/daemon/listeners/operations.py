"""The control operations: one handler per request type, each returning a typed reply.

:meth:`Operations.dispatch` is the table the control listener answers with. ``status``,
``flush``, ``rebuild`` and ``gc`` return a reply Struct from wire.py (encoded once, by
the dispatcher); ``query`` and ``tail`` stream their own lines. A handler that raises
is answered with its operation's error code (``flush_failed``, ...), or with
``store_unavailable`` when the database is not open.

What the handlers ask of the store (``self.store``: refresh, rebuild, behind, stats,
a cursor for a query) and of retention is kept to a few lines each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from telemetryd import __version__, wire
from telemetryd.config import Config
from telemetryd.daemon.ingest import Ingestor
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners.dispatch import Dispatch, Operation, Replies
from telemetryd.daemon.materializer import Materializer, StoreUnavailable
from telemetryd.daemon.query import Queries
from telemetryd.daemon.tail import Tails
from telemetryd.errors import TelemetryError
from telemetryd.paths import Paths
from telemetryd.store.retention import Retention


class Operations:
    """The daemon's answers to control requests.

    ``connections()`` gives the events and control connections open now (the
    listeners count them); ``store`` and ``retention`` are None in a daemon
    without a database."""

    def __init__(
        self,
        paths: Paths,
        config: Config,
        ingestor: Ingestor,
        journal: Journal,
        tails: Tails,
        queries: Queries,
        connections: Callable[[], tuple[int, int]],
        store: Materializer | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.ingestor = ingestor
        self.journal = journal
        self.tails = tails
        self.queries = queries
        self.connections = connections
        self.store = store
        self.retention = retention
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
            },
            unavailable={StoreUnavailable: wire.STORE_UNAVAILABLE},
        )

    async def status(self, request: wire.StatusRequest, replies: Replies) -> wire.StatusReply:
        counters = self.ingestor.counters
        events, control = self.connections()
        return wire.StatusReply(
            version=__version__,
            pid=os.getpid(),
            uptime_s=round(time.time() - self.started, 3),
            connections=events,
            control_connections=control,
            queries=msgspec.convert(self.queries.stats(), wire.QueryStats),
            tail_clients=self.tails.following,
            accepted=counters.accepted,
            rejected=counters.rejected,
            duplicates=counters.duplicates,
            events_per_s=self.rate.per_second(counters.accepted),
            # These list and stat files, or ask DuckDB: off the event loop.
            journal=msgspec.convert(
                await anyio.to_thread.run_sync(self.journal.stats), wire.JournalStatus
            ),
            store=await self.store.stats() if self.store is not None else None,
            retention=self.retention.last if self.retention is not None else None,
            paths=msgspec.convert(self.paths.as_dict(), wire.PathsStatus),
        )

    async def flush(self, request: wire.FlushRequest, replies: Replies) -> wire.FlushReply:
        # Everything accepted so far: fsynced, and in the database.
        await self.journal.flush()
        if self.store is None:
            return wire.FlushReply()
        return wire.FlushReply(materialized=await self.store.refresh())

    async def rebuild(self, request: wire.RebuildRequest, replies: Replies) -> wire.RebuildReply:
        return wire.RebuildReply(events=await self._store().rebuild())

    async def gc(self, request: wire.GcRequest, replies: Replies) -> wire.GcReply:
        self._store()
        if self.retention is None:
            raise TelemetryError("this daemon runs no retention")
        report = await self.retention.collect(dry_run=request.dry_run)
        return msgspec.convert(report, wire.GcReply)

    async def query(self, request: wire.QueryRequest, replies: Replies) -> None:
        store = self._store()
        upto = self.journal.written_to  # everything acknowledged before the query

        async def open_cursor() -> tuple[Any, str | None]:
            # Read-your-writes: what was acknowledged before the query is in it;
            # unless loading fails: then the query sees what is loaded, and its
            # answer ends with a warning that says so and why.
            await store.refresh_or_log()
            cursor = await anyio.to_thread.run_sync(store.store.cursor)
            return cursor, await store.behind(upto)

        await self.queries.answer(
            request, replies.send, open_cursor, self.config.store.query_timeout
        )

    async def tail(self, request: wire.TailRequest, replies: Replies) -> None:
        await self.tails.serve(request, replies.stream)

    def _store(self) -> Materializer:
        if self.store is None:
            raise StoreUnavailable("this daemon has no database")
        return self.store


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
