"""One read-only query's rows as dicts, from the daemon or, while it is stopped, the
database file; and what a command that reads that way says about it.

The reports, blocks and traces load their rows through :func:`query`, and both the
click commands (:mod:`telemetryd.client.cli_errors`) and the report path that runs
before click (:mod:`telemetryd.client.report_main`) word its warnings and failures
with :func:`notices` and :func:`failure`, so the two say the same.

Import-light like the query path: no click, no duckdb, no dataclasses.
"""

from __future__ import annotations

from telemetryd.client import protocol, store_process
from telemetryd.client.control import Control
from telemetryd.errors import (
    DaemonBusy,
    DaemonUnavailable,
    ProtocolError,
    StoreUnavailable,
    TelemetryError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

EXIT_FAILED = 1  # click's own exit status for an error
EXIT_UNAVAILABLE = 3  # neither the daemon nor the database answers (as `telemetryctl query`)
FROM_FILE = (
    "warning: telemetryd is not running; read the database file directly, "
    "so events not yet materialized are missing"
)


def message(exc: TelemetryError) -> str:
    """What went wrong, for people: the daemon's absence said as such."""
    if isinstance(exc, DaemonUnavailable) and not isinstance(exc, DaemonBusy):
        return f"telemetryd is not running: {exc}"
    return str(exc)


def failure(exc: TelemetryError) -> tuple[int, str]:
    """The exit status and the stderr line for a load that failed with ``exc``: the
    daemon and the database being away exit with EXIT_UNAVAILABLE, as `telemetryctl
    query` does, anything else with EXIT_FAILED and ``Error: <message>``."""
    if isinstance(exc, (DaemonUnavailable, StoreUnavailable)):  # DaemonBusy included
        where = "the database cannot be opened: " if isinstance(exc, StoreUnavailable) else ""
        return EXIT_UNAVAILABLE, f"Error: {where}{message(exc)}"
    return EXIT_FAILED, f"Error: {message(exc)}"


def notices(from_file: bool, warning: str | None) -> list[str]:
    """The stderr lines of a load that worked: read from the file, the daemon's warning."""
    lines = [FROM_FILE] if from_file else []
    if warning:
        lines.append(f"warning: {warning}")
    return lines


def _collect(
    replies: Iterator[protocol.QueryColumns | protocol.QueryRows | protocol.QueryDone],
) -> tuple[list[dict[str, Any]], str | None]:
    """A query's rows as dicts, and the daemon's warning. Raises what the replies raise
    (DaemonError with DuckDB's message when the query failed)."""
    names: list[str] = []
    rows: list[dict[str, Any]] = []
    for reply in replies:
        if isinstance(reply, protocol.QueryRows):
            rows.extend(dict(zip(names, row, strict=True)) for row in reply.rows)
        elif isinstance(reply, protocol.QueryColumns):
            names = [name for name, _ in reply.columns]
        else:
            return rows, reply.warning
    raise ProtocolError("the answer ended before the end of its result")


def query(
    sql: str, params: dict[str, Any], socket_path: str | None = None, timeout: float = 30.0
) -> tuple[list[dict[str, Any]], bool, str | None]:
    """Rows of one read-only query, from the daemon or, while it is stopped, the
    database file: ``(rows, from_file, warning)``. DaemonBusy when the daemon is too
    busy to answer, DaemonUnavailable when neither the daemon nor a database file is
    there, StoreUnavailable when the database cannot be opened, DaemonError when the
    query fails."""
    started = False
    try:
        with Control(socket_path or protocol.control_socket()) as control:
            replies = control.query(sql, params, timeout)
            first = next(replies)  # nobody answering raises here, before any reply
            started = True
            rows, warning = _collect(_chain(first, replies))
            return rows, False, warning
    except DaemonBusy:
        raise
    except DaemonUnavailable as down:
        if started:
            raise  # it answered, then went away: its file is no better
        reason = str(down)
    try:
        replies = store_process.from_file(sql, params, timeout)
    except DaemonUnavailable as missing:
        raise DaemonUnavailable(f"{reason}, {missing}") from None
    rows, warning = _collect(replies)
    return rows, True, warning


def _chain(
    first: protocol.QueryColumns | protocol.QueryRows | protocol.QueryDone,
    rest: Iterator[protocol.QueryColumns | protocol.QueryRows | protocol.QueryDone],
) -> Iterator[protocol.QueryColumns | protocol.QueryRows | protocol.QueryDone]:
    yield first
    yield from rest
