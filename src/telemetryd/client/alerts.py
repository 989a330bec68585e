"""Alerts as a Python API: what `telemetryctl alerts` prints.

:func:`load` reads the ``alerts`` view (from the daemon or, while it is stopped, the
database file); :func:`follow` yields each new alert as the daemon journals it (a
tail of ``alert`` events). By default only the analyzer's alerts (source
``telemetryd``, store/analyzer.py); ``everything`` adds producers' own, such as
Claude Code's notifications.

Import-light like the query path: no click, no duckdb.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from telemetryd import fastjson
from telemetryd.client import protocol
from telemetryd.client.control import Control
from telemetryd.client.fetch import query

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

SOURCE = "telemetryd"  # the analyzer's alerts
COLUMNS = ("timestamp", "severity", "rule", "session_id", "message")

_SQL = """
SELECT
    strftime(a.timestamp, '%Y-%m-%dT%H:%M:%S.%gZ') AS timestamp,
    a.severity,
    a.rule,
    a.session_id,
    a.message,
    a.source,
    CAST(a.evidence AS VARCHAR) AS evidence,
    a.event_id AS id
FROM alerts AS a
WHERE a.timestamp >= CAST($since AS TIMESTAMP) AND ($everything OR a.source = 'telemetryd')
ORDER BY a.timestamp, a.event_id
"""


@dataclass
class Result:
    alerts: list[dict[str, Any]]
    from_file: bool = False
    warning: str | None = None


def load(since: datetime, *, everything: bool = False, socket_path: str | None = None) -> Result:
    """The alerts raised since ``since`` (aware), oldest first; errors as
    :func:`telemetryd.client.fetch.query`'s."""
    moment = since.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    params = {"since": moment, "everything": everything}
    rows, from_file, warning = query(_SQL, params, socket_path)
    for row in rows:
        row["evidence"] = fastjson.loads(row["evidence"]) if row["evidence"] else None
    return Result(rows, from_file, warning)


def follow(*, everything: bool = False, socket_path: str | None = None) -> Iterator[dict[str, Any]]:
    """Each alert as the daemon journals it, as :func:`load` gives them, until the
    daemon stops (DaemonUnavailable) or the caller stops reading."""
    request: dict[str, Any] = {"op": "tail", "backlog": 0, "follow": True, "types": ["alert"]}
    if not everything:
        request["sources"] = [SOURCE]
    with Control(socket_path or protocol.control_socket()) as control:
        for reply in control.tail(request):
            if isinstance(reply, protocol.TailEvents):
                for line in reply.lines:
                    yield from_event(fastjson.loads(line.decode()))
            elif isinstance(reply, protocol.TailDone):
                return


def from_event(event: dict[str, Any]) -> dict[str, Any]:
    """An ``alert`` event (as journaled) as a row of :func:`load`."""
    attrs = event.get("attrs") or {}
    return {
        "timestamp": _milliseconds(event.get("ts")),
        "severity": event.get("severity"),
        "rule": event.get("kind"),
        "session_id": event.get("session_id"),
        "message": event.get("message"),
        "source": event.get("source"),
        "evidence": attrs.get("evidence") if isinstance(attrs, dict) else None,
        "id": event.get("id"),
    }


def _milliseconds(ts: Any) -> Any:
    """A journaled time (``...:23.200000Z``) as :func:`load` gives it, to the millisecond
    (``...:23.200Z``), so that followed and listed alerts read alike."""
    try:
        when = datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        return ts
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def line(alert: dict[str, Any]) -> str:
    """One alert for a terminal: time, severity, rule, message."""
    stamp = str(alert.get("timestamp") or "")[:19].replace("T", " ")
    severity, rule = alert.get("severity") or "", alert.get("rule") or ""
    return f"{stamp}  {severity:<8} {rule:<13} {alert.get('message', '')}"
