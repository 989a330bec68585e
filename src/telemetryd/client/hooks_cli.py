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
# Agents whose hooks `hooks install` cannot write, and why (named in the error).
NOT_INSTALLABLE = {
    "codex": (
        "telemetryd does not write Codex's hooks (~/.codex/hooks.json, or [hooks] in its "
        "config.toml); add a command hook there that runs `telemetryctl hook codex` "
        "(Codex's hooks run commands only: there is no --http for it)"
    ),
}


def _handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TelemetryError as exc:
            raise click.ClickException(str(exc)) from None

    return cast(F, wrapper)


def _where_for(agents: tuple[str, ...]) -> Callable[[F], F]:
    """The AGENT argument (one of ``agents``) and the options that choose the settings file."""

    def decorate(func: F) -> F:
        return _where_options(click.argument("agent", type=click.Choice(agents))(func))

    return decorate


def _where_options(func: F) -> F:
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
    return func


_where = _where_for(AGENTS)
# install also accepts the agents it cannot install for, to say why.
_installable = _where_for((*AGENTS, *NOT_INSTALLABLE))


def _settings_path(user: bool, project: Path | None, local: bool) -> Path:
    if user and project is not None:
        raise click.UsageError("give --user or --project DIR, not both")
    if local and project is None:
        raise click.UsageError("--local goes with --project DIR")
    if project is not None:
        return claude_settings.project_settings(project, local)
    return claude_settings.user_settings()


def _also_installed(path: Path, project: Path | None) -> list[Path]:
    """The other settings files (the user's, the project's and its local ones; the
    current directory's without --project) that run our hooks too."""
    directory = project if project is not None else Path(".")
    found = []
    for other in (
        claude_settings.user_settings(),
        claude_settings.project_settings(directory),
        claude_settings.project_settings(directory, local=True),
    ):
        try:
            if other.resolve() == path.resolve() or not other.exists():
                continue
            events = claude_settings.installed(other)
        except (OSError, claude_settings.SettingsError):
            continue  # (`hooks status` says what is wrong with it)
        if any(event != claude_settings.STATUSLINE_KEY for event in events):
            found.append(other)
    return found


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
@_installable
@click.option(
    "--http",
    "use_http",
    is_flag=True,
    help="post the payloads to the daemon's HTTP listener (no process per event); "
    "SessionStart keeps its command hook",
)
@click.option(
    "--endpoint",
    metavar="URL",
    envvar="TELEMETRYD_HTTP_ENDPOINT",
    help="with --http: the listener's base URL (default: from [http] address)",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="with --http: the bearer token's file (default: http-token in the state directory)",
)
@click.option("--context", is_flag=True, help="at SessionStart, give the agent a usage summary")
@click.option("--prompt-text", is_flag=True, help="record prompt text (default: length only)")
@click.option(
    "--statusline",
    is_flag=True,
    help="also set the status line to `telemetryctl statusline` (an existing one is kept)",
)
@click.option(
    "--replace-statusline",
    is_flag=True,
    help="with --statusline: replace an existing status line that is not telemetryd's",
)
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
    use_http: bool,
    endpoint: str | None,
    token_file: str | None,
    context: bool,
    prompt_text: bool,
    statusline: bool,
    replace_statusline: bool,
    executable: str | None,
) -> None:
    """Add telemetryd's hooks to Claude Code's settings.json; safe to run again.

    Other hooks and settings are kept as they are; the file is backed up first.
    Every hook event runs `telemetryctl hook claude-code`, which sends its
    events to telemetryd (or spools them while the daemon is down). A
    TELEMETRYD_HOME set when you install goes into the commands: Claude Code
    runs them in its own environment, which may not have it.

    With --http, Claude Code posts each payload to the daemon's HTTP listener
    instead (no process per event; nothing is spooled while the daemon is
    down). SessionStart allows command hooks only and keeps one. The hooks
    read the token from TELEMETRYD_HTTP_TOKEN, which install puts in the
    settings' env block, making the file 0600; a project's committed
    settings.json gets no token: set the variable elsewhere (see the message).

    With --statusline, Claude Code's status line runs `telemetryctl
    statusline` (cost of the session, the day and the 5-hour window, context
    and rate-limit use); a status line of your own is kept unless you add
    --replace-statusline. Uninstall removes the status line only if it is
    telemetryd's, and puts back the one --replace-statusline replaced.

    \b
    Examples:
      telemetryctl hooks install claude-code
      telemetryctl hooks install claude-code --statusline
      telemetryctl hooks install claude-code --http
      telemetryctl hooks install claude-code --project . --dry-run
    """
    if agent in NOT_INSTALLABLE:
        raise click.UsageError(f"cannot install {agent} hooks: {NOT_INSTALLABLE[agent]}")
    if not use_http and (endpoint is not None or token_file is not None):
        raise click.UsageError("--endpoint and --token-file go with --http")
    if use_http and prompt_text:
        raise click.UsageError(
            "--prompt-text works with command hooks only (the http endpoint records prompt "
            "length, as `telemetryctl hook` does by default)"
        )
    if replace_statusline and not statusline:
        raise click.UsageError("--replace-statusline goes with --statusline")
    path = _settings_path(user, project, local)
    from telemetryd import paths

    home = paths.home_dir()  # a TELEMETRYD_HOME set here goes into the commands
    handler = claude_settings.command(
        executable, context=context, prompt_text=prompt_text, home=home
    )
    status = None
    if statusline:
        status = claude_settings.StatusLine(
            claude_settings.statusline_command(executable, home), replace=replace_statusline
        )
    http = None
    if use_http:
        from telemetryd.client import otel_setup

        where = otel_setup.resolve(endpoint=endpoint, token_file=token_file)
        # A project's settings.json is meant to be committed: never put the token there.
        committed = project is not None and not local
        http = claude_settings.HttpHook(
            where.url(claude_settings.HTTP_PATH), None if committed else where.token
        )
    replaced = None
    if status is not None and status.replace and path.exists():
        replaced = claude_settings.other_statusline(claude_settings.load(path))
    change = claude_settings.install(path, handler, http=http, statusline=status, dry_run=dry_run)
    _report(change, dry_run, "installed")
    if replaced is not None:
        if not dry_run:
            _replaced_statuslines(path, replaced)
        verb = "would replace" if dry_run else "replaced"
        click.echo(
            f"{verb} the status line {_shown(replaced)}; `hooks uninstall` puts it back",
            err=True,
        )
    for other in _also_installed(path, project):
        click.echo(
            f"warning: telemetryd's hooks are also in {other}; Claude Code runs the hooks of "
            "every settings file, so events without an id of their own (session start and "
            "end, prompts, stops) may be recorded twice: keep one (`telemetryctl hooks "
            "status claude-code` lists them, `hooks uninstall` takes them out)",
            err=True,
        )
    if change.kept_statusline is not None:
        click.echo(
            f"kept the existing status line {_shown(change.kept_statusline)}; "
            "add --replace-statusline to use telemetryd's",
            err=True,
        )
    if http is not None:
        _report_token(change, http, dry_run, token_file)


def _report_token(
    change: claude_settings.Change,
    http: claude_settings.HttpHook,
    dry_run: bool,
    token_file: str | None,
) -> None:
    name = claude_settings.TOKEN_ENV
    if http.token is not None:
        verb = "would be" if dry_run else "is"
        click.echo(
            f"the token {verb} in the env block of {change.path} ({name}); "
            f"the file {verb} private (0600) since it holds the token"
        )
        return
    from telemetryd import paths

    source = token_file or paths.resolve().http_token_file
    click.echo(
        f"{change.path} is a project's shared settings: the token is not written there.\n"
        f"Claude Code must get {name} from elsewhere, one of:\n"
        f"  telemetryctl hooks install claude-code --http --project DIR --local   "
        f"(settings.local.json, not committed)\n"
        f'  "env": {{"{name}": "..."}} in ~/.claude/settings.json (keep it 0600)\n'
        f'  export {name}="$(cat {source})"   before starting claude',
        err=True,
    )


@hooks_group.command()
@_where
@_handle_errors
def uninstall(agent: str, dry_run: bool, user: bool, project: Path | None, local: bool) -> None:
    """Remove telemetryd's hooks and status line from Claude Code's settings.json
    (others stay).

    \b
    Example:
      telemetryctl hooks uninstall claude-code
    """
    path = _settings_path(user, project, local)
    kept = _replaced_statuslines(path)
    change = claude_settings.uninstall(path, dry_run=dry_run, restore=kept)
    _report(change, dry_run, "uninstalled")
    if change.restored_statusline:
        if not dry_run:
            _replaced_statuslines(path, None)
        verb = "would put" if dry_run else "put"
        click.echo(f"{verb} back the status line {_shown(kept)}", err=True)


def _shown(entry: Any) -> str:
    return f"({entry.get('command', entry) if isinstance(entry, dict) else entry})"


_UNSET: Any = object()


def _replaced_statuslines(path: Path, entry: Any = _UNSET) -> Any:
    """The status line ``--replace-statusline`` replaced in the settings at ``path``, as
    kept in the state directory (``replaced-statuslines.json``) for ``hooks uninstall``
    to put back; with ``entry``, keep that instead (None: forget it)."""
    import json

    from telemetryd import paths

    store = Path(paths.resolve().state_dir) / "replaced-statuslines.json"
    try:
        kept = json.loads(store.read_text(encoding="utf-8"))
        if not isinstance(kept, dict):
            kept = {}
    except (OSError, ValueError):
        kept = {}
    key = str(path.resolve())
    if entry is _UNSET:
        return kept.get(key)
    if entry is None:
        kept.pop(key, None)
    else:
        kept[key] = entry
    store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    store.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
    return entry


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


@click.command(
    "statusline",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def statusline_command(args: tuple[str, ...]) -> None:
    """Print Claude Code's status line from its status JSON on stdin (see
    `telemetryctl statusline --help`)."""
    import sys

    from telemetryd.client.statusline import main

    sys.exit(main(list(args)))
