"""The protocol client's bottom layer: what telemetryd's reply lines are (docs/protocol.md).

Every command talks to the daemon through the client library, whose exchanges are
built on this module: :mod:`~telemetryd.client.delivery` (events: `send`, `hook`,
`import`), :mod:`~telemetryd.client.control` (status, flush, rebuild, gc, query,
tail) and :mod:`~telemetryd.client.store_process` (a query while the daemon is
stopped). No command reads a reply line itself. `send` and `hook` import this on
every tool call of an agent, so it imports the standard library's C pieces only
(``_socket``, ``time``, and :mod:`telemetryd.fastjson`).

From the bottom:

- :func:`connect`: a Unix stream socket with a timeout, or DaemonUnavailable saying
  why there is none.
- :class:`Replies`: complete reply lines from a socket, each at most ``MAX_REPLY_LINE``
  bytes, within a deadline; a last line the peer did not finish is never returned.
- :func:`read_reply`: one line as a JSON object, or ProtocolError.
- The reply classes and their readers :func:`event_reply`, :func:`query_reply`,
  :func:`tail_reply` and :meth:`Answer.read`. Replies carry no type tag (a Summary, a
  QueryDone and a status answer all say ``"ok": true``), so each reader knows which
  request the line answers; a line that is none of its replies is a ProtocolError.
- :meth:`Closing.exception`: an error line as the exception it stands for, the same
  for every command:

  ============================  =====================================================
  ``too_many_connections``      DaemonBusy: up, but refused for load; try later
  ``shutting_down``             DaemonUnavailable: the daemon is stopping
  ``store_unavailable``         StoreUnavailable (a DaemonError): no database to query
  any other code                DaemonError(code, message): the daemon is running and
                                said no (``forbidden_peer``, ``bad_request``,
                                ``query_failed``, ``query_timeout``, ``idle_timeout``,
                                ``journal_unavailable``, ``gc_failed``, ...)
  ============================  =====================================================

  A reply that does not come in time is DaemonBusy; a connection that cannot be made,
  or that ends before the answer, DaemonUnavailable.
"""

from __future__ import annotations

import _socket
import os
import time

from telemetryd import fastjson
from telemetryd.errors import (
    DaemonBusy,
    DaemonError,
    DaemonUnavailable,
    ProtocolError,
    StoreUnavailable,
    TelemetryError,
)

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs ~4 ms
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, TypeVar

    AnswerT = TypeVar("AnswerT", bound="Answer")
    _Object = dict[str, Any]
else:
    _Object = dict

# The protocol's numbers and codes, as in telemetryd.wire (which imports msgspec: too
# slow here; tests/test_client.py holds the two together).
MAX_REPLY_LINE = 64 * 1024 * 1024 + 1024  # one 64 MiB row of a query result, framed
MAX_QUERY_TIMEOUT = 3600.0
MAX_TAIL_BACKLOG = 100_000
TOO_MANY_CONNECTIONS = "too_many_connections"
FORBIDDEN_PEER = "forbidden_peer"
IDLE_TIMEOUT = "idle_timeout"
SHUTTING_DOWN = "shutting_down"
JOURNAL_UNAVAILABLE = "journal_unavailable"
BAD_REQUEST = "bad_request"
QUERY_FAILED = "query_failed"
QUERY_TIMEOUT = "query_timeout"
STORE_UNAVAILABLE = "store_unavailable"

_RECV = 1 << 18
_EVENT = b'{"type":'  # every journal line (a tail's event line) starts so


def control_socket() -> str:
    """The control socket's path, without importing platformdirs when the rule is simple."""
    home = os.environ.get("TELEMETRYD_HOME")
    if home:
        return os.path.join(os.path.abspath(os.path.expanduser(home)), "run", "control.sock")
    from telemetryd import paths

    return os.path.join(os.path.dirname(paths.events_socket_fast()), paths.CONTROL_SOCKET)


# -- connecting and framing -------------------------------------------------------------


def connect(path: str, timeout: float | None) -> _socket.socket:
    """A connected Unix stream socket with ``timeout``; DaemonUnavailable when nothing
    takes the connection, DaemonBusy when it is not taken within ``timeout``."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise DaemonUnavailable(f"no daemon socket at {path}") from None
    except ConnectionRefusedError:
        sock.close()
        import stat  # (only on this path: a socket nobody listens on, or no socket at all)

        try:
            is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
        except OSError:
            is_socket = True
        if not is_socket:
            raise DaemonUnavailable(f"{path} is not a socket") from None
        raise DaemonUnavailable(f"nothing is listening on {path}") from None
    except TimeoutError:
        sock.close()
        raise DaemonBusy(f"{path} did not take the connection within {timeout:g} s") from None
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(f"cannot connect to {path}: {exc.strerror or exc}") from None
    return sock


class Replies:
    """Complete reply lines from ``sock``.

    Chunks are kept in a list and joined once per newline, so a long line costs linear
    time; a line longer than ``max_line`` is a ProtocolError, and a last line the peer
    did not finish (no newline before it closed the connection) is never returned:
    ``cut`` says there was one. With a ``deadline`` (time.monotonic()), a read past it
    raises TimeoutError; without one, reads wait as long as the socket's timeout says.
    """

    def __init__(
        self, sock: _socket.socket, deadline: float | None = None, max_line: int = MAX_REPLY_LINE
    ) -> None:
        self.sock = sock
        self.deadline = deadline
        self.max_line = max_line
        self.cut = False
        self._pending: list[bytes] = []
        self._size = 0

    def read(self) -> list[bytes] | None:
        """The complete lines of one read (possibly none); None once the peer closed."""
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply in time")
            self.sock.settimeout(remaining)
        chunk = self.sock.recv(_RECV)
        if not chunk:
            self.cut = self._size > 0
            return None
        self._pending.append(chunk)
        if b"\n" not in chunk:
            self._size += len(chunk)
            if self._size > self.max_line:
                raise ProtocolError(f"a reply line from the daemon is over {self.max_line} bytes")
            return []
        lines = b"".join(self._pending).split(b"\n")
        rest = lines.pop()
        self._pending = [rest] if rest else []
        self._size = len(rest)
        if any(len(line) > self.max_line for line in lines):
            raise ProtocolError(f"a reply line from the daemon is over {self.max_line} bytes")
        return lines

    def batches(self) -> Iterator[list[bytes]]:
        """The complete lines of each read (lists, possibly empty), until the peer closes."""
        while (lines := self.read()) is not None:
            yield lines

    def lines(self) -> Iterator[bytes]:
        for lines in self.batches():
            yield from lines


def read_reply(line: bytes) -> dict[str, Any]:
    """One reply line as a JSON object; ProtocolError when it is not one."""
    try:
        reply = fastjson.loads(line.decode())
    except (UnicodeDecodeError, ValueError):
        reply = None
    if not isinstance(reply, dict):
        raise ProtocolError(f"the daemon sent a malformed reply line ({_shown(line)})")
    return reply


def _shown(line: bytes) -> str:
    return f"{len(line)} bytes: {line[:80] + (b'...' if len(line) > 80 else b'')!r}"


def _nonsense(what: str, reply: dict[str, Any]) -> ProtocolError:
    return ProtocolError(
        f"the daemon's reply is not {what}: {_shown(fastjson.dumps(reply).encode())}"
    )


def _int(reply: dict[str, Any], key: str, what: str) -> int:
    value = reply.get(key)
    if type(value) is not int:
        raise _nonsense(what, reply)
    return value


def _str(reply: dict[str, Any], key: str, what: str) -> str:
    value = reply.get(key)
    if not isinstance(value, str):
        raise _nonsense(what, reply)
    return value


# -- the replies ------------------------------------------------------------------------


class Reply:
    """A reply line, typed; equal to another of the same class and fields."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    __hash__ = None  # type: ignore[assignment]  # mutable fields

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Closing(Reply):
    """An error line: the daemon refuses a request or closes the connection, and
    ``error`` (a code) says why. :meth:`exception` is what it means to a client."""

    __slots__ = ("error", "message")

    def __init__(self, error: str, message: str) -> None:
        self.error = error
        self.message = message

    @classmethod
    def read(cls, reply: dict[str, Any]) -> Closing | None:
        """The error line ``reply`` is, or None when it has no ``error``."""
        if "error" not in reply:
            return None
        error, message = reply.get("error"), reply.get("message")
        if not isinstance(error, str) or not isinstance(message, str):
            raise _nonsense("an error line", reply)
        return cls(error, message)

    def exception(self) -> TelemetryError:
        """The exception this error line stands for (the table in the module docstring)."""
        if self.error == TOO_MANY_CONNECTIONS:
            return DaemonBusy(f"the daemon is busy: {self.message}")
        if self.error == SHUTTING_DOWN:
            return DaemonUnavailable(self.message)
        if self.error == STORE_UNAVAILABLE:
            return StoreUnavailable(self.error, self.message)
        return DaemonError(self.error, self.message)


# The events socket.


class Rejected(Reply):
    """One line was not journaled; ``line`` counts from 1 within the connection."""

    __slots__ = ("error", "line", "message", "path")

    def __init__(self, line: int, error: str, message: str, path: str | None = None) -> None:
        self.line = line
        self.error = error
        self.message = message
        self.path = path


class Summary(Reply):
    """Every line of the connection up to ``lines`` is journaled, a duplicate, or rejected."""

    __slots__ = ("accepted", "duplicates", "lines", "rejected")

    def __init__(self, lines: int, accepted: int, rejected: int, duplicates: int) -> None:
        self.lines = lines
        self.accepted = accepted
        self.rejected = rejected
        self.duplicates = duplicates

    def as_dict(self) -> dict[str, Any]:
        """The summary line as the daemon sent it."""
        return {"ok": True, **{name: getattr(self, name) for name in _SUMMARY_ORDER}}


_SUMMARY_ORDER = ("lines", "accepted", "rejected", "duplicates")


def event_reply(reply: dict[str, Any]) -> Rejected | Summary | Closing:
    """What a reply line on the events socket is."""
    if "line" in reply:
        path = reply.get("path")
        if path is not None and not isinstance(path, str):
            raise _nonsense("a rejected line", reply)
        return Rejected(
            _int(reply, "line", "a rejected line"),
            _str(reply, "error", "a rejected line"),
            _str(reply, "message", "a rejected line"),
            path,
        )
    closing = Closing.read(reply)
    if closing is not None:
        return closing
    if reply.get("ok") is not True:
        raise _nonsense("a summary", reply)
    counts = [_int(reply, name, "a summary") for name in _SUMMARY_ORDER]
    return Summary(*counts)


# Queries.


class QueryColumns(Reply):
    """The first line of a result: ``[name, DuckDB type]`` per column."""

    __slots__ = ("columns",)

    def __init__(self, columns: list[list[str]]) -> None:
        self.columns = columns


class QueryRows(Reply):
    """A batch of rows, each a list of JSON values."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[list[Any]]) -> None:
        self.rows = rows


class QueryDone(Reply):
    """The end of a result. ``warning`` says why events acknowledged before the query
    may be missing from it (they are not in the database yet)."""

    __slots__ = ("elapsed_ms", "row_count", "warning")

    def __init__(self, row_count: int, elapsed_ms: float, warning: str | None = None) -> None:
        self.row_count = row_count
        self.elapsed_ms = elapsed_ms
        self.warning = warning


def query_reply(reply: dict[str, Any]) -> QueryColumns | QueryRows | QueryDone | Closing:
    """What a reply line to a query is."""
    rows = reply.get("rows")
    if rows is not None:
        if not isinstance(rows, list):
            raise _nonsense("a batch of rows", reply)
        for row in rows:
            if not isinstance(row, list):
                raise _nonsense("a batch of rows", {"rows": [row]})
        return QueryRows(rows)
    columns = reply.get("columns")
    if columns is not None:
        if not isinstance(columns, list):
            raise _nonsense("a list of columns", reply)
        for column in columns:
            if not (
                isinstance(column, list)
                and len(column) == 2
                and all(isinstance(part, str) for part in column)
            ):
                raise _nonsense("a list of columns", reply)
        return QueryColumns(columns)
    closing = Closing.read(reply)
    if closing is not None:
        return closing
    elapsed = reply.get("elapsed_ms")
    warning = reply.get("warning")
    if (
        reply.get("ok") is not True
        or not isinstance(elapsed, (int, float))
        or isinstance(elapsed, bool)
        or not (warning is None or isinstance(warning, str))
    ):
        raise _nonsense("the end of a result", reply)
    return QueryDone(_int(reply, "row_count", "the end of a result"), float(elapsed), warning)


def query_answer(
    next_line: Callable[[], bytes | None], ended: Callable[[bool], TelemetryError]
) -> Iterator[QueryColumns | QueryRows | QueryDone]:
    """The replies to one query, in their order (columns, rows, done); raises what an
    error line means, and ``ended(started)`` when the lines stop before the end."""
    started = False
    while True:
        line = next_line()
        if line is None:
            raise ended(started)
        reply = query_reply(read_reply(line))
        if isinstance(reply, Closing):
            raise reply.exception()
        if isinstance(reply, QueryColumns) == started:
            what = "columns twice" if started else "rows or an end before the columns"
            raise ProtocolError(f"the daemon's answer to a query makes no sense: {what}")
        started = True
        yield reply
        if isinstance(reply, QueryDone):
            return


def query_request(
    sql: str,
    params: dict[str, Any] | None = None,
    timeout: float | None = None,
    *,
    accepted: bool = False,
) -> dict[str, Any]:
    """The control socket's query request (``params``, ``timeout`` and ``accepted`` only
    when given)."""
    request: dict[str, Any] = {"op": "query", "sql": sql}
    if params:
        request["params"] = params
    if timeout is not None:
        request["timeout"] = timeout
    if accepted:
        request["accepted"] = True
    return request


# Tails.


class TailEvents(Reply):
    """Consecutive event lines of a tail, as journaled (JSON text, without newlines)."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines


class TailDropped(Reply):
    """This many events were journaled but not sent: the client read too slowly."""

    __slots__ = ("dropped",)

    def __init__(self, dropped: int) -> None:
        self.dropped = dropped


class TailDone(Reply):
    """The end of a tail without ``follow``: ``events`` were sent."""

    __slots__ = ("events",)

    def __init__(self, events: int) -> None:
        self.events = events


def is_event(line: bytes) -> bool:
    """Whether a tail's reply line is an event (journal lines start with their type)."""
    return line.startswith(_EVENT)


def tail_reply(reply: dict[str, Any]) -> TailDropped | TailDone | Closing:
    """What a reply line to a tail is, when it is not an event line (:func:`is_event`)."""
    if "dropped" in reply:
        return TailDropped(_int(reply, "dropped", "a count of skipped events"))
    closing = Closing.read(reply)
    if closing is not None:
        return closing
    if reply.get("ok") is not True:
        raise _nonsense("the end of a tail", reply)
    return TailDone(_int(reply, "events", "the end of a tail"))


# One-line answers: status, flush, rebuild, gc.


class Answer(_Object):
    """The whole answer to a one-line control request, as the JSON object it is (``--json``
    prints it as it came), with typed attributes for what commands read."""

    op = ""

    @classmethod
    def read(cls: type[AnswerT], reply: dict[str, Any]) -> AnswerT | Closing:
        """The answer ``reply`` is, or the error line it is instead."""
        closing = Closing.read(reply)
        if closing is not None:
            return closing
        if reply.get("ok") is not True:
            raise _nonsense(f"an answer to {cls.op or 'the request'}", reply)
        answer = cls(reply)
        answer.check()
        return answer

    def check(self) -> None:
        """ProtocolError when a field the answer must have is missing or of another type."""

    def _need(self, key: str, *types: type) -> Any:
        value = self.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _nonsense(f"an answer to {self.op}", self)
        return value


class Status(Answer):
    """The daemon's state (docs/protocol.md lists the fields)."""

    op = "status"

    def check(self) -> None:
        self._need("version", str)
        self._need("pid", int)
        self._need("journal", dict)

    @property
    def version(self) -> str:
        return str(self["version"])

    @property
    def pid(self) -> int:
        return int(self["pid"])


class Flushed(Answer):
    """Everything accepted before the request is written, fsynced and in the database;
    ``materialized`` events were new to it (None from a daemon that does not say)."""

    op = "flush"

    def check(self) -> None:
        self._need("materialized", int, type(None))

    @property
    def materialized(self) -> int | None:
        value = self.get("materialized")
        return None if value is None else int(value)


class Rebuilt(Answer):
    """The database was recreated from the journal; it holds ``events`` events, and held
    ``events_before`` (None: unknown); ``salvaged`` and ``bad_lines``: the damage the
    rebuild met in the journal (each as in `status`; empty from a daemon that does not say)."""

    op = "rebuild"

    def check(self) -> None:
        self._need("events", int)
        self._need("events_before", int, type(None))
        for key in ("salvaged", "bad_lines"):
            if not all(isinstance(item, dict) for item in self.get(key) or []):
                raise _nonsense("an answer to rebuild", self)

    @property
    def events(self) -> int:
        return int(self["events"])

    @property
    def events_before(self) -> int | None:
        value = self.get("events_before")
        return None if value is None else int(value)

    @property
    def salvaged(self) -> list[dict[str, Any]]:
        return list(self.get("salvaged") or [])

    @property
    def bad_lines(self) -> list[dict[str, Any]]:
        return list(self.get("bad_lines") or [])


class GcReport(Answer):
    """What retention did (or, with ``dry_run``, would do): segments deleted, compacted
    (only their usage kept) and compressed, events deleted, journal bytes before and
    after, a warning when usage was deleted, and what failed (tried again next run)."""

    op = "gc"

    def check(self) -> None:
        self._need("dry_run", bool)
        for key in ("deleted", "compressed"):
            if not all(isinstance(name, str) for name in self._need(key, list)):
                raise _nonsense("an answer to gc", self)
        self._need("bytes_before", int)
        self._need("events_deleted", int, type(None))
        self._need("bytes_after", int, type(None))

    @property
    def dry_run(self) -> bool:
        return bool(self["dry_run"])

    @property
    def deleted(self) -> list[str]:
        return list(self["deleted"])

    @property
    def compressed(self) -> list[str]:
        return list(self["compressed"])

    @property
    def compacted(self) -> list[str]:
        return [str(name) for name in self.get("compacted") or []]

    @property
    def warning(self) -> str | None:
        value = self.get("warning")
        return None if value is None else str(value)

    @property
    def failed(self) -> list[str]:
        """What could not be compacted or compressed (``"compact NAME: why"``)."""
        return [str(what) for what in self.get("failed") or []]

    @property
    def events_deleted(self) -> int | None:
        value = self.get("events_deleted")
        return None if value is None else int(value)

    @property
    def bytes_before(self) -> int:
        return int(self["bytes_before"])

    @property
    def bytes_after(self) -> int | None:
        value = self.get("bytes_after")
        return None if value is None else int(value)


class Totals(Answer):
    """The daemon's running totals of API usage: ``today`` (UTC day ``day``), ``days``
    kept, and ``session`` when one was asked for (None: the daemon saw none of it)."""

    op = "totals"

    def check(self) -> None:
        self._need("day", str)
        self._need("today", dict)
        self._need("days", dict)


class Exported(Answer):
    """One Parquet export run: ``run`` (None: nothing was new), the ``events`` and
    ``files`` it wrote, the directory's ``total_events`` and window (docs/export.md)."""

    op = "export"

    def check(self) -> None:
        self._need("target", str)
        self._need("run", int, type(None))
        self._need("events", int)
        if not all(isinstance(name, str) for name in self._need("files", list)):
            raise _nonsense("an answer to export", self)
        self._need("total_events", int)

    @property
    def run(self) -> int | None:
        value = self.get("run")
        return None if value is None else int(value)

    @property
    def events(self) -> int:
        return int(self["events"])

    @property
    def files(self) -> list[str]:
        return list(self["files"])

    @property
    def total_events(self) -> int:
        return int(self["total_events"])


ANSWERS: dict[str, type[Answer]] = {
    kind.op: kind for kind in (Status, Flushed, Rebuilt, GcReport, Totals, Exported)
}
