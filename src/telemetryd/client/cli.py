"""The `telemetryctl` command group (click). A thin layer over the client modules.

`send` never reaches this module in normal use: ``client/main.py`` dispatches
it before click is imported. It is declared here so that `--help` lists it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from telemetryd import __version__, events, paths
from telemetryd.client import control
from telemetryd.client.alerts_cli import alerts_command
from telemetryd.client.cli_errors import handle_errors
from telemetryd.client.config_cli import config_group
from telemetryd.client.export_cli import export_group
from telemetryd.client.hooks_cli import hook_command, hooks_group, statusline_command
from telemetryd.client.import_cli import import_group
from telemetryd.client.otel_cli import otel_group
from telemetryd.client.pricing_cli import pricing_command, reprice_command
from telemetryd.client.report_cli import report_group
from telemetryd.client.reports_cli import reports
from telemetryd.client.retention_cli import gc
from telemetryd.client.service_cli import service_group
from telemetryd.client.trace_cli import trace_command
from telemetryd.config import Ingest
from telemetryd.errors import (
    DaemonBusy,
    DaemonError,
    DaemonUnavailable,
    ProtocolError,
)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1  # `status`: the daemon is running and answered with an error
EXIT_DOWN = 3  # `status`: the daemon is not running, or too busy to answer


def control_socket_option(func: F) -> F:
    return click.option(
        "--socket",
        "socket_path",
        envvar="TELEMETRYD_CONTROL_SOCKET",
        help="control socket (default: from TELEMETRYD_HOME / XDG)",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="print JSON")(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="telemetryctl")
def cli() -> None:
    """Talk to telemetryd, the local telemetry collector for AI coding agents.

    \b
    Examples:
      telemetryctl send --type tool_result --tool Bash --success
      telemetryctl status
      telemetryctl validate events.jsonl
    """


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def send(args: tuple[str, ...]) -> None:
    """Send events from a hook script (see `telemetryctl send --help`)."""
    from telemetryd.client.send import main

    sys.exit(main(list(args)))


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def query(args: tuple[str, ...]) -> None:
    """Run read-only SQL over the telemetry database (see `telemetryctl query --help`)."""
    from telemetryd.client.query import main

    sys.exit(main(list(args)))


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def tail(args: tuple[str, ...]) -> None:
    """Print events as the daemon journals them (see `telemetryctl tail --help`)."""
    from telemetryd.client.tail import main

    sys.exit(main(list(args)))


@cli.command("paths")
@json_option
@handle_errors
def paths_command(as_json: bool) -> None:
    """Print every path telemetryd uses.

    \b
    Example:
      telemetryctl paths --json
    """
    where = paths.resolve().as_dict()
    if as_json:
        click.echo(json.dumps(where, indent=2))
    else:
        width = max(map(len, where))
        for key, value in where.items():
            click.echo(f"{key:<{width}}  {value}")


@cli.command()
@control_socket_option
@json_option
def status(socket_path: str | None, as_json: bool) -> None:
    """Say whether the daemon answers, and what it has done.

    Exit status: 0 the daemon answered; 1 it is running but answered with an error
    (a refused uid, say) or with something that makes no sense; 3 it is not running,
    or it is up but too busy to answer (the message says which).

    \b
    Example:
      telemetryctl status --json
    """
    path = socket_path or paths.resolve().control_socket
    try:
        reply = control.status(path)
    except DaemonBusy as exc:  # up, but turned this connection away for load
        click.echo(f"telemetryd is up but busy: {exc}", err=True)
        sys.exit(EXIT_DOWN)
    except DaemonUnavailable as exc:
        click.echo(f"telemetryd is not running: {exc}", err=True)
        sys.exit(EXIT_DOWN)
    except DaemonError as exc:
        click.echo(f"telemetryd is running but answered with an error: {exc.code}: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except ProtocolError as exc:
        click.echo(f"telemetryd answered with something that makes no sense: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    journal = reply["journal"]
    click.echo(
        f"telemetryd {reply['version']} is up (pid {reply['pid']}, "
        f"{reply['uptime_s']:.0f} s)\n"
        f"events: {reply['accepted']} accepted, {reply['rejected']} rejected, "
        f"{reply['duplicates']} duplicates; {reply['connections']} connections open\n"
        f"journal: {journal['segments']} segments, {journal['bytes']} bytes, "
        f"durability {journal['durability']}"
        + (f"\nwrite error: {journal['write_error']}" if journal.get("write_error") else "")
        + (
            f"\njournal: ignoring {', '.join(journal['ignored_files'])} (not segments)"
            if journal.get("ignored_files")
            else ""
        )
    )
    workers = reply.get("ingest_workers")
    if workers and workers["max"]:
        click.echo(
            f"ingest workers: {workers['running']} of {workers['max']} running "
            f"(started by big writes, stopped when idle; {workers['starts']} starts)"
            + (f", last unexpected exit: {workers['last_exit']}" if workers["last_exit"] else "")
        )
    http = reply.get("http")
    if http:
        if http["listening"]:
            click.echo(
                f"http: listening on {http['address']}; {http.get('requests', 0)} requests, "
                f"{http.get('records', 0)} OTLP records ({http.get('rejected', 0)} rejected), "
                f"{http.get('connections', 0)} connections open"
            )
        else:
            click.echo(f"http: not listening on {http['address']}: {http.get('error')}")
    forward = reply.get("forward")
    if forward:
        click.echo(_forward_status(forward))
    export = reply.get("export")
    if export:
        click.echo(_export_status(export))
    reloaded = reply.get("config")
    if reloaded and reloaded.get("error"):
        click.echo(
            f"config: the reload at {reloaded['last_reload']} failed, the configuration "
            f"before it runs: {reloaded['error']}"
        )
    if reloaded and reloaded.get("waiting"):
        click.echo("config: waiting for a restart: " + "; ".join(reloaded["waiting"]))
    click.echo(_store_status(reply))
    warning = (reply.get("retention") or {}).get("warning")
    if warning:
        click.echo(f"retention: warning: {warning}")
    analyzer = reply.get("analyzer")
    if analyzer:
        click.echo(_analyzer_status(analyzer))


def _analyzer_status(analyzer: dict[str, Any]) -> str:
    """The status lines about the analyzer and the budget."""
    if not analyzer.get("enabled"):
        return "analyzer: off ([analyzer] enabled = false)"
    line = (
        f"analyzer: {analyzer.get('runs', 0)} runs, {analyzer.get('alerts_raised', 0)} "
        f"alerts raised this run of the daemon (`telemetryctl alerts`)"
    )
    if analyzer.get("next_due"):
        line += f"; next stall check {analyzer['next_due']}"
    lines = [line]
    for period in analyzer.get("budget") or ():
        limit, spent = period["limit_usd"], period["spent_usd"]
        lines.append(
            f"budget: {period['label']} ${spent:,.2f} of ${limit:,.2f} ({spent / limit:.0%})"
        )
    if analyzer.get("error"):
        lines.append(f"analyzer error: {analyzer['error']}")
    return "\n".join(lines)


def _export_status(export: dict[str, Any]) -> str:
    """The status lines about the continuous Parquet export (docs/export.md)."""
    line = f"export: Parquet to {export['dir']} every {export['interval_s']:g} s"
    if export["state"] == "exporting":
        line += "; exporting now"
    if export.get("last_run"):
        line += (
            f"; last run {export['last_run']} wrote {export['last_events']} events "
            f"({export['last_files']} files; {export['total_events']} in the directory)"
        )
    else:
        line += "; no run yet"
    if export.get("next_run") and export["state"] != "exporting":
        line += f"; next run {export['next_run']}"
    lines = [line]
    if export.get("failures"):
        lines.append(
            f"export: last run failed ({export['failures']} failures in a row, "
            f"{export['last_error_at']}): {export['last_error']}"
        )
    return "\n".join(lines)


def _forward_status(forward: dict[str, Any]) -> str:
    """The status lines about [forward] (docs/forward.md)."""
    if forward["state"] == "off":  # (it never started: no backlog counted, no attempt made)
        return f"forward: off until a restart: {forward['last_error']}"
    events, size = forward.get("behind_events"), forward.get("behind_bytes")
    behind = "counting" if events is None else f"{events} events ({size} bytes) behind"
    lines = [
        f"forward: {forward['state']} to {forward['endpoint']}; {behind}; "
        f"{forward['sent_events']} events sent, last success {forward['last_success'] or 'none'}"
    ]
    if forward.get("last_error") and forward["state"] != "caught up":
        retry = forward.get("retry_in_s")
        detail = []
        if forward["failures"]:
            detail.append(f"{forward['failures']} failures in a row")
        elif forward.get("last_error_at"):  # (the endpoint has answered since)
            detail.append(forward["last_error_at"])
        if retry is not None:
            detail.append(f"next attempt in {retry:.0f} s")
        lines.append(
            "forward: last error"
            + (f" ({', '.join(detail)})" if detail else "")
            + f": {forward['last_error']}"
        )
    if forward.get("refused_events") or forward.get("partial_rejected"):
        lines.append(
            f"forward: {forward['refused_events']} events refused for good "
            f"(copied to {forward['refused_file']}), {forward['partial_rejected']} records "
            "rejected in partial successes"
        )
    if forward.get("skipped"):
        lines.append(
            "forward: deleted before they were forwarded: " + ", ".join(forward["skipped"])
        )
    return "\n".join(lines)


def _store_status(reply: dict[str, Any]) -> str:
    """The status lines about ingest rate and the database."""
    lines = [
        f"rate: {reply.get('events_per_s', 0):,.1f} events/s; "
        f"{reply.get('tail_clients', 0)} tail clients following"
    ]
    store = reply.get("store")
    if not store:
        return "\n".join([*lines, "store: none (this daemon has no database)"])
    worker = store.get("worker") or {}
    if worker.get("state") in ("stopped", "failed") and store.get("as_of") is None:
        lines.append(
            f"store: worker {worker['state']}; it starts when needed "
            f"({store.get('pending_events') or 0:,} events to load)"
        )
    elif store.get("open") is False:
        lines.append("store: not open yet (ingest goes on; events are loaded once it opens)")
    elif store.get("needs_rebuild"):
        lines.append("store: schema differs from this version; run `telemetryctl rebuild`")
    else:
        last = store.get("last_materialized")
        when = "never this run"
        if last:
            from datetime import UTC, datetime

            age = datetime.now(UTC) - datetime.fromisoformat(last)
            when = f"{max(0.0, age.total_seconds()):.0f} s ago ({last})"
        lines.append(
            f"store: {store.get('events') or 0:,} events materialized, "
            f"{_size(store.get('pending_bytes') or 0)} of journal pending, "
            f"last materialized {when}, database {_size(store.get('database_bytes') or 0)}"
        )
    if store.get("yielding_since"):
        lines.append(
            f"store: loading waits while ingest is busy (since {store['yielding_since']}, "
            f"{store.get('pending_events') or 0:,} events to load; store.yield-max)"
        )
    if worker.get("state") in ("stopped", "failed") and store.get("as_of"):
        lines.append(
            f"store worker: {worker['state']} (it starts when needed); figures as of "
            f"{store['as_of']}, {store.get('pending_events') or 0:,} events to load since"
        )
    if store.get("error"):
        lines.append(f"store error: {store['error']}")
    lines += _damage(store.get("salvaged") or [], store.get("bad_lines") or [])
    return "\n".join(lines)


def _damage(salvaged: list[dict[str, Any]], bad_lines: list[dict[str, Any]]) -> list[str]:
    """The lines about journal damage that loads met (status, rebuild): damaged
    segments salvaged, and lines that are no events (not JSON, or no object with an id
    and a type), left out."""
    lines = []
    for damaged in salvaged:
        kept = f"{damaged['kept_bytes']} bytes"
        if damaged.get("kept_events") is not None:  # (an older daemon does not say)
            kept += f" ({damaged['kept_events']} events)"
        lines.append(
            f"damaged segment: {damaged['segment']} ({damaged['error']}); its first "
            f"{kept} kept, the file moved to {damaged['quarantined']}"
        )
    for bad in bad_lines:
        count, shown = bad["count"], ", ".join(str(number) for number in bad["lines"])
        more = f" and {count - len(bad['lines'])} more" if count > len(bad["lines"]) else ""
        lines.append(
            f"journal lines left out: {bad['segment']} line{'s' if count > 1 else ''} "
            f"{shown}{more}, not events ({bad['error']})"
        )
    return lines


def _size(count: int) -> str:
    """Bytes for people: 0 B, 512 B, 1.5 kB, 23.4 MB."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


@cli.command()
@control_socket_option
@handle_errors
def flush(socket_path: str | None) -> None:
    """Wait until every event accepted so far is written, fsynced and in the database."""
    control.flush(socket_path or paths.resolve().control_socket)


@cli.command()
@control_socket_option
@handle_errors
def rebuild(socket_path: str | None) -> None:
    """Recreate the database from the journal (the daemon must be running).

    The journal is the source of truth: a rebuilt database gives the same answers.
    Prints the events the database holds now and held before; damage met in the
    journal (a damaged .gz segment salvaged, lines that are no events), by which the
    database may now hold fewer events, is named on stderr, as `status` names it.
    """
    reply = control.rebuild(socket_path or paths.resolve().control_socket)
    before = reply.events_before
    if before is None:
        click.echo(f"rebuilt: {reply.events} events")
    else:
        fewer = f": {before - reply.events} fewer" if reply.events < before else ""
        click.echo(f"rebuilt: {reply.events} events ({before} before{fewer})")
    for line in _damage(reply.salvaged, reply.bad_lines):
        click.echo(line, err=True)


@cli.command()
@click.argument("source", type=click.File("rb"))
@click.option(
    "--journal",
    is_flag=True,
    help="check journal lines (allows `received_at`, which producers may not set)",
)
def validate(source: Any, journal: bool) -> None:
    """Check a JSONL file of events; print `line N: <path>: <message>` per bad line.

    Exits 1 if any line is invalid. SOURCE is a path, or - for stdin.

    \b
    Example:
      telemetryctl validate events.jsonl
    """
    limits = Ingest()
    bad = 0
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        line = line.rstrip(b"\n")
        try:
            event = events.decode(line)
            problem = None
            if not journal:
                problem = events.check_producer_rules(
                    event,
                    line,
                    max_attrs_bytes=limits.max_attrs_bytes,
                    max_attrs_depth=limits.max_attrs_depth,
                )
            if len(line) > limits.max_line_bytes:
                problem = events.Invalid(
                    events.LINE_TOO_LONG,
                    f"line is longer than the limit of {limits.max_line_bytes} bytes",
                )
            if problem is not None:
                raise problem
        except events.Invalid as invalid:
            bad += 1
            click.echo(f"line {number}: {invalid.path}: {invalid.message}")
    if bad:
        sys.exit(1)


cli.add_command(service_group)
cli.add_command(config_group)
cli.add_command(gc)
cli.add_command(report_group)
cli.add_command(reports)
cli.add_command(hooks_group)
cli.add_command(hook_command)
cli.add_command(statusline_command)
cli.add_command(import_group)
cli.add_command(otel_group)
cli.add_command(pricing_command)
cli.add_command(reprice_command)
cli.add_command(trace_command)
cli.add_command(alerts_command)
cli.add_command(export_group)
