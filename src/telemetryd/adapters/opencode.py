"""OpenCode's stored messages -> api_request records.

OpenCode keeps its data in ``$XDG_DATA_HOME/opencode`` (``~/.local/share/opencode``
when ``XDG_DATA_HOME`` is unset: its ``Global.Path.data``, from the ``xdg-basedir``
package). Two stores hold the messages, one JSON object per message:

- ``opencode.db`` (or, for another release channel, ``opencode-<channel>.db``), a SQLite
  database written by current versions: table ``message`` with columns ``id``,
  ``session_id`` and ``data``, the message without its id and session;
- ``storage/message/<session id>/<message id>.json``, one file per message, written by
  older versions (with ``id`` and ``sessionID`` in the object).

An assistant message carries ``providerID``, ``modelID``, ``time.created`` (Unix ms),
``cost`` (USD, OpenCode's own computation from the model's prices; 0 for subscription
providers) and ``tokens``: ``{input, output, reasoning, cache: {read, write}}`` and,
in current versions, ``total``. ``input`` is uncached input (OpenCode subtracts both
caches); ``output`` leaves the reasoning out (current versions: output = outputTokens −
reasoningTokens; OpenCode bills the reasoning as output on top); ``total`` is all of
them together.

As ccusage reads them (``rust/crates/ccusage/src/adapter/opencode/`` at 5816e640,
``parser.rs`` and ``loader.rs``):

- a count is a non-negative JSON integer, anything else 0;
- a ``total`` larger than input + output + both caches: the rest goes to output when
  output is 0, else it is extra tokens priced as output (ccusage's ``outputTokens``
  leave it out, its ``totalTokens`` keep it); a message whose counts are all 0 is not a
  request;
- ``modelID`` and ``providerID`` are required (non-blank strings, trimmed);
- the time is ``time.created`` (an integer; else 0, the epoch);
- the id is the row's ``id`` (database) or the object's ``id`` (file); a message is
  counted once by its id, the database's copy first; the session is the row's
  ``session_id`` or the object's ``sessionID``, else ``unknown``;
- a ``cost`` above 0 is the request's cost; otherwise it is computed from the tokens.

Here the tokens follow :func:`usage.parts_and_total`: output = output + max(total −
parts, reasoning), so output holds the reasoning whether ``total`` counts it or not
(ccusage drops the reasoning of a message that has no ``total``); the reasoning is
also kept as ``reasoning``. The event id is a hash of the message id, so the database
row and the older file of the same message, or an import run again, give one event.

Plain dicts: :func:`record` reads a decoded message. :func:`record_of_json` reads one
from its JSON text the same way, through a typed decoder for messages whose values have
the usual types (the many; anything else is decoded whole and read by :func:`record`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from telemetryd.adapters import ids
from telemetryd.adapters import usage as usage_mod
from telemetryd.adapters.otel import common as otel_common

SOURCE = "opencode"
ID_PREFIX = "oc:"
MAX_I64 = 2**63 - 1


def _u64(value: Any) -> int:
    """A count as serde's ``as_u64`` takes it: a non-negative JSON integer, else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**64 - 1:
        return value
    return 0


def _text(value: Any) -> str | None:
    if isinstance(value, str) and (stripped := value.strip()):
        return stripped
    return None


# Times up to 2^42 ms (the year 2109) are written from their parts (otel common.iso): a
# float of so many seconds is exact to the microsecond, so the datetime below gives the
# same text.
_PARTS_BELOW = 1 << 42


def _ts(millis: Any) -> str:
    """``time.created`` (Unix ms, an integer) as an event time; the epoch otherwise."""
    if millis.__class__ is int and 0 < millis < _PARTS_BELOW:
        found = otel_common.iso(millis * 1_000_000)
        if found is not None:
            return found
    if not isinstance(millis, int) or isinstance(millis, bool) or abs(millis) > MAX_I64:
        millis = 0
    try:
        when = datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        when = datetime.fromtimestamp(0, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def record(
    message: Any, row_id: str | None = None, row_session: str | None = None
) -> dict[str, Any] | None:
    """The record of one stored message (a database row gives its ``id`` and
    ``session_id`` apart), or None when it is not a request.

    A record: ``message_id`` (None when the message has none), ``session_id``,
    ``model``, ``provider``, ``ts``, ``tokens``, ``cost`` (the reported cost, or None),
    ``cwd``, ``completed`` (False while OpenCode has not marked the message complete: its
    counts may still grow, step by step)."""
    if not isinstance(message, dict):
        return None
    raw = message.get("tokens")
    if not isinstance(raw, dict):
        return None
    cache = raw.get("cache")
    cache = cache if isinstance(cache, dict) else {}
    time = message.get("time")
    where = message.get("path")
    return _record(
        (_u64(raw.get("input")), _u64(raw.get("output")), _u64(cache.get("read")),
         _u64(cache.get("write")), _u64(raw.get("reasoning")), _u64(raw.get("total"))),
        message.get("modelID"),
        message.get("providerID"),
        time.get("created") if isinstance(time, dict) else None,
        isinstance(time, dict) and time.get("completed") is not None,
        message.get("cost"),
        where.get("cwd") if isinstance(where, dict) else None,
        message.get("id"),
        message.get("sessionID"),
        row_id,
        row_session,
    )  # fmt: skip


def _record(
    counts: tuple[int, int, int, int, int, int],
    model_id: Any,
    provider_id: Any,
    created: Any,
    completed: bool,
    cost: Any,
    cwd: Any,
    message_id: Any,
    session_id: Any,
    row_id: str | None,
    row_session: str | None,
) -> dict[str, Any] | None:
    """:func:`record` from a message's values, read from a dict or a typed decoding:
    ``counts`` (input, output, cache read, cache write, reasoning, total) as ``_u64``
    gives them; the others as the message holds them."""
    inp, out, read, write, reasoning, total = counts
    if not (inp or out or read or write or total):
        return None
    model, provider = _text(model_id), _text(provider_id)
    if model is None or provider is None:
        return None
    tokens = usage_mod.parts_and_total(
        input=inp,
        output=out,
        cache_read=read,
        cache_write=write,
        reasoning=reasoning,
        total=total,
    )
    if tokens["source"] != "actual":
        return None  # counts beyond any request's
    reported = (
        cost
        if isinstance(cost, (int, float))
        and not isinstance(cost, bool)
        and 0 < cost <= usage_mod.MAX_COST
        else None
    )
    return {
        "message_id": row_id if row_id else _text(message_id),
        "session_id": row_session or _text(session_id) or "unknown",
        "model": model,
        "provider": provider,
        "ts": _ts(created),
        "tokens": tokens,
        "cost": float(reported) if reported is not None else None,
        "cwd": _text(cwd),
        "completed": completed,
    }


# The usual shape of a message, typed: a value of another type (a float count, a
# non-string model) fails the decoding and the message is read by record() instead, so
# both give the same record.
_U64 = Annotated[int, msgspec.Meta(ge=0, le=MAX_I64)]  # (larger: record() reads it)


class _Cache(msgspec.Struct):
    read: _U64 = 0
    write: _U64 = 0


class _Tokens(msgspec.Struct):
    input: _U64 = 0
    output: _U64 = 0
    reasoning: _U64 = 0
    total: _U64 = 0
    cache: _Cache | None = None


class _Time(msgspec.Struct):
    created: int | None = None
    completed: Any = None


class _Where(msgspec.Struct):
    cwd: str | None = None


class _Message(msgspec.Struct):
    tokens: _Tokens | None = None
    modelID: str | None = None  # (OpenCode's names)
    providerID: str | None = None
    time: _Time | None = None
    cost: float | None = None
    path: _Where | None = None
    id: str | None = None
    sessionID: str | None = None


_MESSAGE = msgspec.json.Decoder(_Message)
_NO_CACHE = _Cache()
_ANY = msgspec.json.Decoder()


def record_of_json(
    data: bytes | str, row_id: str | None = None, row_session: str | None = None
) -> dict[str, Any] | None:
    """:func:`record` of the message whose JSON text is ``data``; msgspec.DecodeError
    when it is not JSON."""
    try:
        message = _MESSAGE.decode(data)
    except msgspec.ValidationError:  # (JSON of another shape or other types)
        return record(_ANY.decode(data), row_id, row_session)
    raw = message.tokens
    if raw is None:
        return None
    cache = raw.cache or _NO_CACHE
    time = message.time
    where = message.path
    return _record(
        (raw.input, raw.output, cache.read, cache.write, raw.reasoning, raw.total),
        message.modelID,
        message.providerID,
        time.created if time is not None else None,
        time is not None and time.completed is not None,
        message.cost,
        where.cwd if where is not None else None,
        message.id,
        message.sessionID,
        row_id,
        row_session,
    )


def event_id(message_id: str) -> str:
    """``oc:`` and a hash of OpenCode's message id."""
    return ids.hashed_id(ID_PREFIX, message_id)


def api_request_event(record: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The ``api_request`` event of one assistant message."""
    event: dict[str, Any] = {"type": "api_request", "id": event_id, "ts": record["ts"]}
    event["source"] = SOURCE
    event["session_id"] = record["session_id"]
    event["agent"] = {"model": record["model"], "provider": record["provider"]}
    event["tokens"] = record["tokens"]
    if record["cost"] is not None:
        event["cost_usd"] = record["cost"]
        event["cost_source"] = "reported"
    attrs: dict[str, Any] = {"imported": True}
    if record["cwd"]:
        attrs["cwd"] = record["cwd"]
    event["attrs"] = attrs
    return event
