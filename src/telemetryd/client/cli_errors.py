"""Where the click commands turn a TelemetryError into a message and an exit status."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

from telemetryd.errors import DaemonBusy, DaemonUnavailable, StoreUnavailable, TelemetryError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_UNAVAILABLE = 3  # neither the daemon nor the database answers (as `telemetryctl query`)


class Loaded(Protocol):
    """What a read from the daemon or, while it is stopped, the database file gives."""

    from_file: bool
    warning: str | None


T = TypeVar("T", bound=Loaded)


def message(exc: TelemetryError) -> str:
    """What went wrong, for people: the daemon's absence said as such."""
    if isinstance(exc, DaemonUnavailable) and not isinstance(exc, DaemonBusy):
        return f"telemetryd is not running: {exc}"
    return str(exc)


def handle_errors(func: F) -> F:
    """Exit 1 with ``Error: <message>`` for a TelemetryError (click's own exit status)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TelemetryError as exc:
            raise click.ClickException(message(exc)) from None

    return wrapper  # type: ignore[return-value]


def load_or_exit(load: Callable[[], T]) -> T:
    """``load()``'s result (a report, traces), with its warnings on stderr; the daemon
    and the database being away exits with EXIT_UNAVAILABLE, as `telemetryctl query`
    does, and any other TelemetryError with ``Error: <message>``."""
    try:
        loaded = load()
    except (DaemonUnavailable, StoreUnavailable) as exc:  # DaemonBusy included
        where = "the database cannot be opened: " if isinstance(exc, StoreUnavailable) else ""
        click.echo(f"Error: {where}{message(exc)}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except TelemetryError as exc:
        raise click.ClickException(message(exc)) from None
    if loaded.from_file:
        click.echo(
            "warning: telemetryd is not running; read the database file directly, "
            "so events not yet materialized are missing",
            err=True,
        )
    if loaded.warning:
        click.echo(f"warning: {loaded.warning}", err=True)
    return loaded
