"""One-line control requests (status, flush, rebuild, gc), each on its own connection.

A thin layer over :class:`telemetryd.client.protocol.Control`, which sends the request
and types the answer. Each function raises what the protocol client raises:
DaemonUnavailable (not running), DaemonBusy (up, but refused the connection for load
or did not answer in time), DaemonError (running, and answered with an error line)
or ProtocolError (an answer that makes no sense).
"""

from __future__ import annotations

import msgspec

from telemetryd import wire
from telemetryd.client import protocol

DEFAULT_TIMEOUT = 5.0  # seconds for status and flush
LONG_TIMEOUT = 3600.0  # rebuild and gc


def request(path: str, message: wire.Request, timeout: float = DEFAULT_TIMEOUT) -> protocol.Answer:
    """Send one control request and return its answer, typed by the request
    (a status request is answered by a :class:`~telemetryd.client.protocol.Status`)."""
    with protocol.Control(path, min(timeout, protocol.CONNECT_TIMEOUT)) as control:
        return control.answer(msgspec.to_builtins(message), timeout)


def status(path: str, timeout: float = DEFAULT_TIMEOUT) -> protocol.Status:
    with protocol.Control(path, min(timeout, protocol.CONNECT_TIMEOUT)) as control:
        return control.status()


def flush(path: str, timeout: float = DEFAULT_TIMEOUT) -> protocol.Flushed:
    with protocol.Control(path, min(timeout, protocol.CONNECT_TIMEOUT)) as control:
        return control.flush(timeout)


def rebuild(path: str, timeout: float = LONG_TIMEOUT) -> protocol.Rebuilt:
    with protocol.Control(path, min(timeout, protocol.CONNECT_TIMEOUT)) as control:
        return control.rebuild(timeout)


def gc(path: str, dry_run: bool, timeout: float = LONG_TIMEOUT) -> protocol.GcReport:
    with protocol.Control(path, min(timeout, protocol.CONNECT_TIMEOUT)) as control:
        return control.gc(dry_run, timeout)
