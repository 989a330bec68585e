"""Costs of the stored api_requests: computed as the store loads them, and again on `reprice`.

The journal keeps what producers sent; a computed cost is derived data, like every
row of the database. So the store worker prices each ``api_request`` as it loads it,
in the load's transaction (:func:`price`), and `telemetryctl reprice` prices the
stored ones again after the price data or the config's overrides changed
(:meth:`Store.reprice <telemetryd.store.database.Store.reprice>`): a `rebuild` gives
the same costs as a reprice. A cost the producer reported is never changed.

Per request, in the ``events`` table:

- ``cost_source``: ``reported`` (the producer's ``cost_usd``: a transcript's
  ``costUSD``, Claude Code's OpenTelemetry ``cost_usd``), ``computed`` (priced here)
  or ``unknown`` (no reported cost, and no price for the model or no actual token
  counts: ``cost_usd`` is NULL, never a guess);
- ``price_source``: what priced a computed cost: ``genai-prices 0.2.5`` or
  ``override`` (the config file's ``[pricing.models."NAME"]``); NULL otherwise.

How, for N requests: the distinct (model, provider, speed, UTC day) of the requests
to price are looked up in Python (adapters/pricing.py: the day's prices of the
request's model; per minute for the few models whose price depends on the time of
day), written to a temporary table of rates, and the costs computed in one SQL
statement that joins it: no per-row Python, so a load of a million requests stays a
few seconds. The SQL is the same formula as :meth:`Rates.cost
<telemetryd.adapters.pricing.Rates.cost>` (tiers on the whole request's prompt,
1-hour cache writes from ``attrs.cache_creation_1h``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb

from telemetryd.adapters.pricing import KINDS, MAX_TIERS, Pricer, Rate, Rates

# The rows a pricing run covers: api_requests from rowid $first on (a load's new rows),
# at or after $since when given (reprice --since).
_SCOPE = "e.type = 'api_request' AND e.rowid >= $first AND ($since IS NULL OR e.ts >= $since)"
_SPEED = (
    "CASE WHEN json_type(e.attrs, '$.speed') = 'VARCHAR' "
    "THEN json_extract_string(e.attrs, '$.speed') END"
)
# The 1-hour cache writes: a whole number from 0 to 2^53 - 1, else none.
_HOUR = (
    "CASE WHEN json_type(e.attrs, '$.cache_creation_1h') IN ('UBIGINT', 'BIGINT', 'DOUBLE') "
    "THEN TRY_CAST(json_extract(e.attrs, '$.cache_creation_1h') AS DOUBLE) END"
)

# A cost sent without its source is a reported one (journals of older daemons, producers
# that leave it out); everything else not reported starts unknown, and the rates then
# price what they can. A request marked reported without a cost reports none: it is
# priced too. (SET reads the row as it was before the update.)
_RESET = f"""
UPDATE events AS e
SET cost_source = CASE WHEN e.cost_usd IS NOT NULL AND e.cost_source IS NULL
        THEN 'reported' ELSE 'unknown' END,
    cost_usd = CASE WHEN e.cost_source IS NULL THEN e.cost_usd END,
    price_source = NULL
WHERE {_SCOPE} AND (e.cost_source IS DISTINCT FROM 'reported' OR e.cost_usd IS NULL)
"""
_TO_PRICE = f"""
SELECT e.agent_model, e.agent_provider, {_SPEED} AS speed, CAST(e.ts AS DATE) AS day
FROM events AS e
WHERE {_SCOPE} AND e.cost_source = 'unknown' AND e.tokens_source = 'actual'
    AND e.agent_model IS NOT NULL AND e.ts IS NOT NULL
GROUP BY ALL
"""
_MINUTES = f"""
SELECT DISTINCT date_trunc('minute', e.ts)
FROM events AS e
WHERE {_SCOPE} AND e.cost_source = 'unknown' AND e.tokens_source = 'actual'
    AND e.agent_model = $model AND e.agent_provider IS NOT DISTINCT FROM $provider
    AND CAST(e.ts AS DATE) = $day
"""


def _rate_columns() -> list[str]:
    columns = []
    for kind in KINDS:
        columns.append(f"{kind} DOUBLE")
        for n in range(1, MAX_TIERS + 1):
            columns += [f"{kind}_from{n} BIGINT", f"{kind}_{n} DOUBLE"]
    return columns


_RATES_TABLE = (
    "CREATE OR REPLACE TEMP TABLE price_rates (model VARCHAR, provider VARCHAR, speed VARCHAR, "
    "day DATE, minute TIMESTAMP, source VARCHAR, per_request DOUBLE, "
    + ", ".join(_rate_columns())
    + ")"
)
_RATE_WIDTH = 7 + len(KINDS) * (1 + 2 * MAX_TIERS)
# The rows as one list per column, side by side: one statement, and about ten times
# faster than the same rows as VALUES of placeholders (a load of 155,000 requests over
# 241 days spent 0.1 s of its 0.55 s inserting their rates so).
_INSERT_RATES = "INSERT INTO price_rates SELECT " + ", ".join(
    f"unnest($c{n})" for n in range(_RATE_WIDTH)
)


def _rate_sql(kind: str) -> str:
    """The price of ``kind`` for a row's prompt size (the highest tier it is over)."""
    whens = " ".join(
        f"WHEN r.{kind}_from{n} IS NOT NULL AND p.prompt > r.{kind}_from{n} THEN r.{kind}_{n}"
        for n in range(MAX_TIERS, 0, -1)
    )
    return f"(CASE {whens} ELSE r.{kind} END)"


_PRICE = f"""
UPDATE events AS e
SET cost_usd = p.cost, cost_source = 'computed', price_source = p.source
FROM (
    SELECT
        p.rid,
        r.source,
        round((
            p.input * {_rate_sql("input")}
            + p.output * {_rate_sql("output")}
            + p.cache_read * {_rate_sql("cache_read")}
            + (p.cache_creation - p.long) * {_rate_sql("cache_write")}
            + p.long * {_rate_sql("cache_write_1h")}
        ) * 1e-6 + r.per_request, 10) AS cost
    FROM (
        SELECT
            e.rowid AS rid,
            e.agent_model AS model,
            e.agent_provider AS provider,
            {_SPEED} AS speed,
            e.ts,
            coalesce(e.tokens_input, 0) AS input,
            coalesce(e.tokens_output, 0) AS output,
            coalesce(e.tokens_cache_read, 0) AS cache_read,
            coalesce(e.tokens_cache_creation, 0) AS cache_creation,
            coalesce(e.tokens_input, 0) + coalesce(e.tokens_cache_read, 0)
                + coalesce(e.tokens_cache_creation, 0) AS prompt,
            CASE WHEN h.hour >= 0 AND h.hour <= 9007199254740991 AND h.hour = floor(h.hour)
                THEN least(CAST(h.hour AS BIGINT), coalesce(e.tokens_cache_creation, 0))
                ELSE 0 END AS long
        FROM events AS e, LATERAL (SELECT {_HOUR} AS hour) AS h
        WHERE {_SCOPE} AND e.cost_source = 'unknown' AND e.tokens_source = 'actual'
    ) AS p
    JOIN price_rates AS r
        ON r.model = p.model
        AND r.provider IS NOT DISTINCT FROM p.provider
        AND r.speed IS NOT DISTINCT FROM p.speed
        AND r.day = CAST(p.ts AS DATE)
        AND (r.minute IS NULL OR r.minute = date_trunc('minute', p.ts))
) AS p
WHERE e.rowid = p.rid
"""


def _rate_row(rate: Rate) -> list[Any]:
    row: list[Any] = [rate.base]
    for n in range(MAX_TIERS):
        row += list(rate.tiers[n]) if n < len(rate.tiers) else [None, None]
    return row


def _row(key: tuple[Any, ...], minute: datetime | None, rates: Rates) -> list[Any]:
    model, provider, speed, day = key
    row: list[Any] = [model, provider, speed, day, minute, rates.source, rates.per_request]
    for kind in KINDS:
        row += _rate_row(getattr(rates, kind))
    return row


def price(
    con: duckdb.DuckDBPyConnection,
    pricer: Pricer,
    *,
    first: int = 0,
    since: datetime | None = None,
) -> None:
    """Price the api_requests from rowid ``first`` on (at or after ``since``): see the
    module docstring. Runs in the caller's transaction."""
    params: dict[str, Any] = {"first": first, "since": since}
    con.execute(_RESET, params)
    keys = con.execute(_TO_PRICE, params).fetchall()
    if not keys:
        return
    rows: list[list[Any]] = []
    for model, provider, speed, day in keys:
        key = (model, provider, speed, day)
        midnight = datetime(day.year, day.month, day.day)
        if not pricer.varies_within_a_day(model, provider):
            rates = pricer.rates(model, provider, midnight, speed)
            if rates is not None:
                rows.append(_row(key, None, rates))
            continue
        minutes = con.execute(
            _MINUTES, {**params, "model": model, "provider": provider, "day": day}
        ).fetchall()
        for (minute,) in minutes:
            rates = pricer.rates(model, provider, minute, speed, exact_time=True)
            if rates is not None:
                rows.append(_row(key, minute, rates))
    if not rows:
        return
    con.execute(_RATES_TABLE)
    try:
        columns = zip(*rows, strict=True)
        con.execute(_INSERT_RATES, {f"c{n}": list(column) for n, column in enumerate(columns)})
        con.execute(_PRICE, params)
    finally:
        con.execute("DROP TABLE IF EXISTS price_rates")
