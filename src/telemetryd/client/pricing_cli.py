"""`telemetryctl pricing`: the model prices telemetryd computes costs with (click layer).

The table is :mod:`telemetryd.adapters.pricing`'s; ``cli.py`` registers this
command with ``cli.add_command(pricing_command)``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from telemetryd.adapters import pricing
from telemetryd.errors import TelemetryError


def _money(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


@click.command("pricing")
@click.argument("models", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def pricing_command(models: tuple[str, ...], as_json: bool) -> None:
    """Show the price table (its date and source) and the prices per model.

    Prices are US dollars per million tokens. Costs are computed with them for
    api_request events that carry token counts and no reported cost. With
    MODEL names, shows which entry each one is priced with.

    \b
    Examples:
      telemetryctl pricing
      telemetryctl pricing claude-sonnet-4-5-20250929 gpt-5.3-codex
    """
    try:
        table = pricing.configured()
    except TelemetryError as exc:
        raise click.ClickException(str(exc)) from None
    rows: dict[str, dict[str, Any] | None]
    if models:
        rows = {}
        for name in models:
            found = table.lookup(name)
            rows[name] = None if found is None else {"priced_as": found[0], **found[1]}
    else:
        rows = {name: {"priced_as": name, **prices} for name, prices in table.models.items()}
    if as_json:
        document: dict[str, Any] = {
            "date": table.date,
            "source": table.source,
            "refresh": table.refresh,
        }
        document["overridden"] = sorted(table.overridden)
        document["models"] = rows
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"prices as of {table.date}, USD per million tokens")
    click.echo(f"source: {table.source}")
    if table.overridden:
        click.echo(f"from config.toml [pricing]: {', '.join(sorted(table.overridden))}")
    width = max(len(name) for name in rows) if rows else 5
    click.echo(
        f"{'model':<{width}}  {'input':>7}  {'output':>7}  {'cache read':>10}  "
        f"{'cache write':>11}  {'1h write':>8}  notes"
    )
    for name, entry in rows.items():
        if entry is None:
            click.echo(f"{name:<{width}}  no price: costs stay unknown")
            continue
        notes = []
        if entry["priced_as"] != name:
            notes.append(f"priced as {entry['priced_as']}")
        above = entry.get("above")
        if isinstance(above, dict):
            notes.append(
                f"above {above['tokens'] // 1000}k prompt tokens: "
                f"{_money(above.get('input'))} / {_money(above.get('output'))}"
            )
        if entry.get("fast"):
            notes.append(f"fast mode x{entry['fast']:g}")
        notes.append(f"from {entry.get('src', '?')}")
        click.echo(
            f"{name:<{width}}  {_money(entry.get('input')):>7}  {_money(entry.get('output')):>7}  "
            f"{_money(entry.get('cache_read')):>10}  {_money(entry.get('cache_write')):>11}  "
            f"{_money(entry.get('cache_write_1h')):>8}  {'; '.join(notes)}"
        )
