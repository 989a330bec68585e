"""The control socket: one JSON request per line, answered through a table of operations.

Limits: at most :data:`MAX_CONTROL` connections, apart from the events socket's
own, so control clients never lock out producers. When all are open, the
connection that has waited longest for its next request is closed to make room;
when none is waiting, :data:`STATUS_RESERVE` more clients may each ask one
``status`` (so `status` answers whenever the daemon is up), and the rest are told
the daemon is busy. A connection idle for ``ingest.idle-timeout`` is closed.

Replies: every request line gets at least one reply line, and a line goes out whole
or the connection is given up (:class:`Replies`). Requests are decoded into the
tagged union of wire.py and handed to their :class:`Operation` by :class:`Dispatch`,
which encodes the typed reply, or, when the operation fails, a Closing line whose
code is the operation's own (``gc_failed``, ...) or the failed part's
(``store_unavailable``, ``journal_unavailable``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from anyio.abc import SocketStream, TaskGroup, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from telemetryd import wire
from telemetryd.config import Ingest
from telemetryd.daemon.listeners.sockets import SEND_TIMEOUT, Conn, Peers, closing
from telemetryd.errors import JournalError, TelemetryError

log = logging.getLogger(__name__)

MAX_CONTROL = 64  # control connections at once (an idle one is closed to make room)
STATUS_RESERVE = 8  # connections past that limit that may still ask for `status`
STATUS_ONLY_WAIT = 2.0  # seconds such a connection gets to send its request
REPLY_CHUNK = 256 * 1024  # control replies are handed to the socket this much at a time
MIN_REPLY_RATE = 1024 * 1024  # bytes/s a control client must read a long reply line at


# -- replies --------------------------------------------------------------------------


class ReplyLost(Exception):
    """A reply line could not be sent whole: the connection can take no more lines."""


class Replies:
    """The reply side of a control connection. A line goes out whole or the connection
    is given up: it must be sent within ``SEND_TIMEOUT`` seconds plus one per MiB, in
    chunks (so the socket's buffer stays small); a line cut short by a timeout, a
    broken pipe or cancellation marks the connection lost, and nothing more is written
    to it (a client never sees a line with another glued to its cut end)."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.lost = False

    async def send(self, line: bytes) -> None:
        if self.lost:
            raise ReplyLost("an earlier reply line was cut short")
        self.lost = True  # until the whole line is out
        try:
            with anyio.fail_after(SEND_TIMEOUT + len(line) / MIN_REPLY_RATE):
                if len(line) <= REPLY_CHUNK:
                    await self.stream.send(line)
                else:
                    for start in range(0, len(line), REPLY_CHUNK):
                        await self.stream.send(line[start : start + REPLY_CHUNK])
        except TimeoutError:
            raise ReplyLost("the client did not read its reply in time") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ReplyLost(f"the client went away ({type(exc).__name__})") from None
        self.lost = False

    async def close_with(self, code: str, message: str) -> None:
        """Send a Closing line, if the connection can still take one."""
        with contextlib.suppress(ReplyLost):
            await self.send(closing(code, message))


# -- dispatch -------------------------------------------------------------------------

# A handler answers one request: a typed reply (encoded by the dispatcher), or None
# when it sent its reply lines itself (a stream: query, tail).
Handler = Callable[[Any, Replies], Awaitable[wire.Reply | None]]


@dataclass(frozen=True)
class Operation:
    handle: Handler
    failed: str  # Closing.error when the handler fails


# Failures that mean a part of the daemon is down, whatever the operation.
UNAVAILABLE: dict[type[BaseException], str] = {JournalError: wire.JOURNAL_UNAVAILABLE}


class Dispatch:
    """The table from request type to operation; every request line gets a reply."""

    def __init__(
        self,
        operations: Mapping[type[wire.Request], Operation],
        unavailable: Mapping[type[BaseException], str] | None = None,
    ) -> None:
        self.operations = dict(operations)
        self.unavailable = {**UNAVAILABLE, **(unavailable or {})}

    async def answer(self, line: bytes, replies: Replies) -> None:
        """Answer one request line (or raise ReplyLost: the connection is gone)."""
        request = decode_request(line)
        if isinstance(request, str):
            await replies.send(closing(wire.BAD_REQUEST, request))
            return
        await self.run(request, replies)

    async def run(self, request: wire.Request, replies: Replies) -> None:
        operation = self.operations.get(type(request))
        if operation is None:
            message = f"{type(request).__name__} is not served on this socket"
            await replies.send(closing(wire.BAD_REQUEST, message))
            return
        try:
            reply = await operation.handle(request, replies)
        except ReplyLost:
            raise
        except Exception as exc:  # the store failed, say; the daemon keeps serving
            code, message = self.failure(operation, exc)
            log.warning("%s request failed: %s", type(request).__name__, message)
            await replies.send(closing(code, message))
            return
        if reply is not None:
            await replies.send(wire.encode_line(reply))

    def failure(self, operation: Operation, exc: BaseException) -> tuple[str, str]:
        """The error code and message for ``exc``, raised by ``operation``."""
        error = innermost(exc)
        code = operation.failed
        for kind, unavailable in self.unavailable.items():
            if isinstance(error, kind):
                code = unavailable
                break
        if isinstance(error, TelemetryError):
            return code, str(error)
        return code, f"{type(error).__name__}: {error}"


def decode_request(line: bytes) -> wire.ControlRequest | str:
    """The request on ``line``, or what is wrong with it (for a bad_request reply)."""
    if not line.strip():
        return 'empty request line: expected a JSON object such as {"op":"status"}'
    try:
        return wire.CONTROL_DECODER.decode(line)
    except msgspec.DecodeError as exc:
        return str(exc)
    except RecursionError:
        return "the request nests too deeply"


def innermost(exc: BaseException) -> BaseException:
    """The error inside task-group wrappers: the first leaf of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


# -- the listener ---------------------------------------------------------------------


class ControlListener:
    """Accepts control clients on ``sock`` and answers their requests with ``dispatch``.

    ``config`` is the running configuration's section (``idle-timeout``, read for
    each new connection, so a reload applies to those)."""

    def __init__(self, sock: socket.socket, config: Ingest, peers: Peers, dispatch: Dispatch):
        self.sock = sock
        self.config = config
        self.peers = peers
        self.dispatch = dispatch
        self.connections = 0  # open now, status-only ones not counted
        self.stopping = False
        self._accepting = anyio.CancelScope()
        self._idle: dict[anyio.CancelScope, None] = {}  # connections between requests
        self._status_only = 0  # connections past the limit, allowed one `status`

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept until :meth:`stop`, then return once every connection is done."""
        async with anyio.create_task_group() as connections:
            with self._accepting:
                listener = await anyio.abc.SocketListener.from_socket(self.sock)
                task_status.started()
                async with listener:
                    await self._accept(listener, connections)

    def stop(self) -> None:
        """Stop accepting; clients between requests are told, and closed. A request
        under way is answered (a tail is ended by the server's Tails.stop)."""
        self.stopping = True
        self._accepting.cancel()
        for scope in self._idle:
            scope.cancel()

    async def _accept(self, listener: anyio.abc.SocketListener, connections: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # out of file descriptors, say: keep serving the others
                log.error("cannot accept a control connection: %s", exc)
                await anyio.sleep(0.1)
                continue
            connections.start_soon(self._guard, stream)

    async def _guard(self, stream: SocketStream) -> None:
        async with stream:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            refusal = self.peers.refusal(raw)
            # Full: make room by closing the connection idle the longest; if none is
            # idle, a few more clients may still ask for `status` (never "down" while
            # the daemon is up), and the rest are told it is busy.
            full = self.connections >= MAX_CONTROL
            if refusal is None and full and not self._evict_idle():
                if self._status_only < STATUS_RESERVE:
                    await self._status_only_connection(stream)
                    return
                refusal = closing(wire.TOO_MANY_CONNECTIONS, _busy())
            if refusal is not None:
                await Conn(raw).refuse(refusal)
                return
            self.connections += 1
            try:
                await self.connection(stream)
            except ReplyLost:
                pass  # the client stopped reading, or went away: nothing more can be said
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            except Exception:
                log.exception("control connection failed; closing it")
            finally:
                self.connections -= 1

    def _evict_idle(self) -> bool:
        """Close the control connection idle the longest; False if none is idle."""
        for scope in self._idle:  # oldest first
            del self._idle[scope]
            scope.cancel()
            return True
        return False

    async def _status_only_connection(self, stream: SocketStream) -> None:
        """Past the limit: answer one `status` request, refuse anything else, close."""
        self._status_only += 1
        replies = Replies(stream)
        busy = _busy()
        try:
            line = b""
            with anyio.move_on_after(STATUS_ONLY_WAIT):
                line = await BufferedByteReceiveStream(stream).receive_until(
                    b"\n", wire.MAX_REQUEST_BYTES
                )
            request = decode_request(line)
            if isinstance(request, wire.StatusRequest):
                await self.dispatch.run(request, replies)
                busy += ": only this status request was answered"
            await replies.close_with(wire.TOO_MANY_CONNECTIONS, busy)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound):
            await replies.close_with(wire.TOO_MANY_CONNECTIONS, busy)
        except (ReplyLost, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            self._status_only -= 1

    async def connection(self, stream: SocketStream) -> None:
        """Answer requests until the client closes, idles out, is evicted or stops reading."""
        buffered = BufferedByteReceiveStream(stream)
        replies = Replies(stream)
        idle = self.config.idle_timeout
        while not self.stopping:
            line = b""
            problem: tuple[str, str] | None = None
            with anyio.CancelScope() as waiting:  # cancelled: evicted, or the daemon stops
                self._idle[waiting] = None
                try:
                    with anyio.fail_after(idle):
                        line = await buffered.receive_until(b"\n", wire.MAX_REQUEST_BYTES)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return
                except TimeoutError:
                    problem = (wire.IDLE_TIMEOUT, f"nothing received for {idle:g} s")
                except anyio.DelimiterNotFound:
                    problem = (wire.BAD_REQUEST, f"request over {wire.MAX_REQUEST_BYTES} bytes")
                finally:
                    self._idle.pop(waiting, None)
            if waiting.cancelled_caught and self.stopping:
                problem = (wire.SHUTTING_DOWN, "the daemon is shutting down")
            elif waiting.cancelled_caught:
                problem = (
                    wire.TOO_MANY_CONNECTIONS,
                    f"closed while idle: all {MAX_CONTROL} control connections were in use "
                    "and another client needed one",
                )
            if problem is not None:
                await replies.close_with(*problem)
                return
            await self.dispatch.answer(line, replies)
        await replies.close_with(wire.SHUTTING_DOWN, "the daemon is shutting down")


def _busy() -> str:
    return f"over the limit of {MAX_CONTROL} control connections, all busy"
