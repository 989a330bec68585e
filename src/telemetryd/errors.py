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
    """The daemon did not answer on its socket."""


class ProtocolError(TelemetryError):
    """A peer sent something the wire protocol does not allow."""


class JournalError(TelemetryError):
    """The journal cannot be written (disk full, I/O error)."""


class DaemonBusy(DaemonUnavailable):
    """The daemon is up but turned the connection away for load (too many connections)."""
