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
    from the next argument (consuming it)."""
    args = iter(argv)
    for arg in args:
        option, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")

        def value(option: str = option, eq: str = eq, inline: str = inline) -> str:
            if eq:
                return inline
            try:
                return next(args)
            except StopIteration:
                raise UsageError(f"{option} needs a value") from None

        yield arg, option, value


def seconds(option: str, text: str) -> float:
    """``--timeout``'s value as seconds; a UsageError naming the option otherwise."""
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{option} expects seconds, got {text!r}") from None
