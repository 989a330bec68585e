"""Answering `telemetryctl query` on the control socket.

The query runs in a worker thread on its own cursor (see
:mod:`telemetryd.query` for the sandbox); each batch of rows is handed back to
the event loop and sent as one line, so a large export streams with bounded
memory and a slow reader slows the query down instead of piling up rows. A
timer task interrupts the query when its timeout runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.from_thread

from telemetryd import wire
from telemetryd.query import Query, QueryError, QueryInterrupted

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 3600.0

Send = Callable[[bytes], Coroutine[Any, Any, None]]


async def answer(
    cursor: Any, request: wire.QueryRequest, send: Send, default_timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Run ``request`` on ``cursor`` (closed afterwards) and send its reply lines (wire.py)."""
    timeout = min(request.timeout or default_timeout, MAX_TIMEOUT)
    query = Query(cursor)
    started = time.perf_counter()

    def work() -> int:
        columns = query.run(request.sql, request.params)
        anyio.from_thread.run(send, wire.encode_line(wire.QueryColumns(columns)))
        count = 0
        for batch in query.batches():
            count += len(batch)
            anyio.from_thread.run(send, wire.encode_line(wire.QueryRows(batch)))
        return count

    count = 0
    failure: QueryError | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_interrupt_after, timeout, query)
            try:
                count = await anyio.to_thread.run_sync(work)
            except QueryError as exc:  # caught here: the task group would wrap it
                failure = exc
            finally:
                tg.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(query.close)
    if isinstance(failure, QueryInterrupted):
        message = f"the query ran longer than its {timeout:g} s"
        await send(wire.encode_line(wire.Closing(wire.QUERY_TIMEOUT, message)))
        return
    if failure is not None:
        await send(wire.encode_line(wire.Closing(wire.QUERY_FAILED, str(failure))))
        return
    elapsed = (time.perf_counter() - started) * 1000
    await send(wire.encode_line(wire.QueryDone(ok=True, row_count=count, elapsed_ms=elapsed)))


async def _interrupt_after(seconds: float, query: Query) -> None:
    await anyio.sleep(seconds)
    query.interrupt()
