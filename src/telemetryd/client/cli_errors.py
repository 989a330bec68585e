"""Where the click commands turn a TelemetryError into a message and an exit status."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from telemetryd.errors import DaemonBusy, DaemonUnavailable, TelemetryError

F = TypeVar("F", bound=Callable[..., Any])


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
