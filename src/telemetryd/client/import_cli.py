"""`telemetryctl import ...`: backfill usage from local transcripts (click layer).

The work is done by :mod:`telemetryd.client.importer`; ``cli.py`` registers this
group with ``cli.add_command(import_group)``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from click.core import ParameterSource

from telemetryd.client import import_pool, importer
from telemetryd.errors import TelemetryError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_REJECTED = 1


def _handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TelemetryError as exc:
            raise click.ClickException(str(exc)) from None

    return cast(F, wrapper)


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give a date or time, e.g. 2026-03-01 or 2026-03-01T12:00:00Z",
            param_hint="--since",
        ) from None


def _options(func: F, *, paths: bool = True) -> F:
    func = click.option(
        "--socket",
        "socket_path",
        envvar="TELEMETRYD_SOCKET",
        help="events socket (default: from TELEMETRYD_HOME / XDG)",
    )(func)
    func = click.option(
        "--rescan",
        is_flag=True,
        help="read every file, also those unchanged since the last import",
    )(func)
    func = click.option(
        "--jobs",
        type=click.IntRange(0, import_pool.MAX_READERS),
        help="reader processes for a big import (default: one per CPU, at most "
        f"{import_pool.MAX_READERS}, none on one CPU; 0: read in this process)",
    )(func)
    func = click.option(
        "--settle",
        type=click.IntRange(0),
        metavar="SECONDS",
        help="hold back the last request of a Claude Code or Gemini CLI file, and an "
        "OpenCode message not marked complete, in a file written in the last SECONDS "
        f"(default {importer.SETTLE_S}): it may still be streaming, and the next import "
        "takes it; 0 takes everything now",
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")(func)
    func = click.option(
        "--dry-run",
        is_flag=True,
        help="read and count, send nothing (totals per model; per day too with --json)",
    )(func)
    func = click.option(
        "--since",
        metavar="DATE",
        help="only requests at or after this UTC date or time (2026-03-01, 2026-03-01T12:00Z)",
    )(func)
    if paths:
        func = click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))(func)
    return func


def _number(n: float) -> str:
    return f"{n:,.0f}"


def _some(n: float, noun: str) -> str:
    """``n`` of ``noun``: "1 file", "2 files"."""
    return f"{_number(n)} {noun}{'' if n == 1 else 's'}"


MALFORMED_SHOWN = 10  # files with malformed lines named in the text summary


def _print_summary(summary: importer.Summary) -> None:
    s = summary
    verb = "would send" if s.dry_run else "sent"
    click.echo(
        f"{_some(s.files, 'file')} read ({s.files_unchanged} unchanged since the last import, "
        "skipped), "
        f"{_number(s.bytes)} bytes, {_number(s.lines)} lines, {s.malformed} malformed"
        + (
            f"; {_number(s.earlier)} events of the lines an earlier import sent, not sent again"
            if s.earlier
            else ""
        )
    )
    for where in s.malformed_files[:MALFORMED_SHOWN]:  # (--json lists them all)
        click.echo(f"  malformed in {where}")
    if len(s.malformed_files) > MALFORMED_SHOWN:
        click.echo(f"  and in {_some(len(s.malformed_files) - MALFORMED_SHOWN, 'more file')}")
    click.echo(
        f"{_some(s.requests, 'request')} ({_number(s.repeats)} repeated lines merged"
        + (f", {s.before_since} before --since" if s.before_since else "")
        + (
            f", {s.dropped_times} left out: their time is of a form ccusage does not read"
            if s.dropped_times
            else ""
        )
        + ")"
        + (
            f", {_number(s.held_back)} held back (their files were written in the last "
            "minutes, they may still be streaming: the next import takes them)"
            if s.held_back
            else ""
        )
        + (
            f", {_some(s.tool_calls, 'tool call')}, {_some(s.tool_results, 'tool result')}"
            f" ({_number(s.tool_errors)} failed), {_some(s.prompts, 'prompt')},"
            f" {_some(s.agents, 'sub-agent run')}"
            if s.tool_calls or s.tool_results or s.prompts or s.agents
            else ""
        )
        + (f", {_some(s.spans, 'span')}" if s.spans else "")
        + f"; {verb} {_number(s.sent if not s.dry_run else s.built())}"
        + (
            ""
            if s.dry_run
            else f": {s.accepted} new, {s.duplicates} already there, {s.rejected} rejected"
        )
        + f" in {s.elapsed_s:.1f} s"
    )
    if s.by_model:
        width = max(len(m) for m in s.by_model)
        click.echo(
            f"{'model':<{width}}  {'requests':>9}  {'input':>12}  {'output':>12}  "
            f"{'cache read':>14}  {'cache write':>13}  {'cost':>12}  note"
        )
        for model, t in sorted(s.by_model.items(), key=lambda item: -item[1].total):
            cost = t.cost_reported_usd + t.cost_computed_usd
            note = []
            if t.cost_reported_usd:
                note.append(f"${t.cost_reported_usd:,.2f} reported")
            if t.cost_computed_usd:
                note.append(f"${t.cost_computed_usd:,.2f} computed")
            if t.unpriced:
                note.append(f"{t.unpriced} requests without a price")
            click.echo(
                f"{model:<{width}}  {t.requests:>9,}  {t.input:>12,}  {t.output:>12,}  "
                f"{t.cache_read:>14,}  {t.cache_creation:>13,}  "
                f"{('$' + format(cost, ',.2f')) if cost else '-':>12}  {'; '.join(note)}"
            )
    for problem in s.rejections:
        click.echo(f"problem: {problem}", err=True)


def _run(
    agent: str,
    paths: tuple[Path, ...],
    since: str | None,
    dry_run: bool,
    as_json: bool,
    rescan: bool,
    socket_path: str | None,
    jobs: int | None,
    settle: int | None,
) -> None:
    with import_pool.Pool(jobs) as pool:
        summary = _import(agent, paths, since, dry_run, as_json, rescan, socket_path, settle, pool)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        _print_summary(summary)
    if not paths and not (summary.files or summary.files_unchanged):
        # (an override naming a directory that is not there, say: say where it looked)
        places = [
            f"{root}{'' if root.is_dir() else ' (does not exist)'}"
            for root in importer.roots(agent)
        ]
        click.echo(f"no {agent} files found in: {', '.join(places)}", err=True)
    if summary.rejected:
        sys.exit(EXIT_REJECTED)


def _import(
    agent: str,
    paths: tuple[Path, ...],
    since: str | None,
    dry_run: bool,
    as_json: bool,
    rescan: bool,
    socket_path: str | None,
    settle: int | None,
    pool: import_pool.Pool,
    exported: dict[str, list[float]] | None = None,
) -> importer.Summary:
    bar: Any = None

    def on_files(files: list[Path], total: int) -> None:
        nonlocal bar
        if sys.stderr.isatty() and not as_json and total:
            bar = click.progressbar(length=total, label=f"{len(files)} files", file=sys.stderr)
            bar.__enter__()

    def progress(n: int) -> None:
        if bar is not None:
            bar.update(n)

    try:
        summary = importer.run(
            agent,
            paths,
            since=_parse_since(since),
            dry_run=dry_run,
            rescan=rescan,
            socket_path=socket_path,
            progress=progress,
            on_files=on_files,
            pool=pool,
            settle=importer.SETTLE_S if settle is None else settle,
            exported=exported,
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    return summary


@click.group(
    "import",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},  # also when main.py runs it
)
@functools.partial(_options, paths=False)
@click.pass_context
@_handle_errors
def import_group(ctx: click.Context, /, **options: Any) -> None:
    """Backfill api_request events from agents' local session files.

    Claude Code transcripts, Codex rollouts, Gemini CLI chat recordings, GitHub
    Copilot CLI session events, OpenCode messages, Amp threads. With no
    agent named, imports every agent whose default location exists, one after the
    other (the options apply to each; --json prints one summary per agent).

    \b
    Examples:
      telemetryctl import
      telemetryctl import --dry-run --json
    """
    if ctx.invoked_subcommand is not None:
        # (given here, not by default or from the environment: TELEMETRYD_SOCKET)
        if any(ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE for name in options):
            raise click.UsageError(
                f"give the options after the agent: import {ctx.invoked_subcommand} ..."
            )
        return
    summaries = {}
    jobs = options.pop("jobs")
    # The store answers a question once it has loaded what came before it, which would
    # be the agents' events imported before. So Copilot goes first (its import asks which
    # of its sessions' model calls the store holds), and the Codex and Gemini CLI requests
    # it holds from their OpenTelemetry exports are asked for before any agent's import.
    order = sorted(importer.AGENTS, key=lambda agent: agent != "copilot")
    since, rescan = _parse_since(options["since"]), options["rescan"]
    with import_pool.Pool(jobs) as pool:  # the reader processes serve every agent
        exported = _exported(pool, since, rescan, options["socket_path"])
        for agent in order:
            if importer.found(agent):
                given = exported.get(agent)
                summaries[agent] = _import(agent, (), **options, pool=pool, exported=given)
    summaries = {agent: summaries[agent] for agent in importer.AGENTS if agent in summaries}
    if options["as_json"]:
        click.echo(json.dumps({a: s.as_dict() for a, s in summaries.items()}, indent=2))
    else:
        if not summaries:
            click.echo("no agent's files found")
        for agent, summary in summaries.items():
            click.echo(f"{agent}:")
            _print_summary(summary)
    if any(s.rejected for s in summaries.values()):
        sys.exit(EXIT_REJECTED)


def _exported(
    pool: import_pool.Pool, since: datetime | None, rescan: bool, socket_path: str | None
) -> dict[str, dict[str, list[float]]]:
    """The requests the store holds from Codex's and Gemini CLI's OTLP exports, of each
    of them with files to import (:func:`importer.stored_requests`). The store may have
    to start to answer, a few tenths of a second: the reader processes start meanwhile,
    and the price data loads (the imports' summaries use it)."""
    asked = [
        agent
        for agent in importer.EXPORTED_BY
        if importer.found(agent) and importer.has_new(agent, since, rescan)
    ]
    if not asked:
        return {}
    from concurrent.futures import ThreadPoolExecutor

    from telemetryd.adapters import pricing

    pool.start()
    with ThreadPoolExecutor(1, thread_name_prefix="stored-requests") as asking:
        pending = {a: asking.submit(importer.stored_requests, a, socket_path) for a in asked}
        pricing.configured().tier_starts()
        return {agent: found.result() for agent, found in pending.items()}


@import_group.command("claude-code")
@_options
@_handle_errors
def claude_code_command(**options: Any) -> None:
    """Import token usage and sessions from Claude Code transcripts.

    PATHS are files or directories of *.jsonl transcripts; by default
    <dir>/projects for each entry of CLAUDE_CONFIG_DIR (comma-separated) when it
    is set, else ~/.claude/projects and ~/.config/claude/projects. A response
    repeated over several lines (one per content block, or while it streamed)
    counts once, with its largest usage.
    Tool uses and their results, prompts (their length only) and sub-agent runs
    become the events the hooks send, with the same ids for tool uses and
    sub-agents. Running it again adds nothing that is already there.

    \b
    Examples:
      telemetryctl import claude-code
      telemetryctl import claude-code --since 2026-03-01 --dry-run --json
    """
    _run("claude-code", **options)


@import_group.command("codex")
@_options
@_handle_errors
def codex_command(**options: Any) -> None:
    """Import token usage from Codex rollouts.

    PATHS are files or directories of rollout-*.jsonl files; by default
    $CODEX_HOME/sessions and $CODEX_HOME/archived_sessions (CODEX_HOME: ~/.codex).
    Each token_count event counts once (re-emitted totals are skipped), with
    the model of its turn. Running it again adds nothing that is already there.

    \b
    Examples:
      telemetryctl import codex
      telemetryctl import codex ~/.codex/sessions/2026/03 --json
    """
    _run("codex", **options)


@import_group.command("gemini")
@_options
@_handle_errors
def gemini_command(**options: Any) -> None:
    """Import token usage from Gemini CLI chat recordings.

    PATHS are files or directories of session files (the older single-JSON
    session-*.json and the newer JSONL recordings); by default each directory of
    the comma-separated GEMINI_DATA_DIR, else ~/.gemini/tmp (its */chats). A
    message Gemini CLI wrote again (same id, once its tool calls were filled in)
    counts once. Input excludes cached input (cache read); thoughts are output.
    Running it again adds nothing that is already there.

    \b
    Examples:
      telemetryctl import gemini
      GEMINI_DATA_DIR=/backup/gemini/tmp telemetryctl import gemini --dry-run --json
    """
    _run("gemini", **options)


@import_group.command("copilot")
@_options
@_handle_errors
def copilot_command(**options: Any) -> None:
    """Import token usage from GitHub Copilot CLI session events and OpenTelemetry exports.

    PATHS are events.jsonl files, OpenTelemetry file exports or directories
    holding them; by default <dir>/session-state/*/events.jsonl and
    <dir>/otel/*.jsonl for COPILOT_HOME and COPILOT_CONFIG_DIR when set, else
    ~/.copilot, and the file COPILOT_OTEL_FILE_EXPORTER_PATH names. Each
    session.shutdown event counts once per model, what it adds to the shutdown
    before (shutdowns are running totals), or whole where a resumed process
    started its totals again (a CLI without the usage accounting); each chat span of an
    export is one request, with the id the same span sent over OTLP gets, and a
    shutdown whose calls are in an export, or in the store (sent live over OTLP),
    is left out. Input excludes cache reads and writes; reasoning is output.
    Running it again adds nothing that is already there.

    \b
    Examples:
      telemetryctl import copilot
      COPILOT_HOME=/backup/copilot telemetryctl import copilot --dry-run --json
      COPILOT_OTEL_FILE_EXPORTER_PATH=~/otel.jsonl telemetryctl import copilot
    """
    _run("copilot", **options)


@import_group.command("opencode")
@_options
@_handle_errors
def opencode_command(**options: Any) -> None:
    """Import token usage from OpenCode's stored messages.

    PATHS are OpenCode data directories, opencode*.db databases, message *.json
    files or directories of them; by default each directory of the comma-separated
    OPENCODE_DATA_DIR, else $XDG_DATA_HOME/opencode and ~/.local/share/opencode. In
    a data directory the database (opencode.db, else opencode-<channel>.db) is read,
    then storage/message/**/*.json; a message in both counts once. A cost OpenCode
    stored (above 0) is kept; reasoning is output. Running it again adds nothing
    that is already there.

    \b
    Examples:
      telemetryctl import opencode
      OPENCODE_DATA_DIR=/backup/opencode telemetryctl import opencode --dry-run --json
    """
    _run("opencode", **options)


@import_group.command("amp")
@_options
@_handle_errors
def amp_command(**options: Any) -> None:
    """Import token usage from Amp's thread files.

    PATHS are thread *.json files or directories holding them; by default
    <dir>/threads for each directory of the comma-separated AMP_DATA_DIR, else
    ~/.local/share/amp/threads. Each usage ledger event (or, in threads without a
    ledger, each assistant message's usage) is one request; credits are kept in
    attrs. Running it again adds nothing that is already there.

    \b
    Examples:
      telemetryctl import amp
      AMP_DATA_DIR=/backup/amp telemetryctl import amp --dry-run --json
    """
    _run("amp", **options)
