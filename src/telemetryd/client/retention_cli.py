"""`telemetryctl gc`: apply the journal's retention now (the daemon does the work)."""

from __future__ import annotations

import json

import click

from telemetryd import paths
from telemetryd.client import control
from telemetryd.client.cli_errors import handle_errors


@click.command()
@click.option("--dry-run", is_flag=True, help="only say what would be deleted and compressed")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option(
    "--socket",
    "socket_path",
    envvar="TELEMETRYD_CONTROL_SOCKET",
    help="control socket (default: from TELEMETRYD_HOME / XDG)",
)
@handle_errors
def gc(dry_run: bool, as_json: bool, socket_path: str | None) -> None:
    """Delete old journal segments (and their events), compress closed ones.

    Segments last written more than [retention] max-age-days ago go, and the oldest
    ones while the journal is over max-bytes, with their events in the database;
    other closed segments are gzipped (compress). Only segments already loaded into
    the database are touched, never the one being written. The daemon also does this
    every [retention] interval seconds.

    \b
    Examples:
      telemetryctl gc --dry-run
      telemetryctl gc
    """
    reply = control.gc(socket_path or paths.resolve().control_socket, dry_run)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    verb = ("would delete", "would compress") if dry_run else ("deleted", "compressed")
    for name in reply.deleted:
        click.echo(f"{verb[0]} {name}")
    for name in reply.compressed:
        click.echo(f"{verb[1]} {name}")
    if dry_run:
        click.echo(f"journal: {reply.bytes_before} bytes")
    else:
        click.echo(
            f"{len(reply.deleted)} segments deleted ({reply.events_deleted} events), "
            f"{len(reply.compressed)} compressed; journal "
            f"{reply.bytes_before} -> {reply.bytes_after} bytes"
        )
