"""`telemetryctl config show | check`: the configuration, and where each value comes from.

The work is :func:`telemetryd.config.load`, the daemon's own loader; this module
only formats its answer (click layer).
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from telemetryd import config, paths
from telemetryd.errors import ConfigError


@click.group("config")
def config_group() -> None:
    """Show or check telemetryd's configuration (config.toml)."""


@config_group.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="configuration file (default: config.toml in the config dir)",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="override one setting, as `telemetryd --set` does",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def show(config_file: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """Print the effective configuration and where each value comes from.

    That is the configuration a daemon started here (same environment, same
    --config and --set) would use; each value's origin is default, file, env
    (TELEMETRYD_<SECTION>_<KEY>) or flag (--set). The text form is valid TOML, with
    the origins as comments.

    \b
    Examples:
      telemetryctl config show
      telemetryctl config show --json --set journal.durability=always
    """
    path = config_file or paths.resolve().config_file
    try:
        settings, origin = config.load(path, overrides=overrides, require_file=bool(config_file))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for warning in config.unknown_variables():
        click.echo(f"warning: {warning}", err=True)
    values = config.flatten(settings)
    if as_json:
        out: dict[str, Any] = {
            "file": path,
            "file_exists": os.path.exists(path),
            "settings": {key: {"value": values[key], "origin": origin[key]} for key in values},
        }
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"# {path}" + ("" if os.path.exists(path) else " (absent)"))
    section = ""
    lines = [(key, f"{key.partition('.')[2]} = {_toml(value)}") for key, value in values.items()]
    width = max(len(text) for _, text in lines)
    for key, text in lines:
        if key.partition(".")[0] != section:
            section = key.partition(".")[0]
            click.echo(f"\n[{section}]")
        click.echo(f"{text:<{width}}  # {origin[key]}")


def _toml(value: Any) -> str:
    """A TOML value: JSON's spelling of strings, numbers, booleans and arrays is valid
    TOML; tables (the per-model prices) become inline tables."""
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return json.dumps(value)


@config_group.command()
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Check one configuration file; exit 1 naming the bad key and the file.

    Only the file is checked, without the environment's overrides.

    \b
    Example:
      telemetryctl config check ~/.config/telemetryd/config.toml
    """
    try:
        settings = config.load(file, environ={}, require_file=True)[0]
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    target = settings.export.parquet_dir
    # (the rule every export run applies: the daemon's own directories are not one)
    local = target and not config.is_url(target)
    own = paths.within(target, paths.resolve().own_directories()) if local else None
    if own is not None:
        raise click.ClickException(
            f"{file}: [export] parquet-dir {target!r} is within {own}, a directory "
            "of telemetryd's own: export to another directory"
        )
    click.echo(f"{file}: valid")
