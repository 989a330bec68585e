"""SIGHUP: reload the configuration and apply what can change while the daemon runs.

The configuration is loaded again by the same rules as at start (file, then the
environment, then ``--set``), ranges included. If it is invalid (or loading it fails
in any other way), the error (naming the key and the file) is logged and the running
configuration stays: a SIGHUP never stops the daemon. Otherwise the settings in
:data:`LIVE` are copied into the running :class:`~telemetryd.config.Config`'s
section objects in place (the server, ingestor, journal and the store client hold
those same objects, and read them when they use them):

- ``ingest``: max-line-bytes, max-attrs-bytes, max-attrs-depth and
  max-connections at once; idle-timeout and read-size for new connections;
- ``journal``: fsync-interval-ms and segment-max-bytes;
- ``store``: interval, pending-events (from the next cycle), query-timeout and
  idle-exit at once; memory-limit and threads from the next start of the store worker
  (the process that runs DuckDB: it is started again when idle or needed);
- ``spool``: scan-interval (from the next scan);
- ``retention``: everything (from the next run);
- ``http``: allowed-hosts, prompt-text, max-body-bytes and max-connections at once
  (from the next request or connection), the timeouts from their next wait;
- ``export``: parquet-dir and interval (from the next run);
- ``analyzer`` and ``budget``: everything (from the next analysis; an interval
  changed takes effect after the wait under way).

The others take a restart, and a change to them is logged as waiting for one:
``journal.durability`` (connections were promised acknowledgements under the
running mode), ``ingest.max-pending-bytes``, ``dedup-window`` and ``allowed-uids``
(sized or checked once at start), ``http.enabled``, ``address`` and ``require-token``
(the listening socket and the token are taken at start). Paths and sockets never
change while running.

Either way the journal continues in a new segment from its next write, and the
service manager hears ``RELOADING=1`` then ``READY=1`` (sd_notify).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from telemetryd import wire
from telemetryd.config import Config, flatten
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.service import Notifier
from telemetryd.errors import ConfigError

log = logging.getLogger("telemetryd")

_ANALYZER_KEYS = (
    "enabled", "interval", "lookback", "loop-count", "loop-window", "stall-after",
    "cost-factor", "cost-min-sessions", "cost-days", "error-spike-count",
    "error-spike-window", "notify",
)  # fmt: skip
LIVE = frozenset(
    {
        "ingest.max-line-bytes",
        "ingest.max-attrs-bytes",
        "ingest.max-attrs-depth",
        "ingest.max-connections",
        "ingest.idle-timeout",
        "ingest.read-size",
        "journal.fsync-interval-ms",
        "journal.segment-max-bytes",
        "store.interval",
        "store.pending-events",
        "store.query-timeout",
        "store.idle-exit",
        "store.memory-limit",
        "store.threads",
        "spool.scan-interval",
        "retention.max-age-days",
        "retention.usage-max-age-days",
        "retention.max-bytes",
        "retention.compress",
        "retention.interval",
        "pricing.models",  # the worker's next load prices with them; stored costs: `reprice`
        "http.allowed-hosts",
        "http.prompt-text",
        "http.max-body-bytes",
        "http.max-connections",
        "http.header-timeout",
        "http.body-timeout",
        "http.idle-timeout",
        "export.parquet-dir",
        "export.interval",
        # The analyzer sends its rules with each analysis (daemon/analyzer.py).
        *(f"analyzer.{key}" for key in _ANALYZER_KEYS),
        *(f"budget.{key}" for key in ("daily-usd", "monthly-usd", "warn-at", "timezone")),
    }
)


def apply(running: Config, new: Config) -> tuple[list[str], list[str]]:
    """Copy ``new``'s live settings into ``running`` in place; return the changes applied
    and those waiting for a restart, each as ``"section.key: old -> new"``."""
    applied: list[str] = []
    waiting: list[str] = []
    before = flatten(running)
    for key, value in flatten(new).items():
        if before[key] == value:
            continue
        change = f"{key}: {before[key]!r} -> {value!r}"
        if key not in LIVE:
            waiting.append(change)
            continue
        section, _, name = (part.replace("-", "_") for part in key.partition("."))
        setattr(getattr(running, section), name, getattr(getattr(new, section), name))
        applied.append(change)
    return applied, waiting


class Reloads:
    """What this run's reloads did, for `status` (wire.ConfigStatus): the log says it
    too, but a daemon under launchd or in a terminal may have no one reading its log."""

    def __init__(self) -> None:
        self.count = 0
        self.last: str | None = None  # when (RFC 3339, UTC)
        self.error: str | None = None  # the last one's failure (the running config stayed)
        self.waiting: list[str] = []  # changes that take a restart, as the last one found

    def status(self) -> wire.ConfigStatus | None:
        if not self.count:
            return None
        return wire.ConfigStatus(
            reloads=self.count, last_reload=self.last, error=self.error, waiting=self.waiting
        )

    def note(self, error: str | None, waiting: list[str] | None = None) -> None:
        self.count += 1
        self.last = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.error = error
        if waiting is not None:
            self.waiting = waiting


async def reload(
    running: Config,
    load: Callable[[], Config],
    journal: Journal,
    notifier: Notifier,
    applied_hook: Callable[[], None] | None = None,
    reloads: Reloads | None = None,
) -> bool:
    """Handle one SIGHUP (see the module docstring); return whether the new file was valid.
    ``applied_hook`` is called once live settings changed (timers look again); ``reloads``
    records the outcome for `status`."""
    notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        new = await anyio.to_thread.run_sync(load)
    except Exception as exc:  # a SIGHUP never stops the daemon, whatever the file holds
        if isinstance(exc, ConfigError):
            log.error("SIGHUP: configuration not reloaded, the running one stays: %s", exc)
        else:  # a bug in the loader: say where
            log.exception("SIGHUP: configuration not reloaded, the running one stays")
        if reloads is not None:
            reloads.note(
                str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            )
        journal.reopen()
        notifier.notify("READY=1", "STATUS=reload failed; running with the previous configuration")
        return False
    applied, waiting = apply(running, new)
    for change in applied:
        log.info("SIGHUP: applied %s", change)
    if applied and applied_hook is not None:
        applied_hook()
    for change in waiting:
        log.warning("SIGHUP: %s takes a restart; still running with the old value", change)
    if not applied and not waiting:
        log.info("SIGHUP: configuration unchanged")
    if reloads is not None:
        reloads.note(None, waiting)
    journal.reopen()
    notifier.notify("READY=1", "STATUS=configuration reloaded")
    return True
