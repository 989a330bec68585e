"""The store worker's database service: open the store, keep it loaded, answer for it.

The store is opened in the background as the worker starts (requests wait for it,
within bounds): if another process holds the database file (a `telemetryctl query`
that read it while the daemon was down), opening is retried with backoff until it
is free; a file DuckDB cannot open at all is moved aside and the store is rebuilt
from the journal, which is the truth. A store of another schema version is rebuilt
at open.

The store's methods block (DuckDB work): they run in worker threads, and loads,
rebuilds and retention one at a time (the store's own lock, and this service's).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import duckdb

from telemetryd import config, paths
from telemetryd.adapters import pricing as prices
from telemetryd.config import Pricing as PricingConfig
from telemetryd.config import Retention as RetentionConfig
from telemetryd.config import Store as StoreConfig
from telemetryd.config import parse_size
from telemetryd.errors import TelemetryError
from telemetryd.store import analyzer, export, retention
from telemetryd.store.analyzer import Findings
from telemetryd.store.database import Rebuilt, Store, batch_bytes_for
from telemetryd.store.sandbox import harden

log = logging.getLogger(__name__)

# A query's own load (StoreService.refresh with ``until``) starts with a batch of this
# many bytes of journal, a fraction of a second where the machine is not saturated; the
# next ones are as big as its pace lets them end in time (Store.materialize's ``until``).
QUERY_BATCH_BYTES = 4 * 1024 * 1024

OPEN_WAIT = 10.0  # seconds a request waits for the store to open
SET_ASIDE_KEPT = 2  # unreadable database files kept (the newest), each with its .wal
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0


class StoreUnavailable(TelemetryError):
    """The database is not open (yet): another process holds it, or opening failed."""


def open_store(
    where: paths.Paths,
    settings: StoreConfig,
    connection: duckdb.DuckDBPyConnection | None = None,
    *,
    pricing: PricingConfig | None = None,
) -> Store:
    """The database, rebuilt if its schema is not this version's, then sandboxed for queries;
    ``connection``: the file already opened (store/startup.py); ``pricing``: the
    configuration's price overrides, which loads compute costs with.

    Raises duckdb.Error when the file cannot be opened (see :func:`_lock_conflict`)."""
    memory = parse_size(settings.memory_limit)  # checked when the configuration loaded
    store = Store(
        where.database,
        batch_bytes=batch_bytes_for(memory),
        quarantine_dir=where.quarantine_dir,
        connection=connection,
        pricer=prices.from_config(pricing) if pricing is not None else None,
    )
    try:
        # Loads read the batch files in the store's private load directory: the only
        # place SQL may open a file (never the journal, the config or the spool).
        with store.cursor() as con:
            harden(
                con,
                allowed_dirs=[store.load_dir],
                memory_limit=f"{memory}B",
                threads=settings.threads,
                max_temp_bytes=settings.max_temp_bytes,
            )
        if store.needs_rebuild:
            store.rebuild(where.journal_dir)
    except BaseException:
        store.close()
        raise
    return store


def _lock_conflict(exc: duckdb.Error) -> bool:
    """Whether opening failed because another process holds the file (wait for it)."""
    return "lock" in str(exc).lower()


_DAMAGED = ("not a valid duckdb database", "could not read enough bytes", "corrupt", "checksum")


def _unreadable(exc: duckdb.Error) -> bool:
    """Whether the file itself is damaged (as opposed to a lock, permissions, a full disk:
    worth waiting for)."""
    if isinstance(exc, duckdb.SerializationException | duckdb.InternalException):
        return True
    message = str(exc).lower()
    return any(marker in message for marker in _DAMAGED)


class StoreService:
    """One worker's store: opened once, then loaded, queried, rebuilt and trimmed."""

    def __init__(
        self,
        journal_dir: str,
        opener: Callable[[], Store],
        database: str = "",
        where: paths.Paths | None = None,
    ) -> None:
        self.journal_dir = journal_dir
        self.where = where  # (the daemon's directories, which no export goes into)
        self._opener = opener
        self._database = database
        self._store: Store | None = None
        self._opened = anyio.Event()
        self._lock = anyio.Lock()  # loads, rebuilds, retention: one at a time
        self._export_lock = anyio.Lock()  # exports: one at a time
        self._query_came = False  # a query waited for its turn during a yielding load
        self._queries_waiting = 0  # queries waiting for their turn now
        # What the lock was last taken for: why a query's answer may leave events out.
        self.activity = "loading has not caught up yet"
        self.failure: str | None = None

    @property
    def store(self) -> Store:
        """The open store; StoreUnavailable while it is not open."""
        if self._store is None:
            raise StoreUnavailable(f"the database is not open yet ({self.failure or 'opening'})")
        return self._store

    @property
    def caught_up(self) -> bool:
        """Whether the last load got to the journal's end (Store.caught_up)."""
        return self._store is None or self._store.caught_up

    @property
    def is_open(self) -> bool:
        return self._store is not None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def wait_open(self, seconds: float = OPEN_WAIT) -> Store:
        """The store, once open; StoreUnavailable if it is not open within ``seconds``."""
        if self._store is None:
            with anyio.move_on_after(seconds):
                await self._opened.wait()
        return self.store

    async def refresh(self, *, until: float | None = None, yielding: bool = False) -> int:
        """Load everything journaled so far; return the new events stored.

        A query's load has ``until`` (a ``time.monotonic()``): it waits for its turn and
        loads batches only until then, so that a store far behind its journal (after a
        flood, during a rebuild) still answers within the query's timeout, with what it
        holds (:meth:`behind` says what the answer leaves out); its first batch is small
        (:data:`QUERY_BATCH_BYTES`), the next ones as big as its pace lets them end in
        time (:func:`telemetryd.store.database.paced`). A ``yielding`` load
        (the daemon's timed one) stops after the batch it is loading once a query has
        waited for its turn; :attr:`caught_up` tells whether the last load got to the end."""
        store = await self.wait_open()
        if until is None:
            async with self._lock:
                if not yielding:
                    return await self._load(store, None)
                self._query_came = False
                return await self._load(store, self._make_way)
        try:
            self._lock.acquire_nowait()
        except anyio.WouldBlock:
            # (a timed load under way stops after its batch, even if this query stops
            # waiting first: it then runs beside one batch at most)
            self._query_came = True
            self._queries_waiting += 1
            try:
                with anyio.move_on_after(max(0.0, until - time.monotonic())) as waited:
                    await self._lock.acquire()
            finally:
                self._queries_waiting -= 1
            if waited.cancelled_caught:
                return 0
        try:
            if time.monotonic() >= until:  # (its turn came too late to load anything)
                return 0
            return await self._load(store, None, QUERY_BATCH_BYTES, until)
        finally:
            self._lock.release()

    def _make_way(self) -> bool:
        """Whether a yielding load stops after the batch it committed: a query came."""
        return self._query_came or self._queries_waiting > 0

    async def _load(
        self,
        store: Store,
        stop: Callable[[], bool] | None,
        batch_bytes: int | None = None,
        until: float | None = None,
    ) -> int:
        self.activity = "loading has not caught up yet"
        try:
            count = await anyio.to_thread.run_sync(
                store.materialize, self.journal_dir, stop, batch_bytes, until
            )
        except Exception as exc:  # DuckDB errors, disk full: report, keep serving
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("materialization failed: %s", self.failure)
            raise
        self.failure = None
        return count

    async def refresh_or_log(self, *, until: float | None = None) -> None:
        """:meth:`refresh`, where a failure is only logged and kept for `status`."""
        with contextlib.suppress(Exception):
            await self.refresh(until=until)

    async def behind(self, upto: tuple[str, int]) -> str | None:
        """Why events journaled up to ``upto`` are not all in the database, or None when
        they are (a query answer says so instead of silently leaving them out)."""
        if self._store is None:
            return f"the database is not open: {self.failure or 'opening'}"
        store = self._store
        missing, gzipped = await anyio.to_thread.run_sync(store.missing, self.journal_dir, upto)
        if not missing:
            return None
        reason = self.failure or self.activity
        packed = (
            f" ({gzipped} of them gzipped: many more events than the bytes suggest)"
            if gzipped
            else ""
        )
        return (
            f"{missing} bytes of acknowledged events{packed} are not in the database yet, so "
            f"this answer leaves them out ({reason}); `telemetryctl status` shows the store"
        )

    async def rebuild(self) -> Rebuilt:
        store = await self.wait_open()
        async with self._lock:
            self.activity = "the store is being rebuilt"
            return await anyio.to_thread.run_sync(store.rebuild, self.journal_dir)

    async def analyze(
        self, rules: config.Analyzer, budget: config.Budget, touched: datetime | None = None
    ) -> Findings:
        """An analysis (store/analyzer.py) after loading what is pending (all of it: an
        analysis counts as having seen everything journaled before it)."""
        await self.refresh()
        store = await self.wait_open()
        async with self._lock:
            self.activity = "an analysis holds the store"

            def run() -> Findings:
                con = store.cursor()
                try:
                    return analyzer.analyze(con, rules, budget, datetime.now(UTC), touched)
                finally:
                    con.close()

            return await anyio.to_thread.run_sync(run)

    async def collect(
        self, active: str, config: RetentionConfig, *, dry_run: bool = False, hold_from: int = 0
    ) -> dict[str, Any]:
        """A retention run (store/retention.py), after loading what is pending so that
        finished segments count as complete."""
        await self.refresh_or_log()
        store = await self.wait_open()
        async with self._lock:
            self.activity = "a retention run holds the store"
            return await anyio.to_thread.run_sync(
                lambda: retention.collect(
                    store, self.journal_dir, active, config, dry_run=dry_run, hold_from=hold_from
                )
            )

    async def reprice(self, since: datetime | None, pricing: PricingConfig) -> dict[str, Any]:
        """Load what is pending, then price the stored requests again (store/pricing.py)
        with ``pricing``'s overrides, which later loads use too."""
        await self.refresh_or_log()
        store = await self.wait_open()
        pricer = prices.from_config(pricing)
        async with self._lock:
            self.activity = "the stored requests are being priced again"
            counts = await anyio.to_thread.run_sync(lambda: store.reprice(since, pricer))
        overrides = sorted(pricing.models)
        return {**counts, "source": pricer.source, "overrides": overrides}

    async def use_prices(self, pricing: PricingConfig) -> str:
        """Price later loads with ``pricing``'s overrides (a reload changed them); the
        stored costs stay as they are (:meth:`reprice`). Returns the price data's name."""
        store = await self.wait_open()
        pricer = prices.from_config(pricing)
        async with self._lock:  # (not in the middle of a load)
            store.pricer = pricer
        return pricer.source

    async def costs(
        self, ids: list[str], since: datetime | None
    ) -> list[tuple[str, float | None, str | None]]:
        """The stored costs of the api_requests among ``ids`` (Store.costs), without
        loading first: the daemon asks after a load."""
        store = await self.wait_open()
        naive = since.astimezone(UTC).replace(tzinfo=None) if since is not None else None
        return await anyio.to_thread.run_sync(lambda: store.costs(ids, naive))

    async def export(
        self, target: str, since: datetime | None, until: datetime | None
    ) -> dict[str, Any]:
        """A Parquet export run (store/export.py), after loading what is journaled, so
        that it takes every event acknowledged before it was asked for. Runs one at a
        time (they may share a directory); loads go on meanwhile but for a moment."""
        await self.refresh()
        store = await self.wait_open()
        async with self._export_lock:
            report = await anyio.to_thread.run_sync(
                lambda: export.export(
                    store, self.journal_dir, target, since=since, until=until, where=self.where
                )
            )
        return report.as_dict()

    async def open(self) -> None:
        """Open the store; never gives up and never raises (requests wait meanwhile)."""
        delay = _BACKOFF_FIRST
        while self._store is None:
            try:
                async with self._lock:
                    self._store = await anyio.to_thread.run_sync(self._opener)
                break
            except duckdb.Error as exc:
                if _unreadable(exc) and await anyio.to_thread.run_sync(self._set_aside, exc):
                    continue  # rebuilt from the journal at the next try
                reason = str(exc).splitlines()[0]
                if _lock_conflict(exc):
                    reason = f"the database file is in use by another process: {reason}"
            except Exception as exc:  # a read-only state directory, say: keep trying
                reason = f"{type(exc).__name__}: {exc}"
            if self.failure != reason:
                log.warning("cannot open the database (%s); retrying", reason)
            self.failure = reason
            await anyio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)
        if self.failure is not None:
            log.info("database open")
        self.failure = None
        self._opened.set()

    def _set_aside(self, exc: duckdb.Error) -> bool:
        """Move a database file that DuckDB cannot open out of the way (the store is then
        rebuilt from the journal); False if there was nothing to move."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = []
        for name in (self._database, self._database + ".wal"):
            if name and os.path.exists(name):
                os.replace(name, f"{name}.unreadable-{stamp}")
                moved.append(f"{name}.unreadable-{stamp}")
                # Only the newest few are kept: a file damaged again and again (a failing
                # disk) would otherwise fill it with copies of the database.
                earlier = sorted(glob.glob(glob.escape(name) + ".unreadable-*"))
                for old in earlier[:-SET_ASIDE_KEPT]:
                    with contextlib.suppress(OSError):
                        os.unlink(old)
                        log.warning("removed %s, an older unreadable database", old)
        if moved:
            log.error(
                "cannot open the database %s (%s); moved aside as %s, rebuilding it "
                "from the journal",
                self._database,
                str(exc).splitlines()[0],
                ", ".join(moved),
            )
        return bool(moved)

    async def stats(self) -> dict[str, Any]:
        if self._store is None:
            return {"open": False, "error": self.failure}
        store = self._store

        def collect() -> dict[str, Any]:
            out = store.stats()
            out["open"] = True
            out["pending_bytes"] = store.pending(self.journal_dir)
            out["error"] = self.failure
            return out

        return await anyio.to_thread.run_sync(collect)
