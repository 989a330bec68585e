"""The analyzer: rules over recent events that raise alerts, run by the store worker.

The daemon asks for an analysis (daemon/analyzer.py) when events have arrived, at most
once per ``[analyzer] interval``, and when a stall comes due. Each run:

1. reads the rules' table macros (sql/macros.sql: ``tool_loops``, ``open_sessions``,
   ``cost_anomalies``, ``error_spikes``) over the events of the last ``lookback``
   seconds, and the spend of the current day and month against ``[budget]``;
2. gives each condition found an id made from the rule and what identifies the
   condition (:func:`telemetryd.adapters.ids.alert_id`): the session, tool and input of
   a loop; the session and its last event of a stall; the session of a cost anomaly;
   the period and level of a budget; the provider and first error of a spike;
3. leaves out the conditions whose alert is in the database already, and returns the
   others as ``alert`` events for the daemon to journal (the journal is the truth: an
   alert survives a restart and a rebuild like any event, and is never raised twice,
   because the next run finds its id stored);
4. rewrites the ``budget`` table (the limits and periods in force, for the
   ``budget_use`` view and the SessionStart context) and says when the next stall
   could come due, so the daemon can wake up for it.

Events older than ``lookback`` are history (an import of last month's transcripts
raises nothing), and the analyzer's own alerts (source ``telemetryd``) are never input.
"""

from __future__ import annotations

import calendar
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import msgspec

from telemetryd import config
from telemetryd.adapters import ids

SOURCE = "telemetryd"
EPOCH = datetime(1970, 1, 1)
LIVE_LAG = 600  # seconds an event may arrive after its own time and still be live
# New alerts one run returns at most; the rest come with the next run, an interval on
# (a flood of conditions, after an outage say, is journaled in bounded batches).
MAX_NEW = 500


class Findings(msgspec.Struct, kw_only=True):
    """What one run found: new alerts (events to journal), when to look again for
    stalls (Unix time, or None), and the spend against the budget."""

    alerts: list[dict[str, Any]]
    next_due: float | None = None
    budget: list[dict[str, Any]] = msgspec.field(default_factory=list)
    # False: more new alerts than one run returns; the next run must look as widely again.
    complete: bool = True


def analyze(
    con: duckdb.DuckDBPyConnection,
    rules: config.Analyzer,
    budget: config.Budget,
    now: datetime,
    touched: datetime | None = None,
) -> Findings:
    """One analysis at ``now`` (aware, UTC) on ``con``, a connection of the store.
    ``touched``: loops and cost anomalies are looked for in the sessions with events
    received since then only (the daemon's previous analysis: nothing else changed);
    None: in every session."""
    utc_now = now.astimezone(UTC).replace(tzinfo=None)
    since = utc_now - timedelta(seconds=rules.lookback)
    changed = EPOCH if touched is None else touched.astimezone(UTC).replace(tzinfo=None)
    found: list[dict[str, Any]] = []
    found += _tool_loops(con, rules, since, changed)
    # A session can newly stall only if its last event is at most stall-after (and the
    # 10 minutes a live event may lag) older than the previous look: it has an event
    # since then, so the sessions with events since then are all there is to check.
    lag = timedelta(seconds=rules.stall_after + LIVE_LAG)
    stall_since = since if touched is None else max(since, changed - lag)
    stalls, next_due = _stalls(con, rules, stall_since, utc_now)
    found += stalls
    found += _cost_anomalies(con, rules, since, changed)
    found += _error_spikes(con, rules, since)
    spend, budget_alerts = _budget(con, budget, now)
    found += budget_alerts
    stamp = _iso(utc_now)
    alerts = _new(con, found)
    complete = len(alerts) <= MAX_NEW
    if not complete:
        alerts = alerts[:MAX_NEW]
        next_due = now.timestamp()  # more to raise: come back after the interval
    for alert in alerts:
        alert.update(v=1, ts=stamp, type="alert", source=SOURCE)
    return Findings(alerts=alerts, next_due=next_due, budget=spend, complete=complete)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _alert(
    rule: str,
    key: list[str],
    severity: str,
    message: str,
    evidence: dict[str, Any],
    session: str | None = None,
) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "id": ids.alert_id(rule, *key),
        "severity": severity,
        "kind": rule,
        "message": message[:2000],
        "attrs": {"evidence": {k: _plain(v) for k, v in evidence.items() if v is not None}},
    }
    if session:
        alert["session_id"] = session
    return alert


def _tool_loops(
    con: duckdb.DuckDBPyConnection, rules: config.Analyzer, since: datetime, touched: datetime
) -> list[dict[str, Any]]:
    rows = _rows(
        con,
        "SELECT * FROM tool_loops(min_calls := ?, window_seconds := ?, since := ?, touched := ?)",
        [rules.loop_count, rules.loop_window, since, touched],
    )
    out = []
    for row in rows:
        tool, session = row["tool_name"] or "unknown", row["session_id"]
        message = (
            f"{tool} ran {row['most_in_window']} times with the same input within "
            f"{_span(rules.loop_window)} in session {session}"
        )
        evidence = dict(row, window_seconds=rules.loop_window, min_calls=rules.loop_count)
        key = [session, tool, row["input_digest"]]
        out.append(_alert("tool_loop", key, "warning", message, evidence, session))
    return out


def _stalls(
    con: duckdb.DuckDBPyConnection, rules: config.Analyzer, since: datetime, now: datetime
) -> tuple[list[dict[str, Any]], float | None]:
    rows = _rows(
        con,
        "SELECT * FROM open_sessions(silent_seconds := ?, since := ?)",
        [rules.stall_after, since],
    )
    out, next_due = [], None
    for row in rows:
        if row["due"] > now:
            due = row["due"].replace(tzinfo=UTC).timestamp()
            next_due = due if next_due is None else min(next_due, due)
            continue
        session = row["session_id"]
        message = (
            f"session {session} has been silent for {_span(rules.stall_after)} without "
            f"ending (its last event: {row['last_type']} at {_iso(row['last_event'])})"
        )
        evidence = dict(row, silent_seconds=rules.stall_after)
        key = [session, str(_ms(row["last_event"]))]
        out.append(_alert("stall", key, "warning", message, evidence, session))
    return out, next_due


def _cost_anomalies(
    con: duckdb.DuckDBPyConnection, rules: config.Analyzer, since: datetime, touched: datetime
) -> list[dict[str, Any]]:
    rows = _rows(
        con,
        "SELECT * FROM cost_anomalies(factor := ?, min_sessions := ?, days := ?, since := ?, "
        "touched := ?)",
        [rules.cost_factor, rules.cost_min_sessions, rules.cost_days, since, touched],
    )
    out = []
    for row in rows:
        session = row["session_id"]
        message = (
            f"session {session} cost {_usd(row['cost_usd'])}, {row['ratio']:.2f}× the median "
            f"{_usd(row['median_usd'])} of {row['baseline_sessions']} other {row['model']} "
            "sessions"
        )
        evidence = dict(row, factor=rules.cost_factor, days=rules.cost_days)
        out.append(_alert("cost_anomaly", [session], "warning", message, evidence, session))
    return out


def _usd(value: float) -> str:
    """Dollars in an alert's message: cents, and four decimals below a cent (a cheap
    model's sessions: "$0.01, 10.00× the median $0.00" said nothing)."""
    return f"${value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"${value:.4f}"


def _error_spikes(
    con: duckdb.DuckDBPyConnection, rules: config.Analyzer, since: datetime
) -> list[dict[str, Any]]:
    rows = _rows(
        con,
        "SELECT * FROM error_spikes(min_errors := ?, window_seconds := ?, since := ?)",
        [rules.error_spike_count, rules.error_spike_window, since],
    )
    out = []
    for row in rows:
        provider = row["provider"]
        mostly = f" (mostly {row['top_category']})" if row["top_category"] else ""
        message = (
            f"{row['errors']} errors from {provider} within "
            f"{_span(rules.error_spike_window)}{mostly}"
        )
        evidence = dict(row, window_seconds=rules.error_spike_window)
        key = [provider, str(_ms(row["spiked_at"]))]
        out.append(_alert("error_spike", key, "error", message, evidence))
    return out


def _budget(
    con: duckdb.DuckDBPyConnection, budget: config.Budget, now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The spend of the current day and month against their limits (the ``budget``
    table rewritten), and the alerts for the levels reached: the highest level of a
    period only (warn-at, then 100%), each once."""
    periods = []
    for period, limit in (("day", budget.daily_usd), ("month", budget.monthly_usd)):
        if limit > 0:
            starts, ends, label = _period(period, now, budget.timezone)
            periods.append((period, limit, starts, ends, label))
    updated = now.astimezone(UTC).replace(tzinfo=None)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM budget")
        for period, limit, starts, ends, _ in periods:
            con.execute(
                "INSERT INTO budget VALUES (?, ?, ?, ?, ?)", [period, starts, ends, limit, updated]
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    spend, alerts = [], []
    levels = ((1.0, "critical"), (budget.warn_at, "warning"))
    for period, limit, starts, ends, label in periods:
        [(spent,)] = con.execute(
            "SELECT coalesce(sum(cost_usd), 0) FROM api_requests "
            "WHERE timestamp >= ? AND timestamp < ?",
            [starts, ends],
        ).fetchall()
        spent = float(spent)
        spend.append({"period": period, "label": label, "limit_usd": limit, "spent_usd": spent})
        reached = [(level, severity) for level, severity in levels if spent >= level * limit]
        if not reached:
            continue
        level, severity = reached[0]  # the highest; the lower ones are implied
        pct = round(level * 100)
        name = "daily" if period == "day" else "monthly"
        message = f"{name} spend ${spent:.2f} reached {pct}% of the ${limit:.2f} budget ({label})"
        evidence = {
            "period": period,
            "label": label,
            "limit_usd": limit,
            "spent_usd": spent,
            "level": level,
            "starts": starts,
            "ends": ends,
        }
        # (the limit is in the key: a budget raised within the period alerts at its new
        # levels; a higher level of the same limit already alerted says more)
        amount = f"{limit:.2f}"
        key = [period, label, str(pct), amount]
        alert = _alert("budget", key, severity, message, evidence)
        alert["_implied_by"] = [
            ids.alert_id("budget", period, label, str(round(h * 100)), amount)
            for h, _ in levels
            if h > level
        ]
        alerts.append(alert)
    return spend, alerts


def _period(period: str, now: datetime, zone_name: str) -> tuple[datetime, datetime, str]:
    """The UTC bounds (naive) and label of the day or month around ``now`` in the zone
    (the local one when ``zone_name`` is empty)."""
    zone = zoneinfo.ZoneInfo(zone_name) if zone_name else None
    local = now.astimezone(zone)  # None: the local zone
    if period == "day":
        first = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        after = first + timedelta(days=1)
        label = first.strftime("%Y-%m-%d")
    else:
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        days = calendar.monthrange(first.year, first.month)[1]
        after = first + timedelta(days=days)
        label = first.strftime("%Y-%m")

    def utc(wall: datetime) -> datetime:  # a local wall time as naive UTC
        aware = wall.replace(tzinfo=zone) if zone else wall.astimezone()
        return aware.astimezone(UTC).replace(tzinfo=None)

    return utc(first), utc(after), label


def _new(con: duckdb.DuckDBPyConnection, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts of ``found`` not stored yet (nor implied by a higher level stored or
    found now)."""
    if not found:
        return []
    wanted = [a["id"] for a in found] + [i for a in found for i in a.get("_implied_by", [])]
    stored = {
        row[0]
        for row in con.execute(
            "SELECT id FROM events WHERE type = 'alert' AND id IN (SELECT unnest(?))", [wanted]
        ).fetchall()
    }
    out, taken = [], set(stored)
    for alert in found:
        implied = alert.pop("_implied_by", [])
        if alert["id"] in taken or any(i in stored for i in implied):
            continue
        taken.add(alert["id"])
        out.append(alert)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def _iso(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _ms(value: datetime) -> int:
    return int(value.replace(tzinfo=UTC).timestamp() * 1000)


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
