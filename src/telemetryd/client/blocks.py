"""Claude's 5-hour billing blocks in ccusage's shape (``ccusage blocks``), as a Python API.

:func:`load` runs one query (through the daemon, or the database file read-only while
it is stopped) for every Claude request stored, summed per UTC hour and model (the
requests exactly on the hour apart) with the times of each group's first and last
request, and :func:`build` walks them in time order as ccusage's
``identify_session_blocks`` does:

- a block starts at the UTC hour of its first request and ends 5 h later; a request
  more than 5 h after the block's start, or more than 5 h after the previous request,
  starts the next block (a request exactly 5 h after either stays in the block);
- after a silence of more than 5 h a gap block lies between the blocks: from 5 h
  after the last request to the next request, without usage;
- a block is active while now is before its end and less than 5 h after its last
  request, and not before its first (a block of requests stamped later than now, a
  producer's clock off, is none: the status line's rule, daemon/totals.py); the
  active block has a burn rate (tokens per minute over the span from its
  first to its last request, the cost per hour likewise) and a projection to its end
  at that rate (minutes left rounded, tokens rounded, the cost rounded to cents).

Such a group never straddles two blocks, so walking the groups (:func:`parts`: the
group's usage at its first request's time, and its last request's time) draws the blocks
that walking every request would: a block starts on an hour and ends on one; a request
in the hour that begins at a block's end is past it unless it is exactly on that hour
(hence those apart); and two requests of one hour are never more than 5 h apart. At a
million requests this moves a few thousand rows instead of one per millisecond.

The rule is the status line's (daemon/totals.py draws the active window from
quarter-hour tallies; here it runs over the requests themselves, all of history), and
so is what counts as Claude usage: a request whose source is ``claude-code``, whose
provider is ``anthropic`` or whose model's name starts with ``claude``.

``since`` / ``until`` (inclusive local dates in ``timezone``) keep the blocks that start
on those days, after the blocks are drawn from all history, as ccusage filters them.
The JSON (:func:`as_json`) is ccusage's: ``{"blocks": [...]}``, each with ``id``,
``startTime``, ``endTime``, ``actualEndTime``, ``isActive``, ``isGap``, ``entries``,
``tokenCounts`` (``inputTokens``, ``outputTokens``, ``cacheCreationInputTokens``,
``cacheReadInputTokens``), ``totalTokens``, ``costUSD``, ``models``, ``burnRate``
(``tokensPerMinute``, ``tokensPerMinuteForIndicator``, ``costPerHour``) and
``projection`` (``totalTokens``, ``totalCost``, ``remainingMinutes``); telemetryd adds
``requests``, ``reasoningOutputTokens`` and ``unpricedRequests`` as the other reports do.

Import-light like the query path: no click, no duckdb.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime

from telemetryd import fastjson
from telemetryd.client.fetch import query
from telemetryd.client.reports import COUNTS, Usage, clamped, money, number

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TextIO

HOUR = 3_600_000  # milliseconds
MINUTE = 60_000
DURATION = 5 * HOUR  # a block's length, and the silence that ends one early
SKEW_MS = 300_000  # a request this far after now is now (daemon/totals.py SKEW)

# Every Claude request, summed per UTC hour (those exactly on the hour apart) and model,
# with the group's first and last request's times: the walk needs no more. (Times
# outside what a report can show count on its edges: reports.clamped.)
_MS = f"epoch_ms({clamped('e.ts')})"
SQL = f"""
SELECT
    {_MS} // 3600000 AS hour,
    {_MS} % 3600000 = 0 AS on_the_hour,
    e.agent_model
        || CASE WHEN fast_mode(e.attrs) THEN '-fast' ELSE '' END
        AS model,
    count(*) AS requests,
    coalesce(sum(e.tokens_input), 0) AS input,
    coalesce(sum(e.tokens_output), 0) AS output,
    coalesce(sum(e.tokens_cache_creation), 0) AS cache_creation,
    coalesce(sum(e.tokens_cache_read), 0) AS cache_read,
    coalesce(sum(e.tokens_reasoning), 0) AS reasoning,
    coalesce(sum(e.cost_usd), 0) AS cost,
    count(*) FILTER (WHERE e.cost_usd IS NULL) AS unpriced,
    min({_MS}) AS first,
    max({_MS}) AS last
FROM events AS e
WHERE e.type = 'api_request' AND e.ts IS NOT NULL
  AND (e.source = 'claude-code' OR e.agent_provider = 'anthropic'
       OR starts_with(e.agent_model, 'claude'))
GROUP BY ALL
ORDER BY first, model
"""


class Options:
    """Which blocks (plain classes, as in :mod:`telemetryd.client.reports`)."""

    def __init__(
        self,
        timezone: str = "UTC",
        since: date | None = None,
        until: date | None = None,
        active: bool = False,  # only the active block
    ) -> None:
        self.timezone = timezone
        self.since = since
        self.until = until
        self.active = active


class Block:
    """One billing block (or the gap between two), times in epoch milliseconds."""

    def __init__(
        self,
        start: int,
        end: int,
        first: int | None = None,  # the first request's time
        gap: bool = False,
    ) -> None:
        self.start = start
        self.end = end
        self.last: int | None = None  # the last request's time (None: a gap)
        self.first = first
        self.active = False
        self.gap = gap
        self.usage = Usage()
        self.models: list[str] = []  # in order of first use

    @property
    def id(self) -> str:
        return ("gap-" if self.gap else "") + iso(self.start)

    def burn_rate(self) -> BurnRate | None:
        """Tokens per minute and dollars per hour from the first request to the last
        (ccusage computes it for the active block only)."""
        if self.gap or self.first is None or self.last is None:
            return None
        minutes = (self.last - self.first) / MINUTE
        if minutes <= 0:
            return None
        return BurnRate(
            tokens_per_minute=self.usage.total / minutes,
            indicator=(self.usage.input + self.usage.output) / minutes,
            cost_per_hour=self.usage.cost / minutes * 60,
        )

    def projection(self, now: int) -> Projection | None:
        """The usage at the block's end if the burn rate holds (active blocks only)."""
        rate = self.burn_rate() if self.active else None
        if rate is None:
            return None
        remaining = _round(max(0, self.end - now) / MINUTE)
        tokens = self.usage.total + rate.tokens_per_minute * remaining
        cost = self.usage.cost + rate.cost_per_hour / 60 * remaining
        return Projection(_round(tokens), _round(cost * 100) / 100, remaining)


class BurnRate:
    def __init__(self, tokens_per_minute: float, indicator: float, cost_per_hour: float) -> None:
        self.tokens_per_minute = tokens_per_minute
        self.indicator = indicator  # input and output only, per minute (ccusage's indicator)
        self.cost_per_hour = cost_per_hour


class Projection:
    def __init__(self, total_tokens: int, total_cost: float, remaining_minutes: int) -> None:
        self.total_tokens = total_tokens
        self.total_cost = total_cost
        self.remaining_minutes = remaining_minutes


class Report:
    def __init__(
        self,
        options: Options,
        blocks: list[Block],
        now: int,  # when it was drawn (epoch milliseconds): activity and projection
        from_file: bool = False,  # the daemon was down: read from the database file
        warning: str | None = None,
    ) -> None:
        self.options = options
        self.blocks = blocks
        self.now = now
        self.from_file = from_file
        self.warning = warning


def _round(value: float) -> int:
    """Half away from zero (Rust's ``f64::round``), for the non-negative values here."""
    return math.floor(value + 0.5)


def iso(ms: int) -> str:
    """``2026-01-09T10:00:00.000Z``."""
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _close(block: Block, now: int) -> Block:
    assert block.last is not None
    first = block.first if block.first is not None else block.start
    block.active = now - block.last < DURATION and now < block.end and first <= now + SKEW_MS
    return block


def build(parts: Iterable[dict[str, Any]], options: Options, now: int) -> list[Block]:
    """The blocks (gaps included, oldest first) from the query's rows, in time order;
    ``now`` in epoch milliseconds."""
    blocks: list[Block] = []
    current: Block | None = None
    for part in parts:
        when = int(part["ms"])
        if current is not None:
            assert current.last is not None
            if when - current.start > DURATION or when - current.last > DURATION:
                blocks.append(_close(current, now))
                if when - current.last > DURATION:
                    blocks.append(Block(start=current.last + DURATION, end=when, gap=True))
                current = None
        if current is None:
            start = when // HOUR * HOUR
            current = Block(start=start, end=start + DURATION, first=when)
        current.last = when
        current.usage.add(part)
        model = part.get("model")
        if model and model not in current.models:
            current.models.append(model)
    if current is not None:
        blocks.append(_close(current, now))
    return [b for b in blocks if _kept(b, options)]


def _kept(block: Block, options: Options) -> bool:
    if options.active and not block.active:
        return False
    if options.since is None and options.until is None:
        return True
    import zoneinfo

    zone = zoneinfo.ZoneInfo(options.timezone)
    day = datetime.fromtimestamp(block.start / 1000, zone).date()
    if options.since is not None and day < options.since:
        return False
    return options.until is None or day <= options.until


def parts(groups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """:data:`SQL`'s groups as :func:`build`'s parts, in time order (then by model, as
    the requests themselves would come): each group's usage at its first request's time,
    and, when later, its last request's time without usage."""
    out: list[dict[str, Any]] = []
    for group in groups:
        out.append({**group, "ms": group["first"]})
        if group["last"] != group["first"]:
            out.append({"ms": group["last"], "model": group["model"], "requests": 0})
    out.sort(key=lambda p: (p["ms"], p["model"] is None, p["model"] or ""))
    return out


def load(options: Options, socket_path: str | None = None, now: int | None = None) -> Report:
    """The blocks ``options`` ask for. Errors as :func:`telemetryd.client.fetch.query`'s."""
    groups, from_file, warning = query(SQL, {}, socket_path)
    if now is None:
        now = int(time.time() * 1000)
    return Report(options, build(parts(groups), options, now), now, from_file, warning)


# -- as JSON (ccusage's keys) --------------------------------------------------------------


def _number(value: float) -> float | int:
    """A whole float as an integer, as ccusage writes ``costUSD``."""
    return int(value) if math.isfinite(value) and value.is_integer() else value


def block_dict(block: Block, now: int) -> dict[str, Any]:
    usage = block.usage
    rate = block.burn_rate() if block.active else None
    projection = block.projection(now)
    return {
        "id": block.id,
        "startTime": iso(block.start),
        "endTime": iso(block.end),
        "actualEndTime": None if block.last is None else iso(block.last),
        "isActive": block.active,
        "isGap": block.gap,
        "entries": usage.requests,
        "tokenCounts": {
            "inputTokens": usage.input,
            "outputTokens": usage.output,
            "cacheCreationInputTokens": usage.cache_creation,
            "cacheReadInputTokens": usage.cache_read,
        },
        "totalTokens": usage.total,
        "costUSD": _number(usage.cost),
        "models": list(block.models),
        "burnRate": None
        if rate is None
        else {
            "tokensPerMinute": rate.tokens_per_minute,
            "tokensPerMinuteForIndicator": rate.indicator,
            "costPerHour": rate.cost_per_hour,
        },
        "projection": None
        if projection is None
        else {
            "totalTokens": projection.total_tokens,
            "totalCost": projection.total_cost,
            "remainingMinutes": projection.remaining_minutes,
        },
        "requests": usage.requests,
        "reasoningOutputTokens": usage.reasoning,
        "unpricedRequests": usage.unpriced,
    }


def as_json(report: Report) -> dict[str, Any]:
    """``{"blocks": [...]}``, as ``ccusage blocks --json``."""
    return {"blocks": [block_dict(b, report.now) for b in report.blocks]}


# -- as a table ----------------------------------------------------------------------------

HEADERS = ["Block Start", "Duration/Status", "Models", "Tokens", "Cost"]


def _local(ms: int, zone: str) -> str:
    import zoneinfo

    return datetime.fromtimestamp(ms / 1000, zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def _hm(ms: int) -> str:
    minutes = max(0, ms) // MINUTE
    return f"{minutes // 60}h {minutes % 60}m"


def _cost(usage: Usage) -> str:
    return money(usage.cost) + ("+?" if usage.unpriced else "")


def text_rows(report: Report) -> list[list[str]]:
    """The table's cells, as ccusage's blocks table: a gap as ``(inactive)``, the active
    block's elapsed and remaining time, and a PROJECTED row under it."""
    zone = report.options.timezone
    now = report.now
    lines: list[list[str]] = []
    for block in report.blocks:
        start = _local(block.start, zone)
        if block.gap:
            hours = (block.end - block.start) // HOUR
            span = f"{start} - {_local(block.end, zone)} ({hours}h gap)"
            lines.append([span, "(inactive)", "-", "-", "-"])
            continue
        if block.active:
            when = f"{start} ({_hm(now - block.start)} elapsed, {_hm(block.end - now)} remaining)"
        else:
            assert block.last is not None
            when = f"{start} ({_hm(block.last - block.start)})"
        status = "ACTIVE" if block.active else ""
        models = ", ".join(block.models) or "-"
        lines.append([when, status, models, number(block.usage.total), _cost(block.usage)])
        projection = block.projection(now)
        if projection is not None:
            lines.append(
                [
                    "(assuming current burn rate)",
                    "PROJECTED",
                    "",
                    number(projection.total_tokens),
                    money(projection.total_cost),
                ]
            )
    return lines


def render(report: Report) -> list[str]:
    """The blocks as an aligned table (tokens and cost right-aligned)."""
    body = text_rows(report)
    widths = [max(len(r[i]) for r in [HEADERS, *body]) for i in range(len(HEADERS))]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(width) if i >= 3 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(HEADERS), "  ".join("-" * w for w in widths), *map(line, body)]


def detail(report: Report, block: Block) -> list[str]:
    """The active block in detail (``--active`` as a table), as ccusage prints it."""
    now = report.now
    usage = block.usage
    out = [
        f"Block Started:   {_local(block.start, report.options.timezone)}",
        f"Time Elapsed:    {_hm(now - block.start)}",
        f"Time Remaining:  {_hm(block.end - now)}",
        "",
        "Current Usage:",
        f"  Input Tokens:     {number(usage.input)}",
        f"  Output Tokens:    {number(usage.output)}",
        f"  Total Tokens:     {number(usage.total)}",
        f"  Total Cost:       {_cost(usage)}",
    ]
    rate = block.burn_rate()
    if rate is not None:
        out += [
            "",
            "Burn Rate:",
            f"  Tokens/minute:    {number(_round(rate.tokens_per_minute))}",
            f"  Cost/hour:        {money(rate.cost_per_hour)}",
        ]
    projection = block.projection(now)
    if projection is not None:
        out += [
            "",
            "Projected Usage (if current rate continues):",
            f"  Total Tokens:     {number(projection.total_tokens)}",
            f"  Total Cost:       {money(projection.total_cost)}",
        ]
    return out


def flat_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows for csv / tsv / markdown, numbers unformatted."""
    names = [
        "id", "start_time", "end_time", "actual_end_time", "is_active", "is_gap",
        "requests", "input_tokens", "output_tokens", "cache_creation_tokens",
        "cache_read_tokens", "total_tokens", "cost_usd", "unpriced_requests", "models",
        "tokens_per_minute", "cost_per_hour", "projected_tokens", "projected_cost",
        "remaining_minutes",
    ]  # fmt: skip
    rows: list[list[Any]] = []
    for block in report.blocks:
        as_dict = block_dict(block, report.now)
        rate = as_dict["burnRate"] or {}
        projection = as_dict["projection"] or {}
        usage = block.usage
        rows.append(
            [
                as_dict["id"],
                as_dict["startTime"],
                as_dict["endTime"],
                as_dict["actualEndTime"],
                block.active,
                block.gap,
                usage.requests,
                *(getattr(usage, name) for name in COUNTS[:4]),
                usage.total,
                usage.cost,
                usage.unpriced,
                ", ".join(block.models),
                rate.get("tokensPerMinute"),
                rate.get("costPerHour"),
                projection.get("totalTokens"),
                projection.get("totalCost"),
                projection.get("remainingMinutes"),
            ]
        )
    return names, rows


# -- on stdout -----------------------------------------------------------------------------


def emit(report: Report, fmt: str, echo: Callable[..., Any], stdout: TextIO) -> None:
    """Print ``report`` in ``fmt``, as :func:`telemetryd.client.reports.emit` does."""
    from telemetryd.client import output

    options = report.options
    if fmt == "json":
        echo(fastjson.pretty(as_json(report)))
    elif fmt == "table":
        if not report.blocks:
            echo(
                "No active session block found."
                if options.active
                else "No Claude usage data found.",
                err=True,
            )
        elif options.active and len(report.blocks) == 1:
            echo("\n".join(detail(report, report.blocks[0])))
        else:
            echo("\n".join(render(report)))
    elif fmt == "markdown":
        out = output.writer("markdown", stdout)
        out.start([[name, "VARCHAR"] for name in HEADERS])
        out.rows(text_rows(report))
        out.end()
    else:
        names, rows = flat_rows(report)
        out = output.writer(fmt, stdout)
        out.start([[name, ""] for name in names])
        out.rows(rows)
        out.end()
