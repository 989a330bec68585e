"""Answering control requests: a table from request type to operation, and whole reply lines.

:class:`Dispatch` decodes a request line into the tagged union of wire.py, hands it to
its :class:`Operation` and encodes the typed reply the handler returns (once, here);
a handler that streams (query, tail) sends its own lines and returns None. A handler
that raises is answered with a Closing line whose code is its operation's own
(``gc_failed``, ...) or, when the error says a part of the daemon is down, that part's
(``store_unavailable``, ``journal_unavailable``); the connection goes on.

:class:`Replies` is the reply side of a connection: a line goes out whole or the
connection is given up.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from anyio.abc import SocketStream

from telemetryd import wire
from telemetryd.daemon.listeners.sockets import SEND_TIMEOUT, closing
from telemetryd.errors import JournalError, TelemetryError

log = logging.getLogger(__name__)

REPLY_CHUNK = 256 * 1024  # replies are handed to the socket this much at a time
MIN_REPLY_RATE = 1024 * 1024  # bytes/s a client must read a long reply line at


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
