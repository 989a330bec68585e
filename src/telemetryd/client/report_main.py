"""`telemetryctl report daily|weekly|monthly|session|blocks`, before click is imported.

A report answered by a warm store worker takes tens of milliseconds; importing click
and the rest of the CLI would cost more than that again. ``client/main.py`` hands a
report's command line here first. What this module understands, it runs with the
same API, checks and output as the click command (:mod:`telemetryd.client.report_cli`):
the options of :data:`SPECS`, each as ``--name value``, ``--name=value`` or
``-x value`` (flags alone), values that pass the click command's own checks (a date
as :func:`reports.parse_date` reads it, a time zone :func:`reports.check_zone`
knows, one of the choices), and ``TELEMETRYD_TIMEZONE`` / ``TELEMETRYD_CONTROL_SOCKET``
as click reads them (an empty value is no value). Everything else, ``--help``,
a bad value, a cluster of short options (``-bj``), a value attached to a short
option (``-zUTC``) or a value that looks like an option, goes to click, which
prints its help or its error: :func:`main` returns None for those.

The output is the click command's byte for byte: both print through
:func:`reports.emit` / :func:`blocks.emit`, the load's warnings and failures are
worded by :mod:`telemetryd.client.fetch` for both, and :func:`echo` writes as
``click.echo`` does (a newline added, flushed, ANSI escape sequences taken out when
the stream is not a terminal). tests/test_report_main.py holds the two paths to the
same bytes on a real daemon, and :data:`SPECS` to the click command's options.

Import-light like the query path: no click, msgspec, duckdb, json or dataclasses.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

    # Per command, the spellings of its options: (the click parameter's name, and FLAG,
    # TEXT or the choices). The click command declares the same (the tests check).
    Spec = dict[str, tuple[str, str | tuple[str, ...]]]

FLAG = "flag"  # an option without a value
TEXT = "text"  # an option whose value is any text
FORMATS = ("table", "json", "csv", "tsv", "markdown")
DIMENSIONS = ("model", "agent", "project", "source")
WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
ENVVARS = {"timezone": "TELEMETRYD_TIMEZONE", "socket_path": "TELEMETRYD_CONTROL_SOCKET"}


def _spec(*options: tuple[str, str | None, str, str | tuple[str, ...]]) -> Spec:
    spec: Spec = {}
    for long, short, name, kind in options:
        spec[long] = (name, kind)
        if short is not None:
            spec[short] = (name, kind)
    return spec


_SPAN = (
    ("--since", "-s", "since", TEXT),
    ("--until", "-u", "until", TEXT),
    ("--timezone", "-z", "timezone", TEXT),
)
_GROUPING = (
    ("--by", None, "by", DIMENSIONS),
    ("--source", None, "source", TEXT),
    ("--breakdown", "-b", "breakdown", FLAG),
)
_OUTPUT = (
    ("--json", "-j", "as_json", FLAG),
    ("--format", "-f", "fmt", FORMATS),
    ("--socket", None, "socket_path", TEXT),
)
_PERIOD = (*_SPAN, *_GROUPING, *_OUTPUT)
SPECS: dict[str, Spec] = {
    "daily": _spec(*_PERIOD),
    "weekly": _spec(*_PERIOD, ("--start-of-week", "-w", "start_of_week", WEEKDAYS)),
    "monthly": _spec(*_PERIOD),
    "session": _spec(*_PERIOD),
    "blocks": _spec(*_SPAN, ("--active", "-a", "active", FLAG), *_OUTPUT),
}


class Fallback(Exception):
    """This command line is click's to run (or to refuse)."""


def parse(kind: str, argv: list[str]) -> dict[str, Any]:
    """The click parameters ``argv`` gives the ``kind`` command, as click would pass
    them (before the callbacks: dates and zones are still text); Fallback when click
    must see it."""
    spec = SPECS[kind]
    values: dict[str, Any] = {}
    args = iter(argv)
    for arg in args:
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        found = spec.get(name)
        if found is None:
            raise Fallback(arg)
        param, what = found
        if what == FLAG:
            if eq:
                raise Fallback(arg)
            values[param] = True
            continue
        value = inline if eq else next(args, None)
        if value is None or (not eq and value.startswith("-")):
            raise Fallback(arg)
        if isinstance(what, tuple) and value not in what:
            raise Fallback(arg)
        values[param] = value
    for param, variable in ENVVARS.items():
        if param not in values and os.environ.get(variable):
            values[param] = os.environ[variable]
    return values


def options(kind: str, values: dict[str, Any]) -> tuple[Any, str]:
    """The report's options and its format, checked as the click callbacks check them;
    Fallback where they would refuse."""
    from telemetryd.client import reports

    try:
        since = None if "since" not in values else reports.parse_date(values["since"])
        until = None if "until" not in values else reports.parse_date(values["until"])
        zone = values.get("timezone")
        zone = reports.local_zone() if zone is None else reports.check_zone(zone)
    except ValueError as exc:
        raise Fallback(str(exc)) from None
    if since is not None and until is not None and since > until:
        raise Fallback("--since is after --until")  # (click's callback says so)
    fmt = "json" if values.get("as_json") else values.get("fmt", "table")
    if kind == "blocks":
        from telemetryd.client import blocks

        return blocks.Options(zone, since, until, bool(values.get("active"))), fmt
    picked = reports.Options(
        kind=kind,
        timezone=zone,
        since=since,
        until=until,
        by=values.get("by"),
        source=values.get("source"),
        week_start=values.get("start_of_week") or "sunday",
    )
    return picked, fmt


def echo(text: str, err: bool = False) -> None:
    """``click.echo(text, err=err)``: a newline added, ANSI escape sequences taken out
    when the stream is not a terminal, flushed."""
    stream: TextIO = sys.stderr if err else sys.stdout
    if "\x1b" in text and not _isatty(stream):
        import re  # only for text with an escape in it

        text = re.sub(r"\033\[[0-?]*[ -/]*[@-~]", "", text)  # click's _ansi_re
    stream.write(text + "\n")
    stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except Exception:
        return False


def run(kind: str, argv: list[str]) -> int:
    """Run ``report KIND ARGV``; its exit status. Fallback before anything is printed
    when click must run it."""
    from telemetryd.client import fetch
    from telemetryd.errors import TelemetryError

    values = parse(kind, argv)
    picked, fmt = options(kind, values)
    socket_path = values.get("socket_path")
    try:
        if kind == "blocks":
            from telemetryd.client import blocks

            report: Any = blocks.load(picked, socket_path)
        else:
            from telemetryd.client import reports

            report = reports.load(picked, socket_path)
    except TelemetryError as exc:
        code, line = fetch.failure(exc)
        echo(line, err=True)
        return code
    for line in fetch.notices(report.from_file, report.warning):
        echo(line, err=True)
    if kind == "blocks":
        blocks.emit(report, fmt, echo, sys.stdout)
    else:
        reports.emit(report, fmt, bool(values.get("breakdown")), echo, sys.stdout)
    return 0


def main(argv: list[str]) -> int | None:
    """``telemetryctl report ARGV``: the exit status, or None for click to run it."""
    if not argv or argv[0] not in SPECS:
        return None
    try:
        return run(argv[0], argv[1:])
    except Fallback:
        return None
    except BrokenPipeError:  # `| head`: as click, exit 1 without another word
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
