"""`python -m telemetryd.store query --database PATH`: one query of the database file,
read-only, for `telemetryctl query` while the daemon is down.

The request is one line on stdin, the control socket's query request
(``{"op":"query","sql":...,"params":{...},"timeout":S}``); the answer goes to stdout
as the control socket's reply lines, produced by the same code as the store worker's
(the sandbox of store/sandbox.py, the rows of store/queries.py). Exit status: 0 after
the done line, 1 after an error line, 3 when the database cannot be opened (after a
``store_unavailable`` line), 2 for a request that is not a query.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import msgspec

from telemetryd import wire
from telemetryd.store import sandbox
from telemetryd.store.queries import DEFAULT_TIMEOUT, Queries

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m telemetryd.store query")
    parser.add_argument("--database", required=True)
    args = parser.parse_args(argv)
    out = sys.stdout.buffer
    try:
        request = wire.CONTROL_DECODER.decode(sys.stdin.buffer.readline())
    except msgspec.DecodeError as exc:
        out.write(wire.encode_line(wire.Closing(wire.BAD_REQUEST, str(exc))))
        return EXIT_USAGE
    if not isinstance(request, wire.QueryRequest):
        out.write(wire.encode_line(wire.Closing(wire.BAD_REQUEST, "only a query is answered")))
        return EXIT_USAGE
    try:
        con = sandbox.open_readonly(args.database)
    except sandbox.QueryError as exc:
        out.write(wire.encode_line(wire.Closing(wire.STORE_UNAVAILABLE, str(exc))))
        return EXIT_UNAVAILABLE
    last: list[bytes] = []

    async def send(data: bytes) -> None:
        last[:] = [data]
        await anyio.to_thread.run_sync(_write, out, data)

    async def open_cursor() -> tuple[Any, str | None]:
        return con.cursor(), None

    try:
        anyio.run(Queries(slots=1).answer, request, send, open_cursor, DEFAULT_TIMEOUT)
    finally:
        con.close()
    return EXIT_OK if last and b'"ok":true' in last[0][:16] else EXIT_FAILED


def _write(out: Any, data: bytes) -> None:
    out.write(data)
    out.flush()
