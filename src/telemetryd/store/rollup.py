"""``usage_quarters``: the api_requests summed per UTC quarter hour, kept in step with
``events`` by every change to it, in the same transaction.

A daily, weekly or monthly report reads these sums instead of every request
(client/reports.py): on a million events, about 20 thousand rows instead of a quarter
of a million. One row per quarter hour (``time_bucket(15 minutes, ts)``), ``source``,
``agent_type``, ``agent_model`` and ``fast`` (the ``fast_mode`` macro of the request's
attrs), holding the number of requests, the sums of their token counts and of their
known costs (0 when none), the number without a cost, and the first and last request
time. Requests without a time are left out, as the reports leave them out.

How each change to ``events`` reaches it (store/database.py calls these):

- a load adds the new rows' sums (:func:`add`; after duplicates are dropped and the
  new rows priced), merged into the rows of the same group;
- a reprice, retention's deletions and a compaction sum again every quarter hour that
  they may have changed, from ``events`` (:func:`refresh`): deletions cannot be
  subtracted from a minimum or a maximum;
- a rebuild starts from an empty table and loads.

The table is derived data like the rest of the database: a change to what it holds
bumps the store's SCHEMA_VERSION, so a database is rebuilt rather than left with sums
of another meaning. ``tests/test_rollup.py`` holds it equal to sums computed from the
events sent, through loads, duplicates, repricing, retention and rebuilds.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

# The groups of api_requests that `where` selects, one row each, in the table's order.
_GROUPS = """
    SELECT
        time_bucket(INTERVAL 15 MINUTE, e.ts) AS quarter,
        e.source,
        e.agent_type,
        e.agent_model,
        fast_mode(e.attrs) AS fast,
        count(*) AS requests,
        coalesce(sum(e.tokens_input), 0) AS input,
        coalesce(sum(e.tokens_output), 0) AS output,
        coalesce(sum(e.tokens_cache_creation), 0) AS cache_creation,
        coalesce(sum(e.tokens_cache_read), 0) AS cache_read,
        coalesce(sum(e.tokens_reasoning), 0) AS reasoning,
        coalesce(sum(e.cost_usd), 0) AS cost,
        count(*) FILTER (WHERE e.cost_usd IS NULL) AS unpriced,
        min(e.ts) AS first,
        max(e.ts) AS last
    FROM events AS e
    WHERE e.type = 'api_request' AND e.ts IS NOT NULL AND {where}
    GROUP BY ALL
"""
_SUMMED = ("requests", "input", "output", "cache_creation", "cache_read", "reasoning", "cost",
           "unpriced")  # fmt: skip

# A load: the rows from rowid $first on (this batch's) merged into their groups. NULL
# keys are keys too (IS NOT DISTINCT FROM), so each group stays one row.
_ADD = f"""
MERGE INTO usage_quarters AS u
USING ({_GROUPS.format(where="e.rowid >= $first")}) AS n
ON u.quarter = n.quarter
    AND u.source IS NOT DISTINCT FROM n.source
    AND u.agent_type IS NOT DISTINCT FROM n.agent_type
    AND u.agent_model IS NOT DISTINCT FROM n.agent_model
    AND u.fast = n.fast
WHEN MATCHED THEN UPDATE SET
    {", ".join(f"{c} = u.{c} + n.{c}" for c in _SUMMED)},
    first = least(u.first, n.first),
    last = greatest(u.last, n.last)
WHEN NOT MATCHED THEN INSERT BY NAME
"""

# Every quarter hour from the one holding $lo to the one holding $hi (a NULL bound: no
# bound), summed again from `events`.
_IN_RANGE = (
    "($lo IS NULL OR {column} >= time_bucket(INTERVAL 15 MINUTE, CAST($lo AS TIMESTAMP))) "
    "AND ($hi IS NULL OR {column} < time_bucket(INTERVAL 15 MINUTE, CAST($hi AS TIMESTAMP)) "
    "+ INTERVAL 15 MINUTE)"
)
_FORGET_RANGE = "DELETE FROM usage_quarters WHERE " + _IN_RANGE.format(column="quarter")
_SUM_RANGE = "INSERT INTO usage_quarters BY NAME " + _GROUPS.format(
    where=_IN_RANGE.format(column="e.ts")
)
# The times of the api_requests among some ids (before they are deleted).
_SPAN_OF_IDS = (
    "SELECT min(ts), max(ts) FROM events "
    "WHERE id IN (SELECT unnest(CAST($ids AS VARCHAR[]))) AND type = 'api_request'"
)


def add(con: duckdb.DuckDBPyConnection, first: int) -> None:
    """Add the sums of the events from rowid ``first`` on (a load's new rows)."""
    con.execute(_ADD, {"first": first})


def refresh(con: duckdb.DuckDBPyConnection, lo: datetime | None, hi: datetime | None) -> None:
    """Sum again every quarter hour from ``lo``'s to ``hi``'s (naive UTC times, as the
    stored ones; None: unbounded)."""
    params = {"lo": lo, "hi": hi}
    con.execute(_FORGET_RANGE, params)
    con.execute(_SUM_RANGE, params)


def span_of(
    con: duckdb.DuckDBPyConnection, ids: list[str], kept_types: tuple[str, ...] = ()
) -> tuple[datetime, datetime] | None:
    """The first and last time of the api_requests among ``ids``, or None when there is
    none (or when api_request is one of ``kept_types``, which the deletion spares): the
    span that deleting them changes, for :func:`refresh` after the deletion."""
    if "api_request" in kept_types:
        return None
    row = con.execute(_SPAN_OF_IDS, {"ids": ids}).fetchone()
    if row is None or row[0] is None:
        return None
    return row[0], row[1]
