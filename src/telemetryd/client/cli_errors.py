"""Where the click commands turn a TelemetryError into a message and an exit status."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

from telemetryd.client import fetch
from telemetryd.errors import DaemonBusy, DaemonUnavailable, TelemetryError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_UNAVAILABLE = fetch.EXIT_UNAVAILABLE
message = fetch.message


class Loaded(Protocol):
    """What a read from the daemon or, while it is stopped, the database file gives."""

    from_file: bool
    warning: str | None


T = TypeVar("T", bound=Loaded)


def handle_errors(func: F) -> F:
    """Exit 1 with ``Error: <message>`` for a TelemetryError (click's own exit status);
    3 (EXIT_UNAVAILABLE) when the daemon is not running or too busy to answer, as for
    `status`, `query`, `report` and `tail`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (DaemonUnavailable, DaemonBusy) as exc:
            click.echo(f"Error: {message(exc)}", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        except TelemetryError as exc:
            raise click.ClickException(message(exc)) from None

    return wrapper  # type: ignore[return-value]


def load_or_exit(load: Callable[[], T]) -> T:
    """``load()``'s result (a report, traces), with its warnings on stderr; the daemon
    and the database being away exits with EXIT_UNAVAILABLE, as `telemetryctl query`
    does, and any other TelemetryError with ``Error: <message>``
    (:func:`telemetryd.client.fetch.failure`)."""
    try:
        loaded = load()
    except TelemetryError as exc:
        code, line = fetch.failure(exc)
        if code != EXIT_UNAVAILABLE:
            raise click.ClickException(message(exc)) from None
        click.echo(line, err=True)
        sys.exit(code)
    for line in fetch.notices(loaded.from_file, loaded.warning):
        click.echo(line, err=True)
    return loaded
