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


async def answer(con: Any, request: wire.QueryRequest, send: Send) -> None:
    """Run ``request`` on a cursor of ``con`` and send its reply lines (see wire.py)."""
    timeout = min(request.timeout or DEFAULT_TIMEOUT, MAX_TIMEOUT)
    query = Query(con)
    started = time.perf_counter()

    def work() -> int:
        columns = query.run(request.sql, request.params)
        anyio.from_thread.run(send, wire.encode_line(wire.QueryColumns(columns)))
        count = 0
        for batch in query.batches():
            count += len(batch)
            anyio.from_thread.run(send, wire.encode_line(wire.QueryRows(batch)))
        return count

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_interrupt_after, timeout, query)
            try:
                count = await anyio.to_thread.run_sync(work)
            finally:
                tg.cancel_scope.cancel()
    except QueryInterrupted:
        await send(
            wire.encode_line(
                wire.Closing(wire.QUERY_TIMEOUT, f"the query ran longer than its {timeout:g} s")
            )
        )
        return
    except QueryError as exc:
        await send(wire.encode_line(wire.Closing(wire.QUERY_FAILED, str(exc))))
        return
    finally:
        await anyio.to_thread.run_sync(query.close)
    elapsed = (time.perf_counter() - started) * 1000
    await send(wire.encode_line(wire.QueryDone(ok=True, row_count=count, elapsed_ms=elapsed)))


async def _interrupt_after(seconds: float, query: Query) -> None:
    await anyio.sleep(seconds)
    query.interrupt()
