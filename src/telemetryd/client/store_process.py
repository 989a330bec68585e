"""A query answered by a one-shot store process while the daemon is stopped.

The process, ``python -m telemetryd.store query --database PATH`` (:func:`command`),
reads one control socket query request on stdin and writes the control socket's
reply lines on stdout: one ``columns`` line, ``rows`` lines, then the end of the
result (perhaps with a ``warning``), or instead an error line (``query_failed``,
``query_timeout``, ``store_unavailable``). It exits 0 after the end of a result, 1
after an error line, 3 when it cannot open the database. The client never imports
the store package itself (duckdb stays out of this process).
"""

from __future__ import annotations

import sys
import time

from telemetryd import fastjson
from telemetryd.client.protocol import (
    QUERY_TIMEOUT,
    STORE_UNAVAILABLE,
    QueryColumns,
    QueryDone,
    QueryRows,
    Replies,
    query_answer,
    query_request,
)
from telemetryd.errors import DaemonError, ProtocolError, StoreUnavailable, TelemetryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

GRACE = 2.0  # seconds past a query's timeout before the process is killed


def command(database: str) -> list[str]:
    """The store process for ``database``."""
    return [sys.executable, "-m", "telemetryd.store", "query", "--database", database]


def from_file(
    sql: str, params: dict[str, Any] | None, timeout: float
) -> Iterator[QueryColumns | QueryRows | QueryDone]:
    """:func:`query` on this user's database file (the daemon is stopped).
    DaemonUnavailable, saying "and there is no database at PATH yet", when there is
    none: the caller puts why the daemon did not answer in front."""
    import os

    from telemetryd import paths
    from telemetryd.errors import DaemonUnavailable

    database = paths.resolve().database
    if not os.path.exists(database):
        raise DaemonUnavailable(f"and there is no database at {database} yet")
    return query(command(database), sql, params, timeout)


def query(
    command: list[str], sql: str, params: dict[str, Any] | None, timeout: float
) -> Iterator[QueryColumns | QueryRows | QueryDone]:
    """Run one query in a store process started as ``command`` (while the daemon is
    stopped), read as from the control socket.

    The process gets one query request line on stdin and writes the control socket's
    reply lines on stdout, then exits: 0 after the end of a result, 1 after an error
    line, 3 when it cannot open the database (after a ``store_unavailable`` line). Its
    stdout is a socket here, so that the same :class:`Replies` reads it within the
    deadline: ``timeout`` and a grace, after which the process is killed and the query
    reported as having run too long. StoreUnavailable when it cannot be started.
    """
    import socket
    import subprocess

    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=theirs.fileno())
    except OSError as exc:
        ours.close()
        raise StoreUnavailable(
            STORE_UNAVAILABLE, f"cannot start {command[0]}: {exc.strerror or exc}"
        ) from None
    finally:
        theirs.close()

    def too_long() -> DaemonError:
        return DaemonError(QUERY_TIMEOUT, f"the query ran longer than its {timeout:g} s")

    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(fastjson.dumps(query_request(sql, params, timeout)).encode() + b"\n")
            proc.stdin.close()
        except OSError:
            pass  # it exited without reading: its exit status and output say why
        deadline = time.monotonic() + timeout + GRACE
        lines = Replies(ours, deadline).lines()

        def next_line() -> bytes | None:
            try:
                return next(lines, None)
            except TimeoutError:
                proc.kill()
                raise too_long() from None
            except OSError as exc:
                raise ProtocolError(f"lost the store process: {exc.strerror or exc}") from None

        def ended(started: bool) -> TelemetryError:
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                return too_long()
            if code == 3:
                return StoreUnavailable(
                    STORE_UNAVAILABLE, "the store process could not open the database"
                )
            what = "ended early" if started else "ended without answering"
            return ProtocolError(f"the store process {what} (exit status {code})")

        yield from query_answer(next_line, ended)
    finally:
        ours.close()
        if proc.poll() is None:
            try:
                proc.wait(0.5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
