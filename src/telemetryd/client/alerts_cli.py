"""`telemetryctl alerts`: the analyzer's alerts (click layer over :mod:`telemetryd.client.alerts`).

``cli.py`` registers it with ``cli.add_command(alerts_command)``.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta

import click

from telemetryd.client.cli_errors import EXIT_UNAVAILABLE, load_or_exit, message
from telemetryd.errors import DaemonUnavailable, TelemetryError

_SPAN = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a span back from now (``90m``, ``24h``, ``7d``, ``2w``) or a date or
    time in ISO 8601 (``2026-12-01``, ``2026-12-01T09:00``; local time unless it names
    its zone); ValueError names what was expected."""
    now = now or datetime.now(UTC)
    span = _SPAN.fullmatch(text.strip())
    if span:
        try:
            return now - timedelta(seconds=float(span.group(1)) * _UNITS[span.group(2)])
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a span such as 24h or 7d, or an ISO date or time, got {text!r}"
        ) from None
    return when if when.tzinfo else when.astimezone()


class _Since(click.ParamType):  # type: ignore[type-arg]
    name = "SPAN|TIME"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_since(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command("alerts")
@click.option("-f", "--follow", is_flag=True, help="then print each new alert as it is raised")
@click.option(
    "--since",
    type=_Since(),
    default="7d",
    show_default=True,
    help="alerts raised since: a span back from now (24h, 7d) or an ISO date or time",
)
@click.option("--all", "everything", is_flag=True, help="also producers' alerts (notifications)")
@click.option("--json", "as_json", is_flag=True, help="print JSON (one object per line with -f)")
@click.option(
    "--socket",
    "socket_path",
    envvar="TELEMETRYD_CONTROL_SOCKET",
    help="control socket (default: from TELEMETRYD_HOME / XDG)",
)
def alerts_command(
    follow: bool, since: datetime, everything: bool, as_json: bool, socket_path: str | None
) -> None:
    """Print the alerts the analyzer raised: tool loops, stalled sessions, cost
    anomalies, budget crossings and error spikes (docs/alerts.md).

    One line per alert, oldest first: when, severity, rule and what it found. --json
    prints {"alerts": [...]} with each alert's session and evidence (what the rule
    saw); with -f, one JSON object per line. Thresholds and the budget are set in
    config.toml ([analyzer], [budget]).

    With the daemon stopped, the database file is read directly (-f needs the
    daemon). Exit status: 0 shown; 1 the query failed; 3 neither the daemon nor the
    database is available.

    \b
    Examples:
      telemetryctl alerts --since 24h
      telemetryctl alerts -f
      telemetryctl alerts --json | jq '.alerts[] | select(.rule == "budget")'
    """
    from telemetryd.client import alerts

    found = load_or_exit(lambda: alerts.load(since, everything=everything, socket_path=socket_path))
    if as_json and not follow:
        click.echo(json.dumps({"alerts": found.alerts}, indent=2, ensure_ascii=False))
        return
    for alert in found.alerts:
        click.echo(_render(alert, as_json))
    if not follow:
        if not found.alerts:
            click.echo(f"no alerts since {since.astimezone().strftime('%Y-%m-%d %H:%M')}", err=True)
        return
    try:
        for alert in alerts.follow(everything=everything, socket_path=socket_path):
            click.echo(_render(alert, as_json))
            sys.stdout.flush()
    except DaemonUnavailable as exc:
        click.echo(f"Error: {message(exc)}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except TelemetryError as exc:
        raise click.ClickException(message(exc)) from None
    except KeyboardInterrupt:
        sys.exit(130)


def _render(alert: dict[str, object], as_json: bool) -> str:
    from telemetryd.client import alerts

    if as_json:
        return json.dumps(alert, ensure_ascii=False)
    return alerts.line(alert)
