"""Answering `telemetryctl query` on the control socket.

Queries have their own small pool, :class:`Queries`: at most ``QUERY_SLOTS`` run at
once, each holding its slot from the start of its run until its last reply line, and
their blocking DuckDB work runs on worker threads borrowed from a limiter of their own.
So however many clients query, and however slowly they read, the journal writer (which
has its own thread) and the rest of the daemon (anyio's default thread pool) never wait
for them. A request that finds every slot taken waits, within its own timeout.

The query runs on its own cursor (see :mod:`telemetryd.store.sandbox` for the sandbox). Rows
are fetched in a worker thread a batch at a time and encoded there; the event loop
sends them, one ``rows`` line per batch, while no thread is held. A batch is bounded
in rows (``MAX_BATCH_ROWS``) and, roughly, in bytes (``REPLY_LINE_BYTES``): the rows
fetched next are sized from the bytes per row so far, starting from one row. A row
whose values hold more than ``wire.MAX_ROW_BYTES`` is refused before it is encoded
where its size can be seen from the Python values (text, blobs, lists), and after
encoding otherwise. A timer interrupts the query when its timeout runs out; the
timeout covers sending the result too, so a slow reader cannot hold a slot longer. It
is one deadline for the whole answer: what the wait for a slot and the load before the
query (the cursor's opener) took, the query does not get again (it keeps at least
:data:`MIN_RUN_SHARE` of it).

DuckDB's memory limit covers its buffers, not a value a query computes: one
``repeat('x', 1000000000)`` is a gigabyte, and the probe that found it took the store
worker to 5 GB. So while a query runs, the process's resident memory is looked at every
:data:`MEMORY_LOOK` seconds (Linux: /proc/self/statm), and past ``memory_cap`` bytes
every running query is interrupted and answered with an error that says why.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from operator import itemgetter
from typing import Any, TypeVar

import anyio
import msgspec

from telemetryd import wire
from telemetryd.store.sandbox import Query, QueryError, QueryInterrupted

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = wire.MAX_QUERY_TIMEOUT
QUERY_SLOTS = 4  # queries running at once (the machine's cores are what they share)
MAX_BATCH_ROWS = 2048  # rows fetched at once
REPLY_LINE_BYTES = 1024 * 1024  # what a rows line aims at (one row alone may be longer)
MEMORY_LOOK = 0.1  # seconds between looks at the process's memory while a query runs

Send = Callable[[bytes], Coroutine[Any, Any, None]]
T = TypeVar("T")

_ROWS_HEAD = b'{"rows":['
_ROWS_TAIL = b"]}\n"


class RowTooLarge(QueryError):
    """One row of the result is over ``wire.MAX_ROW_BYTES``."""


class Queries:
    """The query slots of one daemon, and the worker threads queries may use."""

    def __init__(self, slots: int = QUERY_SLOTS, memory_cap: int | None = None) -> None:
        self.slots = slots
        self.memory_cap = memory_cap  # resident bytes past which queries are stopped
        self._admit = anyio.Semaphore(slots)
        self._threads = anyio.CapacityLimiter(slots)
        self.running = 0
        self.waiting = 0

    def stats(self) -> dict[str, int]:
        return {"slots": self.slots, "running": self.running, "waiting": self.waiting}

    async def answer(
        self,
        request: wire.QueryRequest | wire.WorkerQuery,
        send: Send,
        open_cursor: Callable[[], Awaitable[tuple[Any, str | None]]],
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Answer ``request`` with its reply lines (wire.py). ``open_cursor`` is awaited
        once a slot is free and gives the cursor the query runs on (closed afterwards)
        and a warning for the answer's last line, if any.

        Errors of the query itself end the reply with a Closing line; an exception
        raised by ``send`` is raised (the connection cannot take more lines)."""
        timeout = min(request.timeout or default_timeout, MAX_TIMEOUT)
        # One deadline for the whole answer: the wait for a slot and open_cursor (which
        # loads what is pending, for part of it) leave the query the rest, and at least
        # a tenth of the timeout to run in.
        deadline = time.monotonic() + timeout
        self.waiting += 1
        try:
            with anyio.move_on_after(timeout) as waiting:
                await self._admit.acquire()
        finally:
            self.waiting -= 1
        if waiting.cancelled_caught:
            message = (
                f"no query slot came free within the query's {timeout:g} s "
                f"({self.slots} queries were running)"
            )
            await send(wire.encode_line(wire.Closing(wire.QUERY_TIMEOUT, message)))
            return
        self.running += 1
        try:
            cursor, warning = await open_cursor()
            query = Query(cursor)
            left = deadline - time.monotonic()
            # (what a few milliseconds before running took is not taken from the query)
            run_for = timeout if left > timeout * 0.95 else max(left, timeout * MIN_RUN_SHARE)
            try:
                await self._run(query, request, send, run_for, warning, timeout)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._thread(query.close)
        finally:
            self.running -= 1
            self._admit.release()

    async def _thread(self, func: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)

    async def _run(
        self,
        query: Query,
        request: wire.QueryRequest | wire.WorkerQuery,
        send: Send,
        timeout: float,
        warning: str | None = None,
        asked: float | None = None,
    ) -> None:
        """Run the query for at most ``timeout`` seconds, of the ``asked`` for in all."""
        asked = timeout if asked is None else asked
        started = time.perf_counter()
        failure: Exception | None = None
        finished = False
        count = 0
        too_big: int | None = None  # the resident bytes that stopped the query

        async def interrupt_after() -> None:
            nonlocal too_big
            try:
                if self.memory_cap is None or resident_bytes() is None:
                    await anyio.sleep(timeout)
                    return
                deadline = anyio.current_time() + timeout
                while (left := deadline - anyio.current_time()) > 0:
                    await anyio.sleep(min(MEMORY_LOOK, left))
                    size = resident_bytes()
                    if size is not None and size > self.memory_cap:
                        too_big = size
                        return
            finally:  # the timeout, too much memory, or the daemon is stopping
                if not finished:
                    query.interrupt()

        # Nothing but cancellation leaves this task group: its errors would come out
        # wrapped in an ExceptionGroup.
        async with anyio.create_task_group() as tg:
            tg.start_soon(interrupt_after)
            try:
                columns = await self._thread(query.run, request.sql, request.params)
                rows = _Rows(query, columns)
                await send(wire.encode_line(wire.QueryColumns(columns)))
                while lines := await self._thread(rows.next):
                    for line in lines:
                        await send(line)
                count = rows.count
            except Exception as exc:
                failure = exc
            finished = True
            tg.cancel_scope.cancel()
        if isinstance(failure, QueryInterrupted) and too_big is not None:
            message = (
                f"the query was stopped: the store worker's memory reached "
                f"{too_big / 2**20:,.0f} MB, past its {(self.memory_cap or 0) / 2**20:,.0f} MB "
                "for queries (DuckDB's memory limit does not cover a huge value a query "
                "computes, such as repeat('x', 1000000000))"
            )
            await send(wire.encode_line(wire.Closing(wire.QUERY_FAILED, message)))
        elif isinstance(failure, QueryInterrupted):
            message = f"the query ran longer than its {asked:g} s"
            if timeout < asked:
                message = (
                    f"the query did not finish within its {asked:g} s (it ran for "
                    f"{timeout:.2g} s of them: the rest went to waiting for a query slot, "
                    "opening the store and loading what was pending)"
                )
            await send(wire.encode_line(wire.Closing(wire.QUERY_TIMEOUT, message)))
        elif isinstance(failure, QueryError):
            await send(wire.encode_line(wire.Closing(wire.QUERY_FAILED, str(failure))))
        elif failure is not None:
            raise failure  # from send: the reply cannot go on
        else:
            elapsed = (time.perf_counter() - started) * 1000
            done = wire.QueryDone(ok=True, row_count=count, elapsed_ms=elapsed, warning=warning)
            await send(wire.encode_line(done))


def resident_bytes() -> int | None:
    """This process's resident memory in bytes (None where /proc does not say)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _Rows:
    """The result's rows as reply lines, one fetch at a time (called in a worker thread)."""

    def __init__(self, query: Query, columns: list[tuple[str, str]]) -> None:
        self.query = query
        self.sizer = Sizer(columns)
        self.floats = [i for i, (_, kind) in enumerate(columns) if kind in _FLOAT_TYPES]
        self.fetch = 1  # rows to fetch next: grows while rows are small
        self.count = 0

    def next(self) -> list[bytes]:
        """The next batch as ``rows`` lines; [] at the end."""
        batch = next(self.query.batches(self.fetch), None)
        if not batch:
            return []
        if self.floats:
            batch = spell_nonfinite(batch, self.floats)
        try:
            lines = encode_rows(batch, self.sizer, self.count)
        except (msgspec.EncodeError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise QueryError(f"a value of the result cannot be sent as JSON: {exc}") from None
        self.count += len(batch)
        per_row = max(1, sum(map(len, lines)) // len(batch))
        self.fetch = max(1, min(MAX_BATCH_ROWS, self.fetch * 8, REPLY_LINE_BYTES // per_row))
        return lines


MIN_RUN_SHARE = 0.1  # of a query's timeout, the least left to run it (Queries.answer)
_FLOAT_TYPES = frozenset(["DOUBLE", "FLOAT"])
_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def spell_nonfinite(batch: list[tuple[Any, ...]], columns: list[int]) -> list[tuple[Any, ...]]:
    """``batch`` with the NaN and infinite values of ``columns`` (DOUBLE or FLOAT) as the
    text "NaN", "Infinity" and "-Infinity", as protobuf's and OTLP's JSON spell them:
    JSON has no such number, and the encoder would write null, a value that is not
    there. A column whose sum is finite holds none (NaN and infinities carry into a
    sum; one of large finite values that overflows is looked at value by value), so most
    batches are only summed."""
    found = [i for i in columns if not math.isfinite(sum(filter(None, map(itemgetter(i), batch))))]
    if not found:
        return batch
    out = []
    for row in batch:
        if any(isinstance(v := row[i], float) and not math.isfinite(v) for i in found):
            cells = list(row)
            for i in found:
                if isinstance(v := cells[i], float) and not math.isfinite(v):
                    cells[i] = _NONFINITE[repr(v)]
            row = tuple(cells)
        out.append(row)
    return out


# DuckDB types whose values are a few dozen bytes of JSON at most.
_SMALL_TYPES = frozenset(
    [
        *("BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"),
        *("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE"),
        *("DATE", "TIME", "INTERVAL", "UUID", "TIME WITH TIME ZONE", "TIMESTAMP WITH TIME ZONE"),
        *("TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"),
    ]
)


class Sizer:
    """Lower bounds of the JSON size of result rows, from the text they hold (strings,
    blobs as base64, what lists, structs and maps hold of them), cheap enough for every
    batch: columns of small types are skipped, text columns summed in C."""

    def __init__(self, columns: list[tuple[str, str]] | None = None, width: int = 0) -> None:
        types = [kind for _, kind in columns] if columns is not None else ["?"] * width
        self.text = [i for i, kind in enumerate(types) if kind == "VARCHAR"]
        self.other = [
            i
            for i, kind in enumerate(types)
            if kind != "VARCHAR" and kind not in _SMALL_TYPES and not kind.startswith("DECIMAL")
        ]

    def batch(self, batch: list[tuple[Any, ...]]) -> int:
        total = 0
        for i in self.text:
            try:
                total += sum(map(len, filter(None, map(itemgetter(i), batch))))
            except TypeError:  # not all text after all
                total += sum(map(value_text_bytes, map(itemgetter(i), batch)))
        for i in self.other:
            total += sum(map(value_text_bytes, map(itemgetter(i), batch)))
        return total

    def row(self, row: tuple[Any, ...]) -> int:
        return sum(value_text_bytes(row[i]) for i in (*self.text, *self.other))


def encode_rows(
    batch: list[tuple[Any, ...]], sizer: Sizer | None = None, first: int = 0
) -> list[bytes]:
    """``batch`` as ``rows`` lines of about ``REPLY_LINE_BYTES`` at most each (a row is never
    split); RowTooLarge for a row over ``wire.MAX_ROW_BYTES``, found before encoding where
    ``sizer`` sees it. ``first`` is the number of rows before the batch."""
    sizer = sizer or Sizer(width=len(batch[0]) if batch else 0)
    estimate = sizer.batch(batch)
    if estimate > wire.MAX_ROW_BYTES:  # maybe one row alone is: find it before encoding
        for number, row in enumerate(batch, first + 1):
            size = sizer.row(row)
            if size > wire.MAX_ROW_BYTES:
                raise _too_large(number, size)
    if len(batch) == 1 or estimate <= REPLY_LINE_BYTES:
        line = wire.ENCODER.encode(wire.QueryRows(batch)) + b"\n"
        if len(batch) == 1 and len(line) - len(_ROWS_HEAD + _ROWS_TAIL) > wire.MAX_ROW_BYTES:
            raise _too_large(first + 1, len(line))
        if len(batch) == 1 or len(line) <= 2 * REPLY_LINE_BYTES:
            return [line]
    # Too long for one line: encode row by row, a line per REPLY_LINE_BYTES.
    lines: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for number, row in enumerate(batch, first + 1):
        encoded = wire.ENCODER.encode(row)
        if len(encoded) > wire.MAX_ROW_BYTES:
            raise _too_large(number, len(encoded))
        if group and size + len(encoded) > REPLY_LINE_BYTES:
            lines.append(_ROWS_HEAD + b",".join(group) + _ROWS_TAIL)
            group, size = [], 0
        group.append(encoded)
        size += len(encoded) + 1
    lines.append(_ROWS_HEAD + b",".join(group) + _ROWS_TAIL)
    return lines


def value_text_bytes(value: Any) -> int:
    """A lower bound of the JSON size of ``value``'s text (0 for numbers and times)."""
    if value is None or isinstance(value, (int, float)):
        return 0
    total = 0
    stack = [value]
    while stack:  # not recursive: DuckDB types may nest deeper than Python's stack
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, bytes):
            total += (len(item) + 2) // 3 * 4
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
            total += len(item)  # the commas
        if total > wire.MAX_ROW_BYTES:
            break
    return total


def _too_large(number: int, size: int) -> RowTooLarge:
    limit = wire.MAX_ROW_BYTES // (1024 * 1024)
    return RowTooLarge(
        f"row {number} of the result is over {limit} MiB as JSON (at least {size:,} bytes), "
        f"the limit for one row of a reply; select less of it (e.g. left(column, n))"
    )
