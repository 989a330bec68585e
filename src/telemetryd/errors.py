"""Exception types. Library code raises these; only the CLI turns them into messages."""

from __future__ import annotations


class TelemetryError(Exception):
    """Base class for every error telemetryd raises on purpose."""


class ConfigError(TelemetryError):
    """The configuration file, an environment override or a flag is invalid."""


class PathError(TelemetryError):
    """A state path is unusable (too long for a socket, wrong permissions, ...)."""


class AlreadyRunning(TelemetryError):
    """Another telemetryd instance owns this state directory or socket."""


class DaemonUnavailable(TelemetryError):
    """The daemon is not running or cannot be reached: no socket, nothing listening, or
    the connection ended before the answer (the daemon stopping, say)."""


class ProtocolError(TelemetryError):
    """A peer sent something the wire protocol does not allow."""


class JournalError(TelemetryError):
    """The journal cannot be written (disk full, I/O error)."""


class DaemonBusy(DaemonUnavailable):
    """The daemon is up but turned the connection away for load (too many connections),
    or did not answer in time."""


class DaemonError(TelemetryError):
    """The daemon is running and answered a request with an error line: ``code`` is the
    protocol's error code (``query_failed``, ``forbidden_peer``, ...), ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StoreUnavailable(DaemonError):
    """The database cannot be opened (``store_unavailable``): by the daemon's store, or by
    the one-shot store process that answers a query while the daemon is stopped."""


class ExportError(TelemetryError):
    """An export cannot be made as asked (another window, a manifest that is not ours)."""
