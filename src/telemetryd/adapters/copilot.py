"""GitHub Copilot CLI session events (``~/.copilot/session-state/<session>/events.jsonl``)
-> api_request records.

Copilot CLI appends one JSON object per line to each session's ``events.jsonl``:
``{"type", "id", "timestamp", "parentId", "data"}`` with types such as
``session.start``, ``user.message``, ``assistant.message``,
``tool.execution_start``/``_complete`` and, when the CLI exits,
``session.shutdown``. Only the shutdown carries token counts: ``data.modelMetrics``
maps each model the process used to ``{"requests": {"count", "cost"}, "usage":
{"inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens",
"reasoningTokens"}}`` (and, since GitHub's AI Credits billing, ``totalNanoAiu``).
A session resumed later appends another shutdown whose counts cover that process
only: every shutdown is counted, each model of it one record.

As ccusage reads these files (its session-state adapter, ccusage PR #1174):

- a line is a shutdown when its decoded top-level ``type`` is ``session.shutdown``
  (the string inside a tool's arguments is not one); the event needs its ``id`` and
  ``timestamp`` strings, and counts that are non-negative integers, else it is
  skipped whole;
- tokens by :func:`usage.copilot`: ``inputTokens`` includes both cache reads and
  writes; reasoning is part of the output, except for ``gemini-*`` models;
- a model row without tokens is not a request (ccusage keeps such rows when they
  carry premium requests or AI credits, for its cost: their tokens are zero);
- the session is the directory's name; the time the shutdown's ``timestamp`` (the
  file's mtime when it does not parse); the model the row's key, unchanged;
- the key is (session, event id, model): the event id of a record is a hash of it,
  so a copy of the same file, or an import run again, gives the same ids.

``data.tokenDetails`` is not read (ccusage found it diverging from ``usage``).
The premium requests and AI credits of a row are kept in the event's ``attrs``.

Plain dicts, no imports beyond the adapters' own.
"""

from __future__ import annotations

from datetime import datetime

from telemetryd.adapters import ids
from telemetryd.adapters import usage as usage_mod

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SOURCE = "copilot-cli"
PROVIDER = "github-copilot"
ID_PREFIX = "cp:"
SHUTDOWN = "session.shutdown"
_USAGE = ("inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens", "reasoningTokens")


def _count(value: Any) -> int | None:
    """A count as ccusage's u64 fields take it: a non-negative integer (absent: 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _time(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _row(model: str, metrics: Any) -> dict[str, Any] | None:
    """One model's tokens and billing; None when the whole event does not decode."""
    if not isinstance(metrics, dict):
        return None
    usage = metrics.get("usage")
    usage = {} if usage is None else usage
    requests = metrics.get("requests")
    requests = {} if requests is None else requests
    if not isinstance(usage, dict) or not isinstance(requests, dict):
        return None
    counts = [_count(usage.get(name)) for name in _USAGE]
    request_count = _count(requests.get("count"))
    if request_count is None or any(c is None for c in counts):
        return None
    inp, out, read, write, reasoning = (c or 0 for c in counts)
    gemini = model.startswith("gemini-")
    tokens = usage_mod.copilot(
        input=inp,
        output=out,
        cache_read=read,
        cache_write=write,
        reasoning=reasoning,
        reasoning_apart=gemini,
    )
    attrs: dict[str, Any] = {}
    if request_count:
        attrs["premium_requests"] = request_count
    cost = requests.get("cost")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0:
        attrs["premium_request_cost"] = cost
    nano_aiu = metrics.get("totalNanoAiu")
    if isinstance(nano_aiu, (int, float)) and not isinstance(nano_aiu, bool) and nano_aiu > 0:
        attrs["nano_aiu"] = int(nano_aiu)
    return {"tokens": tokens, "attrs": attrs}


def records(line: dict[str, Any], session_id: str, fallback_ts: str | None) -> list[dict[str, Any]]:
    """The records of one decoded line (none unless it is a shutdown with usage).

    A record: ``key`` (session, event id, model), ``tokens``, ``model``, ``ts``,
    ``session_id``, ``attrs`` (premium requests, AI credits)."""
    if line.get("type") != SHUTDOWN:
        return []
    event_id, ts, data = line.get("id"), line.get("timestamp"), line.get("data")
    if not isinstance(event_id, str) or not isinstance(ts, str):
        return []
    data = {} if data is None else data
    if not isinstance(data, dict):
        return []
    metrics = data.get("modelMetrics")
    metrics = {} if metrics is None else metrics
    if not isinstance(metrics, dict):
        return []
    rows = {model: _row(model, m) for model, m in metrics.items()}
    if any(row is None for row in rows.values()):
        return []  # one field of the wrong type: ccusage's decoder drops the event
    when = ts if _time(ts) else fallback_ts
    found = []
    for model, row in rows.items():
        assert row is not None
        if not row["tokens"]["total"]:
            continue
        found.append(
            {
                "key": (session_id, event_id, model),
                "tokens": row["tokens"],
                "model": model,
                "ts": when,
                "session_id": session_id,
                "attrs": row["attrs"],
            }
        )
    return found


def event_id(record: dict[str, Any]) -> str:
    """``cp:`` and a hash of the session, the shutdown event's id and the model."""
    return ids.hashed_id(ID_PREFIX, *record["key"])


def api_request_event(record: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The ``api_request`` event of one model's usage in one shutdown."""
    event: dict[str, Any] = {"type": "api_request", "id": event_id}
    if record["ts"]:
        event["ts"] = record["ts"]
    event["source"] = SOURCE
    event["session_id"] = record["session_id"]
    event["agent"] = {"model": record["model"] or "unknown", "provider": PROVIDER}
    event["tokens"] = record["tokens"]
    event["attrs"] = {"imported": True, **record["attrs"]}
    return event
