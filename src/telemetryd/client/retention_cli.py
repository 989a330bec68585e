"""`telemetryctl gc`: apply the journal's retention now (the daemon does the work)."""

from __future__ import annotations

import json
import sys

import click

from telemetryd import paths
from telemetryd.client import control
from telemetryd.client.cli_errors import handle_errors

EXIT_FAILED = 1  # a segment could not be compacted or compressed (a full disk, say)


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

    Segments last written more than [retention] max-age-days ago keep only their usage
    (model requests, which reports total: kept for good unless usage-max-age-days is
    set), and the oldest segments go while the journal is over max-bytes, usage and
    all (with a warning), their events with them in the database; other closed
    segments are gzipped (compress). Only segments already loaded into the database
    are touched, never the one being written. The daemon also does this every
    [retention] interval seconds. Exit status 1 when a segment could not be compacted
    or compressed (a full disk, say: each is named on stderr).

    \b
    Examples:
      telemetryctl gc --dry-run
      telemetryctl gc
    """
    reply = control.gc(socket_path or paths.resolve().control_socket, dry_run)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        if reply.failed:
            sys.exit(EXIT_FAILED)
        return
    verb = ("would ", "") if dry_run else ("", "d")
    for name in reply.deleted:
        click.echo(f"{verb[0]}delete{verb[1]} {name}")
    for name in reply.compacted:
        click.echo(f"{'would keep' if dry_run else 'kept'} only the usage of {name}")
    for name in reply.compressed:
        click.echo(f"{verb[0]}compress{'ed' if verb[1] else ''} {name}")
    if dry_run:
        if not (reply.deleted or reply.compacted or reply.compressed):
            click.echo("nothing to delete, compact or compress now")
        click.echo(f"journal: {reply.bytes_before} bytes")
    else:
        click.echo(
            f"{len(reply.deleted)} segments deleted, {len(reply.compacted)} compacted to "
            f"their usage ({reply.events_deleted} events deleted), "
            f"{len(reply.compressed)} compressed; journal "
            f"{reply.bytes_before} -> {reply.bytes_after} bytes"
        )
    if reply.warning:
        click.echo(f"warning: {reply.warning}", err=True)
    for failure in reply.failed:
        click.echo(f"could not {failure} (tried again at the next run)", err=True)
    if reply.failed:
        sys.exit(EXIT_FAILED)
