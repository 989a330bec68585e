"""The HTTP listener: OTLP/HTTP from the agents' own OpenTelemetry, and ``http`` hooks.

Routes (``POST`` only; the handlers are daemon/otlp.py's)::

    /v1/logs  /v1/metrics  /v1/traces      OTLP/HTTP export requests
    /v1/hooks/claude-code  /v1/hooks/codex  one hook payload, mapped as `telemetryctl hook`

HTTP/1.1 (and 1.0) is spoken by h11, a maintained protocol library, over anyio
streams in the daemon's event loop: keep-alive, pipelining, chunked bodies and
``Expect: 100-continue`` are h11's. This module owns what a local daemon must add:

- **who may post**: the ``Host`` header must name a loopback address or one of
  ``http.allowed-hosts`` (a page in a browser that rebinds a DNS name to 127.0.0.1
  still sends its own name); a request with an ``Origin`` header is refused (no
  browser may post here; no CORS headers are ever sent); ``Authorization: Bearer``
  must carry the token of the ``http-token`` file (``http.require-token``);
- **limits**: ``http.max-connections`` (past it the connection idle the longest is
  closed, else the new one is), a request's head within ``header-timeout``, its body
  within ``body-timeout`` and ``max-body-bytes`` (after decompression: 413), a
  keep-alive connection closed after ``idle-timeout``;
- **acknowledged means journaled**: a request is answered once its events are in the
  journal (as a half-closed events connection), 503 with ``Retry-After`` when the
  journal's queue stays full.

The work of one request (decompression, decoding, mapping) is the handlers': a big
export goes to an ingest worker process when one has room (daemon/otlp.py), else
runs here, in a worker thread past :data:`INLINE_BYTES` (:meth:`HttpListener.offload`)
so that it does not hold up the event loop; checking and journaling stay on the loop.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import anyio
import h11
from anyio.abc import SocketStream, TaskGroup, TaskStatus

from telemetryd import token as token_mod
from telemetryd.config import Http
from telemetryd.daemon.ingest import Batch, Feed, Ingestor
from telemetryd.daemon.journal import Journal
from telemetryd.errors import JournalError, TelemetryError

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024  # (an OTLP batch is often a few hundred KiB)
LINGER_SECONDS = 1.0  # a client answered before its body was read gets this long ...
LINGER_READS = 256  # ... and this many reads to stop sending
MAX_BUFFERED = 64 * 1024 * 1024  # request bodies held by all connections together
MAX_HEAD_BYTES = 64 * 1024  # a request line and headers, at most
INLINE_BYTES = 64 * 1024  # bodies up to this size are handled on the event loop
JOURNAL_WAIT = 2.0  # seconds a request waits for room in the journal's queue, then 503
RETRY_AFTER = "1"  # seconds, on 503
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class Reply:
    """An answer: status, content type and body (empty for none)."""

    __slots__ = ("body", "close", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []
        self.close = close


def plain(status: int, message: str, **kwargs: Any) -> Reply:
    return Reply(status, (message + "\n").encode(), **kwargs)


class Request:
    """One request as the handlers see it: method, path, headers (lowercase names), body,
    and whether it came from this machine (a loopback address)."""

    __slots__ = ("body", "headers", "local", "method", "path")

    def __init__(
        self, method: str, path: str, headers: dict[str, str], body: bytes, local: bool
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.local = local


Handler = Callable[[Request], Awaitable[Reply]]


async def _linger(stream: SocketStream) -> None:
    """Close without a reset: closing a socket with unread input makes the kernel reset
    the connection, and a client still sending would never read the answer. So stop
    sending, and drop what the client sends for a moment (up to a bound)."""
    gone = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
    with contextlib.suppress(*gone):
        await stream.send_eof()
        with anyio.move_on_after(LINGER_SECONDS):
            for _ in range(LINGER_READS):
                await stream.receive(READ_SIZE)


def _loopback(stream: SocketStream) -> bool:
    address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    try:
        return ipaddress.ip_address(address[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return False


def _head_size(head: h11.Request) -> int:
    """The bytes of a request head as sent: its request line and header lines."""
    line = len(head.method) + len(head.target) + len(b"  HTTP/1.1\r\n\r\n")
    return line + sum(len(name) + len(value) + len(b": \r\n") for name, value in head.headers)


class _Client:
    """One connection: its cancel scope (eviction, shutdown) and whether a request is
    under way."""

    __slots__ = ("busy", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.busy = False


class HttpListener:
    """Accepts HTTP clients on ``sock`` (a listening TCP socket) and answers them.

    ``config`` is the running configuration's ``[http]`` section (timeouts and limits
    read at each use, so a reload applies); ``token`` the bearer token (None: no
    token required), read from ``token_file``, which is read again when a request's
    token is not it and the file has changed (a token made anew, no restart needed)."""

    def __init__(
        self,
        sock: socket.socket,
        config: Http,
        ingestor: Ingestor,
        journal: Journal,
        token: str | None,
        token_file: str | None = None,
    ) -> None:
        self.sock = sock
        self.config = config
        self.ingestor = ingestor
        self.journal = journal
        self._token = token.encode() if token is not None else None
        self._token_file = token_file if token is not None else None
        self._token_seen = _file_key(token_file) if self._token_file else None
        self.connections = 0
        self.requests = 0
        self.buffered = 0  # bytes of request bodies held now
        self.stopping = False
        self._accepting = anyio.CancelScope()
        self._clients: dict[_Client, None] = {}  # oldest first
        self._threads = anyio.CapacityLimiter(2)
        # path -> handler; filled by the owner (daemon/otlp.py's Receiver.routes)
        self.routes: dict[str, Handler] = {}

    # -- accepting --------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept until :meth:`stop`, then return once every connection is done."""
        async with anyio.create_task_group() as connections:
            with self._accepting:
                listener = await anyio.abc.SocketListener.from_socket(self.sock)
                task_status.started()
                async with listener:
                    await self._accept(listener, connections)

    def stop(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their answer."""
        self.stopping = True
        self._accepting.cancel()
        for client in list(self._clients):
            if not client.busy:
                client.scope.cancel()

    async def _accept(self, listener: anyio.abc.SocketListener, connections: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # out of file descriptors, say: keep serving the others
                log.error("cannot accept an HTTP connection: %s", exc)
                await anyio.sleep(0.1)
                continue
            if self.connections >= self.config.max_connections and not self._evict_idle():
                log.warning(
                    "HTTP: all %d connections busy; closed a new one",
                    self.config.max_connections,
                )
                await stream.aclose()
                continue
            connections.start_soon(self._guard, stream)

    def _evict_idle(self) -> bool:
        """Close the connection that has waited the longest without a request."""
        for client in self._clients:  # oldest first
            if not client.busy:
                del self._clients[client]
                client.scope.cancel()
                return True
        return False

    async def _guard(self, stream: SocketStream) -> None:
        client = _Client()
        self._clients[client] = None
        self.connections += 1
        try:
            async with stream:
                with client.scope:
                    await self._connection(stream, client)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        except Exception:
            log.exception("HTTP connection failed; closing it")
        finally:
            self.connections -= 1
            self._clients.pop(client, None)

    # -- one connection ---------------------------------------------------------------

    async def _connection(self, stream: SocketStream, client: _Client) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        first = True
        while not self.stopping:
            # Waiting for a request: evictable. The first one's head must come within
            # header-timeout; later ones may idle for idle-timeout first.
            client.busy = False
            wait = self.config.header_timeout if first else self.config.idle_timeout
            event = await self._next(stream, conn, wait)
            if event is None:
                return
            client.busy = True
            self._clients.pop(client, None)  # (back at the end of the line when idle)
            self._clients[client] = None
            head_only = False
            if isinstance(event, h11.Request):
                reply = await self._answer(stream, conn, event)
                head_only = event.method == b"HEAD"
            else:  # a broken request (h11 said why), or a timeout in its head
                reply = event
            await self._send(stream, conn, reply, head_only)
            if conn.their_state not in (h11.DONE, h11.IDLE, h11.CLOSED):
                await _linger(stream)  # what it still sends is dropped, not reset
                return
            if reply.close or conn.our_state is not h11.DONE:
                return
            conn.start_next_cycle()
            first = False

    async def _next(
        self, stream: SocketStream, conn: h11.Connection, wait: float
    ) -> h11.Request | Reply | None:
        """The next request head; a Reply to send (and close) when it is broken or late;
        None when the client closed, or sent nothing for ``wait`` seconds. Once a head
        has begun, the rest of it must come within header-timeout."""
        deadline = anyio.current_time() + wait
        started = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return plain(exc.error_status_hint, f"bad request: {exc}", close=True)
            if isinstance(event, h11.Request):
                # (h11 bounds a head that comes in several reads; one read can hold more)
                if _head_size(event) > MAX_HEAD_BYTES:
                    message = f"the request head is over the limit of {MAX_HEAD_BYTES} bytes"
                    return plain(431, message, close=True)
                return event
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            with anyio.move_on_after(deadline - anyio.current_time()):
                data = await self._receive(stream)
                if data and not started:
                    # The head has begun: from now on it must arrive within header-timeout.
                    started = True
                    deadline = anyio.current_time() + self.config.header_timeout
                conn.receive_data(data)
                continue
            if not started:
                return None  # nothing sent for too long: just close
            return plain(408, "request head not received in time", close=True)

    @staticmethod
    async def _receive(stream: SocketStream) -> bytes:
        try:
            return await stream.receive(READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return b""

    async def _answer(self, stream: SocketStream, conn: h11.Connection, head: h11.Request) -> Reply:
        self.requests += 1
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers}
        path = head.target.decode("latin-1").split("?", 1)[0]
        refusal = self._refusal(head, headers, path)
        if refusal is not None:
            refusal.close = True  # (its body, if any, is not read)
            return refusal
        length = headers.get("content-length")
        limit = self.config.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            return plain(413, f"the body is over the limit of {limit} bytes", close=True)
        held = [0]  # bytes of body this request holds in the budget
        try:
            body = await self._body(stream, conn, limit, held)
            if isinstance(body, Reply):
                return body
            request = Request(head.method.decode(), path, headers, body, _loopback(stream))
            del body
            try:
                return await self.routes[path](request)
            except Exception:  # a bug: this request gets a 500, the daemon goes on
                log.exception("HTTP %s failed", path)
                return plain(500, "internal error; the daemon's log says more", close=True)
        finally:
            self.buffered -= held[0]

    def _refusal(self, head: h11.Request, headers: dict[str, str], path: str) -> Reply | None:
        host = headers.get("host")
        if host is not None and not self._host_allowed(host):
            log.warning("HTTP: refused a request for Host %r", host[:200])
            return plain(403, f"Host {host[:200]!r} is not allowed (http.allowed-hosts)")
        if "origin" in headers:
            return plain(403, "requests from web pages (with an Origin header) are not allowed")
        handler = self.routes.get(path)
        if handler is None:
            return plain(404, f"no such endpoint: {path[:200]}")
        if head.method != b"POST":
            return plain(405, "only POST is allowed here", headers=[("Allow", "POST")])
        if self._token is not None:
            given = headers.get("authorization", "")
            scheme, _, credentials = given.partition(" ")
            # (the scheme's case does not matter: RFC 9110, section 11.1)
            if scheme.lower() != "bearer" or not self._token_is(
                credentials.strip(" ").encode("latin-1")
            ):
                what = "a wrong" if given else "no"
                return plain(
                    401,
                    f"{what} bearer token: send `Authorization: Bearer <token>` with the token "
                    "of the http-token file (`telemetryctl otel env` prints it)",
                    headers=[("WWW-Authenticate", 'Bearer realm="telemetryd"')],
                )
        return None

    def _token_is(self, given: bytes) -> bool:
        """Whether ``given`` is the token. The token file is looked at first (one
        ``stat`` per request) and read again when it changed, so that a rotated token
        revokes the old one at once: a file gone, empty or unreadable takes the token
        away (every request is refused until there is one again)."""
        self._reread_token()
        return bool(self._token) and hmac.compare_digest(given, self._token or b"")

    def _reread_token(self) -> None:
        if self._token_file is None:
            return
        key = _file_key(self._token_file)
        if key == self._token_seen:
            return
        self._token_seen = key
        try:
            new = token_mod.read(self._token_file) if key is not None else None
        except TelemetryError as exc:
            new = None
            why = f"cannot be read ({exc})"
        else:
            why = "is gone"
        if new is None:
            if self._token:
                log.warning(
                    "HTTP: the token file %s %s: every request is refused until it holds "
                    "a token again (`telemetryctl otel env` makes one)",
                    self._token_file,
                    why,
                )
            self._token = b""
        elif new.encode() != self._token:
            self._token = new.encode()
            log.info("HTTP: %s holds a new token; requests need it from now on", self._token_file)

    def _host_allowed(self, host: str) -> bool:
        name = host.strip().lower()
        if name.startswith("["):  # [::1]:4318
            name = name[1 : name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        if name in LOOPBACK_HOSTS:
            return True
        return any(name == allowed.lower() for allowed in self.config.allowed_hosts)

    async def _body(
        self, stream: SocketStream, conn: h11.Connection, limit: int, held: list[int]
    ) -> bytes | Reply:
        """The whole body (at most ``limit`` bytes, within body-timeout), or the Reply.
        What it holds is counted in ``held[0]`` and :attr:`buffered` (the caller gives
        it back): all connections together hold at most ``MAX_BUFFERED`` (or one body
        of the limit), past that a request is answered 503."""
        parts: list[bytes] = []
        size = 0
        budget = max(MAX_BUFFERED, limit)
        with anyio.move_on_after(self.config.body_timeout):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    return plain(exc.error_status_hint, f"bad request body: {exc}", close=True)
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > limit:
                        message = f"the body is over the limit of {limit} bytes"
                        return plain(413, message, close=True)
                    held[0] += len(event.data)
                    self.buffered += len(event.data)
                    if self.buffered > budget:
                        message = "too many request bodies are being received at once"
                        return plain(503, message, close=True)
                    parts.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    return b"".join(parts)
                elif event is h11.NEED_DATA:
                    if conn.they_are_waiting_for_100_continue:
                        await stream.send(
                            conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                        )
                    data = await self._receive(stream)
                    if not data:
                        return plain(400, "the client closed before the body ended", close=True)
                    conn.receive_data(data)
                else:  # ConnectionClosed
                    return plain(400, "the client closed before the body ended", close=True)
        return plain(408, "request body not received in time", close=True)

    async def _send(
        self, stream: SocketStream, conn: h11.Connection, reply: Reply, head_only: bool = False
    ) -> None:
        """Send ``reply`` (``head_only``: its head alone, the answer to a HEAD request)."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            *reply.headers,
        ]
        if reply.status == 503:
            headers.append(("Retry-After", RETRY_AFTER))
        if reply.close or self.stopping:
            headers.append(("Connection", "close"))
        try:
            response = h11.Response(
                status_code=reply.status, headers=headers, reason=_REASONS.get(reply.status, b"")
            )
            data = conn.send(response)
            if reply.body and not head_only:
                data += conn.send(h11.Data(data=reply.body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:  # no request head was read: nothing can be framed
            return
        with anyio.move_on_after(self.config.body_timeout):
            await stream.send(data)

    # -- what the handlers share ------------------------------------------------------

    async def offload(self, work: Callable[[], Any], size: int) -> Any:
        """Run ``work`` here for a small body, in a worker thread for a big one."""
        if size <= INLINE_BYTES:
            return work()
        return await anyio.to_thread.run_sync(work, limiter=self._threads)

    async def journal_events(
        self, feed: Feed, batch: Batch | None, replies: list[bytes]
    ) -> list[bytes] | Reply:
        """Journal what ``feed`` took (``batch``, from its feed() or applied()): its
        rejection ``replies`` once everything it accepted is durable, or a Reply (503)."""
        try:
            if batch is not None:
                with anyio.move_on_after(JOURNAL_WAIT) as waiting:
                    await self.journal.submit(batch)
                if waiting.cancelled_caught:
                    return plain(503, "the journal is busy; retry shortly")
            if feed.last is not None:
                await self.journal.wait(feed.last)
            for pending in feed.waiting.values():
                await self.journal.wait(pending)
        except JournalError as exc:
            return plain(503, f"the journal cannot take events now: {exc}")
        return replies


def _file_key(path: str | None) -> tuple[int, int, int] | None:
    """What tells a file's versions apart (inode, change time, size); None: none there."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
