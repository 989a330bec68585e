"""The store worker's first moments: the database opens while Python imports the rest.

A query that finds no store worker running waits for one to start: the interpreter,
its imports (duckdb's ~70 ms, then anyio, asyncio, msgspec and the store's modules,
~60 ms more) and DuckDB opening the file and checking it (~30-50 ms). DuckDB releases
the GIL while it opens a file, so that runs in a thread while the main thread imports:
:func:`begin` (which imports only duckdb, the paths and store/database.py) lowers the
worker's priority, reads the daemon's startup line (store/worker.py) for the
database's path and starts connecting; once the worker knows its configuration it
hands over the rest of the open (:meth:`EarlyOpen.then`: schema check, sandbox), which
goes on in the same thread while the event loop starts. The store's first open
(store/service.py) takes the result, or the error DuckDB raised, and goes on as if it
had opened the file itself: a file locked by another process, or one DuckDB cannot
read, is handled there, and later attempts open anew.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import duckdb

from telemetryd import paths
from telemetryd.store.database import connect

if TYPE_CHECKING:
    from telemetryd.store.database import Store

T = TypeVar("T")

NICENESS = 10  # the worker's CPU priority below the daemon's: loads and queries can wait


class EarlyOpen(Generic[T]):
    """``database.connect(path)`` under way in a thread from the moment it is made, then
    whatever :meth:`then` asks of the connection, in the same thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._finish: Callable[[duckdb.DuckDBPyConnection], T] | None = None
        self._handed = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None
        self._taken = False
        self._thread = threading.Thread(target=self._open, name="store-open", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        try:
            con = connect(self.path)
        except BaseException as exc:  # raised again by take(), in the store's first open
            self._error = exc
            return
        self._handed.wait()
        if self._finish is None:  # the worker stopped first
            con.close()
            return
        try:
            self._result = self._finish(con)
        except BaseException as exc:
            self._error = exc

    def then(self, finish: Callable[[duckdb.DuckDBPyConnection], T]) -> None:
        """Go on with ``finish(connection)`` once connected (it owns the connection)."""
        self._finish = finish
        self._handed.set()

    def take(self) -> T | None:
        """What ``finish`` returned, once (None afterwards, and when :meth:`then` was never
        called: open anew); raises what connecting or ``finish`` raised instead, once.
        Blocks until it is done."""
        if self._taken or self._finish is None:
            return None
        self._thread.join()
        self._taken = True
        result, error = self._result, self._error
        self._result = self._error = None
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        """The worker is stopping: wait for the thread, and close what nobody took (a
        connection never handed on, or what ``finish`` made of it)."""
        self._handed.set()
        self._thread.join()
        result, self._result = self._result, None
        if not self._taken and result is not None:
            closing = getattr(result, "close", None)
            if callable(closing):
                closing()
        self._taken = True


def lower_group(path: str = "/proc/self/autogroup") -> None:
    """The same lower priority for the worker's session, on Linux with autogroups: the
    worker is in a session of its own (daemon/store_worker.py), and the scheduler shares
    the CPU between sessions before nice values count within one, so that without this
    a load gets a whole session's share next to the daemon's, and to an import's readers
    (measured: a third of two CPUs during ``import``). Nothing happens elsewhere."""
    with contextlib.suppress(OSError, ValueError), open(path, "r+") as f:
        current = int(f.read().rsplit(" ", 1)[1])  # "/autogroup-N nice M"
        if current < NICENESS:
            f.seek(0)
            f.write(str(NICENESS))


def begin() -> tuple[bytes, EarlyOpen[Store] | None]:
    """Lower the worker's CPU priority, read the daemon's startup line and start opening
    the database it names: the line (decoded again, and checked, by store/worker.py) and
    the open under way (None when the line does not say where the database is).

    The priority comes first: Linux gives each thread its own nice value, and a thread
    inherits it from the thread that starts it, so DuckDB's threads (started when it
    opens the file) must be started after it."""
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    lower_group()
    line = sys.stdin.buffer.readline()
    try:
        where = paths.Paths(**json.loads(line)["paths"])
    except (ValueError, TypeError, KeyError):
        return line, None
    return line, EarlyOpen(where.database)
