"""Keeping the DuckDB store caught up with the journal, off the event loop.

The store's methods block (DuckDB work); they run in a worker thread, one at a
time. Materialization happens every ``store.interval`` seconds while events
are pending, as soon as ``store.pending-events`` were journaled, before every
query (so an event acknowledged before a query starts is in its result), and
once more at shutdown.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import anyio
from anyio.abc import TaskStatus

from telemetryd.config import Store as StoreConfig
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.store import Store

log = logging.getLogger(__name__)


class Materializer:
    def __init__(self, store: Store, journal: Journal, config: StoreConfig) -> None:
        self.store = store
        self.journal = journal
        self.config = config
        self._lock = anyio.Lock()
        self._seen = 0  # journal.events_written when the last run started
        self.failure: str | None = None
        self._scope = anyio.CancelScope()

    def stop(self) -> None:
        """End :meth:`run` (a materialization under way finishes first)."""
        self._scope.cancel()

    async def refresh(self) -> int:
        """Load everything journaled so far; return the new events stored."""
        async with self._lock:
            written = self.journal.events_written
            try:
                count = await anyio.to_thread.run_sync(
                    self.store.materialize, self.journal.directory
                )
            except Exception as exc:  # DuckDB errors, disk full: report, keep serving
                self.failure = f"{type(exc).__name__}: {exc}"
                log.error("materialization failed: %s", self.failure)
                raise
            self._seen = written
            self.failure = None
            return count

    async def refresh_or_log(self) -> None:
        """:meth:`refresh`, where a failure is only logged and kept for `status`."""
        with contextlib.suppress(Exception):
            await self.refresh()

    async def rebuild(self) -> int:
        async with self._lock:
            self._seen = self.journal.events_written
            return await anyio.to_thread.run_sync(self.store.rebuild, self.journal.directory)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with self._scope:
            while True:
                with anyio.move_on_after(self.config.interval):
                    while self.journal.events_written - self._seen < self.config.pending_events:
                        await self.journal.changed()
                if self.journal.events_written != self._seen:
                    await self.refresh_or_log()

    async def stats(self) -> dict[str, Any]:
        def collect() -> dict[str, Any]:
            out = self.store.stats()
            out["pending_bytes"] = self.store.pending(self.journal.directory)
            out["error"] = self.failure
            return out

        return await anyio.to_thread.run_sync(collect)
