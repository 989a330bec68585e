"""`telemetryctl hooks ...`: put telemetryd's hooks into an agent's settings (click layer).

The work is done by :mod:`telemetryd.adapters.claude_settings`; ``cli.py``
registers this group with ``cli.add_command(hooks_group)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from telemetryd.adapters import claude_settings
from telemetryd.errors import TelemetryError

F = TypeVar("F", bound=Callable[..., Any])
AGENTS = ("claude-code",)


def _handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TelemetryError as exc:
            raise click.ClickException(str(exc)) from None

    return cast(F, wrapper)


def _where(func: F) -> F:
    func = click.option(
        "--local",
        is_flag=True,
        help="with --project: .claude/settings.local.json (not committed) instead",
    )(func)
    func = click.option(
        "--project",
        "project",
        type=click.Path(file_okay=False, path_type=Path),
        help="the project's .claude/settings.json in DIR",
        metavar="DIR",
    )(func)
    func = click.option(
        "--user",
        "user",
        is_flag=True,
        help="~/.claude/settings.json, or $CLAUDE_CONFIG_DIR/settings.json (the default)",
    )(func)
    func = click.option(
        "--dry-run", is_flag=True, help="print the change as a diff; write nothing"
    )(func)
    func = click.argument("agent", type=click.Choice(AGENTS))(func)
    return func


def _settings_path(user: bool, project: Path | None, local: bool) -> Path:
    if user and project is not None:
        raise click.UsageError("give --user or --project DIR, not both")
    if local and project is None:
        raise click.UsageError("--local goes with --project DIR")
    if project is not None:
        return claude_settings.project_settings(project, local)
    return claude_settings.user_settings()


def _report(change: claude_settings.Change, dry_run: bool, verb: str) -> None:
    if not change.changed:
        click.echo(f"{change.path}: already {verb}; nothing to do")
        return
    if dry_run:
        click.echo(change.diff(), nl=False)
        return
    click.echo(f"{change.path}: {verb}")
    if change.backup is not None:
        click.echo(f"backup of the previous file: {change.backup}")


@click.group("hooks")
def hooks_group() -> None:
    """Record an agent's activity through its hooks (Claude Code)."""


@hooks_group.command()
@_where
@click.option("--context", is_flag=True, help="at SessionStart, give the agent a usage summary")
@click.option("--prompt-text", is_flag=True, help="record prompt text (default: length only)")
@click.option(
    "--command",
    "executable",
    metavar="PATH",
    help="the telemetryctl the hooks run (default: this one, by absolute path)",
)
@_handle_errors
def install(
    agent: str,
    dry_run: bool,
    user: bool,
    project: Path | None,
    local: bool,
    context: bool,
    prompt_text: bool,
    executable: str | None,
) -> None:
    """Add telemetryd's hooks to Claude Code's settings.json; safe to run again.

    Other hooks and settings are kept as they are; the file is backed up first.
    Every hook event runs `telemetryctl hook claude-code`, which sends its
    events to telemetryd (or spools them while the daemon is down).

    \b
    Examples:
      telemetryctl hooks install claude-code
      telemetryctl hooks install claude-code --project . --dry-run
    """
    path = _settings_path(user, project, local)
    handler = claude_settings.command(executable, context=context, prompt_text=prompt_text)
    _report(claude_settings.install(path, handler, dry_run=dry_run), dry_run, "installed")


@hooks_group.command()
@_where
@_handle_errors
def uninstall(agent: str, dry_run: bool, user: bool, project: Path | None, local: bool) -> None:
    """Remove telemetryd's hooks from Claude Code's settings.json (others stay).

    \b
    Example:
      telemetryctl hooks uninstall claude-code
    """
    path = _settings_path(user, project, local)
    _report(claude_settings.uninstall(path, dry_run=dry_run), dry_run, "uninstalled")


@hooks_group.command()
@click.argument("agent", type=click.Choice(AGENTS))
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    metavar="DIR",
    help="also look at this project's settings",
)
@_handle_errors
def status(agent: str, project: Path) -> None:
    """Show which settings files run telemetryd's hooks, for which events.

    \b
    Example:
      telemetryctl hooks status claude-code
    """
    paths = [
        claude_settings.user_settings(),
        claude_settings.project_settings(project),
        claude_settings.project_settings(project, local=True),
    ]
    for path in paths:
        events = claude_settings.installed(path) if path.exists() else []
        state = ", ".join(events) if events else "not installed"
        click.echo(f"{path}: {state}")


@click.command(
    "hook",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def hook_command(args: tuple[str, ...]) -> None:
    """Send the events of one agent hook payload read on stdin (see `telemetryctl hook --help`)."""
    import sys

    from telemetryd.client.hook import main

    sys.exit(main(list(args)))
