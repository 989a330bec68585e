"""`telemetryctl trace`: a trace's span tree (click layer over :mod:`telemetryd.client.traces`).

``cli.py`` registers it with ``cli.add_command(trace_command)``.
"""

from __future__ import annotations

import sys

import click

from telemetryd.client.cli_errors import load_or_exit

DEEP = 100  # spans this deep or deeper: --json prints on one line
EXIT_NOT_FOUND = 1  # no event has this trace id (no traced event has this session id)


@click.command("trace")
@click.argument("trace_id", required=False)
@click.option("--session", "session_id", metavar="ID", help="every trace of this session")
@click.option(
    "--socket",
    "socket_path",
    envvar="TELEMETRYD_CONTROL_SOCKET",
    help="control socket (default: from TELEMETRYD_HOME / XDG)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON: each trace as a nested tree")
def trace_command(
    trace_id: str | None, session_id: str | None, socket_path: str | None, as_json: bool
) -> None:
    """Print the span tree of trace TRACE_ID, or of every trace of a session.

    One line per span, children under their parent (siblings by start time): the
    span's name (and model), its duration, the tokens and cost of its own model
    request (the api_request with its span id; a parent does not add up its
    children), and ✓ or ✗ with the error. Events without a span id follow the
    tree; the last line totals every model request of the trace. `$?` is a cost the
    price table does not know, `+` a sum that leaves such a request out.

    With --session, each trace that has an event of the session, by start time.
    --json prints {"traces": [...]}: per trace its spans as a tree (children
    nested), the events without a span, and the totals; tokens and cost per span
    under "usage" (null without a model request; its cost_usd null when no request
    has a price). A tree 100 spans deep or deeper prints on one line.

    With the daemon stopped, the database file is read directly (a warning says
    that recent events may be missing). Exit status: 0 shown; 1 no such trace (or
    no traced event in the session), or the query failed; 2 usage error; 3 neither
    the daemon nor the database is available (or it cannot be opened), or the
    daemon is too busy.

    \b
    Examples:
      telemetryctl trace 4bf92f3577b34da6a3ce929d0e0e4736
      telemetryctl trace --session 3f1c2a9e --json
    """
    if (trace_id is None) == (session_id is None):
        raise click.UsageError("give a TRACE_ID or --session ID (one of them)")
    from telemetryd.client import traces

    result = load_or_exit(lambda: traces.load(trace_id, session_id, socket_path))
    if not result.traces:
        what = f"trace {trace_id}" if trace_id else f"trace with an event of session {session_id}"
        click.echo(f"Error: no {what} in the database", err=True)
        sys.exit(EXIT_NOT_FOUND)
    if as_json:
        body: dict[str, object] = {"traces": [traces.trace_dict(t) for t in result.traces]}
        if session_id is not None:
            body = {"session_id": session_id, **body}
        deepest = max((span.depth for found in result.traces for span in found.spans()), default=0)
        # (indented, a chain of thousands of spans would print gigabytes of spaces)
        click.echo(traces.json_text(body, indent=2 if deepest < DEEP else None))
        return
    for n, found in enumerate(result.traces):
        if n:
            click.echo("")
        click.echo("\n".join(traces.render(found)))
    if len(result.traces) > 1:
        total = traces.Usage()
        for found in result.traces:
            total.merge(found.totals)
        click.echo(
            f"\nall {len(result.traces)} traces: {total.requests} requests, "
            f"{total.input_tokens:,} input, {total.output_tokens:,} output, "
            f"{total.cache_read_tokens:,} cache read, {total.cache_creation_tokens:,} "
            f"cache write tokens, {traces.cost_text(total)}"
        )
