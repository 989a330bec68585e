"""Usage reports (daily, weekly, monthly, per session) in ccusage's shape, as a Python API.

:func:`load` runs one query (through the daemon, or the database file read-only while
it is stopped) that sums the model requests (``api_request`` events) per local day,
session, project, source, agent type and model, and :func:`build` folds those rows into
the report's rows. The JSON (:func:`as_json`) has ccusage's keys, so scripts written for
``ccusage daily|weekly|monthly|session --json`` read it unchanged:

- ``{"daily": [...], "totals": {...}}``, rows keyed by ``date`` (``YYYY-MM-DD``);
  ``weekly`` by ``week`` (the date its week starts, Sunday by default as in ccusage);
  ``monthly`` by ``month`` (``YYYY-MM``); ``sessions`` by ``sessionId`` with
  ``projectPath``, ``firstActivity`` and ``lastActivity`` (UTC, milliseconds), the
  most expensive first.
- every row: ``inputTokens`` (uncached input), ``outputTokens``, ``cacheCreationTokens``,
  ``cacheReadTokens``, ``totalTokens`` (the four added up), ``totalCost`` (US dollars,
  full precision), ``modelsUsed`` (in order of first use), ``modelBreakdowns`` (per
  model: ``modelName``, the four counts, ``cost``; the most expensive first).
- telemetryd's own fields beside them: ``requests``, ``reasoningOutputTokens`` (part of
  the output) and ``unpricedRequests`` (requests without a cost: a model the price
  table does not know; their cost counts as 0, as in ccusage), and with ``by`` the
  dimension's value (``model``, ``agent``, ``project`` or ``source``).

Days are local days in the report's time zone (DuckDB's ICU time zones; the stored
times are UTC). A cost is the request's own: the one the transcript reported
(``costUSD``), else the one the store computed from genai-prices' data as of the
request's time (store/pricing.py). Claude requests in fast mode are listed as ``<model>-fast``,
as ccusage lists them. ``since`` / ``until`` (inclusive local dates) keep the days
between them; a session is kept when its last activity's local day is between them.

Import-light like the query path: no click, no duckdb.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta

from telemetryd import fastjson
from telemetryd.client.fetch import query
from telemetryd.client.output import fixed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TextIO

KINDS = ("daily", "weekly", "monthly", "session")
DIMENSIONS = ("model", "agent", "project", "source")
WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
ROWS_KEY = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "session": "sessions"}
PERIOD_KEY = {"daily": "date", "weekly": "week", "monthly": "month", "session": "sessionId"}
COUNTS = ("input", "output", "cache_creation", "cache_read", "reasoning")

# A time any report can show in any zone, with the week it starts: a request stamped
# outside (a producer's zero time, 0001-01-01, or the year 9999) counts on its edge.
EARLIEST = "TIMESTAMP '0001-01-09'"
LATEST = "TIMESTAMP '9999-12-24'"


def clamped(column: str) -> str:
    """SQL for ``column`` (a UTC TIMESTAMP) moved within EARLIEST to LATEST."""
    return f"greatest(least({column}, {LATEST}), {EARLIEST})"


# One row per local day, session, project, source, agent type and model. A project is
# the transcript's directory (Claude Code imports), else the working directory.
#
# Moving every request's time into the report's time zone is most of a query's cost,
# so the requests are summed per quarter hour (UTC) first and only the quarter hours
# are moved: a quarter hour whose first and last microsecond fall on the same local day
# lies on that day as a whole (UTC offsets, and the times at which they change, are
# whole quarter hours nearly everywhere). The few quarter hours that a local midnight
# cuts (a zone's change at 00:01, as Newfoundland's until 2011; local mean time before
# time zones) are summed request by request instead.
#
# The store keeps those quarter-hour sums per producer, agent and model (its
# usage_quarters table, store/rollup.py), so a report that needs no session or project
# reads them instead of every request; the others sum the requests themselves.
# The model requests, one row each (NOT MATERIALIZED: used twice, and scanned afresh
# each time rather than copied). The model's name is put together after the sums.
_REQUESTS = f"""
    SELECT
        {clamped("e.ts")} AS ts,
        time_bucket(INTERVAL 15 MINUTE, {clamped("e.ts")}) AS quarter,
        {{session}} AS session_id,
        {{project}} AS project,
        {{source_column}} AS source,
        {{agent}} AS agent,
        e.agent_model,
        fast_mode(e.attrs) AS fast,
        e.tokens_input AS input,
        e.tokens_output AS output,
        e.tokens_cache_creation AS cache_creation,
        e.tokens_cache_read AS cache_read,
        e.tokens_reasoning AS reasoning,
        e.cost_usd AS cost
    FROM events AS e
    WHERE e.type = 'api_request' AND e.ts IS NOT NULL {{source}}
"""
_GROUPS = "session_id, project, source, agent, agent_model, fast"
_SUMS = """
        count(*) AS requests,
        sum(input) AS input,
        sum(output) AS output,
        sum(cache_creation) AS cache_creation,
        sum(cache_read) AS cache_read,
        sum(reasoning) AS reasoning,
        sum(cost) AS cost,
        count(*) FILTER (WHERE cost IS NULL) AS unpriced,
        min(ts) AS first,
        max(ts) AS last
"""
# The quarter hours' sums, from the requests or from the store's usage_quarters.
_PARTS = f"""
    SELECT quarter, {_GROUPS}, {_SUMS}
    FROM requests
    GROUP BY ALL
"""
_STORED_PARTS = f"""
    SELECT
        {clamped("quarter")} AS quarter,
        CAST(NULL AS VARCHAR) AS session_id,
        CAST(NULL AS VARCHAR) AS project,
        {{source_column}} AS source,
        {{agent}} AS agent,
        agent_model,
        fast,
        requests, input, output, cache_creation, cache_read, reasoning, cost, unpriced,
        {clamped("first")} AS first,
        {clamped("last")} AS last
    FROM usage_quarters AS e
    WHERE true {{source}}
"""
SQL = f"""
WITH requests AS NOT MATERIALIZED ({_REQUESTS}),
parts AS ({{parts}}),
quarters AS (
    SELECT
        quarter,
        strftime(timezone($tz, quarter AT TIME ZONE 'UTC'), '%Y-%m-%d') AS day,
        day = strftime(
            timezone($tz, (quarter + INTERVAL 899999999 MICROSECOND) AT TIME ZONE 'UTC'),
            '%Y-%m-%d'
        ) AS whole
    FROM (SELECT DISTINCT quarter FROM parts)
),
days AS (
    SELECT q.day, p.* EXCLUDE (quarter)
    FROM parts AS p JOIN quarters AS q USING (quarter)
    WHERE q.whole
    UNION ALL BY NAME
    SELECT
        strftime(timezone($tz, ts AT TIME ZONE 'UTC'), '%Y-%m-%d') AS day, {_GROUPS}, {_SUMS}
    FROM requests
    WHERE quarter IN (SELECT quarter FROM quarters WHERE NOT whole)
    GROUP BY ALL
)
SELECT
    day,
    session_id,
    project,
    source,
    agent,
    coalesce(agent_model, 'unknown') || CASE WHEN fast THEN '-fast' ELSE '' END AS model,
    CAST(sum(requests) AS BIGINT) AS requests,
    coalesce(sum(input), 0) AS input,
    coalesce(sum(output), 0) AS output,
    coalesce(sum(cache_creation), 0) AS cache_creation,
    coalesce(sum(cache_read), 0) AS cache_read,
    coalesce(sum(reasoning), 0) AS reasoning,
    coalesce(sum(cost), 0) AS cost,
    CAST(sum(unpriced) AS BIGINT) AS unpriced,
    strftime(min(first), '%Y-%m-%dT%H:%M:%S.%gZ') AS first,
    strftime(max(last), '%Y-%m-%dT%H:%M:%S.%gZ') AS last
FROM days
GROUP BY ALL
ORDER BY first, model
"""


def local_zone() -> str:
    """The IANA name of the local time zone, the one the C library's local time (and so
    the status line) follows: ``$TZ`` when it names a zone; else, for a ``$TZ`` in
    POSIX's own form, its offset's ``Etc/GMT`` zone when that is a whole number of hours
    without daylight saving time (``JST-9`` is ``Etc/GMT-9``), and UTC with a warning on
    stderr for any other (an empty ``$TZ`` is UTC too); without ``$TZ``, where
    ``/etc/localtime`` points, else UTC."""
    given = os.environ.get("TZ")
    if given is not None:
        name = given.lstrip(":")
        if not name or _known(name):
            return name or "UTC"
        fixed = _posix_offset(name)
        if fixed is not None and _known(fixed):
            return fixed
        import sys

        print(
            f"telemetryctl: TZ={given!r} names no time zone that days can be counted in "
            "(an IANA name such as Asia/Tokyo, or a whole-hour offset such as JST-9); "
            "counting in UTC (--timezone ZONE chooses one)",
            file=sys.stderr,
        )
        return "UTC"
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return "UTC"
    _, sep, name = target.partition("/zoneinfo/")
    return name if sep and _known(name) else "UTC"


def _posix_offset(rule: str) -> str | None:
    """The ``Etc/GMT`` zone of a POSIX ``TZ`` rule without daylight saving time whose
    offset is whole hours (``JST-9``, ``<+03>-3``); None for any other. (Both count the
    hours west of Greenwich: ``-9`` is 9 hours ahead.)"""
    name_end = 0
    if rule.startswith("<"):
        name_end = rule.find(">") + 1
    else:
        while name_end < len(rule) and rule[name_end].isascii() and rule[name_end].isalpha():
            name_end += 1
    if name_end < 3:
        return None
    offset = rule[name_end:]
    sign = offset[:1] if offset[:1] in ("+", "-") else ""
    hours, _, rest = offset[len(sign) :].partition(":")
    if not (hours.isascii() and hours.isdigit() and len(hours) <= 2):
        return None
    if rest and rest not in ("00", "00:00"):
        return None  # (minutes: no Etc zone; anything after: a daylight saving rule)
    if int(hours) == 0:
        return "Etc/GMT"
    return f"Etc/GMT{'-' if sign == '-' else '+'}{int(hours)}"


# Where zoneinfo looks for zone files by default on Linux and macOS (sysconfig's TZPATH).
_ZONE_DIRS = (
    "/usr/share/zoneinfo",
    "/usr/lib/zoneinfo",
    "/usr/share/lib/zoneinfo",
    "/etc/zoneinfo",
)


def _known(name: str) -> bool:
    """Whether ``name`` is a time zone: a zone file of that name in the system's zone
    directories (read without importing zoneinfo, ~3 ms of a report's start), else
    whatever zoneinfo (and the tzdata package) says."""
    if name and not name.startswith("/") and ".." not in name.split("/"):
        for directory in _ZONE_DIRS:
            try:
                with open(os.path.join(directory, name), "rb") as f:
                    if f.read(4) == b"TZif":
                        return True
            except OSError:  # not there, or a directory
                continue
    import zoneinfo  # (~5 ms: only when the zone files do not say)

    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True


def check_zone(name: str) -> str:
    """``name`` when it is a time zone; ValueError otherwise."""
    if not _known(name):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)")
    return name


def parse_date(text: str) -> date:
    """A ``--since`` / ``--until`` date: ``YYYY-MM-DD`` or ``YYYYMMDD`` (as ccusage takes)."""
    digits = text.replace("-", "")
    try:
        if len(digits) != 8 or not digits.isdigit():
            raise ValueError
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise ValueError(f"expected a date as YYYY-MM-DD or YYYYMMDD, got {text!r}") from None


class Options:
    """What a report sums and how (plain classes here, not dataclasses: importing
    ``dataclasses`` would cost more than the rest of the command)."""

    def __init__(
        self,
        kind: str = "daily",
        timezone: str = "UTC",
        since: date | None = None,
        until: date | None = None,
        by: str | None = None,  # one of DIMENSIONS: a row per period and value
        source: str | None = None,  # only this producer's requests (claude-code, codex, ...)
        week_start: str = "sunday",
    ) -> None:
        self.kind = kind
        self.timezone = timezone
        self.since = since
        self.until = until
        self.by = by
        self.source = source
        self.week_start = week_start

    def __repr__(self) -> str:
        return f"Options({self.__dict__!r})"


class Usage:
    """Tokens and cost of some model requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.input = 0
        self.output = 0
        self.cache_creation = 0
        self.cache_read = 0
        self.reasoning = 0
        self.cost = 0.0
        self.unpriced = 0

    def add(self, part: dict[str, Any] | Usage) -> None:
        get = part.get if isinstance(part, dict) else part.__dict__.get
        self.requests += get("requests") or 0
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + (get(name) or 0))
        self.cost += get("cost") or 0.0
        self.unpriced += get("unpriced") or 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read

    def __repr__(self) -> str:
        return f"Usage({self.__dict__!r})"


class Row:
    """One row of a report: a period (or session), and a value of ``by`` when given."""

    def __init__(self, key: str, value: str | None, project: str | None = None) -> None:
        self.key = key  # the date, week, month or session id
        self.value = value  # the ``by`` dimension's value (None: not grouped, or unknown)
        self.usage = Usage()
        self.models: dict[str, Usage] = {}  # in order of first use
        self.project = project  # sessions: the project of the last request with one
        self.first: str | None = None
        self.last: str | None = None

    def breakdowns(self) -> list[tuple[str, Usage]]:
        """Per model, the most expensive first (ties in order of first use)."""
        return sorted(self.models.items(), key=lambda item: -item[1].cost)


class Report:
    def __init__(
        self,
        options: Options,
        rows: list[Row],
        from_file: bool = False,  # the daemon was down: read from the database file
        warning: str | None = None,
    ) -> None:
        self.options = options
        self.rows = rows
        self.from_file = from_file
        self.warning = warning

    def totals(self) -> Usage:
        total = Usage()
        for row in self.rows:
            total.add(row.usage)
        return total


def week_of(day: str, start: str = "sunday") -> str:
    """The first day of ``day``'s week (weeks start on ``start``)."""
    when = date.fromisoformat(day)
    shift = (when.isoweekday() % 7 - WEEKDAYS.index(start)) % 7
    return (when - timedelta(days=shift)).isoformat()


def _period(kind: str, part: dict[str, Any], week_start: str) -> str:
    if kind == "weekly":
        return week_of(part["day"], week_start)
    if kind == "monthly":
        return str(part["day"][:7])
    if kind == "session":
        return str(part["session_id"] or "unknown")
    return str(part["day"])


def _within(day: str, options: Options) -> bool:
    when = date.fromisoformat(day)
    if options.since is not None and when < options.since:
        return False
    return options.until is None or when <= options.until


def build(parts: Iterable[dict[str, Any]], options: Options) -> list[Row]:
    """The report's rows from the query's rows (ordered by their first request)."""
    kind = options.kind
    rows: dict[tuple[Any, ...], Row] = {}
    projects: dict[tuple[Any, ...], str] = {}  # a session's row -> its project's time
    for part in parts:
        if kind != "session" and not _within(part["day"], options):
            continue
        key = _period(kind, part, options.week_start)
        value = part[options.by] if options.by else None
        group = (key, value)
        row = rows.get(group)
        if row is None:
            row = rows[group] = Row(key, value)
        # One row per session id, where ccusage keys a session by its project too: its
        # requests received live may carry no project where its imported ones do.
        project = part["project"] if kind == "session" else None
        if project is not None and part["last"] >= projects.get(group, ""):
            projects[group] = part["last"]
            row.project = project
        row.usage.add(part)
        row.models.setdefault(part["model"], Usage()).add(part)
        row.first = part["first"] if row.first is None else min(row.first, part["first"])
        row.last = part["last"] if row.last is None else max(row.last, part["last"])
    found = list(rows.values())
    if kind != "session":
        return sorted(found, key=lambda r: (r.key, r.value or ""))
    import zoneinfo

    zone = zoneinfo.ZoneInfo(options.timezone)
    kept = []
    for row in found:
        if row.usage.total == 0 and not row.usage.cost:  # as ccusage: an empty session
            continue
        assert row.last is not None
        last = datetime.fromisoformat(row.last).astimezone(zone).date().isoformat()
        if _within(last, options):
            kept.append(row)
    return sorted(kept, key=lambda r: (-r.usage.cost, r.key, r.value or ""))


_PROJECT = (
    "coalesce(json_extract_string(e.attrs, '$.project'), e.cwd, "
    "json_extract_string(e.attrs, '$.cwd'))"
)
_NONE = "CAST(NULL AS VARCHAR)"


def sql(options: Options) -> tuple[str, dict[str, Any]]:
    """The query of ``options``: grouped by the local day and the model, and by the
    session, project, source or agent only when the report needs them (fewer groups,
    and no JSON read of every request's attrs for a daily report)."""
    params: dict[str, Any] = {"tz": options.timezone}
    source = ""
    if options.source is not None:
        source = "AND e.source = $source"
        params["source"] = options.source
    session = options.kind == "session"
    project = session or options.by == "project"
    columns = {
        "source": source,
        "session": "e.session_id" if session else _NONE,
        "project": _PROJECT if project else _NONE,
        "source_column": "e.source" if options.by == "source" else _NONE,
        "agent": "e.agent_type" if options.by == "agent" else _NONE,
    }
    parts = _PARTS if project else _STORED_PARTS.format(**columns)
    return SQL.format(parts=parts, **columns), params


def load(options: Options, socket_path: str | None = None) -> Report:
    """The report ``options`` ask for. Errors as :func:`telemetryd.client.fetch.query`'s."""
    text, params = sql(options)
    parts, from_file, warning = query(text, params, socket_path)
    return Report(options, build(parts, options), from_file, warning)


# -- as JSON (ccusage's keys) --------------------------------------------------------------


def _counts(usage: Usage) -> dict[str, Any]:
    return {
        "inputTokens": usage.input,
        "outputTokens": usage.output,
        "cacheCreationTokens": usage.cache_creation,
        "cacheReadTokens": usage.cache_read,
    }


def _extras(usage: Usage) -> dict[str, Any]:
    return {
        "requests": usage.requests,
        "reasoningOutputTokens": usage.reasoning,
        "unpricedRequests": usage.unpriced,
    }


def row_dict(row: Row, options: Options) -> dict[str, Any]:
    out: dict[str, Any] = {PERIOD_KEY[options.kind]: row.key}
    if options.by:
        out[options.by] = row.value
    out.update(_counts(row.usage))
    out["totalTokens"] = row.usage.total
    out["totalCost"] = row.usage.cost
    if options.kind == "session":
        out["lastActivity"] = row.last
        out["firstActivity"] = row.first
    out["modelsUsed"] = list(row.models)
    out["modelBreakdowns"] = [
        {"modelName": name, **_counts(used), "cost": used.cost} for name, used in row.breakdowns()
    ]
    if options.kind == "session":
        out["projectPath"] = row.project
    out.update(_extras(row.usage))
    return out


def totals_dict(usage: Usage) -> dict[str, Any]:
    return {
        **_counts(usage),
        "totalTokens": usage.total,
        "totalCost": usage.cost,
        **_extras(usage),
    }


def as_json(report: Report) -> dict[str, Any]:
    """``{"daily" | "weekly" | "monthly" | "sessions": [...], "totals": {...}}``."""
    options = report.options
    return {
        ROWS_KEY[options.kind]: [row_dict(r, options) for r in report.rows],
        "totals": totals_dict(report.totals()),
    }


# -- as a table ----------------------------------------------------------------------------

HEADERS = ("Models", "Input", "Output", "Cache Create", "Cache Read", "Total Tokens", "Cost")
FIRST_HEADER = {"daily": "Date", "weekly": "Week", "monthly": "Month", "session": "Session"}


def money(usd: float) -> str:
    """``$1,234.56``: two decimals, as ccusage shows costs (the JSON keeps every digit)."""
    return "$" + fixed(usd, 2)


def number(count: int) -> str:
    return f"{count:,}"


def _cells(usage: Usage) -> list[str]:
    cost = money(usage.cost) + ("+?" if usage.unpriced else "")
    return [
        number(usage.input),
        number(usage.output),
        number(usage.cache_creation),
        number(usage.cache_read),
        number(usage.total),
        cost,
    ]


def header(options: Options) -> list[str]:
    cells = [FIRST_HEADER[options.kind]]
    if options.by:
        cells.append(options.by.capitalize())
    cells.extend(HEADERS)
    if options.kind == "session":
        cells += ["Project", "Last Activity"]
    return cells


def text_rows(report: Report, breakdown: bool = False) -> list[list[str]]:
    """The table's cells, formatted (money as money, counts with separators), the
    totals last. With ``breakdown``, a row per model under each row."""
    options = report.options
    lines: list[list[str]] = []
    extra = 2 if options.kind == "session" else 0
    lead = 1 if options.by else 0
    for row in report.rows:
        cells = [row.key]
        if options.by:
            cells.append(row.value or "-")
        cells.append(", ".join(row.models))
        cells += _cells(row.usage)
        if options.kind == "session":
            cells += [row.project or "-", row.last or ""]
        lines.append(cells)
        if breakdown:
            for name, used in row.breakdowns():
                lines.append(["", *[""] * lead, f"└─ {name}", *_cells(used), *[""] * extra])
    total = report.totals()
    lines.append(["Total", *[""] * lead, "", *_cells(total), *[""] * extra])
    return lines


def render(report: Report, breakdown: bool = False) -> list[str]:
    """The report as an aligned table (numbers right-aligned), a rule above the totals."""
    head = header(report.options)
    body = text_rows(report, breakdown)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    first_number = head.index("Input")
    last_number = head.index("Cost")

    def line(cells: list[str]) -> str:
        parts = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            numeric = first_number <= i <= last_number
            parts.append(cell.rjust(width) if numeric else cell.ljust(width))
        return "  ".join(parts).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(cells) for cells in body[:-1]]
    out.append("  ".join("-" * w for w in widths))
    out.append(line(body[-1]))
    return out


def flat_rows(report: Report, breakdown: bool = False) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows for csv / tsv: one row per period, ``models`` the models it used
    (in order of first use), or with ``breakdown`` one per period and model, ``model``
    that model; numbers unformatted."""
    options = report.options
    names = [PERIOD_KEY[options.kind]]
    if options.by:
        names.append(options.by)
    names += [
        "model" if breakdown else "models",
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_creation_tokens",
        "cache_read_tokens",
        "total_tokens",
        "cost_usd",
        "unpriced_requests",
    ]
    if options.kind == "session":
        names += ["project_path", "first_activity", "last_activity"]

    def cells(row: Row, model: str, used: Usage) -> list[Any]:
        out: list[Any] = [row.key]
        if options.by:
            out.append(row.value)
        out += [
            model,
            used.requests,
            used.input,
            used.output,
            used.cache_creation,
            used.cache_read,
            used.total,
            used.cost,
            used.unpriced,
        ]
        if options.kind == "session":
            out += [row.project, row.first, row.last]
        return out

    rows: list[list[Any]] = []
    for row in report.rows:
        if breakdown:
            rows.extend(cells(row, name, used) for name, used in row.breakdowns())
        else:
            rows.append(cells(row, ", ".join(row.models), row.usage))
    return names, rows


# -- on stdout -----------------------------------------------------------------------------


def emit(
    report: Report,
    fmt: str,
    breakdown: bool,
    echo: Callable[..., Any],
    stdout: TextIO,
) -> None:
    """Print ``report`` in ``fmt`` (json, table, csv, tsv or markdown): a whole text
    through ``echo(text)`` (a line added; ``err=True`` for stderr), the delimited and
    markdown formats written to ``stdout``. Both ways of running `telemetryctl report`
    print through here: click's with ``click.echo``, the one before click with an echo
    that behaves the same (:func:`telemetryd.client.report_main.echo`)."""
    from telemetryd.client import output

    options = report.options
    if fmt == "json":
        echo(fastjson.pretty(as_json(report)))
    elif fmt == "table":
        if not report.rows:
            echo("No usage data found.", err=True)
            return
        echo("\n".join(render(report, breakdown)))
    elif fmt == "markdown":
        out = output.writer("markdown", stdout)
        out.start([[name, "VARCHAR"] for name in header(options)])
        out.rows(text_rows(report, breakdown))
        out.end()
    else:
        names, rows = flat_rows(report, breakdown)
        out = output.writer(fmt, stdout)
        out.start([[name, ""] for name in names])
        out.rows(rows)
        out.end()
