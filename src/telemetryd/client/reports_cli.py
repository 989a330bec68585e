"""`telemetryctl reports`: the report macros, their parameters and what each is for.

The list comes from the database itself (``duckdb_functions()``, asked of the daemon
like any query, or read from the file while the daemon is stopped): names,
parameters and the one-line ``COMMENT`` that ``sql/macros.sql`` gives each macro.
DuckDB does not report parameter defaults, so those are read from the same
``macros.sql`` that created the macros.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import click

from telemetryd.client import output
from telemetryd.client import query as query_client
from telemetryd.errors import DaemonBusy, DaemonUnavailable, TelemetryError

SQL = """
SELECT function_name, parameters, comment
FROM duckdb_functions()
WHERE function_type = 'table_macro' AND schema_name = 'main' AND NOT internal
ORDER BY function_name
"""
_SIGNATURE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?MACRO\s+(\w+)\s*\(([^)]*)\)\s+AS\s+TABLE", re.I
)


@dataclass(frozen=True)
class Parameter:
    name: str
    default: str | None  # SQL text, e.g. "7" or "NULL"; None when the parameter is required


@dataclass(frozen=True)
class Report:
    name: str
    parameters: list[Parameter]
    description: str

    def signature(self) -> str:
        """``cost_by_model(days := 7)``: how to call it."""
        params = ", ".join(
            p.name if p.default is None else f"{p.name} := {p.default}" for p in self.parameters
        )
        return f"{self.name}({params})"


def declared_defaults(sql: str) -> dict[str, dict[str, str]]:
    """``{macro: {parameter: default SQL}}`` from the macro definitions in ``sql``."""
    found: dict[str, dict[str, str]] = {}
    for match in _SIGNATURE.finditer(sql):
        defaults = found.setdefault(match.group(1), {})
        for item in match.group(2).split(","):
            name, sep, default = item.partition(":=")
            if sep:
                defaults[name.strip()] = default.strip()
    return found


class _Collect(output.Writer):
    """Rows kept in memory instead of printed (a few dozen here)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.collected: list[list[Any]] = []

    def rows(self, rows: list[list[Any]]) -> None:
        self.collected.extend(rows)


def list_reports(socket_path: str | None = None) -> list[Report]:
    """Every report macro in the database, from the daemon or (while it is stopped) the file.

    Raises DaemonUnavailable when neither answers (DaemonBusy when the daemon is too busy
    to), TelemetryError when the query fails (its message is then on stderr).
    """
    opts = query_client.Options()
    opts.sql = SQL
    opts.socket = socket_path
    rows = _Collect()
    try:
        code = query_client.ask_daemon(opts, rows)
    except DaemonBusy:
        raise
    except DaemonUnavailable:
        try:
            code = query_client.ask_file(opts, rows)
        except DaemonUnavailable as missing:
            raise DaemonUnavailable(f"the daemon is not running {missing}") from None
    if code != query_client.EXIT_OK:
        raise TelemetryError("could not list the reports")
    sql = resources.files("telemetryd").joinpath("sql", "macros.sql").read_text(encoding="utf-8")
    defaults = declared_defaults(sql)
    reports = []
    for name, parameters, comment in rows.collected:
        known = defaults.get(name, {})
        reports.append(
            Report(
                name=name,
                parameters=[Parameter(p, known.get(p)) for p in parameters or []],
                description=comment or "",
            )
        )
    return reports


@click.command()
@click.option(
    "--socket",
    "socket_path",
    envvar="TELEMETRYD_CONTROL_SOCKET",
    help="control socket (default: from TELEMETRYD_HOME / XDG)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def reports(socket_path: str | None, as_json: bool) -> None:
    """List the reports: table macros to call from `telemetryctl query`.

    A parameter shown with := has that default and may be left out; one without
    must be given.

    \b
    Examples:
      telemetryctl reports
      telemetryctl query "select * from cost_by_model(days := 30)"
    """
    try:
        found = list_reports(socket_path)
    except TelemetryError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([asdict(r) for r in found], indent=2))
        return
    signatures = [r.signature() for r in found]
    width = max(map(len, signatures), default=0)
    for signature, report in zip(signatures, found, strict=True):
        click.echo(f"{signature:<{width}}  {report.description}".rstrip())
