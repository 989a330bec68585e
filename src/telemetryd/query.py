"""Read-only, sandboxed SQL over the telemetry database.

Used by the daemon (which owns the read-write connection and answers
`telemetryctl query` on its control socket) and by the client when the daemon
is stopped (it then opens the file read-only itself). One sandbox for both:

- :func:`harden` configures the database once, then locks the configuration:
  no file system access outside ``allowed_dirs``, no extension installs or
  autoloads, no Python replacement scans, memory and thread limits.
- :func:`run` gives every query its own cursor inside ``BEGIN TRANSACTION READ
  ONLY`` (a statement-type check alone is no sandbox: ``WITH x AS (DELETE ...
  RETURNING 1) SELECT`` reads as a SELECT), after refusing statement types that
  have no business in a query (a clear message beats a permission error).
- :class:`Query` can be interrupted from another thread: DuckDB has no timeout
  setting, so the caller's timer calls :meth:`Query.interrupt`.

Only this module and ``daemon/store.py`` import duckdb.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import duckdb

from telemetryd.errors import TelemetryError

ALLOWED_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "CALL", "PRAGMA"})
BATCH_ROWS = 2048


class QueryError(TelemetryError):
    """A query failed or was refused; the message is DuckDB's own where it has one."""


class QueryInterrupted(QueryError):
    """The query was stopped (its timeout ran out)."""


def harden(
    con: duckdb.DuckDBPyConnection,
    *,
    allowed_dirs: list[str],
    memory_limit: str = "1GB",
    threads: int = 2,
) -> None:
    """Restrict what SQL on ``con``'s database may do, for good (the settings are locked)."""
    settings = [
        ("allowed_directories", list(allowed_dirs)),
        ("enable_external_access", False),
        ("autoinstall_known_extensions", False),
        ("autoload_known_extensions", False),
        ("python_enable_replacements", False),
        ("memory_limit", memory_limit),
        ("threads", threads),
    ]
    for name, value in settings:
        # GLOBAL: every cursor made later must inherit it (some default per session).
        con.execute(f"SET GLOBAL {name} = ?", [value])
    con.execute("SET GLOBAL lock_configuration = true")


def check_statement(sql: str) -> None:
    """Refuse anything but one read statement, naming what was found."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    if len(statements) != 1:
        raise QueryError(f"one statement per query, got {len(statements)}")
    kind = str(statements[0].type).rpartition(".")[2]
    if kind not in ALLOWED_STATEMENTS:
        raise QueryError(
            f"{kind} statements are not allowed: queries are read-only "
            f"({', '.join(sorted(ALLOWED_STATEMENTS))})"
        )


class Query:
    """One query on its own cursor, in a read-only transaction.

    Give it a cursor of its own (``con.cursor()``), which it closes; then
    :meth:`run` it (blocking). :meth:`interrupt` may be called from another
    thread at any time, before or during the run.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor: duckdb.DuckDBPyConnection | None = cursor
        self._lock = threading.Lock()
        self.interrupted = False

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        """Execute ``sql``; return ``(name, type)`` of each result column."""
        check_statement(sql)
        cursor = self._live()
        try:
            cursor.execute("BEGIN TRANSACTION READ ONLY")
            cursor.execute(sql, dict(params) if params else None)
        except duckdb.Error as exc:
            raise self._error(exc) from None
        self._live()  # interrupted before the statement began: do not return its result
        return [(str(d[0]), str(d[1])) for d in cursor.description or []]

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[list[tuple[Any, ...]]]:
        """The result, ``rows`` at a time (never all of it in memory at once)."""
        while True:
            try:
                batch = self._live().fetchmany(rows)
            except duckdb.Error as exc:
                raise self._error(exc) from None
            if not batch:
                return
            yield batch

    def interrupt(self) -> None:
        """Stop the query (the timeout); the connection stays usable."""
        with self._lock:
            self.interrupted = True
            if self._cursor is not None:
                self._cursor.interrupt()

    def close(self) -> None:
        with self._lock:
            cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(duckdb.Error):  # it may have ended with an error
                cursor.execute("ROLLBACK")
            cursor.close()

    def _live(self) -> duckdb.DuckDBPyConnection:
        if self.interrupted or self._cursor is None:
            raise QueryInterrupted("the query was interrupted")
        return self._cursor

    def _error(self, exc: duckdb.Error) -> QueryError:
        if self.interrupted:
            return QueryInterrupted("the query was interrupted")
        return QueryError(str(exc))


def open_readonly(path: str) -> duckdb.DuckDBPyConnection:
    """The database file, read-only, sandboxed (for use while the daemon is stopped)."""
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    harden(con, allowed_dirs=[])
    return con
