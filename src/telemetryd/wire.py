"""Message shapes shared by the daemon and its clients (docs/protocol.md explains them).

Events socket: a client writes one JSON event per line. The daemon answers each
rejected line at once with a :class:`Rejected` line, and answers a sync request
(``{"op": "sync"}``) or the client's half-close with one :class:`Summary` line,
sent only once every event it accepted on that connection is in the journal
under the configured durability mode. A problem with the connection as a whole
(too many connections, idle timeout, shutdown) gets a :class:`Closing` line.

Control socket: one JSON request per line, answered by one or more reply lines.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import Struct

from telemetryd.events import (  # noqa: F401  (the codes for one bad line)
    ATTRS_TOO_DEEP,
    ATTRS_TOO_LARGE,
    INVALID_EVENT,
    INVALID_JSON,
    INVALID_UTF8,
    LINE_TOO_LONG,
    RECEIVED_AT_SET,
)

# Short, stable error codes in Rejected.error / Closing.error.
JOURNAL_UNAVAILABLE = "journal_unavailable"
TOO_MANY_CONNECTIONS = "too_many_connections"
FORBIDDEN_PEER = "forbidden_peer"
IDLE_TIMEOUT = "idle_timeout"
SHUTTING_DOWN = "shutting_down"
BAD_REQUEST = "bad_request"
QUERY_FAILED = "query_failed"
QUERY_TIMEOUT = "query_timeout"

SYNC_REQUEST = b'{"op":"sync"}\n'


class Rejected(Struct, omit_defaults=True):
    """One line was not journaled; ``line`` is 1-based within the connection."""

    line: int
    error: str
    message: str
    path: str | None = None


class Summary(Struct):
    """Everything the connection sent so far: lines read, events newly journaled,
    lines rejected, and events whose id was already in the journal."""

    ok: bool
    lines: int
    accepted: int
    rejected: int
    duplicates: int


class Closing(Struct):
    """The daemon closes the connection; ``error`` says why."""

    error: str
    message: str


class Sync(Struct, forbid_unknown_fields=True):
    op: Literal["sync"]


# Control socket requests, tagged by ``op``.
class Request(Struct, tag_field="op", forbid_unknown_fields=True, kw_only=True):
    pass


class StatusRequest(Request, tag="status"):
    pass


class FlushRequest(Request, tag="flush"):
    pass


class RebuildRequest(Request, tag="rebuild"):
    """Recreate the database from the journal."""


class QueryRequest(Request, tag="query"):
    """Run one read-only SQL statement; ``params`` bind ``$name`` placeholders."""

    sql: str
    params: dict[str, Any] | None = None
    timeout: float | None = None  # seconds; the daemon's default when None


ControlRequest = StatusRequest | FlushRequest | RebuildRequest | QueryRequest


# Query replies, in order: one QueryColumns, any number of QueryRows, then one
# QueryDone, or a Closing with error QUERY_FAILED (the message is DuckDB's own).
class QueryColumns(Struct):
    columns: list[tuple[str, str]]  # (name, DuckDB type)


class QueryRows(Struct):
    rows: list[tuple[Any, ...]]


class QueryDone(Struct):
    ok: bool
    row_count: int
    elapsed_ms: float


ENCODER = msgspec.json.Encoder()
SYNC_DECODER = msgspec.json.Decoder(Sync)
CONTROL_DECODER = msgspec.json.Decoder(ControlRequest)


def encode_line(message: Struct) -> bytes:
    return ENCODER.encode(message) + b"\n"
