"""`telemetryctl report daily|weekly|monthly|session|blocks` (click layer over
:mod:`telemetryd.client.reports` and :mod:`telemetryd.client.blocks`). ``cli.py``
registers it with ``cli.add_command(report_group)``.

A report's usual command lines never get here: :mod:`telemetryd.client.report_main`
runs them before click is imported, with the same options, checks and output, and
hands everything else (``--help``, a bad value, an option it does not know) to this
module. An option added here must be added there too (tests/test_report_main.py
compares the two on every option).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from telemetryd.client import html_cli
from telemetryd.client.cli_errors import load_or_exit

F = TypeVar("F", bound=Callable[..., Any])


FORMATS = ("table", "json", "csv", "tsv", "markdown")
WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from telemetryd.client import reports

    if value is None:
        return None
    try:
        day = reports.parse_date(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    # (whichever of the two comes second on the command line meets the other here)
    other = ctx.params.get("until" if param.name == "since" else "since")
    since, until = (day, other) if param.name == "since" else (other, day)
    if since is not None and until is not None and since > until:
        raise click.UsageError(f"--since {since} is after --until {until}: no day is in both")
    return day


def _zone(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    from telemetryd.client import reports

    if value is None:
        return reports.local_zone()
    try:
        return reports.check_zone(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


SPAN = [
    click.option("-s", "--since", callback=_date, metavar="DATE",
                 help="from this local date (YYYY-MM-DD or YYYYMMDD), inclusive"),
    click.option("-u", "--until", callback=_date, metavar="DATE",
                 help="up to this local date, inclusive"),
    click.option("-z", "--timezone", callback=_zone, metavar="ZONE",
                 envvar="TELEMETRYD_TIMEZONE",
                 help="IANA time zone that days are counted in (default: the local zone)"),
]  # fmt: skip
GROUPING = [
    click.option("--by", type=click.Choice(["model", "agent", "project", "source"]),
                 help="a row per period and model, agent type, project or source"),
    click.option("--source", metavar="NAME",
                 help="only this producer's requests (claude-code, codex, ...)"),
    click.option("-b", "--breakdown", is_flag=True, help="per model under each row"),
]  # fmt: skip
OUTPUT = [
    click.option("-j", "--json", "as_json", is_flag=True,
                 help="print ccusage's JSON (same as --format json)"),
    click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="table",
                 show_default=True, help="output format"),
    click.option("--socket", "socket_path", envvar="TELEMETRYD_CONTROL_SOCKET",
                 help="control socket (default: from TELEMETRYD_HOME / XDG)"),
]  # fmt: skip


def _apply(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def report_options(func: F) -> F:
    """The options every report by period or session takes."""
    return _apply(func, [*SPAN, *GROUPING, *OUTPUT])


def report_options_blocks(func: F) -> F:
    """The options of `report blocks`."""
    active = click.option("-a", "--active", is_flag=True, help="only the active block")
    return _apply(func, [*SPAN, active, *OUTPUT])


@click.group("report", invoke_without_command=True)
@html_cli.options(SPAN)
@click.pass_context
def report_group(ctx: click.Context, /, **kw: Any) -> None:
    """Token use and cost per day, week, month, session or 5-hour block, as ccusage
    reports them; with --html FILE, all of it and more as charts in one HTML page.

    Every model request telemetryd holds (imported transcripts, hooks, OTLP) is
    counted once. The table shows money as money and counts with separators;
    --json prints ccusage's JSON (the same keys, full precision) with telemetryd's
    own fields beside them (requests, reasoningOutputTokens, unpricedRequests).
    A cost marked +? leaves out requests of a model without a price.

    --html FILE (without a subcommand) writes one self-contained page that opens
    offline: cost and tokens per day by model, cost by project and agent, the
    5-hour windows, tool failures and durations, errors by provider, sessions,
    alerts, model quality and rate-limit use (needs pip install
    'telemetryd[report]').

    \b
    Examples:
      telemetryctl report daily --since 2026-03-01
      telemetryctl report monthly --by source --breakdown
      telemetryctl report session --json --timezone UTC
      telemetryctl report blocks --active
      telemetryctl report --html usage.html --since 2026-03-01 --open
    """
    html_cli.run(ctx, **kw)


def _run(kind: str, **kw: Any) -> None:
    from telemetryd.client import reports

    fmt = "json" if kw["as_json"] else kw["fmt"]
    options = reports.Options(
        kind=kind,
        timezone=kw["timezone"],
        since=kw["since"],
        until=kw["until"],
        by=kw["by"],
        source=kw["source"],
        week_start=kw.get("start_of_week") or "sunday",
    )
    report = load_or_exit(lambda: reports.load(options, kw["socket_path"]))
    reports.emit(report, fmt, kw["breakdown"], click.echo, sys.stdout)


@report_group.command()
@report_options
def daily(**kw: Any) -> None:
    """Usage per local day: {"daily": [{"date": ...}], "totals": {...}} in JSON."""
    _run("daily", **kw)


@report_group.command()
@report_options
@click.option(
    "-w",
    "--start-of-week",
    type=click.Choice(WEEKDAYS),
    default="sunday",
    show_default=True,
    help="the day weeks start on (as ccusage)",
)
def weekly(**kw: Any) -> None:
    """Usage per week: rows keyed by "week", the date the week starts."""
    _run("weekly", **kw)


@report_group.command()
@report_options
def monthly(**kw: Any) -> None:
    """Usage per month: rows keyed by "month" (YYYY-MM)."""
    _run("monthly", **kw)


@report_group.command()
@report_options
def session(**kw: Any) -> None:
    """Usage per session, the most expensive first: {"sessions": [{"sessionId",
    "projectPath", "firstActivity", "lastActivity", ...}]}. --since / --until keep the
    sessions last active on those days."""
    _run("session", **kw)


@report_group.command()
@report_options_blocks
def blocks(**kw: Any) -> None:
    """Claude usage per 5-hour billing block, as `ccusage blocks`: a block starts at
    the hour of its first request and ends 5 h later; a request after its end, or after
    5 h without one, starts the next (the silence shown as a gap block). The active
    block shows its burn rate and a projection to its end. Only Claude requests count
    (source claude-code, provider anthropic or a claude* model). --since / --until keep
    the blocks that start on those days; --active only the active block (in detail).
    {"blocks": [{"id", "startTime", "endTime", "actualEndTime", "isActive", "isGap",
    "entries", "tokenCounts", "totalTokens", "costUSD", "models", "burnRate",
    "projection", ...}]} in JSON."""
    from telemetryd.client import blocks as blocks_api

    fmt = "json" if kw["as_json"] else kw["fmt"]
    options = blocks_api.Options(
        timezone=kw["timezone"], since=kw["since"], until=kw["until"], active=kw["active"]
    )
    report = load_or_exit(lambda: blocks_api.load(options, kw["socket_path"]))
    blocks_api.emit(report, fmt, click.echo, sys.stdout)
