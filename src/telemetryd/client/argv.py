"""Option parsing for the commands that run before click is imported (send, query,
tail, hook): each needs only a loop over its arguments, and importing click would
cost more than the whole command."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class UsageError(Exception):
    """The command line is not one the command takes; the message says why."""


def arguments(argv: list[str]) -> Iterator[tuple[str, str, Callable[[], str]]]:
    """``(arg, option, value)`` per argument: ``option`` is ``--name`` without its
    ``=value``, and ``value()`` returns the option's value, from ``--name=value`` or
    from the next argument (consuming it). After ``--``, every argument is an operand:
    its ``option`` is ``""``."""
    args = iter(argv)
    for arg in args:
        if arg == "--":
            for operand in args:
                yield operand, "", _no_value
            return
        option, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")

        def value(option: str = option, eq: str = eq, inline: str = inline) -> str:
            if eq:
                return inline
            try:
                return next(args)
            except StopIteration:
                raise UsageError(f"{option} needs a value") from None

        yield arg, option, value


def _no_value() -> str:
    raise UsageError("an operand has no value")


MAX_SECONDS = 3600.0  # the longest timeout these commands take (the daemon's for queries)


def seconds(option: str, text: str) -> float:
    """``--timeout``'s value as seconds, 0 to :data:`MAX_SECONDS`; a UsageError naming
    the option otherwise (``nan`` and ``inf`` included: no deadline could come of them)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_SECONDS:  # (False for NaN too)
        raise UsageError(
            f"{option} expects seconds from 0 to {MAX_SECONDS:g}, got {text!r}"
        ) from None
    return value


def env_seconds(name: str, default: float, command: str) -> float:
    """The seconds in environment variable ``name``, else ``default``: also when they
    are not seconds, with a warning on stderr (a hook's events are not lost for it)."""
    import os
    import sys

    text = os.environ.get(name)
    if not text:
        return default
    try:
        return seconds(name, text)
    except UsageError as exc:
        sys.stderr.write(f"telemetryctl {command}: {exc}; using {default:g}\n")
        return default
