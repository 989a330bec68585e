"""What the HTML report (`telemetryctl report --html`) shows, as a Python API.

:func:`load` gathers every figure through the APIs the other commands use, so each
number on the page is one those commands print:

- cost and tokens per day, by model: :func:`telemetryd.client.reports.load`, daily:
  ``report daily --json``;
- cost by project and by agent: the same with ``by="project"`` / ``"agent"``, summed
  over the days: ``report daily --by project --json``;
- the 5-hour windows: :func:`telemetryd.client.blocks.load`: ``report blocks --json``;
- tools, errors by provider, model quality: the macros ``tool_reliability(days)``,
  ``provider_reliability(days)`` and ``model_quality(days)``:
  ``query "select * from tool_reliability(days := N)"``, ...;
- sessions: counted per local day of their start, as the ``sessions`` view has it
  (:data:`SESSIONS_SQL`);
- alerts: :func:`telemetryd.client.alerts.load` (the ``alerts`` view): ``alerts --json``;
- rate limits: the status line's ``claude_code.rate_limits.*`` metric events
  (:data:`RATE_LIMITS_SQL`).

``since`` / ``until`` are inclusive local dates in ``timezone``, as for the reports. The
macros count back ``days`` days from now, so they get the smallest whole number of days
that reaches back to the start of ``since`` (all history without it) and ``until`` does
not bound them; the heat map's rows, which carry their (UTC) day, are kept between
``since`` and ``until``. The queries run a few at a time (:data:`PARALLEL`), each on its
own connection, so a caller can do other work (import a charting library) meanwhile:
:func:`start` returns at once and :meth:`Pending.result` waits; :meth:`Pending.finished`
and :meth:`Pending.section` give each query's figures as it ends (the page draws its
charts while slower queries still run).

Import-light like the query path: no click, no duckdb, no charting library.
"""

from __future__ import annotations

import math
import zoneinfo
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock

from telemetryd.client import alerts as alerts_api
from telemetryd.client import blocks as blocks_api
from telemetryd.client import reports
from telemetryd.client.fetch import query
from telemetryd.errors import DaemonError, DaemonUnavailable, StoreUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

ALL_DAYS = 36525  # the macros' window without --since: a hundred years
PARALLEL = 2  # queries in flight at once (they share the store's cores and memory limit)
ALERTS_LISTED = 200  # the newest alerts listed in the table (the chart counts them all)
RATE_LIMITS = ("claude_code.rate_limits.five_hour", "claude_code.rate_limits.seven_day")

# Sessions started per local day and source, as the ``sessions`` view has them
# (``started``: the first session_start, else the first event; ``source``: the first
# event's), without the view's other columns (a tenth of its time at a million events).
SESSIONS_SQL = """
SELECT
    strftime(timezone($tz, s.started AT TIME ZONE 'UTC'), '%Y-%m-%d') AS day,
    coalesce(s.source, 'unknown') AS source,
    count(*) AS sessions
FROM (
    SELECT
        coalesce(min(e.ts) FILTER (WHERE e.type = 'session_start'), min(e.ts)) AS started,
        arg_min(e.source, e.ts) AS source
    FROM events AS e
    WHERE e.session_id IS NOT NULL
    GROUP BY e.session_id
) AS s
WHERE s.started IS NOT NULL
GROUP BY ALL
ORDER BY day, source
"""

RATE_LIMITS_SQL = """
SELECT
    strftime(e.ts, '%Y-%m-%dT%H:%M:%S.%gZ') AS ts,
    strftime(timezone($tz, e.ts AT TIME ZONE 'UTC'), '%Y-%m-%d') AS day,
    e.name,
    e.value,
    json_extract_string(e.attrs, '$.resets_at') AS resets_at
FROM events AS e
WHERE e.type = 'metric' AND e.name IN ('claude_code.rate_limits.five_hour',
                                       'claude_code.rate_limits.seven_day')
ORDER BY e.ts, e.name
"""


@dataclass
class Options:
    timezone: str = "UTC"
    since: date | None = None
    until: date | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def days(self) -> int:
        """The macros' ``days``: from now back to the start of ``since`` (local midnight
        in ``timezone``), rounded up; :data:`ALL_DAYS` without ``since``; 0 when
        ``since`` has not begun (nothing to count)."""
        if self.since is None:
            return ALL_DAYS
        start = datetime.combine(self.since, clock(), zoneinfo.ZoneInfo(self.timezone))
        return max(0, math.ceil((self.now - start) / timedelta(days=1)))

    def within(self, day: str) -> bool:
        """``day`` (``YYYY-MM-DD``) is between ``since`` and ``until``."""
        when = date.fromisoformat(day[:10])
        if self.since is not None and when < self.since:
            return False
        return self.until is None or when <= self.until

    def span_args(self) -> list[str]:
        """The command-line options that give the same span, for the page's captions."""
        args = ["--timezone", self.timezone]
        if self.since is not None:
            args += ["--since", self.since.isoformat()]
        if self.until is not None:
            args += ["--until", self.until.isoformat()]
        return args


@dataclass
class Pictures:
    """Everything the page shows."""

    options: Options
    daily: reports.Report  # per day, per model under each
    by_project: reports.Report  # per day and project
    by_agent: reports.Report  # per day and agent type
    blocks: blocks_api.Report
    tools: list[dict[str, Any]]  # tool_reliability rows
    provider_errors: list[dict[str, Any]]  # provider_reliability rows within the span
    sessions: list[dict[str, Any]]  # day, source, sessions
    alerts: list[dict[str, Any]]  # the alerts view's rows within the span, oldest first
    model_quality: list[dict[str, Any]]
    rate_limits: list[dict[str, Any]]  # ts, day, name, value, resets_at
    from_file: bool = False
    warning: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # section: why its query failed

    @property
    def days(self) -> int:
        return self.options.days()

    def empty(self) -> bool:
        """Nothing at all to show (and no section failed)."""
        return not (
            self.failed
            or self.daily.rows
            or self.blocks.blocks
            or self.tools
            or self.provider_errors
            or self.sessions
            or self.alerts
            or self.model_quality
            or self.rate_limits
        )


def totals_by(report: reports.Report) -> list[tuple[str | None, reports.Usage]]:
    """A ``by`` report's usage per value, summed over its periods, the most expensive
    first (ties by name; the unknown value last among equals)."""
    summed: dict[str | None, reports.Usage] = {}
    for row in report.rows:
        summed.setdefault(row.value, reports.Usage()).add(row.usage)
    return sorted(summed.items(), key=lambda item: (-item[1].cost, item[0] is None, item[0] or ""))


def _rows(sql: str, params: dict[str, Any], socket_path: str | None) -> Loaded:
    rows, from_file, warning = query(sql, params, socket_path)
    return Loaded(rows, from_file, warning)


@dataclass
class Loaded:
    rows: list[dict[str, Any]]
    from_file: bool = False
    warning: str | None = None


class Pending:
    """The queries of :func:`start`, running."""

    def __init__(self, options: Options, socket_path: str | None) -> None:
        self.options = options
        self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="pictures")
        self._futures: dict[str, Future[Any]] = {}
        tz, since, until = options.timezone, options.since, options.until
        days = options.days()

        def report(by: str | None) -> Callable[[], reports.Report]:
            wanted = reports.Options(kind="daily", timezone=tz, since=since, until=until, by=by)
            return lambda: reports.load(wanted, socket_path)

        now_ms = int(options.now.timestamp() * 1000)
        blocks_options = blocks_api.Options(timezone=tz, since=since, until=until)
        start = (
            datetime.combine(since, clock(), zoneinfo.ZoneInfo(tz))
            if since is not None
            else datetime(1970, 1, 1, tzinfo=UTC)
        )

        def macro(name: str) -> Callable[[], Loaded]:
            if not days:  # (--since in the future: days := 0 would still show its clock skew)
                return lambda: Loaded([])
            sql = f"SELECT * FROM {name}(days := $days)"
            return lambda: _rows(sql, {"days": days}, socket_path)

        # Started in this order, two at a time: the slowest first (at 10M events
        # tool_reliability takes longer than any two others), then daily, whose charts
        # the page draws first (html_report.draw_early), then the others, slower first.
        jobs: dict[str, Callable[[], Any]] = {
            "tools": macro("tool_reliability"),
            "daily": report(None),
            "model_quality": macro("model_quality"),
            "by_project": report("project"),
            "by_agent": report("agent"),
            "sessions": lambda: _rows(SESSIONS_SQL, {"tz": tz}, socket_path),
            "blocks": lambda: blocks_api.load(blocks_options, socket_path, now_ms),
            "provider_errors": macro("provider_reliability"),
            "alerts": lambda: alerts_api.load(start, socket_path=socket_path),
            "rate_limits": lambda: _rows(RATE_LIMITS_SQL, {"tz": tz}, socket_path),
        }
        for name, job in jobs.items():
            self._futures[name] = self._pool.submit(job)

    def cancel(self) -> None:
        """Drop the queries not started yet; wait for those in flight."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def finished(self) -> Iterator[str]:
        """The queries' names as they end (failed or not)."""
        names = {future: name for name, future in self._futures.items()}
        for future in as_completed(names):
            yield names[future]

    def section(self, name: str) -> Any:
        """What the page shows of one query (``daily``, ``tools``, ...: the fields of
        :class:`Pictures`), once it has ended: waits for it, raises its error."""
        value = self._futures[name].result()
        options = self.options
        if name == "alerts":
            return [a for a in value.alerts if options.within(_local_day(a["timestamp"], options))]
        if name == "provider_errors":
            return [r for r in value.rows if options.within(str(r["day"]))]
        if name in ("sessions", "rate_limits"):
            return [r for r in value.rows if options.within(r["day"])]
        if isinstance(value, Loaded):
            return value.rows
        return value

    def result(self) -> Pictures:
        """Every figure. A query the store could not answer (out of memory, a timeout)
        leaves its section empty, with the reason in :attr:`Pictures.failed`; the daemon
        or the database being away raises, as does every query failing (the first
        error), after all have ended."""
        got: dict[str, Any] = {}
        failed: dict[str, str] = {}
        errors: list[DaemonError] = []
        try:
            for name in self._futures:
                try:
                    got[name] = self.section(name)
                except (DaemonUnavailable, StoreUnavailable):
                    raise
                except DaemonError as exc:
                    errors.append(exc)
                    failed[name] = reason(exc)
                    got[name] = self._nothing(name)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if len(errors) == len(self._futures):
            raise errors[0]
        # Every answer (Loaded, a report, blocks, alerts) says where it came from.
        answers = [f.result() for f in self._futures.values() if f.exception() is None]
        warnings = [w for w in dict.fromkeys(a.warning for a in answers) if w]
        return Pictures(
            options=self.options,
            from_file=any(a.from_file for a in answers),
            warning="; ".join(warnings) or None,
            failed=failed,
            **got,
        )

    def _nothing(self, name: str) -> Any:
        """What a section whose query failed shows: nothing."""
        options = self.options
        if name in ("daily", "by_project", "by_agent"):
            return reports.Report(reports.Options(timezone=options.timezone), [])
        if name == "blocks":
            return blocks_api.Report(blocks_api.Options(), [], 0)
        return []  # rows


def reason(exc: DaemonError) -> str:
    """The first line of a failed query's message, and what to do about running out of
    memory (DuckDB suggests settings a read-only query cannot change)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Out of Memory" in first:
        first += " (raise [store] memory-limit in config.toml)"
    return first


def _local_day(stamp: str, options: Options) -> str:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when.astimezone(zoneinfo.ZoneInfo(options.timezone)).date().isoformat()


def start(options: Options, socket_path: str | None = None) -> Pending:
    """Start the queries; :meth:`Pending.result` waits for them."""
    return Pending(options, socket_path)


def load(options: Options, socket_path: str | None = None) -> Pictures:
    """Everything the page shows. Errors as :func:`telemetryd.client.fetch.query`'s."""
    return start(options, socket_path).result()
