"""`telemetryctl export parquet DIR`: the events as Hive-partitioned Parquet (the daemon's
store worker writes them; docs/export.md)."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

import click

from telemetryd import paths
from telemetryd.client import control
from telemetryd.client.cli_errors import EXIT_UNAVAILABLE, message
from telemetryd.errors import DaemonBusy, DaemonUnavailable, TelemetryError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def parse_moment(text: str) -> datetime:
    """``2026-12-01`` (midnight UTC) or an RFC 3339 time (``2026-12-01T08:00:00+01:00``;
    without an offset, UTC), as an aware datetime; ValueError naming the expected forms."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM:SS, with an "
            "offset or Z; UTC without one)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        moment = parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def target_of(directory: str) -> str:
    """A URL as it is; a local path made absolute (the daemon has its own working
    directory)."""
    if _URL.match(directory):
        return directory
    return os.path.abspath(os.path.expanduser(directory))


@click.group("export")
def export_group() -> None:
    """Export the events for other engines (Parquet)."""


@export_group.command("parquet")
@click.argument("directory", metavar="DIR")
@click.option(
    "--since",
    callback=_moment,
    metavar="TIME",
    help="a new DIR holds events from this UTC date or RFC 3339 time on",
)
@click.option(
    "--until",
    callback=_moment,
    metavar="TIME",
    help="... and before this one (exclusive)",
)
@click.option("--json", "as_json", is_flag=True, help="print the run's report as JSON")
@click.option(
    "--socket",
    "socket_path",
    envvar="TELEMETRYD_CONTROL_SOCKET",
    help="control socket (default: from TELEMETRYD_HOME / XDG)",
)
def parquet(
    directory: str,
    since: str | None,
    until: str | None,
    as_json: bool,
    socket_path: str | None,
) -> None:
    """Write the events not exported to DIR yet as Parquet files.

    DIR is a local directory or a URL that DuckDB's writers accept where its extension
    is installed (s3://bucket/prefix with httpfs). Files go to
    DIR/date=YYYY-MM-DD/source=SOURCE/part-RUN-N.parquet (zstd), by the UTC day of
    each event's ts and its source; DIR/_telemetryd_export.json records what was
    exported, so the next run writes only what is new, late events with old times
    included, each event once. --since / --until (UTC dates, or RFC 3339 times; until
    is exclusive) fix the window of a new DIR; a later run on it needs neither. The
    running daemon does the work (it loads everything acknowledged first); the
    [export] parquet-dir setting makes it export every [export] interval seconds.
    docs/export.md gives the columns and the read commands for DuckDB, pyarrow,
    Spark and Trino.

    \b
    Examples:
      telemetryctl export parquet ~/telemetry-parquet
      telemetryctl export parquet ./2026 --since 2026-01-01 --until 2027-01-01
      duckdb -c "SELECT count(*) FROM read_parquet('~/telemetry-parquet/**/*.parquet',
                 hive_partitioning = true)"
    """
    socket = socket_path or paths.resolve().control_socket
    try:
        reply = control.export(socket, target_of(directory), since, until)
    except DaemonUnavailable as exc:
        if isinstance(exc, DaemonBusy):
            raise click.ClickException(message(exc)) from None
        click.echo(
            f"Error: {message(exc)}\nexport is done by the running daemon (it owns the "
            "database and loads what is journaled first): start it, then export again",
            err=True,
        )
        sys.exit(EXIT_UNAVAILABLE)
    except TelemetryError as exc:
        raise click.ClickException(message(exc)) from None
    if as_json:
        out: dict[str, Any] = dict(reply)
        out.pop("ok", None)
        click.echo(json.dumps(out, indent=2))
        return
    if reply.run is None:
        click.echo(f"nothing new to export; {reply.total_events} events in {reply['target']}")
        return
    click.echo(
        f"run {reply.run}: {reply.events} events in {len(reply.files)} files; "
        f"{reply.total_events} events in {reply['target']}"
    )
