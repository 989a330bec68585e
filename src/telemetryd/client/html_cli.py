"""`telemetryctl report --html FILE [--open]` (click layer over :mod:`telemetryd.client.pictures`
and :mod:`telemetryd.client.html_report`).

``report_cli.py``'s group takes :func:`options` and calls :func:`run`: with ``--html``
and no subcommand it writes the page; with a subcommand these options are refused (they
would be silently ignored otherwise). The charting library (Bokeh, the ``report`` extra)
is imported here only, while the queries already run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from telemetryd.client.cli_errors import load_or_exit

F = TypeVar("F", bound=Callable[..., Any])

EXTRA = "pip install 'telemetryd[report]'"


def options(span: list[Callable[[F], F]]) -> Callable[[F], F]:
    """``--html``, ``--open``, ``--socket`` and the reports' ``--since`` / ``--until`` /
    ``--timezone`` (``span``), for the ``report`` group."""
    own: list[Callable[[F], F]] = [
        click.option("--html", "html_path", metavar="FILE",
                     help="write the HTML report (charts, offline) to FILE ('-': stdout)"),
        click.option("--open", "open_page", is_flag=True,
                     help="then open it in the default browser (xdg-open / open)"),
        *span,
        click.option("--socket", "socket_path", envvar="TELEMETRYD_CONTROL_SOCKET",
                     help="control socket (default: from TELEMETRYD_HOME / XDG)"),
    ]  # fmt: skip

    def apply(func: F) -> F:
        for option in reversed(own):
            func = option(func)
        return func

    return apply


def run(ctx: click.Context, **kw: Any) -> None:
    """The group's callback: the page for ``--html``; help without a subcommand."""
    given = [
        name
        for name in ("html_path", "open_page", "since", "until", "timezone", "socket_path")
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.PROMPT)
    ]
    flags = ", ".join("--" + name.split("_")[0] for name in given)
    if ctx.invoked_subcommand is not None:
        if given:
            raise click.UsageError(
                f"{flags} before a subcommand: `report --html FILE` writes the HTML report; "
                f"a subcommand's own options go after it (report {ctx.invoked_subcommand} "
                "--since ...)"
            )
        return
    if kw["html_path"] is None:
        if given:
            raise click.UsageError(f"{flags} without --html FILE or a subcommand")
        # As click answers a bare group: the help on stderr, exit status 2.
        raise click.exceptions.NoArgsIsHelpError(ctx)
    write(**kw)


def write(
    html_path: str,
    open_page: bool,
    since: Any,
    until: Any,
    timezone: str,
    socket_path: str | None,
) -> None:
    from telemetryd.client import pictures

    if open_page and html_path == "-":
        raise click.UsageError("--open needs a file, not '-'")
    wanted = pictures.Options(timezone=timezone, since=since, until=until)
    pending = pictures.start(wanted, socket_path)
    try:
        from telemetryd.client import html_report
    except ImportError as exc:  # Bokeh, or one of its own dependencies
        pending.cancel()
        if (exc.name or "").startswith("telemetryd"):
            raise
        raise click.ClickException(
            f"the HTML report needs the charting library Bokeh: {EXTRA} ({exc})"
        ) from None
    drawn = html_report.draw_early(pending)  # while the slower queries still run
    got = load_or_exit(pending.result)
    for section, why in got.failed.items():
        click.echo(f"warning: {section} left out of the page, its query failed: {why}", err=True)
    page = html_report.render(got, drawn=drawn)
    if html_path == "-":
        sys.stdout.write(page)
        return
    path = os.path.abspath(html_path)
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise click.ClickException(f"cannot write {html_path}: {exc.strerror or exc}") from None
    size = len(page.encode()) / 1e6
    click.echo(f"wrote {html_path} ({size:.1f} MB)", err=True)
    if open_page:
        browse(path)


def browse(path: str) -> None:
    """Open ``path`` with the desktop's opener, without waiting for the browser."""
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    found = shutil.which(opener)
    if found is None:
        raise click.ClickException(f"wrote {path}, but cannot open it: {opener} is not installed")
    try:
        subprocess.Popen(
            [found, path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise click.ClickException(f"wrote {path}, but {opener} failed: {exc}") from None
