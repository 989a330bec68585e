"""`telemetryctl service ...`: install telemetryd as a user service (click layer only).

The work is done by :mod:`telemetryd.client.service`; the lead's ``cli.py``
registers this group with ``cli.add_command(service_group)``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from telemetryd.client import service
from telemetryd.errors import TelemetryError

F = TypeVar("F", bound=Callable[..., Any])


def _handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TelemetryError as exc:
            raise click.ClickException(str(exc)) from None

    return cast(F, wrapper)


def _platform_option(func: F) -> F:
    return click.option(
        "--platform",
        type=click.Choice(service.PLATFORMS),
        default=None,
        help="render for this platform (default: this machine's; with --dry-run only)",
    )(func)


def _dry_run_option(func: F) -> F:
    return click.option(
        "--dry-run", is_flag=True, help="print the files and commands; write and run nothing"
    )(func)


def _resolve_platform(platform: str | None, dry_run: bool) -> service.Platform:
    here = service.current_platform() if platform is None or not dry_run else None
    if platform is not None and here is not None and platform != here:
        raise click.UsageError(f"--platform {platform} works only with --dry-run on this machine")
    return cast(service.Platform, platform or here)


def _carry_out(plan: service.Plan, dry_run: bool) -> None:
    if not plan.steps and not plan.unchanged:
        click.echo("nothing to do")
        return
    if dry_run:
        click.echo(plan.describe(), nl=False)
        return
    for path in plan.unchanged:
        click.echo(f"==> unchanged: {path}")
    for step in plan.steps:
        click.echo(service.describe(step))
        service.run_step(step)


@click.group("service")
def service_group() -> None:
    """Run telemetryd as a user service (systemd on Linux, launchd on macOS)."""


@service_group.command()
@_dry_run_option
@_platform_option
@_handle_errors
def install(dry_run: bool, platform: str | None) -> None:
    """Install and start the service with socket activation; safe to run again.

    Writes the systemd user units (~/.config/systemd/user) or the LaunchAgent
    (~/Library/LaunchAgents) for the installed `telemetryd` and the current
    state paths (TELEMETRYD_HOME is passed on), then enables and starts them.

    \b
    Examples:
      telemetryctl service install --dry-run
      telemetryctl service install
    """
    plan = service.plan_install(_resolve_platform(platform, dry_run))
    _carry_out(plan, dry_run)


@service_group.command()
@click.option("--purge", is_flag=True, help="also delete the collected data (the state directory)")
@click.option("--yes", "-y", is_flag=True, help="do not ask before --purge deletes data")
@_dry_run_option
@_platform_option
@_handle_errors
def uninstall(purge: bool, yes: bool, dry_run: bool, platform: str | None) -> None:
    """Stop the service and remove its unit files or plist; the data stays unless --purge.

    \b
    Examples:
      telemetryctl service uninstall
      telemetryctl service uninstall --purge --yes
    """
    plan = service.plan_uninstall(_resolve_platform(platform, dry_run), purge=purge)
    if plan.data_removed and not dry_run and not yes:
        doomed = " and ".join(plan.data_removed)
        click.confirm(f"Delete {doomed} with all the telemetry collected there?", abort=True)
    _carry_out(plan, dry_run)


@service_group.command()
@_handle_errors
def status() -> None:
    """Show what the service manager says about telemetryd (exit status passed through).

    \b
    Example:
      telemetryctl service status
    """
    sys.exit(service.passthrough(service.status_argv(service.current_platform())))


@service_group.command()
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines")
@click.option("--lines", "-n", type=int, default=None, help="how many recent lines")
@_handle_errors
def logs(follow: bool, lines: int | None) -> None:
    """Print the daemon's log (the user journal, or the LaunchAgent's log file).

    \b
    Example:
      telemetryctl service logs -f
    """
    argv = service.logs_argv(service.current_platform(), follow=follow, lines=lines)
    sys.exit(service.passthrough(argv))
