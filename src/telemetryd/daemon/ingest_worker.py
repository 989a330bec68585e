"""An ingest worker process (daemon/ingest_workers.py says why and when the daemon runs them).

    python -m telemetryd.daemon.ingest_worker FD

FD is the worker's end of a socketpair with the daemon. The worker reads a
:class:`Hello`, answers that it is ready, then answers
each :class:`Request` (complete lines and the limits to check them by, or an OTLP
export request's body: :func:`run_job`) with an :class:`Answer`: what
:meth:`~telemetryd.daemon.ingest.Checker.check` found, the canonical events as raw
bytes after it. It exits at EOF (the daemon stopped, or no
longer needs it), and touches no file. This module is all the worker imports of the
daemon's side, besides the event model: no event loop, no anyio.

Messages: an 8-byte header (two big-endian 32-bit lengths), a msgpack array of the
first length, then raw bytes of the second.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import struct
import sys

import msgspec

from telemetryd.adapters.otel.export import ENCODINGS, SIGNALS, Mapped
from telemetryd.adapters.otel.wire import Encoding, Signal
from telemetryd.daemon.ingest import Checked, Checker


class Hello(msgspec.Struct, array_like=True):
    """The daemon's first message (it carries nothing yet: a place for settings)."""


class Request(msgspec.Struct, array_like=True):
    """Check the lines that follow (the raw bytes), the first being line ``lineno + 1``.

    With ``job`` set (:func:`job_code`), the raw bytes are an OTLP export request's
    body instead: its events (adapters/otel/export.py) are checked. ``limit`` bounds
    the body inflated; ``flags``: :data:`GZIPPED`, :data:`PROMPT_TEXT`."""

    tag: int
    lineno: int
    max_line: int
    max_attrs: int
    max_depth: int
    job: int = 0
    limit: int = 0
    flags: int = 0


GZIPPED = 1
PROMPT_TEXT = 2


class Answer(msgspec.Struct, array_like=True):
    """What checking found (its ``data``, the events, follow as the raw bytes); for an
    OTLP job also what mapping found, or why the body was refused (an HTTP status and
    a message)."""

    tag: int  # 0: the worker is ready
    checked: Checked
    mapped: Mapped | None = None
    refused: tuple[int, str] | None = None


def job_code(signal: Signal, encoding: Encoding) -> int:
    """The ``job`` of an OTLP export request (1 and up; 0 is "lines")."""
    return 1 + SIGNALS.index(signal) * len(ENCODINGS) + ENCODINGS.index(encoding)


def run_job(checker: Checker, request: Request, body: bytes) -> Answer:
    """Map an OTLP export request's body to events and check them (as the daemon would)."""
    import zlib

    from telemetryd.adapters.otel import export, wire

    signal = SIGNALS[(request.job - 1) // len(ENCODINGS)]
    encoding = ENCODINGS[(request.job - 1) % len(ENCODINGS)]
    try:
        mapped = export.to_events(
            signal,
            encoding,
            body,
            gzipped=bool(request.flags & GZIPPED),
            limit=request.limit,
            prompt_text=bool(request.flags & PROMPT_TEXT),
            max_attrs=request.max_attrs,
        )
    except wire.BadRequest as exc:
        return Answer(request.tag, Checked(), refused=(400, str(exc)))
    except OverflowError:
        message = f"the body inflates past the limit of {request.limit} bytes"
        return Answer(request.tag, Checked(), refused=(413, message))
    except zlib.error as exc:
        return Answer(request.tag, Checked(), refused=(400, f"the gzip body is broken: {exc}"))
    checked = checker.check(
        mapped.lines,
        request.lineno,
        request.max_line,
        request.max_attrs,
        request.max_depth,
        keep_received=mapped.forwarded > 0,
        attrs=mapped.attrs,
    )
    mapped.lines = b""
    mapped.attrs = []
    return Answer(request.tag, checked, mapped)


YOUNG_OBJECTS = 10_000  # a worker's garbage collector threshold (the young generation)
_ENCODER = msgspec.msgpack.Encoder()
ANSWERS = msgspec.msgpack.Decoder(Answer)
HEADER = struct.Struct(">II")  # the lengths of the msgpack part and of the raw bytes


def message(meta: msgspec.Struct, data: bytes | memoryview = b"") -> tuple[bytes, bytes]:
    """The header and the msgpack part of a message whose raw bytes are ``data``."""
    body = _ENCODER.encode(meta)
    return HEADER.pack(len(body), len(data)), body


def receive(sock: socket.socket, size: int) -> bytes | None:
    """Exactly ``size`` bytes (None at EOF)."""
    data = sock.recv(size, socket.MSG_WAITALL) if size else b""
    while len(data) < size:  # (a signal, say)
        more = sock.recv(size - len(data), socket.MSG_WAITALL)
        if not more:
            return None
        data += more
    return data


def _send(sock: socket.socket, parts: list[bytes]) -> None:
    sent = sock.sendmsg(parts)
    total = sum(len(part) for part in parts)
    if sent < total:
        sock.sendall(b"".join(parts)[sent:])


def serve(sock: socket.socket) -> None:
    """The worker's loop: check each request's lines, answer, until EOF."""
    # Checking a line or mapping a record makes and drops a few containers, freed as
    # they are dropped (no cycles): with the default young generation (700 objects) the
    # collector runs every 70 OTLP records or so, 3% of a job's time.
    gc.set_threshold(YOUNG_OBJECTS)
    requests = msgspec.msgpack.Decoder(Request)
    checker: Checker | None = None
    frozen = False
    while True:
        header = receive(sock, HEADER.size)
        if header is None:
            return
        meta_size, data_size = HEADER.unpack(header)
        meta = receive(sock, meta_size)
        region = receive(sock, data_size)
        if meta is None or region is None:
            return
        if checker is None:
            msgspec.msgpack.decode(meta, type=Hello)
            checker = Checker()
            _send(sock, list(message(Answer(0, Checked()))))
            continue
        request = requests.decode(meta)
        if request.job:
            answer = run_job(checker, request, region)
            if not frozen:
                # What the first job imported (the mappers, protobuf's classes) is kept
                # for good: the garbage collector stops looking at it each time.
                gc.freeze()
                frozen = True
        else:
            checked = checker.check(
                region, request.lineno, request.max_line, request.max_attrs, request.max_depth
            )
            answer = Answer(request.tag, checked)
        data, answer.checked.data = answer.checked.data, b""
        _send(sock, [*message(answer, data), data])


def main(argv: list[str]) -> int:
    # The daemon handles Ctrl-C and SIGTERM for the whole service; a worker ends when
    # the daemon closes its socket (or dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("TELEMETRYD_LOG_LEVEL", "INFO").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    sock = socket.socket(fileno=int(argv[0]))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError), sock:
        serve(sock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
