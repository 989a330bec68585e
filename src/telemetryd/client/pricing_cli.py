"""`telemetryctl pricing` and `telemetryctl reprice`: the prices costs are computed with (click
layer).

The prices are :mod:`telemetryd.adapters.pricing`'s (genai-prices' data and the config
file's overrides); ``cli.py`` registers both commands with ``cli.add_command``.
``pricing --missing`` and ``reprice`` ask the daemon (a query, and a ``reprice``
control request: store/pricing.py prices the stored requests in the store worker).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from telemetryd import paths, wire
from telemetryd.adapters import pricing
from telemetryd.client import control
from telemetryd.client.cli_errors import handle_errors
from telemetryd.client.fetch import query
from telemetryd.errors import TelemetryError

# Models seen without a price: requests with actual token counts and no cost.
MISSING_SQL = """
SELECT
    coalesce(r.model, '(none)') AS model,
    r.provider,
    count(*) AS requests,
    strftime(min(r.timestamp), '%Y-%m-%dT%H:%M:%SZ') AS first_seen,
    strftime(max(r.timestamp), '%Y-%m-%dT%H:%M:%SZ') AS last_seen
FROM api_requests AS r
WHERE r.cost_source = 'unknown' AND r.input_tokens IS NOT NULL
GROUP BY ALL
ORDER BY requests DESC, model, provider NULLS FIRST
"""


def _money(value: float) -> str:
    return f"{value:g}"


def _rate(rate: pricing.Rate) -> str:
    text = _money(rate.base)
    for start, price in rate.tiers:
        text += f" (>{start // 1000}k: {_money(price)})"
    return text


def _describe(rates: pricing.Rates) -> dict[str, Any]:
    out: dict[str, Any] = {"priced_as": rates.entry, "source": rates.source}
    for kind in pricing.KINDS:
        rate = getattr(rates, kind)
        out[kind] = rate.base
        if rate.tiers:
            out[f"{kind}_tiers"] = [{"above": s, "price": p} for s, p in rate.tiers]
    if rates.per_request:
        out["per_request"] = rates.per_request
    return out


@click.command("pricing")
@click.argument("models", nargs=-1)
@click.option("--provider", help="the provider the MODELS are used through (anthropic, ...)")
@click.option(
    "--at",
    "at",
    metavar="DATE",
    help="the prices on this UTC day (YYYY-MM-DD) rather than today's",
)
@click.option(
    "--missing",
    is_flag=True,
    help="list the models of stored requests that have no price, with request counts",
)
@click.option(
    "--socket",
    "socket_path",
    envvar="TELEMETRYD_CONTROL_SOCKET",
    help="control socket, for --missing (default: from TELEMETRYD_HOME / XDG)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@handle_errors
def pricing_command(
    models: tuple[str, ...],
    provider: str | None,
    at: str | None,
    missing: bool,
    socket_path: str | None,
    as_json: bool,
) -> None:
    """Show the price data (genai-prices: its version and date) and models' prices.

    Prices are US dollars per million tokens. Each api_request that carries token
    counts and no reported cost is priced as of its own time when the store loads
    it; `[pricing.models."NAME"]` in config.toml overrides a model's prices. With
    MODEL names, shows the prices each one gets and what it is priced as. With
    --missing, asks the daemon which stored requests' models have no price.

    \b
    Examples:
      telemetryctl pricing
      telemetryctl pricing claude-sonnet-4-5-20250929 gpt-5.3-codex
      telemetryctl pricing o3 --at 2025-06-01
      telemetryctl pricing --missing
    """
    if missing:
        _missing(socket_path, as_json)
        return
    try:
        pricer = pricing.configured()
        info = pricer.info()
    except TelemetryError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        when = (
            datetime.strptime(at, "%Y-%m-%d").replace(tzinfo=UTC)
            if at is not None
            else datetime.now(UTC)
        )
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {at!r}", param_hint="--at") from None
    rows: dict[str, dict[str, Any] | None] = {}
    for name in models:
        rates = pricer.rates(name, provider, when)
        rows[name] = None if rates is None else _describe(rates)
    if as_json:
        click.echo(json.dumps({**info, "at": when.date().isoformat(), "models": rows}, indent=2))
        return
    click.echo(
        f"prices: {info['source']} (prices dated up to {info['date']}; "
        f"{info['models']} models of {info['providers']} providers)"
    )
    if info["scheduled"]:
        click.echo(f"scheduled price changes up to {info['scheduled']} are in the data too")
    if info["overrides"]:
        click.echo(f"from config.toml [pricing.models]: {', '.join(info['overrides'])}")
    if not models:
        click.echo("name models to see their prices; --missing lists the unpriced ones seen")
        return
    click.echo(f"USD per million tokens, on {when.date().isoformat()}")
    for name, entry in rows.items():
        if entry is None:
            click.echo(f"{name}: no price (its costs stay unknown)")
            continue
        rates = pricer.rates(name, provider, when)
        assert rates is not None
        click.echo(f"{name}: priced as {entry['priced_as']} ({entry['source']})")
        for kind in pricing.KINDS:
            click.echo(f"  {kind:<15} {_rate(getattr(rates, kind))}")
        if rates.per_request:
            click.echo(f"  {'per request':<15} {_money(rates.per_request)} USD")


def _missing(socket_path: str | None, as_json: bool) -> None:
    rows, from_file, warning = query(MISSING_SQL, {}, socket_path)
    if warning:
        click.echo(f"telemetryctl: {warning}", err=True)
    if from_file:
        click.echo("telemetryctl: the daemon is not running: read the database file", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("every stored request with token counts has a price")
        return
    width = max(len(str(row["model"])) for row in rows)
    click.echo(
        f"{'model':<{width}}  {'provider':<14}  {'requests':>8}  first seen            last seen"
    )
    for row in rows:
        click.echo(
            f"{row['model']:<{width}}  {row['provider'] or '-':<14}  {row['requests']:>8}  "
            f"{row['first_seen']}  {row['last_seen']}"
        )
    click.echo('give them prices with [pricing.models."NAME"] in config.toml, then reprice')


@click.command("reprice")
@click.option(
    "--since",
    metavar="DATE",
    help="only requests from this UTC day (YYYY-MM-DD) or time (RFC 3339) on",
)
@click.option(
    "--socket",
    "socket_path",
    envvar="TELEMETRYD_CONTROL_SOCKET",
    help="control socket (default: from TELEMETRYD_HOME / XDG)",
)
@click.option("--json", "as_json", is_flag=True, help="print the daemon's answer as JSON")
@handle_errors
def reprice_command(since: str | None, socket_path: str | None, as_json: bool) -> None:
    """Compute the stored requests' costs again, after the price data or the overrides changed.

    A computed cost is derived data: the store computes it as it loads a request, and
    this computes it again with the prices installed now and the daemon's `[pricing]`
    settings (after editing config.toml, reload the daemon first: SIGHUP, or
    `systemctl --user reload telemetryd`). Reported costs are never changed. The journal
    is not touched.

    \b
    Examples:
      telemetryctl reprice
      telemetryctl reprice --since 2026-11-01
    """
    when = None
    if since is not None:  # (an empty one is no date: an error, not "everything")
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise click.BadParameter(
                f"expected YYYY-MM-DD or an RFC 3339 time, got {since!r}", param_hint="--since"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    answer = control.request(
        socket_path or paths.resolve().control_socket,
        wire.RepriceRequest(since=when),
        timeout=control.LONG_TIMEOUT,
    )
    if as_json:
        click.echo(json.dumps(dict(answer), indent=2))
        return
    overrides = answer.get("overrides") or []
    click.echo(
        f"repriced {answer['repriced']} requests with {answer['source']}"
        + (f" and the overrides of {', '.join(overrides)}" if overrides else "")
        + f": {answer['changed']} changed cost, {answer['computed']} priced, "
        f"{answer['unknown']} without a price"
    )
