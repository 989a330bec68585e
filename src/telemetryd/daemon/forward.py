"""Forwarding the journal to an OTLP/HTTP endpoint: an OpenTelemetry Collector, or
another telemetryd (``[forward]``; docs/forward.md).

The forwarder reads the journal's segments (daemon/segments.py, the on-disk contract)
from a persisted position, turns each batch of lines into OTLP/JSON export requests
(adapters/otel/forwarded.py), posts them, and moves the position on once the endpoint
has answered for the whole batch: **at least once**. Up to :data:`IN_FLIGHT` batches
are posted at a time, each on its own keep-alive connection (a receiving telemetryd
checks them on its cores side by side); they may be answered in any order, and the
position moves past a batch only when it and every batch before it have been answered,
so a restart resends from the first batch still unanswered. A receiving telemetryd keeps each
event once however often it comes (the event, its id included, is the record's body);
a Collector's back end can deduplicate on the ``telemetryd.event.id`` attribute.

On disk, in ``forward/`` under the state directory::

    position.json    {"v":1,"endpoint":...,"seq":7,"segment":"20261121T233532Z-000007.jsonl",
                      "offset":123456,"saved":"2026-11-21T23:40:00.000Z","absent":[[9,11]]}
    refused.jsonl    one line per event the endpoint refused for good (below)

``position.json`` is where forwarding goes on: the segment's sequence number (its name
for people) and the bytes of its uncompressed content already forwarded. It is written
whole to a temporary file, fsynced and renamed over the old one (then the directory is
fsynced): a crash leaves the old position or the new one, never a torn one. It is saved
at most once a second while sending (also while the oldest batch in flight is retried),
when the forwarder catches up, and at shutdown, so a crash resends at most the batches
answered in the last second and those in flight: the oldest batch not yet answered and
the ones posted after it, answered or not (the position cannot pass it). A position
saved for another ``endpoint`` is not used: a new endpoint gets the whole journal.
Offsets count uncompressed bytes, so a segment compressed by retention meanwhile is read
on from the same place. ``absent`` lists the segments (first and last of each run)
missing from the journal when forwarding to the endpoint began, ahead of the position:
retention had deleted them before (for age, say), so they were never owed to it and are
not reported as skipped.

What the endpoint answers decides what happens to a batch:

- 2xx: done (records a ``partial_success`` says it rejected are counted in ``status``
  and logged with the batch's place in the journal; the receiver kept the rest);
- no answer, 408, 429, 5xx: retried, waiting 1 s doubling up to ``max-retry-interval``
  (or the ``Retry-After`` it asks for, up to that), for as long as it takes (each batch
  in flight by its own failures in a row);
- 401, 403, 404, 405, 407, 415, a redirect: the endpoint refuses *us* (a wrong token,
  path or address): retried the same way and reported, never skipped, because every
  batch would be refused alike;
- 400, 413 and other 4xx: the endpoint refuses *this content*: the batch is split in
  halves, each sent again, down to single events; an event refused on its own is copied
  to ``refused.jsonl`` (``{"at", "status", "error", "segment", "offset", "event"}``,
  the event as journaled) and skipped, so that one bad event does not stop the rest.
  When ``refused.jsonl`` would grow past ``max-refused-bytes`` forwarding stops there
  instead (retried slowly, ``state: stopped``): a receiver that refuses everything is
  a problem to fix, not a reason to skip the journal.

The forwarder never makes ingest wait: it reads files the writer has finished with (up
to :attr:`Journal.written_to`, what the writer has written), in a worker thread, with
its own one-thread limiter; it holds at most IN_FLIGHT batches in memory. The journal
is its backlog:
``status`` shows how far behind it is, in events and bytes (counted at start in a
worker thread, then kept up to date from the writer's groups). Retention deletes
segments by its own rules; one deleted before it was forwarded is skipped, logged and
listed in ``status`` (``skipped``). A segment whose every line was read is not (its
last batch is still sent, retried as long as it takes; the writer's groups tell where
the segment ended), nor a gap the journal had when forwarding began (``absent``).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import logging
import os
import random
import select
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import anyio
import msgspec

from telemetryd import __version__, paths, wire
from telemetryd.adapters.otel import forwarded
from telemetryd.config import Forward as ForwardConfig
from telemetryd.config import check_endpoint
from telemetryd.daemon import segments

if TYPE_CHECKING:
    import http.client

    from telemetryd.daemon.journal import Journal

log = logging.getLogger(__name__)

POSITION_VERSION = 1
SAVE_EVERY = 1.0  # seconds between two saves of the position while sending
FIRST_RETRY = 1.0  # seconds; doubling up to [forward] max-retry-interval
MAX_ANSWER_BYTES = 1024 * 1024  # of a response body read
GZIP_LEVEL = 1  # most of the size gone for a fraction of level 6's time
_CONNECT_SLICE = 0.2  # seconds a connect is waited for before abort() is looked at again
_CONNECTING = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY)
IN_FLIGHT = 3  # batches posted at a time (each on its own connection)
_COUNT_BLOCK = 4 * 1024 * 1024
# The endpoint refuses the sender, not the content: every batch would get the same.
_REFUSES_US = frozenset({401, 403, 404, 405, 407, 415})
_TRANSIENT = frozenset({408, 429})
_PATHS = {"logs": "/v1/logs", "traces": "/v1/traces", "metrics": "/v1/metrics"}
_REJECTED_KEYS = {
    "logs": "rejectedLogRecords",
    "traces": "rejectedSpans",
    "metrics": "rejectedDataPoints",
}


def _now_iso() -> str:
    moment = datetime.now(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


class Position(msgspec.Struct, kw_only=True):
    """Where forwarding goes on (``position.json``)."""

    v: int = POSITION_VERSION
    endpoint: str
    seq: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: from the oldest segment there is
    segment: str = ""
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    saved: str = ""
    # Segments missing when forwarding began (first, last), not yet passed: never sent,
    # never owed (deleted before), so not reported as skipped.
    absent: list[tuple[int, int]] = []


def position_problem(position: Position, journal_dir: str) -> str | None:
    """Why ``position`` cannot be where forwarding goes on in the journal of
    ``journal_dir`` (None: it can): another version of the file, or a place past the
    journal's end (a later segment than any, an offset past its segment's size), from
    which nothing would ever be sent while `status` said caught up."""
    if position.v != POSITION_VERSION:
        return f"is of version {position.v}, not {POSITION_VERSION}"
    if not position.seq:
        return None
    found = dict(segments.chosen(journal_dir))
    newest = max(found, default=0)
    if position.seq > newest:
        return f"names segment {position.seq}, past the journal's newest ({newest})"
    path = found.get(position.seq)
    if path is not None and not segments.is_compressed(path):
        with contextlib.suppress(OSError):
            size = os.stat(path).st_size
            if position.offset > size:
                return f"names offset {position.offset}, past the end of {path} ({size} bytes)"
    return None


def load_position(path: str, endpoint: str) -> Position:
    """The saved position for ``endpoint``, else the start of the journal. A file that
    cannot be read is logged and moved aside (``.bad``): the journal is sent again from
    its start (a receiving telemetryd keeps each event once)."""
    try:
        with open(path, "rb") as f:
            found = msgspec.json.decode(f.read(), type=Position)
    except FileNotFoundError:
        return Position(endpoint=endpoint)
    except (OSError, msgspec.DecodeError) as exc:
        log.error("forward: %s cannot be read (%s); forwarding from the journal's start", path, exc)
        with contextlib.suppress(OSError):
            os.replace(path, path + ".bad")
        return Position(endpoint=endpoint)
    if not same_endpoint(found.endpoint, endpoint):
        log.warning(
            "forward: the saved position is for %s; forwarding the journal to %s from its start",
            found.endpoint,
            endpoint,
        )
        return Position(endpoint=endpoint)
    return found


def same_endpoint(saved: str, endpoint: str) -> bool:
    """Whether two spellings name the same endpoint (the host's case, a default port or a
    trailing slash aside): its saved position goes on serving it."""
    if saved == endpoint:
        return True
    try:
        return check_endpoint(saved) == check_endpoint(endpoint)
    except ValueError:
        return False


def save_position(path: str, position: Position) -> None:
    """Write ``position`` atomically (a temporary file, fsync, rename, fsync the dir)."""
    position.saved = _now_iso()
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".position.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, msgspec.json.encode(position) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Chunk(msgspec.Struct, kw_only=True):
    """A batch read from one segment: its lines, where they are, and the position after
    them; segments found deleted on the way."""

    data: bytes
    seq: int
    segment: str
    offset: int
    lines: int
    after: tuple[int, str, int]  # the position after it: (seq, segment, offset)
    skipped: list[str] = []
    absent: list[tuple[int, int]] = []  # read from the oldest segment: the journal's gaps
    bodies: dict[str, bytes] = {}  # the export requests, compressed as they are sent
    events: int = 0  # ... and the events in them
    # Parts of it (signal, offset, bytes) that a split found taken or refused for good:
    # a retry of the batch (another part's transient failure) neither sends nor refuses
    # them again.
    settled: set[tuple[str, int, int]] = msgspec.field(default_factory=set)


class Reader:
    """Reads batches of complete lines from the journal (in a worker thread)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        # an open .gz segment: (path, content, offset of `carry`, bytes read past the
        # last line handed out)
        self._gz: tuple[str, segments.Content, int, bytes] | None = None

    def close(self) -> None:
        if self._gz is not None:
            self._gz[1].close()
            self._gz = None

    def read(
        self,
        seq: int,
        offset: int,
        written: tuple[str, int],
        max_bytes: int,
        max_lines: int,
        end: int | None = None,
        absent: Sequence[tuple[int, int]] = (),
    ) -> Chunk | None:
        """The next batch after ``(seq, offset)``, from one segment: at most
        ``max_bytes`` (a longer line alone) and ``max_lines`` lines, never past
        ``written`` (the writer's segment and the size it has written). None: nothing
        to read yet. A closed segment read to its end gives an empty batch that moves
        the position to the next one.

        Segments found deleted on the way are listed in the batch's ``skipped``, but
        not segment ``seq`` when ``end`` (its size, when known) says that ``offset`` is
        its end, nor those ``absent`` holds. From seq 0 (the oldest segment there is),
        the batch's ``absent`` lists the journal's gaps."""
        active_path, active_size = written
        active = segments.segment_seq(os.path.basename(active_path)) if active_path else None
        if active is None:
            return None
        found = [(n, path) for n, path in segments.chosen(self.directory) if n <= active]
        gaps = [] if seq else _gaps([number for number, _ in found])
        skipped: list[str] = []
        for found_seq, path in found:
            if found_seq < seq:
                continue
            name = os.path.basename(path).removesuffix(".gz")
            if found_seq > seq:
                if seq:  # (0: from the oldest segment, whichever it is)
                    # (every line of segment `seq` read: gone, it owes nothing)
                    first = seq + 1 if end is not None and offset >= end else seq
                    skipped.extend(_gone(first, found_seq, absent))
                seq, offset = found_seq, 0
            if found_seq < active:  # closed: all of it is there
                data, ended = self._read_closed(path, offset, max_bytes, max_lines)
            else:
                data, ended = self._read_plain(path, offset, active_size, max_bytes, max_lines)
                ended = False  # (the writer's segment goes on)
            after = (seq + 1, "", 0) if ended else (seq, name, offset + len(data))
            if data or ended or skipped:
                return Chunk(
                    data=data,
                    seq=seq,
                    segment=name,
                    offset=offset,
                    lines=data.count(b"\n"),
                    after=after,
                    skipped=skipped,
                    absent=gaps,
                )
            return None
        return None

    def _read_plain(
        self, path: str, offset: int, end: int, max_bytes: int, max_lines: int
    ) -> tuple[bytes, bool]:
        """Complete lines of the plain segment ``path`` in [offset, end), and whether
        they reach ``end``."""
        if offset >= end:
            return b"", True
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return b"", False  # (compressed meanwhile: the .gz is read next time)
        try:
            data = os.pread(fd, min(end - offset, max_bytes), offset)
            cut = data.rfind(b"\n") + 1
            if not cut and len(data) < end - offset:  # a line longer than a batch: alone
                stop = segments.next_line_end(path, offset, end)
                data = os.pread(fd, stop - offset, offset)
                cut = len(data) if data.endswith(b"\n") else 0
        finally:
            os.close(fd)
        data = _first_lines(data[:cut], max_lines)
        return data, offset + len(data) >= end

    def _read_closed(
        self, path: str, offset: int, max_bytes: int, max_lines: int
    ) -> tuple[bytes, bool]:
        """Complete lines of the closed segment ``path`` from ``offset``, and whether
        they reach its end (a damaged .gz ends where it can no longer be read)."""
        if not segments.is_compressed(path):
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                return b"", False
            return self._read_plain(path, offset, size, max_bytes, max_lines)
        cached = self._gz
        if cached is None or cached[0] != path or cached[2] != offset:
            self.close()
            content = segments.open_content(path)
            pos = 0
            try:
                while pos < offset:
                    skip = content.read(min(_COUNT_BLOCK, offset - pos))
                    if not skip:
                        break
                    pos += len(skip)
            except segments.DAMAGE_ERRORS as exc:
                content.close()
                log.error("forward: %s is damaged before offset %d: %s", path, offset, exc)
                return b"", True
            cached = (path, content, offset, b"")
        _, content, _, data = cached
        at_end = False
        try:
            while b"\n" not in data or len(data) < max_bytes:
                more = content.read(max_bytes)
                if not more:
                    at_end = True
                    break
                data += more
        except segments.DAMAGE_ERRORS as exc:
            log.error("forward: %s is damaged past offset %d: %s", path, offset, exc)
            at_end = True
        cut = data.rfind(b"\n", 0, max_bytes) + 1 or data.find(b"\n") + 1
        lines = _first_lines(data[:cut], max_lines)
        rest = data[len(lines) :]
        if at_end and not rest:
            content.close()
            self._gz = None
            return lines, True
        if at_end and not lines:  # (bytes after the last newline: not an event)
            content.close()
            self._gz = None
            return b"", True
        self._gz = (path, content, offset + len(lines), rest)
        return lines, False


def _gone(first: int, stop: int, absent: Sequence[tuple[int, int]]) -> list[str]:
    """Segments ``first`` to ``stop - 1`` by runs, for people, but those in ``absent``
    (runs as (first, last))."""
    names = []
    for low, high in [*sorted(absent), (stop, stop)]:
        if high < first:
            continue
        if first < min(low, stop):
            last = min(low, stop) - 1
            names.append(f"segment {first}" if last == first else f"segments {first} to {last}")
        first = max(first, high + 1)
        if first >= stop:
            break
    return names


def _gaps(numbers: list[int]) -> list[tuple[int, int]]:
    """The runs (first, last) missing between the sorted segment ``numbers``."""
    return [(low + 1, high - 1) for low, high in itertools.pairwise(numbers) if high - low > 1]


def _first_lines(data: bytes, count: int) -> bytes:
    """The first ``count`` lines of ``data``."""
    if data.count(b"\n") <= count:
        return data
    at = -1
    for _ in range(count):
        at = data.index(b"\n", at + 1)
    return data[: at + 1]


def _trim() -> None:
    """Give the memory freed by a burst of batches back to the system: glibc keeps
    freed heap (and each thread's arena) otherwise, and the daemon must stay small."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def count_backlog(
    directory: str, seq: int, offset: int, written: tuple[str, int]
) -> tuple[int, int]:
    """(events, bytes) journaled after ``(seq, offset)`` up to ``written``."""
    active_path, active_size = written
    active = segments.segment_seq(os.path.basename(active_path)) if active_path else None
    if active is None:
        return 0, 0
    events = size = 0
    for found_seq, path in segments.chosen(directory):
        if found_seq < seq or found_seq > active:
            continue
        start = offset if found_seq == seq else 0
        limit = active_size if found_seq == active else None
        try:
            with segments.open_content(path) as content:
                pos = 0
                while limit is None or pos < limit:
                    want = _COUNT_BLOCK if limit is None else min(_COUNT_BLOCK, limit - pos)
                    block = content.read(want)
                    if not block:
                        break
                    if pos + len(block) > start:
                        part = block[max(0, start - pos) :]
                        events += part.count(b"\n")
                        size += len(part)
                    pos += len(block)
        except segments.READ_ERRORS as exc:
            log.warning("forward: counting the backlog in %s: %s", path, exc)
    return events, size


class Answer(msgspec.Struct):
    status: int  # 0: no answer (the message says why)
    message: str
    retry_after: float | None = None
    rejected: int = 0  # records a partial_success rejected


class Sender:
    """Posts export requests on one keep-alive connection (http.client, in a worker
    thread: the standard library's client, imported only when forwarding is on)."""

    def __init__(self, config: ForwardConfig) -> None:
        scheme, host, port, path = check_endpoint(config.endpoint)
        self.scheme, self.host, self.port, self.base = scheme, host, port, path
        self.timeout = config.timeout
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"telemetryd/{__version__}",
            **config.headers,
        }
        if config.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self.gzip = config.compression == "gzip"
        self._conn: http.client.HTTPConnection | None = None
        self._expired = False  # the request under way ran out of time (_expire() ended it)
        self._aborted = False  # abort() was called: this sender posts nothing more
        # The socket of the request under way (the connection lets go of it when the
        # answer says it closes the connection; the answer still reads from it).
        self._sock: socket.socket | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._sock = None

    def abort(self) -> None:
        """End the request under way now, from another thread, and any later one: its
        socket is shut down, so the thread reading or writing it returns (an endpoint that
        answers a byte at a time, or a shutdown that abandons the request, waits for
        nothing), and it does not try again on a new connection."""
        self._aborted = True  # (set before the socket is looked at: post() looks after)
        self._shut_down()

    def _expire(self) -> None:
        self._expired = True
        self._shut_down()

    def _shut_down(self) -> None:
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _connect(self) -> socket.socket:
        """A connection to the endpoint (TLS for https), set up so that :meth:`abort` and
        the request's deadline end the wait: a host that drops packets, or never answers
        a handshake, held a stop for the whole ``timeout`` (a socket being connected
        cannot be shut down; it is waited for a slice at a time instead)."""
        deadline = time.monotonic() + self.timeout
        error: OSError = OSError(f"{self.host}: no address to connect to")
        for family, kind, proto, _, address in socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        ):
            sock = opened = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                code = sock.connect_ex(address)
                waiting = select.poll()  # (not select(): the daemon may hold 1,024 fds)
                waiting.register(sock, select.POLLOUT)
                while code in _CONNECTING:
                    if self._aborted or self._expired:
                        raise OSError("abandoned: forwarding is stopping")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("timed out")
                    if waiting.poll(min(_CONNECT_SLICE, left) * 1000):
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
                sock.settimeout(self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.scheme != "https":
                    return sock
                import ssl

                tls = opened = ssl.create_default_context().wrap_socket(
                    sock, server_hostname=self.host, do_handshake_on_connect=False
                )
                self._sock = tls  # (abort() shuts it down: the handshake ends)
                if self._aborted:
                    raise OSError("abandoned: forwarding is stopping")
                tls.do_handshake()
                return tls
            except OSError as exc:
                opened.close()
                error = exc
                if self._aborted or self._expired or isinstance(exc, TimeoutError):
                    break
        raise error

    def _connection(self) -> http.client.HTTPConnection:
        import http.client

        if self._conn is None:
            if self.scheme == "https":
                import ssl

                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def pack(self, body: bytes) -> bytes:
        """``body`` as it is sent (gzipped, with ``compression = "gzip"``)."""
        if not self.gzip:
            return body
        packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return packer.compress(body) + packer.flush()

    def post(self, signal: str, body: bytes) -> Answer:
        """Post one export request (``body`` from :meth:`pack`)."""
        import http.client

        for attempt in (1, 2):  # a kept-alive connection the server closed: once more
            if self._aborted:  # (a shut-down socket reads as a closed connection: no retry)
                self.close()
                return Answer(0, f"{self._where()}: abandoned: forwarding is stopping")
            conn = self._connection()
            # ``timeout`` bounds each read and write; this, the whole request
            self._expired = False
            deadline = threading.Timer(self.timeout, self._expire)
            deadline.daemon = True
            deadline.start()
            try:
                if conn.sock is None:
                    conn.sock = self._connect()
                self._sock = conn.sock
                if self._aborted:  # (abort() came before the socket was there to shut down)
                    self._shut_down()
                conn.request("POST", self.base + _PATHS[signal], body, self.headers)
                response = conn.getresponse()
                data = response.read(MAX_ANSWER_BYTES)
                if response.will_close or not response.isclosed():
                    self.close()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if self._expired:
                    return Answer(0, f"{self._where()}: no answer within {self.timeout:g} s")
                if attempt == 1 and isinstance(
                    exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                ):
                    continue
                return Answer(0, f"{self._where()}: {_describe(exc)}")
            finally:
                deadline.cancel()
            if self._expired:  # (an answer whose end was cut off by the timeout: none)
                self.close()
                return Answer(0, f"{self._where()}: no answer within {self.timeout:g} s")
            return self._answer(signal, response, data)
        raise AssertionError("unreachable")

    def _where(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def _answer(self, signal: str, response: http.client.HTTPResponse, data: bytes) -> Answer:
        status = response.status
        retry_after = _seconds(response.getheader("Retry-After"))
        text = _text(data)
        if 200 <= status < 300:
            rejected, message = _partial(signal, data)
            return Answer(status, message, rejected=rejected)
        if 300 <= status < 400:
            location = response.getheader("Location") or "?"
            text = f"redirected to {location[:200]} (set `endpoint` to where it points)"
        return Answer(status, f"{status} {response.reason}: {text}".rstrip(": "), retry_after)


def _plain_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as compared: without an IPv6 zone, an IPv4-mapped IPv6 one as IPv4."""
    address = ipaddress.ip_address(text.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_mine(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is one of this machine's (a socket can be bound to it)."""
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "no answer within the timeout"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _clean(f"{type(exc).__name__}: {exc}")  # (BadStatusLine quotes what was sent)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None  # (an HTTP date: the usual backoff)


def _text(data: bytes) -> str:
    """A short message from an error answer: google.rpc.Status's ``message`` in JSON,
    else the text itself."""
    try:
        found = msgspec.json.decode(data)
    except msgspec.DecodeError:
        found = None
    if isinstance(found, dict) and isinstance(found.get("message"), str):
        text = found["message"]
    else:
        text = data.decode("utf-8", "replace")
    return _clean(text)


def _clean(text: str, limit: int = 500) -> str:
    """``text`` from an endpoint as one line for `status` and the log: whitespace runs as
    one space, other control characters (a terminal's escape sequences) as U+FFFD."""
    text = " ".join(text.split())[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def _partial(signal: str, data: bytes) -> tuple[int, str]:
    """The records a success rejected (``partialSuccess``), and its message."""
    if not data or data == b"{}":
        return 0, ""
    try:
        found = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return 0, ""  # (not JSON: a protobuf answer, or nothing we read)
    partial = found.get("partialSuccess") if isinstance(found, dict) else None
    if not isinstance(partial, dict):
        return 0, ""
    try:
        rejected = int(partial.get(_REJECTED_KEYS[signal]) or 0)
    except (TypeError, ValueError):
        rejected = 0
    message = partial.get("errorMessage")
    return rejected, message if isinstance(message, str) else ""


class _Stop(Exception):
    """Refused events would pass max-refused-bytes: forwarding stops at this batch."""


class Forwarder:
    """The forwarding task of one daemon (:meth:`run`), and its :meth:`status`."""

    def __init__(self, state_dir: str, config: ForwardConfig, journal: Journal) -> None:
        self.config = config
        self.journal = journal
        self.directory = os.path.join(state_dir, paths.FORWARD_DIR)
        self.position_file = os.path.join(self.directory, "position.json")
        self.refused_file = os.path.join(self.directory, "refused.jsonl")
        self.position = Position(endpoint=config.endpoint)
        self.reader = Reader(journal.directory)
        self.sender = Sender(config)  # (packs bodies; posts with the others below)
        self._senders = [self.sender, *(Sender(config) for _ in range(IN_FLIGHT - 1))]
        self._free = list(self._senders)  # the connections no batch is using
        self._lock = threading.Lock()  # counters and refused.jsonl, shared by the senders
        self.types = frozenset(config.types)
        self.resource = forwarded.resource(config.resource, socket.gethostname(), __version__)
        self._limiter = anyio.CapacityLimiter(1)  # the reader's thread (and saves)
        self._sending = anyio.CapacityLimiter(IN_FLIGHT)  # the senders'
        self._wake = anyio.Event()
        self._saved_at = 0.0
        self._dirty = False
        # the backlog: counted once (None until then), then kept up to date
        self._counted: tuple[int, int] | None = None
        self._written = [0, 0]  # events, bytes journaled since the count's snapshot
        self._done = [0, 0]  # ... and forwarded (or passed over) since its start
        self._recount = anyio.Event()
        # The size each segment was last written to (this run, from the position's on):
        # one retention deletes is then known to have held nothing more than was read.
        self._ends: dict[int, int] = {}
        self._writing = ("", 0)  # the writer's segment: its path and number
        # The daemon's own HTTP listener (host, port), when it has one: an endpoint that
        # is it would send the journal back into itself (set before run()).
        self.own_listener: tuple[str, int] | None = None
        self.state = "sending"
        self.off = False  # stopped for good at start: holds no segment from retention
        self.sent_events = 0
        self.requests = 0
        self.last_success: str | None = None
        self.last_error: str | None = None
        self.last_error_at: str | None = None
        # Per batch retrying, by its place (seq, offset): its failed attempts in a row
        # (they set its own waits: 1, 2, 4 s ...) and when it tries again. Up to IN_FLIGHT
        # batches fail side by side; `failures` is the count of the one failing longest.
        self._failing: dict[tuple[int, int], int] = {}
        self._retry_at: dict[tuple[int, int], float] = {}
        self.refused_events = 0
        self.partial_rejected = 0
        self._refused_bytes = 0
        self.skipped: list[str] = []

    # -- status -------------------------------------------------------------------

    def status(self) -> wire.ForwardStatus:
        behind_events = behind_bytes = None
        if self._counted is not None:
            behind_events = max(0, self._counted[0] + self._written[0] - self._done[0])
            behind_bytes = max(0, self._counted[1] + self._written[1] - self._done[1])
        retry_in = None
        if self._retry_at:
            retry_in = round(max(0.0, min(self._retry_at.values()) - time.monotonic()), 1)
        parts = urlsplit(self.config.endpoint)
        return wire.ForwardStatus(
            endpoint=f"{parts.scheme}://{parts.netloc}{parts.path}",
            signals=list(self.config.signals),
            state=self.state,
            segment=self.position.segment or self._segment_name(self.position.seq),
            offset=self.position.offset,
            behind_events=behind_events,
            behind_bytes=behind_bytes,
            sent_events=self.sent_events,
            requests=self.requests,
            last_success=self.last_success,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            failures=self.failures,
            retry_in_s=retry_in,
            refused_events=self.refused_events,
            partial_rejected=self.partial_rejected,
            refused_file=self.refused_file,
            skipped=list(self.skipped),
        )

    def _on_written(self, data: bytes, count: int) -> None:
        """A journal listener (on the event loop, for every group written): count, note
        where the writer is, wake."""
        self._written[0] += count
        self._written[1] += len(data)
        self._note_end()
        self._wake.set()

    def _note_end(self) -> None:
        """Note the size the writer's segment is written to (:attr:`_ends`)."""
        path, size = self.journal.written_to
        if path != self._writing[0]:
            self._writing = (path, segments.segment_seq(os.path.basename(path)) or 0)
        self._ends[self._writing[1]] = size

    # -- the task ---------------------------------------------------------------------

    async def run(self) -> None:
        """Forward until cancelled (the daemon stops); the position is saved on the way
        out. Nothing here stops the daemon: a failure is logged, shown by ``status`` and
        tried again."""
        # (asked first: forwarding that is off says nothing of a position it never uses)
        if await anyio.to_thread.run_sync(self._to_itself, limiter=self._limiter):
            self._turn_off(
                f"{self.config.endpoint} is this daemon's own HTTP listener "
                "(its journal would be sent back into itself)"
            )
            return
        try:
            await anyio.to_thread.run_sync(self._open, limiter=self._limiter)
        except OSError as exc:
            self._turn_off(f"{self.directory}: {exc.strerror or exc}")
            return
        # Listen and take the writer's place in one step (no await between): every event
        # is then either in the count or counted by the listener.
        self.journal.listeners.add(self._on_written)
        self._note_end()  # (what was written before: the listener notes what comes next)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._count_loop)
                while True:
                    try:
                        await self._forward()
                    except Exception as exc:  # a journal that cannot be read, or a bug
                        log.exception("forward: stopped by an error; trying again")
                        self._failed(f"{type(exc).__name__}: {exc}")
                        self.state = "retrying"
                        self.reader.close()
                        await anyio.sleep(self.config.max_retry_interval)
        finally:
            self.journal.listeners.discard(self._on_written)
            with anyio.CancelScope(shield=True):
                if self._dirty:
                    with anyio.move_on_after(5.0):
                        await anyio.to_thread.run_sync(self._save)
                self.reader.close()
                for sender in self._senders:
                    sender.close()

    def _to_itself(self) -> bool:
        """Whether the endpoint is :attr:`own_listener`: its port, and an address that is
        the listener's (an IPv4-mapped IPv6 one too), or any of this machine's when it
        listens on all of them."""
        if self.own_listener is None:
            return False
        own_host, own_port = self.own_listener
        _, host, port, _ = check_endpoint(self.config.endpoint)
        if port != own_port:
            return False
        try:  # (the name is looked up only for a port that is ours)
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found = {str(info[4][0]) for info in infos}
        except OSError:
            return False
        addresses = {_plain_address(a) for a in found}
        own = _plain_address(own_host)
        if own in addresses:
            return True
        return own.is_unspecified and any(_is_mine(a) for a in addresses)

    def _segment_name(self, seq: int) -> str:
        """The name of the journal's segment ``seq`` ("" when there is none): the position
        names the segment only once a line of it was read, not when it moved on to it."""
        if seq:
            with contextlib.suppress(OSError):  # (status answers all the same)
                for found, path in segments.chosen(self.journal.directory):
                    if found == seq:
                        return os.path.basename(path).removesuffix(".gz")
        return ""

    def hold_from(self) -> int:
        """The first journal segment not yet forwarded in full (retention keeps it and
        later ones from age limits); 1, which holds them all, before the first send; 0,
        which holds none, when forwarding is off for good (it stopped at start)."""
        if self.off:
            return 0
        return self.position.seq or 1

    def _turn_off(self, why: str) -> None:
        """Forwarding cannot start: it stays off until a restart (``state: off``, the
        reason in ``last_error``), and holds nothing back from retention."""
        self._failed(why)
        log.error("forward: off until a restart: %s", why)
        self.state = "off"
        self.off = True

    @property
    def failures(self) -> int:
        """Attempts failed in a row, of the batch retried longest (0: none is)."""
        return max(self._failing.values(), default=0)

    def _failed(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = _now_iso()

    def _open(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.position = load_position(self.position_file, self.config.endpoint)
        problem = position_problem(self.position, self.journal.directory)
        if problem is not None:
            log.error(
                "forward: %s %s; forwarding from the journal's start", self.position_file, problem
            )
            with contextlib.suppress(OSError):
                os.replace(self.position_file, self.position_file + ".bad")
            self.position = Position(endpoint=self.config.endpoint)
        with contextlib.suppress(FileNotFoundError):
            self._refused_bytes = os.stat(self.refused_file).st_size
        segment = self.position.segment or self._segment_name(self.position.seq)
        log.info(
            "forwarding the journal to %s (%s) from %s",
            self.config.endpoint,
            ", ".join(self.config.signals),
            f"{segment} at {self.position.offset}" if segment else "its start",
        )

    async def _count_loop(self) -> None:
        while True:
            start = (self.position.seq, self.position.offset)
            written = self.journal.written_to
            self._counted = None
            self._written = [0, 0]
            self._done = [0, 0]
            counted = await anyio.to_thread.run_sync(
                count_backlog, self.journal.directory, *start, written, abandon_on_cancel=True
            )
            self._counted = counted
            self._recount = anyio.Event()
            await self._recount.wait()

    async def _read(self, seq: int, offset: int) -> Chunk | None:
        """The batch after ``(seq, offset)``, read and encoded in the reader's thread.
        The wake-up event is renewed first: a group written after this read starts
        wakes the forwarder even if the read does not see it."""
        self._wake = anyio.Event()
        return await anyio.to_thread.run_sync(
            self._prepare,
            seq,
            offset,
            self.journal.written_to,
            self._ends.get(seq),
            self.position.absent,
            limiter=self._limiter,
        )

    def _prepare(
        self,
        seq: int,
        offset: int,
        written: tuple[str, int],
        end: int | None,
        absent: list[tuple[int, int]],
    ) -> Chunk | None:
        chunk = self.reader.read(
            seq, offset, written, self.config.batch_bytes, self.config.batch_events, end, absent
        )
        if chunk is not None and chunk.data:
            requests = forwarded.encode(
                chunk.data,
                signals=self.config.signals,
                types=self.types,
                resource_json=self.resource,
            )
            chunk.bodies = {name: self.sender.pack(body) for name, body in requests.bodies.items()}
            chunk.events = requests.events
        return chunk

    async def _forward(self) -> None:
        """Read, send, move on, with up to IN_FLIGHT batches posted at a time (a
        receiving telemetryd checks them on as many cores) while the next is read and
        encoded. Batches are answered in any order; the position moves past a batch only
        once it and every batch before it are answered."""
        window: deque[tuple[Chunk, anyio.Event]] = deque()  # read order
        was_sending = False
        async with anyio.create_task_group() as tg:
            after = (self.position.seq, self.position.offset)  # where the next read starts
            while True:
                while len(window) < IN_FLIGHT:
                    chunk = await self._read(*after)
                    if chunk is None:
                        break
                    after = (chunk.after[0], chunk.after[2])
                    if not self.position.seq:
                        # The first read, "from the oldest segment there is": where that
                        # was is kept, so that a segment deleted before it is sent is
                        # reported (``skipped``) after a restart too, as later ones are;
                        # and so are the gaps there were then, which nothing owes.
                        self.position.seq = chunk.seq
                        self.position.absent = chunk.absent
                        await anyio.to_thread.run_sync(
                            save_position, self.position_file, self.position
                        )
                    if chunk.skipped:
                        for what in chunk.skipped:
                            log.error(
                                "forward: journal %s deleted before it was forwarded "
                                "(retention); its events were not sent",
                                what,
                            )
                        self.skipped.extend(chunk.skipped)
                        self._recount.set()
                    done = anyio.Event()
                    if chunk.data:
                        self.state = "sending"
                        was_sending = True
                        tg.start_soon(self._deliver_then, chunk, done)
                    else:  # (the end of a segment: only the position moves)
                        done.set()
                    window.append((chunk, done))
                if not window:
                    if self.state != "stopped":
                        self.state = "caught up"
                    if self._dirty:
                        await anyio.to_thread.run_sync(self._save, limiter=self._limiter)
                    if was_sending:  # give back what the batches took (glibc keeps it)
                        await anyio.to_thread.run_sync(_trim, limiter=self._limiter)
                        was_sending = False
                    await self._wake.wait()
                    continue
                oldest = window[0][1]
                if self._dirty and not oldest.is_set():
                    # While the oldest batch in flight is retried (for minutes, maybe), the
                    # batches answered before it are saved within SAVE_EVERY all the same:
                    # a crash resends them otherwise.
                    with anyio.move_on_after(self._saved_at + SAVE_EVERY - time.monotonic()):
                        await oldest.wait()
                    if not oldest.is_set():
                        await anyio.to_thread.run_sync(self._save, limiter=self._limiter)
                await oldest.wait()
                while window and window[0][1].is_set():
                    self._advance(window.popleft()[0])
                if self._dirty and time.monotonic() - self._saved_at >= SAVE_EVERY:
                    await anyio.to_thread.run_sync(self._save, limiter=self._limiter)

    async def _deliver_then(self, chunk: Chunk, done: anyio.Event) -> None:
        await self._deliver(chunk)
        done.set()

    def _advance(self, chunk: Chunk) -> None:
        self._done[0] += chunk.lines
        self._done[1] += len(chunk.data)
        seq, segment, offset = chunk.after
        self.position = Position(
            endpoint=self.config.endpoint,
            seq=seq,
            segment=segment,
            offset=offset,
            absent=[(first, last) for first, last in self.position.absent if last >= seq],
        )
        for passed in [number for number in self._ends if number < seq]:
            del self._ends[passed]
        self._dirty = True

    def _save(self) -> None:
        try:
            save_position(self.position_file, self.position)
        except OSError as exc:
            log.error("forward: cannot save the position in %s: %s", self.position_file, exc)
            return
        self._dirty = False
        self._saved_at = time.monotonic()

    # -- sending a batch ------------------------------------------------------------------

    async def _deliver(self, chunk: Chunk) -> None:
        """Send ``chunk`` until the endpoint has taken (or for good refused) all of it."""
        pending = list(self.config.signals)
        sender = self._free.pop()  # (one is free: at most IN_FLIGHT batches are sent)
        place = (chunk.seq, chunk.offset)  # (no two batches in flight share it)
        done = False
        try:
            while pending:
                signal = pending[0]
                try:
                    outcome = await anyio.to_thread.run_sync(
                        self._send_signal,
                        chunk,
                        signal,
                        sender,
                        limiter=self._sending,
                        abandon_on_cancel=True,
                    )
                except _Stop as exc:
                    outcome = Answer(0, str(exc))
                    self.state = "stopped"
                if 200 <= outcome.status < 300:
                    pending.pop(0)
                    self._failing.pop(place, None)
                    self.state = "sending"
                    continue
                await self._backoff(place, outcome)
            done = True
        finally:
            self._failing.pop(place, None)
            if not done:  # cancelled: its thread may still be posting on that connection
                sender.abort()  # (which ends at once: a shutdown does not wait for it)
                self._senders.remove(sender)
                sender = Sender(self.config)
                self._senders.append(sender)
            self._free.append(sender)
        self.last_success = _now_iso()

    async def _backoff(self, place: tuple[int, int], answer: Answer) -> None:
        """Wait before the batch at ``place`` is tried again: its own failures in a row
        set the wait (batches failing side by side do not lengthen each other's)."""
        longest = self.failures
        failures = self._failing[place] = self._failing.get(place, 0) + 1
        self._failed(answer.message)
        if self.state != "stopped":
            self.state = "retrying"
        cap = self.config.max_retry_interval
        if self.state == "stopped":
            delay = cap
        elif answer.retry_after is not None:
            delay = min(cap, max(FIRST_RETRY, answer.retry_after))
        else:
            delay = min(cap, FIRST_RETRY * 2 ** min(failures - 1, 30))
            delay *= random.uniform(0.8, 1.0)
        if failures > longest and (failures == 1 or failures % 10 == 0):  # (once per count)
            log.warning(
                "forward: %s (attempt %d; retrying in %.1f s)", answer.message, failures, delay
            )
        self._retry_at[place] = time.monotonic() + delay
        try:
            await anyio.sleep(delay)
        finally:
            del self._retry_at[place]

    def _send_signal(self, chunk: Chunk, signal: str, sender: Sender) -> Answer:
        """(Worker thread.) One signal of a batch: a success, or the failure to retry the
        batch for. Content the endpoint refuses is split until the refused events are
        found, copied to ``refused.jsonl`` and passed over."""
        body = chunk.bodies.get(signal)
        if body is None:  # nothing of this signal in it (other types, say)
            return Answer(200, "")
        return self._send_part(
            sender, chunk, signal, chunk.data, chunk.offset, (body, chunk.events)
        )

    def _send_part(
        self,
        sender: Sender,
        chunk: Chunk,
        signal: str,
        data: bytes,
        offset: int,
        prepared: tuple[bytes, int] | None = None,
    ) -> Answer:
        part = (signal, offset, len(data))
        if prepared is None:
            if part in chunk.settled:  # (an earlier try of the batch settled it)
                return Answer(200, "")
            requests = forwarded.encode(
                data, signals=(signal,), types=self.types, resource_json=self.resource
            )
            found = requests.bodies.get(signal)
            if found is None:
                return Answer(200, "")
            prepared = (sender.pack(found), requests.events)
        body, events = prepared
        answer = sender.post(signal, body)
        status = answer.status
        if 200 <= status < 300:
            with self._lock:
                self.requests += 1
                if signal == "logs" or "logs" not in self.config.signals:
                    self.sent_events += events
                self.partial_rejected += answer.rejected
            if answer.rejected:
                log.warning(
                    "forward: the endpoint rejected %d of %d %s records (%s) of %s bytes "
                    "%d to %d; it kept the others",
                    answer.rejected,
                    data.count(b"\n"),
                    signal,
                    answer.message or "no reason given",
                    chunk.segment,
                    offset,
                    offset + len(data),
                )
            chunk.settled.add(part)
            return answer
        if not status or status in _TRANSIENT or status >= 500 or status < 400:
            return answer
        if status in _REFUSES_US:
            return Answer(status, f"the endpoint refuses this daemon: {answer.message}")
        # The content is refused: halve until the refused events are found.
        if data.count(b"\n") > 1:
            middle = data.index(b"\n", len(data) // 2 - 1 if len(data) > 2 else 0) + 1
            if middle >= len(data):
                middle = data.rindex(b"\n", 0, len(data) - 1) + 1
            for half, at in ((data[:middle], offset), (data[middle:], offset + middle)):
                outcome = self._send_part(sender, chunk, signal, half, at)
                if not 200 <= outcome.status < 300:
                    return outcome
            return Answer(200, "")
        with self._lock:
            self._refuse(chunk, data, offset, answer)
        chunk.settled.add(part)
        return Answer(200, "")

    def _refuse(self, chunk: Chunk, line: bytes, offset: int, answer: Answer) -> None:
        """Copy an event the endpoint refused for good to ``refused.jsonl`` (with
        ``_lock`` held: the senders' threads share the file)."""
        try:
            event = msgspec.json.decode(line)
        except msgspec.DecodeError:
            event = line.decode("utf-8", "replace").rstrip("\n")
        entry = msgspec.json.encode(
            {
                "at": _now_iso(),
                "status": answer.status,
                "error": answer.message,
                "segment": chunk.segment,
                "offset": offset,
                "event": event,
            }
        )
        entry += b"\n"
        limit = self.config.max_refused_bytes
        if self._refused_bytes + len(entry) > limit:
            raise _Stop(
                f"stopped: the endpoint refused more events than `max-refused-bytes` "
                f"({limit}) holds in {self.refused_file}; the last: {answer.message}"
            )
        fd = os.open(self.refused_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, entry)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._refused_bytes += len(entry)
        self.refused_events += 1
        log.error(
            "forward: the endpoint refused an event for good (%s); copied to %s",
            answer.message,
            self.refused_file,
        )
