"""Requests on the control socket (docs/protocol.md, "The control socket").

:class:`Control` is one connection for requests in turn: status, flush, rebuild and
gc (one answer each, typed), query and tail (replies streamed, typed). The module
functions make one request on a connection of their own. Everything raises what the
protocol client raises: DaemonUnavailable (not running, or gone before answering),
DaemonBusy (up, but refused the connection for load or did not answer in time),
DaemonError (running, and answered with an error line) or ProtocolError (an answer
that makes no sense). Standard library only: the hook's SessionStart query uses it.
"""

from __future__ import annotations

import time

from telemetryd import fastjson
from telemetryd.client.protocol import (
    ANSWERS,
    MAX_QUERY_TIMEOUT,
    Answer,
    Closing,
    Exported,
    Flushed,
    GcReport,
    QueryColumns,
    QueryDone,
    QueryRows,
    Rebuilt,
    Replies,
    Status,
    TailDone,
    TailDropped,
    TailEvents,
    Totals,
    connect,
    is_event,
    query_answer,
    query_request,
    read_reply,
    tail_reply,
)
from telemetryd.errors import DaemonBusy, DaemonUnavailable, TelemetryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from telemetryd import wire

CONNECT_TIMEOUT = 5.0  # seconds to connect and to send a request
DEFAULT_TIMEOUT = 5.0  # seconds for the answer to status and totals
LONG_TIMEOUT = 3600.0  # flush (it may start the store worker and load), rebuild and gc
REPLY_GRACE = 5.0  # past a query's own timeout, before the client stops waiting
TAIL_TIMEOUT = 10.0  # for the whole answer of a tail that does not follow (its backlog)


class Control:
    """One connection to the control socket, for requests in turn: :meth:`status`,
    :meth:`flush`, :meth:`rebuild`, :meth:`gc` (one answer each), :meth:`query` and
    :meth:`tail` (replies streamed). Connecting and sending wait at most ``timeout``."""

    def __init__(self, path: str, timeout: float = CONNECT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.sock = connect(path, timeout)
        self._replies = Replies(self.sock)
        self._ready: list[bytes] = []

    def __enter__(self) -> Control:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _send(self, message: dict[str, Any]) -> None:
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(fastjson.dumps(message).encode() + b"\n")
        except TimeoutError:
            raise DaemonBusy(f"the daemon took no request for {self.timeout:g} s") from None
        except OSError as exc:  # closed on us: an error line may say why
            closing = self._closing_after_failure()
            if closing is not None:
                raise closing.exception() from None
            raise DaemonUnavailable(f"lost the daemon: {exc.strerror or exc}") from None

    def _closing_after_failure(self) -> Closing | None:
        try:
            line = self._line(time.monotonic() + 1.0)
            reply = None if line is None else Closing.read(read_reply(line))
        except TelemetryError:
            return None
        return reply

    def _batch(self, deadline: float | None) -> list[bytes] | None:
        """The lines read but not handled yet, else those of the next read; None at the
        end. A read past ``deadline`` is DaemonBusy, a broken connection DaemonUnavailable."""
        if self._ready:
            lines, self._ready = self._ready, []
            return lines
        self._replies.deadline = deadline
        if deadline is None:
            self.sock.settimeout(None)
        try:
            return self._replies.read()
        except TimeoutError:
            raise DaemonBusy("the daemon did not answer in time") from None
        except OSError as exc:
            raise DaemonUnavailable(f"lost the daemon: {exc.strerror or exc}") from None

    def _line(self, deadline: float | None) -> bytes | None:
        while not self._ready:
            lines = self._batch(deadline)
            if lines is None:
                return None
            self._ready = lines
        return self._ready.pop(0)

    def answer(self, message: dict[str, Any], timeout: float | None = None) -> Answer:
        """Send a one-line request (``{"op": ...}``) and return its answer, typed by its
        ``op`` (Status, Flushed, Rebuilt, GcReport; Answer for others), within
        ``timeout`` seconds (the connection's by default)."""
        self._send(message)
        wait = self.timeout if timeout is None else timeout
        try:
            line = self._line(time.monotonic() + wait)
        except DaemonBusy:
            raise DaemonBusy(f"the daemon did not answer within {wait:g} s") from None
        if line is None:
            raise DaemonUnavailable("the daemon closed the connection without answering")
        kind = ANSWERS.get(str(message.get("op")), Answer)
        reply = kind.read(read_reply(line))
        if isinstance(reply, Closing):
            raise reply.exception()
        return reply

    def status(self, timeout: float | None = None) -> Status:
        answer = self.answer({"op": "status"}, timeout)
        assert isinstance(answer, Status)
        return answer

    def flush(self, timeout: float | None = None) -> Flushed:
        answer = self.answer({"op": "flush"}, timeout)
        assert isinstance(answer, Flushed)
        return answer

    def rebuild(self, timeout: float | None = None) -> Rebuilt:
        answer = self.answer({"op": "rebuild"}, timeout)
        assert isinstance(answer, Rebuilt)
        return answer

    def gc(self, dry_run: bool = False, timeout: float | None = None) -> GcReport:
        answer = self.answer({"op": "gc", "dry_run": dry_run}, timeout)
        assert isinstance(answer, GcReport)
        return answer

    def totals(
        self, session: str | None = None, timeout: float | None = None, since: str | None = None
    ) -> Totals:
        """The daemon's running totals of API usage: today's, the active 5-hour window's,
        ``session``'s and those since ``since`` (RFC 3339) when given."""
        message: dict[str, Any] = {"op": "totals"}
        if session is not None:
            message["session"] = session
        if since is not None:
            message["since"] = since
        answer = self.answer(message, timeout)
        assert isinstance(answer, Totals)
        return answer

    def query(
        self,
        sql: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Iterator[QueryColumns | QueryRows | QueryDone]:
        """Run one query: its columns, batches of rows, then its end, as they come.
        ``timeout`` is the query's own (the daemon's default when None); the client waits
        until ``deadline``, by default that timeout (as the daemon says it, in the line
        that says it has the query) and a grace. A daemon that does not say it has the
        query within the grace (stopped, or wedged) is DaemonBusy."""
        self._send(query_request(sql, params, timeout, accepted=True))
        began = time.monotonic()
        try:
            first = self._line(began + REPLY_GRACE if deadline is None else deadline)
        except DaemonBusy:
            raise DaemonBusy(
                f"the daemon did not take the query within {REPLY_GRACE:g} s (stopped, or too busy)"
            ) from None
        if first is not None:
            accepted = read_reply(first) if first.startswith(b'{"accepted":true') else {}
            if isinstance(accepted.get("timeout"), float):
                timeout = accepted["timeout"]
            else:  # (an error line, or not even that: the answer, for query_answer to read)
                self._ready.insert(0, first)
        if deadline is None:
            deadline = began + (timeout or MAX_QUERY_TIMEOUT) + REPLY_GRACE
        stop = deadline

        def ended(started: bool) -> TelemetryError:
            if started:
                return DaemonUnavailable("the daemon closed the connection early")
            return DaemonUnavailable("the daemon closed the connection without answering")

        return query_answer(lambda: self._line(stop), ended)

    def tail(self, request: dict[str, Any]) -> Iterator[TailEvents | TailDropped | TailDone]:
        """Send a tail request (``{"op": "tail", ...}``); the replies, for as long as they
        come (a tail that follows ends only when the daemon stops or the reader stops
        reading). Events that arrived together come as one TailEvents. One that does not
        follow ends within :data:`TAIL_TIMEOUT` (DaemonBusy past it: the daemon is stopped
        or wedged)."""
        self._send(request)
        deadline = None if request.get("follow") else time.monotonic() + TAIL_TIMEOUT
        return self._tail_replies(deadline)

    def _tail_replies(
        self, deadline: float | None
    ) -> Iterator[TailEvents | TailDropped | TailDone]:
        while True:
            lines = self._batch(deadline)
            if lines is None:
                raise DaemonUnavailable("the daemon closed the connection")
            run: list[bytes] = []
            for index, line in enumerate(lines):
                if is_event(line):
                    run.append(line)
                    continue
                if run:
                    yield TailEvents(run)
                    run = []
                reply = tail_reply(read_reply(line))
                if isinstance(reply, Closing):
                    raise reply.exception()
                yield reply
                if isinstance(reply, TailDone):
                    self._ready = lines[index + 1 :]
                    return
            if run:
                yield TailEvents(run)


def request(path: str, message: wire.Request, timeout: float = DEFAULT_TIMEOUT) -> Answer:
    """Send one control request (a :mod:`telemetryd.wire` Struct) and return its
    answer, typed by the request (a status request is answered by a Status)."""
    import msgspec

    with Control(path, min(timeout, CONNECT_TIMEOUT)) as control:
        return control.answer(msgspec.to_builtins(message), timeout)


def status(path: str, timeout: float = DEFAULT_TIMEOUT) -> Status:
    with Control(path, min(timeout, CONNECT_TIMEOUT)) as control:
        return control.status(timeout)


def flush(path: str, timeout: float = LONG_TIMEOUT) -> Flushed:
    with Control(path, min(timeout, CONNECT_TIMEOUT)) as control:
        return control.flush(timeout)


def rebuild(path: str, timeout: float = LONG_TIMEOUT) -> Rebuilt:
    with Control(path, min(timeout, CONNECT_TIMEOUT)) as control:
        return control.rebuild(timeout)


def gc(path: str, dry_run: bool, timeout: float = LONG_TIMEOUT) -> GcReport:
    with Control(path, min(timeout, CONNECT_TIMEOUT)) as control:
        return control.gc(dry_run, timeout)


def export(
    path: str,
    target: str,
    since: str | None = None,
    until: str | None = None,
    timeout: float = LONG_TIMEOUT,
) -> Exported:
    """Ask the daemon for a Parquet export run into ``target`` (an absolute path or a
    URL); ``since``/``until``: RFC 3339 times, the window of a new export directory."""
    message: dict[str, Any] = {"op": "export", "dir": target}
    if since is not None:
        message["since"] = since
    if until is not None:
        message["until"] = until
    with Control(path, min(timeout, CONNECT_TIMEOUT)) as control:
        answer = control.answer(message, timeout)
    assert isinstance(answer, Exported)
    return answer
