"""The control socket: one JSON request per line, answered through a table of operations.

Limits: at most :data:`MAX_CONTROL` connections, apart from the events socket's
own, so control clients never lock out producers. When all are open, the
connection that has waited longest for its next request is closed to make room;
when none is waiting, :data:`STATUS_RESERVE` more clients may each ask one
``status`` (so `status` answers whenever the daemon is up), and the rest are told
the daemon is busy. A connection idle for ``ingest.idle-timeout`` is closed.

Each request line is answered by the :class:`~telemetryd.daemon.listeners.dispatch.Dispatch`
the listener is given (the table of operations): at least one reply line, each sent
whole or the connection is given up.
"""

from __future__ import annotations

import logging
import socket

import anyio
from anyio.abc import SocketStream, TaskGroup, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from telemetryd import wire
from telemetryd.config import Ingest
from telemetryd.daemon.listeners.dispatch import Dispatch, Replies, ReplyLost, decode_request
from telemetryd.daemon.listeners.sockets import Conn, Peers, closing

log = logging.getLogger(__name__)

MAX_CONTROL = 64  # control connections at once (an idle one is closed to make room)
STATUS_RESERVE = 8  # connections past that limit that may still ask for `status`
STATUS_ONLY_WAIT = 2.0  # seconds such a connection gets to send its request


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
