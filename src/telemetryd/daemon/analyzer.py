"""The daemon's side of the analyzer: when to analyze, and journaling what it finds.

The rules run in the store worker (store/analyzer.py), which owns the database. This
task asks for an analysis when events have been journaled since the last one, at most
once per ``[analyzer] interval``, and when the earliest possible stall comes due (the
worker says when); with nothing new and nothing due it sleeps, so an idle daemon lets
its worker exit. The alerts found are journaled like any client's events (checked,
deduplicated by their ids, acknowledged once written), so they are in the journal,
the truth, before anything else sees them; ``[analyzer] notify`` then shows each new
one on the desktop (``notify-send`` on Linux, ``osascript`` on macOS).

Settings are read afresh on every round: a SIGHUP applies at the next one.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from telemetryd import config, wire
from telemetryd.daemon.ingest import Feed, Ingestor
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners.events import settle
from telemetryd.daemon.store_worker import StoreClient, WorkerError
from telemetryd.errors import JournalError

log = logging.getLogger(__name__)

NOTIFY_TIMEOUT = 5.0  # seconds a desktop notification command may take
# An analysis looks for loops and cost anomalies in the sessions with events received
# since the previous one began, less this margin (for events received just before it
# and journaled just after).
TOUCHED_MARGIN = 60.0
_ENCODER = msgspec.json.Encoder()


class Analyzer:
    """Runs the analysis when there is something to analyze; keeps its figures for
    `status`."""

    def __init__(
        self, store: StoreClient, journal: Journal, ingestor: Ingestor, settings: config.Config
    ) -> None:
        self.store = store
        self.journal = journal
        self.ingestor = ingestor
        self.settings = settings
        self.runs = 0
        self.raised = 0  # alerts journaled since the daemon started
        self.last_run: float | None = None  # Unix time
        self.next_due: float | None = None  # Unix time a stall may come due
        self.budget: list[dict[str, Any]] = []
        self.error: str | None = None
        self.through = 0  # journal.events_written that the last analysis accounts for
        self._began: float | None = None  # Unix time the last successful analysis began

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.settings.analyzer.enabled,
            "runs": self.runs,
            "alerts_raised": self.raised,
            "last_run": _iso(self.last_run),
            "next_due": _iso(self.next_due),
            "budget": self.budget,
            "error": self.error,
            # The last analysis saw the first analyzed_through of the events_journaled
            # since the daemon started.
            "analyzed_through": self.through,
            "events_journaled": self.journal.events_written,
        }

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self.through = -1  # analyze once at start: a stall may be due since before it
        while True:
            rules = self.settings.analyzer
            await anyio.sleep(rules.interval)
            if not rules.enabled:
                continue
            await self._until_something(self.through)
            await self.analyze()

    async def _until_something(self, seen: int) -> None:
        """Until events were journaled since ``seen``, or a stall comes due."""
        wait = math.inf if self.next_due is None else max(0.0, self.next_due - time.time())
        with anyio.move_on_after(wait):
            while self.journal.events_written == seen:
                await self.journal.changed()

    async def analyze(self) -> int:
        """One analysis; the number of new alerts journaled."""
        began = time.time()
        request = wire.WorkerAnalyze(
            analyzer=msgspec.to_builtins(self.settings.analyzer),
            budget=msgspec.to_builtins(self.settings.budget),
            touched=None if self._began is None else self._began - TOUCHED_MARGIN,
        )
        through = self.journal.events_written  # the worker loads all of them first
        try:
            reply = await self.store.worker.call(request)
        except WorkerError as exc:
            if self.error != str(exc):
                log.warning("analysis failed: %s", exc)
            self.error = str(exc)
            self.next_due = None
            return 0
        self.runs += 1
        if reply.get("complete", True):  # else the next run looks as widely again
            self._began = began
        self.last_run = time.time()
        self.error = None
        self.next_due = reply.get("next_due")
        self.budget = reply.get("budget") or []
        alerts = reply.get("alerts") or []
        journaled = await self._journal(alerts) if alerts else 0
        # The alerts themselves are nothing new to analyze; anything else journaled
        # meanwhile is.
        now = self.journal.events_written
        self.through = now if now - through == journaled else through
        return journaled

    async def _journal(self, alerts: list[dict[str, Any]]) -> int:
        feed = Feed(self.ingestor)
        data = b"".join(_ENCODER.encode(alert) + b"\n" for alert in alerts)
        batch, replies = feed.feed(data)
        more, more_replies = feed.end()
        try:
            for taken in (batch, more):
                if taken is not None:
                    await self.journal.submit(taken)
            await settle(self.journal, feed)
        except JournalError as exc:
            self.error = f"alerts not journaled: {exc}"
            log.error("%s", self.error)
            return 0
        for reply in replies + more_replies:  # a bug in a rule: say so, keep going
            log.error("an alert was refused: %s", reply.decode(errors="replace").strip())
        self.raised += feed.accepted
        if feed.accepted:
            log.info("%d new alerts", feed.accepted)
            if self.settings.analyzer.notify:
                for alert in alerts:
                    await notify(alert)
        return feed.accepted


async def notify(alert: dict[str, Any]) -> None:
    """Show ``alert`` on the desktop; a missing or failing command is logged, once."""
    title = f"telemetryd: {alert.get('kind', 'alert')} ({alert.get('severity', '')})"
    message = str(alert.get("message", ""))
    if sys.platform == "darwin":
        script = f"display notification {_applescript(message)} with title {_applescript(title)}"
        command = ["osascript", "-e", script]
    else:
        urgency = "critical" if alert.get("severity") in ("error", "critical") else "normal"
        command = ["notify-send", "--app-name=telemetryd", f"--urgency={urgency}", title, message]
    if shutil.which(command[0]) is None:
        _warn_once(f"desktop notifications need {command[0]}, which is not on PATH")
        return
    try:
        with anyio.fail_after(NOTIFY_TIMEOUT):
            result = await anyio.run_process(command, check=False)
    except (OSError, TimeoutError) as exc:
        _warn_once(f"{command[0]} failed: {exc or 'timed out'}")
        return
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        _warn_once(f"{command[0]} exited with {result.returncode}: {stderr}")


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _applescript(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
